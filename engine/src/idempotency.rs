//! Idempotency keys: a duplicate request is never applied twice.
//!
//! A key lives on the shard `shard_of(key)`, whatever players its request touches. It is
//! reserved (in flight) before any event is applied and completed with the response
//! afterwards, or released when nothing was applied so a retry runs again. Completed
//! keys are remembered for a fixed TTL from their request, in an ordered expiry set
//! (keys rebuilt by recovery or merged from several shards arrive out of order).
//!
//! Memory is bounded by a key count and a byte budget. When either is reached the store
//! refuses new keys ([`Reserve::Full`]) rather than forgetting a live one: forgetting
//! would let a retry apply twice. So that one client cannot take the whole budget from
//! every other, each client host may hold at most a share of both
//! ([`Limits::host_keys_max`], [`Limits::host_bytes_max`]); the host of each key is
//! logged with its completion, so recovery rebuilds the same per-host accounting.
//! Limits are checked when a key is reserved and its response is charged when it
//! completes (its size is not known before), so a budget can be passed by the
//! responses of the requests in flight at that moment, never by more.
//!
//! Responses are remembered in a compact form ([`StoredResponse::compact`]): a batch's
//! results repeat the same shapes, so the form keeps each distinct shape once and the
//! numbers apart, and re-renders the identical bytes on replay.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use crate::codec::{DecodeError, Reader, Writer};

/// Per-entry overhead counted against the byte budget besides key and body (map slot,
/// expiry slot, fingerprint): keeps a flood of tiny keys bounded too.
const ENTRY_OVERHEAD_BYTES: usize = 128;

/// First byte of a compact body; JSON text never starts with it.
const COMPACT_TAG: u8 = 0;
/// Stands for one number in a compact shape; never a byte of UTF-8 text.
const NUMBER_MARK: u8 = 0xFF;
/// Longest digit run turned into a number: 19 digits always fit a `u64`.
const NUMBER_DIGITS_MAX: usize = 19;
/// Largest body a compact form may expand to: far above any response the gateway
/// writes (a 1 MiB request answers with less), so a corrupt form cannot make replay
/// allocate without bound.
pub const EXPANDED_BYTES_MAX: usize = 4 << 20;

/// A remembered response. `body` holds the JSON as sent, or its compact form (first
/// byte [`COMPACT_TAG`]); [`StoredResponse::json`] gives the JSON either way.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredResponse {
    pub status: u16,
    /// The JSON as sent or its compact form; dumps show it as the JSON.
    #[serde(serialize_with = "json_text")]
    pub body: Vec<u8>,
}

/// Serializes a stored body as its JSON text (for dumps).
fn json_text<S: serde::Serializer>(body: &[u8], s: S) -> Result<S::Ok, S::Error> {
    match expand(body) {
        Ok(json) => s.serialize_str(&String::from_utf8_lossy(&json)),
        Err(e) => s.serialize_str(&format!("<undecodable compact body: {e}>")),
    }
}

impl StoredResponse {
    /// Remembers the JSON `json` in its compact form, or as it is when that is not
    /// smaller. The compact form is the body cut after each `},` (a batch's results)
    /// into pieces whose canonical decimal numbers are taken out: each distinct piece
    /// shape is kept once, then each piece is its shape's index and its numbers as
    /// varints. A batch of a thousand events refused for the same reason then costs a
    /// few bytes per event instead of the ~150 of its JSON.
    pub fn compact(status: u16, json: &[u8]) -> Self {
        let body = match compact_form(json) {
            Some(form) if form.len() < json.len() || json.first() == Some(&COMPACT_TAG) => form,
            _ => json.to_vec(),
        };
        StoredResponse { status, body }
    }

    /// The JSON body, byte for byte as first sent.
    pub fn json(&self) -> Result<Cow<'_, [u8]>, DecodeError> {
        expand(&self.body)
    }
}

