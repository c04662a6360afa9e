//! Replays: a signed event is applied at most once within the replay window.
//!
//! A signed body can be re-sent verbatim by anyone who saw it: its signature still
//! matches, and the `Idempotency-Key` header is not signed, so a key (or its absence)
//! tells nothing. An event's identity is therefore what was signed: the body's SHA-256
//! (its first 16 bytes) and, in a batch, the event's position ([`ReplayId`]). Each
//! shard remembers the identities of the events it applied for `REPLAY_WINDOW_SEC`
//! ([`ReplaySet`]); an event whose identity it remembers is refused instead of applied.
//! Two honest identical events differ by an `eventId` in the body, or travel in one
//! batch (their positions differ).
//!
//! The set holds one entry per body per shard (a batch's events on this shard share
//! their body's entry, which marks the positions applied), so batches cost a few bits
//! an event. Its identities come from the accepted events' log records and from
//! checkpoints, so a restart within the window remembers them. Memory is bounded by
//! `REPLAY_ENTRIES_MAX` bodies: the shard refuses new events rather than forget an
//! identity early (forgetting would let its replay apply).

use std::collections::VecDeque;

use hashbrown::hash_table::{self, HashTable};

use crate::event::BATCH_EVENTS_MAX;

/// Bytes of the body's SHA-256 an identity keeps: 2^-64 odds of a collision among
/// 2^32 remembered bodies.
pub const BODY_DIGEST_BYTES: usize = 16;

/// Words of a batch's position bitmap: [`BATCH_EVENTS_MAX`] bits rounded up to 64.
pub const POSITION_WORDS: usize = BATCH_EVENTS_MAX.div_ceil(64);

/// The positions of a batch applied: bit `p % 64` of word `p / 64` is position `p`.
pub type PositionBits = [u64; POSITION_WORDS];

/// The identity of one signed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ReplayId {
    /// The first bytes of the SHA-256 of the exact signed body.
    #[serde(serialize_with = "hex16")]
    pub body: [u8; BODY_DIGEST_BYTES],
    /// The event's position in its batch; `None` for a body of one event.
    pub position: Option<u16>,
}

/// The positions set in `bits`, ascending.
pub fn positions_of(bits: &PositionBits) -> impl Iterator<Item = u16> + '_ {
    bits.iter().enumerate().flat_map(|(w, &word)| {
        (0..64u16)
            .filter(move |b| word & (1 << b) != 0)
            .map(move |b| w as u16 * 64 + b)
    })
}

/// Dumps show the positions as a list, as people read them.
fn position_list<S: serde::Serializer>(
    bits: &Option<Box<PositionBits>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match bits {
        None => s.serialize_none(),
        Some(bits) => s.collect_seq(positions_of(bits)),
    }
}

fn hex16<S: serde::Serializer>(bytes: &[u8; BODY_DIGEST_BYTES], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

impl ReplayId {
    /// The identity of the event at `position` (`None`: the body is one event) of the
    /// body whose SHA-256 is `fingerprint`.
    pub fn new(fingerprint: &[u8; 32], position: Option<usize>) -> Self {
        let mut body = [0; BODY_DIGEST_BYTES];
        body.copy_from_slice(&fingerprint[..BODY_DIGEST_BYTES]);
        ReplayId {
            body,
            position: position.map(|p| u16::try_from(p).expect("batch positions fit u16")),
        }
    }

    fn hash(body: &[u8; BODY_DIGEST_BYTES]) -> u64 {
        // A SHA-256 prefix is already uniform: its first 8 bytes are the hash.
        u64::from_le_bytes(body[..8].try_into().expect("8 bytes"))
    }
}

/// One remembered body.
#[derive(Debug)]
struct Entry {
    body: [u8; BODY_DIGEST_BYTES],
    /// When its first event was applied (engine clock): it is forgotten a window later.
    accepted_ms: u64,
    /// Replays refused since (soft state: a restart forgets it): the ladder that
    /// blocks a player whose events are replayed again and again.
    replays: u8,
    /// The positions applied, for a batch; `None` for a body of one event.
    positions: Option<Box<PositionBits>>,
}

impl Entry {
    fn holds(&self, position: Option<u16>) -> bool {
        match (&self.positions, position) {
            (None, None) => true,
            (Some(words), Some(p)) => words[usize::from(p / 64)] & (1 << (p % 64)) != 0,
            _ => false,
        }
    }

    fn mark(&mut self, position: Option<u16>) {
        if let Some(p) = position {
            let words = self
                .positions
                .get_or_insert_with(|| Box::new([0; POSITION_WORDS]));
            words[usize::from(p / 64)] |= 1 << (p % 64);
        }
    }
}

/// A remembered body as checkpointed: its digest, when its first event was applied and
/// the batch positions applied (`None`: a body of one event). The positions stay the
/// entry's bitmap: a checkpoint is taken on the shard's thread, and a window of busy
/// batches holds thousands of them, so listing each position would pause ingestion
/// (it did: 1,000-event batches at 400 a second raised the batch p99 by half).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Remembered {
    #[serde(serialize_with = "hex16")]
    pub body: [u8; BODY_DIGEST_BYTES],
    pub accepted_ms: u64,
    #[serde(serialize_with = "position_list")]
    pub positions: Option<Box<PositionBits>>,
}

