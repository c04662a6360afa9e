//! A shard: the complete state of the players it owns, and the only code that changes it.
//!
//! Requests are *decided* against the current state (validation already done, then
//! blocks, rate limits, the score model, limits), and every durable change a decision
//! makes is expressed as a [`Record`] passed to [`Shard::apply`]. `apply` is the single
//! mutation path for hard state, deterministic given the record, so the same records
//! replayed from a log rebuild the same shard. Soft state (rate buckets, flood strikes,
//! the drop-audit throttle) is changed by decisions only and forgiven by a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;

use compact_str::CompactString;
use hashbrown::HashTable;

use serde::Serialize;
use serde_json::json;

use crate::board::{
    add_to_boards, Board, BoardKey, BoardView, HistoryLimits, Reached, Roster, Standings,
};
use crate::event::{Event, EventKind};
use crate::fairness::model::LnModel;
use crate::fairness::review::{self, Held, Review, Verdict};
use crate::fairness::{
    self, AuditKind, AuditLog, AuditRecord, Block, BlockedBy, Evidence, FlagKind, History, Measure,
    PlayerGuard, Population, RateDecision, Seen,
};
use crate::idempotency::{IdempotencyStore, Limits, Reserve, StoredResponse};
use crate::policy::Policy;
use crate::replay::{Remembered, ReplayId, ReplaySet};
use crate::signing::{Receipt, ReceiptSigner};
use crate::window::{Period, WindowKind};

/// XP per level: level = xp / 1000 + 1.
pub const XP_PER_LEVEL: u64 = 1000;

pub fn level_of(xp: u64) -> u64 {
    xp / XP_PER_LEVEL + 1
}

/// A durable state change. Everything that must survive a restart is one of these.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Record {
    EventAccepted {
        player: String,
        event: EventKind,
        ts: u64,
        at_ms: u64,
        /// Shard-local sequence: orders equal scores reached in the same millisecond.
        seq: u64,
        /// Set when the guard flagged the score: it stays off the leaderboards.
        flag: Option<FlagKind>,
        /// The flag's evidence, for the audit trail (threshold NaN in older logs).
        evidence: Option<Evidence>,
        /// The idempotency key of the request that carried the event, so recovery can
        /// rebuild a key whose completion record a crash cut off.
        key: Option<KeyRef>,
        /// The player's standing once this event is applied, for the change feed's sinks:
        /// absolute values, so a record delivered twice writes the same thing. Filled in
        /// when the record is decided; `None` in logs written before it existed. Replay
        /// recomputes the state and does not read it.
        totals: Option<Totals>,
        /// The identity of the signed bytes the event came in, so recovery remembers it
        /// for the rest of the replay window (`None`: not signed, or older logs).
        replay_id: Option<ReplayId>,
    },
    Blocked {
        player: String,
        until_ms: u64,
        reason: String,
        by: BlockedBy,
        at_ms: u64,
        /// What a detector measured, for a fairness block (`None`: admin, older logs).
        evidence: Option<Evidence>,
    },
    Unblocked {
        player: String,
        reason: String,
        at_ms: u64,
    },
    /// A fairness block quarantines the player: their scores in every kept period leave
    /// the boards, held for review (see `fairness::review`). Logged just before the
    /// `Blocked` record of the decision; nothing when a review is pending already.
    Quarantined {
        player: String,
        /// The block's reason.
        reason: String,
        /// The decision's evidence.
        evidence: Evidence,
        at_ms: u64,
        /// The scores taken off, for the change feed's sinks (a mirror removes these
        /// entries). Filled in when the record is decided; replay recomputes them.
        held: Vec<Held>,
    },
    /// An operator closed the player's pending review.
    ReviewClosed {
        player: String,
        verdict: Verdict,
        at_ms: u64,
        /// The held scores: put back on the boards (cleared) or discarded (confirmed),
        /// for the change feed's sinks. Filled in when decided; replay recomputes them.
        held: Vec<Held>,
    },
    RewardClaimed {
        player: String,
        item: String,
        receipt_id: String,
        /// Unix seconds, as signed in the receipt.
        timestamp: u64,
        at_ms: u64,
    },
    WindowClosed {
        window: WindowKind,
        next: Period,
        at_ms: u64,
    },
    KeyCompleted {
        key: String,
        #[serde(serialize_with = "crate::codec::hex_bytes")]
        fingerprint: [u8; 32],
        response: StoredResponse,
        expires_ms: u64,
        at_ms: u64,
        /// The client host the key is charged to, so recovery rebuilds each host's
        /// share of the store as it was (`None`: not attributable).
        host: Option<IpAddr>,
    },
    // Snapshot records: a checkpoint is the shard's state as a stream of these.
    /// One player's whole state.
    PlayerState(Box<PlayerSnapshot>),
    /// A board's live period; its entries follow as `BoardEntry` records.
    BoardPeriod {
        window: WindowKind,
        period: Period,
        updated_ms: u64,
    },
    /// One live board entry.
    BoardEntry {
        window: WindowKind,
        player: String,
        score: u64,
        reached_ms: u64,
        seq: u64,
    },
    /// A closed period's kept standings (this shard's part), best first.
    ClosedPeriod {
        window: WindowKind,
        name: String,
        closed_ms: u64,
        entries: Vec<(String, u64, u64, u64)>,
    },
    /// The single score model of older checkpoints: restored as the progression model.
    ScoreModel {
        mean: f64,
        variance: f64,
        samples: u64,
    },
    /// One of the fairness detectors' population models, by name (see
    /// `fairness::model_name`).
    FairnessModel { name: String, model: LnModel },
    /// One kept audit record.
    Audit(Box<AuditRecord>),
    /// A player's fairness ladder: blocks so far and the pending review, if any (only
    /// for players with either; follows the player's `PlayerState`).
    GuardState {
        player: String,
        /// Fairness blocks so far (the escalation's count).
        fairness_blocks: u32,
        /// The pending review with its held scores, if quarantined.
        review: Option<Box<Review>>,
    },
    /// The next sequence number to hand out.
    NextSeq(u64),
    /// A signed body whose events the shard applied within the replay window.
    ReplaySeen(Remembered),
}

impl Record {
    /// The engine-clock time of a state change; snapshot records have none (0) and sort
    /// before any change when streams are merged.
    pub fn at_ms(&self) -> u64 {
        match self {
            Record::EventAccepted { at_ms, .. }
            | Record::Blocked { at_ms, .. }
            | Record::Unblocked { at_ms, .. }
            | Record::Quarantined { at_ms, .. }
            | Record::ReviewClosed { at_ms, .. }
            | Record::RewardClaimed { at_ms, .. }
            | Record::WindowClosed { at_ms, .. }
            | Record::KeyCompleted { at_ms, .. } => *at_ms,
            _ => 0,
        }
    }
}

/// A player's standing right after an accepted event (see `Record::EventAccepted`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Experience in total.
    pub xp: u64,
    /// The player's score in each window's live period, indexed by
    /// [`WindowKind::index`]; `None` where the window is not configured or the player has
    /// not scored in its live period (a flagged event scores nothing, a quarantined
    /// player's scores are held off the boards).
    pub scores: [Option<u64>; WindowKind::COUNT],
}

/// A player's progression, as a mirror's rebuild reads it ([`Shard::players_chunk`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayerTotals {
    pub player: CompactString,
    pub xp: u64,
    /// When the player's state last changed (engine clock, ms).
    pub updated_ms: u64,
}

/// Where a record belongs when the shard count changes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// The shard owning this player or idempotency key.
    Owner(&'a str),
    /// Every shard (board periods, window closes, the score model, the sequence).
    All,
    /// Split per player (closed standings).
    Split,
}

impl Record {
    pub fn route(&self) -> Route<'_> {
        match self {
            Record::EventAccepted { player, .. }
            | Record::Blocked { player, .. }
            | Record::Unblocked { player, .. }
            | Record::Quarantined { player, .. }
            | Record::ReviewClosed { player, .. }
            | Record::GuardState { player, .. }
            | Record::RewardClaimed { player, .. }
            | Record::BoardEntry { player, .. } => Route::Owner(player),
            Record::PlayerState(p) => Route::Owner(&p.player),
            Record::Audit(a) => Route::Owner(&a.player_id),
            Record::KeyCompleted { key, .. } => Route::Owner(key),
            Record::WindowClosed { .. }
            | Record::BoardPeriod { .. }
            | Record::ScoreModel { .. }
            | Record::FairnessModel { .. }
            | Record::NextSeq(_) => Route::All,
            // A batch's events may belong to several shards: each keeps the body.
            Record::ReplaySeen(_) => Route::All,
            Record::ClosedPeriod { .. } => Route::Split,
        }
    }
}

impl Record {
    /// The record's part for each of `shards` shards under `shard_of`: one owner, every
    /// shard, or (closed standings) each shard's players.
    pub fn split(self, shards: usize) -> Vec<(usize, Record)> {
        match self.route() {
            Route::Owner(key) => vec![(crate::shard_of(key, shards), self)],
            Route::All => (0..shards).map(|i| (i, self.clone())).collect(),
            Route::Split => {
                let Record::ClosedPeriod {
                    window,
                    name,
                    closed_ms,
                    entries,
                } = self
                else {
                    unreachable!("only closed periods split")
                };
                let mut parts: Vec<Vec<(String, u64, u64, u64)>> = vec![Vec::new(); shards];
                for entry in entries {
                    parts[crate::shard_of(&entry.0, shards)].push(entry);
                }
                parts
                    .into_iter()
                    .enumerate()
                    .map(|(i, entries)| {
                        (
                            i,
                            Record::ClosedPeriod {
                                window,
                                name: name.clone(),
                                closed_ms,
                                entries,
                            },
                        )
                    })
                    .collect()
            }
        }
    }
}

/// An accepted event's idempotency key, body fingerprint and position in its batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRef {
    /// A boxed `str` (16 bytes, not a `String`'s 24): with `reserved_ms` the key
    /// still fits 64 bytes, so accepted-event records stay as small as before.
    pub key: Box<str>,
    #[serde(serialize_with = "crate::codec::hex_bytes")]
    pub fingerprint: [u8; 32],
    pub index: u32,
    /// When the key was reserved, by its home shard's clock: tells the events of this
    /// use of the key from those of an earlier use that expired, so recovery rebuilds
    /// only the latest (0 in records of builds that did not log it).
    pub reserved_ms: u64,
}

/// A player's durable state, as checkpointed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlayerSnapshot {
    pub player: String,
    pub xp: u64,
    pub boss_kills: Vec<(String, u64)>,
    pub drops: Vec<Drop>,
    pub updated_ms: u64,
    pub block: Option<Block>,
    pub flags: u64,
    pub rate_limited: u64,
    /// What the detectors know of the player (default in older checkpoints).
    pub history: History,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Drop {
    /// Ids and sources are short: inline, no allocation of their own.
    pub drop_id: CompactString,
    pub source: Option<CompactString>,
    /// The receipt id once claimed.
    pub claimed: Option<CompactString>,
}

#[derive(Debug, Clone)]
pub struct Player {
    /// Inline up to 24 bytes (player ids are mostly short): no allocation of its own.
    pub id: CompactString,
    pub xp: u64,
    pub updated_ms: u64,
    pub guard: PlayerGuard,
    /// The player's place on each board.
    standings: Standings,
    /// Boss kills and drops, allocated with the player's first: a player who only
    /// progresses costs one pointer here instead of two empty collections (48 B).
    collection: Option<Box<Collection>>,
}

/// What a player has collected. Vectors grown one element at a time: most players hold
/// a few bosses and drops, and a `BTreeMap` node or a vector's default growth would cost
/// hundreds of bytes for one entry (memory is the limit at millions of players; these
/// change at the pace of gameplay).
#[derive(Debug, Clone, Default)]
pub struct Collection {
    /// Kills per boss, sorted by boss id.
    pub boss_kills: Vec<(CompactString, u64)>,
    pub drops: Vec<Drop>,
}

/// The collection of a player who has none.
static NO_COLLECTION: Collection = Collection {
    boss_kills: Vec::new(),
    drops: Vec::new(),
};

impl Collection {
    fn boss_position(&self, boss_id: &str) -> Result<usize, usize> {
        self.boss_kills
            .binary_search_by(|(boss, _)| boss.as_str().cmp(boss_id))
    }

    pub fn has_killed(&self, boss_id: &str) -> bool {
        self.boss_position(boss_id).is_ok()
    }

    fn add_kill(&mut self, boss_id: &str) {
        match self.boss_position(boss_id) {
            Ok(i) => self.boss_kills[i].1 += 1,
            Err(i) => {
                self.boss_kills.reserve_exact(1);
                self.boss_kills.insert(i, (boss_id.into(), 1));
            }
        }
    }

    fn holds(&self, drop_id: &str) -> bool {
        self.drops.iter().any(|d| d.drop_id == drop_id)
    }

    /// Adds a drop not yet held.
    fn add_drop(&mut self, drop: Drop) {
        debug_assert!(!self.holds(&drop.drop_id), "a drop is held once");
        self.drops.reserve_exact(1);
        self.drops.push(drop);
    }
}

impl Player {
    fn new(id: &str) -> Self {
        Player {
            id: CompactString::from(id),
            xp: 0,
            updated_ms: 0,
            guard: PlayerGuard::default(),
            standings: Standings::default(),
            collection: None,
        }
    }

    pub fn collection(&self) -> &Collection {
        self.collection.as_deref().unwrap_or(&NO_COLLECTION)
    }

    fn collection_mut(&mut self) -> &mut Collection {
        self.collection.get_or_insert_with(Box::default)
    }
}

