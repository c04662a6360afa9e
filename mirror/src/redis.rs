//! The Redis sink: [`RedisSink`] mirrors the live leaderboards and the players'
//! progression into Redis for readers that already speak Redis.
//!
//! ## Keys
//!
//! * `lb:{season}:{window}`: one sorted set per configured window's live period, member =
//!   player id, score = the player's score in that period (flagged events score nothing;
//!   the records' totals already say so).
//! * `lb:{season}:{window}:{period}`: a closed period's set, kept `closed_ttl_s` seconds
//!   after it closed. Events a shard accepted in a period that another shard already
//!   closed land here too (each shard closes on its own clock).
//! * `progress:{season}:{playerId}`: a hash with `xp`, `level` (`xp / 1000 + 1`) and
//!   `updatedAt` (unix ms of the last accepted event).
//! * A player quarantined by the fairness guard leaves every set holding their held
//!   scores (`Quarantined` lists them), and comes back with the same scores when an
//!   operator clears the review (`ReviewClosed`); the engine's boards do the same.
//! * `liveops:{season}:mirror`: this sink's instance id, written once its players' hashes
//!   were all rebuilt; missing or another id means Redis lost (or never had) our hashes.
//!
//! ## How it stays exact
//!
//! Redis is a cache: the sink keeps its cursors in memory only and rebuilds from engine
//! state ([`EngineState`]) on its first [`Sink::cursor`] call, after any error (a reconnect
//! may meet an emptied server), after a [`crate::Gap`] and after a record without totals
//! (written by an engine older than the totals): records it can no longer apply exactly.
//! A rebuild notes every shard's durable LSN `L` first (the `durable` function), then walks
//! the boards chunk by chunk into `lb:{season}:{window}:rebuild` and `RENAME`s that over the
//! live key (readers never see a half-built set), and then the feed replays from `L`.
//! Records carry absolute totals, so replaying one the walk already saw is harmless (see
//! [`crate::state`]). Within a batch, updates are coalesced per player (last one wins) and
//! written in one pipeline.
//!
//! ## Rollover
//!
//! The sink tracks each window's live period (from its walks and from `WindowClosed`
//! records). The first `WindowClosed` naming a newer period `RENAME`s the live key to the
//! closed period's key and sets its expiry; the same close logged by the other shards finds
//! the period already current and does nothing. The new period then fills from the feed: a
//! new period starts empty in the engine too, and every event in it follows its shard's
//! `WindowClosed` in that shard's log, so no rebuild is needed at rollover.
//!
//! Keys of one rebuild or rollover are used together in Lua scripts, so on a Redis Cluster
//! they would need one hash slot; the sink targets a single Redis (or a managed one such as
//! Azure Cache for Redis without clustering).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use liveops_engine::board::BoardKey;
use liveops_engine::fairness::review::{Held, Verdict};
use liveops_engine::shard::{level_of, Record, Totals};
use liveops_engine::window::{Period, WindowKind};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo};

use crate::feed::{Cursor, FeedItem};
use crate::sink::{Sink, SinkError, SinkStats};
use crate::state::{BoardChunk, EngineState, StateError};

/// A rebuild's pipelines (one engine chunk each) sent and not yet answered: enough to keep
/// Redis busy while the next chunk is read, few enough to bound the memory they hold.
const REBUILD_PIPELINES_IN_FLIGHT_MAX: usize = 4;
/// Members per `ZADD`: bounds one command's size on the wire and Redis' time in it.
const ZADD_MEMBERS_MAX: usize = 1_000;
/// Retries of a walk chunk the engine answered `Busy` to, 1 ms apart, before the rebuild
/// fails (and the driver backs off).
const BUSY_RETRIES_MAX: u32 = 5_000;
/// Walks of one window restarted because a shard rolled the window under them, before the
/// rebuild fails: rollovers are a day apart, so more than one means something is wrong.
const WINDOW_WALK_ATTEMPTS_MAX: u32 = 3;

/// Moves the live set to a closed period's key with its expiry, if there is a live set.
const MOVE_TO_CLOSED_LUA: &str = "if redis.call('EXISTS', KEYS[1]) == 1 then \
     redis.call('RENAME', KEYS[1], KEYS[2]) \
     redis.call('EXPIRE', KEYS[2], ARGV[1]) end return 0";
