//! The fairness guard: per-player rate limiting with flood escalation, blocks, the
//! score-jump detector and the audit trail.
//!
//! Rate buckets and flood strikes are soft state: they steer decisions but are not
//! logged, so a restart forgives a flood in progress. Blocks and flags are hard state:
//! they travel as records through the shard's one `apply` path.

use std::collections::VecDeque;

use serde::Serialize;

/// Rate-limit cost of one event, in millitokens: integer arithmetic keeps the bucket
/// exact and replay-stable.
const EVENT_COST_MILLITOKENS: u64 = 1000;

/// Why a player is blocked, and by whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Block {
    pub until_ms: u64,
    pub reason: String,
    pub by: BlockedBy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockedBy {
    Fairness,
    Admin,
}

impl BlockedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            BlockedBy::Fairness => "fairness",
            BlockedBy::Admin => "admin",
        }
    }
}

/// Per-player fairness state.
///
/// The token bucket is on every event's path; everything else (flood strikes, the block,
/// counters, the drop-audit throttle) exists only for players who got into trouble, so
/// it sits behind one pointer that well-behaved players never allocate: 24 B per player
/// instead of 104, which is a tenth of a player's whole footprint.
#[derive(Debug, Clone, Default)]
pub struct PlayerGuard {
    /// Token bucket level, millitokens.
    bucket_millitokens: u64,
    /// When the bucket was last refilled, ms; 0 means never used (starts full).
    bucket_at_ms: u64,
    record: Option<Box<GuardRecord>>,
}

/// The part of a player's fairness state that only trouble creates.
#[derive(Debug, Clone, Default)]
struct GuardRecord {
    /// The last whole second in which this player was rate limited.
    strike_second: u64,
    /// Consecutive seconds, up to `strike_second`, in which the player was rate limited.
    strikes: u32,
    block: Option<Block>,
    flags: u64,
    rate_limited: u64,
    /// The second of the last `drop` audit record, to emit at most one per second.
    drop_audit_second: u64,
    /// Drops since the last `drop` audit record.
    drops_unaudited: u64,
}

/// What the rate limiter says about one more event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allowed,
    /// Over the limit; a token is back after this long.
    Limited {
        retry_after_ms: u64,
        flood: bool,
    },
}

impl PlayerGuard {
    /// Takes one token; on refusal counts a strike, and reports a flood once the player
    /// has been limited in `flood_after_s` consecutive seconds.
    pub fn take_token(&mut self, now_ms: u64, rate_per_s: u32, flood_after_s: u32) -> RateDecision {
        let rate = u64::from(rate_per_s.max(1));
        let capacity = rate * EVENT_COST_MILLITOKENS;
        if self.bucket_at_ms == 0 {
            self.bucket_millitokens = capacity;
        } else {
            // `rate` tokens per second is `rate` millitokens per millisecond.
            let elapsed_ms = now_ms.saturating_sub(self.bucket_at_ms);
            self.bucket_millitokens =
                capacity.min(self.bucket_millitokens + elapsed_ms.saturating_mul(rate));
        }
        self.bucket_at_ms = now_ms.max(1);
        if self.bucket_millitokens >= EVENT_COST_MILLITOKENS {
            self.bucket_millitokens -= EVENT_COST_MILLITOKENS;
            return RateDecision::Allowed;
        }
        let missing = EVENT_COST_MILLITOKENS - self.bucket_millitokens;
        let record = self.record_mut();
        record.rate_limited += 1;
        let second = now_ms / 1000;
        if second != record.strike_second {
            record.strikes = if second == record.strike_second + 1 {
                record.strikes + 1
            } else {
                1
            };
            record.strike_second = second;
        }
        RateDecision::Limited {
            retry_after_ms: missing.div_ceil(rate),
            flood: record.strikes >= flood_after_s.max(1),
        }
    }

    fn record_mut(&mut self) -> &mut GuardRecord {
        self.record.get_or_insert_with(Box::default)
    }

    /// Forgets the flood streak, so a player coming out of a block starts clean.
    pub fn reset_strikes(&mut self) {
        if let Some(record) = &mut self.record {
            record.strikes = 0;
        }
    }

    /// The block, active or expired but not yet lifted.
    pub fn block(&self) -> Option<&Block> {
        self.record.as_ref()?.block.as_ref()
    }

    pub fn set_block(&mut self, block: Option<Block>) {
        if block.is_some() || self.record.is_some() {
            self.record_mut().block = block;
        }
    }

    /// The active block at `now_ms`, if any.
    pub fn active_block(&self, now_ms: u64) -> Option<&Block> {
        self.block().filter(|b| b.until_ms > now_ms)
    }

    /// Events of this player flagged by the score guard.
    pub fn flags(&self) -> u64 {
        self.record.as_ref().map_or(0, |r| r.flags)
    }