/// The shard's players: a dense `Vec` (what each player costs is its own size, with no
/// empty buckets around it) and an index of positions hashed by id. The id is stored
/// once, in the player: the index's buckets hold only a `u32` position, so a million
/// players cost ~8 MB of index rather than the ~50 MB a `HashMap<id, u32>` takes.
/// Players are never removed, so positions are stable.
#[derive(Default)]
struct PlayerTable {
    index: HashTable<u32>,
    /// Keyed SipHash: ids come from the network, and a predictable hash would let a
    /// client collide them.
    hasher: RandomState,
    players: Vec<Player>,
}

impl PlayerTable {
    fn len(&self) -> usize {
        self.players.len()
    }

    fn position_of(&self, id: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(id);
        self.index
            .find(hash, |&p| self.players[p as usize].id == id)
            .copied()
    }

    fn get(&self, id: &str) -> Option<&Player> {
        self.position_of(id).map(|p| self.at(p))
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut Player> {
        self.position_of(id).map(|p| self.at_mut(p))
    }

    fn at(&self, position: u32) -> &Player {
        &self.players[position as usize]
    }

    fn at_mut(&mut self, position: u32) -> &mut Player {
        &mut self.players[position as usize]
    }

    /// Adds a player not yet in the table, at the returned position.
    fn insert(&mut self, player: Player) -> u32 {
        debug_assert!(
            self.position_of(&player.id).is_none(),
            "players are inserted once"
        );
        let position =
            u32::try_from(self.players.len()).expect("fewer than 2^32 players per shard");
        let hash = self.hasher.hash_one(player.id.as_str());
        self.players.push(player);
        let (players, hasher) = (&self.players, &self.hasher);
        self.index.insert_unique(hash, position, |&p| {
            hasher.hash_one(players[p as usize].id.as_str())
        });
        position
    }

    fn values(&self) -> impl Iterator<Item = &Player> {
        self.players.iter()
    }

    /// Every player's position and standings, for ranking a board in one pass.
    fn standings(&self) -> impl Iterator<Item = (u32, &Standings)> {
        (0u32..).zip(self.players.iter().map(|p| &p.standings))
    }
}

impl Roster for PlayerTable {
    fn id(&self, position: u32) -> &CompactString {
        &self.at(position).id
    }

    fn find(&self, id: &str) -> Option<(u32, &Standings)> {
        let position = self.position_of(id)?;
        Some((position, &self.at(position).standings))
    }
}

impl std::ops::Index<&str> for PlayerTable {
    type Output = Player;

