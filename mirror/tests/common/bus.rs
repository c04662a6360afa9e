//! Helpers of the bus tests: a bus sink run over the test log on a driver thread, a
//! broker outage in the middle of it, and the checks every bus test makes on what a
//! consumer read. The brokers themselves are `liveops_testkit`'s.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use liveops_mirror::bus::cursor_file::CursorFile;
use liveops_mirror::{Cursor, DriverConfig, Sink, SinkDriver, SinkStats};
use liveops_testkit::wait_for;
use serde_json::Value;

use super::TestLog;

/// The driver settings of the bus tests: quick polls and backoffs, `batch_items_max`
/// records a pass.
pub fn driver_config(batch_items_max: usize) -> DriverConfig {
    DriverConfig {
        batch_items_max,
        idle_poll: Duration::from_millis(1),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(300),
    }
}

/// Runs `sink` (made with `stats`) over `log`'s generation 1 on a driver thread.
pub fn spawn<S: Sink + 'static>(
    sink: S,
    log: &TestLog,
    stats: &Arc<SinkStats>,
    batch_items_max: usize,
) -> SinkDriver<S> {
    SinkDriver::spawn_with_stats(
        sink,
        vec![log.shard_log(1)],
        driver_config(batch_items_max),
        Arc::clone(stats),
    )
    .expect("the driver thread starts")
}

/// The cursor bus sink `sink` (its [`Sink::name`]) stored for the test log's shard 3 in
/// `dir/cursors`.
pub fn stored_cursor(dir: &Path, sink: &str) -> Cursor {
    CursorFile::open(&dir.join("cursors"), sink)
        .expect("the cursor file opens")
        .get(3)
}

/// Whether `sink`'s stored cursor is at `lsn` of generation 1 (for [`wait_for`]).
pub fn until_cursor<'a>(dir: &'a Path, sink: &'a str, lsn: u64) -> impl FnMut() -> bool + 'a {
    move || stored_cursor(dir, sink) == Cursor { generation: 1, lsn }
}

/// Stores `lsn` as `sink`'s cursor: as after a crash between the broker's
/// acknowledgement of later records and the cursor write.
pub fn store_cursor(dir: &Path, sink: &str, lsn: u64) {
    CursorFile::open(&dir.join("cursors"), sink)
        .expect("the cursor file opens")
        .store(3, Cursor { generation: 1, lsn })
        .expect("the cursor is stored");
}

/// A broker the test can take away mid-stream and bring back.
pub trait Outage {
    /// The broker vanishes (killed, or every connection to it reset).
    fn cut(&mut self);
    /// It is back (with what it had acknowledged).
    fn restore(&mut self);
}

impl Outage for liveops_testkit::Server {
    fn cut(&mut self) {
        self.kill();
    }
    fn restore(&mut self) {
        self.restart();
    }
}

impl Outage for &liveops_testkit::proxy::Proxy {
    fn cut(&mut self) {
        liveops_testkit::proxy::Proxy::cut(self);
    }
    fn restore(&mut self) {
        liveops_testkit::proxy::Proxy::restore(self);
    }
}

impl Outage for liveops_testkit::servicebus::Broker {
    fn cut(&mut self) {
        self.kill();
    }
    fn restore(&mut self) {
        self.restart();
    }
}

/// The outage every bus test puts its sink through.
pub struct OutagePlan {
    /// The sink's [`Sink::name`] (its cursor file).
    pub sink: &'static str,
    /// Records in the log when the sink starts; the broker goes once a third of them
    /// are forwarded.
    pub records_before: u64,
    /// Records appended while the broker is away.
    pub records_during: u64,
    /// How long the sink may take to notice the outage (an error).
    pub notice_within: Duration,
}

impl OutagePlan {
    /// With a sink forwarding `log` (whose records `1..=records_before` are written),
    /// once a third are forwarded: takes the broker away, appends `records_during`
    /// records, waits until the sink notices (then runs `noticed`), brings the broker
    /// back, and waits until every record is forwarded and the sink reconnected.
    pub fn run(
        &self,
        log: &mut TestLog,
        dir: &Path,
        stats: &SinkStats,
        broker: &mut impl Outage,
        noticed: impl FnOnce(),
    ) {
        wait_for("a third forwarded", Duration::from_secs(60), || {
            stats.writes.load(Ordering::Relaxed) >= self.records_before / 3
        });
        broker.cut();
        log.append(self.records_before + 1, self.records_during);
        wait_for("the sink to notice", self.notice_within, || {
            stats.errors.load(Ordering::Relaxed) > 0
        });
        noticed();
        std::thread::sleep(Duration::from_millis(300));
        broker.restore();
        let records = self.records_before + self.records_during;
        wait_for(
            "everything forwarded",
            Duration::from_secs(120),
            until_cursor(dir, self.sink, records),
        );
        assert!(stats.reconnects.load(Ordering::Relaxed) >= 1, "reconnected");
    }
}

