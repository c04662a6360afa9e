//! The decisions' ladder after a block: quarantine, escalating blocks, and the
//! operator's review.
//!
//! A fairness block (any detector's, the flag strikes', a flood's) also *quarantines*
//! the player: their score in every board period the shard keeps is taken off the boards
//! and held, exactly (score, when it was reached, sequence), and the scores of their
//! later accepted events are held too (progression is kept). The quarantine lasts until
//! an operator closes the player's review: *confirm* discards the held scores and blocks
//! the player for `REVIEW_CONFIRM_BLOCK_SEC`; *clear* lifts the fairness block and puts
//! every held score back where it would stand had it never left. A player has at most
//! one pending review; blocks during it escalate it, they do not open another.
//!
//! The n-th fairness block of a player lasts `BLOCK_SEC × 2^(n-1)`, at most
//! `BLOCK_SEC × BLOCK_ESCALATION_MAX`. The count lives in the player's trouble record,
//! which well-behaved players never allocate.

use serde::Serialize;

use super::Evidence;
use crate::window::WindowKind;

/// One score held off a board while its player is under review: enough to put it back
/// exactly where it ranked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Held {
    /// The board.
    pub window: WindowKind,
    /// The period the score belongs to: the live one or a kept closed one when held; a
    /// period the board no longer keeps is forgotten.
    pub period: String,
    /// The player's score in that period.
    pub score: u64,
    /// When the score was reached (engine clock), the first tie-break.
    pub reached_ms: u64,
    /// The shard sequence of that event, the second tie-break.
    pub seq: u64,
}

/// A pending review: why the player is quarantined and what is held.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Review {
    /// When the quarantine began (engine clock).
    pub since_ms: u64,
    /// The block reason of the decision that opened it.
    pub reason: String,
    /// The evidence of that decision: detector, measured value, threshold.
    pub evidence: Evidence,
    /// The player's fairness blocks before this review opened: a clear puts the count
    /// back, so blocks an operator found wrong do not lengthen the next one.
    pub blocks_before: u32,
    /// Scores held: at most one per window and kept period (live or closed), so bounded
    /// by windows × (1 + `LB_HISTORY_PERIODS`).
    pub held: Vec<Held>,
}

impl Review {
    /// Adds an event's score, reached at `reached_ms` with sequence `seq`, to the held
    /// score of `window`'s live `period`.
    pub fn hold(
        &mut self,
        window: WindowKind,
        period: &str,
        score: u64,
        reached_ms: u64,
        seq: u64,
    ) {
        match (self.held.iter_mut()).find(|h| h.window == window && h.period == period) {
            Some(h) => {
                h.score = h.score.saturating_add(score);
                h.reached_ms = reached_ms;
                h.seq = seq;
            }
            None => self.held.push(Held {
                window,
                period: period.to_owned(),
                score,
                reached_ms,
                seq,
            }),
        }
    }

    /// Forgets held scores of periods `kept` says are no longer kept.
    pub fn forget(&mut self, kept: impl Fn(WindowKind, &str) -> bool) {
        self.held.retain(|h| kept(h.window, &h.period));
    }
}

/// How a review was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Cheating: the held scores are discarded, the player blocked long.
    Confirmed,
    /// A false alarm: the held scores go back on the boards, the block is lifted.
    Cleared,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Confirmed => "confirmed",
            Verdict::Cleared => "cleared",
        }
    }
}

/// How long the player's next fairness block lasts, ms: `block_ms × 2^blocks_before`,
/// at most `block_ms × escalation_max`.
pub fn block_duration_ms(block_ms: u64, blocks_before: u32, escalation_max: u64) -> u64 {
    let multiple = 1u64
        .checked_shl(blocks_before)
        .unwrap_or(u64::MAX)
        .min(escalation_max.max(1));
    block_ms.saturating_mul(multiple)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_double_up_to_the_cap() {
        let durations: Vec<u64> = (0..7).map(|n| block_duration_ms(60_000, n, 16)).collect();
        assert_eq!(
            durations,
            vec![60_000, 120_000, 240_000, 480_000, 960_000, 960_000, 960_000]
        );
        assert_eq!(block_duration_ms(60_000, 200, 16), 960_000, "no overflow");
        assert_eq!(
            block_duration_ms(60_000, 3, 1),
            60_000,
            "a cap of 1: no escalation"
        );
    }

    #[test]
    fn a_review_holds_one_score_per_window_and_period() {
        let evidence = Evidence {
            detector: super::super::FlagKind::Flood,
            measure: super::super::Measure::LimitedS,
            measured: 3.0,
            threshold: 3.0,
        };
        let mut review = Review {
            since_ms: 1,
            reason: "r".into(),
            evidence,
            blocks_before: 0,
            held: Vec::new(),
        };
        review.hold(WindowKind::Daily, "d1", 10, 100, 1);
        review.hold(WindowKind::Daily, "d1", 5, 200, 2);
        review.hold(WindowKind::Daily, "d2", 7, 300, 3);
        assert_eq!(review.held.len(), 2);
        assert_eq!((review.held[0].score, review.held[0].reached_ms), (15, 200));
        review.forget(|_, period| period != "d1");
        assert_eq!(review.held.len(), 1);
        assert_eq!(review.held[0].period, "d2");
    }
}