    pub fn add_flag(&mut self) {
        self.record_mut().flags += 1;
    }

    /// Events of this player refused by the rate limiter.
    pub fn rate_limited(&self) -> u64 {
        self.record.as_ref().map_or(0, |r| r.rate_limited)
    }

    /// Recovery: puts back the counters as checkpointed.
    pub fn restore_counts(&mut self, flags: u64, rate_limited: u64) {
        if flags > 0 || rate_limited > 0 || self.record.is_some() {
            let record = self.record_mut();
            record.flags = flags;
            record.rate_limited = rate_limited;
        }
    }

    /// Counts a dropped event; returns how many drops a `drop` audit record should report
    /// now, or `None` while this second already has one.
    pub fn note_drop(&mut self, now_ms: u64) -> Option<u64> {
        let record = self.record_mut();
        record.drops_unaudited += 1;
        let second = now_ms / 1000;
        if second == record.drop_audit_second {
            return None;
        }
        record.drop_audit_second = second;
        Some(std::mem::take(&mut record.drops_unaudited))
    }
}

/// Flag kinds, also the `kind` label of `anomaly_flags_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagKind {
    /// A score far outside the population: kept off the leaderboards.
    ScoreJump,
    /// So far outside that it can only be forged: the player is blocked.
    ImpossibleScore,
    /// Sustained flooding: the player is blocked.
    Flood,
}

impl FlagKind {
    /// Every kind, so that metrics can show each one from the first scrape.
    pub const ALL: [FlagKind; 3] = [
        FlagKind::ScoreJump,
        FlagKind::ImpossibleScore,
        FlagKind::Flood,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FlagKind::ScoreJump => "score_jump",
            FlagKind::ImpossibleScore => "impossible_score",
            FlagKind::Flood => "flood",
        }
    }
}

/// What the score-jump detector says about one event's score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Assessment {
    Normal,
    Flag { z: f64 },
    Block { z: f64 },
}

/// Population model of per-event scores, the seam for the statistical guard.
///
/// Scores are heavy-tailed (quests give tens, raid bosses thousands), so the model works
/// on `ln(1 + score)` and keeps an exponentially weighted mean and variance: it follows
/// a drifting economy and costs O(1) per event. A floor on the deviation keeps a very
/// uniform population from flagging ordinary variation.
#[derive(Debug, Clone)]
pub struct ScoreModel {
    mean: f64,
    variance: f64,
    samples: u64,
}

/// Weight of each new sample: about the last thousand events shape the model.
const SCORE_MODEL_ALPHA: f64 = 1.0 / 1024.0;
/// Smallest deviation used, in ln units: a factor of e (~2.7x) is one sigma at least.
const SCORE_MODEL_STDDEV_MIN: f64 = 1.0;

impl Default for ScoreModel {
    fn default() -> Self {
        ScoreModel {
            mean: 0.0,
            variance: 0.0,
            samples: 0,
        }
    }
}

impl ScoreModel {
    pub fn assess(&self, score: u64, z_flag: f64, min_samples: u64) -> Assessment {
        if score == 0 || self.samples < min_samples {
            return Assessment::Normal;
        }
        let z = (ln_score(score) - self.mean) / self.variance.sqrt().max(SCORE_MODEL_STDDEV_MIN);
        if z > 2.0 * z_flag {
            Assessment::Block { z }
        } else if z > z_flag {
            Assessment::Flag { z }
        } else {
            Assessment::Normal
        }
    }

    /// The estimate, for a checkpoint.
    pub fn parts(&self) -> (f64, f64, u64) {
        (self.mean, self.variance, self.samples)
    }

    /// Recovery: the estimate as checkpointed.
    pub fn restore(mean: f64, variance: f64, samples: u64) -> Self {
        ScoreModel {
            mean,
            variance,
            samples,
        }
    }

    /// Learns from an accepted, unflagged scored event. Flagged ones are left out so a
    /// cheater cannot drag the population towards their scores.
    pub fn learn(&mut self, score: u64) {
        if score == 0 {
            return;
        }
        let x = ln_score(score);
        self.samples += 1;
        if self.samples == 1 {
            self.mean = x;
            return;
        }
        // Warm up with the plain running mean, then switch to exponential weighting.
        let alpha = (1.0 / self.samples as f64).max(SCORE_MODEL_ALPHA);
        let delta = x - self.mean;
        self.mean += alpha * delta;
        self.variance = (1.0 - alpha) * (self.variance + alpha * delta * delta);
    }
}

fn ln_score(score: u64) -> f64 {
    (score as f64).ln_1p()
}

/// One audit record: every flag, block, unblock and drop decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Unix seconds.
    pub at: u64,
    pub at_ms: u64,
    pub kind: AuditKind,
    pub player_id: String,
    pub reason: String,
    /// The decision's evidence, always a JSON object (the API's schema says so).
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditKind {
    Flag,
    Block,
    Unblock,
    Drop,
}

