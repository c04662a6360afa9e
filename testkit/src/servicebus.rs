//! A small Azure Service Bus stand-in over a real AMQP 1.0 wire (fe2o3-amqp's acceptor
//! side, on 127.0.0.1 and a free port), because no Service Bus (nor its emulator, which
//! needs Docker) runs here and RabbitMQ does not serve the `$cbs` node. The broker does
//! what Service Bus does on the path a sender uses: SASL ANONYMOUS; a `$cbs` node
//! answering `put-token` with 202, or 401 when the SAS token's signature (HMAC-SHA256
//! with the key, checked here independently of the sink's code), key name, resource or
//! expiry is wrong; a queue node that takes a message only from a connection whose token
//! covers it, stores it, and only then settles it `accepted`. Killing the broker ends its
//! runtime (every socket closes at once, unsettled messages get no disposition); the
//! store survives, like a durable queue's.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
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
use serde_json::Value as Json;
use sha2::Sha256;
use tokio::sync::mpsc;

/// How long a (re)started broker has to listen.
const BROKER_START_TIMEOUT_S: u64 = 10;
/// The `$cbs` responses queued per session before the request side waits.
const CBS_RESPONSES_MAX: usize = 16;

/// The shared access key's name the broker accepts tokens of.
pub const KEY_NAME: &str = "RootManageSharedAccessKey";
/// The key (base64 text, used as is as the HMAC key, as Service Bus does).
pub const KEY: &str = "dGVzdC1rZXktbm90LWEtc2VjcmV0LXRlc3Qta2V5IQ==";
/// A key that is not [`KEY`]: tokens signed with it are refused.
pub const WRONG_KEY: &str = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXkhIQ==";
/// The one queue the broker has; a sender to any other address is rejected.
pub const QUEUE: &str = "liveops-events";

/// A message the broker took: properties as received and the body.
#[derive(Debug, Clone)]
pub struct Stored {
    /// `message-id` (a string one; Service Bus's duplicate detection key).
    pub message_id: Option<String>,
    /// `group-id` (Service Bus's SessionId).
    pub group_id: Option<String>,
    /// `content-type`.
    pub content_type: Option<String>,
    /// `subject` (Service Bus's Label).
    pub subject: Option<String>,
    /// The body's data sections, parsed as one JSON value.
    pub body: Json,
}

/// What the broker keeps across restarts.
#[derive(Default)]
struct Store {
    /// Every message taken, in the order taken (duplicates too).
    messages: Mutex<Vec<Stored>>,
    /// put-token requests answered 202 / 401.
    tokens_accepted: Mutex<u32>,
    /// (See `tokens_accepted`.)
    tokens_refused: Mutex<u32>,
}

/// The broker: a thread running its runtime until told to stop (then every task and
/// socket of it ends).
pub struct Broker {
    /// Where it listens (also after a restart).
    pub port: u16,
    /// What survives a kill.
    store: Arc<Store>,
    /// Tells the running broker to stop; `None` while killed.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The broker's thread, joined on kill.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Broker {
    /// Starts a broker on a free port and waits until it listens. The port is taken
    /// by binding to port 0 and kept bound: picking a free port and binding it later
    /// races the other tests' servers for it.
    pub fn start() -> Broker {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let mut broker = Broker {
            port: listener.local_addr().expect("bound").port(),
            store: Arc::default(),
            stop: None,
            thread: None,
        };
        broker.listen(Some(listener));
        broker
    }

    /// Starts it again on the same port, with the messages it stored, and waits until
    /// it listens.
    pub fn restart(&mut self) {
        self.listen(None);
    }

