//! Seeded random crash test of a whole shard on its store: thousands of engine turns
//! (progression, boss kills, drops, keyed requests and their retries, claims, admin
//! blocks and unblocks, ticks closing daily and weekly windows) committed through a
//! [`ShardStore`] on a [`FaultFs`] that tears and shortens writes, fails fsyncs, halts
//! the machine at a random I/O call and loses power. After every recovery the recovered
//! shard is checked against a model built only from acknowledged records.
//!
//! ## The model
//!
//! A second [`Shard`], created like the first live shard, to which every record of every
//! acknowledged group (its `commit` returned `Ok`) is applied in order, and nothing else.
//! Its LSN is the count of records applied to it. A group is usually one turn's journal,
//! sometimes several turns merged (as the server's flusher merges turns that queued up
//! during an fsync). There is at most one group in flight at a crash (a failed commit
//! poisons the log and the shard is thrown away), and its records are kept aside.
//!
//! ## The invariant, checked after every recovery
//!
//! The recovered log holds `r` records (`report.next_lsn - 1`). Then:
//!
//! * `r >= acked`: no acknowledged record is lost;
//! * `r - acked <= in_flight.len()`: nothing appears that was never handed to the log;
//! * the recovered shard equals `model(acked records + in_flight[..r - acked])` in
//!   everything a reader can observe ([`observable`]): players' XP, level, boss kills,
//!   drops and claims (with receipt ids), block state, audit trail, every window's live
//!   standings with scores and order, closed periods, the score model, the sequence and
//!   every live idempotency key; and every acknowledged idempotency key answers the same
//!   `reserve_key` on both (`Replay` of the same stored response while unexpired).
//!
//! That is "the model of the acknowledged records, or of those plus a prefix of the
//! in-flight group", with the prefix length read from the log's LSN rather than searched
//! for, so a record that changes nothing visible cannot hide a wrong count. Left out of
//! the comparison: soft state no record makes (rate buckets, flood strikes, and the
//! "drop" audit entries of turned-away requests).
//!
//! The model then adopts the surviving prefix of the in-flight group (those records are
//! in the log now, so they count as applied), and the run goes on with the recovered
//! shard and store. Keys whose events survived but whose completion was cut off are
//! rebuilt with [`restore_keys`] as the server does, and every keyed request with an
//! event in the log must then replay.
//!
//! Between crashes, the live shard is also compared with the model after a random few
//! acknowledged turns: what a shard decides and journals must be exactly what `apply`
//! rebuilds. Retries of acknowledged keyed requests, before and after crashes, must
//! replay their stored response.
//!
//! Each recovery starts from an empty shard made "now", as the server does: the shard
//! directory's first checkpoint (written when it was created) puts the boards back in the
//! periods the log started in; see [`recovery_into_a_later_period_without_a_checkpoint`].
//!
//! `STORE_CRASH_SEED=n` reruns one seed; a failure names its seed and turn.
//! `STORE_CRASH_SEEDS=n` runs seeds `0..n` instead of the default, for a longer soak.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use liveops_engine::event::{Event, EventKind};
use liveops_engine::fairness::AuditKind;
use liveops_engine::idempotency::{Reserve, StoredResponse};
use liveops_engine::policy::Policy;
use liveops_engine::shard::{EventOutcome, KeyRef, Record, Rejection, Shard};
use liveops_engine::signing::ReceiptSigner;
use liveops_engine::window::WindowKind;
use liveops_net::layout::restore_keys;
use liveops_net::store::{encode_checkpoint, Recovered, ShardStore, StoreError};
use liveops_storage::fault::{Fault, FaultFs};
use liveops_storage::{Durability, FileSystem, RecoveryMode, WalOptions};

const SEEDS: u64 = 16;
/// Each turn is 1–6 operations (about 3.5 on average) and one group commit.
const TURNS_PER_SEED: u64 = 1_000;
/// Share of acknowledged turns after which the live shard is compared with the model.
const LIVE_CHECK_PERCENT: u64 = 5;
/// Most turns merged into one commit group.
const MERGE_TURNS_MAX: u32 = 4;
/// Tue 2026-11-24 12:00 UTC.
const T0: u64 = 1_795_521_600_000;
/// The client host keyed requests come from: its share of the key store is logged and
/// must be rebuilt like the keys.
const CLIENT: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
const HOUR_MS: u64 = 3_600_000;
const TTL_MS: u64 = 3 * HOUR_MS;
const RECEIPT_SECRET: &[u8] = b"store-crash-model receipts";
const PLAYERS: [&str; 10] = [
    "p-ana", "p-bo", "p-cy", "p-dee", "p-eli", "p-fay", "p-gus", "p-hal", "p-ivy", "p-jo",
];

