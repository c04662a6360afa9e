//! Improbable luck: a sequential likelihood test on the `weight`s of claimed drops.
//!
//! A drop's `weight` is the probability that one roll yields it. Honest claims follow the
//! weights, so a claim of weight `w` is `w`-likely; a lucky cheater claims rare items
//! whatever their weight. Each claim adds `ln(LUCK_REFERENCE_WEIGHT / w)` to a one-sided
//! CUSUM (a repeated sequential probability ratio test, reset at zero): common drops pull
//! it down, rare ones push it up by their surprise. With the default reference 0.05,
//! honest claims drift down (their mean surprise is below `ln(1 / 0.05)` for any table
//! whose claims are mostly common), and a run of rare drops climbs about 2.6 nats per
//! claim. Above `LUCK_LLR_MAX` nats the claim is flagged, above twice it the player is
//! blocked.
//!
//! The block's threshold is set by a career, not by one run: each excursion of an honest
//! CUSUM reaches `h` nats with odds of about `exp(-h)` (the claims' likelihood ratio
//! against the reference has mean one), and a player who rolls for a season makes
//! hundreds of excursions. At a block of 7 nats, one honest player in ten would be
//! blocked within 1,000 rolls; at the default 14, about one in two thousand within 3,000
//! (test `an_honest_career_is_not_blocked`). The price is time: a cheater claiming only
//! rare drops is blocked at about the sixth.
//!
//! Cannot catch: drops claimed without a `weight`, or a game whose `weight`s are not
//! per-roll probabilities; a cheater who mixes one rare claim into many common ones.

use serde::Serialize;

use super::{Evidence, Finding, FlagKind, Measure, Seen, Thresholds};
use crate::event::EventKind;

/// Smallest weight used: the validator allows any positive weight, and a denormal
/// would make one claim decisive.
const WEIGHT_MIN: f64 = 1e-9;

/// A player's run of luck: 4 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Luck {
    /// The CUSUM, nats.
    pub llr: f32,
}

fn llr_after(luck: &Luck, seen: &Seen, t: &Thresholds) -> Option<f64> {
    let EventKind::DropClaimed {
        weight: Some(weight),
        ..
    } = seen.event
    else {
        return None;
    };
    let surprise = (t.luck_reference_weight / weight.clamp(WEIGHT_MIN, 1.0)).ln();
    Some((f64::from(luck.llr) + surprise).max(0.0))
}

/// Judges one event.
pub fn assess(luck: &Luck, seen: &Seen, t: &Thresholds) -> Option<Finding> {
    let llr = llr_after(luck, seen, t)?;
    let evidence = Evidence {
        detector: FlagKind::Luck,
        measure: Measure::LlrNats,
        measured: llr,
        threshold: t.luck_llr_max,
    };
    Finding::grade(evidence)
}

/// Learns one accepted event.
pub fn learn(luck: &mut Luck, seen: &Seen, t: &Thresholds) {
    if let Some(llr) = llr_after(luck, seen, t) {
        luck.llr = llr as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drop(weight: f64) -> EventKind {
        EventKind::DropClaimed {
            drop_id: "x".into(),
            weight: Some(weight),
            source: None,
        }
    }

    /// Claims `weights` in order (all of them accepted); each claim's finding.
    fn claim(weights: &[f64]) -> Vec<Option<Finding>> {
        let t = Thresholds::default();
        let mut luck = Luck::default();
        let mut findings = Vec::new();
        for &w in weights {
            let event = drop(w);
            let seen = Seen {
                event: &event,
                at_ms: 1,
                last_ms: 0,
            };
            findings.push(assess(&luck, &seen, &t));
            learn(&mut luck, &seen, &t);
        }
        findings
    }

    #[test]
    fn a_run_of_rare_drops_is_flagged_then_blocked() {
        // A common drop, then drops of weight 0.003 in a row (2.8 nats each): the third
        // rare one flags (8.4 nats), the fifth blocks (14.1).
        let findings = claim(&[0.2, 0.003, 0.003, 0.003, 0.003, 0.003]);
        assert_eq!(findings[..3], [None, None, None]);
        assert!(matches!(findings[3], Some(Finding::Flag(e)) if e.detector == FlagKind::Luck));
        assert!(matches!(findings[4], Some(Finding::Flag(_))));
        assert!(matches!(findings[5], Some(Finding::Block(_))));
    }

    /// SplitMix64: a seeded, dependency-free stream of uniform numbers in [0, 1).
    struct Rolls(u64);

    impl Rolls {
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as f64 / 2f64.powi(64)
        }
    }

    #[test]
    fn an_honest_career_is_not_blocked() {
        // A loot table from common to very rare (weights are per-roll probabilities; the
        // rest of a roll yields nothing), and 2,000 honest players rolling 3,000 times
        // each, claiming what they roll: a season's play.
        const TABLE: [f64; 12] = [
            0.2, 0.15, 0.1, 0.05, 0.03, 0.02, 0.01, 0.007, 0.005, 0.003, 0.002, 0.001,
        ];
        let (players, rolls_each) = (2_000, 3_000);
        let t = Thresholds::default();
        let mut rolls = Rolls(11);
        let mut blocked = 0;
        for _ in 0..players {
            let mut luck = Luck::default();
            for _ in 0..rolls_each {
                let mut roll = rolls.next();
                let Some(&weight) = TABLE.iter().find(|&&w| {
                    roll -= w;
                    roll < 0.0
                }) else {
                    continue;
                };
                let event = drop(weight);
                let seen = Seen {
                    event: &event,
                    at_ms: 1,
                    last_ms: 0,
                };
                if matches!(assess(&luck, &seen, &t), Some(Finding::Block(_))) {
                    blocked += 1;
                    break;
                }
                learn(&mut luck, &seen, &t);
            }
        }
        // At most one in a thousand (at the old default of 3.5 nats, a third were).
        assert!(blocked * 1_000 <= players, "{blocked} of {players} blocked");
    }

    #[test]
    fn a_claim_without_weight_is_no_evidence() {
        let t = Thresholds::default();
        let event = EventKind::DropClaimed {
            drop_id: "x".into(),
            weight: None,
            source: None,
        };
        let seen = Seen {
            event: &event,
            at_ms: 1,
            last_ms: 0,
        };
        assert_eq!(assess(&Luck { llr: 100.0 }, &seen, &t), None);
    }
}
