//! A `POST /events` body as JSON, before validation: just the fields an event has.
//!
//! Every field is read into a [`Scalar`], which accepts any JSON value and keeps only
//! what validation looks at: null, a string, a number (as the JSON gave it), or "some
//! other kind". So reading never fails on a wrong type; only malformed JSON is an error,
//! and each wrong field is reported by validation with its own path and code, exactly
//! as when the body was a `serde_json::Value`. Unknown keys, and the values of known
//! keys that are not scalars, are skipped without being built. When a key appears
//! twice the last one wins, as it does in a `serde_json::Map`.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{
    Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};

use super::BATCH_EVENTS_MAX;

/// One JSON value as validation sees it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Scalar<'a> {
    Null,
    /// Borrowed from the body when the string has no escapes.
    Str(Cow<'a, str>),
    /// A non-negative integer.
    UInt(u64),
    /// A negative integer.
    Int(i64),
    /// A number with a fraction or an exponent, an integer too large for 64 bits, or
    /// `-0` (serde_json reads it as a float).
    Float(f64),
    /// A boolean, an array or an object.
    Other,
}

/// A JSON value where the reader wants an object (`O`) or, at the top level, an array
/// (`S`); every other kind is kept as its kind alone.
#[derive(Debug)]
pub(super) enum Json<O, S> {
    Object(O),
    Array(S),
    Null,
    /// A string, number or boolean.
    Other,
}

/// A payload: the object's fields, or what else it was.
pub(super) type Payload<'a> = Json<PayloadFields<'a>, Skipped>;
/// One entry of a batch.
pub(super) type Entry<'a> = Json<Event<'a>, Skipped>;
/// The whole body: one event, or a batch.
pub(super) type TopLevel<'a> = Json<Event<'a>, Batch<'a>>;

/// An event object's fields.
#[derive(Debug, Default)]
pub(super) struct Event<'a> {
    pub player_id: Option<Scalar<'a>>,
    /// The `type` key.
    pub kind: Option<Scalar<'a>>,
    pub ts: Option<Scalar<'a>>,
    pub payload: Option<Payload<'a>>,
}

/// The payload keys of all three event types; validation picks the ones its type uses.
#[derive(Debug, Default)]
pub(super) struct PayloadFields<'a> {
    pub delta_xp: Option<Scalar<'a>>,
    pub activity: Option<Scalar<'a>>,
    pub boss_id: Option<Scalar<'a>>,
    pub tier: Option<Scalar<'a>>,
    pub points: Option<Scalar<'a>>,
    pub drop_id: Option<Scalar<'a>>,
    pub weight: Option<Scalar<'a>>,
    pub source: Option<Scalar<'a>>,
}

/// A batch: at most [`BATCH_EVENTS_MAX`] entries kept; `len` counts them all, so an
/// oversized batch is refused with its size without being held in memory.
#[derive(Debug)]
pub(super) struct Batch<'a> {
    pub entries: Vec<Entry<'a>>,
    pub len: usize,
}

/// A value read past and dropped.
#[derive(Debug)]
pub(super) struct Skipped;

/// Reads an object's entries into `Self`.
trait FromObject<'de>: Sized {
    fn from_object<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

/// Reads an array's elements into `Self`.
trait FromArray<'de>: Sized {
    fn from_array<A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error>;
}

impl<'de> FromObject<'de> for Skipped {
    fn from_object<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Skipped)
    }
}

impl<'de> FromArray<'de> for Skipped {
    fn from_array<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Skipped)
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::UInt(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(u64::try_from(v).map_or(Scalar::Int(v), Scalar::UInt))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Float(v))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Skipped::from_array(seq).map(|_| Scalar::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Skipped::from_object(map).map(|_| Scalar::Other)
    }
}

impl<'de, O: FromObject<'de>, S: FromArray<'de>> Deserialize<'de> for Json<O, S> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor(PhantomData))
    }
}

struct JsonVisitor<O, S>(PhantomData<(O, S)>);

impl<'de, O: FromObject<'de>, S: FromArray<'de>> Visitor<'de> for JsonVisitor<O, S> {
    type Value = Json<O, S>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        O::from_object(map).map(Json::Object)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        S::from_array(seq).map(Json::Array)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Json::Other)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Json::Other)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Json::Other)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Json::Other)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Json::Other)
    }
}

/// An object key looked up among the names a reader knows: its index there, or `None`
/// for a key to skip. Escaped keys match too: serde_json hands them over unescaped.
struct Key<const N: usize>([&'static str; N]);

impl<const N: usize> Key<N> {
    /// The next key of `map`: `None` at the end of the object.
    fn next<'de, A: MapAccess<'de>>(
        map: &mut A,
        names: [&'static str; N],
    ) -> Result<Option<Option<usize>>, A::Error> {
        map.next_key_seed(Key(names))
    }
}

impl<'de, const N: usize> DeserializeSeed<'de> for Key<N> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<const N: usize> Visitor<'_> for Key<N> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|name| *name == v))
    }
}

impl<'de> FromObject<'de> for Event<'de> {
    fn from_object<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut event = Event::default();
        while let Some(key) = Key::next(&mut map, ["playerId", "type", "ts", "payload"])? {
            match key {
                Some(0) => event.player_id = Some(map.next_value()?),
                Some(1) => event.kind = Some(map.next_value()?),
                Some(2) => event.ts = Some(map.next_value()?),
                Some(3) => event.payload = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(event)
    }
}

impl<'de> FromObject<'de> for PayloadFields<'de> {
    fn from_object<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut fields = PayloadFields::default();
        let names = [
            "deltaXp", "activity", "bossId", "tier", "points", "dropId", "weight", "source",
        ];
        while let Some(key) = Key::next(&mut map, names)? {
            let slot = match key {
                Some(0) => &mut fields.delta_xp,
                Some(1) => &mut fields.activity,
                Some(2) => &mut fields.boss_id,
                Some(3) => &mut fields.tier,
                Some(4) => &mut fields.points,
                Some(5) => &mut fields.drop_id,
                Some(6) => &mut fields.weight,
                Some(7) => &mut fields.source,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value()?);
        }
        Ok(fields)
    }
}

impl<'de> FromArray<'de> for Batch<'de> {
    fn from_array<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut entries = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(BATCH_EVENTS_MAX));
        while entries.len() < BATCH_EVENTS_MAX {
            match seq.next_element()? {
                Some(entry) => entries.push(entry),
                None => break,
            }
        }
        let mut len = entries.len();
        // Past the limit: count the rest for the error message, keep none of it.
        while seq.next_element::<IgnoredAny>()?.is_some() {
            len += 1;
        }
        Ok(Batch { entries, len })
    }
}
