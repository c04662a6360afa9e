//! JSON bodies that repeat no key.
//!
//! RFC 8259 leaves the meaning of a repeated object key to each parser: serde_json keeps
//! the last copy, others keep the first. A signed body `{"deltaXp":1,"deltaXp":1000000}`
//! would then mean one thing to a validator or proxy in front of the engine and another
//! to the engine, so every body the engine reads refuses repeated keys, at any depth.
//! Event bodies get the same rule from their typed reader (`event::raw`); this module
//! serves the other bodies (claims, receipts, admin requests), which are read into a
//! [`serde_json::Value`].

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Parses `bytes` as JSON, refusing an object anywhere in it that repeats a key; the
/// error names the key and where it was found.
pub fn parse_unique(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<Unique>(bytes).map(|unique| unique.0)
}

/// A [`Value`] read with the rule above.
struct Unique(Value);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Unique;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Unique, E> {
        Ok(Unique(Value::Null))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Unique, E> {
        Ok(Unique(Value::Bool(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Unique, E> {
        Ok(Unique(Value::from(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Unique, E> {
        Ok(Unique(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Unique, E> {
        Ok(Unique(
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }

    fn visit_str<E>(self, v: &str) -> Result<Unique, E> {
        Ok(Unique(Value::String(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Unique, E> {
        Ok(Unique(Value::String(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
        let mut items = Vec::new();
        while let Some(Unique(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Unique(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Unique(value) = map.next_value()?;
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate key {:?}",
                    crate::event::truncate_for_message(&key)
                )));
            }
            object.insert(key, value);
        }
        Ok(Unique(Value::Object(object)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_are_refused_at_any_depth_and_named() {
        for body in [
            r#"{"playerId":"a","playerId":"b"}"#,
            r#"{"x":{"item":1,"item":2}}"#,
            r#"[{"a":1},{"b":[{"item":1,"it\u0065m":2}]}]"#,
        ] {
            let err = parse_unique(body.as_bytes()).unwrap_err().to_string();
            assert!(err.starts_with("duplicate key"), "{body}: {err}");
        }
        let err = parse_unique(br#"{"item":1,"item":2}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"item\""), "{err}");
    }

    #[test]
    fn bodies_without_repeats_read_as_serde_json_reads_them() {
        for body in [
            r#"{"a":1,"b":[1,2,{"a":-3}],"c":{"d":null,"e":true,"f":1.5,"g":"h\u00e9"}}"#,
            "[]",
            "42",
            r#""text""#,
        ] {
            let ours = parse_unique(body.as_bytes()).unwrap();
            let theirs: Value = serde_json::from_slice(body.as_bytes()).unwrap();
            assert_eq!(ours, theirs, "{body}");
        }
        assert!(parse_unique(b"{").is_err());
    }
}
