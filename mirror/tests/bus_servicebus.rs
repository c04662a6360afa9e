//! The Service Bus sink over a real AMQP 1.0 wire, against a small broker this test
//! runs itself (fe2o3-amqp's acceptor side, on 127.0.0.1 and a free port), because no
//! Service Bus (nor its emulator, which needs Docker) runs here and RabbitMQ does not
//! serve the `$cbs` node. The broker does what Service Bus does on the path the sink
//! uses: SASL ANONYMOUS; a `$cbs` node answering `put-token` with 202, or 401 when the
//! SAS token's signature (HMAC-SHA256 with the key, checked here independently of the
//! sink's code), key name, resource or expiry is wrong; a queue node that takes a
//! message only from a connection whose token covers it, stores it, and only then
//! settles it `accepted`. Killing the broker ends its runtime (every socket closes at
//! once, unsettled messages get no disposition); the store survives, like a durable
//! queue's.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::bus::{check_delivery, free_port, wait_for};
use common::{TempDir, TestLog};
use fe2o3_amqp::acceptor::{
    ConnectionAcceptor, LinkAcceptor, LinkEndpoint, ListenerSessionHandle, SaslAnonymousMechanism,
    SessionAcceptor,
};
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message, MessageId, Properties,
};
use fe2o3_amqp::types::primitives::{SimpleValue, Value};
use fe2o3_amqp::{Receiver, Sender};
use hmac::{Hmac, Mac};
use liveops_engine::window::WindowKind;
use liveops_mirror::bus::cursor_file::CursorFile;
use liveops_mirror::bus::servicebus::{ServiceBusConfig, ServiceBusSink};
use liveops_mirror::{Cursor, DriverConfig, SinkDriver, SinkRunner, SinkState, SinkStats};
use liveops_storage::Durability;
use serde_json::Value as Json;
use sha2::Sha256;
use tokio::sync::mpsc;

const KEY_NAME: &str = "RootManageSharedAccessKey";
const KEY: &str = "dGVzdC1rZXktbm90LWEtc2VjcmV0LXRlc3Qta2V5IQ==";
const QUEUE: &str = "liveops-events";

/// A message the broker took: properties as received and the body.
#[derive(Debug, Clone)]
struct Stored {
    message_id: Option<String>,
    group_id: Option<String>,
    content_type: Option<String>,
    subject: Option<String>,
    body: Json,
}

/// What the broker keeps across restarts.
#[derive(Default)]
struct Store {
    messages: Mutex<Vec<Stored>>,
    /// put-token requests answered 202 / 401.
    tokens_accepted: Mutex<u32>,
    tokens_refused: Mutex<u32>,
}

/// The broker: a thread running its runtime until told to stop (then every task and
/// socket of it ends).
struct TestBroker {
    port: u16,
    store: Arc<Store>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestBroker {
    fn start() -> TestBroker {
        let mut broker = TestBroker {
            port: free_port(),
            store: Arc::default(),
            stop: None,
            thread: None,
        };
        broker.restart();
        broker
    }

    fn restart(&mut self) {
        assert!(self.thread.is_none(), "running");
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let store = Arc::clone(&self.store);
        let port = self.port;
        self.thread = Some(std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .unwrap();
                ready_tx.send(()).unwrap();
                tokio::select! {
                    _ = stopped => {}
                    _ = serve(listener, store) => {}
                }
            });
            // Dropping the runtime here aborts every connection task: a crash.
        }));
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("broker listens");
        self.stop = Some(stop);
    }

    fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    fn messages(&self) -> Vec<Stored> {
        self.store.messages.lock().unwrap().clone()
    }

    fn connection_string(&self, key: &str) -> String {
        format!(
            "Endpoint=amqp://127.0.0.1:{}/;SharedAccessKeyName={KEY_NAME};SharedAccessKey={key};UseDevelopmentEmulator=true",
            self.port
        )
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn serve(listener: tokio::net::TcpListener, store: Arc<Store>) {
    let acceptor = Arc::new(
        ConnectionAcceptor::builder()
            .container_id("test-servicebus")
            .sasl_acceptor(SaslAnonymousMechanism::new())
            .build(),
    );
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = Arc::clone(&acceptor);
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let Ok(mut connection) = acceptor.accept(stream).await else {
                return;
            };
            // Audiences this connection holds a valid token for.
            let authorized: Arc<Mutex<HashSet<String>>> = Arc::default();
            while let Ok(session) = SessionAcceptor::new().accept(&mut connection).await {
                tokio::spawn(serve_session(
                    session,
                    Arc::clone(&store),
                    Arc::clone(&authorized),
                ));
            }
        });
    }
}

