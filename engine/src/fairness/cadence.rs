//! Impossible cadence: the same boss killed again faster than any honest player can.
//!
//! A boss fight has a minimum length no skill beats, and an honest player sends nothing
//! while fighting, so the time from a player's previous event to a boss kill measures the
//! fight. The shard learns, per boss, the typical fight (`ln` of that gap, from unflagged
//! kills that are not a rematch of the player's last boss: a farmer's kills are all
//! rematches, and would otherwise teach the model their own pace; gaps under
//! `CADENCE_FLOOR_SEC` are not fights and gaps over an hour are breaks: both skipped; once warm, a model counts a gap at most two
//! deviations from its mean, so pauses do not inflate it). A kill of the
//! boss the player killed last, sooner after that kill than `CADENCE_FRACTION` of the
//! typical fight, is flagged; sooner than half of it is blocked. Until a boss has
//! `CADENCE_MIN_SAMPLES` learned fights its typical fight is that of all bosses (a new
//! boss is judged like the average one), and before any `CADENCE_FLOOR_SEC` alone; the
//! threshold never goes below that floor. A first kill (not a rematch) whose fight, the
//! time since the player's previous event, lies more than `ANOMALY_Z` deviations (at
//! least half an e-fold each) below the boss's own fights (once it has
//! `CADENCE_MIN_SAMPLES`) is flagged, under half that blocked: one farmed kill is
//! enough. Where a game sends events while a fight runs, fights vary widely and this
//! test falls silent.
//!
//! Cannot catch: a farmer who alternates bosses (each kill is then a first kill after
//! another boss: the rate-of-gain detector sees the points), or one farming at most
//! `1 / CADENCE_FRACTION` times faster than the typical fight.

use std::collections::BTreeMap;

use compact_str::CompactString;
use serde::Serialize;

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
    /// Every boss's fights together: the estimate for a boss with too few of its own.
    pub all: LnModel,
}