/// Swaps a rebuilt set in for the live one in one step; an empty rebuild (no key) empties
/// the live set.
const SWAP_IN_LUA: &str = "if redis.call('EXISTS', KEYS[1]) == 1 then \
     redis.call('RENAME', KEYS[1], KEYS[2]) else redis.call('DEL', KEYS[2]) end return 0";

/// Where and what the Redis sink mirrors.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `REDIS_URL`: `redis://` or `rediss://` (TLS), with optional `user:password@` and
    /// `/db`.
    pub url: String,
    /// `REDIS_TLS_CA`: a PEM bundle of root CAs for `rediss://` (self-signed servers,
    /// tests). When set, these are the only roots trusted for Redis (as with
    /// `redis-cli --cacert`); when not, the system's roots are.
    pub tls_ca_file: Option<PathBuf>,
    /// `SEASON`: part of every key, names the seasonal window's period.
    pub season: String,
    /// `LB_WINDOWS`, in order: the windows mirrored (each must be configured in the engine).
    pub windows: Vec<WindowKind>,
    /// `REDIS_CLOSED_TTL_S`: how long a closed period's set stays, seconds.
    pub closed_ttl_s: u64,
    /// Longest wait for a connection (TCP, TLS and AUTH), ms.
    pub connect_timeout_ms: u64,
    /// Longest wait for one command's or pipeline's answer, ms: a stalled server fails the
    /// batch rather than stalling the sink's thread forever.
    pub command_timeout_ms: u64,
    /// Entries (players) per walk chunk of a rebuild: bounds each read the engine answers
    /// on a shard's read queue and each pipeline the sink sends.
    pub rebuild_chunk_entries: usize,
    /// How often an idle sink checks that Redis still holds its data (one `GET` of the
    /// marker key), ms: a Redis that restarted empty while no record came is rebuilt
    /// within this time.
    pub health_check_interval_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> RedisConfig {
        RedisConfig {
            url: "redis://127.0.0.1:6379".to_string(),
            tls_ca_file: None,
            season: "1".to_string(),
            windows: WindowKind::ALL.to_vec(),
            closed_ttl_s: 7 * 86_400,
            connect_timeout_ms: 5_000,
            command_timeout_ms: 10_000,
            rebuild_chunk_entries: 10_000,
            health_check_interval_ms: 1_000,
        }
    }
}

/// The current layout generation and `shard`'s durable LSN, read from the shard's
/// [`liveops_storage::LogWatch`]: a rebuild reads it before its walk and the feed replays
/// everything after it.
pub type DurableCursor = Arc<dyn Fn(u32) -> Cursor + Send + Sync>;

/// Mirrors the feed into Redis; see the module docs.
pub struct RedisSink {
    /// What to mirror where.
    config: RedisConfig,
    /// The engine, for rebuilds.
    state: Arc<dyn EngineState>,
    /// Each shard's durable position, noted before a rebuild's walk.
    durable: DurableCursor,
    /// Counters shared with the driver and the metrics.
    stats: Arc<SinkStats>,
    /// The sink's own runtime: the trait's calls are blocking and run on the sink's thread.
    runtime: tokio::runtime::Runtime,
    /// Parsed URL and TLS roots; connecting is separate.
    client: Client,
    /// `None` before the first connect and after any error (the next call reconnects).
    conn: Option<MultiplexedConnection>,
    /// Whether a connection was ever made: later ones count as reconnects.
    connected_once: bool,
    /// Written to the marker key once our hashes are whole in Redis.
    instance_id: String,
    /// Per shard: where the feed resumes after the last rebuild.
    resume: Vec<Cursor>,
    /// Set at start, after any error, a gap or an untotalled record: the next call
    /// rebuilds before doing anything else.
    needs_rebuild: bool,
    /// Records were lost (gap, no totals): the hashes must be rebuilt too, marker or not.
    hashes_lost: bool,
    /// The live period of each window (by [`WindowKind::index`]) as Redis holds it.
    current: [Option<Period>; WindowKind::COUNT],
    /// `lb:{season}:{window}` per window, by [`WindowKind::index`].
    live_keys: [String; WindowKind::COUNT],
    /// When the idle sink last checked the marker key.
    checked_at: std::time::Instant,
    /// A rebuild's pipelines sent but not yet answered: they run on the runtime's worker
    /// while this thread reads the next chunk from the engine (at most
    /// [`REBUILD_PIPELINES_IN_FLIGHT_MAX`]).
    rebuild_writes: VecDeque<(tokio::task::JoinHandle<Result<(), SinkError>>, u64)>,
}