async fn serve_session(
    mut session: ListenerSessionHandle,
    store: Arc<Store>,
    authorized: Arc<Mutex<HashSet<String>>>,
) {
    let (responses_tx, responses_rx) = mpsc::channel::<Message<AmqpValue<Value>>>(16);
    let mut responses_rx = Some(responses_rx);
    let acceptor = LinkAcceptor::new();
    while let Ok(link) = acceptor.accept(&mut session).await {
        match link {
            LinkEndpoint::Receiver(receiver) => {
                let address = receiver
                    .target()
                    .as_ref()
                    .and_then(|t| t.address.clone())
                    .unwrap_or_default();
                if address == "$cbs" {
                    tokio::spawn(cbs_requests(
                        receiver,
                        responses_tx.clone(),
                        Arc::clone(&store),
                        Arc::clone(&authorized),
                    ));
                } else {
                    tokio::spawn(queue(
                        receiver,
                        address,
                        Arc::clone(&store),
                        Arc::clone(&authorized),
                    ));
                }
            }
            LinkEndpoint::Sender(sender) => {
                if let Some(rx) = responses_rx.take() {
                    tokio::spawn(cbs_responses(sender, rx));
                }
            }
        }
    }
}

/// The `$cbs` node's request side: checks each put-token and queues its response.
async fn cbs_requests(
    mut receiver: Receiver,
    responses: mpsc::Sender<Message<AmqpValue<Value>>>,
    store: Arc<Store>,
    authorized: Arc<Mutex<HashSet<String>>>,
) {
    while let Ok(delivery) = receiver.recv::<Value>().await {
        let _ = receiver.accept(&delivery).await;
        let message = delivery.message();
        let property = |name: &str| {
            message
                .application_properties
                .as_ref()
                .and_then(|p| p.get(name))
                .and_then(|v| match v {
                    SimpleValue::String(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default()
        };
        let name = property("name");
        let token = match delivery.body() {
            Value::String(token) => token.clone(),
            _ => String::new(),
        };
        let valid = property("operation") == "put-token"
            && property("type") == "servicebus.windows.net:sastoken"
            && token_is_valid(&token, &name);
        if valid {
            authorized.lock().unwrap().insert(name.to_lowercase());
            *store.tokens_accepted.lock().unwrap() += 1;
        } else {
            *store.tokens_refused.lock().unwrap() += 1;
        }
        let (code, description) = if valid {
            (202, "Accepted")
        } else {
            (401, "Unauthorized: bad SAS token")
        };
        let request_id = message
            .properties
            .as_ref()
            .and_then(|p| p.message_id.clone());
        let response = Message::builder()
            .properties(Properties {
                correlation_id: request_id,
                ..Default::default()
            })
            .application_properties(
                ApplicationProperties::builder()
                    .insert("status-code", SimpleValue::Int(code))
                    .insert("status-description", description.to_string())
                    .build(),
            )
            .value(Value::Null)
            .build();
        if responses.send(response).await.is_err() {
            return;
        }
    }
}

/// The `$cbs` node's response side (the client's `cbs-client-node`).
async fn cbs_responses(
    mut sender: Sender,
    mut responses: mpsc::Receiver<Message<AmqpValue<Value>>>,
) {
    while let Some(response) = responses.recv().await {
        if sender.send(response).await.is_err() {
            return;
        }
    }
}

/// Checks a SAS token as Service Bus does: `sr` is the put-token name (lower-cased,
/// URI-encoded), `skn` the key's name, `se` in the future, and `sig` the base64
/// HMAC-SHA256, keyed with the key's text, of `"<sr as sent>\n<se>"`.
fn token_is_valid(token: &str, name: &str) -> bool {
    let Some(fields) = token.strip_prefix("SharedAccessSignature ") else {
        return false;
    };
    let mut sr = None;
    let mut sig = None;
    let mut se = None;
    let mut skn = None;
    for field in fields.split('&') {
        match field.split_once('=') {
            Some(("sr", v)) => sr = Some(v),
            Some(("sig", v)) => sig = Some(v),
            Some(("se", v)) => se = Some(v),
            Some(("skn", v)) => skn = Some(v),
            _ => return false,
        }
    }
    let (Some(sr), Some(sig), Some(se), Some(skn)) = (sr, sig, se, skn) else {
        return false;
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let Ok(expiry) = se.parse::<u64>() else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(format!("{sr}\n{se}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    decode(sr) == name.to_lowercase()
        && decode(skn) == KEY_NAME
        && expiry > now_s
        && decode(sig) == expected
}

/// The queue node: stores what a token-holding connection sends, then accepts it.
async fn queue(
    mut receiver: Receiver,
    address: String,
    store: Arc<Store>,
    authorized: Arc<Mutex<HashSet<String>>>,
) {
    let audience = format!("sb://127.0.0.1/{address}").to_lowercase();
    while let Ok(delivery) = receiver.recv::<Body<Value>>().await {
        if address != QUEUE || !authorized.lock().unwrap().contains(&audience) {
            let _ = receiver.reject(&delivery, None).await;
            continue;
        }
        let message = delivery.message();
        let properties = message.properties.clone().unwrap_or_default();
        let body = match &message.body {
            Body::Data(batch) => batch.iter().flat_map(|d| d.0.to_vec()).collect::<Vec<u8>>(),
            _ => Vec::new(),
        };
        let Ok(body) = serde_json::from_slice(&body) else {
            let _ = receiver.reject(&delivery, None).await;
            continue;
        };
        let text = |id: Option<MessageId>| match id {
            Some(MessageId::String(s)) => Some(s),
            _ => None,
        };
        store.messages.lock().unwrap().push(Stored {
            message_id: text(properties.message_id),
            group_id: properties.group_id,
            content_type: properties.content_type.map(|s| s.0),
            subject: properties.subject,
            body,
        });
        let _ = receiver.accept(&delivery).await;
    }
}

fn config(broker: &TestBroker, key: &str, dir: &Path) -> ServiceBusConfig {
    ServiceBusConfig {
        connection_string: broker.connection_string(key),
        queue: QUEUE.into(),
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

fn cursor(dir: &Path) -> Cursor {
    CursorFile::open(&dir.join("cursors"), "servicebus")
        .unwrap()
        .get(3)
}

#[test]
fn every_record_arrives_with_its_ids_in_player_order_across_a_broker_restart() {
    let dir = TempDir::new("bus-servicebus-restart");
    let mut broker = TestBroker::start();
    let mut log = TestLog::open(&dir.path().join("log"), 2000, Durability::Fsync, u64::MAX);
    log.append(1, 3000);
    let stats = Arc::new(SinkStats::default());
    let sink = ServiceBusSink::new(config(&broker, KEY, dir.path()), Arc::clone(&stats)).unwrap();
    let driver = SinkDriver::spawn_with_stats(
        sink,
        vec![log.shard_log(1)],
        driver_config(),
        Arc::clone(&stats),
    )
    .unwrap();
    let writes = || stats.writes.load(Ordering::Relaxed);
    wait_for("a third forwarded", Duration::from_secs(60), || {
        writes() >= 1000
    });
    broker.kill();
    log.append(3001, 1000);
    wait_for("the sink to notice", Duration::from_secs(60), || {
        stats.errors.load(Ordering::Relaxed) > 0
    });
    assert_eq!(stats.state(), SinkState::Degraded);
    std::thread::sleep(Duration::from_millis(300));
    broker.restart();
    wait_for("everything forwarded", Duration::from_secs(120), || {
        cursor(dir.path())
            == Cursor {
                generation: 1,
                lsn: 4000,
            }
    });
    drop(driver.stop().expect("the driver ran"));
    assert!(stats.reconnects.load(Ordering::Relaxed) >= 1, "reconnected");

    let stored = broker.messages();
    for message in &stored {
        let id = message.message_id.as_deref().expect("message-id set");
        assert_eq!(message.body["id"].as_str(), Some(id), "message-id = id");
        assert_eq!(
            message.group_id.as_deref(),
            message.body["playerId"].as_str(),
            "group-id (SessionId) = playerId"
        );
        assert_eq!(message.content_type.as_deref(), Some("application/json"));
        assert!(message
            .subject
            .as_deref()
            .is_some_and(|s| s.starts_with("liveops.1.")));
    }
    let pairs: Vec<(String, Json)> = stored
        .iter()
        .map(|m| (m.message_id.clone().unwrap(), m.body.clone()))
        .collect();
    // Messages stored but whose disposition the kill swallowed come again: at least
    // once (Service Bus's duplicate detection drops them by message-id; this broker
    // keeps them, and the check counts distinct ids).
    let received = check_delivery(&pairs, 4000, true);
    eprintln!(
        "servicebus: {received} messages stored for 4000 records ({} sent again after the kill), {} tokens put",
        received - 4000,
        broker.store.tokens_accepted.lock().unwrap()
    );
    assert!(
        *broker.store.tokens_accepted.lock().unwrap() >= 2,
        "a token per connection"
    );
    assert_eq!(*broker.store.tokens_refused.lock().unwrap(), 0);
}

#[test]
fn a_wrong_key_is_refused_and_the_sink_degrades() {
    let dir = TempDir::new("bus-servicebus-wrong-key");
    let broker = TestBroker::start();
    let mut log = TestLog::open(&dir.path().join("log"), 2000, Durability::Fsync, u64::MAX);
    log.append(1, 20);
    let wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXkhIQ==";

    let sink = ServiceBusSink::new(config(&broker, wrong, dir.path()), Arc::default()).unwrap();
    let mut runner = SinkRunner::new(sink, vec![log.shard_log(1)], 100);
    let error = runner.step().expect_err("the token is refused");
    let chain = format!("{error} / {:?}", std::error::Error::source(&error));
    assert!(chain.contains("refused the token"), "{chain}");
    assert!(chain.contains("401"), "{chain}");

    let stats = Arc::new(SinkStats::default());
    let sink = ServiceBusSink::new(config(&broker, wrong, dir.path()), Arc::clone(&stats)).unwrap();
    let driver = SinkDriver::spawn_with_stats(
        sink,
        vec![log.shard_log(1)],
        driver_config(),
        Arc::clone(&stats),
    )
    .unwrap();
    wait_for("the sink to fail", Duration::from_secs(30), || {
        stats.errors.load(Ordering::Relaxed) >= 2
    });
    assert_eq!(stats.state(), SinkState::Degraded);
    drop(driver.stop().expect("the driver ran"));
    assert!(broker.messages().is_empty(), "nothing reached the queue");
    assert_eq!(stats.writes.load(Ordering::Relaxed), 0);
    assert_eq!(cursor(dir.path()), Cursor::NEW, "the cursor did not move");
    assert!(*broker.store.tokens_refused.lock().unwrap() >= 2);
    assert_eq!(*broker.store.tokens_accepted.lock().unwrap(), 0);
}
