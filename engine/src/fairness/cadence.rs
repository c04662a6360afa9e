//! Impossible cadence: the same boss killed again faster than any honest player can.
//!
//! A boss fight has a minimum length no skill beats, and an honest player sends nothing
//! while fighting, so the time from a player's previous event to a boss kill measures the
//! fight. The shard learns, per boss, the typical fight (`ln` of that gap, from unflagged
//! kills that are not a rematch of the player's last boss: a farmer's kills are all
//! rematches, and would otherwise teach the model their own pace; gaps under
//! `CADENCE_FLOOR_SEC` are not fights and gaps over an hour are breaks: both skipped;
//! once warm, a model counts a gap at most two deviations from its mean, so pauses do not
//! inflate it). It learns too, across all bosses, the fight's seconds per *unit*: the
//! kill's points over the killer's typical progression event. Harder bosses take longer
//! and pay more, and a skilled player's points and events are big alike, so seconds per
//! unit is one figure for every boss and player, and it predicts the fight of a boss the
//! shard has not yet seen often (a slow boss's fights are rare and long; its farmers are
//! not).
//!
//! A kill of the boss the player killed last, sooner after that kill than
//! `CADENCE_FRACTION` of the typical fight, is flagged; sooner than half of it is blocked.
//! The typical fight is the boss's own once it has `CADENCE_MIN_SAMPLES` learned fights,
//! else the prediction from its points (once all bosses have [`PER_UNIT_MIN_SAMPLES`]),
//! else unknown; the threshold never goes below `CADENCE_FLOOR_SEC`. A first kill (not a
//! rematch) whose fight, the time since the player's previous event, lies more than
//! `ANOMALY_Z` deviations (at least half an e-fold each) below the boss's own fights, or
//! below both `CADENCE_FRACTION` of its prediction and `ANOMALY_Z` deviations of the
//! prediction, is flagged, under half that blocked: one farmed kill is enough. Where a
//! game sends events while a fight runs, fights vary widely and this test falls silent.
//!
//! Cannot catch: a farmer who alternates bosses at plausible fight times (each kill is
//! then a first kill after another boss: the rate-of-gain detector sees the points), one
//! farming at most `1 / CADENCE_FRACTION` times faster than the typical fight, or, before
//! the boss has fights of its own, a farmer without progression events (no unit) or in a
//! game whose bosses do not pay by their length (the prediction's deviation is then wide).

use std::collections::BTreeMap;

use compact_str::CompactString;
use serde::Serialize;

use super::jump::{self, Scored};
use super::model::LnModel;
use super::{Evidence, Finding, FlagKind, Measure, Seen, Thresholds};
use crate::event::EventKind;

/// Bosses with a learned fight per shard; past it, new bosses are judged by the floor
/// alone (a client cannot grow the map without bound by inventing boss ids).
pub const BOSSES_MAX: usize = 4096;
/// Longest gap learned as a fight, ms: beyond, the player was away.
const FIGHT_MS_MAX: u64 = 3_600_000;
/// Smallest deviation of a boss's `ln(fight)` the first-kill test uses: a few similar
/// fights must not make an ordinary one look impossible.
const FIGHT_STDDEV_MIN: f64 = 0.5;
/// Fights learned across all bosses before their seconds per unit predict a boss's fight:
/// more than a boss's own minimum, since one model judges every boss without its own.
pub const PER_UNIT_MIN_SAMPLES: u64 = 16;

/// Resolution of [`LastKill`]'s time: a tenth of a second, far finer than any fight.
const KILL_TIME_UNIT_MS: u64 = 100;

/// The player's last boss kill: 8 bytes (every player has one, see the memory target).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastKill {
    /// FNV-1a of the boss id (0: no kill yet): the id itself would cost an allocation.
    pub boss: u32,
    /// When, engine clock in tenths of a second modulo 2^32 (it wraps every 13.6
    /// years; only differences are used, see [`LastKill::gap_ms`]).
    pub at_ds: u32,
}

impl LastKill {
    pub fn new(boss: u32, at_ms: u64) -> Self {
        LastKill {
            boss,
            at_ds: (at_ms / KILL_TIME_UNIT_MS) as u32,
        }
    }

