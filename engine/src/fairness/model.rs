//! A population model of a heavy-tailed positive quantity (event scores, gain rates,
//! fight times), shared by the detectors.
//!
//! Such quantities are log-normal-ish (quests give tens, raid bosses thousands), so the
//! model works on the natural log and keeps an exponentially weighted mean and
//! variance: it follows a drifting economy and costs O(1) per observation. It can start
//! from a prior worth `PRIOR_SAMPLES` observations, so a cold shard judges from its first
//! event, and the first hundred events an attacker sends move it by a tenth at most.

use serde::Serialize;

/// Weight of each new sample once warm: about the last thousand shape the model.
const ALPHA_MIN: f64 = 1.0 / 1024.0;
/// What a prior is worth, in observations: enough that a hundred hostile events cannot
/// drag it far (each moves the mean by at most 1/(PRIOR_SAMPLES + n) of its deviation).
pub const PRIOR_SAMPLES: u64 = 1024;
/// Once warm, an observation counts at most this many deviations from the mean: a run
/// of events at the flag's edge would otherwise inflate the variance, and with it the
/// threshold, by compounding.
const CLIP_SIGMAS: f64 = 2.0;
/// Observations before clipping starts: a cold model's deviation is noise.
const CLIP_AFTER: u64 = 16;
/// Smallest deviation clipping uses, so a model of identical values can still move.
const CLIP_SIGMA_MIN: f64 = 0.5;

/// Exponentially weighted mean and variance of `ln(x)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LnModel {
    /// Mean of `ln(x)`.
    pub mean: f64,
    /// Variance of `ln(x)`.
    pub variance: f64,
    /// Observations so far, the prior's included: sets the learning rate.
    pub samples: u64,
}

impl LnModel {
    /// No knowledge: the first observation sets the mean.
    pub const EMPTY: LnModel = LnModel {
        mean: 0.0,
        variance: 0.0,
        samples: 0,
    };

    /// A prior: `median` (in the quantity's units) with log-deviation `sigma`, worth
    /// `PRIOR_SAMPLES` observations.
    pub fn prior(median: f64, sigma: f64) -> Self {
        LnModel {
            mean: median.max(f64::MIN_POSITIVE).ln(),
            variance: sigma * sigma,
            samples: PRIOR_SAMPLES,
        }
    }

    /// Deviation in log units, at least `floor`: a very uniform population must not turn
    /// ordinary variation into many deviations.
    pub fn sigma(&self, floor: f64) -> f64 {
        self.variance.sqrt().max(floor)
    }

    /// The value `z` deviations above the mean, in the quantity's units.
    pub fn upper(&self, z: f64, floor: f64) -> f64 {
        (self.mean + z * self.sigma(floor)).exp()
    }

    /// Learns one observation of `ln(x)`.
    pub fn learn(&mut self, ln_x: f64) {
        if !ln_x.is_finite() {
            return;
        }
        self.samples = self.samples.saturating_add(1);
        if self.samples == 1 {
            self.mean = ln_x;
            return;
        }
        // Warm up with the plain running mean, then switch to exponential weighting.
        let alpha = (1.0 / self.samples as f64).max(ALPHA_MIN);
        let mut delta = ln_x - self.mean;
        if self.samples > CLIP_AFTER {
            let bound = CLIP_SIGMAS * self.sigma(CLIP_SIGMA_MIN);
            delta = delta.clamp(-bound, bound);
        }
        self.mean += alpha * delta;
        self.variance = (1.0 - alpha) * (self.variance + alpha * delta * delta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prior_resists_a_hundred_hostile_observations() {
        let mut model = LnModel::prior(50.0, 1.0);
        for _ in 0..100 {
            // Each just under a 3.5-sigma flag.
            let edge = model.mean + 3.4 * model.sigma(1.0);
            model.learn(edge);
        }
        // The flag threshold moved by a small factor (a cold model without a prior would
        // be whatever those events say).
        let moved = model.upper(3.5, 1.0) / LnModel::prior(50.0, 1.0).upper(3.5, 1.0);
        assert!(moved < 3.0, "{moved}");
    }

    #[test]
    fn an_empty_model_learns_from_its_first_observation() {
        let mut model = LnModel::EMPTY;
        model.learn(3.0);
        assert_eq!(model.mean, 3.0);
        model.learn(5.0);
        assert_eq!(model.mean, 4.0);
        assert!(model.variance > 0.0);
        model.learn(f64::NAN);
        assert_eq!(model.samples, 2);
    }
}
