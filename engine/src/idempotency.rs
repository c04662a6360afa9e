//! Idempotency keys: a duplicate request is never applied twice.
//!
//! A key lives on the shard `shard_of(key)`, whatever players its request touches. It is
//! reserved (in flight) before any event is applied and completed with the response
//! afterwards, or released when nothing was applied so a retry runs again. Completed
//! keys are remembered for a fixed TTL from their request; a min-heap on expiry expires
//! them (keys rebuilt by recovery or merged from several shards arrive out of order).
//!
//! Memory is bounded by a key count and a byte budget. When either is reached the store
//! refuses new keys ([`Reserve::Full`]) rather than forgetting a live one: forgetting
//! would let a retry apply twice.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// Per-entry overhead counted against the byte budget besides key and body (map slot,
/// queue slot, fingerprint): keeps a flood of tiny keys bounded too.
const ENTRY_OVERHEAD_BYTES: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredResponse {
    pub status: u16,
    #[serde(serialize_with = "crate::codec::lossy_text")]
    pub body: Vec<u8>,
}

#[derive(Debug)]
enum KeyState {
    InFlight {
        fingerprint: [u8; 32],
    },
    Done {
        fingerprint: [u8; 32],
        response: StoredResponse,
        expires_ms: u64,
    },
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
    /// The store is at its limits.
    Full,
}

#[derive(Debug, Default)]
pub struct IdempotencyStore {
    keys: HashMap<String, KeyState>,
    /// Completed keys by expiry, soonest first.
    expiry: BinaryHeap<Reverse<(u64, String)>>,
    bytes: usize,
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

    pub fn reserve(
        &mut self,
        key: &str,
        fingerprint: [u8; 32],
        now_ms: u64,
        keys_max: usize,
        bytes_max: usize,
    ) -> Reserve {
        self.expire(now_ms);
        match self.keys.get(key) {
            Some(KeyState::InFlight { fingerprint: f })
            | Some(KeyState::Done { fingerprint: f, .. })
                if *f != fingerprint =>
            {
                Reserve::Mismatch
            }
            Some(KeyState::InFlight { .. }) => Reserve::InFlight,
            Some(KeyState::Done { response, .. }) => Reserve::Replay(response.clone()),
            None => {
                let cost = key.len() + ENTRY_OVERHEAD_BYTES;
                if self.keys.len() >= keys_max || self.bytes + cost > bytes_max {
                    return Reserve::Full;
                }
                self.bytes += cost;
                self.keys
                    .insert(key.to_owned(), KeyState::InFlight { fingerprint });
                Reserve::Reserved
            }
        }
    }

    /// Remembers the response of a reserved key until `expires_ms`. Also used by replay
    /// to restore a completed key whose reservation was never logged.
    pub fn complete(
        &mut self,
        key: &str,
        fingerprint: [u8; 32],
        response: StoredResponse,
        expires_ms: u64,
    ) {
        match self.keys.get(key) {
            Some(KeyState::InFlight { .. }) => {}
            Some(KeyState::Done { .. }) => return,
            None => self.bytes += key.len() + ENTRY_OVERHEAD_BYTES,
        }
        self.bytes += response.body.len();
        self.keys.insert(
            key.to_owned(),
            KeyState::Done {
                fingerprint,
                response,
                expires_ms,
            },
        );
        self.expiry.push(Reverse((expires_ms, key.to_owned())));
    }

    /// Forgets a reserved key whose request applied nothing.
    pub fn release(&mut self, key: &str) {
        if let Some(KeyState::InFlight { .. }) = self.keys.get(key) {
            self.keys.remove(key);
            self.bytes -= key.len() + ENTRY_OVERHEAD_BYTES;
        }
    }