impl Default for Fights {
    fn default() -> Self {
        Fights {
            by_boss: BTreeMap::new(),
            all: LnModel::EMPTY,
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

/// The flag threshold for `boss_id`, seconds.
fn threshold_s(fights: &Fights, boss_id: &str, t: &Thresholds) -> f64 {
    let warm = |m: &&LnModel| m.samples >= t.cadence_min_samples;
    let learned = (fights.by_boss.get(boss_id).filter(warm))
        .or(Some(&fights.all).filter(warm))
        .map_or(0.0, |m| m.mean.exp() * t.cadence_fraction);
    learned.max(t.cadence_floor_ms as f64 / 1000.0)
}

/// Judges one event.
pub fn assess(fights: &Fights, last: &LastKill, seen: &Seen, t: &Thresholds) -> Option<Finding> {
    let EventKind::BossKill { boss_id, .. } = seen.event else {
        return None;
    };
    if t.cadence_fraction == 0.0 {
        // The documented way to turn the detector off (load tests).
        return None;
    }
    let (measure, gap_ms, threshold) = if last.boss == boss_hash(boss_id) {
        (
            Measure::KillGapS,
            last.gap_ms(seen.at_ms),
            threshold_s(fights, boss_id, t),
        )
    } else {
        // A first kill: its fight, against the boss's own fights only (the average of
        // all bosses would flag honest kills of the quick ones), `ANOMALY_Z` deviations
        // below their mean: where a game sends events during fights the deviation is
        // wide and the test falls silent.
        if seen.last_ms == 0 {
            return None;
        }
        let own = fights.by_boss.get(boss_id.as_str());
        let fights = own.filter(|m| m.samples >= t.cadence_min_samples)?;
        let threshold = fights.upper(-t.anomaly_z, FIGHT_STDDEV_MIN);
        (
            Measure::FightS,
            seen.at_ms.saturating_sub(seen.last_ms),
            threshold,
        )
    };
    let gap_s = gap_ms as f64 / 1000.0;
    let evidence = Evidence {
        detector: FlagKind::Cadence,
        measure,
        measured: gap_s,
        threshold,
    };
    if gap_s < threshold / 2.0 {
        Some(Finding::Block(Evidence {
            threshold: threshold / 2.0,
            ..evidence
        }))
    } else if gap_s < threshold {
        Some(Finding::Flag(evidence))
    } else {
        None
    }
}

/// Learns one accepted event.
pub fn learn(fights: &mut Fights, last: &mut LastKill, seen: &Seen, flagged: bool, t: &Thresholds) {
    let EventKind::BossKill { boss_id, .. } = seen.event else {
        return;
    };
    let fight_ms = seen.at_ms.saturating_sub(seen.last_ms);
    let rematch = last.boss == boss_hash(boss_id);
    let fight = seen.last_ms > 0 && fight_ms >= t.cadence_floor_ms && fight_ms <= FIGHT_MS_MAX;
    if !flagged && !rematch && fight {
        let ln_fight = (fight_ms as f64 / 1000.0).ln();
        fights.all.learn(ln_fight);
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

    fn kill(boss: &str) -> EventKind {
        EventKind::BossKill {
            boss_id: boss.into(),
            tier: 1,
            points: 1000,
        }
    }

    /// Honest fights of `fight_ms` against `boss`, each after another event.
    fn learn_fights(fights: &mut Fights, boss: &str, fight_ms: u64, n: u64) {
        for i in 0..n {
            let event = kill(boss);
            let at_ms = 1_000_000 + i * 1_000_000;
            let seen = Seen {
                event: &event,
                at_ms,
                last_ms: at_ms - fight_ms,
            };
            learn(
                fights,
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
        learn_fights(&mut fights, "dragon_lord", 200_000, 10);
        let last = LastKill::new(boss_hash("dragon_lord"), 5_000_000);
        let again = kill("dragon_lord");
        let at = |gap_ms: u64| Seen {
            event: &again,
            at_ms: 5_000_000 + gap_ms,
            last_ms: 5_000_000,
        };
        // A rematch after a full honest fight.
        assert_eq!(assess(&fights, &last, &at(170_000), &t), None);
        // Five times faster than the typical fight: flagged; ten times: blocked.
        assert!(matches!(
            assess(&fights, &last, &at(40_000), &t),
            Some(Finding::Flag(e)) if e.detector == FlagKind::Cadence
        ));
        assert!(matches!(
            assess(&fights, &last, &at(20_000), &t),
            Some(Finding::Block(_))
        ));
        // Another boss is no rematch, but a fight eight times shorter than the boss's own
        // fights is as impossible.
        let other = LastKill {
            boss: boss_hash("goblin_king"),
            ..last
        };
        assert_eq!(assess(&fights, &other, &at(170_000), &t), None);
        let fight = Seen {
            last_ms: 5_000_000 + 135_000,
            ..at(160_000)
        };
        assert!(matches!(
            assess(&fights, &other, &fight, &t),
            Some(Finding::Flag(e)) if e.measure == Measure::FightS
        ));
    }

    #[test]
    fn a_boss_with_few_fights_is_judged_like_the_others() {
        let t = Thresholds::default();
        let mut fights = Fights::default();
        learn_fights(&mut fights, "dragon_lord", 200_000, 10);
        learn_fights(&mut fights, "slime", 100_000, 1);
        let last = LastKill::new(boss_hash("slime"), 1_000);
        let event = kill("slime");
        let seen = Seen {
            event: &event,
            at_ms: 41_000,
            last_ms: 1_000,
        };
        // The average fight is ~190 s: a rematch after 40 s is flagged.
        assert!(matches!(
            assess(&fights, &last, &seen, &t),
            Some(Finding::Flag(_))
        ));
    }

    #[test]
    fn an_unknown_boss_is_judged_by_the_floor() {
        let t = Thresholds::default();
        let fights = Fights::default();
        let last = LastKill::new(boss_hash("slime"), 1_000);
        let event = kill("slime");
        let seen = |at_ms| Seen {
            event: &event,
            at_ms,
            last_ms: 1_000,
        };
        assert!(assess(&fights, &last, &seen(1_000 + t.cadence_floor_ms - 1), &t).is_some());
        assert_eq!(
            assess(&fights, &last, &seen(1_000 + t.cadence_floor_ms), &t),
            None
        );
    }

    #[test]
    fn the_boss_map_is_bounded() {
        let mut fights = Fights::default();
        for i in 0..BOSSES_MAX + 10 {
            learn_fights(&mut fights, &format!("boss{i}"), 30_000, 1);
        }
        assert_eq!(fights.by_boss.len(), BOSSES_MAX);
    }
}
