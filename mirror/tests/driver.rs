//! The driver thread: retries a failing sink with backoff, catches up, tails, stops.

mod common;

use std::time::{Duration, Instant};

use common::{TempDir, TestLog};
use liveops_mirror::{Cursor, DriverConfig, FeedItem, Sink, SinkDriver, SinkError};
use liveops_storage::Durability;

/// Fails its first `failures_left` applies, then stores everything.
struct FlakySink {
    failures_left: u32,
    lsns: Vec<u64>,
    cursor: Cursor,
}

impl Sink for FlakySink {
    fn name(&self) -> &str {
        "flaky"
    }

    fn cursor(&mut self, _shard: u32) -> Result<Cursor, SinkError> {
        Ok(self.cursor)
    }

    fn apply(&mut self, _shard: u32, items: &[FeedItem]) -> Result<(), SinkError> {
        if self.failures_left > 0 {
            self.failures_left -= 1;
            return Err(SinkError::new("server down"));
        }
        assert!(items.len() <= 8, "batches are bounded");
        for item in items {
            let FeedItem::Record(r) = item else {
                panic!("no gap expected")
            };
            self.lsns.push(r.id.lsn);
        }
        self.cursor = items.last().unwrap().cursor_after();
        Ok(())
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn retries_with_backoff_then_catches_up_and_tails() {
    let dir = TempDir::new("driver");
    let mut log = TestLog::open(dir.path(), 5, Durability::Fsync, u64::MAX);
    log.append(1, 20);
    let sink = FlakySink {
        failures_left: 3,
        lsns: Vec::new(),
        cursor: Cursor::NEW,
    };
    let config = DriverConfig {
        batch_items_max: 8,
        idle_poll: Duration::from_millis(1),
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
    };
    let driver = SinkDriver::spawn(sink, vec![log.shard_log(1)], config).unwrap();
    let applied = |n| {
        let stats = driver.stats().clone();
        move || {
            stats
                .records_applied
                .load(std::sync::atomic::Ordering::Relaxed)
                >= n
        }
    };
    wait_for("the first 20 records", applied(20));
    log.append(21, 7);
    wait_for("the tail", applied(27));
    assert_eq!(
        driver
            .stats()
            .errors
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    assert_eq!(
        driver
            .stats()
            .degraded
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    let sink = driver.stop().expect("the thread did not panic");
    assert_eq!(
        sink.lsns,
        (1..=27).collect::<Vec<_>>(),
        "each once, in order"
    );
}

/// Notes the CPU priority (nice value) of the thread it runs on.
struct PrioritySink {
    nice: std::sync::Arc<std::sync::Mutex<Option<i32>>>,
}

impl Sink for PrioritySink {
    fn name(&self) -> &str {
        "priority"
    }

    fn cursor(&mut self, _shard: u32) -> Result<Cursor, SinkError> {
        let nice = rustix::process::getpriority_process(None).expect("getpriority");
        *self.nice.lock().unwrap() = Some(nice);
        Ok(Cursor::NEW)
    }

    fn apply(&mut self, _shard: u32, _items: &[FeedItem]) -> Result<(), SinkError> {
        Ok(())
    }
}

/// A sink's thread runs below the engine's CPU priority, so that on busy cores the
/// kernel runs ingestion first; the thread that started it keeps its own.
#[test]
fn a_sink_thread_runs_below_the_engines_priority() {
    let dir = TempDir::new("driver-priority");
    let log = TestLog::open(dir.path(), 5, Durability::Fsync, u64::MAX);
    let engine_nice = rustix::process::getpriority_process(None).unwrap();
    let nice = std::sync::Arc::default();
    let sink = PrioritySink {
        nice: std::sync::Arc::clone(&nice),
    };
    let driver = SinkDriver::spawn(sink, vec![log.shard_log(1)], DriverConfig::default()).unwrap();
    wait_for("the sink's first pass", || nice.lock().unwrap().is_some());
    driver.stop().expect("the thread did not panic");
    let expected = (engine_nice + liveops_mirror::sink::SINK_NICE_INCREMENT).min(19);
    assert_eq!(*nice.lock().unwrap(), Some(expected));
    assert!(expected > engine_nice, "run the test below nice 19");
    assert_eq!(
        rustix::process::getpriority_process(None).unwrap(),
        engine_nice,
        "only the sink's thread is lowered"
    );
}
