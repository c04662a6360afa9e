//! Sinks and the driver that feeds them: [`Sink`], [`SinkRunner`] (one synchronous pass
//! at a time, for tests and for the driver) and [`SinkDriver`] (a thread per sink with
//! retries).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use liveops_storage::RetentionHold;
use rand::Rng;

use crate::feed::{Cursor, FeedError, FeedItem, FeedReader, ShardLog};

/// Something that mirrors the feed somewhere (Redis, Postgres, a message bus).
///
/// The sink owns its cursors: it stores, per shard, the cursor after the last item it
/// applied, durably and together with what it wrote when it can (Postgres: in the same
/// transaction as the rows), so after any failure or restart the driver resumes from
/// [`Sink::cursor`]. Delivery is at least once: an item may come again after a failure
/// between writing and storing the cursor, so a sink de-duplicates by
/// [`crate::RecordId`] (or writes idempotently). Calls are blocking; a sink with an
/// async client keeps its own runtime and `block_on`s inside. It runs on its own
/// thread, so a slow sink slows only itself.
pub trait Sink: Send {
    /// Names the sink in logs and metrics.
    fn name(&self) -> &str;
    /// The cursor after the last item this sink applied for `shard`, as stored by the
    /// sink; [`Cursor::NEW`] for a new sink.
    fn cursor(&mut self, shard: u32) -> Result<Cursor, SinkError>;
    /// Applies `items` of `shard`, in order, and stores the cursor after the last one.
    /// Items are records and [`crate::Gap`]s; a gap must be made visible (log, metric,
    /// a row) and its cursor stored like a record's. On error nothing is assumed
    /// applied: the driver backs off, asks [`Sink::cursor`] again and resumes there.
    fn apply(&mut self, shard: u32, items: &[FeedItem]) -> Result<(), SinkError>;
    /// Periodic work between passes (Postgres: leaderboard snapshots on their cron),
    /// called by [`SinkDriver`] after every pass; an error is handled like `apply`'s.
    fn idle(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// What a sink is doing, as its `state` metric shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkState {
    /// Following the feed.
    Up = 0,
    /// Its server is unreachable or refusing writes: retrying with backoff.
    Degraded = 1,
    /// Rebuilding its copy from engine state (Redis after a (re)connect or rollover).
    Resyncing = 2,
}

impl SinkState {
    pub const ALL: [SinkState; 3] = [SinkState::Up, SinkState::Degraded, SinkState::Resyncing];

    pub fn as_str(self) -> &'static str {
        match self {
            SinkState::Up => "up",
            SinkState::Degraded => "degraded",
            SinkState::Resyncing => "resyncing",
        }
    }
}