impl std::fmt::Debug for RedisSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: not printed.
        f.debug_struct("RedisSink")
            .field("season", &self.config.season)
            .field("windows", &self.config.windows)
            .field("connected", &self.conn.is_some())
            .field("needs_rebuild", &self.needs_rebuild)
            .finish_non_exhaustive()
    }
}

/// Updates of one batch, coalesced per key and player (last one wins: values are
/// absolute).
#[derive(Default)]
struct Pending {
    /// Sorted-set key -> player -> score.
    scores: HashMap<String, HashMap<String, u64>>,
    /// Closed periods' keys written to: their expiry is (re)set.
    closed_keys: HashSet<String>,
    /// Player -> (xp, at_ms).
    progress: HashMap<String, (u64, u64)>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.scores.is_empty() && self.progress.is_empty()
    }
}

/// Why a window's walk stopped early.
enum WalkError {
    /// A shard rolled the window during the walk: walk again.
    Rolled,
    Sink(SinkError),
}

impl From<SinkError> for WalkError {
    fn from(e: SinkError) -> WalkError {
        WalkError::Sink(e)
    }
}

impl RedisSink {
    /// A sink for `config`, rebuilding from `state`, noting shards' durable positions with
    /// `durable`, counting into `stats`. Validates the configuration (URL, CA file,
    /// season, windows) but does not connect: the first [`Sink::cursor`] call does.
    pub fn new(
        config: RedisConfig,
        state: Arc<dyn EngineState>,
        durable: DurableCursor,
        stats: Arc<SinkStats>,
    ) -> Result<RedisSink, SinkError> {
        let info = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| SinkError::with_source("REDIS_URL is not a valid Redis URL", e))?;
        let tls = config.url.starts_with("rediss://");
        if !tls && !config.url.starts_with("redis://") {
            return Err(SinkError::new(
                "REDIS_URL must start with redis:// or rediss://",
            ));
        }
        if config.season.is_empty() {
            return Err(SinkError::new("SEASON is empty"));
        }
        if config.windows.is_empty() {
            return Err(SinkError::new("no leaderboard window to mirror"));
        }
        if config.closed_ttl_s == 0 {
            return Err(SinkError::new("REDIS_CLOSED_TTL_S must be at least 1"));
        }
        if config.connect_timeout_ms == 0
            || config.command_timeout_ms == 0
            || config.rebuild_chunk_entries == 0
        {
            return Err(SinkError::new(
                "Redis timeouts and the rebuild chunk size must be positive",
            ));
        }
        // ring, explicitly: rustls refuses to pick when a build enables two providers.
        // An error only means a provider is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = match &config.tls_ca_file {
            Some(path) if tls => {
                let pem = std::fs::read(path).map_err(|e| {
                    SinkError::with_source(format!("REDIS_TLS_CA {}", path.display()), e)
                })?;
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                Client::build_with_tls(info, certificates)
                    .map_err(|e| SinkError::with_source("REDIS_TLS_CA is not a PEM CA", e))?
            }
            Some(_) => {
                return Err(SinkError::new(
                    "REDIS_TLS_CA is set but REDIS_URL is not rediss://",
                ))
            }
            None => Client::open(info)
                .map_err(|e| SinkError::with_source("REDIS_URL is not usable", e))?,
        };
        // One worker: a rebuild's pipelines are answered there while this thread blocks on
        // the engine's next chunk. It is the sink's work too, so it runs at the sink's
        // priority (this may be called on another thread than the sink's).
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sink-redis-io")
            .on_thread_start(crate::sink::lower_thread_priority)
            .enable_all()
            .build()
            .map_err(|e| SinkError::with_source("cannot start the Redis sink's runtime", e))?;
        let live_keys = WindowKind::ALL.map(|w| format!("lb:{}:{}", config.season, w));
        Ok(RedisSink {
            config,
            state,
            durable,
            stats,
            runtime,
            client,
            conn: None,
            connected_once: false,
            instance_id: format!("{:016x}-{}", rand::random::<u64>(), std::process::id()),
            resume: Vec::new(),
            needs_rebuild: true,
            hashes_lost: false,
            current: Default::default(),
            live_keys,
            checked_at: std::time::Instant::now(),
            rebuild_writes: VecDeque::new(),
        })
    }

    fn closed_key(&self, window: WindowKind, period: &str) -> String {
        format!("lb:{}:{}:{}", self.config.season, window, period)
    }

    fn progress_key(&self, player: &str) -> String {
        format!("progress:{}:{}", self.config.season, player)
    }

    fn marker_key(&self) -> String {
        format!("liveops:{}:mirror", self.config.season)
    }

    /// Whether `a` comes after `b` in time: later end, or for the seasonal window (which
    /// never ends) the configured season over any other.
    fn is_newer(&self, a: &Period, b: &Period) -> bool {
        let order = |p: &Period| (p.ends_ms, p.name == self.config.season);
        order(a) > order(b)
    }

    fn connect(&mut self) -> Result<(), SinkError> {
        if self.conn.is_some() {
            return Ok(());
        }
        let connect_timeout = Duration::from_millis(self.config.connect_timeout_ms);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(Duration::from_millis(self.config.command_timeout_ms)));
        let client = &self.client;
        let conn = self
            .runtime
            .block_on(async {
                tokio::time::timeout(
                    connect_timeout,
                    client.get_multiplexed_async_connection_with_config(&config),
                )
                .await
            })
            .map_err(|e| SinkError::with_source("connecting to Redis timed out", e))?
            .map_err(|e| SinkError::with_source("cannot connect to Redis", e))?;
        if self.connected_once {
            self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        self.connected_once = true;
        self.conn = Some(conn);
        Ok(())
    }

    /// Sends `pipe` (`commands` commands) and waits for every answer.
    fn exec(&mut self, pipe: &redis::Pipeline, commands: u64) -> Result<(), SinkError> {
        if commands == 0 {
            return Ok(());
        }
        self.query(|mut conn| async move { pipe.exec_async(&mut conn).await })?;
        self.stats.writes.fetch_add(commands, Ordering::Relaxed);
        Ok(())
    }

    /// Sends a rebuild's `pipe` without waiting for its answers (they are awaited by
    /// [`RedisSink::finish_rebuild_writes`], or when too many are in flight).
    fn send_rebuild(&mut self, pipe: redis::Pipeline, commands: u64) -> Result<(), SinkError> {
        if commands == 0 {
            return Ok(());
        }
        while self.rebuild_writes.len() >= REBUILD_PIPELINES_IN_FLIGHT_MAX {
            self.finish_oldest_rebuild_write()?;
        }
        let mut conn = self
            .conn
            .clone()
            .ok_or_else(|| SinkError::new("not connected to Redis"))?;
        let timeout = Duration::from_millis(self.config.command_timeout_ms);
        let write = self.runtime.spawn(async move {
            tokio::time::timeout(timeout, pipe.exec_async(&mut conn))
                .await
                .map_err(|e| SinkError::with_source("Redis did not answer in time", e))?
                .map_err(|e| SinkError::with_source("Redis refused or lost a command", e))
        });
        self.rebuild_writes.push_back((write, commands));
        Ok(())
    }

    fn finish_oldest_rebuild_write(&mut self) -> Result<(), SinkError> {
        let Some((write, commands)) = self.rebuild_writes.pop_front() else {
            return Ok(());
        };
        self.runtime
            .block_on(write)
            .map_err(|e| SinkError::with_source("a Redis write task failed", e))??;
        self.stats.writes.fetch_add(commands, Ordering::Relaxed);
        Ok(())
    }

    /// Waits for every rebuild pipeline sent: before a swap, and before the feed resumes.
    fn finish_rebuild_writes(&mut self) -> Result<(), SinkError> {
        let mut result = Ok(());
        while !self.rebuild_writes.is_empty() {
            // Every one is awaited, also after a failure: none may land after a later swap.
            let finished = self.finish_oldest_rebuild_write();
            if result.is_ok() {
                result = finished;
            }
        }
        result
    }

    /// Runs one request on (a handle of) the connection, with the command timeout.
    fn query<T, F>(
        &mut self,
        request: impl FnOnce(MultiplexedConnection) -> F,
    ) -> Result<T, SinkError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let timeout = Duration::from_millis(self.config.command_timeout_ms);
        // A cheap handle onto the same multiplexed connection.
        let conn = self
            .conn
            .clone()
            .ok_or_else(|| SinkError::new("not connected to Redis"))?;
        self.runtime
            .block_on(async { tokio::time::timeout(timeout, request(conn)).await })
            .map_err(|e| SinkError::with_source("Redis did not answer in time", e))?
            .map_err(|e| SinkError::with_source("Redis refused or lost a command", e))
    }

    /// Runs a Lua script over two keys and one argument (one write).
    fn eval2(&mut self, script: &str, key1: &str, key2: &str, arg: u64) -> Result<(), SinkError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script).arg(2).arg(key1).arg(key2).arg(arg);
        self.query(|mut conn| async move { cmd.query_async::<i64>(&mut conn).await })?;
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Any failure: the connection may be broken and Redis may have lost data, so the next
    /// call reconnects and rebuilds.
    fn failed(&mut self) {
        self.conn = None;
        self.needs_rebuild = true;
        for (write, _) in self.rebuild_writes.drain(..) {
            write.abort();
        }
    }

    /// An engine read, retried while the shard is busy.
    fn engine<T>(&self, read: impl Fn() -> Result<T, StateError>) -> Result<T, SinkError> {
        for _ in 0..BUSY_RETRIES_MAX {
            match read() {
                Ok(value) => return Ok(value),
                Err(StateError::Busy) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => return Err(SinkError::with_source("engine state unavailable", e)),
            }
        }
        Err(SinkError::with_source(
            "engine state unavailable for a rebuild",
            StateError::Busy,
        ))
    }

    /// Rebuilds every window's set (and the hashes when Redis lost them) from engine
    /// state; afterwards the feed resumes from [`RedisSink::resume`].
    fn rebuild(&mut self) -> Result<(), SinkError> {
        self.stats.resyncing.store(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let result = self.rebuild_all();
        self.stats.resyncing.store(0, Ordering::Relaxed);
        match result {
            Ok(()) => {
                self.needs_rebuild = false;
                self.stats.resyncs.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    sink = "redis",
                    took_ms = started.elapsed().as_millis() as u64,
                    "Redis mirror rebuilt from engine state"
                );
                Ok(())
            }
            Err(e) => {
                self.failed();
                Err(e)
            }
        }
    }

    /// The marker key's value: our instance id while Redis holds our data.
    fn marker(&mut self) -> Result<Option<String>, SinkError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.marker_key());
        self.query(|mut conn| async move { cmd.query_async(&mut conn).await })
    }

    fn rebuild_all(&mut self) -> Result<(), SinkError> {
        self.connect()?;
        let shards = self.state.shards();
        // Before any walk: every record after these is replayed, so whatever changed
        // during the walk is written again afterwards.
        let resume: Vec<Cursor> = (0..shards).map(|shard| (self.durable)(shard)).collect();
        let marker = self.marker()?;
        // The boards first: they are what readers of a mirror wait for; the progression
        // cache is a cache (a missing hash sends its reader to the API).
        for window in self.config.windows.clone() {
            self.rebuild_window(window, shards)?;
        }
        if self.hashes_lost || marker.as_deref() != Some(self.instance_id.as_str()) {
            self.rebuild_hashes(shards)?;
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(self.marker_key())
                .arg(&self.instance_id);
            self.exec(&pipe, 1)?;
            self.hashes_lost = false;
        }
        self.resume = resume;
        Ok(())
    }

    fn rebuild_hashes(&mut self, shards: u32) -> Result<(), SinkError> {
        let chunk = self.config.rebuild_chunk_entries;
        for shard in 0..shards {
            let mut from = 0;
            loop {
                let state = Arc::clone(&self.state);
                let players = self.engine(|| state.players_chunk(shard, from, chunk))?;
                if players.is_empty() {
                    break;
                }
                let mut pipe = redis::pipe();
                for p in &players {
                    self.hset_progress(&mut pipe, &p.player, p.xp, p.updated_ms);
                }
                self.send_rebuild(pipe, players.len() as u64)?;
                from += players.len();
            }
        }
        self.finish_rebuild_writes()
    }

    fn hset_progress(&self, pipe: &mut redis::Pipeline, player: &str, xp: u64, at_ms: u64) {
        pipe.cmd("HSET")
            .arg(self.progress_key(player))
            .arg("xp")
            .arg(xp)
            .arg("level")
            .arg(level_of(xp))
            .arg("updatedAt")
            .arg(at_ms)
            .ignore();
    }

    fn rebuild_window(&mut self, window: WindowKind, shards: u32) -> Result<(), SinkError> {
        let live = self.live_keys[window.index()].clone();
        let temp = format!("{live}:rebuild");
        for _ in 0..WINDOW_WALK_ATTEMPTS_MAX {
            // The newest live period of any shard is the window's; shards that have not
            // rolled yet still hold the previous period's standings.
            let mut target: Option<Period> = None;
            for shard in 0..shards {
                let chunk = self.board_chunk(shard, window, None, 1)?;
                if target
                    .as_ref()
                    .is_none_or(|t| self.is_newer(&chunk.period, t))
                {
                    target = Some(chunk.period);
                }
            }
            let Some(target) = target else {
                return Ok(()); // No shards: nothing to mirror.
            };
            self.roll(window, &target)?;
            let mut pipe = redis::pipe();
            pipe.cmd("DEL").arg(&temp).ignore();
            self.exec(&pipe, 1)?;
            let walked: Result<(), WalkError> =
                (0..shards).try_for_each(|shard| self.walk_shard(window, shard, &target, &temp));
            self.finish_rebuild_writes()?;
            match walked {
                Ok(()) => {
                    self.eval2(SWAP_IN_LUA, &temp, &live, 0)?;
                    return Ok(());
                }
                Err(WalkError::Rolled) => continue,
                Err(WalkError::Sink(e)) => return Err(e),
            }
        }
        Err(SinkError::new(format!(
            "the {window} window kept rolling during the Redis rebuild"
        )))
    }

    fn board_chunk(
        &self,
        shard: u32,
        window: WindowKind,
        after: Option<BoardKey>,
        limit: usize,
    ) -> Result<BoardChunk, SinkError> {
        let state = Arc::clone(&self.state);
        self.engine(|| state.board_chunk(shard, window, after.clone(), limit))?
            .ok_or_else(|| {
                SinkError::new(format!(
                    "the {window} window is mirrored to Redis but not kept by the engine"
                ))
            })
    }

    /// Writes `shard`'s live `window` board into `temp` (or into its closed period's key,
    /// for a shard that has not rolled to `target` yet).
    fn walk_shard(
        &mut self,
        window: WindowKind,
        shard: u32,
        target: &Period,
        temp: &str,
    ) -> Result<(), WalkError> {
        let limit = self.config.rebuild_chunk_entries;
        let mut after = None;
        let mut period: Option<Period> = None;
        loop {
            let chunk = self.board_chunk(shard, window, after.take(), limit)?;
            if period.as_ref().is_some_and(|p| *p != chunk.period)
                || self.is_newer(&chunk.period, target)
            {
                return Err(WalkError::Rolled);
            }
            let closed = chunk.period != *target;
            let key = if closed {
                self.closed_key(window, &chunk.period.name)
            } else {
                temp.to_string()
            };
            let mut pipe = redis::pipe();
            let mut commands = 0;
            for entries in chunk.entries.chunks(ZADD_MEMBERS_MAX) {
                zadd(
                    &mut pipe,
                    &key,
                    entries.iter().map(|e| (e.score(), &*e.player)),
                );
                commands += 1;
            }
            if closed && commands > 0 {
                pipe.cmd("EXPIRE")
                    .arg(&key)
                    .arg(self.config.closed_ttl_s)
                    .ignore();
                commands += 1;
            }
            self.send_rebuild(pipe, commands)?;
            let last = chunk.entries.last().cloned();
            let full = chunk.entries.len() == limit;
            period = Some(chunk.period);
            match last {
                Some(key) if full => after = Some(key),
                _ => return Ok(()),
            }
        }
    }

    /// Makes `next` the live period of `window` if it is newer than the current one: the
    /// live set becomes the closed period's set, with its expiry.
    fn roll(&mut self, window: WindowKind, next: &Period) -> Result<(), SinkError> {
        let slot = window.index();
        match self.current[slot].take() {
            Some(current) if !self.is_newer(next, &current) => {
                self.current[slot] = Some(current);
                return Ok(());
            }
            Some(current) => {
                let live = self.live_keys[slot].clone();
                let closed = self.closed_key(window, &current.name);
                let result =
                    self.eval2(MOVE_TO_CLOSED_LUA, &live, &closed, self.config.closed_ttl_s);
                if result.is_err() {
                    self.current[slot] = Some(current);
                    return result;
                }
                tracing::info!(sink = "redis", %window, closed = %current.name, next = %next.name, "Redis mirror rolled a window");
            }
            None => {}
        }
        self.current[slot] = Some(next.clone());
        Ok(())
    }

    /// Removes (`restore` false) or puts back the player's held scores, each in the set
    /// of its period: the live set while the period is the live one here, else the
    /// closed period's (which then keeps, or gets, its expiry).
    fn write_held(&mut self, player: &str, held: &[Held], restore: bool) -> Result<(), SinkError> {
        let mut pipe = redis::pipe();
        let mut commands = 0;
        for h in held
            .iter()
            .filter(|h| self.config.windows.contains(&h.window))
        {
            let slot = h.window.index();
            let live = self.current[slot]
                .as_ref()
                .is_none_or(|c| c.name == h.period);
            let key = if live {
                self.live_keys[slot].clone()
            } else {
                self.closed_key(h.window, &h.period)
            };
            if restore {
                zadd(&mut pipe, &key, std::iter::once((h.score, player)));
                commands += 1;
                if !live {
                    pipe.cmd("EXPIRE")
                        .arg(&key)
                        .arg(self.config.closed_ttl_s)
                        .ignore();
                    commands += 1;
                }
            } else {
                pipe.cmd("ZREM").arg(&key).arg(player).ignore();
                commands += 1;
            }
        }
        self.exec(&pipe, commands)
    }

    /// Queues an accepted event's totals.
    fn queue_event(&self, pending: &mut Pending, player: &str, at_ms: u64, totals: &Totals) {
        for &window in &self.config.windows {
            let Some(score) = totals.scores[window.index()] else {
                continue;
            };
            let period = window.period_at(at_ms, &self.config.season);
            let key = match &self.current[window.index()] {
                Some(current) if self.is_newer(current, &period) => {
                    let key = self.closed_key(window, &period.name);
                    pending.closed_keys.insert(key.clone());
                    key
                }
                _ => self.live_keys[window.index()].clone(),
            };
            pending
                .scores
                .entry(key)
                .or_default()
                .insert(player.to_string(), score);
        }
        pending
            .progress
            .insert(player.to_string(), (totals.xp, at_ms));
    }

    /// Writes the queued updates in one pipeline.
    fn flush(&mut self, pending: &mut Pending) -> Result<(), SinkError> {
        if pending.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        let mut commands = 0;
        for (key, members) in &pending.scores {
            let members: Vec<(u64, &str)> = members.iter().map(|(p, &s)| (s, p.as_str())).collect();
            for part in members.chunks(ZADD_MEMBERS_MAX) {
                zadd(&mut pipe, key, part.iter().copied());
                commands += 1;
            }
        }
        for key in &pending.closed_keys {
            pipe.cmd("EXPIRE")
                .arg(key)
                .arg(self.config.closed_ttl_s)
                .ignore();
            commands += 1;
        }
        for (player, &(xp, at_ms)) in &pending.progress {
            self.hset_progress(&mut pipe, player, xp, at_ms);
            commands += 1;
        }
        self.exec(&pipe, commands)?;
        *pending = Pending::default();
        Ok(())
    }

    fn apply_items(&mut self, shard: u32, items: &[FeedItem]) -> Result<(), SinkError> {
        let mut pending = Pending::default();
        let mut lost = false;
        for item in items {
            let record = match item {
                FeedItem::Gap(gap) => {
                    tracing::warn!(
                        sink = "redis", shard, after = %gap.after, through = %gap.through,
                        "records missing from the log: rebuilding Redis from engine state"
                    );
                    lost = true;
                    continue;
                }
                FeedItem::Record(r) => &r.record,
            };
            match record {
                Record::EventAccepted {
                    player,
                    at_ms,
                    totals: Some(totals),
                    ..
                } => {
                    for slot in 0..self.config.windows.len() {
                        let window = self.config.windows[slot];
                        // A shard's events follow its own close, but a rebuild may have
                        // seen another shard's newer period: the later period wins.
                        let period = window.period_at(*at_ms, &self.config.season);
                        let newer = self.current[window.index()]
                            .as_ref()
                            .is_some_and(|c| self.is_newer(&period, c));
                        if newer && totals.scores[window.index()].is_some() {
                            self.flush(&mut pending)?;
                            self.roll(window, &period)?;
                        }
                    }
                    self.queue_event(&mut pending, player, *at_ms, totals);
                }
                Record::EventAccepted { totals: None, .. } => {
                    tracing::warn!(
                        sink = "redis", shard, id = ?item.cursor_after(),
                        "record without totals (older engine): rebuilding Redis from engine state"
                    );
                    lost = true;
                }
                Record::WindowClosed { window, next, .. }
                    if self.config.windows.contains(window) =>
                {
                    self.flush(&mut pending)?;
                    self.roll(*window, next)?;
                }
                // A quarantine takes the player's entries off the sets; a cleared review
                // puts them back (a confirmed one leaves them off).
                Record::Quarantined { player, held, .. } => {
                    self.flush(&mut pending)?;
                    self.write_held(player, held, false)?;
                }
                Record::ReviewClosed {
                    player,
                    verdict: Verdict::Cleared,
                    held,
                    ..
                } => {
                    self.flush(&mut pending)?;
                    self.write_held(player, held, true)?;
                }
                _ => {}
            }
        }
        self.flush(&mut pending)?;
        if lost {
            self.hashes_lost = true;
            self.rebuild()?;
        }
        Ok(())
    }
}