fn policy() -> Policy {
    Policy {
        // Rate limiting is soft state a restart forgives: keep it out of the way.
        rate_limit_per_s: 1_000_000,
        block_ms: 20 * 60_000,
        idempotency_ttl_ms: TTL_MS,
        boss_kinds_per_player_max: 4,
        drops_per_player_max: 6,
        // Small, so closed periods are evicted and truncated.
        history_periods_max: 3,
        history_entries_max: 4,
        ..Policy::default()
    }
}

fn fresh_shard(now_ms: u64) -> Shard {
    Shard::new(policy(), ReceiptSigner::new(RECEIPT_SECRET), now_ms)
}

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// In `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// In `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Debug, Default, Clone)]
struct Stats {
    turns: u64,
    records_acked: u64,
    commits_acked: u64,
    commits_failed: u64,
    groups_merged: u64,
    power_losses: u64,
    process_crashes: u64,
    crashes_between_turns: u64,
    crashes_before_commit: u64,
    crashes_during_recovery: u64,
    recoveries: u64,
    recoveries_from_checkpoint: u64,
    torn_tails_cut: u64,
    in_flight_records_recovered: u64,
    in_flight_groups_partly_recovered: u64,
    checkpoints: u64,
    checkpoints_failed: u64,
    keys_restored: u64,
    key_replays_checked: u64,
    retries_replayed: u64,
    claims: u64,
    blocks: u64,
    windows_closed: u64,
    events_flagged: u64,
    fairness_blocks: u64,
    live_checks: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.turns += o.turns;
        self.records_acked += o.records_acked;
        self.commits_acked += o.commits_acked;
        self.commits_failed += o.commits_failed;
        self.groups_merged += o.groups_merged;
        self.power_losses += o.power_losses;
        self.process_crashes += o.process_crashes;
        self.crashes_between_turns += o.crashes_between_turns;
        self.crashes_before_commit += o.crashes_before_commit;
        self.crashes_during_recovery += o.crashes_during_recovery;
        self.recoveries += o.recoveries;
        self.recoveries_from_checkpoint += o.recoveries_from_checkpoint;
        self.torn_tails_cut += o.torn_tails_cut;
        self.in_flight_records_recovered += o.in_flight_records_recovered;
        self.in_flight_groups_partly_recovered += o.in_flight_groups_partly_recovered;
        self.checkpoints += o.checkpoints;
        self.checkpoints_failed += o.checkpoints_failed;
        self.keys_restored += o.keys_restored;
        self.key_replays_checked += o.key_replays_checked;
        self.retries_replayed += o.retries_replayed;
        self.claims += o.claims;
        self.blocks += o.blocks;
        self.windows_closed += o.windows_closed;
        self.events_flagged += o.events_flagged;
        self.fairness_blocks += o.fairness_blocks;
        self.live_checks += o.live_checks;
    }
}

/// What the acknowledged log holds, applied to a shard of its own.
struct Model {
    shard: Shard,
    /// Records applied: the LSN of the last acknowledged record.
    lsn: u64,
    /// Completed keys in the log: key → (fingerprint, response, expires_ms).
    keys: BTreeMap<String, ([u8; 32], StoredResponse, u64)>,
    /// Keys with an accepted event in the log: key → (fingerprint, first event's at_ms).
    keyed: BTreeMap<String, ([u8; 32], u64)>,
}

impl Model {
    fn apply(&mut self, record: &Record) {
        match record {
            Record::KeyCompleted {
                key,
                fingerprint,
                response,
                expires_ms,
                ..
            } => {
                self.keys
                    .entry(key.clone())
                    .or_insert_with(|| (*fingerprint, response.clone(), *expires_ms));
            }
            Record::EventAccepted {
                key: Some(k),
                at_ms,
                ..
            } => {
                let entry = self
                    .keyed
                    .entry(k.key.to_string())
                    .or_insert((k.fingerprint, *at_ms));
                entry.1 = entry.1.min(*at_ms);
            }
            _ => {}
        }
        self.shard.apply(record.clone());
        self.lsn += 1;
    }
}