/// The compact form of `json`, or `None` if it holds a byte the form cannot carry.
fn compact_form(json: &[u8]) -> Option<Vec<u8>> {
    if json.contains(&NUMBER_MARK) {
        return None;
    }
    let mut shapes: Vec<Vec<u8>> = Vec::new();
    let mut shape_ids: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut pieces = Vec::with_capacity(json.len() / 16);
    let mut pieces_count = 0u64;
    let mut shape = Vec::with_capacity(256);
    let mut numbers: Vec<u64> = Vec::new();
    let mut rest = json;
    while !rest.is_empty() {
        let end = piece_end(rest);
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        shape.clear();
        numbers.clear();
        let mut i = 0;
        while i < piece.len() {
            // Text up to the next digit is copied as one run, not byte by byte: most of
            // a piece is text.
            let text = piece[i..]
                .iter()
                .position(u8::is_ascii_digit)
                .unwrap_or(piece.len() - i);
            shape.extend_from_slice(&piece[i..i + text]);
            i += text;
            if i == piece.len() {
                break;
            }
            let digits = piece[i..].iter().take_while(|b| b.is_ascii_digit()).count();
            let canonical = digits == 1 || piece[i] != b'0';
            if canonical && digits <= NUMBER_DIGITS_MAX {
                let value = piece[i..i + digits]
                    .iter()
                    .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
                numbers.push(value);
                shape.push(NUMBER_MARK);
            } else {
                shape.extend_from_slice(&piece[i..i + digits]);
            }
            i += digits;
        }
        let id = match shape_ids.get(&shape) {
            Some(&id) => id,
            None => {
                let id = shapes.len() as u64;
                shapes.push(shape.clone());
                shape_ids.insert(shape.clone(), id);
                id
            }
        };
        let mut w = Writer(&mut pieces);
        w.varint(id);
        for &n in &numbers {
            w.varint(n);
        }
        pieces_count += 1;
    }
    let mut out = Vec::with_capacity(pieces.len() + 64);
    out.push(COMPACT_TAG);
    let mut w = Writer(&mut out);
    w.varint(shapes.len() as u64);
    for shape in &shapes {
        w.bytes(shape);
    }
    w.varint(pieces_count);
    out.extend_from_slice(&pieces);
    Some(out)
}

/// Where the piece that starts `rest` ends: just after its first `},`, or at the end.
fn piece_end(rest: &[u8]) -> usize {
    let mut from = 0;
    while let Some(at) = rest[from..].iter().position(|&b| b == b'}') {
        let brace = from + at;
        if rest.get(brace + 1) == Some(&b',') {
            return brace + 2;
        }
        from = brace + 1;
    }
    rest.len()
}

/// The JSON of a stored body: itself, or its compact form expanded.
fn expand(body: &[u8]) -> Result<Cow<'_, [u8]>, DecodeError> {
    if body.first() != Some(&COMPACT_TAG) {
        return Ok(Cow::Borrowed(body));
    }
    let mut r = Reader::new(&body[1..]);
    let shapes_count = r.len(body.len())?;
    let mut shapes = Vec::with_capacity(shapes_count);
    for _ in 0..shapes_count {
        shapes.push(r.bytes()?);
    }
    let pieces_count = r.len(body.len())?;
    let mut out = Vec::with_capacity(body.len() * 4);
    for _ in 0..pieces_count {
        let id = r.len(shapes_count.saturating_sub(1))?;
        let shape = shapes.get(id).ok_or(DecodeError::TooLong(id))?;
        for &byte in shape.iter() {
            if byte == NUMBER_MARK {
                out.extend_from_slice(r.varint()?.to_string().as_bytes());
            } else {
                out.push(byte);
            }
        }
        if out.len() > EXPANDED_BYTES_MAX {
            return Err(DecodeError::TooLong(out.len()));
        }
    }
    r.finish()?;
    Ok(Cow::Owned(out))
}

