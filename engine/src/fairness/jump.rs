//! Score jumps: one event far outside both the population of its type and the player's
//! own history, a sudden sustained shift in the player's own event sizes, and hard caps.
//!
//! Each scored type has its own population model (a boss kill is worth dozens of quests,
//! so one shared model would flag every honest boss kill). A model starts from a prior
//! (`ANOMALY_PRIOR_*`), so a cold shard judges from its first event and cannot be trained
//! by an attacker's first events (see [`LnModel`]); only unflagged events teach it.
//!
//! * single event: `z = min(z_population, z_own)` where both are in population
//!   deviations of `ln(score)`; flagged above `ANOMALY_Z`, blocked above twice it. A pro
//!   whose every event is big is judged against their own history, not the median's.
//! * shift: a one-sided CUSUM of `ln(score) - own mean - ANOMALY_SHIFT_DRIFT`, flagged
//!   above `ANOMALY_SHIFT_MAX` nats and blocked above twice it: a player who played
//!   honestly and then multiplies every event by 5 accumulates about a nat per event.
//! * caps: a score above `SCORE_CAP_*` cannot be earned honestly: blocked.
//!
//! Cannot catch: an inflation factor within the player's own variation (under ~2x), or
//! a cheater inflating from their very first event by less than `ANOMALY_Z` deviations
//! of the population (they look like a pro).

use serde::Serialize;

use super::model::LnModel;
use super::{Evidence, Finding, FlagKind, Measure, Thresholds};
use crate::event::EventKind;

/// Smallest population deviation used, in ln units: a factor of e (~2.7x) is one sigma
/// at least.
pub const STDDEV_MIN: f64 = 1.0;
/// Learning rate of the player's own mean once warm (a plain running mean before): slow
/// enough that a shift is not absorbed before the CUSUM sees it, fast enough to follow a
/// player's progress.
const OWN_ALPHA: f32 = 1.0 / 16.0;

/// While a player has fewer own events of a type than this, their unit of it (for the
/// rate of gain) is never below the population's centre: a young honest player whose
/// first event was small would otherwise count their next ordinary events as many units.
const YOUNG_EVENTS: u8 = 4;

/// The scored event types, each with its own model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scored {
    Progression = 0,
    BossKill = 1,
}

impl Scored {
    pub const ALL: [Scored; 2] = [Scored::Progression, Scored::BossKill];

    /// The scored type of `event` and its score, or `None` for unscored events.
    pub fn of(event: &EventKind) -> Option<(Scored, u64)> {
        let score = event.score();
        match event {
            _ if score == 0 => None,
            EventKind::Progression { .. } => Some((Scored::Progression, score)),
            EventKind::BossKill { .. } => Some((Scored::BossKill, score)),
            EventKind::DropClaimed { .. } => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scored::Progression => "progression",
            Scored::BossKill => "boss_kill",
        }
    }
}

/// The shard's population models, one per scored type.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Models {
    /// Indexed by `Scored as usize`.
    pub by_type: [LnModel; 2],
    /// `ln` of each type's prior median (`ANOMALY_PRIOR_*`): the floor of its centre,
    /// taken once here rather than per event.
    #[serde(skip)]
    prior_ln: [f64; 2],
}

impl Models {
    pub fn new(t: &Thresholds) -> Self {
        Models {
            by_type: [
                LnModel::prior(t.prior_progression, STDDEV_MIN),
                LnModel::prior(t.prior_boss_kill, STDDEV_MIN),
            ],
            prior_ln: [t.prior_progression.ln(), t.prior_boss_kill.ln()],
        }
    }

    fn of(&self, scored: Scored) -> &LnModel {
        &self.by_type[scored as usize]
    }

    /// The population's typical `ln(score)` of `scored` as the tests use it: the learned
    /// mean, never below the type's prior median. The learned mean can be dragged down
    /// by volume (many players' tiny events, as `loadtest/hostile.sh`'s attack sends);
    /// measured against so low a centre, an honest player's ordinary event and, while
    /// the player's own mean is young and noisy, the shift test would flag. What an
    /// operator configured cannot be trained away.
    fn centre_ln(&self, scored: Scored) -> f64 {
        self.of(scored).mean.max(self.prior_ln[scored as usize])
    }
}

