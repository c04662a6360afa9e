//! Message-bus sinks: the engine's change feed forwarded to NATS JetStream
//! ([`nats::NatsSink`]), an SQS FIFO queue ([`sqs::SqsSink`]) or an Azure Service Bus queue
//! ([`servicebus::ServiceBusSink`]), one JSON envelope per
//! record ([`envelope`]; schema `api/bus-envelope.schema.json`).
//!
//! ## What is forwarded
//!
//! Accepted events (`kind` `event`, subject `liveops.{season}.events.{type}`) and the
//! decisions `block`, `unblock`, `claim` and `window_close` (subject
//! `liveops.{season}.decisions.{kind}`). Not forwarded: `KeyCompleted` (idempotency
//! bookkeeping) and the snapshot kinds (only in checkpoints, never in the feed).
//! `WindowClosed` is logged by every shard as it rolls its window; only shard 0's is
//! forwarded, so there is one `window_close` per boundary. A [`crate::Gap`] (records
//! the log no longer holds) is not a message: the runner logs it and counts it in
//! [`crate::SinkStats::gaps`], and the sink's cursor moves past it.
//!
//! ## Delivery
//!
//! * **At least once, de-duplicated by the broker.** A broker takes no part in a
//!   transaction with our cursor, so the cursor is stored after the broker acknowledged
//!   every message of a batch, in a file of the sink's own ([`cursor_file`]). A crash
//!   between the acks and the store sends the batch's messages again; the broker drops
//!   them by id (`Nats-Msg-Id` within the stream's duplicate window, SQS's
//!   `MessageDeduplicationId` within its five minutes). Past that window a consumer
//!   still de-duplicates on the envelope's `id`.
//! * **Order per player.** A player's messages share a message group (the player id;
//!   `_engine` for `window_close`). A message is sent only once its group's previous
//!   message was acknowledged: many players' messages are in flight at once, never two
//!   of one player's. So a message lost in flight (broker restart, dropped connection)
//!   can be overtaken only by other players' messages, and is sent again, in its place,
//!   from the stored cursor.

pub mod cursor_file;
pub mod envelope;
pub mod nats;
pub mod servicebus;
pub mod sqs;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use liveops_engine::window::WindowKind;

use crate::feed::{Cursor, FeedItem};
use crate::sink::{SinkError, SinkStats};
use cursor_file::CursorFile;
pub use envelope::{BusMessage, Encoder, MessageKind, ENGINE_GROUP};

/// Default of `BUS_STREAM`: the JetStream stream the NATS sink publishes to.
pub const BUS_STREAM_DEFAULT: &str = "LIVEOPS";
/// Default of `NATS_URL`.
pub const NATS_URL_DEFAULT: &str = "nats://127.0.0.1:4222";

/// What the bus sinks share: the encoder and the cursor file.
#[derive(Debug)]
struct Forwarder {
    encoder: Encoder,
    cursors: CursorFile,
    stats: Arc<SinkStats>,
}

impl Forwarder {
    fn new(
        sink: &str,
        season: &str,
        windows: &[WindowKind],
        cursor_dir: &Path,
        stats: Arc<SinkStats>,
    ) -> Result<Forwarder, SinkError> {
        let encoder = Encoder::new(season, windows)
            .map_err(|e| SinkError::with_source(format!("{sink} sink"), e))?;
        let cursors = CursorFile::open(cursor_dir, sink)
            .map_err(|e| SinkError::with_source(format!("{sink} sink's cursors"), e))?;
        Ok(Forwarder {
            encoder,
            cursors,
            stats,
        })
    }

    fn cursor(&self, shard: u32) -> Cursor {
        self.cursors.get(shard)
    }

    /// The messages of `items`, in order (records not forwarded and gaps left out).
    fn encode(&self, items: &[FeedItem]) -> Vec<BusMessage> {
        items
            .iter()
            .filter_map(|item| match item {
                FeedItem::Record(record) => self.encoder.encode(record),
                FeedItem::Gap(_) => None,
            })
            .collect()
    }

    /// The broker accepted `count` more messages (counted as they are acknowledged, so
    /// those of a batch that failed later count too, and again when sent again).
    fn count_writes(&self, count: usize) {
        self.stats.writes.fetch_add(count as u64, Ordering::Relaxed);
    }

    /// The broker acknowledged every message of `items`: store the cursor after the
    /// last item.
    fn acknowledged(&mut self, shard: u32, items: &[FeedItem]) -> Result<(), SinkError> {
        let Some(last) = items.last() else {
            return Ok(());
        };
        self.cursors
            .store(shard, last.cursor_after())
            .map_err(|e| SinkError::with_source("storing the bus cursor", e))
    }
}