/// A store's bounds, per shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Keys (in flight or completed) the store holds at most.
    pub keys_max: usize,
    /// Bytes (keys, responses, per-entry overhead) the store holds at most.
    pub bytes_max: usize,
    /// Keys one client host may hold at most: its share of `keys_max`.
    pub host_keys_max: usize,
    /// Bytes one client host may hold at most: its share of `bytes_max`.
    pub host_bytes_max: usize,
    /// How long a completed key is remembered: the wait a refusal announces when no
    /// completed key would expire sooner.
    pub ttl_ms: u64,
}

#[derive(Debug)]
enum KeyState {
    InFlight {
        fingerprint: [u8; 32],
        /// The client host charged for the key (`None`: not attributable, e.g. rebuilt
        /// by recovery or logged by an older build).
        host: Option<IpAddr>,
    },
    Done {
        fingerprint: [u8; 32],
        response: StoredResponse,
        expires_ms: u64,
        host: Option<IpAddr>,
    },
}

impl KeyState {
    fn host(&self) -> Option<IpAddr> {
        match self {
            KeyState::InFlight { host, .. } | KeyState::Done { host, .. } => *host,
        }
    }

    /// Bytes this entry counts against the budgets.
    fn cost(&self, key: &str) -> usize {
        let body = match self {
            KeyState::InFlight { .. } => 0,
            KeyState::Done { response, .. } => response.body.len(),
        };
        key.len() + ENTRY_OVERHEAD_BYTES + body
    }
}

/// Answer to a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserve {
    /// New key, now in flight: go ahead, then `complete` or `release`.
    Reserved,
    /// Seen with the same body: replay this.
    Replay(StoredResponse),
    /// Seen with the same body and still being processed.
    InFlight,
    /// Seen with a different body.
    Mismatch,
    /// The store, or the requesting host's share of it, is at its limits. A key that
    /// would make room expires in `retry_after_ms` at the soonest.
    Full { retry_after_ms: u64 },
}

/// What one client host holds.
#[derive(Debug, Default)]
struct HostUsage {
    /// Keys the host holds, in flight or completed: checked against its key share.
    keys: usize,
    /// Bytes those keys count (keys, responses, overhead): checked against its byte
    /// share.
    bytes: usize,
    /// Expiry times of the host's completed keys, with their count: the soonest tells
    /// the host honestly when its share frees up.
    expiries: BTreeMap<u64, usize>,
}

/// A completed key, as checkpointed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedKey<'a> {
    pub key: &'a str,
    /// The request body's fingerprint: a retry must match it to be replayed.
    pub fingerprint: &'a [u8; 32],
    /// What a retry is answered, in its stored (possibly compact) form.
    pub response: &'a StoredResponse,
    pub expires_ms: u64,
    /// The client host charged, so a checkpoint keeps each host's share.
    pub host: Option<IpAddr>,
}

#[derive(Debug, Default)]
pub struct IdempotencyStore {
    keys: HashMap<String, KeyState>,
    /// Completed keys by expiry, soonest first; exactly one entry per completed key.
    expiry: BTreeSet<(u64, String)>,
    bytes: usize,
    /// Usage per client host; a host holding nothing has no entry.
    hosts: HashMap<IpAddr, HostUsage>,
}

