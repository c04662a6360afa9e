//! The versioned envelope: one JSON object per forwarded record, with the subject and
//! message group it travels under. Schema: `api/bus-envelope.schema.json`.

use std::collections::BTreeMap;

use liveops_engine::shard::{level_of, Record, Totals};
use liveops_engine::window::WindowKind;
use serde::Serialize;

use crate::feed::FeedRecord;
use crate::payload::Payload;

/// `v` of every envelope this code writes; bumped only for changes a consumer could
/// misread (new optional fields do not bump it).
pub const ENVELOPE_VERSION: u32 = 1;

/// Message group (ordering key) of decisions that concern no player (`window_close`).
pub const ENGINE_GROUP: &str = "_engine";

/// Largest body the encoder hands out: SQS's message limit (256 KiB, body and
/// attributes; the sinks send no attributes), which also fits NATS's default 1 MiB.
pub const BODY_BYTES_MAX: usize = 256 * 1024;

/// Free text (a block's reason, a claim's item) is cut to this many bytes in the rare
/// envelope that would otherwise exceed [`BODY_BYTES_MAX`] (`"truncated": true` then).
pub const TEXT_BYTES_MAX_WHEN_TRUNCATED: usize = 4096;

/// Longest season id the subjects accept (the engine's `SEASON` is at most 32).
const SEASON_CHARS_MAX: usize = 64;

/// The envelope's `kind`, which is also the last token of its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    Event,
    Block,
    Unblock,
    Claim,
    WindowClose,
}

impl MessageKind {
    pub const ALL: [MessageKind; 5] = [
        MessageKind::Event,
        MessageKind::Block,
        MessageKind::Unblock,
        MessageKind::Claim,
        MessageKind::WindowClose,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Event => "event",
            MessageKind::Block => "block",
            MessageKind::Unblock => "unblock",
            MessageKind::Claim => "claim",
            MessageKind::WindowClose => "window_close",
        }
    }
}

/// One record, ready for a bus.
#[derive(Debug, Clone, PartialEq)]
pub struct BusMessage {
    /// The record's [`crate::RecordId`] as text: the brokers' de-duplication id
    /// (`Nats-Msg-Id`, `MessageDeduplicationId`) and the consumers'.
    pub id: String,
    pub kind: MessageKind,
    /// `liveops.{season}.events.{type}` or `liveops.{season}.decisions.{kind}`.
    pub subject: String,
    /// The ordering key: the player id, or [`ENGINE_GROUP`].
    pub group: String,
    /// The envelope, JSON, at most [`BODY_BYTES_MAX`] bytes.
    pub body: Vec<u8>,
}

/// Why an encoder cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The season names a subject token: NATS forbids `.`, `*`, `>` and blanks in it.
    #[error("season {0:?} must match ^[A-Za-z0-9_-]{{1,64}}$ to name bus subjects")]
    Season(String),
}

/// Turns feed records into [`BusMessage`]s for one season and window configuration.
///
/// Forwarded: accepted events, blocks, unblocks, reward claims, and window closes. Not
/// forwarded: `KeyCompleted` (idempotency bookkeeping, not a game fact) and the snapshot
/// kinds (they appear only in checkpoints, never in the feed). `WindowClosed` is logged
/// by every shard as it rolls the window over; it is forwarded from shard 0 only, so
/// consumers see one `window_close` per boundary (within about a second of it).
#[derive(Debug, Clone)]
pub struct Encoder {
    /// The engine's `SEASON`: in every envelope and subject, and the seasonal period.
    season: String,
    /// The configured windows (`LB_WINDOWS`): an event's `windows` names their periods.
    windows: Vec<WindowKind>,
}

