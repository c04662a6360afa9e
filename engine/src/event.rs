//! Gameplay events: parsing and validation of hostile input into typed events.
//!
//! Validation is total: every malformed input becomes a [`ValidationError`] naming the
//! offending field with a stable `code`; nothing here panics on input. Unknown payload
//! fields are ignored, as the contract says, so clients can send extra context.

mod raw;
#[cfg(test)]
mod reference;

use raw::Scalar;

use crate::replay::ReplayId;

/// Largest `deltaXp` or `points` one event may carry: bounds XP growth per event so a
/// single forged event cannot overflow counters or dwarf a season.
pub const SCORE_PER_EVENT_MAX: u64 = 1_000_000;
/// Largest number of events in one `POST /events` batch.
pub const BATCH_EVENTS_MAX: usize = 1000;
/// Bounds for the free-text identifiers (`bossId`, `dropId`, `source`, `activity`), in chars.
pub const LABEL_CHARS_MAX: usize = 64;
/// Bounds for `playerId`, in ASCII chars: the contract's `^[A-Za-z0-9_.-]{1,64}$` admits
/// the original Go services' `p1`, UUIDs and platform ids.
pub const PLAYER_ID_CHARS_MIN: usize = 1;
pub const PLAYER_ID_CHARS_MAX: usize = 64;

/// One validated gameplay event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub player_id: String,
    /// When it happened on the client, unix seconds. Informational only: windows are
    /// assigned by the engine's clock so nobody can backdate into a closed window.
    pub ts: u64,
    pub kind: EventKind,
    /// The identity of the signed bytes the event came in: refused if the shard applied
    /// it within the replay window. `None` for events not from a signed body (tests,
    /// benches); the gateway sets it for every event it receives.
    pub replay_id: Option<ReplayId>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum EventKind {
    Progression {
        delta_xp: u64,
        activity: Option<String>,
    },
    BossKill {
        boss_id: String,
        tier: u64,
        points: u64,
    },
    DropClaimed {
        drop_id: String,
        weight: Option<f64>,
        source: Option<String>,
    },
}

impl EventKind {
    /// The wire name of the event type.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::Progression { .. } => "progression",
            EventKind::BossKill { .. } => "boss_kill",
            EventKind::DropClaimed { .. } => "drop_claimed",
        }
    }

    /// XP this event adds, which is also its leaderboard score.
    pub fn score(&self) -> u64 {
        match self {
            EventKind::Progression { delta_xp, .. } => *delta_xp,
            EventKind::BossKill { points, .. } => *points,
            EventKind::DropClaimed { .. } => 0,
        }
    }
}

/// Why an input was refused; `code` is stable and part of the wire contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub code: &'static str,
    pub message: String,
    /// Dotted path of the offending field (`payload.deltaXp`), when one applies.
    pub field: Option<String>,
}

impl ValidationError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        ValidationError {
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn field(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        ValidationError {
            code,
            message: message.into(),
            field: Some(field.to_owned()),
        }
    }

    fn missing(field: &str) -> Self {
        Self::field("missing_field", field, format!("{field} is required"))
    }

    fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::field("invalid_field", field, message)
    }
}

/// Time bounds on the client's `ts`, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct TsPolicy {
    /// How far in the future (engine clock) a `ts` may be, seconds.
    pub skew_s: u64,
    /// How old a `ts` may be, seconds; `None` accepts any age (offline play).
    pub max_age_s: Option<u64>,
}

/// A request body: one event or a batch, each entry validated on its own so that one
/// bad event never blocks the others.
#[derive(Debug)]
pub enum Body {
    Single(Result<Event, ValidationError>),
    Batch(Vec<Result<Event, ValidationError>>),
}

