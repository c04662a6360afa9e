//! A batch of feed items as the rows they become in Postgres.

use std::collections::HashMap;
use std::error::Error;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use liveops_engine::event::EventKind;
use liveops_engine::fairness::Evidence;
use liveops_engine::shard::{level_of, Record};
use liveops_engine::window::WindowKind;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

use crate::feed::{Cursor, FeedItem, GapReason};
use crate::payload::Payload;

/// A JSON document already serialized, sent as `jsonb` without a parse on our side.
#[derive(Debug)]
pub struct Jsonb(pub String);

impl ToSql for Jsonb {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        // jsonb's binary format: a version byte, then the text.
        out.put_u8(1);
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }

    to_sql_checked!();
}

/// One `events` row.
#[derive(Debug)]
pub struct EventRow<'a> {
    pub generation: i64,
    pub shard: i32,
    pub lsn: i64,
    pub record_id: String,
    pub player_id: &'a str,
    pub event_type: &'static str,
    pub ts: i64,
    pub payload: Jsonb,
    pub received_at: SystemTime,
    pub flag: Option<&'static str>,
    pub xp_after: Option<i64>,
}

/// `players` rows, one per player (the batch's last state of each), column-wise for
/// `unnest`.
#[derive(Debug, Default)]
pub struct PlayerRows<'a> {
    pub player_id: Vec<&'a str>,
    pub xp: Vec<i64>,
    pub level: Vec<i64>,
    pub updated_at: Vec<SystemTime>,
}

/// `audit` rows, column-wise.
#[derive(Debug, Default)]
pub struct AuditRows<'a> {
    pub record_id: Vec<String>,
    pub player_id: Vec<&'a str>,
    pub kind: Vec<&'static str>,
    pub reason: Vec<&'a str>,
    pub detail: Vec<Jsonb>,
    pub at: Vec<SystemTime>,
}

/// `reward_receipts` rows, column-wise.
#[derive(Debug, Default)]
pub struct ReceiptRows<'a> {
    pub receipt_id: Vec<&'a str>,
    pub player_id: Vec<&'a str>,
    pub item: Vec<&'a str>,
    pub timestamp: Vec<i64>,
    pub at: Vec<SystemTime>,
}

/// A `mirror_gaps` row.
#[derive(Debug)]
pub struct GapRow {
    pub after: String,
    pub through: String,
    pub reason: &'static str,
}

/// A shard's close of a window period.
#[derive(Debug)]
pub struct CloseRow {
    pub window: WindowKind,
    /// The period that went live.
    pub next_period: String,
    /// The closed period's name where the close alone tells it (daily, weekly).
    pub closed_period: Option<String>,
    pub at: SystemTime,
}

/// Everything one `apply` writes.
#[derive(Debug, Default)]
pub struct Batch<'a> {
    pub events: Vec<EventRow<'a>>,
    pub players: PlayerRows<'a>,
    pub audit: AuditRows<'a>,
    pub receipts: ReceiptRows<'a>,
    pub gaps: Vec<GapRow>,
    pub closes: Vec<CloseRow>,
    /// The cursor after the last item: stored with the rows.
    pub cursor: Cursor,
}