/// The shard's bounded in-memory audit trail, oldest first.
#[derive(Debug, Default)]
pub struct AuditLog {
    records: VecDeque<AuditRecord>,
    /// Records not yet handed to the output (stdout); replay discards them.
    outbox: Vec<AuditRecord>,
}

impl AuditLog {
    pub fn push(&mut self, record: AuditRecord, records_max: usize) {
        if self.records.len() == records_max {
            self.records.pop_front();
        }
        self.records.push_back(record.clone());
        self.outbox.push(record);
    }

    /// Recovery: puts back a kept record without printing it again.
    pub fn restore(&mut self, record: AuditRecord, records_max: usize) {
        if self.records.len() == records_max {
            self.records.pop_front();
        }
        self.records.push_back(record);
    }

    /// Kept records, oldest first (for checkpoints).
    pub fn oldest_first(&self) -> impl Iterator<Item = &AuditRecord> {
        self.records.iter()
    }

    /// Records written since the last call, for the output.
    pub fn take_outbox(&mut self) -> Vec<AuditRecord> {
        std::mem::take(&mut self.outbox)
    }

    /// Newest first, filtered.
    pub fn newest<'a>(
        &'a self,
        filter: impl Fn(&AuditRecord) -> bool + 'a,
    ) -> impl Iterator<Item = &'a AuditRecord> + 'a {
        self.records.iter().rev().filter(move |r| filter(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_rate_then_limits() {
        let mut guard = PlayerGuard::default();
        let t0 = 1_000_000;
        for _ in 0..5 {
            assert_eq!(guard.take_token(t0, 5, 3), RateDecision::Allowed);
        }
        assert_eq!(
            guard.take_token(t0, 5, 3),
            RateDecision::Limited {
                retry_after_ms: 200,
                flood: false
            }
        );
        // 200 ms later one token is back.
        assert_eq!(guard.take_token(t0 + 200, 5, 3), RateDecision::Allowed);
        assert_eq!(guard.rate_limited(), 1);
    }

    #[test]
    fn flood_needs_consecutive_seconds() {
        let mut guard = PlayerGuard::default();
        let mut flood_at = None;
        for ms in (0..5000).step_by(10) {
            if let RateDecision::Limited { flood: true, .. } = guard.take_token(10_000 + ms, 5, 3) {
                flood_at = Some(ms);
                break;
            }
        }
        // Limited from the first second on; the third consecutive second floods.
        let flood_at = flood_at.expect("flooding is detected");
        assert!((2000..3000).contains(&flood_at), "{flood_at}");

        let mut bursty = PlayerGuard::default();
        for second in [0u64, 2, 4, 6] {
            for i in 0..20 {
                let decision = bursty.take_token(10_000 + second * 1000 + i, 5, 3);
                assert!(!matches!(
                    decision,
                    RateDecision::Limited { flood: true, .. }
                ));
            }
        }
    }

    #[test]
    fn drops_are_audited_once_per_second() {
        let mut guard = PlayerGuard::default();
        assert_eq!(guard.note_drop(5_000), Some(1));
        assert_eq!(guard.note_drop(5_100), None);
        assert_eq!(guard.note_drop(5_900), None);
        assert_eq!(guard.note_drop(6_000), Some(3));
    }

    #[test]
    fn score_model_flags_jumps_only_after_warm_up() {
        let mut model = ScoreModel::default();
        assert_eq!(model.assess(1_000_000, 3.5, 100), Assessment::Normal);
        for i in 0..1000 {
            model.learn(10 + i % 20);
        }
        assert_eq!(model.assess(25, 3.5, 100), Assessment::Normal);
        assert!(matches!(
            model.assess(2_000, 3.5, 100),
            Assessment::Flag { .. }
        ));
        assert!(matches!(
            model.assess(1_000_000, 3.5, 100),
            Assessment::Block { .. }
        ));
        assert_eq!(model.assess(0, 3.5, 100), Assessment::Normal);
    }

    #[test]
    fn audit_log_is_bounded() {
        let mut log = AuditLog::default();
        for i in 0..10 {
            log.push(
                AuditRecord {
                    at: i,
                    at_ms: i * 1000,
                    kind: AuditKind::Flag,
                    player_id: "abc".into(),
                    reason: "x".into(),
                    detail: serde_json::Value::Null,
                },
                4,
            );
        }
        let kept: Vec<u64> = log.newest(|_| true).map(|r| r.at).collect();
        assert_eq!(kept, vec![9, 8, 7, 6]);
        assert_eq!(log.take_outbox().len(), 10);
        assert!(log.take_outbox().is_empty());
    }
}
