//! Improbable luck: a sequential likelihood test on the `weight`s of claimed drops.
//!
//! A drop's `weight` is the probability that one roll yields it. Honest claims follow the
//! weights, so a claim of weight `w` is `w`-likely; a lucky cheater claims rare items
//! whatever their weight. Each claim adds `ln(LUCK_REFERENCE_WEIGHT / w)` to a one-sided
//! CUSUM (a repeated sequential probability ratio test, reset at zero): common drops pull
//! it down, rare ones push it up by their surprise. With the default reference 0.05,
//! honest claims drift down (their mean surprise is below `ln(1 / 0.05)` for any table
//! whose claims are mostly common), and a run of rare drops climbs about two nats per
//! claim. Above `LUCK_LLR_MAX` nats the claim is flagged, above twice it the player is
//! blocked: the odds of an honest run that lucky are about `exp(-2 * LUCK_LLR_MAX)`.
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
    fn honest_luck_passes_and_a_run_of_rare_drops_blocks() {
        // An honest run, rare drops included, as often as their weights say.
        let mut honest = Vec::new();
        for i in 0..1000 {
            // Spread out, as independent rolls are.
            honest.push(match (i * 37) % 100 {
                0 => 0.002,
                1..=5 => 0.01,
                6..=30 => 0.05,
                _ => 0.2,
            });
        }
        assert!(claim(&honest).iter().all(Option::is_none));
        // A common drop, then drops of weight 0.003 in a row: the second rare one flags
        // (5.6 nats), the third blocks (8.4).
        let findings = claim(&[0.2, 0.003, 0.003, 0.003]);
        assert_eq!(findings[..2], [None, None]);
        assert!(matches!(findings[2], Some(Finding::Flag(e)) if e.detector == FlagKind::Luck));
        assert!(matches!(findings[3], Some(Finding::Block(_))));
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