    /// The time from this kill to `now_ms`, to a tenth of a second.
    pub fn gap_ms(&self, now_ms: u64) -> u64 {
        let now_ds = (now_ms / KILL_TIME_UNIT_MS) as u32;
        u64::from(now_ds.wrapping_sub(self.at_ds)) * KILL_TIME_UNIT_MS
    }

    /// The kill's time as the checkpoint stores it (the field's unit, in ms).
    pub fn stored_ms(&self) -> u64 {
        u64::from(self.at_ds) * KILL_TIME_UNIT_MS
    }
}

/// The shard's typical fight per boss (ordered: checkpoints and dumps are stable).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fights {
    /// `ln` of fight seconds per boss id, at most `BOSSES_MAX` bosses.
    pub by_boss: BTreeMap<CompactString, LnModel>,
    /// `ln` of fight seconds per unit (the kill's points over the killer's typical
    /// progression event), every boss together: predicts the fight of a boss with too
    /// few of its own.
    pub per_unit: LnModel,
}

impl Default for Fights {
    fn default() -> Self {
        Fights {
            by_boss: BTreeMap::new(),
            per_unit: LnModel::EMPTY,
        }
    }
}

impl Fights {
    /// Recovery: a boss's model as checkpointed.
    pub fn restore(&mut self, boss: &str, model: LnModel) {
        if self.by_boss.len() < BOSSES_MAX || self.by_boss.contains_key(boss) {
            self.by_boss.insert(boss.into(), model);
        }
    }
}

/// FNV-1a, never 0: stable across restarts and builds (replay compares it).
pub fn boss_hash(boss_id: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in boss_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.max(1)
}

/// A boss kill's points in units of the killer's typical progression event, or `None`
/// without such a history: a pro's first boss kill measured against the population's
/// events would look short for its points.
fn kill_units(event: &EventKind, own: &jump::Own) -> Option<f64> {
    let EventKind::BossKill { points, .. } = event else {
        return None;
    };
    let ln_unit = own.typical_ln(Scored::Progression)?;
    (*points > 0).then(|| *points as f64 / ln_unit.exp().max(1.0))
}