/// A sink's failure: unreachable server, refused write, lost connection.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    /// What failed, for the log.
    message: String,
    /// The client library's error, if any.
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SinkError {
    pub fn new(message: impl Into<String>) -> SinkError {
        SinkError {
            message: message.into(),
            source: None,
        }
    }

    pub fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> SinkError {
        SinkError {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

/// Why a pass over the shards stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("sink failed on shard {shard}: {source}")]
    Sink {
        shard: u32,
        #[source]
        source: SinkError,
    },
    #[error("sink's periodic work failed: {0}")]
    Idle(#[source] SinkError),
    #[error("feed failed on shard {shard}: {source}")]
    Feed {
        shard: u32,
        #[source]
        source: FeedError,
    },
}

/// Counters of one sink's progress, shared with whoever reports them (metrics).
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Records applied (duplicates after a retry included).
    pub records_applied: AtomicU64,
    /// Gaps handed to the sink: records it will never get from the log.
    pub gaps: AtomicU64,
    /// Failed passes (sink or feed errors), each followed by a backoff.
    pub errors: AtomicU64,
    /// 1 while the last pass failed, 0 once one succeeds.
    pub degraded: AtomicU64,
    /// 1 while the sink rebuilds from engine state (set by the sink).
    pub resyncing: AtomicU64,
    /// Rows, commands or messages the sink wrote (set by the sink).
    pub writes: AtomicU64,
    /// Connections the sink (re)opened after the first (set by the sink).
    pub reconnects: AtomicU64,
    /// Rebuilds from engine state (set by the sink).
    pub resyncs: AtomicU64,
    /// Durable records not yet applied, summed over shards, after the last pass.
    pub lag_records: AtomicU64,
    /// Age of the oldest durable record not yet applied (engine clock, ms) after the
    /// last pass; 0 when caught up.
    pub lag_ms: AtomicU64,
}

impl SinkStats {
    pub fn state(&self) -> SinkState {
        if self.degraded.load(Ordering::Relaxed) != 0 {
            SinkState::Degraded
        } else if self.resyncing.load(Ordering::Relaxed) != 0 {
            SinkState::Resyncing
        } else {
            SinkState::Up
        }
    }
}

/// One shard as seen by one sink.
#[derive(Debug)]
struct ShardFeed {
    log: ShardLog,
    /// `None` until the sink's cursor is known, and again after any failure, so the next
    /// pass resumes from what the sink actually stored.
    reader: Option<FeedReader>,
    /// Keeps the segments this sink has not applied yet from checkpoints.
    hold: RetentionHold,
    /// LSN (in the log's generation) of the last item applied or read as the sink's
    /// cursor: the base of the lag metric.
    applied_lsn: u64,
    /// Engine time of the last record applied (0: none yet).
    applied_at_ms: u64,
}

/// Feeds one sink from every shard's log, one synchronous pass at a time.
#[derive(Debug)]
pub struct SinkRunner<S> {
    sink: S,
    shards: Vec<ShardFeed>,
    /// Most items per `apply` call: bounds the sink's batch (memory, transaction size).
    batch_items_max: usize,
    /// Reused batch buffer.
    batch: Vec<FeedItem>,
    stats: Arc<SinkStats>,
}

impl<S: Sink> SinkRunner<S> {
    /// A runner for `sink` over `logs` (one per shard of the current generation).
    /// Until the sink's cursor is read, each log is held from its start.
    pub fn new(sink: S, logs: Vec<ShardLog>, batch_items_max: usize) -> SinkRunner<S> {
        SinkRunner::with_stats(sink, logs, batch_items_max, Arc::default())
    }

    /// As [`SinkRunner::new`], counting into `stats` (which the sink may share, to count
    /// its writes, reconnects and rebuilds).
    pub fn with_stats(
        sink: S,
        logs: Vec<ShardLog>,
        batch_items_max: usize,
        stats: Arc<SinkStats>,
    ) -> SinkRunner<S> {
        assert!(batch_items_max > 0, "a batch holds at least one item");
        let shards = logs
            .into_iter()
            .map(|log| ShardFeed {
                hold: log.watch.hold(1),
                log,
                reader: None,
                applied_lsn: 0,
                applied_at_ms: 0,
            })
            .collect();
        SinkRunner {
            sink,
            shards,
            batch_items_max,
            batch: Vec::with_capacity(batch_items_max),
            stats,
        }
    }

    pub fn stats(&self) -> &Arc<SinkStats> {
        &self.stats
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    /// Gives the sink back (its holds are released).
    pub fn into_sink(self) -> S {
        self.sink
    }

    /// One pass: for each shard, at most one batch of what is durable now, applied.
    /// Returns the items applied (0: every shard is caught up). On an error the failing
    /// shard forgets its position and resumes from the sink's cursor next time; shards
    /// done before it keep their progress.
    pub fn step(&mut self) -> Result<usize, RunError> {
        let result = self.step_shards();
        self.note_lag();
        result
    }

    /// Records durable but not applied, and (as replication lag is usually told) how
    /// old the newest applied record is while more wait behind it.
    fn note_lag(&mut self) {
        let mut lag_records = 0;
        let mut lag_ms = 0;
        for shard_feed in &self.shards {
            // A shard whose position is unknown (before its first pass, after a failure)
            // counts from where the sink's last known cursor put it.
            let durable = shard_feed.log.watch.durable_lsn();
            let behind = durable.saturating_sub(shard_feed.applied_lsn);
            lag_records += behind;
            if behind > 0 && shard_feed.applied_at_ms > 0 {
                lag_ms = lag_ms.max(unix_now_ms().saturating_sub(shard_feed.applied_at_ms));
            }
        }
        self.stats.lag_records.store(lag_records, Ordering::Relaxed);
        self.stats.lag_ms.store(lag_ms, Ordering::Relaxed);
    }

    /// The sink's periodic work ([`Sink::idle`]); a failure counts like a failed pass.
    pub fn idle(&mut self) -> Result<(), RunError> {
        let result = self.sink.idle().map_err(RunError::Idle);
        if result.is_err() {
            self.stats.degraded.store(1, Ordering::Relaxed);
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn step_shards(&mut self) -> Result<usize, RunError> {
        let mut applied = 0;
        for index in 0..self.shards.len() {
            let result = self.step_shard(index);
            self.stats
                .degraded
                .store(u64::from(result.is_err()), Ordering::Relaxed);
            match result {
                Ok(n) => applied += n,
                Err(e) => {
                    self.shards[index].reader = None;
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        Ok(applied)
    }

    fn step_shard(&mut self, index: usize) -> Result<usize, RunError> {
        let shard_feed = &mut self.shards[index];
        let shard = shard_feed.log.shard;
        let feed_error = |source| RunError::Feed { shard, source };
        if shard_feed.reader.is_none() {
            let cursor = self
                .sink
                .cursor(shard)
                .map_err(|source| RunError::Sink { shard, source })?;
            hold_after(&shard_feed.hold, &shard_feed.log, cursor);
            shard_feed.applied_lsn = lsn_in(&shard_feed.log, cursor);
            let reader = FeedReader::open(shard_feed.log.clone(), cursor).map_err(feed_error)?;
            shard_feed.reader = Some(reader);
        }
        let reader = shard_feed.reader.as_mut().expect("opened above");
        self.batch.clear();
        let read = reader
            .read(self.batch_items_max, &mut self.batch)
            .map_err(feed_error)?;
        if read == 0 {
            return Ok(0);
        }
        let mut gaps = 0;
        for item in &self.batch {
            if let FeedItem::Gap(gap) = item {
                gaps += 1;
                tracing::warn!(
                    sink = self.sink.name(),
                    shard,
                    after = %gap.after,
                    through = %gap.through,
                    reason = ?gap.reason,
                    "mirror gap: these records are no longer in the log and were not mirrored"
                );
            }
        }
        self.sink
            .apply(shard, &self.batch)
            .map_err(|source| RunError::Sink { shard, source })?;
        let last = self.batch.last().expect("read > 0").cursor_after();
        hold_after(&shard_feed.hold, &shard_feed.log, last);
        shard_feed.applied_lsn = lsn_in(&shard_feed.log, last);
        if let Some(at_ms) = self.batch.iter().rev().find_map(|item| match item {
            FeedItem::Record(r) => Some(r.record.at_ms()).filter(|&ms| ms > 0),
            FeedItem::Gap(_) => None,
        }) {
            shard_feed.applied_at_ms = at_ms;
        }
        self.stats.gaps.fetch_add(gaps, Ordering::Relaxed);
        self.stats
            .records_applied
            .fetch_add(read as u64 - gaps, Ordering::Relaxed);
        Ok(read)
    }
}

/// The LSN of `cursor` in `log`'s generation (0 for an older generation's).
fn lsn_in(log: &ShardLog, cursor: Cursor) -> u64 {
    if cursor.generation == log.generation {
        cursor.lsn
    } else {
        0
    }
}

/// Unix time in ms: the engine's clock, which stamps records.
fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Holds the log from the first record after `cursor` (all of it for an older
/// generation's cursor, whose records all count as unread).
fn hold_after(hold: &RetentionHold, log: &ShardLog, cursor: Cursor) {
    let needed_from = if cursor.generation == log.generation {
        cursor.lsn + 1
    } else {
        1
    };
    hold.set(needed_from);
}

/// How a [`SinkDriver`] paces its sink.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Most items per `apply` call.
    pub batch_items_max: usize,
    /// Sleep between passes once every shard is caught up: the feed's added latency.
    pub idle_poll: Duration,
    /// First delay after a failure; doubles per consecutive failure.
    pub backoff_initial: Duration,
    /// Ceiling of the delay after failures.
    pub backoff_max: Duration,
}

impl Default for DriverConfig {
    fn default() -> DriverConfig {
        DriverConfig {
            batch_items_max: 4096,
            idle_poll: Duration::from_millis(5),
            backoff_initial: Duration::from_millis(100),
            // A server back from an outage is met within 2 s (the mirrors must be exact
            // within seconds of its return); retrying a down server every 2 s costs
            // nothing worth saving.
            backoff_max: Duration::from_secs(2),
        }
    }
}

/// Exponential backoff with jitter: the n-th consecutive failure waits a random time in
/// `[d/2, d]` with `d = min(initial * 2^n, max)`, so sinks that failed together (one
/// server down) do not all reconnect in the same instant.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// Consecutive failures so far.
    failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            failures: 0,
        }
    }

    /// The delay before the next attempt, after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        half + rand::rng().random_range(Duration::ZERO..=ceiling - half)
    }

    /// A success: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// How far below the engine's a sink thread's CPU priority is: a nice increment (the
/// result capped at 19, the lowest). Where the cores are busy, the kernel then runs the
/// shard threads first and a sink falls behind instead (its lag metric shows it, and it
/// catches up when ingestion eases), so that a sink does not take cores from ingestion.
/// BENCHMARKS.md measures it on 2 vCPUs.
pub const SINK_NICE_INCREMENT: i32 = 10;

/// Lowers the calling thread's CPU priority by [`SINK_NICE_INCREMENT`]. On Linux a nice
/// value belongs to a thread (`setpriority` with pid 0 changes only the caller), and the
/// threads it starts inherit it. A failure is logged: the sink works the same, at the
/// engine's priority.
pub fn lower_thread_priority() {
    use rustix::process::{getpriority_process, setpriority_process};
    let lowered = getpriority_process(None)
        .and_then(|nice| setpriority_process(None, (nice + SINK_NICE_INCREMENT).min(19)));
    if let Err(e) = lowered {
        tracing::warn!("a sink thread keeps the engine's CPU priority: {e}");
    }
}

/// Runs one sink on its own thread until stopped: passes of [`SinkRunner::step`], an idle
/// sleep when caught up, a backoff after a failure. The thread runs below the engine's
/// CPU priority ([`lower_thread_priority`]).
#[derive(Debug)]
pub struct SinkDriver<S> {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<SinkRunner<S>>>,
    stats: Arc<SinkStats>,
}

impl<S: Sink + 'static> SinkDriver<S> {
    pub fn spawn(
        sink: S,
        logs: Vec<ShardLog>,
        config: DriverConfig,
    ) -> std::io::Result<SinkDriver<S>> {
        SinkDriver::spawn_with_stats(sink, logs, config, Arc::default())
    }

    /// As [`SinkDriver::spawn`], counting into `stats` (shared with the sink).
    pub fn spawn_with_stats(
        sink: S,
        logs: Vec<ShardLog>,
        config: DriverConfig,
        stats: Arc<SinkStats>,
    ) -> std::io::Result<SinkDriver<S>> {
        let name = format!("sink-{}", sink.name());
        let mut runner = SinkRunner::with_stats(sink, logs, config.batch_items_max, stats);
        let stats = Arc::clone(runner.stats());
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            lower_thread_priority();
            let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
            while !stopping.load(Ordering::Acquire) {
                match runner
                    .step()
                    .and_then(|applied| runner.idle().map(|()| applied))
                {
                    Ok(0) => {
                        backoff.reset();
                        std::thread::park_timeout(config.idle_poll);
                    }
                    Ok(_) => backoff.reset(),
                    Err(e) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(
                            sink = runner.sink().name(),
                            retry_in_ms = delay.as_millis() as u64,
                            "mirror sink failed: {e}"
                        );
                        std::thread::park_timeout(delay);
                    }
                }
            }
            runner
        })?;
        Ok(SinkDriver {
            stop,
            thread: Some(thread),
            stats,
        })
    }

    pub fn stats(&self) -> &Arc<SinkStats> {
        &self.stats
    }

    /// Asks the thread to stop after its current pass, without waiting for it.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = &self.thread {
            thread.thread().unpark();
        }
    }

    /// True once the thread has ended (after [`SinkDriver::request_stop`]).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Lets the thread finish on its own, unwaited: for a process exiting while a sink
    /// is still inside a slow call (its cursor is where its server says it is).
    pub fn detach(mut self) {
        self.request_stop();
        self.thread.take();
    }

    /// Stops after the current pass (a backoff or idle sleep is cut short) and gives
    /// the sink back; `None` if its thread panicked.
    pub fn stop(mut self) -> Option<S> {
        self.stop_thread().map(|runner| runner.sink)
    }
}

impl<S> SinkDriver<S> {
    fn stop_thread(&mut self) -> Option<SinkRunner<S>> {
        let thread = self.thread.take()?;
        self.stop.store(true, Ordering::Release);
        thread.thread().unpark();
        thread.join().ok()
    }
}

impl<S> Drop for SinkDriver<S> {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_up_to_the_ceiling_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let bounds = [100, 200, 400, 800, 1000, 1000];
        for _ in 0..50 {
            let mut b = backoff.clone();
            for ceiling in bounds {
                let delay = b.next_delay();
                let ceiling = Duration::from_millis(ceiling);
                assert!(
                    delay >= ceiling / 2 && delay <= ceiling,
                    "{delay:?} vs {ceiling:?}"
                );
            }
        }
        let delays: std::collections::HashSet<Duration> =
            (0..20).map(|_| backoff.clone().next_delay()).collect();
        assert!(delays.len() > 1, "jittered, not fixed");
        for _ in 0..5 {
            backoff.next_delay();
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