impl Encoder {
    pub fn new(season: &str, windows: &[WindowKind]) -> Result<Encoder, EnvelopeError> {
        let ok = (1..=SEASON_CHARS_MAX).contains(&season.len())
            && season
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(EnvelopeError::Season(season.to_owned()));
        }
        Ok(Encoder {
            season: season.to_owned(),
            windows: windows.to_vec(),
        })
    }

    pub fn season(&self) -> &str {
        &self.season
    }

    /// The subject filter that covers every subject of this season: `liveops.{season}.>`.
    pub fn subjects_filter(&self) -> String {
        format!("liveops.{}.>", self.season)
    }

    /// The message for `record`, or `None` for a record that is not forwarded.
    pub fn encode(&self, record: &FeedRecord) -> Option<BusMessage> {
        let id = record.id.to_string();
        let (kind, player, flag, detail) = match &record.record {
            Record::EventAccepted {
                player,
                event,
                ts,
                at_ms,
                flag,
                totals,
                ..
            } => {
                let windows = self
                    .windows
                    .iter()
                    .map(|&w| (w.as_str(), w.period_at(*at_ms, &self.season).name))
                    .collect();
                let detail = Detail::Event {
                    event: EventBody {
                        kind: event.type_name(),
                        player_id: player,
                        ts: *ts,
                        payload: Payload::of(event),
                    },
                    windows,
                    totals: totals.as_ref().map(|t| TotalsBody::of(t, &self.windows)),
                };
                (
                    MessageKind::Event,
                    Some(player),
                    flag.map(|f| f.as_str()),
                    detail,
                )
            }
            Record::Blocked {
                player,
                until_ms,
                reason,
                by,
                ..
            } => (
                MessageKind::Block,
                Some(player),
                None,
                Detail::Block {
                    until: *until_ms,
                    reason,
                    by: by.as_str(),
                },
            ),
            Record::Unblocked { player, reason, .. } => (
                MessageKind::Unblock,
                Some(player),
                None,
                Detail::Unblock { reason },
            ),
            Record::RewardClaimed {
                player,
                item,
                receipt_id,
                timestamp,
                ..
            } => (
                MessageKind::Claim,
                Some(player),
                None,
                Detail::Claim {
                    item,
                    receipt_id,
                    timestamp: *timestamp,
                },
            ),
            Record::WindowClosed { window, next, .. } if record.id.shard == 0 => (
                MessageKind::WindowClose,
                None,
                None,
                Detail::WindowClose {
                    window: window.as_str(),
                    next: &next.name,
                },
            ),
            // Other shards' window closes repeat shard 0's; key completions and snapshot
            // records are not game facts.
            _ => return None,
        };
        let subject = match (&record.record, kind) {
            (Record::EventAccepted { event, .. }, _) => {
                format!("liveops.{}.events.{}", self.season, event.type_name())
            }
            (_, kind) => format!("liveops.{}.decisions.{}", self.season, kind.as_str()),
        };
        let mut body = Body {
            v: ENVELOPE_VERSION,
            id: &id,
            season: &self.season,
            player_id: player.map(String::as_str),
            at: record.record.at_ms(),
            flag,
            truncated: None,
            detail,
        };
        let mut bytes = serde_json::to_vec(&body).expect("envelopes serialize");
        if bytes.len() > BODY_BYTES_MAX {
            body.detail.truncate_text(TEXT_BYTES_MAX_WHEN_TRUNCATED);
            body.truncated = Some(true);
            bytes = serde_json::to_vec(&body).expect("envelopes serialize");
            tracing::warn!(
                id,
                bytes = bytes.len(),
                "bus envelope over the size limit: its free text was cut"
            );
        }
        Some(BusMessage {
            id: id.clone(),
            kind,
            subject,
            group: player.map_or_else(|| ENGINE_GROUP.to_owned(), String::clone),
            body: bytes,
        })
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    v: u32,
    id: &'a str,
    season: &'a str,
    /// `null` for engine decisions (`window_close`).
    player_id: Option<&'a str>,
    /// Unix ms at which the engine accepted (logged) the record.
    at: u64,
    flag: Option<&'static str>,
    /// Present (true) only when free text was cut to fit the size limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    truncated: Option<bool>,
    #[serde(flatten)]
    detail: Detail<'a>,
}

/// The kind-specific fields, with `kind` as the tag.
#[derive(Serialize)]
#[serde(
    tag = "kind",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
enum Detail<'a> {
    Event {
        event: EventBody<'a>,
        /// Window name -> the live period the event fell in.
        windows: BTreeMap<&'static str, String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        totals: Option<TotalsBody>,
    },
    Block {
        /// Unix ms the block ends.
        until: u64,
        reason: &'a str,
        by: &'static str,
    },
    Unblock {
        reason: &'a str,
    },
    Claim {
        item: &'a str,
        receipt_id: &'a str,
        /// Unix seconds, as signed in the receipt.
        timestamp: u64,
    },
    WindowClose {
        window: &'static str,
        /// Name of the period that starts.
        next: &'a str,
    },
}

impl Detail<'_> {
    fn truncate_text(&mut self, bytes_max: usize) {
        match self {
            Detail::Block { reason, .. } | Detail::Unblock { reason } => {
                *reason = cut(reason, bytes_max);
            }
            Detail::Claim {
                item, receipt_id, ..
            } => {
                *item = cut(item, bytes_max);
                *receipt_id = cut(receipt_id, bytes_max);
            }
            // Bounded by validation (labels of 64 chars) and by the period names.
            Detail::Event { .. } | Detail::WindowClose { .. } => {}
        }
    }
}

/// The longest prefix of `s` of at most `bytes_max` bytes that ends on a char boundary.
fn cut(s: &str, bytes_max: usize) -> &str {
    let mut end = s.len().min(bytes_max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The event as posted (absent optional fields stay absent).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    player_id: &'a str,
    /// Client time, unix seconds, as posted.
    ts: u64,
    payload: Payload<'a>,
}

/// The player's standing after the event.
#[derive(Serialize)]
struct TotalsBody {
    xp: u64,
    level: u64,
    /// Window name -> the player's score in its live period (windows where the player
    /// has not scored are absent).
    scores: BTreeMap<&'static str, u64>,
}

impl TotalsBody {
    fn of(totals: &Totals, windows: &[WindowKind]) -> TotalsBody {
        TotalsBody {
            xp: totals.xp,
            level: level_of(totals.xp),
            scores: windows
                .iter()
                .filter_map(|&w| totals.scores[w.index()].map(|s| (w.as_str(), s)))
                .collect(),
        }
    }
}