    /// Serves on `bound`, or binds the broker's port again.
    fn listen(&mut self, bound: Option<std::net::TcpListener>) {
        assert!(self.thread.is_none(), "running");
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let store = Arc::clone(&self.store);
        let port = self.port;
        self.thread = Some(std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let listener = match bound {
                    Some(bound) => {
                        bound
                            .set_nonblocking(true)
                            .expect("a non-blocking listener");
                        tokio::net::TcpListener::from_std(bound).expect("a tokio listener")
                    }
                    None => tokio::net::TcpListener::bind(("127.0.0.1", port))
                        .await
                        .unwrap_or_else(|e| panic!("the broker binds 127.0.0.1:{port}: {e}")),
                };
                let _ = ready_tx.send(());
                tokio::select! {
                    _ = stopped => {}
                    _ = serve(listener, store) => {}
                }
            });
            // Dropping the runtime here aborts every connection task: a crash.
        }));
        ready_rx
            .recv_timeout(Duration::from_secs(BROKER_START_TIMEOUT_S))
            .expect("broker listens");
        self.stop = Some(stop);
    }

    /// Stops it at once: every connection closes, unsettled messages get no
    /// disposition (a crash); what it stored stays.
    pub fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Every message it took so far, in the order taken.
    pub fn messages(&self) -> Vec<Stored> {
        self.store.messages.lock().expect("not poisoned").clone()
    }

    /// Every message it took, as `(message-id, body)` in the order taken, after checking
    /// what a sink of season `season` sets on each: `message-id` = the body's `id`,
    /// `group-id` (SessionId) = its `playerId`, JSON content, subject
    /// `liveops.<season>.*`.
    pub fn checked_messages(&self, season: &str) -> Vec<(String, Json)> {
        let subject_prefix = format!("liveops.{season}.");
        self.messages()
            .into_iter()
            .map(|message| {
                let id = message.message_id.expect("message-id set");
                assert_eq!(
                    message.body["id"].as_str(),
                    Some(id.as_str()),
                    "message-id = id"
                );
                assert_eq!(
                    message.group_id.as_deref(),
                    message.body["playerId"].as_str(),
                    "group-id (SessionId) = playerId"
                );
                assert_eq!(message.content_type.as_deref(), Some("application/json"));
                assert!(
                    message
                        .subject
                        .as_deref()
                        .is_some_and(|s| s.starts_with(&subject_prefix)),
                    "{:?}",
                    message.subject
                );
                (id, message.body)
            })
            .collect()
    }

    /// How many `put-token` requests it answered 202.
    pub fn tokens_accepted(&self) -> u32 {
        *self.store.tokens_accepted.lock().expect("not poisoned")
    }

    /// How many `put-token` requests it answered 401.
    pub fn tokens_refused(&self) -> u32 {
        *self.store.tokens_refused.lock().expect("not poisoned")
    }

    /// A connection string to it for [`KEY_NAME`] with `key` (the right one is [`KEY`]).
    pub fn connection_string(&self, key: &str) -> String {
        format!(
            "Endpoint=amqp://127.0.0.1:{}/;SharedAccessKeyName={KEY_NAME};SharedAccessKey={key};UseDevelopmentEmulator=true",
            self.port
        )
    }
}

impl Drop for Broker {
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
    let (responses_tx, responses_rx) =
        mpsc::channel::<Message<AmqpValue<Value>>>(CBS_RESPONSES_MAX);
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
            authorized
                .lock()
                .expect("not poisoned")
                .insert(name.to_lowercase());
            *store.tokens_accepted.lock().expect("not poisoned") += 1;
        } else {
            *store.tokens_refused.lock().expect("not poisoned") += 1;
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
        .expect("after 1970")
        .as_secs();
    let Ok(expiry) = se.parse::<u64>() else {
        return false;
    };
    let mut mac =
        Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).expect("HMAC takes any key length");
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
        if address != QUEUE || !authorized.lock().expect("not poisoned").contains(&audience) {
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
        store.messages.lock().expect("not poisoned").push(Stored {
            message_id: text(properties.message_id),
            group_id: properties.group_id,
            content_type: properties.content_type.map(|s| s.0),
            subject: properties.subject,
            body,
        });
        let _ = receiver.accept(&delivery).await;
    }
}
