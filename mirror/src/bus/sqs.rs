//! The SQS sink: [`SqsSink`], into a FIFO queue.
//!
//! `SendMessageBatch` calls of up to [`CALL_ENTRIES_MAX`] messages and
//! [`CALL_BYTES_MAX`] bytes, `MessageGroupId` = the player id (or `_engine`),
//! `MessageDeduplicationId` = the record id. Messages go in *waves*: the longest run of
//! messages of distinct groups (at most [`CALLS_IN_FLIGHT_MAX`] calls), sent as concurrent
//! calls; the next wave starts once every entry of this one was accepted. So a player's
//! message is sent only once the previous one was accepted (order per player; see
//! [`crate::bus`]). An entry the queue reports failed is sent again (with the others of
//! its call that failed) before the wave ends; the batch's cursor is stored once every
//! entry succeeded.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use liveops_engine::window::WindowKind;

use super::envelope::BODY_BYTES_MAX;
use super::{BusMessage, Forwarder};
use crate::feed::{Cursor, FeedItem};
use crate::sink::{Sink, SinkError, SinkStats};

/// Entries per `SendMessageBatch`: the service's limit.
pub const CALL_ENTRIES_MAX: usize = 10;
/// Bytes of message bodies per `SendMessageBatch`: the service's limit for the whole
/// request's messages (each envelope is at most [`BODY_BYTES_MAX`], the same number).
pub const CALL_BYTES_MAX: usize = BODY_BYTES_MAX;
/// Calls in flight at once: a wave of messages of distinct groups is sent as up to this
/// many concurrent calls (a call costs a round trip; one at a time would bound the sink
/// to some ten messages per round trip).
pub const CALLS_IN_FLIGHT_MAX: usize = 8;
/// Messages per wave.
const WAVE_ENTRIES_MAX: usize = CALL_ENTRIES_MAX * CALLS_IN_FLIGHT_MAX;
/// Times a call's failed entries are sent again before the batch fails (and the driver
/// backs off and resumes from the cursor).
pub const FAILED_ENTRY_ATTEMPTS_MAX: u32 = 5;
/// Pause before sending failed entries again (times the attempt number).
const FAILED_ENTRY_PAUSE: Duration = Duration::from_millis(50);
/// Longest wait for a TCP (and TLS) connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a call may take, the SDK's own retries included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(20);

/// Where and what the SQS sink sends.
#[derive(Debug, Clone)]
pub struct SqsConfig {
    /// `SQS_QUEUE_URL`: a FIFO queue (`.fifo`), which keeps order per message group and
    /// de-duplicates by `MessageDeduplicationId`.
    pub queue_url: String,
    /// `SQS_ENDPOINT`: another endpoint than the region's (a local SQS-compatible
    /// server). Region and credentials come from the AWS default chain.
    pub endpoint: Option<String>,
    /// The engine's `SEASON`.
    pub season: String,
    /// The configured windows: an event envelope names their periods.
    pub windows: Vec<WindowKind>,
    /// Where the sink's cursor file lives (`DATA_DIR/mirror-cursors/`).
    pub cursor_dir: PathBuf,
}

/// A client with its own runtime (its connection pool's tasks run there).
struct Connection {
    runtime: tokio::runtime::Runtime,
    client: aws_sdk_sqs::Client,
}

/// Forwards the feed to an SQS FIFO queue.
pub struct SqsSink {
    config: SqsConfig,
    forwarder: Forwarder,
    /// `None` until the first apply and after any failure.
    connection: Option<Connection>,
    /// Whether a client was made before: later ones count as reconnects.
    connected_once: bool,
    stats: Arc<SinkStats>,
}

impl std::fmt::Debug for SqsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsSink")
            .field("config", &self.config)
            .field("connected", &self.connection.is_some())
            .finish_non_exhaustive()
    }
}

impl SqsSink {
    /// A sink for `config`, counting into `stats`. Reads its cursor file; does not
    /// connect (the first apply does).
    pub fn new(config: SqsConfig, stats: Arc<SinkStats>) -> Result<SqsSink, SinkError> {
        let forwarder = Forwarder::new(
            "sqs",
            &config.season,
            &config.windows,
            &config.cursor_dir,
            Arc::clone(&stats),
        )?;
        Ok(SqsSink {
            config,
            forwarder,
            connection: None,
            connected_once: false,
            stats,
        })
    }

