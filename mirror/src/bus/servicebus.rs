//! The Azure Service Bus sink: [`ServiceBusSink`], into a queue over AMQP 1.0.
//!
//! There is no official Rust SDK, so this speaks AMQP 1.0 itself (`fe2o3-amqp`, TLS by
//! rustls) the way Microsoft's SDKs do: SASL ANONYMOUS, then a SAS token put on the
//! `$cbs` node (claims-based security: `put-token`, type
//! `servicebus.windows.net:sastoken`, name = the queue's audience), then a sender link
//! to the queue. The token lives [`TOKEN_TTL`] and is put again when less than
//! [`TOKEN_RENEW_BEFORE`] is left (checked before every batch and between passes).
//!
//! Each envelope is one message: body a `data` section (the JSON), `message-id` = the
//! record id (Service Bus's duplicate detection, when the queue has it on),
//! `group-id` = the player id (Service Bus's `SessionId`; `_engine` for window closes),
//! `subject` = the NATS-style subject, `content-type` `application/json`. Messages are
//! sent unsettled and their dispositions awaited in a window of up to
//! [`IN_FLIGHT_MAX`], never two of one player's (see [`crate::bus`]); any outcome but
//! `accepted` fails the batch. The cursor is stored once every message of a batch was
//! accepted.

mod connection_string;

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::delivery::DeliveryFut;
use fe2o3_amqp::link::SendError;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::{Message, Outcome, Properties};
use fe2o3_amqp::types::primitives::{Binary, Timestamp};
use fe2o3_amqp::{Connection as AmqpConnection, Sendable, Sender, Session};
use fe2o3_amqp_cbs::client::CbsClient;
use fe2o3_amqp_cbs::token::CbsToken;
use liveops_engine::window::WindowKind;

use super::{BusMessage, Forwarder};
use crate::feed::{Cursor, FeedItem};
use crate::sink::{Sink, SinkError, SinkStats};
pub use connection_string::{sas_token, ConnectionStringError, ServiceBusTarget};

/// Messages sent and not yet settled by the broker, at most (the link's credit bounds
/// it too): bounds memory and what a failure sends again.
pub const IN_FLIGHT_MAX: usize = 256;
/// Longest wait for TCP, TLS, SASL, `open`, `begin`, the CBS exchange and the attach.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a message's disposition (or for link credit to send it).
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Lifetime of each SAS token (Microsoft's SDKs use an hour too).
pub const TOKEN_TTL: Duration = Duration::from_secs(3600);
/// A token is put again when less than this is left of it.
pub const TOKEN_RENEW_BEFORE: Duration = Duration::from_secs(600);
/// The CBS token type of a SAS token.
const SAS_TOKEN_TYPE: &str = "servicebus.windows.net:sastoken";

/// Where and what the Service Bus sink sends.
#[derive(Clone)]
pub struct ServiceBusConfig {
    /// `SERVICEBUS_CONNECTION_STRING`, as the Azure portal gives it (see
    /// [`ServiceBusTarget::parse`]); holds the key, so never printed.
    pub connection_string: String,
    /// `SERVICEBUS_QUEUE` (may be empty when the string has an `EntityPath`).
    pub queue: String,
    /// The engine's `SEASON`.
    pub season: String,
    /// The configured windows: an event envelope names their periods.
    pub windows: Vec<WindowKind>,
    /// Where the sink's cursor file lives (`DATA_DIR/mirror-cursors/`).
    pub cursor_dir: PathBuf,
}

impl std::fmt::Debug for ServiceBusConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBusConfig")
            .field("connection_string", &"<redacted>")
            .field("queue", &self.queue)
            .field("season", &self.season)
            .field("windows", &self.windows)
            .field("cursor_dir", &self.cursor_dir)
            .finish()
    }
}

/// An open connection with its links, and its own runtime. Fields drop in order: the
/// handles first, then the runtime, which ends the client's tasks (nothing they still
/// held is sent later, behind what the driver sends again).
struct Connection {
    sender: Sender,
    cbs: CbsClient,
    _session: SessionHandle<()>,
    _connection: ConnectionHandle<()>,
    /// When the token last put expires.
    token_expiry: SystemTime,
    runtime: tokio::runtime::Runtime,
}

/// Forwards the feed to an Azure Service Bus queue.
pub struct ServiceBusSink {
    target: ServiceBusTarget,
    forwarder: Forwarder,
    /// `None` until the first apply, and again after any failure.
    connection: Option<Connection>,
    /// Whether a connection was opened before: later ones count as reconnects.
    connected_once: bool,
    /// Names links uniquely within this process's connections.
    links_opened: u64,
    stats: Arc<SinkStats>,
}

impl std::fmt::Debug for ServiceBusSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBusSink")
            .field("target", &self.target)
            .field("connected", &self.connection.is_some())
            .finish_non_exhaustive()
    }
}

