//! The SQS sink against a real `moto_server` (an SQS-compatible server) on a free port,
//! with a FIFO queue: every record arrives once and in player order across a broker
//! outage mid-stream, and a restarted sink sends no more than its unacknowledged tail
//! (which the queue's de-duplication drops).
//!
//! moto gets slower as a queue grows (it scans the queue on every send), so these
//! tests send hundreds of messages, not thousands.
//!
//! moto keeps queues in memory only, so killing it would lose what it had acknowledged
//! (its loss, not the sink's). The outage is made by a TCP proxy in front of it instead:
//! every connection is reset mid-request and new ones are refused, then let through again.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::bus::{check_delivery, spawn, OutagePlan, RestartPlan};
use common::{TempDir, TestLog};
use liveops_engine::window::WindowKind;
use liveops_mirror::bus::sqs::{SqsConfig, SqsSink};
use liveops_mirror::SinkStats;
use liveops_storage::Durability;
use liveops_testkit::proxy::Proxy;
use liveops_testkit::sqs::Moto;

const QUEUE: &str = "liveops-test.fifo";
const BATCH_ITEMS_MAX: usize = 500;

/// A sink sending to `moto`'s queue through `endpoint_port` (moto's, or a proxy's).
fn sink(moto: &Moto, endpoint_port: u16, dir: &Path, stats: &Arc<SinkStats>) -> SqsSink {
    let config = SqsConfig {
        queue_url: moto.queue_url.clone(),
        endpoint: Some(format!("http://127.0.0.1:{endpoint_port}")),
        season: "1".into(),
        windows: WindowKind::ALL.to_vec(),
        cursor_dir: dir.join("cursors"),
    };
    SqsSink::new(config, Arc::clone(stats)).expect("a valid config")
}

#[test]
fn every_record_arrives_once_and_in_player_order_across_an_outage() {
    let dir = TempDir::new("bus-sqs-outage");
    let Some(moto) = Moto::start("sqs_across_an_outage", QUEUE) else {
        return;
    };
    let proxy = Proxy::start(moto.server.port);
    let mut log = TestLog::open(&dir.path().join("log"), 2000, Durability::Fsync, u64::MAX);
    log.append(1, 500);
    let stats = Arc::new(SinkStats::default());
    let sink = sink(&moto, proxy.port, dir.path(), &stats);
    let driver = spawn(sink, &log, &stats, BATCH_ITEMS_MAX);
    let plan = OutagePlan {
        sink: "sqs",
        records_before: 500,
        records_during: 200,
        notice_within: Duration::from_secs(60),
    };
    plan.run(&mut log, dir.path(), &stats, &mut &proxy, || {});
    drop(driver.stop().expect("the driver ran"));
    let messages = moto.drain();
    assert_eq!(check_delivery(&messages, 700, false), 700);
    eprintln!(
        "sqs: {} messages sent again after the outage (dropped as duplicates)",
        stats.writes.load(Ordering::Relaxed) - 700
    );
}

#[test]
fn a_restarted_sink_sends_only_its_unacknowledged_tail() {
    let dir = TempDir::new("bus-sqs-restart");
    let Some(moto) = Moto::start("sqs_unacknowledged_tail", QUEUE) else {
        return;
    };
    let mut log = TestLog::open(&dir.path().join("log"), 2000, Durability::Fsync, u64::MAX);
    // A crash after the queue accepted the last 150 but before their cursor was
    // stored: the file still says 350.
    let plan = RestartPlan {
        sink: "sqs",
        records: 500,
        unacknowledged: 150,
        appended: 50,
        batch_items_max: BATCH_ITEMS_MAX,
    };
    let port = moto.server.port;
    plan.run(&mut log, dir.path(), |stats| {
        sink(&moto, port, dir.path(), stats)
    });
    let messages = moto.drain();
    assert_eq!(
        check_delivery(&messages, 550, false),
        550,
        "the queue dropped the 150 as duplicates"
    );
}