    fn connect(&mut self) -> Result<Connection, SinkError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SinkError::with_source("sqs sink: starting its runtime", e))?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        );
        if let Some(endpoint) = &self.config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let sdk_config = runtime.block_on(loader.load());
        if std::mem::replace(&mut self.connected_once, true) {
            self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Connection {
            client: aws_sdk_sqs::Client::new(&sdk_config),
            runtime,
        })
    }

    /// Sends `messages` in waves; returns once every one was accepted.
    fn send(&self, connection: &Connection, messages: &[BusMessage]) -> Result<(), SinkError> {
        let mut rest = messages;
        while !rest.is_empty() {
            let (wave, after) = rest.split_at(wave_len(rest));
            connection
                .runtime
                .block_on(self.send_wave(&connection.client, wave))?;
            rest = after;
        }
        Ok(())
    }

    /// One wave's calls, all at once (their groups are distinct, so their order does
    /// not matter); returns once every entry of every call was accepted.
    async fn send_wave(
        &self,
        client: &aws_sdk_sqs::Client,
        wave: &[BusMessage],
    ) -> Result<(), SinkError> {
        let mut calls = Vec::new();
        let mut rest = wave;
        while !rest.is_empty() {
            let (call, after) = rest.split_at(call_len(rest));
            calls.push(self.send_call(client, call));
            rest = after;
        }
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .collect()
    }

    /// One call's messages, with their failed entries sent again.
    async fn send_call(
        &self,
        client: &aws_sdk_sqs::Client,
        call: &[BusMessage],
    ) -> Result<(), SinkError> {
        let mut pending: Vec<usize> = (0..call.len()).collect();
        for attempt in 1..=FAILED_ENTRY_ATTEMPTS_MAX {
            let mut entries = Vec::with_capacity(pending.len());
            for &index in &pending {
                entries.push(entry(index, &call[index])?);
            }
            let output = client
                .send_message_batch()
                .queue_url(&self.config.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| {
                    // The SDK's own Display is terse; its context names the cause.
                    let context = aws_sdk_sqs::error::DisplayErrorContext(&e).to_string();
                    SinkError::with_source(format!("sqs sink: SendMessageBatch: {context}"), e)
                })?;
            self.forwarder.count_writes(output.successful().len());
            let failed = output.failed();
            if failed.is_empty() {
                return Ok(());
            }
            for failure in failed {
                tracing::warn!(
                    sink = "sqs",
                    attempt,
                    code = failure.code(),
                    sender_fault = failure.sender_fault(),
                    message = failure.message().unwrap_or(""),
                    "a SendMessageBatch entry failed"
                );
            }
            if let Some(fault) = failed.iter().find(|f| f.sender_fault()) {
                // Sending the same entry again cannot help: fail the batch (visible in
                // the sink's errors and state) and let the driver back off.
                return Err(SinkError::new(format!(
                    "sqs sink: the queue refused a message ({}: {})",
                    fault.code(),
                    fault.message().unwrap_or("")
                )));
            }
            let failed_ids: HashSet<&str> = failed.iter().map(|f| f.id()).collect();
            pending.retain(|index| failed_ids.contains(index.to_string().as_str()));
            tokio::time::sleep(FAILED_ENTRY_PAUSE * attempt).await;
        }
        Err(SinkError::new(format!(
            "sqs sink: {} entries still failing after {FAILED_ENTRY_ATTEMPTS_MAX} attempts",
            pending.len()
        )))
    }
}

/// How many of `messages` (at least one) go in the next wave: up to
/// [`WAVE_ENTRIES_MAX`], and only up to the first message whose group is already in it.
fn wave_len(messages: &[BusMessage]) -> usize {
    let mut groups = HashSet::new();
    messages
        .iter()
        .take(WAVE_ENTRIES_MAX)
        .take_while(|message| groups.insert(message.group.as_str()))
        .count()
}

/// How many of `messages` (at least one) go in the next call: up to the entry and byte
/// limits.
fn call_len(messages: &[BusMessage]) -> usize {
    let mut bytes = 0;
    let mut len = 0;
    for message in messages.iter().take(CALL_ENTRIES_MAX) {
        bytes += message.body.len();
        if len > 0 && bytes > CALL_BYTES_MAX {
            break;
        }
        len += 1;
    }
    len
}

/// The batch entry of `message`, with id `index` (unique within the call).
fn entry(index: usize, message: &BusMessage) -> Result<SendMessageBatchRequestEntry, SinkError> {
    let body = std::str::from_utf8(&message.body)
        .map_err(|e| SinkError::with_source("sqs sink: envelope is not UTF-8", e))?;
    // SQS refuses the noncharacters U+FFFE and U+FFFF in a body. They can only be inside
    // JSON strings, where their escaped form means the same.
    let body = if body.contains(['\u{FFFE}', '\u{FFFF}']) {
        body.replace('\u{FFFE}', "\\ufffe")
            .replace('\u{FFFF}', "\\uffff")
    } else {
        body.to_owned()
    };
    SendMessageBatchRequestEntry::builder()
        .id(index.to_string())
        .message_body(body)
        .message_group_id(&message.group)
        .message_deduplication_id(&message.id)
        .build()
        .map_err(|e| SinkError::with_source("sqs sink: building a batch entry", e))
}

impl Sink for SqsSink {
    fn name(&self) -> &str {
        "sqs"
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
            self.send(&connection, &messages)?;
            self.connection = Some(connection);
        }
        self.forwarder.acknowledged(shard, items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::MessageKind;

    fn message(group: &str, body_bytes: usize) -> BusMessage {
        BusMessage {
            id: "g1-s0-1".into(),
            kind: MessageKind::Event,
            subject: "liveops.1.events.progression".into(),
            group: group.into(),
            body: vec![b'x'; body_bytes],
        }
    }

    #[test]
    fn waves_hold_distinct_groups_and_calls_respect_the_limits() {
        let distinct: Vec<BusMessage> = (0..100).map(|i| message(&format!("p{i}"), 10)).collect();
        assert_eq!(wave_len(&distinct), WAVE_ENTRIES_MAX);
        assert_eq!(call_len(&distinct), CALL_ENTRIES_MAX);
        assert_eq!(call_len(&distinct[95..]), 5);
        let repeat = [message("a", 10), message("b", 10), message("a", 10)];
        assert_eq!(wave_len(&repeat), 2);
        assert_eq!(wave_len(&repeat[2..]), 1);
        let big = [
            message("a", 200_000),
            message("b", 100_000),
            message("c", 1),
        ];
        assert_eq!(call_len(&big), 1);
        assert_eq!(call_len(&big[1..]), 2);
        let huge = [message("a", CALL_BYTES_MAX), message("b", 1)];
        assert_eq!(call_len(&huge), 1, "one message always goes");
    }
}