/// A player's own history of event sizes: 16 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Own {
    /// Mean `ln(score)` of the player's unflagged events, per scored type.
    pub ln_mean: [f32; 2],
    /// Unflagged events learned per type (saturating): 0 means no own history yet.
    pub seen: [u8; 2],
    /// The shift CUSUM, nats.
    pub shift: f32,
}

impl Own {
    /// The player's typical `ln(score)` for `scored`, if they have a history of it.
    pub fn typical_ln(&self, scored: Scored) -> Option<f64> {
        let i = scored as usize;
        (self.seen[i] > 0).then(|| f64::from(self.ln_mean[i]))
    }

    /// The player's unit of `scored` for the rate of gain: their typical `ln(score)`,
    /// never below the population's centre while their history is young (under
    /// [`YOUNG_EVENTS`] events).
    pub fn unit_ln(&self, models: &Models, scored: Scored) -> Option<f64> {
        let typical = self.typical_ln(scored)?;
        Some(if self.seen[scored as usize] < YOUNG_EVENTS {
            typical.max(models.centre_ln(scored))
        } else {
            typical
        })
    }

    /// The shift CUSUM after an event of `ln_x`. The reference is the player's own mean,
    /// or the population's centre ([`Models::centre_ln`]) when that is higher: an honest
    /// player whose first quests were small is not measured against them, and a cheater
    /// who played weakly before inflating is measured against the population at least.
    fn shift_after(&self, models: &Models, scored: Scored, ln_x: f64, t: &Thresholds) -> f64 {
        let i = scored as usize;
        if self.seen[i] == 0 {
            return f64::from(self.shift);
        }
        let reference = f64::from(self.ln_mean[i]).max(models.centre_ln(scored));
        let step = ln_x - reference - t.shift_drift;
        (f64::from(self.shift) + step).max(0.0)
    }
}

/// Judges one event; `None` when it is unscored or unremarkable.
pub fn assess(models: &Models, own: &Own, event: &EventKind, t: &Thresholds) -> Option<Finding> {
    let (scored, score) = Scored::of(event)?;
    let cap = match scored {
        Scored::Progression => t.cap_progression,
        Scored::BossKill => t.cap_boss_kill,
    };
    if score > cap {
        return Some(Finding::Block(Evidence {
            detector: FlagKind::ImpossibleScore,
            measure: Measure::Score,
            measured: score as f64,
            threshold: cap as f64,
        }));
    }
    let ln_x = (score as f64).ln();
    let model = models.of(scored);
    let population_z = (ln_x - models.centre_ln(scored)) / model.sigma(STDDEV_MIN);
    let own_z = if own.seen[scored as usize] > 0 {
        (ln_x - f64::from(own.ln_mean[scored as usize])) / model.sigma(STDDEV_MIN)
    } else {
        f64::INFINITY
    };
    let z = population_z.min(own_z);
    let single = Evidence {
        detector: FlagKind::ScoreJump,
        measure: Measure::Z,
        measured: z,
        threshold: t.anomaly_z,
    };
    // Beyond twice ANOMALY_Z, one event alone is an impossible score.
    let by_size = Finding::grade(single).map(|finding| match finding {
        Finding::Block(e) => Finding::Block(Evidence {
            detector: FlagKind::ImpossibleScore,
            ..e
        }),
        flag => flag,
    });
    let shift = own.shift_after(models, scored, ln_x, t);
    let shifted = Evidence {
        detector: FlagKind::ScoreJump,
        measure: Measure::ShiftNats,
        measured: shift,
        threshold: t.shift_max,
    };
    // A shift matters only above the population's typical event: a weak player getting
    // better is not cheating.
    let by_shift = (population_z > 0.0)
        .then(|| Finding::grade(shifted))
        .flatten();
    // A block from either wins over a flag from either; the event's size first.
    [by_size, by_shift]
        .into_iter()
        .flatten()
        .min_by_key(|finding| matches!(finding, Finding::Flag(_)))
}

