//! Model-based tests: every operation runs against both the `SkipList` and a `BTreeMap`, which
//! is the specification, and their answers must agree after every step.
//!
//! Two key spaces: a small one, so that most inserts update and most removes hit, and the list
//! keeps oscillating around a few dozen members; and a large one, so the list grows to thousands
//! of members and several levels. Operations that need a present key pick one through the model
//! so they hit even in the large space.

use std::collections::BTreeMap;

use liveops_engine::skiplist::SkipList;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Insert {
        key: u32,
        value: u32,
    },
    /// Overwrites the first present key at or after `selector` (wrapping).
    UpdatePresent {
        selector: u32,
        value: u32,
    },
    /// Removes the first present key at or after `selector` (wrapping).
    RemovePresent {
        selector: u32,
    },
    /// Removes the first absent key at or after `key`.
    RemoveAbsent {
        key: u32,
    },
    Get {
        key: u32,
    },
    /// Ranks the first present key at or after `selector`, or `selector` when the list is empty.
    RankPresent {
        selector: u32,
    },
    Rank {
        key: u32,
    },
    CountLess {
        key: u32,
    },
    /// Rank is `selector % (len + 3)`, so past-the-end ranks come up too.
    GetByRank {
        selector: usize,
    },
    IterFromRank {
        selector: usize,
        take_count: usize,
    },
    /// What a leaderboard page selection asks of one shard's list: evenly spaced pivots
    /// from a rank interval (`get_by_rank`), each pivot's count of keys ahead
    /// (`count_less`, also just past it), and a walk from that count (`iter_from_rank`).
    /// The interval is `from = selector % (len + 1)` up to `from + width`, clipped.
    SpacedPivots {
        selector: usize,
        width: usize,
        pivots: usize,
    },
}

/// Draws an op as a flat tuple of numbers and decodes it, rather than as a `prop_oneof!` of
/// per-variant strategies: the tuple generates several times faster in debug builds, which is
/// what keeps thousands of ops per case affordable. The first number picks the variant, in
/// proportion to its share of 0..26.
fn op_strategy(key_end: u32) -> impl Strategy<Value = Op> {
    (0..26u8, 0..key_end, any::<u32>(), any::<usize>()).prop_map(
        |(variant, key, value, selector)| match variant {
            0..=5 => Op::Insert { key, value },
            6..=7 => Op::UpdatePresent {
                selector: key,
                value,
            },
            8..=10 => Op::RemovePresent { selector: key },
            11 => Op::RemoveAbsent { key },
            12..=13 => Op::Get { key },
            14..=15 => Op::RankPresent { selector: key },
            16 => Op::Rank { key },
            17..=18 => Op::CountLess { key },
            19..=21 => Op::GetByRank { selector },
            22..=23 => Op::IterFromRank {
                selector,
                take_count: value as usize % 40,
            },
            _ => Op::SpacedPivots {
                selector,
                width: value as usize % 300,
                pivots: 1 + (value >> 16) as usize % 16,
            },
        },
    )
}

/// The first model key at or after `selector`, wrapping to the smallest; `None` when empty.
fn present_key(model: &BTreeMap<u32, u32>, selector: u32) -> Option<u32> {
    model
        .range(selector..)
        .next()
        .or_else(|| model.iter().next())
        .map(|(key, _)| *key)
}

fn absent_key(model: &BTreeMap<u32, u32>, mut key: u32) -> u32 {
    while model.contains_key(&key) {
        key += 1;
    }
    key
}