impl ServiceBusSink {
    /// A sink for `config`, counting into `stats`. Parses and checks the connection
    /// string and reads the cursor file; does not connect (the first apply does).
    pub fn new(
        config: ServiceBusConfig,
        stats: Arc<SinkStats>,
    ) -> Result<ServiceBusSink, SinkError> {
        let target =
            ServiceBusTarget::parse(&config.connection_string, &config.queue).map_err(|e| {
                SinkError::with_source("servicebus sink: SERVICEBUS_CONNECTION_STRING", e)
            })?;
        let forwarder = Forwarder::new(
            "servicebus",
            &config.season,
            &config.windows,
            &config.cursor_dir,
            Arc::clone(&stats),
        )?;
        Ok(ServiceBusSink {
            target,
            forwarder,
            connection: None,
            connected_once: false,
            links_opened: 0,
            stats,
        })
    }

    pub fn target(&self) -> &ServiceBusTarget {
        &self.target
    }

    fn connect(&mut self) -> Result<Connection, SinkError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SinkError::with_source("servicebus sink: starting its runtime", e))?;
        if std::mem::replace(&mut self.connected_once, true) {
            self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        self.links_opened += 1;
        let link_name = format!(
            "liveops-mirror-{}-{}",
            std::process::id(),
            self.links_opened
        );
        let target = &self.target;
        let connecting = async {
            let mut connection = open(target).await?;
            let mut session = Session::begin(&mut connection)
                .await
                .map_err(|e| SinkError::with_source("servicebus sink: beginning a session", e))?;
            let mut cbs = CbsClient::attach(&mut session).await.map_err(|e| {
                SinkError::with_source("servicebus sink: attaching to the $cbs node", e)
            })?;
            let token_expiry = put_token(&mut cbs, target).await?;
            let sender = Sender::attach(&mut session, link_name, target.queue.as_str())
                .await
                .map_err(|e| {
                    SinkError::with_source(
                        format!("servicebus sink: attaching to queue {:?}", target.queue),
                        e,
                    )
                })?;
            Ok::<_, SinkError>((connection, session, cbs, token_expiry, sender))
        };
        let (connection, session, cbs, token_expiry, sender) = runtime
            .block_on(async { tokio::time::timeout(CONNECT_TIMEOUT, connecting).await })
            .map_err(|_| {
                SinkError::new(format!(
                    "servicebus sink: connecting to {} took over {CONNECT_TIMEOUT:?}",
                    target.url()
                ))
            })??;
        Ok(Connection {
            sender,
            cbs,
            _session: session,
            _connection: connection,
            token_expiry,
            runtime,
        })
    }

    /// Puts a new token when the current one is about to expire.
    fn renew_token_if_due(&self, connection: &mut Connection) -> Result<(), SinkError> {
        let due = connection
            .token_expiry
            .duration_since(SystemTime::now())
            .map_or(true, |left| left < TOKEN_RENEW_BEFORE);
        if due {
            let Connection { runtime, cbs, .. } = connection;
            connection.token_expiry = runtime.block_on(async {
                tokio::time::timeout(SETTLE_TIMEOUT, put_token(cbs, &self.target))
                    .await
                    .map_err(|_| SinkError::new("servicebus sink: renewing the token timed out"))?
            })?;
        }
        Ok(())
    }

    /// Sends `messages` in order, never two of one group unsettled at once; returns
    /// once every one was accepted.
    fn send(
        &self,
        connection: &mut Connection,
        messages: Vec<BusMessage>,
    ) -> Result<(), SinkError> {
        let Connection {
            runtime, sender, ..
        } = connection;
        runtime.block_on(async {
            let mut in_flight: VecDeque<(String, DeliveryFut<Result<Outcome, SendError>>)> =
                VecDeque::new();
            let mut groups_in_flight: HashSet<String> = HashSet::new();
            for message in messages {
                while in_flight.len() >= IN_FLIGHT_MAX || groups_in_flight.contains(&message.group)
                {
                    let (group, settled) = in_flight.pop_front().expect("something is in flight");
                    await_accepted(settled).await?;
                    self.forwarder.count_writes(1);
                    groups_in_flight.remove(&group);
                }
                let group = message.group.clone();
                let sendable = Sendable::builder()
                    .message(amqp_message(message))
                    .settled(false)
                    .build();
                let settled = tokio::time::timeout(SETTLE_TIMEOUT, sender.send_batchable(sendable))
                    .await
                    .map_err(|_| {
                        SinkError::new(format!(
                            "servicebus sink: no link credit for {SETTLE_TIMEOUT:?}"
                        ))
                    })?
                    .map_err(|e| SinkError::with_source("servicebus sink: sending", e))?;
                groups_in_flight.insert(group.clone());
                in_flight.push_back((group, settled));
            }
            for (_, settled) in in_flight {
                await_accepted(settled).await?;
                self.forwarder.count_writes(1);
            }
            Ok(())
        })
    }
}