/// Everything a reader can observe of a shard's durable state at `now_ms`, one fact per
/// line, in a deterministic order.
fn observable(shard: &Shard, now_ms: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "players {}", shard.players_len());
    for id in PLAYERS {
        match shard.progress(id) {
            None => {
                let _ = writeln!(out, "player {id} absent");
            }
            Some(p) => {
                let _ = writeln!(
                    out,
                    "player {id} xp {} level {} updated_at {} season {} bosses {:?}",
                    p.xp, p.level, p.updated_at, p.season, p.boss_kills
                );
                for d in &p.drops {
                    let _ = writeln!(
                        out,
                        "player {id} drop {} source {:?} claimed {}",
                        d.drop_id, d.source, d.claimed
                    );
                }
            }
        }
        if let Some(g) = shard.guard_view(id, now_ms) {
            let _ = writeln!(
                out,
                "guard {id} blocked {} until {:?} reason {:?} by {:?} flags {} rate_limited {}",
                g.blocked, g.blocked_until, g.reason, g.by, g.flags, g.rate_limited
            );
        }
    }
    for b in shard.blocked(now_ms) {
        let _ = writeln!(
            out,
            "blocked {} until_ms {} reason {:?} by {:?}",
            b.player_id, b.until_ms, b.reason, b.by
        );
    }
    // Drop audits (requests turned away) are soft state: no record makes them.
    for kind in [AuditKind::Flag, AuditKind::Block, AuditKind::Unblock] {
        for r in shard.audit(None, Some(kind), usize::MAX) {
            let _ = writeln!(
                out,
                "audit {} {} {:?} {} {:?} {}",
                r.at, r.at_ms, r.kind, r.player_id, r.reason, r.detail
            );
        }
    }
    for window in WindowKind::ALL {
        let Some(board) = shard.board(window) else {
            let _ = writeln!(out, "board {window} absent");
            continue;
        };
        let _ = writeln!(
            out,
            "board {window} period {} ends {} updated {} entries {}",
            board.period.name,
            board.period.ends_ms,
            board.updated_ms,
            board.len()
        );
        for (rank, k) in board.top(usize::MAX).iter().enumerate() {
            let _ = writeln!(
                out,
                "board {window} #{rank} {} score {} reached {} seq {}",
                k.player,
                k.score(),
                k.reached_ms,
                k.seq
            );
        }
        for closed in board.history() {
            let _ = writeln!(
                out,
                "board {window} closed {} at {} entries {}",
                closed.name,
                closed.closed_ms,
                closed.entries.len()
            );
            for (rank, k) in closed.entries.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "board {window} closed {} #{rank} {} score {} reached {} seq {}",
                    closed.name,
                    k.player,
                    k.score(),
                    k.reached_ms,
                    k.seq
                );
            }
        }
    }
    // The rest of the durable state, as a checkpoint would see it: receipt ids of
    // claims, raw blocks, the score model, the sequence, live idempotency keys.
    let mut lines = Vec::new();
    for record in shard.snapshot() {
        match record {
            Record::PlayerState(p) => lines.push(format!("state {p:?}")),
            Record::ScoreModel {
                mean,
                variance,
                samples,
            } => lines.push(format!("score model {mean:?} {variance:?} {samples}")),
            Record::NextSeq(seq) => lines.push(format!("next seq {seq}")),
            Record::KeyCompleted {
                key,
                fingerprint,
                response,
                expires_ms,
                ..
            } if expires_ms > now_ms => lines.push(format!(
                "key {key} fingerprint {} status {} body {} expires {expires_ms}",
                hex(&fingerprint),
                response.status,
                String::from_utf8_lossy(&response.body)
            )),
            _ => {}
        }
    }
    lines.sort();
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A reservation answer, with a stored body as text.
fn describe(reserve: &Reserve) -> String {
    match reserve {
        Reserve::Replay(response) => format!(
            "Replay({} {})",
            response.status,
            String::from_utf8_lossy(&response.body)
        ),
        other => format!("{other:?}"),
    }
}

/// Panics with the first line where two renderings differ (not the whole dump).
fn assert_same(context: &str, what: &str, got: &str, want: &str) {
    if got == want {
        return;
    }
    let (mut got_lines, mut want_lines) = (got.lines(), want.lines());
    let mut line = 1;
    loop {
        match (got_lines.next(), want_lines.next()) {
            (Some(g), Some(w)) if g == w => line += 1,
            (g, w) => panic!(
                "{context}: {what} differs from the model at line {line}:\n  got:   {}\n  model: {}",
                g.unwrap_or("<end>"),
                w.unwrap_or("<end>")
            ),
        }
    }
}

