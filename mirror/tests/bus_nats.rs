//! The NATS sink against a real `nats-server -js` on a free port: every record arrives
//! once and in player order across a broker crash, and a restarted sink sends no more
//! than its unacknowledged tail (which the server's de-duplication drops).

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::bus::{check_delivery, spawn, OutagePlan, RestartPlan};
use common::{TempDir, TestLog};
use liveops_engine::window::WindowKind;
use liveops_mirror::bus::nats::{NatsConfig, NatsSink};
use liveops_mirror::SinkStats;
use liveops_storage::Durability;
use liveops_testkit::{free_port, nats, require_tool, Server};

const STREAM: &str = "LIVEOPS_TEST";
const BATCH_ITEMS_MAX: usize = 1024;

fn nats_server(test: &str, dir: &Path) -> Option<Server> {
    if !require_tool(test, &["nats-server"]) {
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
        dir.join("nats-store").to_str().expect("a UTF-8 temp dir"),
    ]
    .map(String::from);
    Some(Server::start("nats-server", &args, port))
}

fn sink(broker: &Server, dir: &Path, stats: &Arc<SinkStats>) -> NatsSink {
    let config = NatsConfig {
        url: format!("nats://127.0.0.1:{}", broker.port),
        stream: STREAM.into(),
        season: "1".into(),
        windows: WindowKind::ALL.to_vec(),
        cursor_dir: dir.join("cursors"),
    };
    NatsSink::new(config, Arc::clone(stats)).expect("a valid config")
}

#[test]
fn every_record_arrives_once_and_in_player_order_across_a_broker_crash() {
    let dir = TempDir::new("bus-nats-crash");
    let Some(mut broker) = nats_server("nats_across_a_broker_crash", dir.path()) else {
        return;
    };
    let mut log = TestLog::open(&dir.path().join("log"), 2000, Durability::Fsync, u64::MAX);
    log.append(1, 20_000);
    let stats = Arc::new(SinkStats::default());
    let driver = spawn(
        sink(&broker, dir.path(), &stats),
        &log,
        &stats,
        BATCH_ITEMS_MAX,
    );
    // Acks in flight fail at their timeout; then connecting fails until the restart.
    let plan = OutagePlan {
        sink: "nats",
        records_before: 20_000,
        records_during: 5_000,
        notice_within: Duration::from_secs(20),
    };
    plan.run(&mut log, dir.path(), &stats, &mut broker, || {});
    drop(driver.stop().expect("the driver ran"));
    let messages = nats::read_stream(broker.port, STREAM);
    assert_eq!(check_delivery(&messages, 25_000, false), 25_000);
    let sent_again = stats.writes.load(Ordering::Relaxed) - 25_000;
    eprintln!("nats: {sent_again} messages sent again after the crash (dropped as duplicates)");
}

#[test]
fn a_restarted_sink_sends_only_its_unacknowledged_tail() {
    let dir = TempDir::new("bus-nats-restart");
    let Some(broker) = nats_server("nats_unacknowledged_tail", dir.path()) else {
        return;
    };
    let mut log = TestLog::open(&dir.path().join("log"), 2000, Durability::Fsync, u64::MAX);
    // A crash after the broker acknowledged the last 700 but before their cursor was
    // stored: the file still says 19,300.
    let plan = RestartPlan {
        sink: "nats",
        records: 20_000,
        unacknowledged: 700,
        appended: 300,
        batch_items_max: BATCH_ITEMS_MAX,
    };
    let (stats, _) = plan.run(&mut log, dir.path(), |stats| {
        sink(&broker, dir.path(), stats)
    });
    assert_eq!(stats.reconnects.load(Ordering::Relaxed), 0);
    let messages = nats::read_stream(broker.port, STREAM);
    assert_eq!(
        check_delivery(&messages, 20_300, false),
        20_300,
        "the server dropped the 700 as duplicates"
    );
}