/// Learns one accepted event: the shift always moves, the player's own mean and the
/// population only learn from unflagged events.
pub fn learn(models: &mut Models, own: &mut Own, event: &EventKind, flagged: bool, t: &Thresholds) {
    let Some((scored, score)) = Scored::of(event) else {
        return;
    };
    let ln_x = (score as f64).ln();
    own.shift = own.shift_after(models, scored, ln_x, t) as f32;
    if flagged {
        return;
    }
    models.by_type[scored as usize].learn(ln_x);
    let i = scored as usize;
    let alpha = (1.0 / f32::from(own.seen[i].saturating_add(1))).max(OWN_ALPHA);
    own.ln_mean[i] += alpha * (ln_x as f32 - own.ln_mean[i]);
    own.seen[i] = own.seen[i].saturating_add(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fairness::test_events::quest;

    fn boss(points: u64) -> EventKind {
        EventKind::BossKill {
            boss_id: "dragon_lord".into(),
            tier: 5,
            points,
        }
    }

    #[test]
    fn a_cold_shard_blocks_a_huge_injection_and_spares_a_boss_kill() {
        let t = Thresholds::default();
        let models = Models::new(&t);
        let own = Own::default();
        // The contract's own sample boss kill.
        assert_eq!(assess(&models, &own, &boss(2500), &t), None);
        assert_eq!(assess(&models, &own, &quest(10), &t), None);
        // Today's single shared model, warm on quests, would flag that boss kill.
        let Some(Finding::Block(e)) = assess(&models, &own, &quest(1_000_000), &t) else {
            panic!("a million XP quest is blocked");
        };
        assert_eq!(e.detector, FlagKind::ImpossibleScore);
        assert!(matches!(
            assess(&models, &own, &quest(5_000), &t),
            Some(Finding::Flag(Evidence {
                detector: FlagKind::ScoreJump,
                ..
            }))
        ));
    }

    #[test]
    fn own_history_spares_a_pro_and_the_shift_catches_an_inflater() {
        let t = Thresholds::default();
        let mut models = Models::new(&t);
        let mut pro = Own::default();
        let mut inflater = Own::default();
        for i in 0..20 {
            // A pro's quests are 10x the median, from the start.
            let big = quest(400 + i * 10);
            assert_eq!(assess(&models, &pro, &big, &t), None, "event {i}");
            learn(&mut models, &mut pro, &big, false, &t);
            let honest = quest(40 + i);
            learn(&mut models, &mut inflater, &honest, false, &t);
        }
        let mut flagged_at = None;
        for i in 0..10 {
            let inflated = quest(8 * (40 + i));
            let finding = assess(&models, &inflater, &inflated, &t);
            if finding.is_some() && flagged_at.is_none() {
                flagged_at = Some(i);
            }
            learn(&mut models, &mut inflater, &inflated, finding.is_some(), &t);
        }
        let at = flagged_at.expect("an 8x inflation is flagged");
        assert!(at <= 3, "flagged at inflated event {at}");
    }

    #[test]
    fn a_population_dragged_down_by_volume_does_not_flag_young_honest_players() {
        let t = Thresholds::default();
        let mut models = Models::new(&t);
        let mut attacker = Own::default();
        // An attacker's flood of 1 XP events over many players drags the population's
        // mean far below the honest players' (uniform 1..100 XP).
        for _ in 0..20_000 {
            learn(&mut models, &mut attacker, &quest(1), false, &t);
        }
        assert!(models.of(Scored::Progression).mean < 2.0);
        // Honest players whose first event happened to be tiny, then ordinary ones.
        for first in [1, 2, 3, 5] {
            let mut own = Own::default();
            learn(&mut models, &mut own, &quest(first), false, &t);
            for xp in [60, 90, 100, 75, 100, 95, 80, 100] {
                let finding = assess(&models, &own, &quest(xp), &t);
                assert_eq!(finding, None, "first {first}, then {xp}: {own:?}");
                learn(&mut models, &mut own, &quest(xp), false, &t);
            }
        }
    }

    #[test]
    fn flagged_events_teach_nothing() {
        let t = Thresholds::default();
        let mut models = Models::new(&t);
        let before = models.clone();
        let mut own = Own::default();
        learn(&mut models, &mut own, &quest(50_000), true, &t);
        assert_eq!(models, before);
        assert_eq!(own.seen, [0, 0]);
    }
}