/// A running shard: the engine and its log.
struct Engine {
    shard: Shard,
    store: ShardStore,
}

/// How a turn ended.
enum TurnEnd {
    /// Committed and acknowledged, or queued for the next group; the engine goes on.
    Acked,
    /// The engine died: restart, with the records of the turn whose commit was tried
    /// (empty when the crash came before or between commits).
    Died { in_flight: Vec<Record> },
}

struct Run {
    seed: u64,
    turn: u64,
    rng: Rng,
    raw: FaultFs,
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    config: WalOptions,
    now: u64,
    model: Model,
    next_key: u64,
    /// Records of turns decided but not yet committed, and how many turns.
    queued: Vec<Record>,
    queued_turns: u32,
    stats: Stats,
}

impl Run {
    fn new(seed: u64) -> Run {
        let mut rng = Rng::new(seed);
        let raw = FaultFs::new(seed);
        let group_bytes_max = 16 * 1024;
        let config = WalOptions {
            durability: Durability::Fsync,
            fsync_interval_ms: 10,
            segment_bytes_max: rng.range(group_bytes_max as u64, 4 * group_bytes_max as u64),
            group_bytes_max,
            recovery_mode: RecoveryMode::Strict,
        };
        Run {
            seed,
            turn: 0,
            rng,
            fs: Arc::new(raw.clone()),
            raw,
            dir: PathBuf::from("/data/gen-1/shard-0"),
            config,
            now: T0,
            model: Model {
                shard: fresh_shard(T0),
                lsn: 0,
                keys: BTreeMap::new(),
                keyed: BTreeMap::new(),
            },
            next_key: 0,
            queued: Vec::new(),
            queued_turns: 0,
            stats: Stats::default(),
        }
    }

    fn context(&self) -> String {
        format!(
            "seed {} turn {} (rerun with STORE_CRASH_SEED={})",
            self.seed, self.turn, self.seed
        )
    }

    /// Moves the engine clock: mostly milliseconds to seconds, sometimes hours (across
    /// day and week boundaries, past block and key expiry).
    fn advance_clock(&mut self) {
        self.now += match self.rng.below(100) {
            0..=2 => self.rng.range(HOUR_MS, 30 * HOUR_MS),
            3..=7 => self.rng.range(60_000, HOUR_MS),
            _ => self.rng.below(4_000),
        };
    }

    fn random_event(&mut self, player: &str) -> Event {
        let kind = match self.rng.below(100) {
            0..=44 => EventKind::Progression {
                delta_xp: if self.rng.chance(3) {
                    // Far outside the population: flagged or blocked once it has a model.
                    *self
                        .rng
                        .pick(&[5_000, 10_000, 20_000, 50_000, 200_000, 3_000_000])
                } else {
                    self.rng.range(1, 400)
                },
                activity: self
                    .rng
                    .chance(50)
                    .then(|| format!("quest-{}", self.rng.below(5))),
            },
            45..=74 => EventKind::BossKill {
                boss_id: format!("boss-{}", self.rng.below(6)),
                tier: self.rng.range(1, 3),
                points: self.rng.range(10, 600),
            },
            _ => EventKind::DropClaimed {
                drop_id: format!("drop-{}", self.rng.below(9)),
                weight: self
                    .rng
                    .chance(30)
                    .then(|| self.rng.below(100) as f64 / 8.0),
                source: self
                    .rng
                    .chance(60)
                    .then(|| format!("boss-{}", self.rng.below(6))),
            },
        };
        Event {
            player_id: player.to_owned(),
            ts: self.now / 1000,
            kind,
            replay_id: None,
        }
    }

    fn count_outcome(&mut self, outcome: &EventOutcome) {
        match outcome {
            EventOutcome::Accepted { flag: Some(_), .. } => self.stats.events_flagged += 1,
            EventOutcome::Rejected(Rejection::Blocked {
                new_flag: Some(_), ..
            }) => self.stats.fairness_blocks += 1,
            _ => {}
        }
    }

