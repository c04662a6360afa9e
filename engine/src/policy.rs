//! The knobs of the domain, resolved from configuration by the binary.
//!
//! Every limit the shard enforces lives here, so tests can shrink them and operators
//! find them in one place.

use crate::event::TsPolicy;
use crate::fairness::Thresholds;
use crate::window::WindowKind;

#[derive(Debug, Clone)]
pub struct Policy {
    /// Season id, names the seasonal window's period.
    pub season: String,
    /// Leaderboard windows kept (`LB_WINDOWS`).
    pub windows: Vec<WindowKind>,
    /// Client timestamp bounds (`TS_SKEW`, `TS_MAX_AGE`).
    pub ts: TsPolicy,
    /// Sustained events per second per player (`RATE_LIMIT_MAX`); also the burst size.
    pub rate_limit_per_s: u32,
    /// Consecutive seconds a player must be rate limited in before the guard calls it a
    /// flood and blocks; a single burst over the limit only earns 429s.
    pub flood_block_after_s: u32,
    /// How long a player's first fairness block lasts (`BLOCK_SEC`), ms; each later one
    /// lasts twice the one before.
    pub block_ms: u64,
    /// The longest fairness block as a multiple of `block_ms` (`BLOCK_ESCALATION_MAX`).
    pub block_escalation_max: u64,
    /// How long the block of a confirmed review lasts (`REVIEW_CONFIRM_BLOCK_SEC`), ms.
    pub review_confirm_block_ms: u64,
    /// The fairness detectors' thresholds (`ANOMALY_Z` and the rest).
    pub fairness: Thresholds,
    /// How long an idempotency key is remembered (`IDEMP_TTL`), ms.
    pub idempotency_ttl_ms: u64,
    /// Idempotency keys one shard remembers at most; past it, keyed requests get 503
    /// rather than the engine forgetting a key early and applying a duplicate.
    pub idempotency_keys_max: usize,
    /// Bytes of remembered responses one shard keeps at most, same reasoning.
    pub idempotency_bytes_max: usize,
    /// Percent of those keys and bytes one client host may hold (`IDEMP_HOST_SHARE`):
    /// one client filling the store must not refuse every other client's keys.
    pub idempotency_host_share_percent: usize,
    /// How long a shard remembers the identity of an applied signed event
    /// (`REPLAY_WINDOW_SEC`), ms: its verbatim re-send within it is refused.
    pub replay_window_ms: u64,
    /// Signed bodies one shard remembers at most (`REPLAY_ENTRIES_MAX`); past it, new
    /// events get 503 rather than the shard forgetting an identity early and applying
    /// its replay.
    pub replay_entries_max: usize,
    /// Refused replays of one body that block its player (`REPLAY_BLOCK_AFTER`; 0:
    /// never): a client retrying after a lost answer stops at the first 409.
    pub replay_block_after: u8,
    /// Players one shard holds at most; past it, events of new players get 503.
    pub players_max: usize,
    /// Distinct bosses tracked per player.
    pub boss_kinds_per_player_max: usize,
    /// Drops held per player (claimed or not).
    pub drops_per_player_max: usize,
    /// Closed periods kept per window (`LB_HISTORY_PERIODS`).
    pub history_periods_max: usize,
    /// Entries kept per closed period per shard: enough to answer any page a reader may
    /// ask of a closed board (offset + limit ≤ this).
    pub history_entries_max: usize,
    /// Audit records kept in memory per shard for the fairness API (older ones live on
    /// stdout and in the mirrors).
    pub audit_records_max: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            season: "1".to_owned(),
            windows: WindowKind::ALL.to_vec(),
            ts: TsPolicy {
                skew_s: 300,
                max_age_s: None,
            },
            rate_limit_per_s: 50,
            flood_block_after_s: 3,
            block_ms: 60_000,
            block_escalation_max: 16,
            review_confirm_block_ms: 30 * 86_400_000,
            fairness: Thresholds::default(),
            idempotency_ttl_ms: 300_000,
            idempotency_keys_max: 1_000_000,
            idempotency_bytes_max: 256 << 20,
            idempotency_host_share_percent: 10,
            replay_window_ms: 60_000,
            replay_entries_max: 1_000_000,
            replay_block_after: 2,
            players_max: 10_000_000,
            boss_kinds_per_player_max: 256,
            drops_per_player_max: 1024,
            history_periods_max: 8,
            history_entries_max: 11_000,
            audit_records_max: 10_000,
        }
    }
}
