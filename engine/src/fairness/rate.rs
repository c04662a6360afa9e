//! Rate of gain: score per second over a sliding window, in units of the player's own
//! typical event, far above what any human sustains.
//!
//! Measuring gain in the player's own typical events makes the test robust to
//! heavy-tailed honest skill: a pro's events are ten times the median's, and so is their
//! unit, so a pro playing at a human pace measures the same as anyone playing at that
//! pace. What is left is pace, which has a human ceiling. While a player has only a few
//! events of their own, their unit is never below the population's centre (see
//! `jump::Own::unit_ln`): one small first event is not a unit to count the next in.
//!
//! The window is an exponential decay with time constant `GAIN_WINDOW_SEC` (one `f32`
//! per player, no ring of events):
//! `units' = units * exp(-dt / window) + score / unit`, and the rate is
//! `units' / window`. It is flagged above the larger of `GAIN_RATE_MAX` and the
//! population's upper tail (`ANOMALY_Z` deviations above its mean, learned from unflagged
//! events), and blocked above twice that.
//!
//! Cannot catch: a speed hack at a pace a fast human sustains, or a small inflation of
//! each event (that is the score-jump detector's shift test).

use serde::Serialize;

use super::jump::{self, Scored};
use super::model::LnModel;
use super::{Evidence, Finding, FlagKind, Measure, Seen, Thresholds};

/// Smallest deviation of the population's `ln(units)`, so a uniform population's tail
/// is not its median.
const STDDEV_MIN: f64 = 0.3;
/// Only an event at least this long after the player's previous one teaches the
/// population: otherwise the fastest senders, the cheaters, would be most of the model
/// and would raise its tail.
const LEARN_GAP_MS: u64 = 1_000;

/// A player's recent gain: 4 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Gain {
    /// Decayed sum of the player's events in own-typical units, as of their last event.
    pub units: f32,
}

/// The population's gain (windowed units seen at each unflagged event), starting from a
/// prior: a median a tenth of the `GAIN_RATE_MAX` window with a deviation of 0.6 e-folds,
/// whose tail lies just under the floor, so the floor rules until the population shows a
/// faster pace.
pub fn model(t: &Thresholds) -> LnModel {
    LnModel::prior(floor_units(t) / 10.0, 0.6)
}

/// `GAIN_RATE_MAX` over the window, in units.
fn floor_units(t: &Thresholds) -> f64 {
    t.gain_rate_max * t.gain_window_ms as f64 / 1000.0
}

/// The window's units after `seen`'s event, or `None` for an unscored event.
fn units_after(
    models: &jump::Models,
    gain: &Gain,
    own: &jump::Own,
    seen: &Seen,
    t: &Thresholds,
) -> Option<f64> {
    let (scored, score) = Scored::of(seen.event)?;
    let window_ms = t.gain_window_ms.max(1) as f64;
    let decayed = if seen.last_ms == 0 {
        0.0
    } else {
        let dt_ms = seen.at_ms.saturating_sub(seen.last_ms) as f64;
        f64::from(gain.units) * (-dt_ms / window_ms).exp()
    };
    // Without an own history of this type the event is its own unit: one big event is
    // the score-jump detector's business, not a rate.
    let units = match own.unit_ln(models, scored) {
        Some(ln_unit) => score as f64 / ln_unit.exp().max(1.0),
        None => 1.0,
    };
    Some(decayed + units)
}

/// The flag threshold, in units per window.
fn threshold_units(population: &LnModel, t: &Thresholds) -> f64 {
    floor_units(t).max(population.upper(t.anomaly_z, STDDEV_MIN))
}

/// Judges one event.
pub fn assess(
    models: &jump::Models,
    population: &LnModel,
    own: &jump::Own,
    gain: &Gain,
    seen: &Seen,
    t: &Thresholds,
) -> Option<Finding> {
    let units = units_after(models, gain, own, seen, t)?;
    let threshold = threshold_units(population, t);
    let window_s = t.gain_window_ms.max(1) as f64 / 1000.0;
    let evidence = Evidence {
        detector: FlagKind::RateOfGain,
        measure: Measure::UnitsPerS,
        measured: units / window_s,
        threshold: threshold / window_s,
    };
    Finding::grade(evidence)
}

/// Learns one accepted event (before the player's own history learns it: the unit is the
/// one the event was judged with).
pub fn learn(
    models: &jump::Models,
    population: &mut LnModel,
    own: &jump::Own,
    gain: &mut Gain,
    seen: &Seen,
    flagged: bool,
    t: &Thresholds,
) {
    let Some(units) = units_after(models, gain, own, seen, t) else {
        return;
    };
    gain.units = units as f32;
    let paced = seen.at_ms.saturating_sub(seen.last_ms) >= LEARN_GAP_MS;
    if !flagged && paced {
        population.learn(units.ln());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fairness::test_events::quest;

    /// Plays quests of the given XP `gap_ms` apart, learning each as the shard would
    /// (a flagged one kept out of the population); returns every finding by index.
    fn play(xps: impl IntoIterator<Item = u64>, gap_ms: u64) -> Vec<(u64, Finding)> {
        let t = Thresholds::default();
        let mut models = jump::Models::new(&t);
        let mut population = model(&t);
        let (mut own, mut gain) = (jump::Own::default(), Gain::default());
        let mut last_ms = 0;
        let mut findings = Vec::new();
        for (i, xp) in (0..).zip(xps) {
            let event = quest(xp);
            let at_ms = 1_000_000 + i * gap_ms;
            let seen = Seen {
                event: &event,
                at_ms,
                last_ms,
            };
            let finding = assess(&models, &population, &own, &gain, &seen, &t);
            let flagged = finding.is_some();
            learn(
                &models,
                &mut population,
                &own,
                &mut gain,
                &seen,
                flagged,
                &t,
            );
            jump::learn(&mut models, &mut own, &event, flagged, &t);
            findings.extend(finding.map(|finding| (i, finding)));
            last_ms = at_ms;
        }
        findings
    }

    #[test]
    fn a_pro_at_human_pace_passes_and_a_speed_hack_is_caught() {
        // A pro: 20x the median XP per event, an event every 700 ms for ten minutes.
        assert_eq!(play([1_000; 857], 700), []);
        // A speed hack with honest-sized events, 8 per second.
        let findings = play([50; 400], 125);
        let (at, finding) = findings.first().expect("a speed hack is caught");
        assert!(matches!(finding, Finding::Flag(e) if e.detector == FlagKind::RateOfGain));
        assert!(*at < 80, "caught after {at} events");
    }

    #[test]
    fn a_young_player_whose_first_quest_was_small_is_not_blocked_for_a_burst() {
        // A strong honest player's first quest happened to be tiny (25 XP), then a burst of
        // ordinary ones 600 ms apart. In units of that one quest (the previous unit), the
        // third event measured 54 units in the window and blocked; a young history's unit
        // is at least the population's centre (50 XP).
        let findings = play([25, 700, 650], 600);
        assert!(
            !findings.iter().any(|(_, f)| matches!(f, Finding::Block(_))),
            "{findings:?}"
        );
    }
}
