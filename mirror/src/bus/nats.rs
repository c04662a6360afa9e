//! The NATS JetStream sink: [`NatsSink`].
//!
//! Publishes each envelope to `liveops.{season}.events.{type}` or
//! `liveops.{season}.decisions.{kind}` with header `Nats-Msg-Id` = the record id, into
//! the stream `BUS_STREAM` (created if missing over `liveops.{season}.>`, with a
//! [`DUPLICATE_WINDOW`] for the broker's de-duplication). Acks are awaited in a window of
//! up to [`IN_FLIGHT_MAX`] messages, never two of one player's (see [`crate::bus`]); the
//! cursor is stored once every message of a batch is acknowledged.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture};
use async_nats::{ConnectOptions, Event, HeaderMap};
use liveops_engine::window::WindowKind;

use super::{BusMessage, Forwarder};
use crate::feed::{Cursor, FeedItem};
use crate::sink::{Sink, SinkError, SinkStats};

/// Messages published and not yet acknowledged, at most: bounds memory and what a
/// failure sends again, while keeping the connection busy.
pub const IN_FLIGHT_MAX: usize = 256;
/// Longest wait for the TCP connection and the server's greeting.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a publish ack or a JetStream API answer.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// The stream's de-duplication window (when this sink creates it): a batch sent again
/// after a crash within this time is dropped by the server.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Where and what the NATS sink publishes.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// `NATS_URL` (default [`super::NATS_URL_DEFAULT`]).
    pub url: String,
    /// `BUS_STREAM` (default [`super::BUS_STREAM_DEFAULT`]): the JetStream stream.
    pub stream: String,
    /// The engine's `SEASON`: in subjects and envelopes.
    pub season: String,
    /// The configured windows: an event envelope names their periods.
    pub windows: Vec<WindowKind>,
    /// Where the sink's cursor file lives (`DATA_DIR/mirror-cursors/`).
    pub cursor_dir: PathBuf,
}

/// An open connection with its own runtime: dropping it ends every task of the client
/// (nothing it still held is sent later).
struct Connection {
    runtime: tokio::runtime::Runtime,
    jetstream: jetstream::Context,
}

/// Forwards the feed to a NATS JetStream stream.
pub struct NatsSink {
    config: NatsConfig,
    forwarder: Forwarder,
    /// `None` until the first apply, and again after any failure (the next apply
    /// connects anew and makes sure the stream exists).
    connection: Option<Connection>,
    /// Set by the first connection ever: later ones count as reconnects.
    connected_once: Arc<AtomicBool>,
    stats: Arc<SinkStats>,
}

impl std::fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSink")
            .field("config", &self.config)
            .field("connected", &self.connection.is_some())
            .finish_non_exhaustive()
    }
}

impl NatsSink {
    /// A sink for `config`, counting into `stats`. Reads its cursor file; does not
    /// connect (the first apply does).
    pub fn new(config: NatsConfig, stats: Arc<SinkStats>) -> Result<NatsSink, SinkError> {
        let forwarder = Forwarder::new(
            "nats",
            &config.season,
            &config.windows,
            &config.cursor_dir,
            Arc::clone(&stats),
        )?;
        Ok(NatsSink {
            config,
            forwarder,
            connection: None,
            connected_once: Arc::new(AtomicBool::new(false)),
            stats,
        })
    }

    fn connect(&self) -> Result<Connection, SinkError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SinkError::with_source("nats sink: starting its runtime", e))?;
        let connected_once = Arc::clone(&self.connected_once);
        let stats = Arc::clone(&self.stats);
        let options = ConnectOptions::new()
            .connection_timeout(CONNECT_TIMEOUT)
            .request_timeout(Some(ACK_TIMEOUT))
            .event_callback(move |event| {
                // The client reconnects on its own too: each connection after the very
                // first (of this sink, across clients) is a reconnect.
                if matches!(event, Event::Connected) && connected_once.swap(true, Ordering::Relaxed)
                {
                    stats.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                std::future::ready(())
            });
        let stream_config = jetstream::stream::Config {
            name: self.config.stream.clone(),
            subjects: vec![self.forwarder.encoder.subjects_filter()],
            duplicate_window: DUPLICATE_WINDOW,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        let url = self.config.url.clone();
        let jetstream = runtime.block_on(async move {
            let client = options.connect(url.as_str()).await.map_err(|e| {
                SinkError::with_source(format!("nats sink: connecting to {url}"), e)
            })?;
            let mut jetstream = jetstream::new(client);
            jetstream.set_timeout(ACK_TIMEOUT);
            jetstream
                .get_or_create_stream(stream_config)
                .await
                .map_err(|e| SinkError::with_source("nats sink: creating the stream", e))?;
            Ok::<_, SinkError>(jetstream)
        })?;
        Ok(Connection { runtime, jetstream })
    }

    /// Publishes `messages` in order, never two of one group unacknowledged at once;
    /// returns once all are acknowledged.
    fn publish(&self, connection: &Connection, messages: Vec<BusMessage>) -> Result<(), SinkError> {
        let jetstream = &connection.jetstream;
        connection.runtime.block_on(async {
            let mut in_flight: VecDeque<(String, PublishAckFuture)> = VecDeque::new();
            let mut groups_in_flight: HashSet<String> = HashSet::new();
            for message in messages {
                while in_flight.len() >= IN_FLIGHT_MAX || groups_in_flight.contains(&message.group)
                {
                    let (group, ack) = in_flight.pop_front().expect("something is in flight");
                    await_ack(ack).await?;
                    self.forwarder.count_writes(1);
                    groups_in_flight.remove(&group);
                }
                let mut headers = HeaderMap::new();
                headers.insert("Nats-Msg-Id", message.id.as_str());
                let ack = jetstream
                    .publish_with_headers(message.subject, headers, message.body.into())
                    .await
                    .map_err(|e| SinkError::with_source("nats sink: publishing", e))?;
                groups_in_flight.insert(message.group.clone());
                in_flight.push_back((message.group, ack));
            }
            for (_, ack) in in_flight {
                await_ack(ack).await?;
                self.forwarder.count_writes(1);
            }
            Ok(())
        })
    }
}

async fn await_ack(ack: PublishAckFuture) -> Result<(), SinkError> {
    ack.await
        .map(drop)
        .map_err(|e| SinkError::with_source("nats sink: waiting for a publish ack", e))
}

impl Sink for NatsSink {
    fn name(&self) -> &str {
        "nats"
    }

    fn cursor(&mut self, shard: u32) -> Result<Cursor, SinkError> {
        Ok(self.forwarder.cursor(shard))
    }

    fn apply(&mut self, shard: u32, items: &[FeedItem]) -> Result<(), SinkError> {
        let messages = self.forwarder.encode(items);
        if !messages.is_empty() {
            let connection = match self.connection.take() {
                Some(connection) => connection,
                None => self.connect()?,
            };
            // On failure the connection is dropped with its runtime: whatever its client
            // still held is never sent behind the messages the driver sends again.
            self.publish(&connection, messages)?;
            self.connection = Some(connection);
        }
        self.forwarder.acknowledged(shard, items)
    }
}