    /// Drops completed keys whose time is up.
    pub fn expire(&mut self, now_ms: u64) {
        while let Some(Reverse((expires_ms, _))) = self.expiry.peek() {
            if *expires_ms > now_ms {
                break;
            }
            let Reverse((_, key)) = self.expiry.pop().expect("peeked");
            if let Some(KeyState::Done { response, .. }) = self.keys.remove(&key) {
                self.bytes -= key.len() + ENTRY_OVERHEAD_BYTES + response.body.len();
            }
        }
    }

    /// Live completed keys, soonest expiry first (for checkpoints).
    pub fn completed(&self) -> impl Iterator<Item = (&str, &[u8; 32], &StoredResponse, u64)> {
        let mut order: Vec<&(u64, String)> =
            self.expiry.iter().map(|Reverse(entry)| entry).collect();
        order.sort_unstable();
        order
            .into_iter()
            .filter_map(move |(_, key)| match self.keys.get(key) {
                Some(KeyState::Done {
                    fingerprint,
                    response,
                    expires_ms,
                }) => Some((key.as_str(), fingerprint, response, *expires_ms)),
                _ => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS_MAX: usize = 1000;
    const BYTES_MAX: usize = 1 << 20;

    fn response(body: &str) -> StoredResponse {
        StoredResponse {
            status: 202,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn lifecycle() {
        let mut store = IdempotencyStore::default();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_eq!(
            store.reserve("k", a, 0, KEYS_MAX, BYTES_MAX),
            Reserve::Reserved
        );
        assert_eq!(
            store.reserve("k", a, 1, KEYS_MAX, BYTES_MAX),
            Reserve::InFlight
        );
        assert_eq!(
            store.reserve("k", b, 1, KEYS_MAX, BYTES_MAX),
            Reserve::Mismatch
        );
        store.complete("k", a, response("ok"), 100);
        assert_eq!(
            store.reserve("k", a, 99, KEYS_MAX, BYTES_MAX),
            Reserve::Replay(response("ok"))
        );
        assert_eq!(
            store.reserve("k", b, 99, KEYS_MAX, BYTES_MAX),
            Reserve::Mismatch
        );
        // Expired: the key is new again.
        assert_eq!(
            store.reserve("k", b, 100, KEYS_MAX, BYTES_MAX),
            Reserve::Reserved
        );
        store.release("k");
        assert!(store.is_empty());
        assert_eq!(store.bytes, 0);
    }

    #[test]
    fn limits_refuse_rather_than_forget() {
        let mut store = IdempotencyStore::default();
        assert_eq!(
            store.reserve("a", [0; 32], 0, 2, BYTES_MAX),
            Reserve::Reserved
        );
        assert_eq!(
            store.reserve("b", [0; 32], 0, 2, BYTES_MAX),
            Reserve::Reserved
        );
        assert_eq!(store.reserve("c", [0; 32], 0, 2, BYTES_MAX), Reserve::Full);
        store.complete("a", [0; 32], response("x"), 10);
        store.release("b");
        assert_eq!(
            store.reserve("c", [0; 32], 5, 2, BYTES_MAX),
            Reserve::Reserved
        );
        let tight = ENTRY_OVERHEAD_BYTES + 1;
        let mut small = IdempotencyStore::default();
        assert_eq!(
            small.reserve("k", [0; 32], 0, KEYS_MAX, tight),
            Reserve::Reserved
        );
        assert_eq!(
            small.reserve("j", [0; 32], 0, KEYS_MAX, tight),
            Reserve::Full
        );
    }

    #[test]
    fn keys_expire_in_expiry_order_whatever_the_completion_order() {
        let mut store = IdempotencyStore::default();
        store.complete("late", [0; 32], response("a"), 300);
        store.complete("early", [0; 32], response("b"), 100);
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
            assert_eq!(
                store.reserve(&key, [0; 32], i, KEYS_MAX, BYTES_MAX),
                Reserve::Reserved
            );
            store.complete(&key, [0; 32], response(&"x".repeat(i as usize)), 500 + i);
        }
        assert_eq!(store.completed().count(), 100);
        store.expire(1_000);
        assert!(store.is_empty());
        assert_eq!(store.bytes, 0);
    }
}