impl<'a> Batch<'a> {
    pub fn build(items: &'a [FeedItem]) -> Batch<'a> {
        let mut batch = Batch::default();
        // Player -> index in `players`: a player's later events overwrite the earlier
        // ones' totals (they are absolute), so each player is one row.
        let mut player_index: HashMap<&'a str, usize> = HashMap::new();
        for item in items {
            batch.cursor = item.cursor_after();
            let record = match item {
                FeedItem::Gap(gap) => {
                    batch.gaps.push(GapRow {
                        after: gap.after.to_string(),
                        through: gap.through.to_string(),
                        reason: match gap.reason {
                            GapReason::SegmentsDeleted => "segments_deleted",
                            GapReason::OlderGeneration => "older_generation",
                        },
                    });
                    continue;
                }
                FeedItem::Record(record) => record,
            };
            let id = record.id;
            match &record.record {
                Record::EventAccepted {
                    player,
                    event,
                    ts,
                    at_ms,
                    flag,
                    evidence,
                    totals,
                    ..
                } => {
                    let at = time_of(*at_ms);
                    batch.events.push(EventRow {
                        generation: sql_int(id.generation),
                        shard: i32::try_from(id.shard).unwrap_or(i32::MAX),
                        lsn: sql_int(id.lsn),
                        record_id: id.to_string(),
                        player_id: player,
                        event_type: event.type_name(),
                        ts: sql_int(*ts),
                        payload: Jsonb(payload_json(event)),
                        received_at: at,
                        flag: flag.map(|f| f.as_str()),
                        xp_after: totals.map(|t| sql_int(t.xp)),
                    });
                    if let Some(totals) = totals {
                        let players = &mut batch.players;
                        let index = *player_index.entry(player).or_insert_with(|| {
                            players.player_id.push(player);
                            players.xp.push(0);
                            players.level.push(0);
                            players.updated_at.push(at);
                            players.player_id.len() - 1
                        });
                        players.xp[index] = sql_int(totals.xp);
                        players.level[index] = sql_int(level_of(totals.xp));
                        players.updated_at[index] = at;
                    }
                    if let Some(flag) = flag {
                        let mut detail = JsonObject::new();
                        detail.str("eventType", event.type_name());
                        detail.num("score", event.score());
                        if let Some(evidence) = evidence {
                            detail.evidence(evidence);
                        }
                        batch
                            .audit
                            .push(id.to_string(), player, "flag", flag.as_str(), detail, at);
                    }
                }
                Record::Blocked {
                    player,
                    until_ms,
                    reason,
                    by,
                    at_ms,
                    evidence,
                } => {
                    let mut detail = JsonObject::new();
                    detail.num("untilMs", *until_ms);
                    detail.str("by", by.as_str());
                    if let Some(evidence) = evidence {
                        detail.evidence(evidence);
                    }
                    batch.audit.push(
                        id.to_string(),
                        player,
                        "block",
                        reason,
                        detail,
                        time_of(*at_ms),
                    );
                }
                Record::Unblocked {
                    player,
                    reason,
                    at_ms,
                } => {
                    batch.audit.push(
                        id.to_string(),
                        player,
                        "unblock",
                        reason,
                        JsonObject::new(),
                        time_of(*at_ms),
                    );
                }
                // The review's decisions, as the engine's audit trail writes them: the
                // live boards the snapshots read follow the engine by themselves.
                Record::Quarantined {
                    player,
                    reason,
                    evidence,
                    at_ms,
                    held,
                } => {
                    let mut detail = JsonObject::new();
                    detail.json("held", held);
                    detail.evidence(evidence);
                    let at = time_of(*at_ms);
                    let id = id.to_string();
                    batch
                        .audit
                        .push(id, player, "quarantine", reason, detail, at);
                }
                Record::ReviewClosed {
                    player,
                    verdict,
                    at_ms,
                    held,
                } => {
                    let mut detail = JsonObject::new();
                    detail.json("held", held);
                    let at = time_of(*at_ms);
                    let id = id.to_string();
                    batch
                        .audit
                        .push(id, player, "review", verdict.as_str(), detail, at);
                }
                Record::RewardClaimed {
                    player,
                    item,
                    receipt_id,
                    timestamp,
                    at_ms,
                } => {
                    let receipts = &mut batch.receipts;
                    receipts.receipt_id.push(receipt_id);
                    receipts.player_id.push(player);
                    receipts.item.push(item);
                    receipts.timestamp.push(sql_int(*timestamp));
                    receipts.at.push(time_of(*at_ms));
                }
                Record::WindowClosed {
                    window,
                    next,
                    at_ms,
                } => batch.closes.push(CloseRow {
                    window: *window,
                    next_period: next.name.clone(),
                    closed_period: closed_period_name(*window, next.ends_ms),
                    at: time_of(*at_ms),
                }),
                // Idempotency bookkeeping and checkpoint records mirror nothing.
                _ => {}
            }
        }
        batch
    }
}

impl<'a> AuditRows<'a> {
    fn push(
        &mut self,
        record_id: String,
        player_id: &'a str,
        kind: &'static str,
        reason: &'a str,
        detail: JsonObject,
        at: SystemTime,
    ) {
        self.record_id.push(record_id);
        self.player_id.push(player_id);
        self.kind.push(kind);
        self.reason.push(reason);
        self.detail.push(detail.finish());
        self.at.push(at);
    }
}

/// The period before the one ending at `next_ends_ms`, for windows of fixed length;
/// `None` for the seasonal window (a season's successor does not name it).
pub fn closed_period_name(window: WindowKind, next_ends_ms: u64) -> Option<String> {
    let length_ms = match window {
        WindowKind::Daily => 86_400_000,
        WindowKind::Weekly => 7 * 86_400_000,
        WindowKind::Seasonal => return None,
    };
    let last_ms_of_closed = next_ends_ms.checked_sub(length_ms + 1)?;
    Some(window.period_at(last_ms_of_closed, "").name)
}

/// The event's fields as posted (camelCase), absent options left out.
fn payload_json(event: &EventKind) -> String {
    serde_json::to_string(&Payload::of(event)).expect("a payload always serializes")
}

/// A flat JSON object written field by field (no intermediate `Value` per event).
struct JsonObject(String);

impl JsonObject {
    fn new() -> JsonObject {
        JsonObject(String::from("{"))
    }