    fn index(&self, id: &str) -> &Player {
        self.get(id).expect("a known player")
    }
}

/// What happened to one submitted event.
#[derive(Debug, Clone, PartialEq)]
pub enum EventOutcome {
    Accepted {
        xp: u64,
        level: u64,
        flag: Option<FlagKind>,
    },
    Rejected(Rejection),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    /// The player is blocked; `new_flag` is set when this very event caused the block.
    Blocked {
        until_ms: u64,
        reason: String,
        new_flag: Option<FlagKind>,
    },
    RateLimited {
        retry_after_ms: u64,
    },
    /// The shard holds `players_max` players already.
    PlayersFull,
    /// A per-player limit (distinct bosses, drops) is reached; names the field.
    PlayerLimit {
        field: &'static str,
        limit: usize,
    },
    /// The event's signed bytes were applied within the replay window.
    Replayed,
    /// The shard remembers `replay_entries_max` bodies already; one is forgotten in
    /// `retry_after_ms`.
    ReplaysFull {
        retry_after_ms: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimError {
    NotEarned,
    AlreadyClaimed { receipt_id: String },
    Blocked { until_ms: u64, reason: String },
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressView {
    pub player_id: String,
    pub season: String,
    pub xp: u64,
    pub level: u64,
    pub boss_kills: BTreeMap<String, u64>,
    pub drops: Vec<DropView>,
    /// Unix seconds.
    pub updated_at: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DropView {
    pub drop_id: String,
    pub source: Option<String>,
    pub claimed: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GuardView {
    pub player_id: String,
    pub blocked: bool,
    pub blocked_until: Option<u64>,
    pub reason: Option<String>,
    pub by: Option<BlockedBy>,
    pub flags: u64,
    pub rate_limited: u64,
    /// A review is pending: the player's scores are held off the boards.
    pub quarantined: bool,
    /// Fairness blocks so far: the next lasts `BLOCK_SEC` times 2 to this power (capped).
    pub fairness_blocks: u32,
    pub recent_audit: Vec<AuditRecord>,
}

/// One entry of the review queue.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewView {
    pub player_id: String,
    /// When the quarantine began, ms.
    pub since_ms: u64,
    /// The reason of the block that opened the review.
    pub reason: String,
    /// That block's evidence: detector, measured value, threshold.
    pub evidence: Evidence,
    /// Fairness blocks so far, this review's included.
    pub fairness_blocks: u32,
    /// Scores held off the boards, per window and period.
    pub held: Vec<Held>,
    /// Whether the player is blocked now (the review outlives the block).
    pub blocked: bool,
    /// The active block's end, ms.
    pub blocked_until_ms: Option<u64>,
    /// Who set the active block.
    pub by: Option<BlockedBy>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockedView {
    pub player_id: String,
    /// Unix seconds.
    pub until: u64,
    pub until_ms: u64,
    pub reason: String,
    pub by: BlockedBy,
}

/// Audit records shown per player in the fairness view.
const PLAYER_AUDIT_RECENT_MAX: usize = 20;

pub struct Shard {
    policy: Policy,
    receipts: ReceiptSigner,
    players: PlayerTable,
    /// One board per configured window, in `policy.windows` order.
    boards: Vec<Board>,
    /// Players with a block, active or not yet expired by `tick`.
    blocked: BTreeSet<CompactString>,
    /// Players with a pending review (quarantined): at most one each, so bounded by the
    /// players; ordered by id for the review queue's pages.
    reviews: BTreeSet<CompactString>,
    /// The detectors' population models.
    population: Population,
    audit: AuditLog,
    idempotency: IdempotencyStore,
    /// The identities of the signed events applied within the replay window.
    replays: ReplaySet,
    next_seq: u64,
    /// Records applied since the last `take_journal`: what the caller must make durable
    /// before acknowledging.
    journal: Vec<Record>,
}

impl Shard {
    pub fn new(policy: Policy, receipts: ReceiptSigner, now_ms: u64) -> Self {
        let boards = policy
            .windows
            .iter()
            .map(|&kind| Board::new(kind, kind.period_at(now_ms, &policy.season)))
            .collect();
        let population = Population::new(&policy.fairness);
        Shard {
            policy,
            receipts,
            players: PlayerTable::default(),
            boards,
            blocked: BTreeSet::new(),
            reviews: BTreeSet::new(),
            population,
            audit: AuditLog::default(),
            idempotency: IdempotencyStore::default(),
            replays: ReplaySet::default(),
            next_seq: 1,
            journal: Vec::new(),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn players_len(&self) -> usize {
        self.players.len()
    }

    /// Decides one validated event.
    pub fn submit_event(&mut self, event: Event, key: Option<KeyRef>, now_ms: u64) -> EventOutcome {
        self.roll_windows(now_ms);
        if let Some(id) = event.replay_id {
            if let Some(rejection) = self.refuse_replay(id, &event.player_id, now_ms) {
                return EventOutcome::Rejected(rejection);
            }
        }
        let Some(position) = self.player_entry(&event.player_id) else {
            return EventOutcome::Rejected(Rejection::PlayersFull);
        };
        if let Some(rejection) = self.guard_admission(position, now_ms) {
            return EventOutcome::Rejected(rejection);
        }
        let player = self.players.at(position);
        if let Some(rejection) = self.check_player_limits(player, &event.kind) {
            return EventOutcome::Rejected(rejection);
        }
        let seen = Seen {
            event: &event.kind,
            at_ms: now_ms,
            last_ms: player.updated_ms,
        };
        let decision = fairness::judge(
            &self.population,
            &player.guard.history,
            &seen,
            &self.policy.fairness,
        );
        let evidence = decision.map(|d| d.evidence);
        if let Some(decision) = decision.filter(|d| d.block) {
            let e = decision.evidence;
            let mut reason = format!(
                "{}: {} {:.2} beyond {:.2}",
                e.detector.describe(),
                e.measure.as_str(),
                e.measured,
                e.threshold
            );
            if let Some(strikes) = decision.strikes {
                reason.push_str(&format!(" ({strikes} flags)"));
            }
            let rejection = self.fairness_block(position, reason, e, now_ms);
            return EventOutcome::Rejected(rejection);
        }
        let flag = evidence.map(|e| e.detector);
        let seq = self.next_seq;
        self.record(Record::EventAccepted {
            player: event.player_id,
            event: event.kind,
            ts: event.ts,
            at_ms: now_ms,
            seq,
            flag,
            evidence,
            key,
            totals: None,
            replay_id: event.replay_id,
        });
        let player = self.players.at(position);
        EventOutcome::Accepted {
            xp: player.xp,
            level: level_of(player.xp),
            flag,
        }
    }

    /// The replay rule (see `crate::replay`): refuses an event whose signed bytes were
    /// applied within the window, blocking its player at the `replay_block_after`-th
    /// refused replay of one body; refuses any event while the set is full.
    fn refuse_replay(&mut self, id: ReplayId, player_id: &str, now_ms: u64) -> Option<Rejection> {
        let (window_ms, block_after) =
            (self.policy.replay_window_ms, self.policy.replay_block_after);
        if let Some(replays) = self.replays.replayed(id, now_ms, window_ms) {
            // The player exists (its event was applied), unless the body came with a
            // batch that a reshard copied here.
            let Some(position) = self.players.position_of(player_id) else {
                return Some(Rejection::Replayed);
            };
            self.expire_block(position, now_ms);
            let blocked = self
                .players
                .at(position)
                .guard
                .active_block(now_ms)
                .is_some();
            if block_after == 0 || replays < block_after || blocked {
                return Some(Rejection::Replayed);
            }
            let reason = format!(
                "replayed events: one signed body re-sent {replays} times within {} s",
                window_ms / 1000
            );
            let evidence = Evidence {
                detector: FlagKind::Replay,
                measure: Measure::Replays,
                measured: f64::from(replays),
                threshold: f64::from(block_after),
            };
            return Some(self.fairness_block(position, reason, evidence, now_ms));
        }
        let entries_max = self.policy.replay_entries_max;
        if self.replays.len() >= entries_max && !self.replays.remembers_body(&id, now_ms, window_ms)
        {
            self.replays.expire(now_ms, window_ms);
            if self.replays.len() >= entries_max {
                let retry_after_ms = self.replays.room_in_ms(now_ms, window_ms);
                return Some(Rejection::ReplaysFull { retry_after_ms });
            }
        }
        None
    }

    /// Finds or admits the player, within `players_max`; returns its position.
    fn player_entry(&mut self, player_id: &str) -> Option<u32> {
        if let Some(position) = self.players.position_of(player_id) {
            return Some(position);
        }
        if self.players.len() >= self.policy.players_max {
            return None;
        }
        Some(self.players.insert(Player::new(player_id)))
    }

    /// Finds or inserts the player regardless of `players_max` (`apply` must not fail,
    /// the limit was enforced when the record was decided); returns its position.
    fn ensure_player(&mut self, player_id: &str) -> u32 {
        match self.players.position_of(player_id) {
            Some(position) => position,
            None => self.players.insert(Player::new(player_id)),
        }
    }

    fn history_limits(&self) -> HistoryLimits {
        HistoryLimits {
            entries_max: self.policy.history_entries_max,
            periods_max: self.policy.history_periods_max,
        }
    }

    /// Blocks and rate limits: the fairness guard's say before an event is looked at.
    fn guard_admission(&mut self, position: u32, now_ms: u64) -> Option<Rejection> {
        self.expire_block(position, now_ms);
        let policy = &self.policy;
        let guard = &mut self.players.at_mut(position).guard;
        if let Some(block) = guard.active_block(now_ms).cloned() {
            let drops = guard.note_drop(now_ms);
            self.audit_drop(position, now_ms, drops, "blocked");
            return Some(Rejection::Blocked {
                until_ms: block.until_ms,
                reason: block.reason,
                new_flag: None,
            });
        }
        match guard.take_token(now_ms, policy.rate_limit_per_s, policy.flood_block_after_s) {
            RateDecision::Allowed => None,
            RateDecision::Limited { flood: true, .. } => {
                let reason = format!(
                    "flooding: over {} events/s for {} consecutive seconds",
                    policy.rate_limit_per_s, policy.flood_block_after_s
                );
                let seconds = f64::from(policy.flood_block_after_s);
                let evidence = Evidence {
                    detector: FlagKind::Flood,
                    measure: Measure::LimitedS,
                    measured: seconds,
                    threshold: seconds,
                };
                Some(self.fairness_block(position, reason, evidence, now_ms))
            }
            RateDecision::Limited { retry_after_ms, .. } => {
                let drops = guard.note_drop(now_ms);
                self.audit_drop(position, now_ms, drops, "rate_limited");
                Some(Rejection::RateLimited { retry_after_ms })
            }
        }
    }

    /// The fairness guard blocks a player, `BLOCK_SEC` doubled for each earlier fairness
    /// block (at most `BLOCK_ESCALATION_MAX` times), and quarantines them unless a review
    /// is pending already; the event that caused it is refused with the block.
    fn fairness_block(
        &mut self,
        position: u32,
        reason: String,
        evidence: Evidence,
        now_ms: u64,
    ) -> Rejection {
        let guard = &self.players.at(position).guard;
        let duration_ms = review::block_duration_ms(
            self.policy.block_ms,
            guard.fairness_blocks(),
            self.policy.block_escalation_max,
        );
        if guard.review().is_none() {
            self.record(Record::Quarantined {
                player: self.players.at(position).id.to_string(),
                reason: reason.clone(),
                evidence,
                at_ms: now_ms,
                held: Vec::new(),
            });
        }
        let until_ms = now_ms.saturating_add(duration_ms);
        self.record(Record::Blocked {
            player: self.players.at(position).id.to_string(),
            until_ms,
            reason: reason.clone(),
            by: BlockedBy::Fairness,
            at_ms: now_ms,
            evidence: Some(evidence),
        });
        Rejection::Blocked {
            until_ms,
            reason,
            new_flag: Some(evidence.detector),
        }
    }

    fn check_player_limits(&self, player: &Player, kind: &EventKind) -> Option<Rejection> {
        match kind {
            EventKind::BossKill { boss_id, .. }
                if !player.collection().has_killed(boss_id)
                    && player.collection().boss_kills.len()
                        >= self.policy.boss_kinds_per_player_max =>
            {
                Some(Rejection::PlayerLimit {
                    field: "payload.bossId",
                    limit: self.policy.boss_kinds_per_player_max,
                })
            }
            EventKind::DropClaimed { drop_id, .. }
                if !player.collection().holds(drop_id)
                    && player.collection().drops.len() >= self.policy.drops_per_player_max =>
            {
                Some(Rejection::PlayerLimit {
                    field: "payload.dropId",
                    limit: self.policy.drops_per_player_max,
                })
            }
            _ => None,
        }
    }

    /// Keeps one audit record (bounded by `audit_records_max`): every decision's trail.
    fn record_audit(
        &mut self,
        kind: AuditKind,
        player_id: String,
        reason: String,
        detail: serde_json::Value,
        at_ms: u64,
    ) {
        let record = AuditRecord::new(kind, player_id, reason, detail, at_ms);
        self.audit.push(record, self.policy.audit_records_max);
    }

    fn audit_drop(&mut self, position: u32, now_ms: u64, drops: Option<u64>, cause: &str) {
        if let Some(count) = drops {
            self.record_audit(
                AuditKind::Drop,
                self.players.at(position).id.to_string(),
                cause.to_owned(),
                json!({ "count": count }),
                now_ms,
            );
        }
    }

    /// Lifts a block whose time is up, through the log.
    fn expire_block(&mut self, position: u32, now_ms: u64) {
        let player = self.players.at(position);
        let expired = player.guard.block().is_some_and(|b| b.until_ms <= now_ms);
        if expired {
            self.record(Record::Unblocked {
                player: player.id.to_string(),
                reason: "expired".to_owned(),
                at_ms: now_ms,
            });
        }
    }

    /// Claims an earned drop, minting its receipt.
    pub fn claim(
        &mut self,
        player_id: &str,
        item: &str,
        now_ms: u64,
    ) -> Result<Receipt, ClaimError> {
        let Some(position) = self.players.position_of(player_id) else {
            return Err(ClaimError::NotEarned);
        };
        self.expire_block(position, now_ms);
        let player = self.players.at(position);
        if let Some(block) = player.guard.active_block(now_ms) {
            return Err(ClaimError::Blocked {
                until_ms: block.until_ms,
                reason: block.reason.clone(),
            });
        }
        let drop = player
            .collection()
            .drops
            .iter()
            .find(|d| d.drop_id == item)
            .ok_or(ClaimError::NotEarned)?;
        if let Some(receipt_id) = &drop.claimed {
            return Err(ClaimError::AlreadyClaimed {
                receipt_id: receipt_id.to_string(),
            });
        }
        let receipt_id = self
            .receipts
            .receipt_id(&self.policy.season, player_id, item);
        let timestamp = now_ms / 1000;
        self.record(Record::RewardClaimed {
            player: player_id.to_owned(),
            item: item.to_owned(),
            receipt_id: receipt_id.clone(),
            timestamp,
            at_ms: now_ms,
        });
        Ok(self.receipts.sign(receipt_id, player_id, item, timestamp))
    }

    /// An operator's block. Blocking a player never seen is allowed (a pre-emptive ban).
    pub fn admin_block(
        &mut self,
        player_id: &str,
        duration_ms: u64,
        reason: String,
        now_ms: u64,
    ) -> Option<Block> {
        self.player_entry(player_id)?;
        let until_ms = now_ms.saturating_add(duration_ms);
        Some(self.operator_block(player_id, until_ms, reason, None, now_ms))
    }

    /// Logs an operator's block of a known player.
    fn operator_block(
        &mut self,
        player_id: &str,
        until_ms: u64,
        reason: String,
        evidence: Option<Evidence>,
        now_ms: u64,
    ) -> Block {
        self.record(Record::Blocked {
            player: player_id.to_owned(),
            until_ms,
            reason: reason.clone(),
            by: BlockedBy::Admin,
            at_ms: now_ms,
            evidence,
        });
        Block {
            until_ms,
            reason,
            by: BlockedBy::Admin,
        }
    }

    /// An operator's unblock; false when the player has no active block.
    pub fn admin_unblock(&mut self, player_id: &str, now_ms: u64) -> bool {
        let active = self
            .players
            .get(player_id)
            .is_some_and(|p| p.guard.active_block(now_ms).is_some());
        if active {
            self.record(Record::Unblocked {
                player: player_id.to_owned(),
                reason: "admin".to_owned(),
                at_ms: now_ms,
            });
        }
        active
    }

    /// An operator confirms a pending review: the held scores are discarded and the
    /// player is blocked for `REVIEW_CONFIRM_BLOCK_SEC` from now (an admin block, with the
    /// review's evidence). `None` when the player has no pending review.
    pub fn review_confirm(&mut self, player_id: &str, now_ms: u64) -> Option<Block> {
        let review = self.players.get(player_id)?.guard.review()?;
        let reason = format!("review confirmed: {}", review.reason);
        let evidence = Some(review.evidence);
        let until_ms = now_ms.saturating_add(self.policy.review_confirm_block_ms);
        let block = self.operator_block(player_id, until_ms, reason, evidence, now_ms);
        self.record(Record::ReviewClosed {
            player: player_id.to_owned(),
            verdict: Verdict::Confirmed,
            at_ms: now_ms,
            held: Vec::new(),
        });
        Some(block)
    }

    /// An operator clears a pending review: the fairness block (if any) is lifted and
    /// the held scores go back on the boards as if they had never left. False when the
    /// player has no pending review.
    pub fn review_clear(&mut self, player_id: &str, now_ms: u64) -> bool {
        let Some(guard) = self.players.get(player_id).map(|p| &p.guard) else {
            return false;
        };
        if guard.review().is_none() {
            return false;
        }
        if guard.block().is_some_and(|b| b.by == BlockedBy::Fairness) {
            self.record(Record::Unblocked {
                player: player_id.to_owned(),
                reason: "review cleared".to_owned(),
                at_ms: now_ms,
            });
        }
        self.record(Record::ReviewClosed {
            player: player_id.to_owned(),
            verdict: Verdict::Cleared,
            at_ms: now_ms,
            held: Vec::new(),
        });
        true
    }

    /// Closes every window whose period ended by `now_ms`.
    pub fn roll_windows(&mut self, now_ms: u64) {
        for i in 0..self.boards.len() {
            let board = &self.boards[i];
            let season_changed =
                board.kind == WindowKind::Seasonal && board.period.name != self.policy.season;
            if now_ms >= board.period.ends_ms || season_changed {
                let next = board.kind.period_at(now_ms, &self.policy.season);
                self.record(Record::WindowClosed {
                    window: board.kind,
                    next,
                    at_ms: now_ms,
                });
            }
        }
    }

    /// Periodic housekeeping: window rollover, block expiry, idempotency expiry.
    pub fn tick(&mut self, now_ms: u64) {
        self.roll_windows(now_ms);
        let expired: Vec<u32> = self
            .blocked
            .iter()
            .filter_map(|id| self.players.position_of(id))
            .filter(|&p| {
                let block = self.players.at(p).guard.block();
                block.is_some_and(|b| b.until_ms <= now_ms)
            })
            .collect();
        for position in expired {
            self.expire_block(position, now_ms);
        }
        self.idempotency.expire(now_ms);
        self.replays.expire(now_ms, self.policy.replay_window_ms);
    }

    /// Recovery: until [`Shard::finish_replay`], applied records move players' standings
    /// but not the boards' rankings, and each board is ranked once at the end: replaying
    /// millions of events then costs no skip-list work per event. Snapshot records
    /// (`BoardEntry`) may only be applied in between.
    pub fn begin_replay(&mut self) {
        for board in &mut self.boards {
            board.defer_ranking();
        }
    }

    /// Recovery: ranks every board from the replayed standings. Reads, decisions and
    /// snapshots need ranked boards.
    pub fn finish_replay(&mut self) {
        for board in &mut self.boards {
            if !board.is_ranked() {
                board.rank_all(self.players.standings());
            }
        }
    }

    /// Records applied since the last call, oldest first.
    pub fn take_journal(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.journal)
    }

    /// Applies a decided record and journals it.
    fn record(&mut self, mut record: Record) {
        match &mut record {
            // Nearly every record is an accepted event: apply it from the journal's copy,
            // so the hot path does not clone the player id and the event's strings.
            Record::EventAccepted { .. } => {
                let position = self.apply_accepted(&record);
                let Record::EventAccepted { totals, .. } = &mut record else {
                    unreachable!("matched above")
                };
                *totals = Some(self.totals_at(position));
            }
            // The sinks' copy of what the decision holds, restores or discards.
            Record::Quarantined { .. } => {
                self.apply(record.clone());
                let Record::Quarantined { player, held, .. } = &mut record else {
                    unreachable!("matched above")
                };
                *held = self.held_of(player);
            }
            Record::ReviewClosed { player, held, .. } => {
                *held = self.held_of(player);
                self.apply(record.clone());
            }
            _ => self.apply(record.clone()),
        }
        self.journal.push(record);
    }

    /// The scores held for the player's pending review (none without one).
    fn held_of(&self, player: &str) -> Vec<Held> {
        (self.players.get(player).and_then(|p| p.guard.review()))
            .map_or_else(Vec::new, |r| r.held.clone())
    }

    /// Quarantine: takes the player's scores off every board, live and kept closed
    /// periods, and returns them.
    fn take_scores(&mut self, position: u32, at_ms: u64) -> Vec<Held> {
        let mut held = Vec::new();
        let player = self.players.at_mut(position);
        for board in &mut self.boards {
            if let Some((score, reached)) = board.take(position, &mut player.standings, at_ms) {
                held.push(Held {
                    window: board.kind,
                    period: board.period.name.clone(),
                    score,
                    reached_ms: reached.ms,
                    seq: reached.seq,
                });
            }
            for (period, key) in board.take_closed(&player.id) {
                held.push(Held {
                    window: board.kind,
                    period,
                    score: key.score(),
                    reached_ms: key.reached_ms,
                    seq: key.seq,
                });
            }
        }
        held
    }

    /// A cleared review: puts held scores back where they stood, in the live period or
    /// a kept closed one; scores of periods no longer kept are gone.
    fn restore_scores(&mut self, position: u32, held: Vec<Held>, at_ms: u64) {
        let entries_max = self.policy.history_entries_max;
        let player = self.players.at_mut(position);
        for h in held {
            let Some(board) = self.boards.iter_mut().find(|b| b.kind == h.window) else {
                continue;
            };
            if board.period.name == h.period {
                let reached = Reached {
                    ms: h.reached_ms,
                    seq: h.seq,
                };
                board.put(position, &mut player.standings, h.score, reached, at_ms);
            } else {
                let key = BoardKey {
                    score: std::cmp::Reverse(h.score),
                    reached_ms: h.reached_ms,
                    seq: h.seq,
                    player: player.id.clone(),
                };
                board.put_closed(&h.period, key, entries_max);
            }
        }
    }

    /// The standing of the player at `position`: its XP and its score on each board.
    fn totals_at(&self, position: u32) -> Totals {
        let player = self.players.at(position);
        let mut scores = [None; WindowKind::COUNT];
        for board in &self.boards {
            scores[board.kind.index()] = board.score_in(&player.standings);
        }
        Totals {
            xp: player.xp,
            scores,
        }
    }

    /// An accepted event's effect on its player and the boards, or on the audit trail
    /// when it was flagged (a flagged event scores nothing). Returns the player's
    /// position.
    fn apply_accepted(&mut self, record: &Record) -> u32 {
        let Record::EventAccepted {
            player,
            event,
            ts,
            at_ms,
            seq,
            flag,
            evidence,
            replay_id,
            ..
        } = record
        else {
            unreachable!("called for accepted events only");
        };
        let (at_ms, seq) = (*at_ms, *seq);
        if let Some(id) = replay_id {
            let window_ms = self.policy.replay_window_ms;
            // Replaying a log expires as it goes, so recovery holds a window at most.
            self.replays.expire(at_ms, window_ms);
            self.replays.insert(*id, at_ms, window_ms);
        }
        let position = self.ensure_player(player);
        let p = self.players.at_mut(position);
        let seen = Seen {
            event,
            at_ms,
            last_ms: p.updated_ms,
        };
        fairness::learn(
            &mut self.population,
            &mut p.guard.history,
            &seen,
            flag.is_some(),
            &self.policy.fairness,
        );
        let score = event.score();
        p.xp = p.xp.saturating_add(score);
        p.updated_ms = at_ms;
        match event {
            EventKind::Progression { .. } => {}
            EventKind::BossKill { boss_id, .. } => p.collection_mut().add_kill(boss_id),
            EventKind::DropClaimed {
                drop_id, source, ..
            } => {
                let collection = p.collection_mut();
                if !collection.holds(drop_id) {
                    collection.add_drop(Drop {
                        drop_id: drop_id.into(),
                        source: source.as_deref().map(CompactString::from),
                        claimed: None,
                    });
                }
            }
        }
        match flag {
            None if score > 0 => match p.guard.review_mut() {
                // Quarantined: the score is held for the review, not ranked.
                Some(review) => {
                    for board in &self.boards {
                        review.hold(board.kind, &board.period.name, score, at_ms, seq);
                    }
                    let boards = &self.boards;
                    review.forget(|window, period| {
                        boards.iter().any(|b| b.kind == window && b.keeps(period))
                    });
                }
                None => {
                    let now = Reached { ms: at_ms, seq };
                    add_to_boards(&mut self.boards, position, &mut p.standings, score, now);
                }
            },
            None => {}
            Some(kind) => {
                p.guard.add_flag();
                // Rare: the copies for the audit line are off the hot path.
                let mut detail = json!({ "type": event.type_name(), "score": score, "ts": ts });
                if let Some(evidence) = evidence {
                    evidence.insert_into(&mut detail);
                }
                self.record_audit(
                    AuditKind::Flag,
                    player.clone(),
                    kind.as_str().to_owned(),
                    detail,
                    at_ms,
                );
            }
        }
        self.next_seq = self.next_seq.max(seq + 1);
        position
    }

    /// The single mutation path for durable state; also what replay calls.
    pub fn apply(&mut self, record: Record) {
        let audit_max = self.policy.audit_records_max;
        match record {
            Record::EventAccepted { .. } => {
                self.apply_accepted(&record);
            }
            Record::Blocked {
                player,
                until_ms,
                reason,
                by,
                at_ms,
                evidence,
            } => {
                let position = self.ensure_player(&player);
                let p = self.players.at_mut(position);
                p.guard.set_block(Some(Block {
                    until_ms,
                    reason: reason.clone(),
                    by,
                }));
                p.guard.reset_strikes();
                if by == BlockedBy::Fairness {
                    let blocks = p.guard.fairness_blocks().saturating_add(1);
                    p.guard.set_fairness_blocks(blocks);
                }
                self.blocked.insert(p.id.clone());
                let mut detail =
                    json!({ "until": until_ms / 1000, "untilMs": until_ms, "by": by.as_str() });
                if let Some(evidence) = evidence {
                    evidence.insert_into(&mut detail);
                }
                self.record_audit(AuditKind::Block, player, reason, detail, at_ms);
            }
            Record::Unblocked {
                player,
                reason,
                at_ms,
            } => {
                // The lifted block's end, for the audit trail.
                let mut lifted_until_ms = None;
                if let Some(p) = self.players.get_mut(player.as_str()) {
                    lifted_until_ms = p.guard.block().map(|b| b.until_ms);
                    p.guard.set_block(None);
                    p.guard.reset_strikes();
                }
                self.blocked.remove(player.as_str());
                let detail = match lifted_until_ms {
                    Some(until_ms) => json!({ "until": until_ms / 1000, "untilMs": until_ms }),
                    None => json!({}),
                };
                self.record_audit(AuditKind::Unblock, player, reason, detail, at_ms);
            }
            Record::Quarantined {
                player,
                reason,
                evidence,
                at_ms,
                ..
            } => {
                let position = self.ensure_player(&player);
                if self.players.at(position).guard.review().is_some() {
                    return; // one pending review per player
                }
                let held = self.take_scores(position, at_ms);
                let mut detail = json!({ "held": held });
                evidence.insert_into(&mut detail);
                let p = self.players.at_mut(position);
                let blocks_before = p.guard.fairness_blocks();
                p.guard.set_review(Some(Review {
                    since_ms: at_ms,
                    reason: reason.clone(),
                    evidence,
                    blocks_before,
                    held,
                }));
                self.reviews.insert(p.id.clone());
                self.record_audit(AuditKind::Quarantine, player, reason, detail, at_ms);
            }
            Record::ReviewClosed {
                player,
                verdict,
                at_ms,
                ..
            } => {
                let Some(position) = self.players.position_of(&player) else {
                    return;
                };
                let Some(review) = self.players.at_mut(position).guard.set_review(None) else {
                    return;
                };
                self.reviews.remove(player.as_str());
                let mut detail = json!({ "held": review.held, "sinceMs": review.since_ms });
                review.evidence.insert_into(&mut detail);
                if verdict == Verdict::Cleared {
                    let guard = &mut self.players.at_mut(position).guard;
                    guard.set_fairness_blocks(review.blocks_before);
                    self.restore_scores(position, review.held, at_ms);
                }
                self.record_audit(
                    AuditKind::Review,
                    player,
                    verdict.as_str().to_owned(),
                    detail,
                    at_ms,
                );
            }
            Record::GuardState {
                player,
                fairness_blocks,
                review,
            } => {
                let position = self.ensure_player(&player);
                let p = self.players.at_mut(position);
                p.guard.set_fairness_blocks(fairness_blocks);
                if review.is_some() {
                    self.reviews.insert(p.id.clone());
                }
                p.guard.set_review(review.map(|r| *r));
            }
            Record::RewardClaimed {
                player,
                item,
                receipt_id,
                ..
            } => {
                let drop = self.players.get_mut(player.as_str()).and_then(|p| {
                    p.collection
                        .as_mut()?
                        .drops
                        .iter_mut()
                        .find(|d| d.drop_id == item)
                });
                debug_assert!(drop.is_some(), "claims are decided against an earned drop");
                if let Some(drop) = drop {
                    drop.claimed = Some(receipt_id.into());
                }
            }
            Record::WindowClosed {
                window,
                next,
                at_ms,
            } => {
                let limits = self.history_limits();
                // Idempotent: streams merged from several old shards each carry the close.
                let board = self
                    .boards
                    .iter_mut()
                    .find(|b| b.kind == window && b.period != next);
                if let Some(board) = board {
                    // Replay ranks a board only for the moment its period closes.
                    let replaying = !board.is_ranked();
                    if replaying {
                        board.rank_all(self.players.standings());
                    }
                    board.close(next, at_ms, limits, &self.players);
                    if replaying {
                        board.defer_ranking();
                    }
                }
            }
            Record::KeyCompleted {
                key,
                fingerprint,
                response,
                expires_ms,
                host,
                ..
            } => self
                .idempotency
                .complete(&key, fingerprint, response, expires_ms, host),
            Record::PlayerState(p) => {
                let p = *p;
                let position = self.ensure_player(&p.player);
                let player = self.players.at_mut(position);
                player.xp = p.xp;
                let collected = !p.boss_kills.is_empty() || !p.drops.is_empty();
                player.collection = collected.then(|| {
                    Box::new(Collection {
                        boss_kills: {
                            let mut kills: Vec<(CompactString, u64)> = (p.boss_kills.into_iter())
                                .map(|(boss, n)| (boss.into(), n))
                                .collect();
                            kills.sort_unstable();
                            kills
                        },
                        drops: p.drops,
                    })
                });
                player.updated_ms = p.updated_ms;
                player.guard.restore_counts(p.flags, p.rate_limited);
                player.guard.history = p.history;
                if p.block.is_some() {
                    self.blocked.insert(player.id.clone());
                }
                player.guard.set_block(p.block);
            }
            Record::BoardPeriod {
                window,
                period,
                updated_ms,
            } => {
                if let Some(board) = self.boards.iter_mut().find(|b| b.kind == window) {
                    board.restore_period(period, updated_ms);
                }
            }
            Record::BoardEntry {
                window,
                player,
                score,
                reached_ms,
                seq,
            } => {
                let position = self.ensure_player(&player);
                if let Some(board) = self.boards.iter_mut().find(|b| b.kind == window) {
                    let standings = &mut self.players.at_mut(position).standings;
                    board.restore_entry(
                        standings,
                        score,
                        Reached {
                            ms: reached_ms,
                            seq,
                        },
                    );
                }
            }
            Record::ClosedPeriod {
                window,
                name,
                closed_ms,
                entries,
            } => {
                let limits = self.history_limits();
                if let Some(board) = self.boards.iter_mut().find(|b| b.kind == window) {
                    let entries = entries
                        .into_iter()
                        .map(|(player, score, reached_ms, seq)| BoardKey {
                            score: std::cmp::Reverse(score),
                            reached_ms,
                            seq,
                            player: CompactString::from(player),
                        })
                        .collect();
                    board.restore_closed(name, closed_ms, entries, limits);
                }
            }
            Record::ScoreModel {
                mean,
                variance,
                samples,
            } => self.population.restore(
                fairness::model_name::PROGRESSION,
                LnModel {
                    mean,
                    variance,
                    samples,
                },
            ),
            Record::FairnessModel { name, model } => self.population.restore(&name, model),
            Record::Audit(record) => self.audit.restore(*record, audit_max),
            Record::NextSeq(seq) => self.next_seq = self.next_seq.max(seq),
            Record::ReplaySeen(remembered) => self
                .replays
                .restore(remembered, self.policy.replay_window_ms),
        }
    }

    // --- idempotency (for keys homed on this shard) ---

    /// Reserves `key` for a request from `host` (`None`: charged to no host).
    pub fn reserve_key(
        &mut self,
        key: &str,
        fingerprint: [u8; 32],
        host: Option<IpAddr>,
        now_ms: u64,
    ) -> Reserve {
        let policy = &self.policy;
        let share =
            |max: usize| (max.saturating_mul(policy.idempotency_host_share_percent) / 100).max(1);
        let limits = Limits {
            keys_max: policy.idempotency_keys_max,
            bytes_max: policy.idempotency_bytes_max,
            host_keys_max: share(policy.idempotency_keys_max),
            host_bytes_max: share(policy.idempotency_bytes_max),
            ttl_ms: policy.idempotency_ttl_ms,
        };
        self.idempotency
            .reserve(key, fingerprint, host, now_ms, limits)
    }

    pub fn complete_key(
        &mut self,
        key: String,
        fingerprint: [u8; 32],
        response: StoredResponse,
        now_ms: u64,
    ) {
        let expires_ms = now_ms.saturating_add(self.policy.idempotency_ttl_ms);
        let host = self.idempotency.host_of(&key);
        self.record(Record::KeyCompleted {
            key,
            fingerprint,
            response,
            expires_ms,
            at_ms: now_ms,
            host,
        });
    }

    /// Recovery: completes a key whose events were logged but whose completion was not
    /// (the crash came between), so a retry is answered instead of applied again.
    /// `expires_ms` runs from the request's first logged event. False when the key's
    /// completion is known or the request's time is up.
    ///
    /// A completion the log holds for the key may be of an earlier use that expired
    /// before this request reserved the key: that one expired at or before the
    /// reservation, so before `expires_ms` (one TTL after the request's events), while
    /// this request's own completion, logged after its events, expires at or after it.
    /// An earlier completion is replaced, never kept: it would expire and let a retry
    /// of this request apply again.
    pub fn restore_key(
        &mut self,
        key: String,
        fingerprint: [u8; 32],
        response: StoredResponse,
        expires_ms: u64,
        now_ms: u64,
    ) -> bool {
        let completed_for_this_use = self
            .idempotency
            .expires_ms(&key)
            .is_some_and(|known| known >= expires_ms);
        if completed_for_this_use || expires_ms <= now_ms {
            return false;
        }
        self.record(Record::KeyCompleted {
            key,
            fingerprint,
            response,
            expires_ms,
            at_ms: now_ms,
            host: None,
        });
        true
    }

    /// The shard's durable state as snapshot records, for a checkpoint: applied in order
    /// to an empty shard, they rebuild it.
    pub fn snapshot(&self) -> impl Iterator<Item = Record> + '_ {
        let players = self.players.values().flat_map(|p| {
            let ladder = (p.guard.fairness_blocks() > 0 || p.guard.review().is_some()).then(|| {
                Record::GuardState {
                    player: p.id.to_string(),
                    fairness_blocks: p.guard.fairness_blocks(),
                    review: p.guard.review().cloned().map(Box::new),
                }
            });
            let state = Record::PlayerState(Box::new(PlayerSnapshot {
                player: p.id.to_string(),
                xp: p.xp,
                boss_kills: p
                    .collection()
                    .boss_kills
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect(),
                drops: p.collection().drops.clone(),
                updated_ms: p.updated_ms,
                block: p.guard.block().cloned(),
                flags: p.guard.flags(),
                rate_limited: p.guard.rate_limited(),
                history: p.guard.history,
            }));
            std::iter::once(state).chain(ladder)
        });
        let boards = self.boards.iter().flat_map(|b| {
            let history = b.history_oldest_first().map(move |c| Record::ClosedPeriod {
                window: b.kind,
                name: c.name.clone(),
                closed_ms: c.closed_ms,
                entries: c
                    .entries
                    .iter()
                    .map(|k| (k.player.to_string(), k.score(), k.reached_ms, k.seq))
                    .collect(),
            });
            let period = std::iter::once(Record::BoardPeriod {
                window: b.kind,
                period: b.period.clone(),
                updated_ms: b.updated_ms,
            });
            let entries =
                BoardView::new(b, &self.players)
                    .iter()
                    .map(move |k| Record::BoardEntry {
                        window: b.kind,
                        player: k.player.to_string(),
                        score: k.score(),
                        reached_ms: k.reached_ms,
                        seq: k.seq,
                    });
            history.chain(period).chain(entries)
        });
        let model =
            (self.population.models()).map(|(name, model)| Record::FairnessModel { name, model });
        let audit = self
            .audit
            .oldest_first()
            .cloned()
            .map(|r| Record::Audit(Box::new(r)));
        let keys = self.idempotency.completed().map(|k| Record::KeyCompleted {
            key: k.key.to_owned(),
            fingerprint: *k.fingerprint,
            response: k.response.clone(),
            expires_ms: k.expires_ms,
            at_ms: 0,
            host: k.host,
        });
        let replays = self.replays.remembered().map(Record::ReplaySeen);
        let seq = std::iter::once(Record::NextSeq(self.next_seq));
        players
            .chain(boards)
            .chain(model)
            .chain(audit)
            .chain(keys)
            .chain(replays)
            .chain(seq)
    }

    pub fn release_key(&mut self, key: &str) {
        self.idempotency.release(key);
    }

    pub fn idempotency_keys(&self) -> usize {
        self.idempotency.len()
    }

    // --- reads ---

    pub fn board(&self, window: WindowKind) -> Option<BoardView<'_>> {
        let board = self.boards.iter().find(|b| b.kind == window)?;
        Some(BoardView::new(board, &self.players))
    }

    /// One chunk of a walk over `window`'s live board, for a mirror's rebuild: up to
    /// `limit` entries ranked after `after` (from the best when `None`), best first, and
    /// the live period. Scores only grow, so entries only move towards the front: a walk
    /// of chunks meets every entry that did not change during the walk exactly once, and
    /// the mirror replays the log from before the walk for those that did.
    pub fn board_chunk(
        &self,
        window: WindowKind,
        after: Option<&BoardKey>,
        limit: usize,
    ) -> Option<(Period, Vec<BoardKey>)> {
        let board = self.boards.iter().find(|b| b.kind == window)?;
        let view = BoardView::new(board, &self.players);
        let from = match after {
            None => 0,
            Some(key) => {
                let still_there = view.key_of(&key.player).as_ref() == Some(key);
                view.count_ahead(key) + usize::from(still_there)
            }
        };
        let entries = crate::page::RankedEntries::entries_from(&view, from, limit);
        Some((board.period.clone(), entries))
    }

    /// Players at table positions `from..from + limit` with their totals, for a
    /// mirror's rebuild. Positions never change and new players are appended, so a walk
    /// by position meets every player that existed when it began.
    pub fn players_chunk(&self, from: usize, limit: usize) -> Vec<PlayerTotals> {
        let end = from.saturating_add(limit).min(self.players.len());
        (from.min(end)..end)
            .map(|position| {
                let p = &self.players.players[position];
                PlayerTotals {
                    player: p.id.clone(),
                    xp: p.xp,
                    updated_ms: p.updated_ms,
                }
            })
            .collect()
    }

    pub fn progress(&self, player_id: &str) -> Option<ProgressView> {
        let p = self.players.get(player_id)?;
        Some(ProgressView {
            player_id: p.id.to_string(),
            season: self.policy.season.clone(),
            xp: p.xp,
            level: level_of(p.xp),
            boss_kills: (p.collection().boss_kills.iter())
                .map(|(boss, n)| (boss.to_string(), *n))
                .collect(),
            drops: p
                .collection()
                .drops
                .iter()
                .map(|d| DropView {
                    drop_id: d.drop_id.to_string(),
                    source: d.source.as_ref().map(ToString::to_string),
                    claimed: d.claimed.is_some(),
                })
                .collect(),
            updated_at: p.updated_ms / 1000,
        })
    }

    pub fn guard_view(&self, player_id: &str, now_ms: u64) -> Option<GuardView> {
        let p = self.players.get(player_id)?;
        let block = p.guard.active_block(now_ms);
        Some(GuardView {
            player_id: p.id.to_string(),
            blocked: block.is_some(),
            blocked_until: block.map(|b| b.until_ms / 1000),
            reason: block.map(|b| b.reason.clone()),
            by: block.map(|b| b.by),
            flags: p.guard.flags(),
            rate_limited: p.guard.rate_limited(),
            quarantined: p.guard.review().is_some(),
            fairness_blocks: p.guard.fairness_blocks(),
            recent_audit: self
                .audit
                .newest(|r| r.player_id == player_id)
                .take(PLAYER_AUDIT_RECENT_MAX)
                .cloned()
                .collect(),
        })
    }

    pub fn blocked(&self, now_ms: u64) -> Vec<BlockedView> {
        self.blocked
            .iter()
            .filter_map(|id| {
                let block = self.players[&**id].guard.active_block(now_ms)?;
                Some(BlockedView {
                    player_id: id.to_string(),
                    until: block.until_ms / 1000,
                    until_ms: block.until_ms,
                    reason: block.reason.clone(),
                    by: block.by,
                })
            })
            .collect()
    }

    /// The review queue: up to `limit` pending reviews of players ordered after `after`
    /// by id.
    pub fn reviews(&self, after: Option<&str>, limit: usize, now_ms: u64) -> Vec<ReviewView> {
        use std::ops::Bound;
        let from = after.map_or(Bound::Unbounded, |a| {
            Bound::Excluded(CompactString::from(a))
        });
        (self.reviews.range((from, Bound::Unbounded)))
            .filter_map(|id| {
                let guard = &self.players[id.as_str()].guard;
                let review = guard.review()?;
                let block = guard.active_block(now_ms);
                Some(ReviewView {
                    player_id: id.to_string(),
                    since_ms: review.since_ms,
                    reason: review.reason.clone(),
                    evidence: review.evidence,
                    fairness_blocks: guard.fairness_blocks(),
                    held: review.held.clone(),
                    blocked: block.is_some(),
                    blocked_until_ms: block.map(|b| b.until_ms),
                    by: block.map(|b| b.by),
                })
            })
            .take(limit)
            .collect()
    }

    /// Newest audit records first, optionally for one player and/or one kind.
    pub fn audit(
        &self,
        player: Option<&str>,
        kind: Option<AuditKind>,
        limit: usize,
    ) -> Vec<AuditRecord> {
        self.audit
            .newest(|r| player.is_none_or(|p| r.player_id == p) && kind.is_none_or(|k| r.kind == k))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Audit records written since the last call, for stdout.
    pub fn take_audit_outbox(&mut self) -> Vec<AuditRecord> {
        self.audit.take_outbox()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::TsPolicy;

    const T0: u64 = 1_795_521_600_000; // Tue 2026-11-24 12:00 UTC

    fn policy() -> Policy {
        Policy {
            rate_limit_per_s: 5,
            ts: TsPolicy {
                skew_s: 300,
                max_age_s: None,
            },
            ..Policy::default()
        }
    }

    fn shard() -> Shard {
        Shard::new(policy(), ReceiptSigner::new(&[7u8; 32]), T0)
    }

    fn progression(player: &str, xp: u64) -> Event {
        Event {
            player_id: player.into(),
            ts: T0 / 1000,
            kind: EventKind::Progression {
                delta_xp: xp,
                activity: None,
            },
            replay_id: None,
        }
    }

    fn drop(player: &str, id: &str) -> Event {
        Event {
            player_id: player.into(),
            ts: T0 / 1000,
            kind: EventKind::DropClaimed {
                drop_id: id.into(),
                weight: Some(0.5),
                source: Some("chest".into()),
            },
            replay_id: None,
        }
    }

    #[test]
    fn a_collection_keeps_bosses_sorted_and_drops_once() {
        let mut c = Collection::default();
        for boss in ["wyrm", "golem", "wyrm", "arachne"] {
            c.add_kill(boss);
        }
        let kills: Vec<(&str, u64)> = c.boss_kills.iter().map(|(b, n)| (b.as_str(), *n)).collect();
        assert_eq!(kills, vec![("arachne", 1), ("golem", 1), ("wyrm", 2)]);
        assert!(c.has_killed("golem") && !c.has_killed("hydra"));
        assert_eq!(c.boss_kills.capacity(), 3, "grown one at a time");
        c.add_drop(Drop {
            drop_id: "sword".into(),
            source: None,
            claimed: None,
        });
        assert!(c.holds("sword") && !c.holds("shield"));
    }

    #[test]
    fn xp_levels_and_boards() {
        let mut s = shard();
        assert_eq!(
            s.submit_event(progression("ann", 1500), None, T0),
            EventOutcome::Accepted {
                xp: 1500,
                level: 2,
                flag: None
            }
        );
        s.submit_event(progression("bob", 1500), None, T0 + 1);
        let board = s.board(WindowKind::Weekly).unwrap();
        let top: Vec<String> = board.top(10).iter().map(|k| k.player.to_string()).collect();
        assert_eq!(
            top,
            vec!["ann", "bob"],
            "equal scores: who reached it first"
        );
        let progress = s.progress("ann").unwrap();
        assert_eq!((progress.xp, progress.level), (1500, 2));
        assert!(s.progress("nobody").is_none());
    }

    /// Mirrors write what an accepted event's record says: the player's XP and scores
    /// after it, equal to what the shard then holds.
    #[test]
    fn accepted_records_carry_the_totals_after_them() {
        let mut s = shard();
        s.submit_event(progression("ann", 40), None, T0);
        s.submit_event(progression("ann", 2), None, T0 + 1);
        s.submit_event(drop("ann", "gem"), None, T0 + 2);
        let totals: Vec<Totals> = s
            .take_journal()
            .into_iter()
            .filter_map(|r| match r {
                Record::EventAccepted { totals, .. } => totals,
                _ => None,
            })
            .collect();
        let configured = |score| {
            let mut scores = [None; WindowKind::COUNT];
            for window in &policy().windows {
                scores[window.index()] = Some(score);
            }
            scores
        };
        assert_eq!(
            totals,
            vec![
                Totals {
                    xp: 40,
                    scores: configured(40)
                },
                Totals {
                    xp: 42,
                    scores: configured(42)
                },
                // A drop scores nothing: the same standing.
                Totals {
                    xp: 42,
                    scores: configured(42)
                },
            ]
        );
    }

    /// A rebuild walks a board in chunks while it changes: every entry that did not
    /// change is met exactly once.
    #[test]
    fn board_chunks_walk_every_unchanged_entry_once() {
        let mut s = shard();
        for i in 0..50u64 {
            s.submit_event(progression(&format!("p{i:02}"), 10 + i), None, T0 + i);
        }
        let mut seen = Vec::new();
        let mut after = None;
        let mut round = 0;
        loop {
            let (_, chunk) = s
                .board_chunk(WindowKind::Weekly, after.as_ref(), 7)
                .unwrap();
            if chunk.is_empty() {
                break;
            }
            after = chunk.last().cloned();
            seen.extend(chunk.into_iter().map(|k| k.player.to_string()));
            // Between chunks, one player low on the board overtakes everyone.
            round += 1;
            s.submit_event(
                progression(&format!("p{:02}", round), 1000),
                None,
                T0 + 100 + round,
            );
        }
        let moved: Vec<String> = (1..=round).map(|r| format!("p{r:02}")).collect();
        let mut unchanged: Vec<String> = seen
            .iter()
            .filter(|p| !moved.contains(p))
            .cloned()
            .collect();
        unchanged.sort();
        let expected: Vec<String> = (0..50u64)
            .map(|i| format!("p{i:02}"))
            .filter(|p| !moved.contains(p))
            .collect();
        assert_eq!(unchanged, expected);
        let players = s.players_chunk(45, 10);
        assert_eq!(players.len(), 5);
        assert_eq!((players[0].player.as_str(), players[0].xp), ("p45", 55));
    }

    #[test]
    fn rate_limit_then_flood_block() {
        let mut s = shard();
        let mut statuses = Vec::new();
        for i in 0..400u64 {
            statuses.push(
                match s.submit_event(progression("fld", 1), None, T0 + i * 10) {
                    EventOutcome::Accepted { .. } => "ok",
                    EventOutcome::Rejected(Rejection::RateLimited { .. }) => "429",
                    EventOutcome::Rejected(Rejection::Blocked { new_flag, .. }) => {
                        if new_flag == Some(FlagKind::Flood) {
                            "flood"
                        } else {
                            "403"
                        }
                    }
                    other => panic!("{other:?}"),
                },
            );
        }
        assert_eq!(statuses.iter().filter(|s| **s == "flood").count(), 1);
        assert!(statuses.contains(&"429"));
        assert_eq!(*statuses.last().unwrap(), "403");
        assert_eq!(s.blocked(T0 + 4000).len(), 1);
        // The block expires after BLOCK_SEC and is audited.
        s.tick(T0 + 4000 + 60_000);
        assert!(s.blocked(T0 + 64_000).is_empty());
        let kinds: Vec<AuditKind> = s
            .audit(Some("fld"), None, 100)
            .iter()
            .map(|r| r.kind)
            .collect();
        assert!(
            kinds.contains(&AuditKind::Block)
                && kinds.contains(&AuditKind::Unblock)
                && kinds.contains(&AuditKind::Drop)
        );
        // Every record's detail is an object, as the API's schema says; an unblock
        // names the end of the block it lifted.
        let audit = s.audit(Some("fld"), None, 100);
        assert!(audit.iter().all(|r| r.detail.is_object()), "{audit:?}");
        let block = audit.iter().find(|r| r.kind == AuditKind::Block).unwrap();
        let unblock = audit.iter().find(|r| r.kind == AuditKind::Unblock).unwrap();
        assert_eq!(unblock.detail["untilMs"], block.detail["untilMs"]);
    }

    #[test]
    fn score_jumps_are_flagged_and_kept_off_boards_and_impossible_ones_block() {
        let mut s = shard();
        for i in 0..20u64 {
            s.submit_event(progression(&format!("warm{i}"), 10), None, T0 + i);
        }
        let outcome = s.submit_event(progression("jmp", 2_000), None, T0 + 100);
        assert!(matches!(
            outcome,
            EventOutcome::Accepted {
                flag: Some(FlagKind::ScoreJump),
                xp: 2000,
                ..
            }
        ));
        assert!(s.board(WindowKind::Daily).unwrap().key_of("jmp").is_none());
        let outcome = s.submit_event(progression("che", 1_000_000), None, T0 + 200);
        assert!(matches!(
            outcome,
            EventOutcome::Rejected(Rejection::Blocked {
                new_flag: Some(FlagKind::ImpossibleScore),
                ..
            })
        ));
        assert_eq!(s.progress("che").unwrap().xp, 0);
        assert_eq!(s.audit(None, Some(AuditKind::Flag), 10).len(), 1);
    }

    #[test]
    fn claims_once_with_a_verifiable_receipt() {
        let mut s = shard();
        assert_eq!(s.claim("ann", "sword", T0), Err(ClaimError::NotEarned));
        s.submit_event(drop("ann", "sword"), None, T0);
        s.submit_event(drop("ann", "sword"), None, T0 + 1); // earning it again changes nothing
        assert_eq!(s.progress("ann").unwrap().drops.len(), 1);
        assert_eq!(s.claim("ann", "shield", T0), Err(ClaimError::NotEarned));
        let receipt = s.claim("ann", "sword", T0 + 5).unwrap();
        assert!(ReceiptSigner::new(&[7u8; 32]).verify(&receipt));
        assert_eq!(
            s.claim("ann", "sword", T0 + 6),
            Err(ClaimError::AlreadyClaimed {
                receipt_id: receipt.receipt_id
            })
        );
        assert!(s.progress("ann").unwrap().drops[0].claimed);
    }

    #[test]
    fn admin_block_and_unblock() {
        let mut s = shard();
        let block = s
            .admin_block("bad", 10_000, "chargeback".into(), T0)
            .unwrap();
        assert_eq!(block.until_ms, T0 + 10_000);
        assert!(matches!(
            s.submit_event(progression("bad", 1), None, T0 + 1),
            EventOutcome::Rejected(Rejection::Blocked { .. })
        ));
        assert!(s.admin_unblock("bad", T0 + 2));
        assert!(!s.admin_unblock("bad", T0 + 3));
        assert!(matches!(
            s.submit_event(progression("bad", 1), None, T0 + 4),
            EventOutcome::Accepted { .. }
        ));
    }

    #[test]
    fn windows_roll_on_the_engine_clock_and_keep_history() {
        let mut s = shard();
        s.submit_event(progression("ann", 10), None, T0);
        let tomorrow = T0 + 86_400_000;
        s.submit_event(progression("bob", 5), None, tomorrow);
        let daily = s.board(WindowKind::Daily).unwrap();
        assert_eq!(daily.period.name, "2026-11-25");
        let top: Vec<String> = daily.top(10).iter().map(|k| k.player.to_string()).collect();
        assert_eq!(top, vec!["bob"]);
        let closed = daily.closed("2026-11-24").unwrap();
        assert_eq!(closed.entries[0].score(), 10);
        // The weekly window has not rolled: both are in it.
        assert_eq!(s.board(WindowKind::Weekly).unwrap().len(), 2);
    }

    #[test]
    fn limits_per_player() {
        let mut s = Shard::new(
            Policy {
                drops_per_player_max: 2,
                players_max: 2,
                ..policy()
            },
            ReceiptSigner::new(&[7u8; 32]),
            T0,
        );
        s.submit_event(drop("ann", "a"), None, T0);
        s.submit_event(drop("ann", "b"), None, T0);
        assert_eq!(
            s.submit_event(drop("ann", "c"), None, T0),
            EventOutcome::Rejected(Rejection::PlayerLimit {
                field: "payload.dropId",
                limit: 2
            })
        );
        s.submit_event(progression("bob", 1), None, T0);
        assert_eq!(
            s.submit_event(progression("cat", 1), None, T0),
            EventOutcome::Rejected(Rejection::PlayersFull)
        );
    }

    /// Issue 9, item 2: a key used, expired and used again keeps its latest
    /// completion through a replay of the log, and through a checkpoint of the replay.
    #[test]
    fn a_key_reused_after_expiry_replays_to_its_latest_completion() {
        let ttl = policy().idempotency_ttl_ms;
        let client = IpAddr::from([127, 0, 0, 2]);
        let host = Some(client);
        let mut live = shard();
        let use_key = |live: &mut Shard, at: u64, body: &str| {
            assert_eq!(live.reserve_key("K", [5; 32], host, at), Reserve::Reserved);
            let key = KeyRef {
                key: "K".into(),
                fingerprint: [5; 32],
                index: 0,
                reserved_ms: at,
            };
            live.submit_event(progression("alice", 10), Some(key), at);
            let response = StoredResponse::compact(202, body.as_bytes());
            live.complete_key("K".into(), [5; 32], response, at);
        };
        use_key(&mut live, T0, r#"{"use":1}"#);
        let second = T0 + ttl + 1_000;
        use_key(&mut live, second, r#"{"use":2}"#);
        let retry = second + 1_000;
        let latest = Reserve::Replay(StoredResponse::compact(202, br#"{"use":2}"#));
        assert_eq!(live.reserve_key("K", [5; 32], host, retry), latest);
        let mut replayed = shard();
        replayed.begin_replay();
        for record in live.take_journal() {
            replayed.apply(record);
        }
        replayed.finish_replay();
        let mut from_checkpoint = shard();
        from_checkpoint.begin_replay();
        for record in replayed.snapshot().collect::<Vec<_>>() {
            from_checkpoint.apply(record);
        }
        from_checkpoint.finish_replay();
        for restarted in [&mut replayed, &mut from_checkpoint] {
            assert_eq!(restarted.progress("alice").unwrap().xp, 20);
            restarted.tick(retry);
            assert_eq!(restarted.reserve_key("K", [5; 32], host, retry), latest);
            // The host's share is rebuilt too: one key, charged to the same host.
            assert_eq!(restarted.idempotency.host_keys(client), 1);
        }
    }

    /// Issue 9, item 2, crash cut: the latest use's completion is missing from the log;
    /// rebuilding it must replace the earlier use's completion, not keep it.
    #[test]
    fn a_rebuilt_key_replaces_an_earlier_completion_of_the_same_key() {
        let ttl = policy().idempotency_ttl_ms;
        let mut restarted = shard();
        let old = StoredResponse::compact(202, br#"{"use":1}"#);
        restarted.apply(Record::KeyCompleted {
            key: "K".into(),
            fingerprint: [5; 32],
            response: old.clone(),
            expires_ms: T0 + ttl,
            at_ms: T0,
            host: None,
        });
        // The second use's events were logged at T0 + ttl + 1000; its completion was cut.
        let second_events_ms = T0 + ttl + 1_000;
        let now = second_events_ms + 2_000;
        let rebuilt = StoredResponse::compact(202, br#"{"recovered":true}"#);
        let expires = second_events_ms + ttl;
        assert!(restarted.restore_key("K".into(), [5; 32], rebuilt.clone(), expires, now));
        restarted.tick(now);
        assert_eq!(
            restarted.reserve_key("K", [5; 32], None, now),
            Reserve::Replay(rebuilt.clone())
        );
        // A completion of the same use is kept: nothing to rebuild.
        assert!(!restarted.restore_key("K".into(), [5; 32], old, expires - 10, now));
        assert_eq!(
            restarted.reserve_key("K", [5; 32], None, now),
            Reserve::Replay(rebuilt)
        );
    }

    #[test]
    fn replaying_the_journal_rebuilds_the_same_state() {
        let mut live = shard();
        for i in 0..40u64 {
            live.submit_event(progression(&format!("warm{i}"), 10), None, T0 + i);
        }
        for i in 0..2000u64 {
            let player = format!("p{:02}", i % 7);
            let at = T0 + i * 3_600_000 / 7; // crosses several days
            match i % 5 {
                0 => live.submit_event(drop(&player, &format!("d{}", i % 3)), None, at),
                1 => live.submit_event(progression(&player, 5_000), None, at),
                _ => live.submit_event(progression(&player, 1 + i % 13), None, at),
            };
            if i % 11 == 0 {
                let _ = live.claim(&player, &format!("d{}", i % 3), at);
            }
            if i % 97 == 0 {
                live.admin_block(&player, 1_000, "test".into(), at);
            }
            live.tick(at);
        }
        let mut replayed = shard();
        for record in live.take_journal() {
            replayed.apply(record);
        }
        for kind in WindowKind::ALL {
            let ranks = |s: &Shard| -> Vec<(String, u64)> {
                s.board(kind)
                    .unwrap()
                    .top(100)
                    .iter()
                    .map(|k| (k.player.to_string(), k.score()))
                    .collect()
            };
            assert_eq!(ranks(&live), ranks(&replayed), "{kind}");
            let history = |s: &Shard| -> Vec<String> {
                s.board(kind)
                    .unwrap()
                    .history()
                    .map(|c| c.name.clone())
                    .collect()
            };
            assert_eq!(history(&live), history(&replayed));
        }
        for i in 0..7 {
            let player = format!("p{i:02}");
            let (a, b) = (
                live.progress(&player).unwrap(),
                replayed.progress(&player).unwrap(),
            );
            assert_eq!((a.xp, &a.boss_kills), (b.xp, &b.boss_kills));
            let claims = |v: &ProgressView| {
                v.drops
                    .iter()
                    .map(|d| (d.drop_id.clone(), d.claimed))
                    .collect::<Vec<_>>()
            };
            assert_eq!(claims(&a), claims(&b));
        }
        // Drop records are soft state (a throttled trail of refusals), not replayed.
        let hard = |s: &Shard| -> Vec<AuditRecord> {
            s.audit(None, None, 10_000)
                .into_iter()
                .filter(|r| r.kind != AuditKind::Drop)
                .collect()
        };
        assert_eq!(hard(&live), hard(&replayed));
    }

    fn boss(player: &str, boss_id: &str, points: u64) -> Event {
        Event {
            player_id: player.into(),
            ts: T0 / 1000,
            kind: EventKind::BossKill {
                boss_id: boss_id.into(),
                tier: 1,
                points,
            },
            replay_id: None,
        }
    }

    fn lucky_drop(player: &str, id: &str, weight: f64) -> Event {
        Event {
            player_id: player.into(),
            ts: T0 / 1000,
            kind: EventKind::DropClaimed {
                drop_id: id.into(),
                weight: Some(weight),
                source: None,
            },
            replay_id: None,
        }
    }

    /// The events of a small population over `[from_s, to_s)` seconds after `T0`, time
    /// ordered: honest players (quests, a boss now and then), and from second 200 a speed
    /// hacker, an inflater, a boss farmer and a lucky claimer.
    fn population_events(from_s: u64, to_s: u64) -> Vec<(u64, Event)> {
        let mut out = Vec::new();
        for t in from_s..to_s {
            let at = T0 + t * 1000;
            for h in 0..6u64 {
                if (t + h) % 4 == 0 {
                    let id = format!("honest{h}");
                    out.push((at + h, progression(&id, 30 + (t * 7 + h * 13) % 50)));
                }
                if (t + h * 17) % 90 == 0 {
                    out.push((at + 500 + h, boss(&format!("honest{h}"), "wyrm", 2_000 + h)));
                }
            }
            let cheating = t >= 200;
            if t % 3 == 0 || cheating {
                let per_s = if cheating { 10 } else { 1 };
                for k in 0..per_s {
                    out.push((at + 10 + k * 100, progression("speedy", 40 + t % 20)));
                }
            }
            if t % 3 == 1 {
                let xp = (40 + t % 20) * if cheating { 8 } else { 1 };
                out.push((at + 20, progression("inflater", xp)));
            }
            if cheating && t % 4 == 0 {
                out.push((at + 30, boss("farmer", "wyrm", 2_000)));
            } else if t % 3 == 2 {
                out.push((at + 30, progression("farmer", 45)));
            }
            if t % 9 == 0 {
                let weight = if cheating { 0.003 } else { 0.2 };
                out.push((at + 40, lucky_drop("lucky", &format!("d{t}"), weight)));
            }
        }
        out.sort_by_key(|(at, _)| *at);
        out
    }

    /// `empty` with `journal` replayed into it, as recovery replays a log.
    fn replayed_from(mut empty: Shard, journal: Vec<Record>) -> Shard {
        empty.begin_replay();
        for record in journal {
            empty.apply(record);
        }
        empty.finish_replay();
        empty
    }

    /// `empty` restored from a checkpoint of `live`, through the codec.
    fn restored_from(mut empty: Shard, live: &Shard) -> Shard {
        empty.begin_replay();
        let mut buf = Vec::new();
        for record in live.snapshot() {
            buf.clear();
            let kind = crate::codec::encode(&record, &mut buf);
            empty.apply(crate::codec::decode(kind, &buf).unwrap());
        }
        empty.finish_replay();
        empty
    }

    /// `live` restarted twice: from its whole `journal` replayed, and from a checkpoint
    /// through the codec; `new` makes an empty shard of the same policy.
    fn restarted(live: &Shard, journal: Vec<Record>, new: impl Fn() -> Shard) -> (Shard, Shard) {
        (replayed_from(new(), journal), restored_from(new(), live))
    }

    /// The detectors learn through `apply`: a shard rebuilt from the journal, or from a
    /// checkpoint through the codec, decides the next events exactly as the live one.
    #[test]
    fn guard_decisions_are_the_same_after_a_restart() {
        let mut policy = policy();
        policy.rate_limit_per_s = 50;
        let new = || Shard::new(policy.clone(), ReceiptSigner::new(&[7u8; 32]), T0);
        let mut live = new();
        let mut journal = Vec::new();
        for (at, event) in population_events(0, 230) {
            live.submit_event(event, None, at);
            journal.extend(live.take_journal());
        }
        let (mut replayed, mut restored) = restarted(&live, journal, new);
        let mut decided = Vec::new();
        for (at, event) in population_events(230, 320) {
            let outcome = live.submit_event(event.clone(), None, at);
            let again = replayed.submit_event(event.clone(), None, at);
            let checkpointed = restored.submit_event(event.clone(), None, at);
            assert_eq!(outcome, again, "{event:?} at {at}");
            assert_eq!(outcome, checkpointed, "{event:?} at {at}");
            match outcome {
                EventOutcome::Accepted {
                    flag: Some(kind), ..
                }
                | EventOutcome::Rejected(Rejection::Blocked {
                    new_flag: Some(kind),
                    ..
                }) => decided.push(kind),
                _ => {}
            }
        }
        // The comparison covered every detector's decisions.
        for kind in [FlagKind::RateOfGain, FlagKind::Cadence, FlagKind::Luck] {
            assert!(
                decided.contains(&kind),
                "{kind:?} never decided: {decided:?}"
            );
        }
        let now = T0 + 320_000;
        assert_same(&observable(&live, now), &observable(&replayed, now));
        assert_same(&observable(&live, now), &observable(&restored, now));
        for id in ["speedy", "inflater", "farmer", "lucky"] {
            assert!(live.guard_view(id, now).unwrap().blocked, "{id} is blocked");
        }
        for h in 0..6 {
            let view = live.guard_view(&format!("honest{h}"), now).unwrap();
            assert_eq!((view.blocked, view.flags), (false, 0), "honest{h}");
        }
    }

    /// A shard with a bit of everything: players, drops, claims, blocks, flags, closed
    /// periods, idempotency keys.
    fn busy_shard() -> Shard {
        let mut live = shard();
        for i in 0..40u64 {
            live.submit_event(progression(&format!("warm{i}"), 10), None, T0 + i);
        }
        for i in 0..2000u64 {
            let player = format!("p{:02}", i % 7);
            let at = T0 + i * 3_600_000 / 7;
            let key = (i % 3 == 0).then(|| KeyRef {
                key: format!("k{i}").into(),
                fingerprint: [i as u8; 32],
                index: 0,
                reserved_ms: at,
            });
            match i % 5 {
                0 => live.submit_event(drop(&player, &format!("d{}", i % 3)), key, at),
                1 => live.submit_event(progression(&player, 5_000), key, at),
                _ => live.submit_event(progression(&player, 1 + i % 13), key, at),
            };
            if i % 3 == 0 {
                let response = StoredResponse {
                    status: 202,
                    body: format!("{{\"i\":{i}}}").into_bytes(),
                };
                live.complete_key(format!("k{i}"), [i as u8; 32], response, at);
            }
            if i % 11 == 0 {
                let _ = live.claim(&player, &format!("d{}", i % 3), at);
            }
            if i % 97 == 0 {
                live.admin_block(&player, 1_000, "test".into(), at);
            }
            live.tick(at);
        }
        live
    }

    /// Everything a reader can observe, in a comparable form.
    fn observable(s: &Shard, now_ms: u64) -> String {
        let mut out = String::new();
        for kind in WindowKind::ALL {
            let board = s.board(kind).unwrap();
            out += &format!("{kind} {} {:?}\n", board.period.name, board.top(1000));
            for closed in board.history() {
                out += &format!("closed {} {:?}\n", closed.name, closed.entries);
            }
        }
        let mut players: Vec<&CompactString> = s.players.values().map(|p| &p.id).collect();
        players.sort();
        for p in players {
            out += &format!(
                "{:?} {:?} {:?}\n",
                serde_json::to_string(&s.progress(p)).unwrap(),
                serde_json::to_string(&s.guard_view(p, now_ms)).unwrap(),
                s.players[p.as_str()].guard.history
            );
        }
        out += &format!("{:?} {:?}\n", s.population, s.next_seq);
        let keys: Vec<_> = s
            .idempotency
            .completed()
            .map(|k| {
                (
                    k.key.to_owned(),
                    *k.fingerprint,
                    k.response.clone(),
                    k.expires_ms,
                    k.host,
                )
            })
            .collect();
        out += &format!("{keys:?}\n");
        out += &format!("{:?}\n", remembered(s));
        out
    }

    /// Compares two `observable` renderings, reporting only the first difference.
    fn assert_same(a: &str, b: &str) {
        for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
            assert!(
                x == y,
                "line {i} differs:\n  {}\n  {}",
                &x[..x.len().min(400)],
                &y[..y.len().min(400)]
            );
        }
        assert_eq!(a.lines().count(), b.lines().count());
    }

    #[test]
    fn a_checkpoint_rebuilds_the_shard_through_the_codec() {
        let live = busy_shard();
        let mut buf = Vec::new();
        let mut restored = shard();
        restored.begin_replay();
        for record in live.snapshot() {
            buf.clear();
            let kind = crate::codec::encode(&record, &mut buf);
            let decoded = crate::codec::decode(kind, &buf).expect("decodes");
            assert_eq!(decoded, record);
            restored.apply(decoded);
        }
        restored.finish_replay();
        let now = T0 + 2000 * 3_600_000 / 7;
        assert_same(&observable(&live, now), &observable(&restored, now));
        // And the journal since a checkpoint continues from it.
        let mut live = live;
        live.take_journal();
        // One event per player per second: rate-limit drops are soft state, not journaled.
        for i in 0..50u64 {
            live.submit_event(
                progression(&format!("late{}", i % 4), 7),
                None,
                now + i * 1000,
            );
        }
        // Replayed as recovery replays a log tail: ranked once at the end.
        restored.begin_replay();
        for record in live.take_journal() {
            restored.apply(record);
        }
        restored.finish_replay();
        assert_same(
            &observable(&live, now + 60_000),
            &observable(&restored, now + 60_000),
        );
    }

    #[test]
    fn splitting_records_across_a_new_shard_count_keeps_every_reader_view() {
        // Two shards' worth of state, re-split over three: per player nothing changes and
        // the merged boards are identical.
        let original = busy_shard();
        let mut resharded: Vec<Shard> = (0..3).map(|_| shard()).collect();
        resharded.iter_mut().for_each(Shard::begin_replay);
        for record in original.snapshot() {
            for (i, part) in record.split(3) {
                resharded[i].apply(part);
            }
        }
        resharded.iter_mut().for_each(Shard::finish_replay);
        let now = T0 + 2000 * 3_600_000 / 7;
        for kind in WindowKind::ALL {
            let merged = crate::board::merge_sorted(
                resharded
                    .iter()
                    .map(|s| s.board(kind).unwrap().top(1000))
                    .collect(),
                1000,
            );
            assert_eq!(merged, original.board(kind).unwrap().top(1000), "{kind}");
            let closed_original: Vec<_> = original
                .board(kind)
                .unwrap()
                .history()
                .map(|c| (c.name.clone(), c.entries.clone()))
                .collect();
            for (name, entries) in closed_original {
                let merged = crate::board::merge_sorted(
                    resharded
                        .iter()
                        .map(|s| {
                            s.board(kind)
                                .unwrap()
                                .closed(&name)
                                .map(|c| c.entries.clone())
                                .unwrap_or_default()
                        })
                        .collect(),
                    usize::MAX,
                );
                assert_eq!(merged, entries, "{kind} {name}");
            }
        }
        for id in original.players.values().map(|p| &p.id) {
            let owner = &resharded[crate::shard_of(id, 3)];
            assert_eq!(
                serde_json::to_string(&original.progress(id)).unwrap(),
                serde_json::to_string(&owner.progress(id)).unwrap()
            );
            assert_eq!(
                serde_json::to_string(&original.guard_view(id, now)).unwrap(),
                serde_json::to_string(&owner.guard_view(id, now)).unwrap()
            );
        }
        let keys: usize = resharded.iter().map(|s| s.idempotency_keys()).sum();
        assert_eq!(keys, original.idempotency_keys());
    }

    fn signed(mut event: Event, body: u8, position: Option<usize>) -> Event {
        event.replay_id = Some(ReplayId::new(&[body; 32], position));
        event
    }

    fn xp(s: &Shard, player: &str) -> u64 {
        s.progress(player).map_or(0, |p| p.xp)
    }

    #[test]
    fn a_replayed_event_is_refused_within_the_window_and_applied_after_it() {
        let mut s = shard();
        let window_ms = s.policy().replay_window_ms;
        let event = signed(progression("ann", 10), 1, None);
        assert!(matches!(
            s.submit_event(event.clone(), None, T0),
            EventOutcome::Accepted { xp: 10, .. }
        ));
        let outcome = s.submit_event(event.clone(), None, T0 + 1_000);
        assert_eq!(outcome, EventOutcome::Rejected(Rejection::Replayed));
        assert_eq!(xp(&s, "ann"), 10, "not applied twice");
        // The same event in other bytes (an eventId) is another event.
        let other_bytes = signed(progression("ann", 10), 2, None);
        assert!(matches!(
            s.submit_event(other_bytes, None, T0 + 2_000),
            EventOutcome::Accepted { xp: 20, .. }
        ));
        // Two identical events of one batch differ by their positions.
        for position in [0, 1] {
            let in_batch = signed(progression("ann", 10), 3, Some(position));
            let outcome = s.submit_event(in_batch, None, T0 + 3_000);
            assert!(
                matches!(outcome, EventOutcome::Accepted { .. }),
                "{outcome:?}"
            );
        }
        let again = signed(progression("ann", 10), 3, Some(1));
        let outcome = s.submit_event(again, None, T0 + 4_000);
        assert_eq!(outcome, EventOutcome::Rejected(Rejection::Replayed));
        assert_eq!(xp(&s, "ann"), 40);
        // A window later the identity is forgotten: the body applies again.
        s.tick(T0 + window_ms - 1);
        assert_eq!(s.replays.len(), 3);
        s.tick(T0 + window_ms);
        assert_eq!(s.replays.len(), 2);
        let outcome = s.submit_event(event, None, T0 + window_ms);
        assert!(
            matches!(outcome, EventOutcome::Accepted { xp: 50, .. }),
            "{outcome:?}"
        );
    }

    #[test]
    fn a_body_replayed_again_and_again_blocks_its_player() {
        let mut s = shard();
        assert_eq!(s.policy().replay_block_after, 2);
        let kill = signed(boss("bob", "wyrm", 2_000), 9, None);
        s.submit_event(kill.clone(), None, T0);
        let first = s.submit_event(kill.clone(), None, T0 + 2_000);
        assert_eq!(first, EventOutcome::Rejected(Rejection::Replayed));
        let second = s.submit_event(kill.clone(), None, T0 + 4_000);
        let EventOutcome::Rejected(Rejection::Blocked {
            new_flag, reason, ..
        }) = second
        else {
            panic!("the second replay blocks: {second:?}");
        };
        assert_eq!(new_flag, Some(FlagKind::Replay));
        assert!(reason.contains("re-sent 2 times"), "{reason}");
        let audit = s.audit(Some("bob"), Some(AuditKind::Block), 1);
        assert_eq!(audit[0].detail["measure"], "replays");
        // Further replays are still refused as replays, once.
        let third = s.submit_event(kill, None, T0 + 6_000);
        assert_eq!(third, EventOutcome::Rejected(Rejection::Replayed));
        assert_eq!(xp(&s, "bob"), 2_000);
    }

    #[test]
    fn a_full_replay_set_refuses_new_events_until_a_body_is_forgotten() {
        let mut policy = policy();
        policy.replay_entries_max = 3;
        let window_ms = policy.replay_window_ms;
        let mut s = Shard::new(policy, ReceiptSigner::new(&[7u8; 32]), T0);
        for i in 0..3u8 {
            // The last is the first event of a batch.
            let position = (i == 2).then_some(0);
            let event = signed(progression(&format!("p{i}"), 10), i, position);
            let at = T0 + u64::from(i) * 10_000;
            assert!(matches!(
                s.submit_event(event, None, at),
                EventOutcome::Accepted { .. }
            ));
        }
        // The batch's next event costs no entry: only new bodies are refused.
        let next_in_batch = signed(progression("p3", 10), 2, Some(1));
        let outcome = s.submit_event(next_in_batch, None, T0 + 30_000);
        assert!(
            matches!(outcome, EventOutcome::Accepted { .. }),
            "{outcome:?}"
        );
        let late = signed(progression("p3", 10), 3, None);
        let outcome = s.submit_event(late.clone(), None, T0 + 30_000);
        assert_eq!(
            outcome,
            EventOutcome::Rejected(Rejection::ReplaysFull {
                retry_after_ms: window_ms - 30_000
            })
        );
        // A replay is still told apart while full.
        let replay = signed(progression("p0", 10), 0, None);
        let outcome = s.submit_event(replay, None, T0 + 30_000);
        assert_eq!(outcome, EventOutcome::Rejected(Rejection::Replayed));
        let outcome = s.submit_event(late, None, T0 + window_ms);
        assert!(
            matches!(outcome, EventOutcome::Accepted { .. }),
            "{outcome:?}"
        );
        assert_eq!(s.replays.len(), 3);
    }

    /// The bodies remembered, for comparisons.
    fn remembered(s: &Shard) -> Vec<crate::replay::Remembered> {
        s.replays.remembered().collect()
    }

    #[test]
    fn remembered_bodies_survive_the_log_and_a_checkpoint() {
        let mut live = shard();
        let mut journal = Vec::new();
        let mut sent = Vec::new();
        for i in 0..40u64 {
            let player = format!("p{}", i % 4);
            // Every third event is one of a batch.
            let position = (i % 3 == 0).then_some((i % 7) as usize);
            let event = signed(progression(&player, 5 + i), i as u8, position);
            let at = T0 + i * 2_500;
            live.submit_event(event.clone(), None, at);
            journal.extend(live.take_journal());
            sent.push(event);
        }
        let now = T0 + 40 * 2_500;
        live.tick(now);
        journal.extend(live.take_journal());
        let mut replayed = replayed_from(shard(), journal);
        replayed.tick(now);
        let mut restored = restored_from(shard(), &live);
        assert!(!remembered(&live).is_empty());
        assert!(remembered(&live).len() < 40, "the oldest were forgotten");
        assert_eq!(remembered(&live), remembered(&replayed));
        assert_eq!(remembered(&live), remembered(&restored));
        for (i, event) in sent.into_iter().enumerate() {
            let at = now + i as u64 * 1_000;
            let outcome = live.submit_event(event.clone(), None, at);
            assert_eq!(outcome, replayed.submit_event(event.clone(), None, at));
            assert_eq!(outcome, restored.submit_event(event, None, at), "event {i}");
        }
        assert_same(&observable(&live, now), &observable(&replayed, now));
    }

    #[test]
    fn window_closes_are_idempotent() {
        let mut s = shard();
        s.submit_event(progression("ann", 10), None, T0);
        let next = WindowKind::Daily.period_at(T0 + 86_400_000, "1");
        let close = Record::WindowClosed {
            window: WindowKind::Daily,
            next,
            at_ms: T0 + 86_400_000,
        };
        s.apply(close.clone());
        s.submit_event(progression("bob", 5), None, T0 + 86_400_001);
        s.apply(close);
        let daily = s.board(WindowKind::Daily).unwrap();
        assert_eq!(daily.len(), 1, "the second close changes nothing");
        assert_eq!(daily.history().count(), 1);
    }

    // --- the decisions' ladder: quarantine, escalation, review ---

    /// Every board's live entries and kept closed standings, exactly (ranks, ties).
    fn boards_of(s: &Shard) -> String {
        let mut out = String::new();
        for kind in WindowKind::ALL {
            let board = s.board(kind).unwrap();
            out += &format!("{kind} {} {:?}\n", board.period.name, board.top(1000));
            for closed in board.history() {
                out += &format!("closed {} {:?}\n", closed.name, closed.entries);
            }
        }
        out
    }

    fn on_any_board(s: &Shard, player: &str) -> bool {
        WindowKind::ALL.iter().any(|&kind| {
            let board = s.board(kind).unwrap();
            board.key_of(player).is_some()
                || board
                    .history()
                    .any(|c| c.entries.iter().any(|k| k.player == player))
        })
    }

    const DAY_MS: u64 = 86_400_000;

    /// Honest play over two days around "che": ties on che's scores, a closed day, and
    /// che's scores in it. `che_xp` is what che sends on day two.
    fn ladder_play(s: &mut Shard, che_xp: u64) {
        for (i, p) in ["ann", "bob", "cid"].iter().enumerate() {
            s.submit_event(progression(p, 30), None, T0 + i as u64);
        }
        s.submit_event(progression("che", 30), None, T0 + 10);
        s.submit_event(progression("dan", 30), None, T0 + 10);
        s.submit_event(progression("che", 20), None, T0 + 20);
        // The next day: day one is a closed period with che in it.
        let day2 = T0 + DAY_MS;
        s.submit_event(progression("ann", 40), None, day2);
        s.submit_event(progression("che", che_xp), None, day2 + 5);
        s.submit_event(progression("bob", che_xp), None, day2 + 5);
    }

    fn injection(player: &str) -> Event {
        progression(player, 1_000_000)
    }

    #[test]
    fn a_fairness_block_quarantines_every_kept_score_and_holds_later_ones() {
        let mut s = shard();
        ladder_play(&mut s, 25);
        assert!(on_any_board(&s, "che"));
        let day2 = T0 + DAY_MS;
        let outcome = s.submit_event(injection("che"), None, day2 + 100);
        let EventOutcome::Rejected(Rejection::Blocked { until_ms, .. }) = outcome else {
            panic!("{outcome:?}");
        };
        assert_eq!(until_ms, day2 + 100 + 60_000);
        assert!(!on_any_board(&s, "che"), "{}", boards_of(&s));
        let journal = s.take_journal();
        let held = journal
            .iter()
            .find_map(|r| match r {
                Record::Quarantined { held, .. } => Some(held.clone()),
                _ => None,
            })
            .expect("a quarantine record");
        // Three live periods and the closed day.
        assert_eq!(held.len(), 4, "{held:?}");
        assert!(held
            .iter()
            .any(|h| h.period == "2026-11-24" && h.score == 50));
        let view = s.guard_view("che", day2 + 200).unwrap();
        assert!(view.quarantined && view.blocked);
        assert_eq!(view.fairness_blocks, 1);
        // After the block, progression is kept but the score is held.
        let after = day2 + 100 + 60_000;
        s.tick(after);
        assert!(!s.guard_view("che", after).unwrap().blocked);
        assert!(matches!(
            s.submit_event(progression("che", 7), None, after + 1),
            EventOutcome::Accepted { xp: 82, .. }
        ));
        assert!(!on_any_board(&s, "che"));
        let reviews = s.reviews(None, 10, after + 2);
        assert_eq!(reviews.len(), 1);
        let weekly = (reviews[0].held.iter())
            .find(|h| h.window == WindowKind::Weekly)
            .unwrap();
        assert_eq!(weekly.score, 82);
        // The accepted record says the player is on no board, for the mirrors.
        let totals = s.take_journal().into_iter().find_map(|r| match r {
            Record::EventAccepted { totals, .. } => totals,
            _ => None,
        });
        assert_eq!(totals.unwrap().scores, [None; WindowKind::COUNT]);
        // At most one pending review: a second block escalates, it does not reopen.
        s.submit_event(injection("che"), None, after + 10);
        assert_eq!(s.reviews(None, 10, after + 20).len(), 1);
        let records = s.take_journal();
        assert!(!records
            .iter()
            .any(|r| matches!(r, Record::Quarantined { .. })));
    }

    /// A cleared review puts every score back as if it had never left: the same boards,
    /// ranks and ties as a shard that never blocked the player.
    #[test]
    fn clearing_a_review_restores_the_boards_exactly() {
        let (mut cleared, mut never) = (shard(), shard());
        ladder_play(&mut cleared, 25);
        ladder_play(&mut never, 25);
        let day2 = T0 + DAY_MS;
        cleared.submit_event(injection("che"), None, day2 + 100);
        let after = day2 + 100 + 60_000;
        for s in [&mut cleared, &mut never] {
            s.tick(after);
            // Held while quarantined, then restored with the rest; bob ties with it.
            s.submit_event(progression("che", 7), None, after + 1);
            s.submit_event(progression("bob", 7), None, after + 1);
            s.submit_event(progression("eve", 82), None, after + 2);
        }
        assert_ne!(boards_of(&cleared), boards_of(&never));
        assert!(cleared.review_clear("che", after + 3));
        assert_eq!(boards_of(&cleared), boards_of(&never));
        assert!(cleared.reviews(None, 10, after + 3).is_empty());
        let view = cleared.guard_view("che", after + 3).unwrap();
        assert_eq!((view.quarantined, view.fairness_blocks), (false, 0));
        assert!(!cleared.review_clear("che", after + 4), "no pending review");
        assert!(cleared.review_confirm("che", after + 4).is_none());
        // Scores go on the boards again.
        for s in [&mut cleared, &mut never] {
            s.submit_event(progression("che", 1), None, after + 5);
        }
        assert_eq!(boards_of(&cleared), boards_of(&never));
    }

    /// A clear lifts the fairness block it reviews.
    #[test]
    fn clearing_a_review_lifts_the_fairness_block() {
        let mut s = shard();
        ladder_play(&mut s, 25);
        let day2 = T0 + DAY_MS;
        s.submit_event(injection("che"), None, day2 + 100);
        assert!(s.review_clear("che", day2 + 200));
        assert!(!s.guard_view("che", day2 + 201).unwrap().blocked);
        assert!(matches!(
            s.submit_event(progression("che", 1), None, day2 + 300),
            EventOutcome::Accepted { .. }
        ));
        assert_eq!(
            s.board(WindowKind::Daily)
                .unwrap()
                .key_of("che")
                .unwrap()
                .score(),
            26
        );
    }

    #[test]
    fn confirming_a_review_removes_the_held_scores_for_good() {
        let mut s = shard();
        ladder_play(&mut s, 25);
        let day2 = T0 + DAY_MS;
        s.submit_event(injection("che"), None, day2 + 100);
        let block = s
            .review_confirm("che", day2 + 200)
            .expect("a pending review");
        assert_eq!(block.until_ms, day2 + 200 + 30 * DAY_MS);
        assert_eq!(block.by, BlockedBy::Admin);
        let view = s.guard_view("che", day2 + 300).unwrap();
        assert!(view.blocked && !view.quarantined);
        assert!(s.reviews(None, 10, day2 + 300).is_empty());
        assert!(!on_any_board(&s, "che"));
        // Lifted by an operator, the player starts from nothing on the boards.
        assert!(s.admin_unblock("che", day2 + 400));
        s.submit_event(progression("che", 3), None, day2 + 500);
        assert_eq!(
            s.board(WindowKind::Weekly)
                .unwrap()
                .key_of("che")
                .unwrap()
                .score(),
            3
        );
        assert_eq!(s.progress("che").unwrap().xp, 78, "progression is kept");
        assert!(s.review_confirm("che", day2 + 600).is_none());
    }

    #[test]
    fn fairness_blocks_double_up_to_the_cap_and_a_clear_forgives_its_own() {
        let mut policy = policy();
        policy.block_escalation_max = 4;
        let mut s = Shard::new(policy, ReceiptSigner::new(&[7u8; 32]), T0);
        let mut at = T0;
        let mut durations = Vec::new();
        for _ in 0..4 {
            match s.submit_event(injection("che"), None, at) {
                EventOutcome::Rejected(Rejection::Blocked { until_ms, .. }) => {
                    durations.push(until_ms - at);
                    at = until_ms;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(durations, vec![60_000, 120_000, 240_000, 240_000]);
        assert_eq!(s.guard_view("che", at).unwrap().fairness_blocks, 4);
        // All four belong to one review: clearing it forgives them.
        assert!(s.review_clear("che", at));
        assert_eq!(s.guard_view("che", at).unwrap().fairness_blocks, 0);
        let EventOutcome::Rejected(Rejection::Blocked { until_ms, .. }) =
            s.submit_event(injection("che"), None, at + 1)
        else {
            panic!("blocked again");
        };
        assert_eq!(until_ms - (at + 1), 60_000);
        // A confirmed review keeps its blocks: the next offence is longer.
        s.review_confirm("che", at + 2).unwrap();
        assert!(s.admin_unblock("che", at + 3));
        let EventOutcome::Rejected(Rejection::Blocked { until_ms, .. }) =
            s.submit_event(injection("che"), None, at + 4)
        else {
            panic!("blocked again");
        };
        assert_eq!(until_ms - (at + 4), 120_000);
    }

    /// Quarantine, held scores and the review rebuild exactly from the log and from a
    /// checkpoint, and a clear decided after either restores the same boards.
    #[test]
    fn review_decisions_are_the_same_after_a_restart() {
        let mut live = shard();
        ladder_play(&mut live, 25);
        let day2 = T0 + DAY_MS;
        live.submit_event(injection("che"), None, day2 + 100);
        let after = day2 + 100 + 60_000;
        live.tick(after);
        live.submit_event(progression("che", 7), None, after + 1);
        live.submit_event(progression("bob", 7), None, after + 1);
        // A day later: che's held day-two score now belongs to a closed period.
        live.submit_event(progression("che", 4), None, after + DAY_MS);
        let journal = live.take_journal();
        let (mut replayed, mut restored) = restarted(&live, journal, shard);
        let now = after + DAY_MS + 10;
        let reviews = |s: &Shard| serde_json::to_string(&s.reviews(None, 10, now)).unwrap();
        assert_eq!(live.reviews(None, 10, now).len(), 1);
        for other in [&replayed, &restored] {
            assert_same(&observable(&live, now), &observable(other, now));
            assert_eq!(reviews(&live), reviews(other));
        }
        for s in [&mut live, &mut replayed, &mut restored] {
            assert!(s.review_clear("che", now));
        }
        assert!(on_any_board(&live, "che"));
        for other in [&replayed, &restored] {
            assert_same(&observable(&live, now + 1), &observable(other, now + 1));
        }
    }

    /// The review queue pages by player id.
    #[test]
    fn the_review_queue_pages_by_player() {
        let mut s = shard();
        for (i, id) in ["zed", "amy", "max"].iter().enumerate() {
            s.submit_event(injection(id), None, T0 + i as u64);
        }
        let ids = |v: Vec<ReviewView>| v.into_iter().map(|r| r.player_id).collect::<Vec<_>>();
        assert_eq!(ids(s.reviews(None, 2, T0 + 10)), vec!["amy", "max"]);
        assert_eq!(ids(s.reviews(Some("max"), 2, T0 + 10)), vec!["zed"]);
        let first = &s.reviews(None, 1, T0 + 10)[0];
        assert_eq!(first.evidence.detector, FlagKind::ImpossibleScore);
        assert!(first.blocked);
    }
}