    /// One request with an idempotency key: reserve, 1–3 events, complete (or release
    /// when nothing was applied, as the server does).
    fn keyed_request(&mut self, shard: &mut Shard) {
        self.next_key += 1;
        let key = format!("key-{}-{}", self.seed, self.next_key);
        let mut fingerprint = [0u8; 32];
        for chunk in fingerprint.chunks_mut(8) {
            chunk.copy_from_slice(&self.rng.next().to_le_bytes());
        }
        let context = self.context();
        assert_eq!(
            shard.reserve_key(&key, fingerprint, CLIENT, self.now),
            Reserve::Reserved,
            "{context}: a new key"
        );
        let events = self.rng.range(1, 3);
        let mut results = Vec::new();
        let mut accepted = false;
        for index in 0..events {
            let player = *self.rng.pick(&PLAYERS);
            let event = self.random_event(player);
            let key_ref = KeyRef {
                key: key.as_str().into(),
                fingerprint,
                index: index as u32,
                reserved_ms: self.now,
            };
            let outcome = shard.submit_event(event, Some(key_ref), self.now);
            self.count_outcome(&outcome);
            accepted |= matches!(outcome, EventOutcome::Accepted { .. });
            results.push(format!("{index}:{player}:{outcome:?}"));
        }
        if accepted || self.rng.chance(30) {
            let response = StoredResponse {
                status: if accepted { 202 } else { 409 },
                body: results.join(";").into_bytes(),
            };
            shard.complete_key(key, fingerprint, response, self.now);
        } else {
            shard.release_key(&key);
        }
    }

    /// A retry of an acknowledged keyed request: it must replay, never apply again.
    fn retry_request(&mut self, shard: &mut Shard) {
        if self.model.keys.is_empty() {
            return;
        }
        let index = self.rng.below(self.model.keys.len() as u64) as usize;
        let (key, (fingerprint, response, expires_ms)) = self
            .model
            .keys
            .iter()
            .nth(index)
            .map(|(k, v)| (k.clone(), v.clone()))
            .expect("index in range");
        let context = self.context();
        if expires_ms > self.now {
            let mut other = fingerprint;
            other[0] ^= 1;
            assert_eq!(
                shard.reserve_key(&key, other, CLIENT, self.now),
                Reserve::Mismatch,
                "{context}: key {key} with another body"
            );
            let got = shard.reserve_key(&key, fingerprint, CLIENT, self.now);
            let logged = Reserve::Replay(response);
            assert!(
                got == logged,
                "{context}: retry of acknowledged key {key} answers {}, the log holds {}",
                describe(&got),
                describe(&logged)
            );
            self.stats.retries_replayed += 1;
        } else {
            assert_eq!(
                shard.reserve_key(&key, fingerprint, CLIENT, self.now),
                Reserve::Reserved,
                "{context}: key {key} expired at {expires_ms}, now {}",
                self.now
            );
            shard.release_key(&key);
        }
    }

    fn claim(&mut self, shard: &mut Shard) {
        let player = *self.rng.pick(&PLAYERS);
        let earned: Vec<String> = shard
            .progress(player)
            .map(|p| p.drops.into_iter().map(|d| d.drop_id).collect())
            .unwrap_or_default();
        let item = if !earned.is_empty() && self.rng.chance(80) {
            self.rng.pick(&earned).clone()
        } else {
            format!("drop-{}", self.rng.below(9))
        };
        if shard.claim(player, &item, self.now).is_ok() {
            self.stats.claims += 1;
        }
    }

    /// Random operations on the live shard; returns its journal.
    fn operations(&mut self, shard: &mut Shard) -> Vec<Record> {
        self.advance_clock();
        if self.rng.chance(30) {
            shard.tick(self.now);
        }
        for _ in 0..self.rng.range(1, 6) {
            self.now += self.rng.below(30);
            match self.rng.below(100) {
                0..=44 => {
                    let player = *self.rng.pick(&PLAYERS);
                    let event = self.random_event(player);
                    let outcome = shard.submit_event(event, None, self.now);
                    self.count_outcome(&outcome);
                }
                45..=59 => self.keyed_request(shard),
                60..=71 => self.claim(shard),
                72..=73 => {
                    let player = *self.rng.pick(&PLAYERS);
                    let duration = self.rng.range(1_000, 2 * HOUR_MS);
                    let reason = format!("admin {}", self.rng.below(3));
                    if shard
                        .admin_block(player, duration, reason, self.now)
                        .is_some()
                    {
                        self.stats.blocks += 1;
                    }
                }
                74 => {
                    let player = *self.rng.pick(&PLAYERS);
                    shard.admin_unblock(player, self.now);
                }
                75..=89 => self.retry_request(shard),
                _ => shard.tick(self.now),
            }
        }
        let journal = shard.take_journal();
        // Audit lines go to stdout in the server; here nobody reads them.
        shard.take_audit_outbox();
        self.stats.windows_closed += journal
            .iter()
            .filter(|r| matches!(r, Record::WindowClosed { .. }))
            .count() as u64;
        journal
    }