impl IdempotencyStore {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }

    /// The host a key is charged to.
    pub fn host_of(&self, key: &str) -> Option<IpAddr> {
        self.keys.get(key).and_then(KeyState::host)
    }

    /// When a completed key expires (`None` for unknown or in-flight keys).
    pub fn expires_ms(&self, key: &str) -> Option<u64> {
        match self.keys.get(key) {
            Some(KeyState::Done { expires_ms, .. }) => Some(*expires_ms),
            _ => None,
        }
    }

    /// Bytes held by `host`, or by the whole store for `None`.
    pub fn bytes(&self, host: Option<IpAddr>) -> usize {
        match host {
            None => self.bytes,
            Some(h) => self.hosts.get(&h).map_or(0, |u| u.bytes),
        }
    }

    /// Keys held by `host`.
    pub fn host_keys(&self, host: IpAddr) -> usize {
        self.hosts.get(&host).map_or(0, |u| u.keys)
    }

    pub fn reserve(
        &mut self,
        key: &str,
        fingerprint: [u8; 32],
        host: Option<IpAddr>,
        now_ms: u64,
        limits: Limits,
    ) -> Reserve {
        self.expire(now_ms);
        match self.keys.get(key) {
            Some(KeyState::InFlight { fingerprint: f, .. })
            | Some(KeyState::Done { fingerprint: f, .. })
                if *f != fingerprint =>
            {
                Reserve::Mismatch
            }
            Some(KeyState::InFlight { .. }) => Reserve::InFlight,
            Some(KeyState::Done { response, .. }) => Reserve::Replay(response.clone()),
            None => {
                let state = KeyState::InFlight { fingerprint, host };
                let cost = state.cost(key);
                let store_full =
                    self.keys.len() >= limits.keys_max || self.bytes + cost > limits.bytes_max;
                let usage = host.and_then(|h| self.hosts.get(&h));
                let host_full = usage.is_some_and(|u| {
                    u.keys >= limits.host_keys_max || u.bytes + cost > limits.host_bytes_max
                });
                if store_full || host_full {
                    // Room comes back when a key expires: any key for the store, one of
                    // its own for the host.
                    let soonest = |first: Option<u64>| {
                        first.map_or(limits.ttl_ms, |at| at.saturating_sub(now_ms).max(1))
                    };
                    let store_wait = soonest(self.expiry.first().map(|(at, _)| *at));
                    let host_wait = soonest(
                        usage
                            .and_then(|u| u.expiries.first_key_value())
                            .map(|(at, _)| *at),
                    );
                    let retry_after_ms = match (store_full, host_full) {
                        (true, true) => store_wait.max(host_wait),
                        (true, false) => store_wait,
                        _ => host_wait,
                    };
                    return Reserve::Full { retry_after_ms };
                }
                self.insert(key.to_owned(), state);
                Reserve::Reserved
            }
        }
    }

    /// Remembers the response of a key until `expires_ms`, charged to `host`. Also what
    /// replay calls: a key completed again (a later use after the earlier one expired,
    /// or a rebuilt completion) keeps its latest completion, the log being in order.
    pub fn complete(
        &mut self,
        key: &str,
        fingerprint: [u8; 32],
        response: StoredResponse,
        expires_ms: u64,
        host: Option<IpAddr>,
    ) {
        self.remove(key);
        self.insert(
            key.to_owned(),
            KeyState::Done {
                fingerprint,
                response,
                expires_ms,
                host,
            },
        );
    }

    /// Forgets a reserved key whose request applied nothing.
    pub fn release(&mut self, key: &str) {
        if let Some(KeyState::InFlight { .. }) = self.keys.get(key) {
            self.remove(key);
        }
    }

    /// Drops completed keys whose time is up.
    pub fn expire(&mut self, now_ms: u64) {
        while let Some((expires_ms, _)) = self.expiry.first() {
            if *expires_ms > now_ms {
                break;
            }
            let (_, key) = self.expiry.pop_first().expect("just seen");
            self.remove(&key);
        }
    }

    /// Live completed keys, soonest expiry first (for checkpoints).
    pub fn completed(&self) -> impl Iterator<Item = CompletedKey<'_>> {
        self.expiry
            .iter()
            .filter_map(move |(_, key)| match self.keys.get(key) {
                Some(KeyState::Done {
                    fingerprint,
                    response,
                    expires_ms,
                    host,
                }) => Some(CompletedKey {
                    key: key.as_str(),
                    fingerprint,
                    response,
                    expires_ms: *expires_ms,
                    host: *host,
                }),
                _ => None,
            })
    }

    /// Adds an entry that is not in the store, charging it to the store and its host.
    fn insert(&mut self, key: String, state: KeyState) {
        let cost = state.cost(&key);
        self.bytes += cost;
        if let Some(host) = state.host() {
            let usage = self.hosts.entry(host).or_default();
            usage.keys += 1;
            usage.bytes += cost;
            if let KeyState::Done { expires_ms, .. } = state {
                *usage.expiries.entry(expires_ms).or_default() += 1;
            }
        }
        if let KeyState::Done { expires_ms, .. } = state {
            self.expiry.insert((expires_ms, key.clone()));
        }
        self.keys.insert(key, state);
    }

    /// Removes an entry if present, with everything charged for it.
    fn remove(&mut self, key: &str) {
        let Some(state) = self.keys.remove(key) else {
            return;
        };
        let cost = state.cost(key);
        self.bytes -= cost;
        let expires = match &state {
            KeyState::Done { expires_ms, .. } => Some(*expires_ms),
            KeyState::InFlight { .. } => None,
        };
        if let Some(expires_ms) = expires {
            self.expiry.remove(&(expires_ms, key.to_owned()));
        }
        let Some(host) = state.host() else {
            return;
        };
        let usage = self.hosts.get_mut(&host).expect("a charged host has usage");
        usage.keys -= 1;
        usage.bytes -= cost;
        if let Some(expires_ms) = expires {
            let count = usage.expiries.get_mut(&expires_ms).expect("charged expiry");
            *count -= 1;
            if *count == 0 {
                usage.expiries.remove(&expires_ms);
            }
        }
        if usage.keys == 0 {
            self.hosts.remove(&host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: Limits = Limits {
        keys_max: 1000,
        bytes_max: 1 << 20,
        host_keys_max: 1000,
        host_bytes_max: 1 << 20,
        ttl_ms: 4_000,
    };

    fn response(body: &str) -> StoredResponse {
        StoredResponse {
            status: 202,
            body: body.as_bytes().to_vec(),
        }
    }

    fn host(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, last]))
    }

    #[test]
    fn lifecycle() {
        let mut store = IdempotencyStore::default();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_eq!(store.reserve("k", a, host(1), 0, LIMITS), Reserve::Reserved);
        assert_eq!(store.reserve("k", a, host(1), 1, LIMITS), Reserve::InFlight);
        assert_eq!(store.reserve("k", b, host(1), 1, LIMITS), Reserve::Mismatch);
        store.complete("k", a, response("ok"), 100, host(1));
        assert_eq!(
            store.reserve("k", a, host(1), 99, LIMITS),
            Reserve::Replay(response("ok"))
        );
        assert_eq!(
            store.reserve("k", b, host(1), 99, LIMITS),
            Reserve::Mismatch
        );
        // Expired: the key is new again.
        assert_eq!(
            store.reserve("k", b, host(1), 100, LIMITS),
            Reserve::Reserved
        );
        store.release("k");
        assert!(store.is_empty());
        assert_eq!(store.bytes, 0);
        assert!(store.hosts.is_empty());
    }

    #[test]
    fn limits_refuse_rather_than_forget() {
        let mut store = IdempotencyStore::default();
        let two = Limits {
            keys_max: 2,
            ..LIMITS
        };
        assert_eq!(store.reserve("a", [0; 32], None, 0, two), Reserve::Reserved);
        assert_eq!(store.reserve("b", [0; 32], None, 0, two), Reserve::Reserved);
        // Both in flight: room comes back a TTL after they complete at the soonest.
        assert_eq!(
            store.reserve("c", [0; 32], None, 0, two),
            Reserve::Full {
                retry_after_ms: LIMITS.ttl_ms
            }
        );
        store.complete("a", [0; 32], response("x"), 10, None);
        assert_eq!(
            store.reserve("c", [0; 32], None, 4, two),
            Reserve::Full { retry_after_ms: 6 },
            "the wait is the time until the soonest expiry"
        );
        store.release("b");
        assert_eq!(store.reserve("c", [0; 32], None, 5, two), Reserve::Reserved);
        let tight = Limits {
            bytes_max: ENTRY_OVERHEAD_BYTES + 1,
            ..LIMITS
        };
        let mut small = IdempotencyStore::default();
        assert_eq!(
            small.reserve("k", [0; 32], None, 0, tight),
            Reserve::Reserved
        );
        assert!(matches!(
            small.reserve("j", [0; 32], None, 0, tight),
            Reserve::Full { .. }
        ));
    }

    /// Issue 9, item 2: replaying a log where a key was used, expired, and used again
    /// must end with the latest completion, expiring on its own time.
    #[test]
    fn a_later_completion_of_a_key_replaces_the_earlier_one() {
        let mut store = IdempotencyStore::default();
        store.complete("k", [1; 32], response("first"), 4_000, host(1));
        store.complete("k", [1; 32], response("second"), 9_000, host(2));
        assert_eq!(store.expires_ms("k"), Some(9_000));
        assert_eq!(store.completed().count(), 1);
        // The first completion's expiry must not take the second with it.
        assert_eq!(
            store.reserve("k", [1; 32], host(1), 5_000, LIMITS),
            Reserve::Replay(response("second"))
        );
        assert_eq!(store.host_keys(IpAddr::from([127, 0, 0, 2])), 1);
        assert_eq!(store.host_keys(IpAddr::from([127, 0, 0, 1])), 0);
        store.expire(9_000);
        assert!(store.is_empty());
        assert_eq!(store.bytes, 0);
        assert!(store.hosts.is_empty());
    }

    /// Issue 9, item 5: one host fills its share; another host still gets keys; the
    /// refused host is told when its own soonest key expires.
    #[test]
    fn one_host_cannot_take_more_than_its_share() {
        let limits = Limits {
            keys_max: 100,
            host_keys_max: 3,
            ..LIMITS
        };
        let mut store = IdempotencyStore::default();
        for (i, now) in [(0, 1_000), (1, 2_000), (2, 3_000)] {
            let key = format!("flood-{i}");
            assert_eq!(
                store.reserve(&key, [0; 32], host(2), now, limits),
                Reserve::Reserved
            );
            store.complete(&key, [0; 32], response("{}"), now + 4_000, host(2));
        }
        assert_eq!(
            store.reserve("other", [0; 32], host(9), 3_500, limits),
            Reserve::Reserved
        );
        store.complete("other", [0; 32], response("{}"), 3_600, host(9));
        assert_eq!(
            store.reserve("flood-3", [0; 32], host(2), 3_500, limits),
            Reserve::Full {
                retry_after_ms: 1_500
            },
            "host 2's soonest key expires at 5000, not host 9's at 3600"
        );
        assert_eq!(
            store.reserve("honest", [0; 32], host(1), 3_500, limits),
            Reserve::Reserved
        );
        assert_eq!(
            store.reserve("flood-3", [0; 32], host(2), 5_000, limits),
            Reserve::Reserved,
            "its own expiry frees the host's share"
        );
        let bytes = Limits {
            host_bytes_max: 3 * (ENTRY_OVERHEAD_BYTES + 20),
            ..LIMITS
        };
        let mut store = IdempotencyStore::default();
        let big = "x".repeat(2 * ENTRY_OVERHEAD_BYTES);
        assert_eq!(
            store.reserve("a", [0; 32], host(2), 0, bytes),
            Reserve::Reserved
        );
        store.complete("a", [0; 32], response(&big), 7_000, host(2));
        assert_eq!(
            store.reserve("b", [0; 32], host(2), 0, bytes),
            Reserve::Full {
                retry_after_ms: 7_000
            },
            "the host's bytes are at its share"
        );
        assert_eq!(
            store.reserve("b", [0; 32], host(3), 0, bytes),
            Reserve::Reserved
        );
        assert_eq!(
            store.reserve("c", [0; 32], None, 0, bytes),
            Reserve::Reserved
        );
    }

    #[test]
    fn keys_expire_in_expiry_order_whatever_the_completion_order() {
        let mut store = IdempotencyStore::default();
        store.complete("late", [0; 32], response("a"), 300, None);
        store.complete("early", [0; 32], response("b"), 100, None);
        store.expire(150);
        assert!(store.contains("late") && !store.contains("early"));
        store.expire(300);
        assert!(store.is_empty());
    }

    #[test]
    fn byte_accounting_returns_to_zero() {
        let mut store = IdempotencyStore::default();
        for i in 0..100u64 {
            let key = format!("key-{i}");
            let h = host((i % 4) as u8);
            assert_eq!(
                store.reserve(&key, [0; 32], h, i, LIMITS),
                Reserve::Reserved
            );
            store.complete(&key, [0; 32], response(&"x".repeat(i as usize)), 500 + i, h);
        }
        assert_eq!(store.completed().count(), 100);
        let held: usize = (0..4).map(|h| store.bytes(host(h))).sum();
        assert_eq!(held, store.bytes(None));
        store.expire(1_000);
        assert!(store.is_empty());
        assert_eq!(store.bytes, 0);
        assert!(store.hosts.is_empty());
    }

    fn batch_json(valid: usize, invalid: usize) -> Vec<u8> {
        let mut results = Vec::new();
        for index in 0..valid {
            results.push(format!(
                r#"{{"index":{index},"status":202,"playerId":"player_{index}","type":"progression","xp":{},"level":1,"flagged":false}}"#,
                10 * index
            ));
        }
        for index in valid..valid + invalid {
            results.push(format!(
                r#"{{"index":{index},"status":400,"error":{{"code":"missing_field","message":"payload is required","field":"payload"}}}}"#
            ));
        }
        format!(
            r#"{{"accepted":{valid},"rejected":{invalid},"results":[{}]}}"#,
            results.join(",")
        )
        .into_bytes()
    }

    /// Issue 9, item 5: a batch of one valid and 999 invalid events is remembered in a
    /// small fraction of its JSON, and replays byte for byte.
    #[test]
    fn a_batch_of_repeated_refusals_is_remembered_compactly() {
        let json = batch_json(1, 999);
        let stored = StoredResponse::compact(202, &json);
        assert!(
            stored.body.len() * 20 < json.len(),
            "{} bytes remembered for {} of JSON",
            stored.body.len(),
            json.len()
        );
        assert_eq!(stored.json().unwrap().as_ref(), json.as_slice());
        let accepted = batch_json(1000, 0);
        let stored = StoredResponse::compact(202, &accepted);
        assert!(stored.body.len() * 4 < accepted.len());
        assert_eq!(stored.json().unwrap().as_ref(), accepted.as_slice());
        // Small bodies stay as they are.
        let single = br#"{"status":"accepted"}"#;
        assert_eq!(StoredResponse::compact(202, single).body, single);
    }

    proptest! {
        #[test]
        fn compact_form_round_trips_any_text(parts in proptest::collection::vec(
            prop_oneof![
                "[0-9]{1,25}",
                Just("},".to_owned()),
                "[a-z\"{}:,\\[\\]]{0,12}",
                "\\PC{0,6}",
            ],
            0..60,
        )) {
            let text = parts.concat();
            let stored = StoredResponse::compact(202, text.as_bytes());
            let json = stored.json().unwrap().into_owned();
            prop_assert_eq!(json.as_slice(), text.as_bytes());
            if let Some(form) = compact_form(text.as_bytes()) {
                let json = expand(&form).unwrap().into_owned();
                prop_assert_eq!(json.as_slice(), text.as_bytes());
            }
        }

        #[test]
        fn a_corrupt_compact_form_is_an_error_not_a_panic(
            tail in proptest::collection::vec(any::<u8>(), 0..64)
        ) {
            let mut body = vec![COMPACT_TAG];
            body.extend(tail);
            let _ = expand(&body);
        }
    }
}