/// Parses a `POST /events` body. The outer error means the request as a whole is
/// refused (not JSON, wrong top-level shape, empty or oversized batch).
///
/// The body is read straight into the few fields an event has (module `raw`), borrowing
/// strings from `bytes` where they hold no escapes, instead of into a
/// `serde_json::Value`: a `Value` allocates a map node and a string per key of every
/// event, which made parsing cost more than verifying the signature and applying the
/// event to the shard together (`parse/engine/*` in the micro benches).
pub fn parse_body(bytes: &[u8], now_s: u64, ts: TsPolicy) -> Result<Body, ValidationError> {
    let top: raw::TopLevel = serde_json::from_slice(bytes).map_err(|e| {
        ValidationError::new("invalid_json", format!("body is not valid JSON: {e}"))
    })?;
    match top {
        raw::Json::Object(event) => Ok(Body::Single(validate_event(&event, now_s, ts))),
        raw::Json::Array(raw::Batch { entries, len }) => {
            if len == 0 {
                return Err(ValidationError::new("empty_batch", "batch has no events"));
            }
            if len > BATCH_EVENTS_MAX {
                return Err(ValidationError::new(
                    "batch_too_large",
                    format!("batch has {len} events; at most {BATCH_EVENTS_MAX} allowed"),
                ));
            }
            let events = entries
                .iter()
                .map(|entry| match entry {
                    raw::Json::Object(event) => validate_event(event, now_s, ts),
                    _ => Err(ValidationError::new(
                        "invalid_json",
                        "each batch entry must be a JSON object",
                    )),
                })
                .collect();
            Ok(Body::Batch(events))
        }
        raw::Json::Null | raw::Json::Other => Err(ValidationError::new(
            "invalid_json",
            "body must be an event object or an array of events",
        )),
    }
}