    fn arm_random_fault(&mut self) {
        match self.rng.below(1000) {
            0..=9 => self.raw.inject(Fault::ShortWrite {
                written_bytes: self.rng.below(2_000) as usize,
            }),
            10..=19 => self.raw.inject(Fault::TornWrite {
                written_bytes: self.rng.below(2_000) as usize,
            }),
            20..=29 => self.raw.inject(Fault::SyncError),
            30..=44 => self.raw.halt_after_ops(self.rng.below(8)),
            _ => {}
        }
    }

    /// One engine turn: operations, then (usually) one group commit of their records.
    /// Sometimes the turn is queued instead and merged with the next ones into one group,
    /// as the server's flusher does while an fsync is in progress.
    fn turn(&mut self, engine: &mut Engine) -> TurnEnd {
        self.stats.turns += 1;
        let journal = self.operations(&mut engine.shard);
        self.queued.extend(journal);
        self.queued_turns += 1;
        if self.rng.chance(1) {
            // The process dies with turns decided but not yet written.
            self.stats.crashes_before_commit += 1;
            self.queued.clear();
            self.queued_turns = 0;
            return TurnEnd::Died {
                in_flight: Vec::new(),
            };
        }
        if self.queued_turns < MERGE_TURNS_MAX && self.rng.chance(20) {
            return TurnEnd::Acked;
        }
        let group = std::mem::take(&mut self.queued);
        self.stats.groups_merged += u64::from(self.queued_turns > 1);
        self.queued_turns = 0;
        if !group.is_empty() {
            self.arm_random_fault();
        }
        if engine.store.commit(&group).is_err() {
            self.stats.commits_failed += 1;
            return TurnEnd::Died { in_flight: group };
        }
        self.stats.commits_acked += 1;
        self.stats.records_acked += group.len() as u64;
        for record in &group {
            self.model.apply(record);
        }
        if self.rng.chance(LIVE_CHECK_PERCENT) {
            self.stats.live_checks += 1;
            assert_same(
                &self.context(),
                "the live shard",
                &observable(&engine.shard, self.now),
                &observable(&self.model.shard, self.now),
            );
        }
        if self.rng.chance(3) {
            self.arm_random_fault();
            // Encoded by the shard, written by the flusher, as the server does.
            let payload = encode_checkpoint(&engine.shard).expect("a checkpoint encodes");
            match engine.store.write_checkpoint(&payload) {
                Ok(_) => self.stats.checkpoints += 1,
                Err(_) => {
                    self.stats.checkpoints_failed += 1;
                    // A failed checkpoint does not poison the log; a halted machine
                    // fails everything, and the server treats it as fatal anyway.
                    if self.raw.is_halted() || self.rng.chance(50) {
                        return TurnEnd::Died {
                            in_flight: Vec::new(),
                        };
                    }
                }
            }
        }
        if self.rng.chance(1) {
            self.stats.crashes_between_turns += 1;
            return TurnEnd::Died {
                in_flight: Vec::new(),
            };
        }
        TurnEnd::Acked
    }

    /// Power loss or process crash, then recoveries (which may crash themselves) until
    /// one completes; checks it against the model and returns the engine to go on with.
    fn restart(&mut self, in_flight: Vec<Record>) -> Engine {
        if self.raw.is_halted() || self.rng.chance(70) {
            self.raw.crash();
            self.stats.power_losses += 1;
        } else {
            self.stats.process_crashes += 1;
        }
        // Restarting takes a while.
        self.now += self.rng.range(1, 5_000);
        loop {
            if self.rng.chance(10) {
                self.raw.halt_after_ops(self.rng.below(4));
            }
            // Made "now", as the server does; the directory's first checkpoint restores
            // the periods the log started in.
            let empty = fresh_shard(self.now);
            match ShardStore::recover(self.fs.clone(), &self.dir, self.config.clone(), empty) {
                Ok(recovered) => return self.check_recovered(recovered, in_flight),
                Err(StoreError::Storage(liveops_storage::Error::Io { .. })) => {
                    // The machine died (or an fsync failed) while recovering: again.
                    self.stats.crashes_during_recovery += 1;
                    if self.raw.is_halted() || self.rng.chance(50) {
                        self.raw.crash();
                    }
                }
                Err(error) => panic!("{}: recovery failed: {error}", self.context()),
            }
        }
    }

