//! The Service Bus sink over a real AMQP 1.0 wire, against `liveops_testkit`'s Service
//! Bus stand-in (an AMQP 1.0 broker with a `$cbs` node checking SAS tokens, and a queue
//! node that stores a message before settling it; see `liveops_testkit::servicebus`):
//! every record arrives with its ids in player order across a broker restart, and a
//! wrong key is refused.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::bus::{check_delivery, spawn, stored_cursor, OutagePlan};
use common::{TempDir, TestLog};
use liveops_engine::window::WindowKind;
use liveops_mirror::bus::servicebus::{ServiceBusConfig, ServiceBusSink};
use liveops_mirror::{Cursor, SinkRunner, SinkState, SinkStats};
use liveops_storage::Durability;
use liveops_testkit::servicebus::{Broker, KEY, QUEUE, WRONG_KEY};
use liveops_testkit::wait_for;

const BATCH_ITEMS_MAX: usize = 500;

fn sink(broker: &Broker, key: &str, dir: &Path, stats: &Arc<SinkStats>) -> ServiceBusSink {
    let config = ServiceBusConfig {
        connection_string: broker.connection_string(key),
        queue: QUEUE.into(),
        season: "1".into(),
        windows: WindowKind::ALL.to_vec(),
        cursor_dir: dir.join("cursors"),
    };
    ServiceBusSink::new(config, Arc::clone(stats)).expect("a valid config")
}

#[test]
fn every_record_arrives_with_its_ids_in_player_order_across_a_broker_restart() {
    let dir = TempDir::new("bus-servicebus-restart");
    let mut broker = Broker::start();
    let mut log = TestLog::open(&dir.path().join("log"), 2000, Durability::Fsync, u64::MAX);
    log.append(1, 3000);
    let stats = Arc::new(SinkStats::default());
    let driver = spawn(
        sink(&broker, KEY, dir.path(), &stats),
        &log,
        &stats,
        BATCH_ITEMS_MAX,
    );
    let plan = OutagePlan {
        sink: "servicebus",
        records_before: 3000,
        records_during: 1000,
        notice_within: Duration::from_secs(60),
    };
    plan.run(&mut log, dir.path(), &stats, &mut broker, || {
        assert_eq!(stats.state(), SinkState::Degraded);
    });
    drop(driver.stop().expect("the driver ran"));

    let pairs = broker.checked_messages("1");
    // Messages stored but whose disposition the kill swallowed come again: at least
    // once (Service Bus's duplicate detection drops them by message-id; this broker
    // keeps them, and the check counts distinct ids).
    let received = check_delivery(&pairs, 4000, true);
    eprintln!(
        "servicebus: {received} messages stored for 4000 records ({} sent again after the kill), {} tokens put",
        received - 4000,
        broker.tokens_accepted()
    );
    assert!(broker.tokens_accepted() >= 2, "a token per connection");
    assert_eq!(broker.tokens_refused(), 0);
}

#[test]
fn a_wrong_key_is_refused_and_the_sink_degrades() {
    let dir = TempDir::new("bus-servicebus-wrong-key");
    let broker = Broker::start();
    let mut log = TestLog::open(&dir.path().join("log"), 2000, Durability::Fsync, u64::MAX);
    log.append(1, 20);

    let wrong = sink(&broker, WRONG_KEY, dir.path(), &Arc::default());
    let mut runner = SinkRunner::new(wrong, vec![log.shard_log(1)], 100);
    let error = runner.step().expect_err("the token is refused");
    let chain = format!("{error} / {:?}", std::error::Error::source(&error));
    assert!(chain.contains("refused the token"), "{chain}");
    assert!(chain.contains("401"), "{chain}");

    let stats = Arc::new(SinkStats::default());
    let wrong = sink(&broker, WRONG_KEY, dir.path(), &stats);
    let driver = spawn(wrong, &log, &stats, BATCH_ITEMS_MAX);
    wait_for("the sink to fail", Duration::from_secs(30), || {
        stats.errors.load(Ordering::Relaxed) >= 2
    });
    assert_eq!(stats.state(), SinkState::Degraded);
    drop(driver.stop().expect("the driver ran"));
    assert!(broker.messages().is_empty(), "nothing reached the queue");
    assert_eq!(stats.writes.load(Ordering::Relaxed), 0);
    assert_eq!(
        stored_cursor(dir.path(), "servicebus"),
        Cursor::NEW,
        "the cursor did not move"
    );
    assert!(broker.tokens_refused() >= 2);
    assert_eq!(broker.tokens_accepted(), 0);
}