/// Queues one `ZADD key score member ...`.
fn zadd<'a>(pipe: &mut redis::Pipeline, key: &str, members: impl Iterator<Item = (u64, &'a str)>) {
    let cmd = pipe.cmd("ZADD").arg(key);
    for (score, player) in members {
        cmd.arg(score).arg(player);
    }
    cmd.ignore();
}

impl Sink for RedisSink {
    fn name(&self) -> &str {
        "redis"
    }

    /// Rebuilds when needed (first call, after an error or a gap), then answers where the
    /// feed must replay from: the shard's durable position noted before the rebuild.
    fn cursor(&mut self, shard: u32) -> Result<Cursor, SinkError> {
        if self.needs_rebuild || self.conn.is_none() {
            self.rebuild()?;
        }
        self.resume.get(shard as usize).copied().ok_or_else(|| {
            SinkError::new(format!("shard {shard} is not one of the engine's shards"))
        })
    }

    /// Rebuilds when a failure left Redis unknown, and every `health_check_interval_ms`
    /// checks the marker key: a Redis that restarted empty while the engine was quiet is
    /// rebuilt now rather than at the next record.
    fn idle(&mut self) -> Result<(), SinkError> {
        if self.needs_rebuild || self.conn.is_none() {
            return self.rebuild();
        }
        let interval = Duration::from_millis(self.config.health_check_interval_ms);
        if self.checked_at.elapsed() < interval {
            return Ok(());
        }
        self.checked_at = std::time::Instant::now();
        match self.marker() {
            Ok(marker) if marker.as_deref() == Some(self.instance_id.as_str()) => Ok(()),
            Ok(_) => {
                tracing::warn!(sink = "redis", "Redis lost the mirror's data: rebuilding");
                self.rebuild()
            }
            Err(e) => {
                self.failed();
                Err(e)
            }
        }
    }

    fn apply(&mut self, shard: u32, items: &[FeedItem]) -> Result<(), SinkError> {
        // Another shard's failure left Redis unknown: rebuild before writing on top.
        if self.needs_rebuild || self.conn.is_none() {
            self.rebuild()?;
        }
        let result = self.apply_items(shard, items);
        if result.is_err() {
            self.failed();
        }
        result
    }
}