/// Opens the AMQP connection (TLS unless the emulator form), SASL ANONYMOUS: the
/// token on `$cbs` is what authenticates.
async fn open(target: &ServiceBusTarget) -> Result<ConnectionHandle<()>, SinkError> {
    let url = target.url();
    let builder = AmqpConnection::builder()
        .container_id(format!("liveops-mirror-{}", std::process::id()))
        .hostname(target.host.as_str())
        .sasl_profile(SaslProfile::Anonymous);
    let opened = if target.tls {
        builder
            .rustls_connector(tls_connector()?)
            .open(url.as_str())
            .await
    } else {
        builder.open(url.as_str()).await
    };
    opened.map_err(|e| SinkError::with_source(format!("servicebus sink: connecting to {url}"), e))
}

/// TLS with the system's CA certificates, ring as the crypto provider (as the other
/// sinks).
fn tls_connector() -> Result<tokio_rustls::TlsConnector, SinkError> {
    let mut roots = rustls::RootCertStore::empty();
    let loaded = rustls_native_certs::load_native_certs();
    for error in &loaded.errors {
        tracing::warn!(sink = "servicebus", "system CA certificates: {error}");
    }
    let (added, _) = roots.add_parsable_certificates(loaded.certs);
    if added == 0 {
        return Err(SinkError::new(
            "servicebus sink: the system has no CA certificates to check the namespace's",
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SinkError::with_source("servicebus sink: TLS setup", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Puts a fresh SAS token for the queue on `$cbs`; returns when it expires.
async fn put_token(
    cbs: &mut CbsClient,
    target: &ServiceBusTarget,
) -> Result<SystemTime, SinkError> {
    let expiry = SystemTime::now() + TOKEN_TTL;
    let expiry_unix_s = expiry
        .duration_since(UNIX_EPOCH)
        .map_err(|e| SinkError::with_source("servicebus sink: the clock is before 1970", e))?
        .as_secs();
    let token = CbsToken::new(
        target.sas_token(expiry_unix_s),
        SAS_TOKEN_TYPE,
        Timestamp::from_milliseconds(expiry_unix_s as i64 * 1000),
    );
    cbs.put_token(target.audience(), token).await.map_err(|e| {
        SinkError::with_source(
            format!(
                "servicebus sink: the $cbs node refused the token for {} (key {:?})",
                target.audience(),
                target.key_name
            ),
            e,
        )
    })?;
    Ok(expiry)
}

/// The AMQP message of `message`.
fn amqp_message(message: BusMessage) -> Message<fe2o3_amqp::types::messaging::Data> {
    let properties = Properties::builder()
        .message_id(message.id)
        .group_id(message.group)
        .subject(message.subject)
        .content_type("application/json")
        .build();
    Message::builder()
        .properties(properties)
        .data(Binary::from(message.body))
        .build()
}

/// Waits for a message's disposition; only `accepted` succeeds.
async fn await_accepted(settled: DeliveryFut<Result<Outcome, SendError>>) -> Result<(), SinkError> {
    let outcome = tokio::time::timeout(SETTLE_TIMEOUT, settled)
        .await
        .map_err(|_| {
            SinkError::new(format!(
                "servicebus sink: no disposition within {SETTLE_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| SinkError::with_source("servicebus sink: waiting for a disposition", e))?;
    match outcome {
        Outcome::Accepted(_) => Ok(()),
        other => Err(SinkError::new(format!(
            "servicebus sink: the queue did not accept a message: {other:?}"
        ))),
    }
}

impl Sink for ServiceBusSink {
    fn name(&self) -> &str {
        "servicebus"
    }

    fn cursor(&mut self, shard: u32) -> Result<Cursor, SinkError> {
        Ok(self.forwarder.cursor(shard))
    }

    fn apply(&mut self, shard: u32, items: &[FeedItem]) -> Result<(), SinkError> {
        let messages = self.forwarder.encode(items);
        if !messages.is_empty() {
            let mut connection = match self.connection.take() {
                Some(connection) => connection,
                None => self.connect()?,
            };
            // On failure the connection is dropped with its runtime (see `Connection`).
            self.renew_token_if_due(&mut connection)?;
            self.send(&mut connection, messages)?;
            self.connection = Some(connection);
        }
        self.forwarder.acknowledged(shard, items)
    }

    fn idle(&mut self) -> Result<(), SinkError> {
        // An idle sink keeps its token fresh: Service Bus detaches links whose token
        // expired.
        if let Some(mut connection) = self.connection.take() {
            self.renew_token_if_due(&mut connection)?;
            self.connection = Some(connection);
        }
        Ok(())
    }
}