/// Checks what a consumer read, in the broker's order: `(id, body)` pairs. Every one of
/// lsns `1..=records` of shard 3, generation 1 (the test log's) is there exactly once
/// (`allow_duplicates`: at least once), ids match bodies, and each player's messages
/// come in log order. Returns the number of messages.
pub fn check_delivery(messages: &[(String, Value)], records: u64, allow_duplicates: bool) -> usize {
    let mut seen = HashSet::new();
    let mut last_per_player: HashMap<String, u64> = HashMap::new();
    for (id, body) in messages {
        assert_eq!(
            body["id"].as_str(),
            Some(id.as_str()),
            "header id = body id"
        );
        assert_eq!(body["v"], 1);
        let lsn: u64 = id
            .strip_prefix("g1-s3-")
            .and_then(|lsn| lsn.parse().ok())
            .unwrap_or_else(|| panic!("unexpected id {id}"));
        assert!((1..=records).contains(&lsn), "{id} was never written");
        let fresh = seen.insert(lsn);
        assert!(fresh || allow_duplicates, "{id} stored twice");
        let player = body["playerId"]
            .as_str()
            .expect("test records have players");
        assert_eq!(player, format!("player-{}", lsn % 17));
        let last = last_per_player.entry(player.to_string()).or_insert(0);
        if fresh {
            assert!(lsn > *last, "{player}: {id} after lsn {last}");
            *last = lsn;
        }
    }
    assert_eq!(seen.len() as u64, records, "every record forwarded");
    messages.len()
}

/// The restart every bus test puts its sink through: a sink forwards `records` records
/// and stops; its cursor is set back by `unacknowledged` (a crash after the broker
/// acknowledged them but before their cursor was stored); `appended` more are written;
/// a new sink sends the unacknowledged tail again and the new records, no more.
pub struct RestartPlan {
    /// The sink's [`Sink::name`] (its cursor file).
    pub sink: &'static str,
    /// Records forwarded before the restart.
    pub records: u64,
    /// Of those, how many the stored cursor says were not acknowledged.
    pub unacknowledged: u64,
    /// Records written after the restart.
    pub appended: u64,
    /// The driver's `batch_items_max`.
    pub batch_items_max: usize,
}

impl RestartPlan {
    /// Runs it with sinks from `new_sink`; returns the first sink's and the restarted
    /// sink's stats.
    pub fn run<S: Sink + 'static>(
        &self,
        log: &mut TestLog,
        dir: &Path,
        new_sink: impl Fn(&Arc<SinkStats>) -> S,
    ) -> (Arc<SinkStats>, Arc<SinkStats>) {
        log.append(1, self.records);
        let stats = Arc::new(SinkStats::default());
        let started = Instant::now();
        let driver = spawn(new_sink(&stats), log, &stats, self.batch_items_max);
        wait_for(
            "everything forwarded",
            Duration::from_secs(120),
            until_cursor(dir, self.sink, self.records),
        );
        let elapsed = started.elapsed();
        eprintln!(
            "{}: {} messages in {elapsed:?}: {:.0} messages/s",
            self.sink,
            self.records,
            self.records as f64 / elapsed.as_secs_f64()
        );
        drop(driver.stop().expect("the driver ran"));
        assert_eq!(
            stats.writes.load(Ordering::Relaxed),
            self.records,
            "each sent once"
        );

        store_cursor(dir, self.sink, self.records - self.unacknowledged);
        log.append(self.records + 1, self.appended);
        let restarted = Arc::new(SinkStats::default());
        let driver = spawn(new_sink(&restarted), log, &restarted, self.batch_items_max);
        wait_for(
            "the tail forwarded",
            Duration::from_secs(60),
            until_cursor(dir, self.sink, self.records + self.appended),
        );
        drop(driver.stop().expect("the driver ran"));
        assert_eq!(
            restarted.writes.load(Ordering::Relaxed),
            self.unacknowledged + self.appended,
            "the unacknowledged again, then the new"
        );
        (stats, restarted)
    }
}
