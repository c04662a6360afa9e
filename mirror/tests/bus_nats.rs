//! The NATS sink against a real `nats-server -js` on a free port: every record arrives
//! once and in player order across a broker crash, and a restarted sink sends no more
//! than its unacknowledged tail (which the server's de-duplication drops).

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bus::{check_delivery, free_port, require_tool, wait_for, Broker};
use common::{TempDir, TestLog};
use liveops_engine::window::WindowKind;
use liveops_mirror::bus::cursor_file::CursorFile;
use liveops_mirror::bus::nats::{NatsConfig, NatsSink};
use liveops_mirror::{Cursor, DriverConfig, SinkDriver, SinkStats};
use liveops_storage::Durability;
use serde_json::Value;

const STREAM: &str = "LIVEOPS_TEST";

fn nats_server(dir: &Path) -> Option<Broker> {
    if !require_tool("nats-server", "--version", "apt-get install nats-server") {
        return None;
    }
    let port = free_port();
    let args = [
        "-a",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-js",
        "-sd",
        dir.join("nats-store").to_str().unwrap(),
    ]
    .map(String::from);
    Some(Broker::start("nats-server", &args, port))
}

fn config(broker: &Broker, dir: &Path) -> NatsConfig {
    NatsConfig {
        url: format!("nats://127.0.0.1:{}", broker.port),
        stream: STREAM.into(),
        season: "1".into(),
        windows: WindowKind::ALL.to_vec(),
        cursor_dir: dir.join("cursors"),
    }
}

fn driver_config() -> DriverConfig {
    DriverConfig {
        batch_items_max: 1024,
        idle_poll: Duration::from_millis(1),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(300),
    }
}

fn stored_cursor(dir: &Path) -> Cursor {
    CursorFile::open(&dir.join("cursors"), "nats")
        .unwrap()
        .get(3)
}

fn until_cursor(dir: &Path, lsn: u64) -> impl FnMut() -> bool + '_ {
    move || stored_cursor(dir) == Cursor { generation: 1, lsn }
}

/// Everything in the stream, in stream order: `(Nats-Msg-Id, body)`.
fn read_stream(port: u16) -> Vec<(String, Value)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = async_nats::connect(format!("127.0.0.1:{port}"))
            .await
            .unwrap();
        let stream = async_nats::jetstream::new(client)
            .get_stream(STREAM)
            .await
            .unwrap();
        let state = stream.get_info().await.unwrap().state;
        assert_eq!(state.first_sequence, 1, "nothing removed from the stream");
        let mut messages = Vec::with_capacity(state.messages as usize);
        for sequence in 1..=state.last_sequence {
            let message = stream.get_raw_message(sequence).await.unwrap();
            let id = message
                .headers
                .get("Nats-Msg-Id")
                .expect("every message has an id")
                .to_string();
            messages.push((id, serde_json::from_slice(&message.payload).unwrap()));
        }
        messages
    })
}

#[test]
fn every_record_arrives_once_and_in_player_order_across_a_broker_crash() {
    let dir = TempDir::new("bus-nats-crash");
    let Some(mut broker) = nats_server(dir.path()) else {
        return;
    };
    let mut log = TestLog::open(&dir.path().join("log"), 2000, Durability::Fsync, u64::MAX);
    log.append(1, 20_000);
    let stats = Arc::new(SinkStats::default());
    let sink = NatsSink::new(config(&broker, dir.path()), Arc::clone(&stats)).unwrap();
    let driver = SinkDriver::spawn_with_stats(
        sink,
        vec![log.shard_log(1)],
        driver_config(),
        Arc::clone(&stats),
    )
    .unwrap();
    let writes = || stats.writes.load(Ordering::Relaxed);
    wait_for("a third forwarded", Duration::from_secs(60), || {
        writes() >= 7_000
    });
    broker.kill();
    log.append(20_001, 5_000);
    // Acks in flight fail at their timeout; then connecting fails until the restart.
    wait_for("the sink to notice", Duration::from_secs(20), || {
        stats.errors.load(Ordering::Relaxed) > 0
    });
    std::thread::sleep(Duration::from_millis(300));
    broker.restart();
    wait_for(
        "everything forwarded",
        Duration::from_secs(120),
        until_cursor(dir.path(), 25_000),
    );
    assert!(stats.reconnects.load(Ordering::Relaxed) >= 1, "reconnected");
    drop(driver.stop().expect("the driver ran"));
    let messages = read_stream(broker.port);
    assert_eq!(check_delivery(&messages, 25_000, false), 25_000);
    let sent_again = writes() - 25_000;
    eprintln!("nats: {sent_again} messages sent again after the crash (dropped as duplicates)");
}

#[test]
fn a_restarted_sink_sends_only_its_unacknowledged_tail() {
    let dir = TempDir::new("bus-nats-restart");
    let Some(broker) = nats_server(dir.path()) else {
        return;
    };
    let mut log = TestLog::open(&dir.path().join("log"), 2000, Durability::Fsync, u64::MAX);
    log.append(1, 20_000);
    let stats = Arc::new(SinkStats::default());
    let sink = NatsSink::new(config(&broker, dir.path()), Arc::clone(&stats)).unwrap();
    let started = Instant::now();
    let driver = SinkDriver::spawn_with_stats(
        sink,
        vec![log.shard_log(1)],
        driver_config(),
        Arc::clone(&stats),
    )
    .unwrap();
    wait_for(
        "everything forwarded",
        Duration::from_secs(120),
        until_cursor(dir.path(), 20_000),
    );
    let elapsed = started.elapsed();
    eprintln!(
        "nats: 20000 messages in {elapsed:?}: {:.0} messages/s",
        20_000.0 / elapsed.as_secs_f64()
    );
    drop(driver.stop().expect("the driver ran"));
    assert_eq!(
        stats.writes.load(Ordering::Relaxed),
        20_000,
        "each sent once"
    );
    assert_eq!(stats.reconnects.load(Ordering::Relaxed), 0);

    // A crash after the broker acknowledged the last 700 but before their cursor was
    // stored: the file still says 19,300.
    CursorFile::open(&dir.path().join("cursors"), "nats")
        .unwrap()
        .store(
            3,
            Cursor {
                generation: 1,
                lsn: 19_300,
            },
        )
        .unwrap();
    log.append(20_001, 300);
    let restarted = Arc::new(SinkStats::default());
    let sink = NatsSink::new(config(&broker, dir.path()), Arc::clone(&restarted)).unwrap();
    let driver = SinkDriver::spawn_with_stats(
        sink,
        vec![log.shard_log(1)],
        driver_config(),
        Arc::clone(&restarted),
    )
    .unwrap();
    wait_for(
        "the tail forwarded",
        Duration::from_secs(60),
        until_cursor(dir.path(), 20_300),
    );
    drop(driver.stop().expect("the driver ran"));
    assert_eq!(
        restarted.writes.load(Ordering::Relaxed),
        1_000,
        "the 700 unacknowledged again, then the 300 new"
    );
    let messages = read_stream(broker.port);
    assert_eq!(
        check_delivery(&messages, 20_300, false),
        20_300,
        "the server dropped the 700 as duplicates"
    );
}