    fn check_recovered(&mut self, recovered: Recovered, in_flight: Vec<Record>) -> Engine {
        let context = self.context();
        let Recovered {
            mut shard,
            store,
            report,
            checkpoint_lsn,
            keyed,
            ..
        } = recovered;
        self.stats.recoveries += 1;
        self.stats.recoveries_from_checkpoint += u64::from(checkpoint_lsn > 0);
        self.stats.torn_tails_cut += u64::from(report.torn_tail.is_some());
        assert!(
            report.corruption.is_none(),
            "{context}: strict recovery cut corruption"
        );
        assert_eq!(
            report.restarted_at_lsn, None,
            "{context}: checkpoints cover durable records only"
        );
        let recovered_lsn = report.next_lsn - 1;
        assert!(
            recovered_lsn >= self.model.lsn,
            "{context}: acknowledged records lost: the log ends at lsn {recovered_lsn}, {} were acknowledged",
            self.model.lsn
        );
        let survived = (recovered_lsn - self.model.lsn) as usize;
        assert!(
            survived <= in_flight.len(),
            "{context}: the log ends at lsn {recovered_lsn}: {survived} records past the \
             acknowledged ones, but only {} were in flight",
            in_flight.len()
        );
        // The surviving prefix of the in-flight group is applied now: adopt it.
        for record in &in_flight[..survived] {
            self.model.apply(record);
        }
        self.stats.in_flight_records_recovered += survived as u64;
        self.stats.in_flight_groups_partly_recovered +=
            u64::from(survived > 0 && survived < in_flight.len());

        let what = format!(
            "the recovered shard (checkpoint lsn {checkpoint_lsn}, {survived} of {} in-flight records)",
            in_flight.len()
        );
        assert_same(
            &context,
            &what,
            &observable(&shard, self.now),
            &observable(&self.model.shard, self.now),
        );
        // Every key of the log answers the same on both; a replay is checked against the
        // response the log holds.
        let keys: Vec<_> = self
            .model
            .keys
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, (fingerprint, response, expires_ms)) in keys {
            let got = shard.reserve_key(&key, fingerprint, CLIENT, self.now);
            let want = self
                .model
                .shard
                .reserve_key(&key, fingerprint, CLIENT, self.now);
            assert!(
                got == want,
                "{context}: key {key} after recovery answers {}, the model {}",
                describe(&got),
                describe(&want)
            );
            if expires_ms > self.now {
                let logged = Reserve::Replay(response);
                assert!(
                    got == logged,
                    "{context}: key {key} after recovery answers {}, the log holds {}",
                    describe(&got),
                    describe(&logged)
                );
                self.stats.key_replays_checked += 1;
            } else {
                assert_eq!(got, Reserve::Reserved, "{context}: expired key {key}");
                shard.release_key(&key);
                self.model.shard.release_key(&key);
            }
        }
        assert_eq!(
            shard.idempotency_keys(),
            self.model.shard.idempotency_keys(),
            "{context}: idempotency keys held after recovery"
        );

        // As the server does: complete the keys whose completion the crash cut off. Their
        // records go out with the next turn's group.
        self.stats.keys_restored +=
            restore_keys(std::slice::from_mut(&mut shard), keyed, TTL_MS, self.now) as u64;
        for (key, (fingerprint, at_ms)) in &self.model.keyed {
            if at_ms + TTL_MS > self.now {
                assert!(
                    matches!(
                        shard.reserve_key(key, *fingerprint, CLIENT, self.now),
                        Reserve::Replay(_)
                    ),
                    "{context}: keyed request {key} has events in the log but does not replay"
                );
            }
        }
        Engine { shard, store }
    }
}

/// Names the seed of a panic that does not (one inside the engine or the store).
struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "failed in seed {0}: rerun with STORE_CRASH_SEED={0}",
                self.0
            );
        }
    }
}

fn run_seed(seed: u64) -> Stats {
    let _guard = SeedGuard(seed);
    let mut run = Run::new(seed);
    let first = ShardStore::recover(
        run.fs.clone(),
        &run.dir,
        run.config.clone(),
        fresh_shard(T0),
    )
    .expect("an empty directory recovers");
    assert_eq!(first.report.next_lsn, 1);
    let mut engine = Engine {
        shard: first.shard,
        store: first.store,
    };
    for turn in 0..TURNS_PER_SEED {
        run.turn = turn;
        if let TurnEnd::Died { in_flight } = run.turn(&mut engine) {
            // A failed commit poisons the log: this shard and its store are done.
            drop(engine);
            engine = run.restart(in_flight);
        }
    }
    drop(engine);
    run.turn = TURNS_PER_SEED;
    run.restart(Vec::new());
    run.stats
}