/// Validates one event object.
fn validate_event(
    event: &raw::Event<'_>,
    now_s: u64,
    ts_policy: TsPolicy,
) -> Result<Event, ValidationError> {
    let player_id = player_id_field(event.player_id.as_ref())?;
    let type_name = match &event.kind {
        None | Some(Scalar::Null) => return Err(ValidationError::missing("type")),
        Some(Scalar::Str(s)) => s.as_ref(),
        Some(_) => return Err(ValidationError::invalid("type", "type must be a string")),
    };
    let ts = u64_field(event.ts.as_ref(), "ts", u64::MAX)?
        .ok_or_else(|| ValidationError::missing("ts"))?;
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
    let payload = match &event.payload {
        None | Some(raw::Json::Null) => return Err(ValidationError::missing("payload")),
        Some(raw::Json::Object(p)) => p,
        Some(raw::Json::Array(_) | raw::Json::Other) => {
            return Err(ValidationError::invalid(
                "payload",
                "payload must be an object",
            ))
        }
    };
    let kind = match type_name {
        "progression" => EventKind::Progression {
            delta_xp: required(
                score_field(payload.delta_xp.as_ref(), "payload.deltaXp")?,
                "payload.deltaXp",
            )?,
            activity: label_field(payload.activity.as_ref(), "payload.activity")?,
        },
        "boss_kill" => EventKind::BossKill {
            boss_id: required(
                label_field(payload.boss_id.as_ref(), "payload.bossId")?,
                "payload.bossId",
            )?,
            tier: u64_field(payload.tier.as_ref(), "payload.tier", u64::MAX)?.unwrap_or(0),
            points: required(
                score_field(payload.points.as_ref(), "payload.points")?,
                "payload.points",
            )?,
        },
        "drop_claimed" => EventKind::DropClaimed {
            drop_id: required(
                label_field(payload.drop_id.as_ref(), "payload.dropId")?,
                "payload.dropId",
            )?,
            weight: weight_field(payload.weight.as_ref())?,
            source: label_field(payload.source.as_ref(), "payload.source")?,
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
    // Only checked: an event id makes its body unique, which is all the replay rule
    // needs of it (see `crate::replay`).
    label_field(event.event_id.as_ref(), "eventId")?;
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

/// Reads the required `playerId`: `^[A-Za-z0-9_.-]{1,64}$`.
fn player_id_field(value: Option<&Scalar<'_>>) -> Result<String, ValidationError> {
    const KEY: &str = "playerId";
    match value {
        None | Some(Scalar::Null) => Err(ValidationError::missing(KEY)),
        Some(Scalar::Str(s)) => {
            check_player_id(s).map_err(|message| ValidationError::invalid(KEY, message))?;
            Ok(s.clone().into_owned())
        }
        Some(_) => Err(ValidationError::invalid(
            KEY,
            format!("{KEY} must be a string"),
        )),
    }
}

/// Checks a player id against `^[A-Za-z0-9_.-]{1,64}$`; the error is a message.
pub fn check_player_id(s: &str) -> Result<(), String> {
    let len_ok = (PLAYER_ID_CHARS_MIN..=PLAYER_ID_CHARS_MAX).contains(&s.len());
    if len_ok
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        Ok(())
    } else {
        Err(format!(
            "playerId must match ^[A-Za-z0-9_.-]{{{PLAYER_ID_CHARS_MIN},{PLAYER_ID_CHARS_MAX}}}$"
        ))
    }
}

/// Checks a free-text label: 1..=64 chars, each one visible text. Control characters,
/// format characters (zero-width spaces, bidi overrides, the byte-order mark), line and
/// paragraph separators, surrogates and noncharacters (U+FFFF, U+FDD0..) are refused:
/// they make two labels look identical, or reorder what an operator reads in a log or
/// a console, while comparing different.
pub fn check_label(s: &str) -> Result<(), String> {
    check_text(s, LABEL_CHARS_MAX)
}

/// Checks free text of 1..=`chars_max` characters by the rule of [`check_label`].
pub fn check_text(s: &str, chars_max: usize) -> Result<(), String> {
    let chars = s.chars().count();
    if chars == 0 || chars > chars_max {
        return Err(format!("must be 1 to {chars_max} characters"));
    }
    if let Some(c) = s.chars().find(|&c| !is_printable(c)) {
        return Err(format!(
            "must contain printable characters only (found U+{:04X})",
            u32::from(c)
        ));
    }
    Ok(())
}

/// Whether `c` is visible text, as far as a label goes.
fn is_printable(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    // Nearly every label is plain ASCII: answer it without the category tables.
    if c.is_ascii() {
        return !c.is_ascii_control();
    }
    let code = u32::from(c);
    let noncharacter = (0xFDD0..=0xFDEF).contains(&code) || code & 0xFFFE == 0xFFFE;
    !noncharacter
        && !matches!(
            c.general_category(),
            GeneralCategory::Control
                | GeneralCategory::Format
                | GeneralCategory::Surrogate
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
        )
}

/// Reads an optional label; `path` names it in errors (`payload.bossId`).
fn label_field(value: Option<&Scalar<'_>>, path: &str) -> Result<Option<String>, ValidationError> {
    match value {
        None | Some(Scalar::Null) => Ok(None),
        Some(Scalar::Str(s)) => {
            check_label(s).map_err(|m| ValidationError::invalid(path, format!("{path} {m}")))?;
            Ok(Some(s.clone().into_owned()))
        }
        Some(_) => Err(ValidationError::invalid(
            path,
            format!("{path} must be a string"),
        )),
    }
}

fn score_field(value: Option<&Scalar<'_>>, path: &str) -> Result<Option<u64>, ValidationError> {
    u64_field(value, path, SCORE_PER_EVENT_MAX)
}

/// Reads an optional non-negative integer no larger than `max`. Floats with a fractional
/// part and negative numbers are refused rather than rounded: a score is a count.
fn u64_field(
    value: Option<&Scalar<'_>>,
    path: &str,
    max: u64,
) -> Result<Option<u64>, ValidationError> {
    match value {
        None | Some(Scalar::Null) => Ok(None),
        Some(Scalar::UInt(v)) if *v <= max => Ok(Some(*v)),
        Some(Scalar::UInt(_)) => Err(ValidationError::invalid(
            path,
            format!("{path} must be at most {max}"),
        )),
        Some(Scalar::Int(_) | Scalar::Float(_)) => Err(ValidationError::invalid(
            path,
            format!("{path} must be a non-negative integer"),
        )),
        Some(Scalar::Str(_) | Scalar::Other) => Err(ValidationError::invalid(
            path,
            format!("{path} must be an integer"),
        )),
    }
}

fn weight_field(value: Option<&Scalar<'_>>) -> Result<Option<f64>, ValidationError> {
    const PATH: &str = "payload.weight";
    let weight = match value {
        None | Some(Scalar::Null) => return Ok(None),
        Some(Scalar::UInt(v)) => *v as f64,
        Some(Scalar::Int(v)) => *v as f64,
        Some(Scalar::Float(v)) => *v,
        Some(Scalar::Str(_) | Scalar::Other) => {
            return Err(ValidationError::invalid(
                PATH,
                "payload.weight must be a number",
            ))
        }
    };
    if weight > 0.0 && weight <= 1.0 {
        Ok(Some(weight))
    } else {
        Err(ValidationError::invalid(
            PATH,
            "payload.weight must be a number in (0, 1]",
        ))
    }
}

/// Keeps echoed client text short in error messages.
pub(crate) fn truncate_for_message(s: &str) -> String {
    s.chars().take(LABEL_CHARS_MAX).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW_S: u64 = 1_764_000_000;
    const TS: TsPolicy = TsPolicy {
        skew_s: 300,
        max_age_s: None,
    };

    fn one(body: &str) -> Result<Event, ValidationError> {
        match parse_body(body.as_bytes(), NOW_S, TS).expect("top level parses") {
            Body::Single(result) => result,
            Body::Batch(_) => panic!("expected a single event"),
        }
    }

    fn field_of(body: &str) -> (String, &'static str) {
        let err = one(body).expect_err("should be refused");
        (err.field.unwrap_or_default(), err.code)
    }

    #[test]
    fn parses_the_three_contract_events() {
        let p = one(r#"{"type":"progression","playerId":"p1x","ts":1730560000,"payload":{"deltaXp":10,"activity":"quest"}}"#).unwrap();
        assert_eq!(p.kind.score(), 10);
        let b = one(r#"{"type":"boss_kill","playerId":"p1x","ts":1730560000,"payload":{"bossId":"dragon_lord","tier":5,"points":2500}}"#).unwrap();
        assert_eq!(
            b.kind,
            EventKind::BossKill {
                boss_id: "dragon_lord".into(),
                tier: 5,
                points: 2500
            }
        );
        let d = one(r#"{"type":"drop_claimed","playerId":"p1x","ts":1730560000,"payload":{"dropId":"epic_sword_001","weight":0.05,"source":"raid_chest","extra":[1]}}"#).unwrap();
        assert_eq!(d.kind.score(), 0);
        assert_eq!(d.kind.type_name(), "drop_claimed");
    }

    #[test]
    fn names_the_offending_field() {
        let base = |payload: &str| {
            format!(r#"{{"type":"progression","playerId":"abc","ts":1,"payload":{payload}}}"#)
        };
        assert_eq!(
            field_of(&base(r#"{"deltaXp":-1}"#)),
            ("payload.deltaXp".into(), "invalid_field")
        );
        assert_eq!(
            field_of(&base(r#"{"deltaXp":1.5}"#)),
            ("payload.deltaXp".into(), "invalid_field")
        );
        assert_eq!(
            field_of(&base(r#"{"deltaXp":"10"}"#)),
            ("payload.deltaXp".into(), "invalid_field")
        );
        assert_eq!(
            field_of(&base(r#"{"deltaXp":1000001}"#)),
            ("payload.deltaXp".into(), "invalid_field")
        );
        assert_eq!(
            field_of(&base(r#"{}"#)),
            ("payload.deltaXp".into(), "missing_field")
        );
        assert!(one(&base(r#"{"deltaXp":1000000}"#)).is_ok());
        assert_eq!(
            field_of(&base(r#"{"deltaXp":1,"activity":""}"#)),
            ("payload.activity".into(), "invalid_field")
        );
        assert_eq!(
            field_of(
                r#"{"type":"boss_kill","playerId":"abc","ts":1,"payload":{"bossId":"x","points":1,"tier":-2}}"#
            ),
            ("payload.tier".into(), "invalid_field")
        );
        assert_eq!(
            field_of(
                r#"{"type":"drop_claimed","playerId":"abc","ts":1,"payload":{"dropId":"x","weight":0}}"#
            ),
            ("payload.weight".into(), "invalid_field")
        );
        assert_eq!(
            field_of(
                r#"{"type":"drop_claimed","playerId":"abc","ts":1,"payload":{"dropId":"a\u0007b"}}"#
            ),
            ("payload.dropId".into(), "invalid_field")
        );
        assert_eq!(
            field_of(r#"{"type":"nope","playerId":"abc","ts":1,"payload":{}}"#),
            ("type".into(), "invalid_field")
        );
        assert_eq!(
            field_of(r#"{"type":"progression","playerId":"a/b","ts":1,"payload":{"deltaXp":1}}"#),
            ("playerId".into(), "invalid_field")
        );
        assert_eq!(
            field_of(r#"{"type":"progression","playerId":"","ts":1,"payload":{"deltaXp":1}}"#),
            ("playerId".into(), "invalid_field")
        );
        assert_eq!(
            field_of(r#"{"type":"progression","playerId":"abc","payload":{"deltaXp":1}}"#),
            ("ts".into(), "missing_field")
        );
        assert_eq!(
            field_of(r#"{"type":"progression","playerId":"abc","ts":1,"payload":[]}"#),
            ("payload".into(), "invalid_field")
        );
        let with_id = |id: &str| {
            format!(
                r#"{{"type":"progression","playerId":"abc","ts":1,"payload":{{"deltaXp":1}},"eventId":{id}}}"#
            )
        };
        assert!(one(&with_id(r#""0f8e4a3c-5b1d-4c8e""#)).is_ok());
        assert!(one(&with_id("null")).is_ok());
        for bad in ["7", r#""""#, &format!("{:?}", "x".repeat(65))] {
            assert_eq!(field_of(&with_id(bad)), ("eventId".into(), "invalid_field"));
        }
    }

    /// The contract's `^[A-Za-z0-9_.-]{1,64}$`: the original README's `p1`, UUIDs and
    /// dotted platform ids pass; anything else, or longer, does not.
    #[test]
    fn player_ids_follow_the_contract() {
        for good in [
            "p1",
            "x",
            "0f8e4a3c-5b1d-4c8e-9a7f-2d6b1e3c4f5a",
            "steam.76561198000000000",
            "a_b-c.d",
            &"z".repeat(PLAYER_ID_CHARS_MAX),
        ] {
            assert_eq!(check_player_id(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "a b",
            "a/b",
            "a:b",
            "é",
            "a\u{0}",
            &"z".repeat(PLAYER_ID_CHARS_MAX + 1),
        ] {
            assert!(check_player_id(bad).is_err(), "{bad:?}");
        }
    }

    /// Invisible and reordering characters would let two labels look alike, or rewrite
    /// what an operator reads; ordinary text in any script passes.
    #[test]
    fn labels_refuse_format_control_and_noncharacters() {
        for bad in [
            "a\u{200B}b",  // zero-width space
            "a\u{202E}b",  // right-to-left override
            "\u{FEFF}ab",  // byte-order mark
            "a\u{2028}b",  // line separator
            "a\u{2029}b",  // paragraph separator
            "a\u{FFFF}",   // noncharacter
            "a\u{FDD0}",   // noncharacter
            "a\u{10FFFE}", // noncharacter
            "a\u{7}b",     // control
            "a\u{85}b",    // control (next line)
            "a\u{E0041}",  // tag character (format)
        ] {
            let err = check_label(bad).unwrap_err();
            assert!(err.contains("printable"), "{bad:?}: {err}");
        }
        for good in [
            "dragon_lord",
            "ドラゴン",
            "épée +1",
            "🐉 raid",
            "a\u{E000}b",
        ] {
            assert_eq!(check_label(good), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn labels_count_characters_not_bytes() {
        let label = "é".repeat(LABEL_CHARS_MAX);
        assert!(check_label(&label).is_ok());
        assert!(check_label(&format!("{label}x")).is_err());
    }

    #[test]
    fn ts_bounds() {
        let at = |ts: u64, policy: TsPolicy| {
            let body = format!(
                r#"{{"type":"progression","playerId":"abc","ts":{ts},"payload":{{"deltaXp":1}}}}"#
            );
            match parse_body(body.as_bytes(), NOW_S, policy).unwrap() {
                Body::Single(r) => r.map(|_| ()).map_err(|e| e.code),
                Body::Batch(_) => unreachable!(),
            }
        };
        assert_eq!(at(NOW_S + 300, TS), Ok(()));
        assert_eq!(at(NOW_S + 301, TS), Err("ts_in_future"));
        assert_eq!(at(0, TS), Ok(()));
        let aged = TsPolicy {
            skew_s: 300,
            max_age_s: Some(3600),
        };
        assert_eq!(at(NOW_S - 3600, aged), Ok(()));
        assert_eq!(at(NOW_S - 3601, aged), Err("ts_too_old"));
    }

    #[test]
    fn batches_validate_each_entry() {
        let body = r#"[{"type":"progression","playerId":"abc","ts":1,"payload":{"deltaXp":1}}, 5, {"type":"progression","playerId":"abc","ts":1,"payload":{}}]"#;
        let Body::Batch(items) = parse_body(body.as_bytes(), NOW_S, TS).unwrap() else {
            panic!("expected a batch")
        };
        assert!(items[0].is_ok());
        assert_eq!(items[1].as_ref().unwrap_err().code, "invalid_json");
        assert_eq!(items[2].as_ref().unwrap_err().code, "missing_field");
    }

    /// JSON text for one value of a field: valid and invalid values of every kind,
    /// escapes, `-0`, integers at and past 64 bits, nesting. Not numbers past `f64`'s
    /// range: see `numbers_out_of_range_matter_only_where_read`.
    fn any_value() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "null",
            "true",
            "[]",
            "[1,{\"a\":[]}]",
            "{}",
            "{\"deltaXp\":1}",
            "0",
            "-0",
            "1",
            "10",
            "-1",
            "1.5",
            "5.0",
            "1e3",
            "1000000",
            "1000001",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "0.05",
            "1",
            "0.0",
            "2",
            "\"\"",
            "\"abc\"",
            "\"p1_x\"",
            "\"a-b\"",
            "\"ab\"",
            "\"quest\"",
            "\"progression\"",
            "\"boss_kill\"",
            "\"drop_claimed\"",
            "\"nope\"",
            "\"pro\\u0067ression\"",
            "\"a\\u0007b\"",
            "\"\\u00e9\\u00e9\"",
            "1764000000",
            "1764000400",
        ])
        .prop_map(str::to_owned)
    }

    /// An object of `keys` (picked with repeats, in any order) and values.
    fn object(keys: Vec<&'static str>, value: BoxedStrategy<String>) -> BoxedStrategy<String> {
        prop::collection::vec((prop::sample::select(keys), value), 0..7)
            .prop_map(|fields| {
                let fields: Vec<String> =
                    fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", fields.join(","))
            })
            .boxed()
    }

    fn any_event() -> BoxedStrategy<String> {
        let payload = object(
            vec![
                "deltaXp",
                "activity",
                "bossId",
                "tier",
                "points",
                "dropId",
                "weight",
                "source",
                "extra",
                "delta\\u0058p",
            ],
            any_value().boxed(),
        );
        let value = prop_oneof![3 => any_value(), 2 => payload].boxed();
        object(
            vec![
                "playerId",
                "type",
                "ts",
                "payload",
                "payload",
                "eventId",
                "extra",
                "player\\u0049d",
            ],
            value,
        )
    }

    fn any_body() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => any_event(),
            2 => prop::collection::vec(prop_oneof![3 => any_event(), 1 => any_value().boxed()], 0..4)
                .prop_map(|entries| format!("[{}]", entries.join(","))),
            1 => any_value(),
        ]
    }

    /// The answer as text, except that broken JSON is compared by its code alone:
    /// serde_json words the same syntax error differently when it skips a value than when
    /// it builds one ("EOF while parsing an object" / "... a value"), and that message is
    /// not part of the contract; the code is.
    fn comparable(answer: Result<Body, ValidationError>) -> String {
        match answer {
            Err(e) if e.message.starts_with("body is not valid JSON") => {
                format!("broken JSON: {} {:?}", e.code, e.field)
            }
            other => format!("{other:?}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Reading bodies straight into typed fields gives exactly what reading them into
        /// a `serde_json::Value` gave: the same events, or the same error code, field and
        /// message, for valid bodies, wrong ones, and any cut of them (broken JSON).
        #[test]
        fn typed_reading_answers_as_the_value_parser_did(
            body in any_body(),
            cut in 0.0f64..1.0,
            whole in any::<bool>(),
            policy in prop_oneof![Just(TS), Just(TsPolicy { skew_s: 300, max_age_s: Some(3600) })],
        ) {
            let bytes = if whole {
                body.as_bytes()
            } else {
                &body.as_bytes()[..(body.len() as f64 * cut) as usize]
            };
            let typed = comparable(parse_body(bytes, NOW_S, policy));
            let model = comparable(reference::parse_body(bytes, NOW_S, policy));
            prop_assert_eq!(typed, model, "body {}", String::from_utf8_lossy(bytes));
        }
    }

    /// A number beyond `f64`'s range is refused wherever it stands, as the `Value` parser
    /// refused it: skipped values are read (not jumped over) so that objects inside them
    /// are checked for repeated keys too.
    #[test]
    fn numbers_out_of_range_are_refused_even_where_skipped() {
        let event = |payload: &str| {
            format!(r#"{{"type":"progression","playerId":"abc","ts":1,"payload":{payload}}}"#)
        };
        let code = |b: &str| parse_body(b.as_bytes(), NOW_S, TS).unwrap_err().code;
        assert_eq!(
            code(&event(r#"{"deltaXp":1,"extra":[1e400]}"#)),
            "invalid_json"
        );
        assert_eq!(code(&event(r#"{"deltaXp":1e400}"#)), "invalid_json");
    }

    /// A repeated key means different events to different parsers: refused, named.
    #[test]
    fn repeated_keys_are_malformed_and_named() {
        let refused = |body: &str, key: &str| {
            let err = parse_body(body.as_bytes(), NOW_S, TS).unwrap_err();
            assert_eq!(err.code, "invalid_json", "{body}");
            assert!(
                err.message.contains(&format!("duplicate key \"{key}\"")),
                "{body}: {}",
                err.message
            );
        };
        let event = |payload: &str| {
            format!(r#"{{"type":"progression","playerId":"abc","ts":1,"payload":{payload}}}"#)
        };
        refused(&event(r#"{"deltaXp":1,"deltaXp":1000000}"#), "deltaXp");
        refused(&event(r#"{"deltaXp":1,"delta\u0058p":1000000}"#), "deltaXp");
        refused(&event(r#"{"deltaXp":1,"note":1,"note":2}"#), "note");
        refused(&event(r#"{"deltaXp":1,"meta":{"a":[{"k":1,"k":2}]}}"#), "k");
        refused(
            r#"{"type":"progression","type":"boss_kill","playerId":"abc","ts":1,"payload":{"deltaXp":1}}"#,
            "type",
        );
        refused(
            &format!(
                "[{},{}]",
                event(r#"{"deltaXp":1}"#),
                event(r#"{"points":1,"points":2}"#)
            ),
            "points",
        );
        // The same key in two different objects is no repeat.
        assert!(one(&event(r#"{"deltaXp":1,"meta":{"deltaXp":2}}"#)).is_ok());
    }

    #[test]
    fn refuses_bad_top_levels() {
        let code = |b: &str| parse_body(b.as_bytes(), NOW_S, TS).unwrap_err().code;
        assert_eq!(code("{"), "invalid_json");
        assert_eq!(code("42"), "invalid_json");
        assert_eq!(code("[]"), "empty_batch");
        let big = format!("[{}]", vec!["{}"; BATCH_EVENTS_MAX + 1].join(","));
        assert_eq!(code(&big), "batch_too_large");
    }
}