    fn key(&mut self, key: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0.push('"');
        self.0.push_str(key);
        self.0.push_str("\":");
    }

    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        // Serializing a &str cannot fail.
        if let Ok(quoted) = serde_json::to_string(value) {
            self.0.push_str(&quoted);
        }
    }

    fn num(&mut self, key: &str, value: u64) {
        self.key(key);
        let _ = write!(self.0, "{value}");
    }

    /// Not-a-number and infinities have no JSON form: null.
    fn float(&mut self, key: &str, value: f64) {
        self.key(key);
        match serde_json::Number::from_f64(value) {
            Some(n) => {
                let _ = write!(self.0, "{n}");
            }
            None => self.0.push_str("null"),
        }
    }

    /// Any serializable value, as JSON.
    fn json(&mut self, key: &str, value: &impl serde::Serialize) {
        self.key(key);
        match serde_json::to_string(value) {
            Ok(text) => self.0.push_str(&text),
            Err(_) => self.0.push_str("null"),
        }
    }

    /// A detector's evidence, as the engine's audit trail writes it.
    fn evidence(&mut self, e: &Evidence) {
        self.str("detector", e.detector.as_str());
        self.str("measure", e.measure.as_str());
        self.float("measured", e.measured);
        self.float("threshold", e.threshold);
    }

    fn finish(mut self) -> Jsonb {
        self.0.push('}');
        Jsonb(self.0)
    }
}

/// Unix ms as a timestamp.
pub fn time_of(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A u64 in a bigint column (the engine's values stay far below 2^63).
pub fn sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_period_is_the_one_before_next() {
        // 2026-11-24T00:00Z starts the daily period "2026-11-24"; next ends a day later.
        let next = WindowKind::Daily.period_at(1_795_478_400_000, "s");
        assert_eq!(next.name, "2026-11-24");
        assert_eq!(
            closed_period_name(WindowKind::Daily, next.ends_ms).as_deref(),
            Some("2026-11-23")
        );
        let next = WindowKind::Weekly.period_at(1_795_996_800_000, "s");
        assert_eq!(next.name, "2026-W49");
        assert_eq!(
            closed_period_name(WindowKind::Weekly, next.ends_ms).as_deref(),
            Some("2026-W48")
        );
        assert_eq!(closed_period_name(WindowKind::Seasonal, u64::MAX), None);
    }

    #[test]
    fn payloads_carry_the_posted_fields() {
        let json = payload_json(&EventKind::DropClaimed {
            drop_id: "d\"1".into(),
            weight: Some(0.5),
            source: None,
        });
        assert_eq!(json, r#"{"dropId":"d\"1","weight":0.5}"#);
        let json = payload_json(&EventKind::Progression {
            delta_xp: 7,
            activity: Some("quest".into()),
        });
        assert_eq!(json, r#"{"deltaXp":7,"activity":"quest"}"#);
        let json = payload_json(&EventKind::BossKill {
            boss_id: "b".into(),
            tier: 2,
            points: 30,
        });
        assert_eq!(json, r#"{"bossId":"b","tier":2,"points":30}"#);
    }

    /// The review's decisions land in the audit table with the engine's kinds.
    #[test]
    fn quarantines_and_reviews_are_audit_rows() {
        use crate::feed::{FeedRecord, RecordId};
        use liveops_engine::fairness::review::{Held, Verdict};
        use liveops_engine::fairness::{FlagKind, Measure};
        let held = vec![Held {
            window: WindowKind::Weekly,
            period: "2026-W48".into(),
            score: 40,
            reached_ms: 5,
            seq: 6,
        }];
        let records = [
            Record::Quarantined {
                player: "p1".into(),
                reason: "flooding".into(),
                evidence: Evidence {
                    detector: FlagKind::Flood,
                    measure: Measure::LimitedS,
                    measured: 3.0,
                    threshold: 3.0,
                },
                at_ms: 7,
                held: held.clone(),
            },
            Record::ReviewClosed {
                player: "p1".into(),
                verdict: Verdict::Cleared,
                at_ms: 8,
                held,
            },
        ];
        let items: Vec<FeedItem> = (records.into_iter().enumerate())
            .map(|(i, record)| {
                let id = RecordId {
                    generation: 1,
                    shard: 0,
                    lsn: i as u64 + 1,
                };
                FeedItem::Record(FeedRecord { id, record })
            })
            .collect();
        let batch = Batch::build(&items);
        assert_eq!(batch.audit.kind, vec!["quarantine", "review"]);
        assert_eq!(batch.audit.reason, vec!["flooding", "cleared"]);
        let detail = &batch.audit.detail[0].0;
        assert!(
            detail.starts_with(r#"{"held":[{"window":"weekly","period":"2026-W48","score":40"#),
            "{detail}"
        );
        assert!(detail.contains(r#""detector":"flood""#), "{detail}");
    }
}