#[test]
fn recovered_shard_equals_the_model_of_acknowledged_records() {
    let started = Instant::now();
    // STORE_CRASH_SEED=n reruns one seed, for debugging a failure.
    let seeds = match std::env::var("STORE_CRASH_SEED") {
        Ok(seed) => {
            let seed: u64 = seed.parse().expect("STORE_CRASH_SEED is a number");
            seed..seed + 1
        }
        Err(_) => match std::env::var("STORE_CRASH_SEEDS") {
            Ok(n) => 0..n.parse().expect("STORE_CRASH_SEEDS is a number"),
            Err(_) => 0..SEEDS,
        },
    };
    let mut total = Stats::default();
    for seed in seeds {
        total.add(&run_seed(seed));
    }
    println!(
        "{TURNS_PER_SEED} turns per seed in {:?}: {total:#?}",
        started.elapsed()
    );
    if std::env::var("STORE_CRASH_SEED").is_ok() {
        return; // One seed need not reach every path.
    }
    // The run must have exercised every path it claims to check.
    for (what, count) in [
        ("acknowledged commits", total.commits_acked),
        ("failed commits", total.commits_failed),
        ("groups of merged turns", total.groups_merged),
        ("power losses", total.power_losses),
        ("process crashes", total.process_crashes),
        ("crashes between turns", total.crashes_between_turns),
        ("crashes before a commit", total.crashes_before_commit),
        ("crashes during recovery", total.crashes_during_recovery),
        (
            "recoveries from a checkpoint",
            total.recoveries_from_checkpoint,
        ),
        ("torn tails cut", total.torn_tails_cut),
        (
            "in-flight records recovered",
            total.in_flight_records_recovered,
        ),
        (
            "in-flight groups partly recovered",
            total.in_flight_groups_partly_recovered,
        ),
        ("checkpoints", total.checkpoints),
        ("failed checkpoints", total.checkpoints_failed),
        ("idempotency keys restored", total.keys_restored),
        (
            "key replays checked after recovery",
            total.key_replays_checked,
        ),
        ("retries replayed", total.retries_replayed),
        ("claims", total.claims),
        ("admin blocks", total.blocks),
        ("windows closed", total.windows_closed),
        ("flagged events", total.events_flagged),
        ("fairness blocks", total.fairness_blocks),
        ("live shard checks", total.live_checks),
    ] {
        assert!(count > 0, "no {what} in the whole run: {total:#?}");
    }
}

/// The server recovers into `Shard::new(policy, receipts, unix_now_ms())`: an empty shard
/// whose boards start in the *current* periods. Without the checkpoint a new shard
/// directory starts with, a recovery in a later period would replay an earlier period's
/// scores into the current one: yesterday's scores on today's daily board, and the close
/// of yesterday skipped (its record names a period the board is already in).
#[test]
fn recovery_into_a_later_period_without_a_checkpoint() {
    let raw = FaultFs::new(7);
    let fs: Arc<dyn FileSystem> = Arc::new(raw.clone());
    let dir = PathBuf::from("/data/gen-1/shard-0");
    let config = WalOptions::default();
    let Recovered {
        mut shard,
        mut store,
        ..
    } = ShardStore::recover(fs.clone(), &dir, config.clone(), fresh_shard(T0))
        .expect("an empty directory recovers");
    let mut model = fresh_shard(T0);
    // Tuesday 12:00 one score; Wednesday 01:00 the day closes and another score.
    for (now, player) in [(T0, "p-ana"), (T0 + 13 * HOUR_MS, "p-bo")] {
        let event = Event {
            player_id: player.to_owned(),
            ts: now / 1000,
            kind: EventKind::Progression {
                delta_xp: 100,
                activity: None,
            },
            replay_id: None,
        };
        shard.submit_event(event, None, now);
        let journal = shard.take_journal();
        store.commit(&journal).expect("the commit succeeds");
        for record in journal {
            model.apply(record);
        }
    }
    drop((shard, store));
    raw.crash();
    // Restarted an hour later; the empty shard is made "now", as the server does.
    let now = T0 + 14 * HOUR_MS;
    let recovered = ShardStore::recover(fs, &dir, config, fresh_shard(now)).expect("recovers");
    assert_same(
        "restart on the next day",
        "the recovered shard",
        &observable(&recovered.shard, now),
        &observable(&model, now),
    );
}