/// What the shard knows of one boss's fights.
enum Known<'a> {
    /// The boss's own learned fights.
    Own(&'a LnModel),
    /// All bosses' seconds per unit, and this kill's units.
    PerUnit(&'a LnModel, f64),
    Nothing,
}

impl<'a> Known<'a> {
    fn of(fights: &'a Fights, boss_id: &str, units: Option<f64>, t: &Thresholds) -> Self {
        let own = fights.by_boss.get(boss_id);
        if let Some(model) = own.filter(|m| m.samples >= t.cadence_min_samples) {
            return Known::Own(model);
        }
        match units {
            Some(units) if fights.per_unit.samples >= PER_UNIT_MIN_SAMPLES => {
                Known::PerUnit(&fights.per_unit, units)
            }
            _ => Known::Nothing,
        }
    }

    /// A predicted fight is judged by the lower of `CADENCE_FRACTION` of it and
    /// `ANOMALY_Z` deviations below it: where fights per unit vary widely (a game that
    /// does not pay by a boss's length), the prediction is weak and the test relaxes.
    fn predicted_threshold_s(per_unit: &LnModel, units: f64, t: &Thresholds) -> f64 {
        let fraction = per_unit.mean.exp() * t.cadence_fraction;
        units * fraction.min(per_unit.upper(-t.anomaly_z, 0.0))
    }

    /// The flag threshold of a rematch, seconds.
    fn rematch_threshold_s(&self, t: &Thresholds) -> f64 {
        let learned = match *self {
            Known::Own(model) => model.mean.exp() * t.cadence_fraction,
            Known::PerUnit(per_unit, units) => Self::predicted_threshold_s(per_unit, units, t),
            Known::Nothing => 0.0,
        };
        learned.max(t.cadence_floor_ms as f64 / 1000.0)
    }

    /// The flag threshold of a first kill's fight, seconds, if anything is known: against
    /// the boss's own fights only their deviation (the average of all bosses would flag
    /// honest kills of the quick ones; scaled by its points, it does not).
    fn first_kill_threshold_s(&self, t: &Thresholds) -> Option<f64> {
        match *self {
            Known::Own(model) => Some(model.upper(-t.anomaly_z, FIGHT_STDDEV_MIN)),
            Known::PerUnit(per_unit, units) => {
                Some(Self::predicted_threshold_s(per_unit, units, t))
            }
            Known::Nothing => None,
        }
    }
}

/// Judges one event.
pub fn assess(
    fights: &Fights,
    own: &jump::Own,
    last: &LastKill,
    seen: &Seen,
    t: &Thresholds,
) -> Option<Finding> {
    let EventKind::BossKill { boss_id, .. } = seen.event else {
        return None;
    };
    if t.cadence_fraction == 0.0 {
        // The documented way to turn the detector off (load tests).
        return None;
    }
    let known = Known::of(fights, boss_id, kill_units(seen.event, own), t);
    let (measure, gap_ms, threshold) = if last.boss == boss_hash(boss_id) {
        (
            Measure::KillGapS,
            last.gap_ms(seen.at_ms),
            known.rematch_threshold_s(t),
        )
    } else {
        // A first kill: its fight. Where a game sends events during fights the deviation
        // is wide and the test falls silent.
        if seen.last_ms == 0 {
            return None;
        }
        (
            Measure::FightS,
            seen.at_ms.saturating_sub(seen.last_ms),
            known.first_kill_threshold_s(t)?,
        )
    };
    Finding::grade_below(Evidence {
        detector: FlagKind::Cadence,
        measure,
        measured: gap_ms as f64 / 1000.0,
        threshold,
    })
}

/// Learns one accepted event.
pub fn learn(
    fights: &mut Fights,
    own: &jump::Own,
    last: &mut LastKill,
    seen: &Seen,
    flagged: bool,
    t: &Thresholds,
) {
    let EventKind::BossKill { boss_id, .. } = seen.event else {
        return;
    };
    let fight_ms = seen.at_ms.saturating_sub(seen.last_ms);
    let rematch = last.boss == boss_hash(boss_id);
    let fight = seen.last_ms > 0 && fight_ms >= t.cadence_floor_ms && fight_ms <= FIGHT_MS_MAX;
    if !flagged && !rematch && fight {
        let ln_fight = (fight_ms as f64 / 1000.0).ln();
        if let Some(units) = kill_units(seen.event, own) {
            fights.per_unit.learn(ln_fight - units.ln());
        }
        let room = fights.by_boss.len() < BOSSES_MAX;
        let model = match fights.by_boss.get_mut(boss_id.as_str()) {
            Some(model) => Some(model),
            None if room => Some(
                fights
                    .by_boss
                    .entry(boss_id.as_str().into())
                    .or_insert(LnModel::EMPTY),
            ),
            None => None,
        };
        if let Some(model) = model {
            model.learn(ln_fight);
        }
    }
    *last = LastKill::new(boss_hash(boss_id), seen.at_ms);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fairness::test_events::quest;

    fn kill(boss: &str, points: u64) -> EventKind {
        EventKind::BossKill {
            boss_id: boss.into(),
            tier: 1,
            points,
        }
    }

    /// A player whose typical progression event is worth `xp`.
    fn player(xp: u64) -> jump::Own {
        let t = Thresholds::default();
        let mut models = jump::Models::new(&t);
        let mut own = jump::Own::default();
        jump::learn(&mut models, &mut own, &quest(xp), false, &t);
        own
    }

    /// Honest fights of `fight_ms` against `boss` worth `points`, each after another
    /// event, by players whose typical event is `xp` (0: without progression events).
    fn learn_fights(fights: &mut Fights, boss: &str, points: u64, xp: u64, fight_ms: u64, n: u64) {
        let own = if xp == 0 {
            jump::Own::default()
        } else {
            player(xp)
        };
        for i in 0..n {
            let event = kill(boss, points);
            let at_ms = 1_000_000 + i * 1_000_000;
            let seen = Seen {
                event: &event,
                at_ms,
                last_ms: at_ms - fight_ms,
            };
            learn(
                fights,
                &own,
                &mut LastKill::default(),
                &seen,
                false,
                &Thresholds::default(),
            );
        }
    }

    #[test]
    fn a_farmed_boss_is_caught_and_an_honest_rematch_is_not() {
        let t = Thresholds::default();
        let mut fights = Fights::default();
        learn_fights(&mut fights, "dragon_lord", 1000, 0, 200_000, 10);
        let last = LastKill::new(boss_hash("dragon_lord"), 5_000_000);
        let again = kill("dragon_lord", 1000);
        let own = jump::Own::default();
        let at = |gap_ms: u64| Seen {
            event: &again,
            at_ms: 5_000_000 + gap_ms,
            last_ms: 5_000_000,
        };
        // A rematch after a full honest fight.
        assert_eq!(assess(&fights, &own, &last, &at(170_000), &t), None);
        // Five times faster than the typical fight: flagged; ten times: blocked.
        assert!(matches!(
            assess(&fights, &own, &last, &at(40_000), &t),
            Some(Finding::Flag(e)) if e.detector == FlagKind::Cadence
        ));
        assert!(matches!(
            assess(&fights, &own, &last, &at(20_000), &t),
            Some(Finding::Block(_))
        ));
        // Another boss is no rematch, but a fight eight times shorter than the boss's own
        // fights is as impossible.
        let other = LastKill {
            boss: boss_hash("goblin_king"),
            ..last
        };
        assert_eq!(assess(&fights, &own, &other, &at(170_000), &t), None);
        let fight = Seen {
            last_ms: 5_000_000 + 135_000,
            ..at(160_000)
        };
        assert!(matches!(
            assess(&fights, &own, &other, &fight, &t),
            Some(Finding::Flag(e)) if e.measure == Measure::FightS
        ));
    }

    #[test]
    fn a_boss_without_fights_of_its_own_is_judged_by_its_points() {
        let t = Thresholds::default();
        let mut fights = Fights::default();
        // Two seconds of fight per unit, whatever the boss and the player's skill: a
        // quick boss paying 20 units of a 50 XP player, a slow one paying 60 units of a
        // 200 XP player.
        learn_fights(&mut fights, "goblin_king", 1_000, 50, 40_000, 20);
        learn_fights(&mut fights, "void_herald", 12_000, 200, 120_000, 20);
        let n = PER_UNIT_MIN_SAMPLES;
        assert!(fights.per_unit.samples >= n, "{:?}", fights.per_unit);
        // A new boss paying 100 units of this player: a 200 s fight is expected.
        let own = player(100);
        let dragon = kill("dragon_lord", 10_000);
        let last = LastKill::new(boss_hash("dragon_lord"), 5_000_000);
        let at = |gap_ms: u64| Seen {
            event: &dragon,
            at_ms: 5_000_000 + gap_ms,
            last_ms: 5_000_000,
        };
        assert_eq!(assess(&fights, &own, &last, &at(70_000), &t), None);
        assert!(matches!(
            assess(&fights, &own, &last, &at(40_000), &t),
            Some(Finding::Flag(e)) if e.measure == Measure::KillGapS
        ));
        assert!(matches!(
            assess(&fights, &own, &last, &at(20_000), &t),
            Some(Finding::Block(_))
        ));
        // A first kill after a 25 s fight is as impossible; after 150 s it is not.
        let first = LastKill::default();
        assert!(matches!(
            assess(&fights, &own, &first, &at(25_000), &t),
            Some(Finding::Block(e)) if e.measure == Measure::FightS
        ));
        assert_eq!(assess(&fights, &own, &first, &at(150_000), &t), None);
        // A player without progression events has no unit: only the floor judges.
        let unit_less = jump::Own::default();
        assert_eq!(assess(&fights, &unit_less, &last, &at(20_000), &t), None);
        assert_eq!(assess(&fights, &unit_less, &first, &at(25_000), &t), None);
    }

    #[test]
    fn an_unknown_boss_is_judged_by_the_floor() {
        let t = Thresholds::default();
        let fights = Fights::default();
        let last = LastKill::new(boss_hash("slime"), 1_000);
        let event = kill("slime", 1000);
        let own = player(50);
        let seen = |at_ms| Seen {
            event: &event,
            at_ms,
            last_ms: 1_000,
        };
        let floor_ms = t.cadence_floor_ms;
        assert!(assess(&fights, &own, &last, &seen(1_000 + floor_ms - 1), &t).is_some());
        assert_eq!(
            assess(&fights, &own, &last, &seen(1_000 + floor_ms), &t),
            None
        );
    }

    #[test]
    fn the_boss_map_is_bounded() {
        let mut fights = Fights::default();
        for i in 0..BOSSES_MAX + 10 {
            learn_fights(&mut fights, &format!("boss{i}"), 1000, 50, 30_000, 1);
        }
        assert_eq!(fights.by_boss.len(), BOSSES_MAX);
    }
}