/// The identities one shard applied within the window.
#[derive(Debug, Default)]
pub struct ReplaySet {
    entries: HashTable<Entry>,
    /// Bodies in the order they were remembered, with that time: an item is current
    /// when its entry still has that `accepted_ms` (a body remembered again after it
    /// expired leaves a stale item behind, dropped when it reaches the front).
    order: VecDeque<(u64, [u8; BODY_DIGEST_BYTES])>,
}

impl ReplaySet {
    /// Bodies remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn find(&self, body: &[u8; BODY_DIGEST_BYTES]) -> Option<&Entry> {
        self.entries.find(ReplayId::hash(body), |e| e.body == *body)
    }

    /// Whether the body of `id` has a live entry: another of its events takes no room.
    pub fn remembers_body(&self, id: &ReplayId, now_ms: u64, window_ms: u64) -> bool {
        self.find(&id.body)
            .is_some_and(|e| e.accepted_ms.saturating_add(window_ms) > now_ms)
    }

    /// If `id` was applied within `window_ms` of `now_ms`: counts this replay and returns
    /// how many replays of its body were refused so far (this one included).
    pub fn replayed(&mut self, id: ReplayId, now_ms: u64, window_ms: u64) -> Option<u8> {
        let entry = self
            .entries
            .find_mut(ReplayId::hash(&id.body), |e| e.body == id.body)?;
        let live = entry.accepted_ms.saturating_add(window_ms) > now_ms;
        if !(live && entry.holds(id.position)) {
            return None;
        }
        entry.replays = entry.replays.saturating_add(1);
        Some(entry.replays)
    }

    /// Remembers an applied event (also what log replay calls). A body remembered after
    /// its entry's window ended starts a new window.
    pub fn insert(&mut self, id: ReplayId, accepted_ms: u64, window_ms: u64) {
        let entry = self.live_entry(id.body, accepted_ms, window_ms);
        entry.mark(id.position);
    }

    /// The body's entry, live at `accepted_ms`: the one it has, or a fresh one (an
    /// expired entry starts a new window).
    fn live_entry(
        &mut self,
        body: [u8; BODY_DIGEST_BYTES],
        accepted_ms: u64,
        window_ms: u64,
    ) -> &mut Entry {
        let hash = ReplayId::hash(&body);
        let slot = self
            .entries
            .entry(hash, |e| e.body == body, |e| ReplayId::hash(&e.body));
        let (entry, new_window) = match slot {
            hash_table::Entry::Occupied(occupied) => {
                let entry = occupied.into_mut();
                let expired = entry.accepted_ms.saturating_add(window_ms) <= accepted_ms;
                if expired {
                    entry.accepted_ms = accepted_ms;
                    entry.replays = 0;
                    entry.positions = None;
                }
                (entry, expired)
            }
            hash_table::Entry::Vacant(vacant) => {
                let entry = Entry {
                    body,
                    accepted_ms,
                    replays: 0,
                    positions: None,
                };
                (vacant.insert(entry).into_mut(), true)
            }
        };
        if new_window {
            self.order.push_back((accepted_ms, body));
        }
        entry
    }

    /// Forgets the bodies whose window ended by `now_ms`, oldest first.
    pub fn expire(&mut self, now_ms: u64, window_ms: u64) {
        while let Some(&(accepted_ms, body)) = self.order.front() {
            let hash = ReplayId::hash(&body);
            match self.entries.find_entry(hash, |e| e.body == body) {
                Ok(entry) if entry.get().accepted_ms == accepted_ms => {
                    if accepted_ms.saturating_add(window_ms) > now_ms {
                        break;
                    }
                    entry.remove();
                }
                // Stale: the body was remembered again later, or is gone.
                _ => {}
            }
            self.order.pop_front();
        }
    }

    /// How long until the oldest body is forgotten, at `now_ms` (at least 1 ms): when a
    /// full set has room again.
    pub fn room_in_ms(&self, now_ms: u64, window_ms: u64) -> u64 {
        let oldest = self
            .order
            .iter()
            .find(|(at, body)| self.find(body).is_some_and(|e| e.accepted_ms == *at));
        oldest.map_or(window_ms, |(at, _)| {
            at.saturating_add(window_ms).saturating_sub(now_ms).max(1)
        })
    }

    /// The remembered bodies, oldest first (for checkpoints).
    pub fn remembered(&self) -> impl Iterator<Item = Remembered> + '_ {
        self.order.iter().filter_map(|(at, body)| {
            let entry = self.find(body).filter(|e| e.accepted_ms == *at)?;
            Some(Remembered {
                body: *body,
                accepted_ms: *at,
                positions: entry.positions.clone(),
            })
        })
    }

    /// Restores a checkpointed body.
    pub fn restore(&mut self, remembered: Remembered, window_ms: u64) {
        let Remembered {
            body,
            accepted_ms,
            positions,
        } = remembered;
        let entry = self.live_entry(body, accepted_ms, window_ms);
        if let Some(bits) = positions {
            let words = entry
                .positions
                .get_or_insert_with(|| Box::new([0; POSITION_WORDS]));
            for (word, restored) in words.iter_mut().zip(bits.iter()) {
                *word |= restored;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW_MS: u64 = 60_000;

    fn id(n: u8, position: Option<u16>) -> ReplayId {
        ReplayId::new(&[n; 32], position.map(usize::from))
    }

    #[test]
    fn an_identity_is_remembered_for_the_window_only() {
        let mut set = ReplaySet::default();
        set.insert(id(1, None), 1_000, WINDOW_MS);
        assert_eq!(set.replayed(id(1, None), 1_000, WINDOW_MS), Some(1));
        assert_eq!(set.replayed(id(1, None), 60_999, WINDOW_MS), Some(2));
        assert_eq!(set.replayed(id(2, None), 2_000, WINDOW_MS), None);
        // A batch of one is another body than the event alone.
        assert_eq!(set.replayed(id(1, Some(0)), 2_000, WINDOW_MS), None);
        assert_eq!(set.replayed(id(1, None), 61_000, WINDOW_MS), None);
        set.expire(60_999, WINDOW_MS);
        assert_eq!(set.len(), 1);
        set.expire(61_000, WINDOW_MS);
        assert!(set.is_empty());
    }

    #[test]
    fn a_batch_marks_each_position_applied() {
        let mut set = ReplaySet::default();
        for p in [0, 3, 999] {
            set.insert(id(7, Some(p)), 5_000, WINDOW_MS);
        }
        assert_eq!(set.len(), 1, "one entry per body");
        for p in [0, 3, 999] {
            assert!(set.replayed(id(7, Some(p)), 6_000, WINDOW_MS).is_some());
        }
        for p in [1, 64, 998] {
            assert_eq!(set.replayed(id(7, Some(p)), 6_000, WINDOW_MS), None);
        }
        let remembered: Vec<_> = set.remembered().collect();
        let positions: Vec<u16> = positions_of(remembered[0].positions.as_ref().unwrap()).collect();
        assert_eq!(positions, [0, 3, 999]);
    }

    #[test]
    fn a_body_remembered_again_after_its_window_starts_a_new_one() {
        let mut set = ReplaySet::default();
        set.insert(id(1, None), 0, WINDOW_MS);
        set.insert(id(2, None), 30_000, WINDOW_MS);
        set.insert(id(1, None), 70_000, WINDOW_MS);
        assert_eq!(
            set.room_in_ms(70_000, WINDOW_MS),
            20_000,
            "body 2 goes first"
        );
        set.expire(90_000, WINDOW_MS);
        assert_eq!(set.len(), 1);
        assert_eq!(set.replayed(id(1, None), 129_999, WINDOW_MS), Some(1));
        let remembered: Vec<_> = set.remembered().collect();
        assert_eq!(remembered.len(), 1);
        assert_eq!(remembered[0].accepted_ms, 70_000);
    }

    /// The README's memory figures: a 40-byte table entry and 24 bytes of queue per body.
    #[test]
    fn an_entry_costs_what_the_readme_says() {
        assert_eq!(std::mem::size_of::<Entry>(), 40);
        assert_eq!(std::mem::size_of::<(u64, [u8; BODY_DIGEST_BYTES])>(), 24);
        assert_eq!(std::mem::size_of::<[u64; POSITION_WORDS]>(), 128);
    }

    #[test]
    fn restored_bodies_answer_as_the_originals() {
        let mut set = ReplaySet::default();
        set.insert(id(1, None), 1_000, WINDOW_MS);
        set.insert(id(2, Some(5)), 2_000, WINDOW_MS);
        set.insert(id(2, Some(9)), 2_000, WINDOW_MS);
        let mut restored = ReplaySet::default();
        for r in set.remembered() {
            restored.restore(r, WINDOW_MS);
        }
        assert_eq!(
            set.remembered().collect::<Vec<_>>(),
            restored.remembered().collect::<Vec<_>>()
        );
        assert_eq!(restored.replayed(id(2, Some(9)), 3_000, WINDOW_MS), Some(1));
        assert_eq!(restored.replayed(id(2, Some(6)), 3_000, WINDOW_MS), None);
    }
}
