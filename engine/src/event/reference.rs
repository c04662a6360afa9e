//! The parser as it was when bodies were read into a `serde_json::Value`: the model the
//! typed reader in [`super::raw`] is checked against, so that reading straight into the
//! event's fields changed no answer, no error code, field or message.

use serde_json::{Map, Value};

use super::{
    check_label, check_player_id, truncate_for_message, Body, Event, EventKind, TsPolicy,
    ValidationError, BATCH_EVENTS_MAX, SCORE_PER_EVENT_MAX,
};

/// Parses a `POST /events` body. The outer error means the request as a whole is
/// refused (not JSON, wrong top-level shape, empty or oversized batch).
pub(super) fn parse_body(bytes: &[u8], now_s: u64, ts: TsPolicy) -> Result<Body, ValidationError> {
    let value: Value = crate::json::parse_unique(bytes).map_err(|e| {
        ValidationError::new("invalid_json", format!("body is not valid JSON: {e}"))
    })?;
    match value {
        Value::Object(map) => Ok(Body::Single(validate_event(&map, now_s, ts))),
        Value::Array(items) => {
            if items.is_empty() {
                return Err(ValidationError::new("empty_batch", "batch has no events"));
            }
            if items.len() > BATCH_EVENTS_MAX {
                return Err(ValidationError::new(
                    "batch_too_large",
                    format!(
                        "batch has {} events; at most {BATCH_EVENTS_MAX} allowed",
                        items.len()
                    ),
                ));
            }
            let events = items
                .iter()
                .map(|item| match item {
                    Value::Object(map) => validate_event(map, now_s, ts),
                    _ => Err(ValidationError::new(
                        "invalid_json",
                        "each batch entry must be a JSON object",
                    )),
                })
                .collect();
            Ok(Body::Batch(events))
        }
        _ => Err(ValidationError::new(
            "invalid_json",
            "body must be an event object or an array of events",
        )),
    }
}

/// Validates one event object.
fn validate_event(
    map: &Map<String, Value>,
    now_s: u64,
    ts_policy: TsPolicy,
) -> Result<Event, ValidationError> {
    let player_id = player_id_field(map, "playerId")?;
    let type_name = match map.get("type") {
        None | Some(Value::Null) => return Err(ValidationError::missing("type")),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(ValidationError::invalid("type", "type must be a string")),
    };
    let ts = u64_field(map, "ts", "ts", u64::MAX)?.ok_or_else(|| ValidationError::missing("ts"))?;
    if ts > now_s.saturating_add(ts_policy.skew_s) {
        return Err(ValidationError::field(
            "ts_in_future",
            "ts",
            format!(
                "ts {ts} is more than {}s ahead of the server clock ({now_s})",
                ts_policy.skew_s
            ),
        ));
    }
    if let Some(max_age_s) = ts_policy.max_age_s {
        if ts < now_s.saturating_sub(max_age_s) {
            return Err(ValidationError::field(
                "ts_too_old",
                "ts",
                format!("ts {ts} is more than {max_age_s}s old"),
            ));
        }
    }
    let payload = match map.get("payload") {
        None | Some(Value::Null) => return Err(ValidationError::missing("payload")),
        Some(Value::Object(p)) => p,
        Some(_) => {
            return Err(ValidationError::invalid(
                "payload",
                "payload must be an object",
            ))
        }
    };
    let kind = match type_name {
        "progression" => EventKind::Progression {
            delta_xp: required(score_field(payload, "deltaXp")?, "payload.deltaXp")?,
            activity: label_field(payload, "activity")?,
        },
        "boss_kill" => EventKind::BossKill {
            boss_id: required(label_field(payload, "bossId")?, "payload.bossId")?,
            tier: u64_field(payload, "tier", "payload.tier", u64::MAX)?.unwrap_or(0),
            points: required(score_field(payload, "points")?, "payload.points")?,
        },
        "drop_claimed" => EventKind::DropClaimed {
            drop_id: required(label_field(payload, "dropId")?, "payload.dropId")?,
            weight: weight_field(payload)?,
            source: label_field(payload, "source")?,
        },
        other => {
            return Err(ValidationError::invalid(
                "type",
                format!(
                    "unknown event type {:?}; expected progression, boss_kill or drop_claimed",
                    truncate_for_message(other)
                ),
            ))
        }
    };
    if let Some(value) = map.get("eventId").filter(|v| !v.is_null()) {
        let Value::String(s) = value else {
            return Err(ValidationError::invalid(
                "eventId",
                "eventId must be a string",
            ));
        };
        check_label(s).map_err(|m| ValidationError::invalid("eventId", format!("eventId {m}")))?;
    }
    Ok(Event {
        player_id,
        ts,
        kind,
        replay_id: None,
    })
}

fn required<T>(value: Option<T>, field: &str) -> Result<T, ValidationError> {
    value.ok_or_else(|| ValidationError::missing(field))
}

/// Reads a required `playerId`-shaped field: `^[A-Za-z0-9_.-]{1,64}$`.
fn player_id_field(map: &Map<String, Value>, key: &str) -> Result<String, ValidationError> {
    match map.get(key) {
        None | Some(Value::Null) => Err(ValidationError::missing(key)),
        Some(Value::String(s)) => {
            check_player_id(s).map_err(|message| ValidationError::invalid(key, message))?;
            Ok(s.clone())
        }
        Some(_) => Err(ValidationError::invalid(
            key,
            format!("{key} must be a string"),
        )),
    }
}

fn label_field(map: &Map<String, Value>, key: &str) -> Result<Option<String>, ValidationError> {
    let path = format!("payload.{key}");
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            check_label(s).map_err(|m| ValidationError::invalid(&path, format!("{path} {m}")))?;
            Ok(Some(s.clone()))
        }
        Some(_) => Err(ValidationError::invalid(
            &path,
            format!("{path} must be a string"),
        )),
    }
}

fn score_field(map: &Map<String, Value>, key: &str) -> Result<Option<u64>, ValidationError> {
    u64_field(map, key, &format!("payload.{key}"), SCORE_PER_EVENT_MAX)
}

/// Reads an optional non-negative integer no larger than `max`. Floats with a fractional
/// part and negative numbers are refused rather than rounded: a score is a count.
fn u64_field(
    map: &Map<String, Value>,
    key: &str,
    path: &str,
    max: u64,
) -> Result<Option<u64>, ValidationError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if v <= max => Ok(Some(v)),
            Some(_) => Err(ValidationError::invalid(
                path,
                format!("{path} must be at most {max}"),
            )),
            None => Err(ValidationError::invalid(
                path,
                format!("{path} must be a non-negative integer"),
            )),
        },
        Some(_) => Err(ValidationError::invalid(
            path,
            format!("{path} must be an integer"),
        )),
    }
}

fn weight_field(map: &Map<String, Value>) -> Result<Option<f64>, ValidationError> {
    const PATH: &str = "payload.weight";
    match map.get("weight") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(w) if w > 0.0 && w <= 1.0 => Ok(Some(w)),
            _ => Err(ValidationError::invalid(
                PATH,
                "payload.weight must be a number in (0, 1]",
            )),
        },
        Some(_) => Err(ValidationError::invalid(
            PATH,
            "payload.weight must be a number",
        )),
    }
}