/// Applies `op` to both and asserts they agree on its result and on `len`.
fn apply(list: &mut SkipList<u32, u32>, model: &mut BTreeMap<u32, u32>, op: &Op) {
    match *op {
        Op::Insert { key, value } => {
            assert_eq!(list.insert(key, value), model.insert(key, value), "{op:?}");
        }
        Op::UpdatePresent { selector, value } => {
            let key = present_key(model, selector).unwrap_or(selector);
            assert_eq!(list.insert(key, value), model.insert(key, value), "{op:?}");
        }
        Op::RemovePresent { selector } => {
            let key = present_key(model, selector).unwrap_or(selector);
            assert_eq!(list.remove(&key), model.remove(&key), "{op:?} key {key}");
        }
        Op::RemoveAbsent { key } => {
            let key = absent_key(model, key);
            assert_eq!(list.remove(&key), None, "{op:?} key {key}");
        }
        Op::Get { key } => {
            assert_eq!(list.get(&key), model.get(&key), "{op:?}");
        }
        Op::RankPresent { selector } => {
            let key = present_key(model, selector).unwrap_or(selector);
            let expected = model.contains_key(&key).then(|| model.range(..key).count());
            assert_eq!(list.rank(&key), expected, "{op:?} key {key}");
        }
        Op::Rank { key } => {
            let expected = model.contains_key(&key).then(|| model.range(..key).count());
            assert_eq!(list.rank(&key), expected, "{op:?}");
        }
        Op::CountLess { key } => {
            assert_eq!(list.count_less(&key), model.range(..key).count(), "{op:?}");
        }
        Op::GetByRank { selector } => {
            let rank = selector % (model.len() + 3);
            assert_eq!(list.get_by_rank(rank), model.iter().nth(rank), "{op:?}");
        }
        Op::IterFromRank {
            selector,
            take_count,
        } => {
            let rank = selector % (model.len() + 3);
            let iter = list.iter_from_rank(rank);
            assert_eq!(iter.len(), model.len().saturating_sub(rank), "{op:?}");
            let actual: Vec<_> = iter.take(take_count).collect();
            let expected: Vec<_> = model.iter().skip(rank).take(take_count).collect();
            assert_eq!(actual, expected, "{op:?}");
        }
        Op::SpacedPivots {
            selector,
            width,
            pivots,
        } => {
            let from = selector % (model.len() + 1);
            let to = (from + width).min(model.len());
            let keys: Vec<u32> = model.keys().copied().collect();
            for i in 0..pivots {
                let rank = from + i * (to - from) / pivots;
                let Some((&pivot, _)) = list.get_by_rank(rank) else {
                    assert_eq!(rank, model.len(), "{op:?}: only the end has no key");
                    continue;
                };
                assert_eq!(pivot, keys[rank], "{op:?}");
                assert_eq!(list.count_less(&pivot), rank, "{op:?}");
                // Just past the pivot (present or not): the pivot itself is ahead too.
                if let Some(past) = pivot.checked_add(1) {
                    assert_eq!(list.count_less(&past), rank + 1, "{op:?}");
                }
                let walked: Vec<u32> = list
                    .iter_from_rank(list.count_less(&pivot))
                    .take(3)
                    .map(|(k, _)| *k)
                    .collect();
                let expected: Vec<u32> = keys.iter().skip(rank).take(3).copied().collect();
                assert_eq!(walked, expected, "{op:?}");
            }
        }
    }
    assert_eq!(list.len(), model.len(), "len after {op:?}");
    assert_eq!(list.is_empty(), model.is_empty(), "is_empty after {op:?}");
}

fn assert_same_contents(list: &SkipList<u32, u32>, model: &BTreeMap<u32, u32>) {
    assert!(list.iter().eq(model.iter()), "iteration differs");
    assert_eq!(list.first(), model.iter().next());
    for (rank, (key, value)) in model.iter().enumerate() {
        assert_eq!(list.get_by_rank(rank), Some((key, value)));
        assert_eq!(list.rank(key), Some(rank));
    }
}

fn run(seed: u64, ops: &[Op]) {
    let mut list = SkipList::with_seed(seed);
    let mut model = BTreeMap::new();
    for op in ops {
        apply(&mut list, &mut model, op);
    }
    assert_same_contents(&list, &model);
    list.clear();
    model.clear();
    assert_same_contents(&list, &model);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn small_key_space_matches_btreemap(
        seed in any::<u64>(),
        ops in prop::collection::vec(op_strategy(64), 1..4000),
    ) {
        run(seed, &ops);
    }

    #[test]
    fn large_key_space_matches_btreemap(
        seed in any::<u64>(),
        ops in prop::collection::vec(op_strategy(1_000_000_000), 1..4000),
    ) {
        run(seed, &ops);
    }
}

/// 100 000 operations from a fixed xorshift stream: reproducible without proptest's shrinking,
/// and long enough for the list to grow past a thousand members, drain to empty, and refill,
/// so levels are raised and lowered and freed slots are reused many times.
#[test]
fn seeded_hundred_thousand_ops_match_btreemap() {
    const OP_COUNT: u32 = 100_000;
    const KEY_END: u32 = 4096;
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next_random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };

    let mut list = SkipList::with_seed(0xC0FFEE);
    let mut model = BTreeMap::new();
    let mut peak_len = 0;
    let mut drained_count = 0;
    for step in 0..OP_COUNT {
        // Alternate 10 000-op phases that favour inserts and removes, so the size swings widely.
        let inserting_phase = (step / 10_000) % 2 == 0;
        let random = next_random();
        let key = (random >> 32) as u32 % KEY_END;
        let value = random as u32;
        let op = match random % 16 {
            0..=4 if inserting_phase => Op::Insert { key, value },
            0..=4 => Op::RemovePresent { selector: key },
            5 if inserting_phase => Op::RemovePresent { selector: key },
            5 => Op::Insert { key, value },
            6 => Op::UpdatePresent {
                selector: key,
                value,
            },
            7 => Op::RemoveAbsent { key },
            8 => Op::Get { key },
            9 => Op::RankPresent { selector: key },
            10 => Op::Rank { key },
            11 => Op::CountLess { key },
            12 | 13 => Op::GetByRank {
                selector: random as usize,
            },
            _ => Op::IterFromRank {
                selector: random as usize,
                take_count: (random >> 8) as usize % 40,
            },
        };
        let was_empty = list.is_empty();
        apply(&mut list, &mut model, &op);
        peak_len = peak_len.max(list.len());
        drained_count += usize::from(!was_empty && list.is_empty());
        if step % 10_000 == 9_999 {
            assert_same_contents(&list, &model);
        }
    }
    assert_same_contents(&list, &model);
    assert!(
        peak_len > 1000,
        "peak len {peak_len}: the stream no longer grows the list"
    );
    assert!(
        drained_count >= 3,
        "drained {drained_count} times: the stream no longer empties it"
    );
}
