//! A `POST /events` body as JSON, before validation: just the fields an event has.
//!
//! Every field is read into a [`Scalar`], which accepts any JSON value and keeps only
//! what validation looks at: null, a string, a number (as the JSON gave it), or "some
//! other kind". So reading never fails on a wrong type; only malformed JSON is an error,
//! and each wrong field is reported by validation with its own path and code, exactly
//! as when the body was a `serde_json::Value`. Unknown keys, and the values of known
//! keys that are not scalars, are skipped without being built. An object that repeats a
//! key, anywhere in the body, is malformed (`invalid_json`, naming the key): parsers
//! disagree on which copy wins, so a proxy or validator in front of the engine could
//! see another event than the one applied.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

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
    /// The optional `eventId`: what makes two identical events two bodies.
    pub event_id: Option<Scalar<'a>>,
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
        let mut keys = UnknownKeys::default();
        while let Some(KeyText(key)) = map.next_key()? {
            keys.push(key);
            map.next_value::<Skipped>()?;
        }
        keys.check()?;
        Ok(Skipped)
    }
}

impl<'de> FromArray<'de> for Skipped {
    fn from_array<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<Skipped>()?.is_some() {}
        Ok(Skipped)
    }
}

/// Any JSON value, read past and dropped; objects inside it are still checked for
/// repeated keys.
impl<'de> Deserialize<'de> for Skipped {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SkippedVisitor)
    }
}

struct SkippedVisitor;

impl<'de> Visitor<'de> for SkippedVisitor {
    type Value = Skipped;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Skipped)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Skipped)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Skipped)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Skipped)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Skipped)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Skipped)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Skipped::from_array(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Skipped::from_object(map)
    }
}

/// An object key's text, borrowed from the body when it has no escapes.
struct KeyText<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for KeyText<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyTextVisitor)
    }
}

struct KeyTextVisitor;

impl<'de> Visitor<'de> for KeyTextVisitor {
    type Value = KeyText<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(KeyText(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(KeyText(Cow::Owned(v.to_owned())))
    }
}

/// The keys of one object that no reader knows, checked for repeats once the object is
/// read: sorting costs O(k log k) however many keys a hostile body packs in, where a
/// check per key would cost O(k²). Empty (no allocation) for ordinary events.
#[derive(Default)]
struct UnknownKeys<'a>(Vec<Cow<'a, str>>);

impl<'a> UnknownKeys<'a> {
    fn push(&mut self, key: Cow<'a, str>) {
        self.0.push(key);
    }

    fn check<E: serde::de::Error>(mut self) -> Result<(), E> {
        self.0.sort_unstable();
        match self.0.windows(2).find(|pair| pair[0] == pair[1]) {
            Some(pair) => Err(duplicate_key(&pair[0])),
            None => Ok(()),
        }
    }
}

/// The error for a key an object repeats; serde_json appends where it was found.
fn duplicate_key<E: serde::de::Error>(key: &str) -> E {
    E::custom(format_args!(
        "duplicate key {:?}",
        super::truncate_for_message(key)
    ))
}

/// The known keys an object has shown so far, one bit each.
#[derive(Default)]
struct KnownKeys(u16);

impl KnownKeys {
    /// Marks key `index` of `names` seen; an error if it was already.
    fn see<E: serde::de::Error>(&mut self, index: usize, names: &[&str]) -> Result<(), E> {
        let bit = 1u16 << index;
        if self.0 & bit != 0 {
            return Err(duplicate_key(names[index]));
        }
        self.0 |= bit;
        Ok(())
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

/// An object key looked up among the names a reader knows: its index there, or its text
/// for a key to skip. Escaped keys match too: serde_json hands them over unescaped.
enum KeyName<'a> {
    Known(usize),
    Unknown(Cow<'a, str>),
}

struct Key<const N: usize>([&'static str; N]);

impl<const N: usize> Key<N> {
    /// The next key of `map`: `None` at the end of the object.
    fn next<'de, A: MapAccess<'de>>(
        map: &mut A,
        names: [&'static str; N],
    ) -> Result<Option<KeyName<'de>>, A::Error> {
        map.next_key_seed(Key(names))
    }
}

impl<'de, const N: usize> DeserializeSeed<'de> for Key<N> {
    type Value = KeyName<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for Key<N> {
    type Value = KeyName<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(match self.0.iter().position(|name| *name == v) {
            Some(index) => KeyName::Known(index),
            None => KeyName::Unknown(Cow::Borrowed(v)),
        })
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(match self.0.iter().position(|name| *name == v) {
            Some(index) => KeyName::Known(index),
            None => KeyName::Unknown(Cow::Owned(v.to_owned())),
        })
    }
}

impl<'de> FromObject<'de> for Event<'de> {
    fn from_object<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        const NAMES: [&str; 5] = ["playerId", "type", "ts", "payload", "eventId"];
        let mut event = Event::default();
        let (mut known, mut unknown) = (KnownKeys::default(), UnknownKeys::default());
        while let Some(key) = Key::next(&mut map, NAMES)? {
            match key {
                KeyName::Known(index) => {
                    known.see(index, &NAMES)?;
                    match index {
                        0 => event.player_id = Some(map.next_value()?),
                        1 => event.kind = Some(map.next_value()?),
                        2 => event.ts = Some(map.next_value()?),
                        3 => event.payload = Some(map.next_value()?),
                        _ => event.event_id = Some(map.next_value()?),
                    }
                }
                KeyName::Unknown(name) => {
                    unknown.push(name);
                    map.next_value::<Skipped>()?;
                }
            }
        }
        unknown.check()?;
        Ok(event)
    }
}

impl<'de> FromObject<'de> for PayloadFields<'de> {
    fn from_object<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        const NAMES: [&str; 8] = [
            "deltaXp", "activity", "bossId", "tier", "points", "dropId", "weight", "source",
        ];
        let mut fields = PayloadFields::default();
        let (mut known, mut unknown) = (KnownKeys::default(), UnknownKeys::default());
        while let Some(key) = Key::next(&mut map, NAMES)? {
            let index = match key {
                KeyName::Known(index) => index,
                KeyName::Unknown(name) => {
                    unknown.push(name);
                    map.next_value::<Skipped>()?;
                    continue;
                }
            };
            known.see(index, &NAMES)?;
            let slot = match index {
                0 => &mut fields.delta_xp,
                1 => &mut fields.activity,
                2 => &mut fields.boss_id,
                3 => &mut fields.tier,
                4 => &mut fields.points,
                5 => &mut fields.drop_id,
                6 => &mut fields.weight,
                _ => &mut fields.source,
            };
            *slot = Some(map.next_value()?);
        }
        unknown.check()?;
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
        while seq.next_element::<Skipped>()?.is_some() {
            len += 1;
        }
        Ok(Batch { entries, len })
    }
}
