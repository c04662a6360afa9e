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
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, QueueAttributeName};
use common::bus::{check_delivery, free_port, require_tool, wait_for, Broker, Proxy};
use common::{TempDir, TestLog};
use liveops_engine::window::WindowKind;
use liveops_mirror::bus::cursor_file::CursorFile;
use liveops_mirror::bus::sqs::{SqsConfig, SqsSink};
use liveops_mirror::{Cursor, DriverConfig, SinkDriver, SinkStats};
use liveops_storage::Durability;
use serde_json::Value;

/// moto_server with a FIFO queue, and a client of the test's own.
struct Moto {
    broker: Broker,
    runtime: tokio::runtime::Runtime,
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

fn moto() -> Option<Moto> {
    if !require_tool("moto_server", "--help", "pip install \"moto[server]\"") {
        return None;
    }
    // The sink reads region and credentials the AWS way; moto takes any.
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let port = free_port();
    let args = ["-H", "127.0.0.1", "-p", &port.to_string()].map(String::from);
    let broker = Broker::start("moto_server", &args, port);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = runtime.block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .load(),
    );
    let client = aws_sdk_sqs::Client::new(&config);
    let queue_url = runtime
        .block_on(
            client
                .create_queue()
                .queue_name("liveops-test.fifo")
                .attributes(QueueAttributeName::FifoQueue, "true")
                .send(),
        )
        .unwrap()
        .queue_url
        .unwrap();
    Some(Moto {
        broker,
        runtime,
        client,
        queue_url,
    })
}

impl Moto {
    /// Receives (and deletes) everything in the queue, in the order received:
    /// `(MessageDeduplicationId, body)`.
    fn drain(&self) -> Vec<(String, Value)> {
        let mut messages = Vec::new();
        self.runtime.block_on(async {
            loop {
                let received = self
                    .client
                    .receive_message()
                    .queue_url(&self.queue_url)
                    .max_number_of_messages(10)
                    .message_system_attribute_names(
                        aws_sdk_sqs::types::MessageSystemAttributeName::MessageDeduplicationId,
                    )
                    .send()
                    .await
                    .unwrap();
                let batch = received.messages.unwrap_or_default();
                if batch.is_empty() {
                    return;
                }
                let mut deletes = Vec::new();
                for (i, message) in batch.iter().enumerate() {
                    let id = message
                        .attributes()
                        .and_then(|a| {
                            a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageDeduplicationId)
                        })
                        .expect("FIFO messages carry their deduplication id")
                        .clone();
                    let body = serde_json::from_str(message.body().unwrap()).unwrap();
                    messages.push((id, body));
                    deletes.push(
                        DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(message.receipt_handle().unwrap())
                            .build()
                            .unwrap(),
                    );
                }
                self.client
                    .delete_message_batch()
                    .queue_url(&self.queue_url)
                    .set_entries(Some(deletes))
                    .send()
                    .await
                    .unwrap();
            }
        });
        messages
    }
}

fn config(moto: &Moto, endpoint_port: u16, dir: &Path) -> SqsConfig {
    SqsConfig {
        queue_url: moto.queue_url.clone(),
        endpoint: Some(format!("http://127.0.0.1:{endpoint_port}")),
        season: "1".into(),
        windows: WindowKind::ALL.to_vec(),
        cursor_dir: dir.join("cursors"),
    }
}

fn driver_config() -> DriverConfig {
    DriverConfig {
        batch_items_max: 500,
        idle_poll: Duration::from_millis(1),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(300),
    }
}

fn until_cursor(dir: &Path, lsn: u64) -> impl FnMut() -> bool + '_ {
    move || {
        CursorFile::open(&dir.join("cursors"), "sqs")
            .unwrap()
            .get(3)
            == Cursor { generation: 1, lsn }
    }
}

#[test]
fn every_record_arrives_once_and_in_player_order_across_an_outage() {
    let dir = TempDir::new("bus-sqs-outage");
    let Some(moto) = moto() else {
        return;
    };
    let proxy = Proxy::start(moto.broker.port);
    let mut log = TestLog::open(&dir.path().join("log"), 2000, Durability::Fsync, u64::MAX);
    log.append(1, 500);
    let stats = Arc::new(SinkStats::default());
    let sink = SqsSink::new(config(&moto, proxy.port, dir.path()), Arc::clone(&stats)).unwrap();
    let driver = SinkDriver::spawn_with_stats(
        sink,
        vec![log.shard_log(1)],
        driver_config(),
        Arc::clone(&stats),
    )
    .unwrap();
    let writes = || stats.writes.load(Ordering::Relaxed);
    wait_for("a third forwarded", Duration::from_secs(60), || {
        writes() >= 150
    });
    proxy.cut();
    log.append(501, 200);
    wait_for("the sink to notice", Duration::from_secs(60), || {
        stats.errors.load(Ordering::Relaxed) > 0
    });
    std::thread::sleep(Duration::from_millis(300));
    proxy.restore();
    wait_for(
        "everything forwarded",
        Duration::from_secs(120),
        until_cursor(dir.path(), 700),
    );
    assert!(stats.reconnects.load(Ordering::Relaxed) >= 1, "reconnected");
    drop(driver.stop().expect("the driver ran"));
    let messages = moto.drain();
    assert_eq!(check_delivery(&messages, 700, false), 700);
    eprintln!(
        "sqs: {} messages sent again after the outage (dropped as duplicates)",
        writes() - 700
    );
}

#[test]
fn a_restarted_sink_sends_only_its_unacknowledged_tail() {
    let dir = TempDir::new("bus-sqs-restart");
    let Some(moto) = moto() else {
        return;
    };
    let mut log = TestLog::open(&dir.path().join("log"), 2000, Durability::Fsync, u64::MAX);
    log.append(1, 500);
    let stats = Arc::new(SinkStats::default());
    let port = moto.broker.port;
    let sink = SqsSink::new(config(&moto, port, dir.path()), Arc::clone(&stats)).unwrap();
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
        until_cursor(dir.path(), 500),
    );
    let elapsed = started.elapsed();
    eprintln!(
        "sqs: 500 messages in {elapsed:?}: {:.0} messages/s",
        500.0 / elapsed.as_secs_f64()
    );
    drop(driver.stop().expect("the driver ran"));
    assert_eq!(stats.writes.load(Ordering::Relaxed), 500, "each sent once");

    // A crash after the queue accepted the last 150 but before their cursor was
    // stored: the file still says 350.
    CursorFile::open(&dir.path().join("cursors"), "sqs")
        .unwrap()
        .store(
            3,
            Cursor {
                generation: 1,
                lsn: 350,
            },
        )
        .unwrap();
    log.append(501, 50);
    let restarted = Arc::new(SinkStats::default());
    let sink = SqsSink::new(config(&moto, port, dir.path()), Arc::clone(&restarted)).unwrap();
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
        until_cursor(dir.path(), 550),
    );
    drop(driver.stop().expect("the driver ran"));
    assert_eq!(
        restarted.writes.load(Ordering::Relaxed),
        200,
        "the 150 unacknowledged again, then the 50 new"
    );
    let messages = moto.drain();
    assert_eq!(
        check_delivery(&messages, 550, false),
        550,
        "the queue dropped the 150 as duplicates"
    );
}
