//! An order-statistic skip list: a sorted set of unique keys, each with a value, that also
//! answers "what is the rank of this key" and "which key has this rank" in O(log n).
//!
//! # Overview
//!
//! This is the structure behind Redis's sorted sets (`zskiplist`). Every node sits on level 0
//! and, with probability 1/4 per extra level, on the levels above it, so level `i` holds about
//! `n / 4^i` nodes. A search starts at the top level of the head sentinel and moves right while
//! the next key is smaller, dropping a level whenever it would overshoot; each level skips about
//! four nodes of the level below, so a search visits O(log n) nodes.
//!
//! # Complexity
//!
//! | operation                                          | time                         |
//! | -------------------------------------------------- | ---------------------------- |
//! | `insert`, `remove`, `get`, `rank`, `count_less`    | O(log n) expected            |
//! | `get_by_rank`, `iter_from_rank` (to start)         | O(log n) expected            |
//! | iterator step, `len`, `first`                      | O(1)                         |
//! | `from_sorted` (build from n ascending keys)        | O(n)                         |
//!
//! Memory per member is one slot (key, value, 1 B height, padded) plus on average 4/3 levels of
//! 12 B: about 40 B for `u64` keys and values.
//!
//! The bounds are expected over the level generator's draws, which do not depend on the keys.
//! The n-th new key always gets the n-th draw, so with a known seed someone who controls the
//! order of inserts could cluster the tall nodes and make searches linear; `with_seed` takes an
//! unpredictable seed where keys come from untrusted input.
//!
//! # Why spans give rank
//!
//! Give the head position 0, the member of rank `r` position `r + 1`, and the end of every
//! level position `len + 1`. Each link from a node to its successor on a level stores its span:
//! the successor's position minus the node's position, i.e. how many level-0 steps the link
//! jumps. A search that sums the spans of the links it follows therefore knows the position of
//! the node it stands on, which gives `rank` and `count_less` for free. `get_by_rank` runs the
//! same walk steered by positions instead of keys: follow a link only if the running sum stays
//! at most the target. Insert and remove fix up only the links they pass through on the way
//! down (one per level), so spans cost O(log n) to maintain.
//!
//! # Why an arena
//!
//! Nodes live in one `Vec` addressed by `u32` indices instead of behind pointers. That keeps the
//! implementation in safe Rust (a skip list is a graph with shared predecessors, which owned
//! boxes cannot express), makes each reference half the size of a pointer, and keeps memory
//! bounded under churn: a removed node's slot and its levels go onto free lists and are reused
//! by the next insert, so a list that oscillates around `n` members never holds more than its
//! peak. Dropping the list drops two `Vec`s rather than walking ten million nodes.
//!
//! Capacity: indices and spans are `u32`, so a list holds at most `u32::MAX - 2` members (see
//! `MAX_LEN`); inserting beyond that panics.

use std::cmp::Ordering;
use std::fmt;
use std::iter::FusedIterator;
use std::mem;
use std::num::NonZeroU8;

/// The most levels a node, and so the head sentinel, can have.
///
/// With p = 1/4 a list of `n` members is expected to reach `log4(n)` levels: 12 for the ten
/// million members the benches use, 16 for the four billion members `u32` indices can address. 32 leaves ample room above that, matches Redis's `ZSKIPLIST_MAXLEVEL`, and costs only
/// the head's 32 × 12 B. It is also exactly what one 64-bit draw yields (see `random_height`).
const MAX_LEVEL: usize = 32;

/// The end of every level, and the empty free list. Arena indices stay below it because
/// `insert` refuses to grow the list past `MAX_LEN`.
const NIL: u32 = u32::MAX;

/// Most members a list holds. Keeps every arena index below `NIL`, and keeps the end position
/// `len + 1` a `u32` span even while an insert adds one to it before splitting it.
const MAX_LEN: usize = (u32::MAX - 2) as usize;

/// The head sentinel's levels are the first `MAX_LEVEL` entries of the level pool, so a walk
/// treats the head like any node: "the node whose levels start at this offset".
const HEAD_LEVELS_START: u32 = 0;

/// Seed used by `new`. Fixed so that two runs over the same operations build identical lists,
/// which keeps benches and bug reports reproducible.
const DEFAULT_SEED: u64 = 0x5EED_1157_0000_0001;

/// One link of one node on one level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Level {
    /// Arena index of the successor on this level, or `NIL`.
    next: u32,
    /// Offset of the successor's levels, or `NIL`. It lives in the link rather than in the
    /// successor's slot because a walk that had to read the slot before it could find the levels
    /// would wait for two dependent cache misses per step. With the offset here it fetches the
    /// successor's key and levels at once, which measured 1.8x to 2.7x faster searches at one to
    /// ten million members, for 4 B per level. `get_by_rank` needs only spans, so it never
    /// touches a slot until it has arrived.
    next_levels_start: u32,
    /// Positions from this node to `next` (see the module docs). Meaningful for the head only on
    /// levels below `SkipList::level_count`.
    span: u32,
}

const LEVEL_UNLINKED: Level = Level {
    next: NIL,
    next_levels_start: NIL,
    span: 1,
};

struct Node<K, V> {
    key: K,
    value: V,
    /// How many consecutive levels the node has in `SkipList::levels`, at the offset its
    /// predecessors' links carry.
    ///
    /// `NonZeroU8` (heights are 1..=32) leaves the value 0 free, which lets `Slot` use it as the
    /// discriminant instead of adding a tag word to every slot.
    height: NonZeroU8,
}

enum Slot<K, V> {
    Occupied(Node<K, V>),
    /// A reusable slot: the arena index of the next vacant slot, or `NIL`. The free list is
    /// threaded through the slots themselves so that `remove` never allocates.
    Vacant {
        next_free: u32,
    },
}

/// Sorted set of unique keys, ascending by `Ord`, each with a value, with O(log n) rank.
///
/// Levels are stored in one shared pool (`levels`) rather than as a `Box<[Level]>` per node: a
/// box would cost a 16 B fat pointer plus an allocator chunk of at least 16 B per node, and an
/// allocation per insert. The pool stores exactly `height` levels per node, contiguously, found
/// through the 4 B offset that every link to the node carries. Freed level blocks are reused only by nodes of the same height,
/// through one free list per height, so blocks never need splitting or compaction; the pool
/// stays bounded by the peak number of live nodes of each height.
pub struct SkipList<K, V> {
    /// Node arena. Links are indices into it.
    slots: Vec<Slot<K, V>>,
    /// Level pool: the head's `MAX_LEVEL` levels, then each node's block of `height` levels.
    levels: Vec<Level>,
    /// First vacant slot, or `NIL`.
    free_slot: u32,
    /// `free_levels[h - 1]` is the first free block of `h` levels, or `NIL`. A free block's
    /// first level's `next` links to the following free block of the same height.
    free_levels: [u32; MAX_LEVEL],
    /// Number of head levels in use: the height of the tallest member, or 1 when empty.
    level_count: usize,
    len: usize,
    /// xorshift64* state; never zero, or the generator would only ever return zero.
    rng_state: u64,
}

/// Ascending iterator over a `SkipList`'s entries. Each step follows one level-0 link.
pub struct Iter<'a, K, V> {
    list: &'a SkipList<K, V>,
    /// Arena index of the next entry to yield, or `NIL`.
    next: u32,
    /// Offset of that entry's levels, whose level 0 leads on.
    next_levels_start: u32,
    /// Entries left, so `size_hint` is exact.
    remaining: usize,
}

impl<K: Ord, V> SkipList<K, V> {
    /// An empty list whose level generator starts from a fixed seed, so the same operations
    /// always build the same list.
    pub fn new() -> Self {
        Self::with_seed(DEFAULT_SEED)
    }

    /// An empty list whose level generator starts from `seed`.
    pub fn with_seed(seed: u64) -> Self {
        // One splitmix64 step: nearby seeds (0, 1, 2, ...) would otherwise start xorshift in
        // nearly identical states and draw correlated heights for the first few inserts.
        let mut state = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        state = (state ^ (state >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        state = (state ^ (state >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        state ^= state >> 31;
        if state == 0 {
            // The finalizer is a bijection, so exactly one seed lands here.
            state = DEFAULT_SEED;
        }
        Self {
            slots: Vec::new(),
            levels: vec![LEVEL_UNLINKED; MAX_LEVEL],
            free_slot: NIL,
            free_levels: [NIL; MAX_LEVEL],
            level_count: 1,
            len: 0,
            rng_state: state,
        }
    }

    /// Builds a list from items whose keys are strictly increasing, in O(n): each node is
    /// appended after the last one, linked from the last node seen on each of its levels, so
    /// nothing is searched and the level pool is written front to back.
    ///
    /// It exists for recovery, which rebuilds rankings from checkpoint entries that are already
    /// sorted: inserting them one by one costs O(log n) cache-missing steps each, which at
    /// millions of members is most of the recovery time.
    ///
    /// Heights come from the same generator and seed as `new`, one draw per item in order, so
    /// the result is exactly the list that inserting the items in that order into `new()` would
    /// build (same heights, same arena layout, empty free lists), and every other method works
    /// on it unchanged.
    ///
    /// Cost: O(n) time, with one level-generator draw and about 4/3 level writes per item; the
    /// arena is reserved up front from the iterator's `size_hint` lower bound.
    ///
    /// # Panics
    ///
    /// If the keys are not strictly increasing (a caller bug: the input is meant to be the
    /// list's own sorted output), or if there are more than `u32::MAX - 2` items.
    pub fn from_sorted<I: IntoIterator<Item = (K, V)>>(items: I) -> Self {
        Self::from_sorted_with_seed(DEFAULT_SEED, items)
    }

    /// `from_sorted` with the level generator started from `seed`, as in `with_seed`.
    pub fn from_sorted_with_seed<I: IntoIterator<Item = (K, V)>>(seed: u64, items: I) -> Self {
        let mut list = Self::with_seed(seed);
        let items = items.into_iter();

        let expected_len = items.size_hint().0.min(MAX_LEN);
        list.slots.reserve_exact(expected_len);
        // 4/3 levels per member on average; the total's standard deviation is only about
        // 0.7 sqrt(n), so n/64 + 64 extra makes a reallocation, which would double the pool
        // near its largest, vanishingly unlikely for the price of 0.2 B per member.
        list.levels
            .reserve_exact(expected_len + expected_len / 3 + expected_len / 64 + 64);

        // Per level, the last node linked on it so far (as its levels' offset) and that node's
        // position; its link on that level is the one the next node tall enough will take.
        let mut last_levels_start = [HEAD_LEVELS_START; MAX_LEVEL];
        let mut last_positions = [0u32; MAX_LEVEL];
        let mut last_index = NIL;
        for (key, value) in items {
            assert!(list.len < MAX_LEN, "skip list is full ({MAX_LEN} members)");
            if last_index != NIL {
                assert!(
                    list.node(last_index).key < key,
                    "SkipList::from_sorted: keys must be strictly increasing \
                     (item {} is not greater than the one before it)",
                    list.len
                );
            }

            let height = list.random_height();
            list.level_count = list.level_count.max(height);
            // The free lists are empty, so both come from the end of their arenas.
            let levels_start = list.allocate_levels(height);
            let index = list.allocate_slot(Node {
                key,
                value,
                height: NonZeroU8::new(u8::try_from(height).expect("height <= MAX_LEVEL"))
                    .expect("height >= 1"),
            });
            let position = u32::try_from(list.len + 1).expect("len is below MAX_LEN");
            for level in 0..height {
                list.levels[last_levels_start[level] as usize + level] = Level {
                    next: index,
                    next_levels_start: levels_start,
                    span: position - last_positions[level],
                };
                last_levels_start[level] = levels_start;
                last_positions[level] = position;
            }
            last_index = index;
            list.len += 1;
        }

        // Each level's last link runs to the end, position len + 1. Head levels at and above
        // `level_count` stay unlinked, as they would after inserts.
        let end_position = u32::try_from(list.len + 1).expect("len is below MAX_LEN");
        for level in 0..list.level_count {
            list.levels[last_levels_start[level] as usize + level] = Level {
                next: NIL,
                next_levels_start: NIL,
                span: end_position - last_positions[level],
            };
        }
        list
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Inserts; if the key is already present, replaces its value and returns the old one.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        // Per level, the last node before `key` (as its levels' offset) and that node's
        // position: exactly the links the new node must be spliced into.
        let mut predecessors = [HEAD_LEVELS_START; MAX_LEVEL];
        let mut positions = [0usize; MAX_LEVEL];
        self.seek(&key, |level, levels_start, position| {
            predecessors[level] = levels_start;
            positions[level] = position;
        });

        let successor = self.levels[predecessors[0] as usize].next;
        if successor != NIL && self.node(successor).key == key {
            return Some(mem::replace(&mut self.node_mut(successor).value, value));
        }
        assert!(self.len < MAX_LEN, "skip list is full ({MAX_LEN} members)");

        let height = self.random_height();
        let levels_start = self.allocate_levels(height);
        let inserted = self.allocate_slot(Node {
            key,
            value,
            height: Self::height_byte(height),
        });
        self.link(
            &mut predecessors,
            &positions,
            inserted,
            levels_start,
            height,
        );
        self.len += 1;
        None
    }

    /// The member `key` right after the node whose levels start at `predecessor` on level
    /// 0, as (slot, levels start, height); `None` if the next member is another key.
    fn member_after(&self, predecessor: u32, key: &K) -> Option<(u32, u32, usize)> {
        let Level {
            next,
            next_levels_start,
            ..
        } = self.levels[predecessor as usize];
        if next == NIL || self.node(next).key != *key {
            return None;
        }
        Some((
            next,
            next_levels_start,
            usize::from(self.node(next).height.get()),
        ))
    }

    /// Removes `key` and returns its value, or `None` if it is absent.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let mut predecessors = [HEAD_LEVELS_START; MAX_LEVEL];
        self.seek(key, |level, levels_start, _| {
            predecessors[level] = levels_start;
        });

        let (removed, levels_start, height) = self.member_after(predecessors[0], key)?;
        self.unlink(&predecessors, removed, levels_start, height);
        self.release_levels(levels_start, height);
        let node = self.release_slot(removed);
        self.len -= 1;
        Some(node.value)
    }

    /// Replaces the member `old` by `new` (with `value`), in one top-down descent when
    /// `new <= old`; returns `old`'s value, or `None` (and changes nothing) if `old` is absent.
    ///
    /// The result is exactly that of `let v = self.remove(old)?; self.insert(new, value);
    /// Some(v)`, down to the arena layout, the free lists and the level generator's state:
    ///
    /// * if `new` is another member than `old`, `old` is removed and that member's value is
    ///   overwritten with `value` (as `insert` does for a present key); its previous value is
    ///   dropped, and no height is drawn;
    /// * otherwise the new member draws its height as `insert` would (one draw), takes `old`'s
    ///   arena slot, and keeps `old`'s block of levels when the heights match (a different
    ///   height frees it and takes a block of the new height, as remove + insert would);
    /// * `new == old` re-inserts the key with a fresh height and `value`.
    ///
    /// # Cost
    ///
    /// It is meant for moving a key towards the front, as a score that only grows does to a
    /// leaderboard key. When `new <= old`, one pass from the top level down runs the search
    /// for `new` and the search for `old` side by side, a step of each in turn, and records on
    /// each level the last node before `new` (with its position) and the last node before
    /// `old`. Above the level where the two paths part (about `log4(d)` for a move over `d`
    /// members) both walks visit the same nodes, so the second costs no cache misses; below
    /// it, the two walks' misses are independent and the processor can overlap them. Remove
    /// then insert instead pay two full searches one after the other (plus, as here, the
    /// span fix-ups). Unlinking `old` and linking `new` then fix the spans of the links
    /// found, exactly as `remove` and `insert` do. `new > old` (rare for a leaderboard) falls
    /// back to `remove` then `insert`.
    ///
    /// Measured on a scrambled 1M-member list of `(Reverse(score), player)` keys, one move
    /// took about 15 % less time than remove + insert for moves of ~50 ranks, and about 20 to
    /// 25 % less for moves of up to the whole list.
    pub fn replace(&mut self, old: &K, new: K, value: V) -> Option<V> {
        if new > *old {
            let previous = self.remove(old)?;
            self.insert(new, value);
            return Some(previous);
        }

        // Per level: the last node before `new` and its position (where `new` will be
        // linked), and the last node before `old` (where `old` is unlinked).
        let mut new_predecessors = [HEAD_LEVELS_START; MAX_LEVEL];
        let mut new_positions = [0usize; MAX_LEVEL];
        let mut old_predecessors = [HEAD_LEVELS_START; MAX_LEVEL];
        let mut new_levels_start = HEAD_LEVELS_START;
        let mut new_position = 0;
        let mut old_levels_start = HEAD_LEVELS_START;
        let mut old_position = 0;
        // Nodes known not to be less than `new` (resp. `old`), as in `seek`. `old_position`
        // only serves the walk-overrun check.
        let mut new_stopped_at = NIL;
        let mut old_stopped_at = NIL;
        for level in (0..self.level_count).rev() {
            // The two walks step in turn, so that the misses of one overlap the other's.
            let mut new_moving = true;
            let mut old_moving = true;
            while new_moving || old_moving {
                if new_moving {
                    let link = self.levels[new_levels_start as usize + level];
                    if link.next == NIL || link.next == new_stopped_at {
                        new_moving = false;
                    } else if self.node(link.next).key.cmp(&new) != Ordering::Less {
                        new_stopped_at = link.next;
                        new_moving = false;
                    } else {
                        new_position += link.span as usize;
                        debug_assert!(new_position <= self.len, "walk overran the list");
                        new_levels_start = link.next_levels_start;
                    }
                }
                if old_moving {
                    let link = self.levels[old_levels_start as usize + level];
                    if link.next == NIL || link.next == old_stopped_at {
                        old_moving = false;
                    } else if self.node(link.next).key.cmp(old) != Ordering::Less {
                        old_stopped_at = link.next;
                        old_moving = false;
                    } else {
                        old_position += link.span as usize;
                        debug_assert!(old_position <= self.len, "walk overran the list");
                        old_levels_start = link.next_levels_start;
                    }
                }
            }
            new_predecessors[level] = new_levels_start;
            new_positions[level] = new_position;
            old_predecessors[level] = old_levels_start;
        }

        let (removed, removed_levels_start, removed_height) =
            self.member_after(old_predecessors[0], old)?;

        // `new`'s successor once `old` is gone; `old` itself when `new == old`.
        let successor = self.levels[new_predecessors[0] as usize].next;
        if successor != removed && successor != NIL && self.node(successor).key == new {
            self.unlink(
                &old_predecessors,
                removed,
                removed_levels_start,
                removed_height,
            );
            self.release_levels(removed_levels_start, removed_height);
            let node = self.release_slot(removed);
            self.len -= 1;
            self.node_mut(successor).value = value;
            return Some(node.value);
        }

        // The same steps as remove + insert, minus insert's search: the nodes before `new`
        // precede `old`, so unlinking `old` moves none of them, and the predecessors and
        // positions found for `new` are exactly what `insert` would find after `remove`. The
        // height is drawn here rather than after the unlink, which changes nothing: the draw
        // depends only on the generator.
        let height = self.random_height();
        self.unlink(
            &old_predecessors,
            removed,
            removed_levels_start,
            removed_height,
        );
        self.len -= 1;
        // `remove` would free the block and `insert` take the first free one of its height.
        let levels_start = if height == removed_height {
            removed_levels_start
        } else {
            self.release_levels(removed_levels_start, removed_height);
            self.allocate_levels(height)
        };
        // Likewise `old`'s slot is the one `insert` would take from the top of the free list.
        let node = mem::replace(
            self.node_mut(removed),
            Node {
                key: new,
                value,
                height: Self::height_byte(height),
            },
        );
        self.link(
            &mut new_predecessors,
            &new_positions,
            removed,
            levels_start,
            height,
        );
        self.len += 1;
        Some(node.value)
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &K) -> Option<&V> {
        let (levels_start, _) = self.seek(key, |_, _, _| {});
        let candidate = self.levels[levels_start as usize].next;
        if candidate == NIL {
            return None;
        }
        let node = self.node(candidate);
        (node.key == *key).then_some(&node.value)
    }

    /// 0-based position of `key` if present.
    pub fn rank(&self, key: &K) -> Option<usize> {
        let (levels_start, position) = self.seek(key, |_, _, _| {});
        let candidate = self.levels[levels_start as usize].next;
        // The candidate's position is `position + 1`, so its 0-based rank is `position`.
        (candidate != NIL && self.node(candidate).key == *key).then_some(position)
    }

    /// Number of keys strictly less than `key` (present or not). O(log n).
    pub fn count_less(&self, key: &K) -> usize {
        // The last node before `key` has position p: exactly p members precede or are it.
        self.seek(key, |_, _, _| {}).1
    }

    /// Entry at 0-based position `rank`. O(log n).
    pub fn get_by_rank(&self, rank: usize) -> Option<(&K, &V)> {
        let (index, _) = self.index_at_rank(rank)?;
        let node = self.node(index);
        Some((&node.key, &node.value))
    }

    /// Ascending iterator starting at position `rank` (empty if rank >= len). O(log n) to
    /// start, O(1) per step.
    pub fn iter_from_rank(&self, rank: usize) -> Iter<'_, K, V> {
        match self.index_at_rank(rank) {
            Some((index, levels_start)) => Iter {
                list: self,
                next: index,
                next_levels_start: levels_start,
                remaining: self.len - rank,
            },
            None => Iter {
                list: self,
                next: NIL,
                next_levels_start: NIL,
                remaining: 0,
            },
        }
    }

    /// Ascending iterator over all entries.
    pub fn iter(&self) -> Iter<'_, K, V> {
        let head = self.levels[HEAD_LEVELS_START as usize];
        Iter {
            list: self,
            next: head.next,
            next_levels_start: head.next_levels_start,
            remaining: self.len,
        }
    }

    /// The entry with the smallest key.
    pub fn first(&self) -> Option<(&K, &V)> {
        self.iter().next()
    }

    /// Removes every member. Keeps the arena's capacity, so refilling to the same size does not
    /// allocate again.
    pub fn clear(&mut self) {
        self.slots.clear();
        self.levels.truncate(MAX_LEVEL);
        self.levels.fill(LEVEL_UNLINKED);
        self.free_slot = NIL;
        self.free_levels = [NIL; MAX_LEVEL];
        self.level_count = 1;
        self.len = 0;
    }

    /// Walks from the head's top level down to level 0, moving right while the next key is less
    /// than `key`. On each level, once no further move is possible, calls
    /// `on_level(level, levels_start, position)` with the node it stopped on (as its levels'
    /// offset) and that node's position. Returns the level-0 stop: the last node before `key`.
    fn seek(&self, key: &K, mut on_level: impl FnMut(usize, u32, usize)) -> (u32, usize) {
        let mut levels_start = HEAD_LEVELS_START;
        let mut position = 0;
        // A node that stopped the walk on an upper level is usually the successor on the level
        // below too; remembering it skips a repeat comparison, which matters for costly keys.
        let mut stopped_at = NIL;
        for level in (0..self.level_count).rev() {
            loop {
                let link = self.levels[levels_start as usize + level];
                if link.next == NIL || link.next == stopped_at {
                    break;
                }
                let next = self.node(link.next);
                if next.key.cmp(key) != Ordering::Less {
                    stopped_at = link.next;
                    break;
                }
                position += link.span as usize;
                // Corrupt links can form a cycle; failing here beats a hang.
                debug_assert!(position <= self.len, "walk overran the list");
                levels_start = link.next_levels_start;
            }
            on_level(level, levels_start, position);
        }
        (levels_start, position)
    }

    /// Splices the node at arena index `inserted`, whose `height` levels start at
    /// `levels_start`, in after `predecessors` (per level, the last node before its key, as
    /// levels' offset, at `positions`), raising `level_count` to `height` if needed. `len`
    /// must not count the node yet; the caller adds it afterwards.
    fn link(
        &mut self,
        predecessors: &mut [u32; MAX_LEVEL],
        positions: &[usize; MAX_LEVEL],
        inserted: u32,
        levels_start: u32,
        height: usize,
    ) {
        if height > self.level_count {
            // The new levels start out as one link from the head straight to the end.
            let end_position = u32::try_from(self.len + 1).expect("len is below MAX_LEN");
            for level in self.level_count..height {
                predecessors[level] = HEAD_LEVELS_START;
                debug_assert_eq!(positions[level], 0);
                self.levels[HEAD_LEVELS_START as usize + level] = Level {
                    next: NIL,
                    next_levels_start: NIL,
                    span: end_position,
                };
            }
            self.level_count = height;
        }

        let inserted_position = positions[0] + 1;
        for level in 0..height {
            let predecessor_index = predecessors[level] as usize + level;
            let predecessor = self.levels[predecessor_index];
            // Positions from the predecessor to the new node; the old successor moves one
            // position further away, so the new node's span is what remains of the old one.
            let span_to_inserted = u32::try_from(inserted_position - positions[level])
                .expect("spans are bounded by len + 1");
            debug_assert!(span_to_inserted >= 1 && span_to_inserted <= predecessor.span);
            self.levels[levels_start as usize + level] = Level {
                next: predecessor.next,
                next_levels_start: predecessor.next_levels_start,
                span: predecessor.span + 1 - span_to_inserted,
            };
            self.levels[predecessor_index] = Level {
                next: inserted,
                next_levels_start: levels_start,
                span: span_to_inserted,
            };
        }
        // Links above the new node's height jump over it: one more position each.
        let predecessors_above = predecessors.iter().enumerate().take(self.level_count);
        for (level, &predecessor_start) in predecessors_above.skip(height) {
            self.levels[predecessor_start as usize + level].span += 1;
        }
    }

    /// Takes the member at arena index `removed` (its `height` levels at `levels_start`) out of
    /// every level, given per level the last node before it (as levels' offset), and drops
    /// `level_count` to the tallest remaining member. Leaves its slot, its levels and `len`
    /// to the caller.
    fn unlink(
        &mut self,
        predecessors: &[u32; MAX_LEVEL],
        removed: u32,
        levels_start: u32,
        height: usize,
    ) {
        for (level, &predecessor_start) in predecessors.iter().enumerate().take(self.level_count) {
            let predecessor_index = predecessor_start as usize + level;
            if level < height {
                let removed_level = self.levels[levels_start as usize + level];
                let predecessor = &mut self.levels[predecessor_index];
                debug_assert_eq!(predecessor.next, removed);
                predecessor.next = removed_level.next;
                predecessor.next_levels_start = removed_level.next_levels_start;
                predecessor.span = predecessor.span + removed_level.span - 1;
            } else {
                self.levels[predecessor_index].span -= 1;
            }
        }
        // Keep the top level non-empty so searches do not start on levels that only link the
        // head to the end.
        while self.level_count > 1
            && self.levels[HEAD_LEVELS_START as usize + self.level_count - 1].next == NIL
        {
            self.level_count -= 1;
        }
    }

    /// A drawn height as a node stores it.
    fn height_byte(height: usize) -> NonZeroU8 {
        NonZeroU8::new(u8::try_from(height).expect("height <= MAX_LEVEL")).expect("height >= 1")
    }

    /// Arena index and levels' offset of the member at 0-based `rank`, found by following links
    /// whose spans keep the running position at most the target position, `rank + 1`.
    fn index_at_rank(&self, rank: usize) -> Option<(u32, u32)> {
        if rank >= self.len {
            return None;
        }
        let target_position = rank + 1;
        let mut levels_start = HEAD_LEVELS_START;
        let mut index = NIL;
        let mut position = 0;
        for level in (0..self.level_count).rev() {
            loop {
                let link = self.levels[levels_start as usize + level];
                if link.next == NIL || position + link.span as usize > target_position {
                    break;
                }
                position += link.span as usize;
                index = link.next;
                levels_start = link.next_levels_start;
            }
            if position == target_position {
                return Some((index, levels_start));
            }
        }
        unreachable!("rank {rank} < len {} but no member has it", self.len)
    }

    /// Draws a height in 1..=MAX_LEVEL with P(height > h) = 4^-h.
    fn random_height(&mut self) -> usize {
        // xorshift64*: three shifts and a multiply, period 2^64 - 1, no dependency. Its high
        // bits are the well-mixed ones, so the height comes from the leading zeros.
        let mut state = self.rng_state;
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        self.rng_state = state;
        let draw = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        // A non-zero state times an odd constant is non-zero mod 2^64, so there are at most 63
        // leading zeros. Each pair of leading zero bits, probability 1/4, adds a level:
        // 1 + 63 / 2 = 32 = MAX_LEVEL at most.
        debug_assert_ne!(draw, 0);
        let height = 1 + draw.leading_zeros() as usize / 2;
        debug_assert!(height <= MAX_LEVEL);
        height
    }

    /// Returns the offset of a block of `height` levels, reusing a freed block of that height
    /// if there is one. The caller overwrites every level of the block.
    fn allocate_levels(&mut self, height: usize) -> u32 {
        let free = self.free_levels[height - 1];
        if free != NIL {
            self.free_levels[height - 1] = self.levels[free as usize].next;
            return free;
        }
        let levels_start = self.levels.len();
        let levels_end = levels_start + height;
        assert!(levels_end <= NIL as usize, "level pool exceeds u32 offsets");
        self.levels.resize(levels_end, LEVEL_UNLINKED);
        levels_start as u32
    }

    fn release_levels(&mut self, levels_start: u32, height: usize) {
        self.levels[levels_start as usize].next = self.free_levels[height - 1];
        self.free_levels[height - 1] = levels_start;
    }

    fn allocate_slot(&mut self, node: Node<K, V>) -> u32 {
        if self.free_slot == NIL {
            // `len < MAX_LEN` and no vacant slot means `slots.len() == len < NIL`.
            let index = u32::try_from(self.slots.len()).expect("arena below MAX_LEN");
            self.slots.push(Slot::Occupied(node));
            return index;
        }
        let index = self.free_slot;
        let slot = &mut self.slots[index as usize];
        match *slot {
            Slot::Vacant { next_free } => self.free_slot = next_free,
            Slot::Occupied(_) => unreachable!("free list links occupied slot {index}"),
        }
        *slot = Slot::Occupied(node);
        index
    }

    fn release_slot(&mut self, index: u32) -> Node<K, V> {
        let vacant = Slot::Vacant {
            next_free: self.free_slot,
        };
        match mem::replace(&mut self.slots[index as usize], vacant) {
            Slot::Occupied(node) => {
                self.free_slot = index;
                node
            }
            Slot::Vacant { .. } => unreachable!("released slot {index} twice"),
        }
    }
}

impl<K, V> SkipList<K, V> {
    /// The node at a linked arena index. Links only ever point at occupied slots, so a vacant
    /// slot here is a bug in the list, not in the caller.
    fn node(&self, index: u32) -> &Node<K, V> {
        match &self.slots[index as usize] {
            Slot::Occupied(node) => node,
            Slot::Vacant { .. } => unreachable!("link to vacant slot {index}"),
        }
    }

    fn node_mut(&mut self, index: u32) -> &mut Node<K, V> {
        match &mut self.slots[index as usize] {
            Slot::Occupied(node) => node,
            Slot::Vacant { .. } => unreachable!("link to vacant slot {index}"),
        }
    }
}

impl<K: Ord, V> Default for SkipList<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Ord + fmt::Debug, V: fmt::Debug> fmt::Debug for SkipList<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        if self.next == NIL {
            return None;
        }
        let list = self.list;
        let node = list.node(self.next);
        let link = list.levels[self.next_levels_start as usize];
        self.next = link.next;
        self.next_levels_start = link.next_levels_start;
        self.remaining -= 1;
        Some((&node.key, &node.value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<K, V> ExactSizeIterator for Iter<'_, K, V> {}

impl<K, V> FusedIterator for Iter<'_, K, V> {}

#[cfg(test)]
impl<K: Ord + fmt::Debug, V> SkipList<K, V> {
    /// Walks every level and the free lists, panicking on the first broken invariant.
    fn check_invariants(&self) {
        assert!((1..=MAX_LEVEL).contains(&self.level_count));
        assert!(self.levels.len() >= MAX_LEVEL);

        // Every level-pool entry must belong to exactly one block: the head's, a member's, or a
        // free one. Overlap would let one node's links overwrite another's.
        let mut level_owned = vec![false; self.levels.len()];
        let mut claim = |levels_start: u32, height: usize| {
            let block = levels_start as usize..levels_start as usize + height;
            assert!(
                block.end <= level_owned.len(),
                "level block {block:?} out of the pool"
            );
            for owned in &mut level_owned[block.clone()] {
                assert!(!*owned, "level block {block:?} overlaps another");
                *owned = true;
            }
        };
        claim(HEAD_LEVELS_START, MAX_LEVEL);

        // Level 0: every member once, keys strictly ascending, `len` members. Record each
        // member's position and levels.
        let mut position_of = vec![usize::MAX; self.slots.len()];
        let mut levels_start_of = vec![NIL; self.slots.len()];
        let mut height_counts = [0usize; MAX_LEVEL];
        let mut levels_start = HEAD_LEVELS_START;
        let mut position = 0;
        let mut previous: Option<&K> = None;
        loop {
            let link = self.levels[levels_start as usize];
            if link.next == NIL {
                assert_eq!(link.next_levels_start, NIL);
                break;
            }
            let index = link.next as usize;
            assert_eq!(position_of[index], usize::MAX, "cycle at slot {index}");
            let node = self.node(link.next);
            if let Some(previous) = previous {
                assert!(*previous < node.key, "{previous:?} !< {:?}", node.key);
            }
            previous = Some(&node.key);
            position += 1;
            position_of[index] = position;
            levels_start_of[index] = link.next_levels_start;
            let height = usize::from(node.height.get());
            assert!(height <= self.level_count, "node taller than the head");
            height_counts[height - 1] += 1;
            claim(link.next_levels_start, height);
            levels_start = link.next_levels_start;
        }
        assert_eq!(position, self.len);
        let end_position = self.len + 1;
        if self.level_count > 1 {
            assert!(height_counts[self.level_count - 1] > 0, "top level empty");
        }

        // Every level: links ascend, spans are position differences, links agree on where each
        // member's levels are, and the level holds exactly the members taller than it.
        for level in 0..MAX_LEVEL {
            let head = self.levels[HEAD_LEVELS_START as usize + level];
            if level >= self.level_count {
                assert_eq!(head.next, NIL, "head links above level_count");
                continue;
            }
            let mut levels_start = HEAD_LEVELS_START;
            let mut position = 0;
            let mut members = 0;
            loop {
                let link = self.levels[levels_start as usize + level];
                let next_position = if link.next == NIL {
                    assert_eq!(link.next_levels_start, NIL);
                    end_position
                } else {
                    assert_eq!(link.next_levels_start, levels_start_of[link.next as usize]);
                    position_of[link.next as usize]
                };
                assert!(next_position > position, "level {level} goes backwards");
                assert_eq!(
                    link.span as usize,
                    next_position - position,
                    "span, level {level}"
                );
                if link.next == NIL {
                    break;
                }
                assert!(usize::from(self.node(link.next).height.get()) > level);
                members += 1;
                position = next_position;
                levels_start = link.next_levels_start;
            }
            let taller: usize = height_counts[level..].iter().sum();
            assert_eq!(members, taller, "level {level} skips members");
        }

        // Free lists: vacant slots and free level blocks account for the rest of the arena.
        let mut vacant = 0;
        let mut free = self.free_slot;
        while free != NIL {
            match self.slots[free as usize] {
                Slot::Vacant { next_free } => free = next_free,
                Slot::Occupied(_) => panic!("free list links occupied slot {free}"),
            }
            vacant += 1;
            assert!(vacant <= self.slots.len(), "free slot list cycles");
        }
        assert_eq!(vacant + self.len, self.slots.len());

        for (height_index, &first) in self.free_levels.iter().enumerate() {
            let mut free = first;
            while free != NIL {
                // A cycle would claim the same block twice and fail there.
                claim(free, height_index + 1);
                free = self.levels[free as usize].next;
            }
        }
        assert!(
            level_owned.iter().all(|owned| *owned),
            "level pool leaks entries"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::rc::Rc;

    /// Deterministic keys for tests, independent of the list's own generator.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn empty() {
        let mut list: SkipList<u32, u32> = SkipList::new();
        list.check_invariants();
        assert_eq!(list.len(), 0);
        assert!(list.is_empty());
        assert_eq!(list.get(&1), None);
        assert_eq!(list.rank(&1), None);
        assert_eq!(list.count_less(&1), 0);
        assert_eq!(list.get_by_rank(0), None);
        assert_eq!(list.iter_from_rank(0).next(), None);
        assert_eq!(list.iter().next(), None);
        assert_eq!(list.iter().len(), 0);
        assert_eq!(list.first(), None);
        assert_eq!(list.remove(&1), None);
        assert_eq!(format!("{list:?}"), "{}");
        list.check_invariants();
    }

    #[test]
    fn single_element() {
        let mut list = SkipList::new();
        assert_eq!(list.insert(10, "ten"), None);
        list.check_invariants();
        assert_eq!(list.len(), 1);
        assert!(!list.is_empty());
        assert_eq!(list.get(&10), Some(&"ten"));
        assert_eq!(list.rank(&10), Some(0));
        assert_eq!(list.count_less(&10), 0);
        assert_eq!(list.count_less(&11), 1);
        assert_eq!(list.get_by_rank(0), Some((&10, &"ten")));
        assert_eq!(list.get_by_rank(1), None);
        assert_eq!(list.first(), Some((&10, &"ten")));
        assert_eq!(list.iter().collect::<Vec<_>>(), [(&10, &"ten")]);
        assert_eq!(list.remove(&10), Some("ten"));
        list.check_invariants();
        assert!(list.is_empty());
        assert_eq!(list.first(), None);
    }

    #[test]
    fn duplicate_insert_replaces_value() {
        let mut list = SkipList::new();
        for key in 0..100u32 {
            assert_eq!(list.insert(key, key), None);
        }
        for key in 0..100u32 {
            assert_eq!(list.insert(key, key + 1000), Some(key));
        }
        list.check_invariants();
        assert_eq!(list.len(), 100);
        assert_eq!(list.slots.len(), 100, "replacing must not allocate a slot");
        for key in 0..100u32 {
            assert_eq!(list.get(&key), Some(&(key + 1000)));
            assert_eq!(list.rank(&key), Some(key as usize));
        }
    }

    #[test]
    fn remove_absent_changes_nothing() {
        let mut list = SkipList::new();
        for key in (0..200u32).step_by(2) {
            list.insert(key, key);
        }
        let slot_count = list.slots.len();
        for key in (1..200u32).step_by(2).chain([200, 1000, u32::MAX]) {
            assert_eq!(list.remove(&key), None);
        }
        list.check_invariants();
        assert_eq!(list.len(), 100);
        assert_eq!(list.slots.len(), slot_count);
        assert_eq!(list.remove(&0), Some(0));
        assert_eq!(list.remove(&0), None);
        list.check_invariants();
    }

    #[test]
    fn rank_and_count_less_on_absent_keys() {
        let mut list = SkipList::new();
        for key in (10..=1000u32).step_by(10) {
            list.insert(key, ());
        }
        list.check_invariants();
        assert_eq!(list.count_less(&0), 0);
        assert_eq!(list.count_less(&10), 0);
        for key in 0..1100u32 {
            let expected_less = (key.saturating_sub(1) / 10).min(100) as usize;
            assert_eq!(list.count_less(&key), expected_less, "key {key}");
            if key % 10 == 0 && (10..=1000).contains(&key) {
                assert_eq!(list.rank(&key), Some(expected_less));
            } else {
                assert_eq!(list.rank(&key), None, "key {key}");
            }
        }
        assert_eq!(list.count_less(&u32::MAX), 100);
    }

    #[test]
    fn iter_from_rank_past_end_is_empty() {
        let mut list = SkipList::new();
        for key in 0..50u32 {
            list.insert(key, key * 2);
        }
        for rank in [50, 51, 1000, usize::MAX] {
            let mut iter = list.iter_from_rank(rank);
            assert_eq!(iter.len(), 0);
            assert_eq!(iter.next(), None);
            assert_eq!(list.get_by_rank(rank), None);
        }
        assert_eq!(list.iter_from_rank(49).collect::<Vec<_>>(), [(&49, &98)]);
        for rank in 0..50 {
            let iter = list.iter_from_rank(rank);
            assert_eq!(iter.len(), 50 - rank);
            let keys: Vec<u32> = iter.map(|(key, _)| *key).collect();
            assert_eq!(keys, (rank as u32..50).collect::<Vec<_>>());
        }
    }

    #[test]
    fn get_by_rank_matches_iteration() {
        let mut list = SkipList::with_seed(7);
        let mut state = 0x1234_5678_9ABC_DEF1;
        for _ in 0..3000 {
            let key = xorshift(&mut state) % 10_000;
            list.insert(key, key);
        }
        list.check_invariants();
        for (rank, (key, value)) in list.iter().enumerate() {
            assert_eq!(list.get_by_rank(rank), Some((key, value)));
            assert_eq!(list.rank(key), Some(rank));
            assert_eq!(list.count_less(key), rank);
        }
    }

    /// Tracks live members per height and their peaks, to predict the arena's exact size.
    #[derive(Default)]
    struct HeightLedger {
        live_counts: [usize; MAX_LEVEL],
        peak_counts: [usize; MAX_LEVEL],
        peak_live_count: usize,
    }

    impl HeightLedger {
        fn height_of(list: &SkipList<u64, u32>, key: u64) -> usize {
            let rank = list.rank(&key).expect("key is present");
            let (index, _) = list.index_at_rank(rank).expect("rank is in range");
            usize::from(list.node(index).height.get())
        }

        fn inserted(&mut self, list: &SkipList<u64, u32>, key: u64) {
            let height_index = Self::height_of(list, key) - 1;
            self.live_counts[height_index] += 1;
            self.peak_counts[height_index] =
                self.peak_counts[height_index].max(self.live_counts[height_index]);
            self.peak_live_count = self.peak_live_count.max(list.len());
        }

        fn removing(&mut self, list: &SkipList<u64, u32>, key: u64) {
            self.live_counts[Self::height_of(list, key) - 1] -= 1;
        }

        /// Slots are reused by any insert, level blocks only by one of the same height, so the
        /// arena holds exactly the peak members and, per height, that height's peak.
        fn assert_arena_exact(&self, list: &SkipList<u64, u32>) {
            assert_eq!(list.slots.len(), self.peak_live_count);
            let block_level_count: usize = self
                .peak_counts
                .iter()
                .enumerate()
                .map(|(height_index, peak)| (height_index + 1) * peak)
                .sum();
            assert_eq!(list.levels.len(), MAX_LEVEL + block_level_count);
        }
    }

    #[test]
    fn free_list_reuse_keeps_arena_bounded() {
        const LIVE_COUNT: usize = 1000;
        let mut list = SkipList::with_seed(42);
        let mut ledger = HeightLedger::default();
        let mut state = 0x9E37_79B9_7F4A_7C15;
        for round in 0..50 {
            let mut keys = Vec::with_capacity(LIVE_COUNT);
            while list.len() < LIVE_COUNT {
                let key = xorshift(&mut state);
                if list.insert(key, round).is_none() {
                    ledger.inserted(&list, key);
                    keys.push(key);
                }
            }
            list.check_invariants();
            // Remove in an order unrelated to insertion so the free lists get shuffled.
            keys.sort_unstable_by_key(|key| key.wrapping_mul(0x2545_F491_4F6C_DD1D));
            for key in keys {
                ledger.removing(&list, key);
                assert_eq!(list.remove(&key), Some(round));
            }
            list.check_invariants();
            assert!(list.is_empty());
            assert_eq!(list.level_count, 1);
            assert_eq!(list.slots.len(), LIVE_COUNT);
            ledger.assert_arena_exact(&list);
        }

        // Steady churn around a smaller size reuses slots without growing the node arena.
        for _ in 0..20_000 {
            let key = xorshift(&mut state) % 1024;
            if list.get(&key).is_some() {
                ledger.removing(&list, key);
                list.remove(&key);
            } else {
                list.insert(key, 0);
                ledger.inserted(&list, key);
            }
        }
        list.check_invariants();
        assert_eq!(list.slots.len(), LIVE_COUNT);
        ledger.assert_arena_exact(&list);
    }

    #[test]
    fn clear_resets_and_keeps_capacity() {
        let mut list = SkipList::new();
        for key in 0..500u32 {
            list.insert(key, key);
        }
        let slot_capacity = list.slots.capacity();
        list.clear();
        list.check_invariants();
        assert!(list.is_empty());
        assert_eq!(list.first(), None);
        assert_eq!(list.slots.capacity(), slot_capacity);
        for key in (0..500u32).rev() {
            list.insert(key, key + 1);
        }
        list.check_invariants();
        assert_eq!(list.first(), Some((&0, &1)));
        assert_eq!(list.slots.capacity(), slot_capacity);
    }

    #[test]
    fn values_dropped_exactly_once() {
        let witness = Rc::new(());
        let mut list = SkipList::new();
        for key in 0..300u32 {
            list.insert(key, Rc::clone(&witness));
        }
        assert_eq!(Rc::strong_count(&witness), 301);
        // Replacing returns the old value to the caller, who drops it.
        drop(list.insert(0, Rc::clone(&witness)));
        assert_eq!(Rc::strong_count(&witness), 301);
        for key in 0..100u32 {
            drop(list.remove(&key));
        }
        assert_eq!(Rc::strong_count(&witness), 201);
        list.clear();
        assert_eq!(Rc::strong_count(&witness), 1);
        for key in 0..50u32 {
            list.insert(key, Rc::clone(&witness));
        }
        drop(list);
        assert_eq!(Rc::strong_count(&witness), 1);
    }

    #[test]
    fn owned_keys() {
        let mut list = SkipList::new();
        for word in ["pear", "apple", "fig", "banana", "cherry"] {
            list.insert(word.to_string(), word.len());
        }
        list.check_invariants();
        let keys: Vec<&str> = list.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(keys, ["apple", "banana", "cherry", "fig", "pear"]);
        assert_eq!(list.rank(&"fig".to_string()), Some(3));
        assert_eq!(list.count_less(&"c".to_string()), 2);
        assert_eq!(list.remove(&"apple".to_string()), Some(5));
        assert_eq!(
            format!("{list:?}"),
            r#"{"banana": 6, "cherry": 6, "fig": 3, "pear": 4}"#
        );
    }

    #[test]
    fn heights_follow_quarter_probability() {
        let mut list: SkipList<u32, ()> = SkipList::with_seed(0);
        let mut counts = [0u32; MAX_LEVEL + 1];
        const DRAW_COUNT: u32 = 400_000;
        for _ in 0..DRAW_COUNT {
            counts[list.random_height()] += 1;
        }
        assert_eq!(counts[0], 0);
        // P(height = h) = (3/4) 4^-(h-1); check the levels with enough samples to be tight.
        let mut expected = f64::from(DRAW_COUNT) * 0.75;
        for &count in &counts[1..=5] {
            let error = (f64::from(count) - expected).abs() / expected;
            assert!(error < 0.05, "count {count}, expected {expected}");
            expected /= 4.0;
        }
    }

    #[test]
    fn seeds_give_distinct_deterministic_lists() {
        let build = |seed| {
            let mut list = SkipList::with_seed(seed);
            for key in 0..200u32 {
                list.insert(key, ());
            }
            list.slots
                .iter()
                .map(|slot| match slot {
                    Slot::Occupied(node) => node.height.get(),
                    Slot::Vacant { .. } => 0,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(build(1), build(1));
        assert_ne!(build(1), build(2));
        assert_ne!(build(0), build(1));
    }

    #[test]
    fn level_count_shrinks_when_tall_members_leave() {
        let mut list = SkipList::new();
        for key in 0..5000u32 {
            list.insert(key, ());
        }
        assert!(list.level_count > 3);
        for key in 0..4999u32 {
            list.remove(&key);
        }
        list.check_invariants();
        let height = usize::from(list.node(list.levels[0].next).height.get());
        assert_eq!(list.level_count, height);
    }

    #[test]
    fn slot_has_no_tag_word() {
        // The NonZeroU8 height is the discriminant: a slot is as small as its node.
        assert_eq!(
            mem::size_of::<Slot<u64, u64>>(),
            mem::size_of::<Node<u64, u64>>()
        );
    }

    /// Heights of the occupied slots, in arena order.
    fn slot_heights<K, V>(list: &SkipList<K, V>) -> Vec<u8> {
        list.slots
            .iter()
            .map(|slot| match slot {
                Slot::Occupied(node) => node.height.get(),
                Slot::Vacant { .. } => 0,
            })
            .collect()
    }

    /// `count` distinct ascending keys with gaps of 2 to 9 between them, so every key has
    /// absent neighbours to probe.
    fn sorted_gapped_keys(count: usize, state: &mut u64) -> Vec<u64> {
        let mut key = 10;
        (0..count)
            .map(|_| {
                key += 2 + xorshift(state) % 8;
                key
            })
            .collect()
    }

    /// Checks every query `list` answers against the ascending, distinct `keys`, with value
    /// `key * 3` each.
    fn assert_answers_match(list: &SkipList<u64, u64>, keys: &[u64]) {
        assert_eq!(list.len(), keys.len());
        assert_eq!(list.is_empty(), keys.is_empty());
        assert!(list
            .iter()
            .map(|(key, value)| (*key, *value))
            .eq(keys.iter().map(|&key| (key, key * 3))));
        assert_eq!(list.first().map(|(key, _)| *key), keys.first().copied());
        for (rank, &key) in keys.iter().enumerate() {
            assert_eq!(list.rank(&key), Some(rank), "key {key}");
            assert_eq!(list.get(&key), Some(&(key * 3)));
            assert_eq!(list.get_by_rank(rank), Some((&key, &(key * 3))));
            assert_eq!(list.count_less(&key), rank);
            // Keys are at least two apart, so key - 1 and key + 1 are absent.
            assert_eq!(list.count_less(&(key - 1)), rank);
            assert_eq!(list.count_less(&(key + 1)), rank + 1);
            assert_eq!(list.rank(&(key + 1)), None);
        }
        assert_eq!(list.get_by_rank(keys.len()), None);
        assert_eq!(list.count_less(&0), 0);
        assert_eq!(list.count_less(&u64::MAX), keys.len());
        for rank in [
            0,
            1,
            keys.len() / 2,
            keys.len().saturating_sub(1),
            keys.len(),
        ] {
            let tail: Vec<u64> = list.iter_from_rank(rank).map(|(key, _)| *key).collect();
            assert_eq!(tail, keys[rank.min(keys.len())..]);
        }
    }

    #[test]
    fn from_sorted_matches_inserts() {
        let mut state = 0x0DDB_1A5E_5BAD_5EED;
        for count in [0, 1, 2, 5, 1000, 100_000] {
            let keys = sorted_gapped_keys(count, &mut state);
            let items = || keys.iter().map(|&key| (key, key * 3));
            let bulk = SkipList::from_sorted(items());
            bulk.check_invariants();
            assert_answers_match(&bulk, &keys);

            // Inserting the same items in the same order draws the same heights into the same
            // slots, so the two lists must be identical down to every link and span.
            let mut inserted = SkipList::new();
            for (key, value) in items() {
                inserted.insert(key, value);
            }
            assert_eq!(slot_heights(&bulk), slot_heights(&inserted), "n = {count}");
            assert!(bulk.levels == inserted.levels, "levels differ, n = {count}");
            assert_eq!(bulk.level_count, inserted.level_count);
            assert_eq!(bulk.len, inserted.len);
            assert_eq!(bulk.free_slot, NIL);
            assert_eq!(bulk.free_levels, [NIL; MAX_LEVEL]);
            assert_eq!(bulk.rng_state, inserted.rng_state, "one draw per item");

            // A list built by inserts in a scrambled order has another shape but the same
            // answers.
            let mut scrambled_keys = keys.clone();
            scrambled_keys.sort_unstable_by_key(|key| key.wrapping_mul(0x2545_F491_4F6C_DD1D));
            let mut scrambled = SkipList::new();
            for &key in &scrambled_keys {
                scrambled.insert(key, key * 3);
            }
            assert!(bulk.iter().eq(scrambled.iter()));
            for probe in keys.iter().flat_map(|&key| [key - 1, key, key + 1]) {
                assert_eq!(bulk.rank(&probe), scrambled.rank(&probe));
                assert_eq!(bulk.count_less(&probe), scrambled.count_less(&probe));
            }
            for rank in 0..=count {
                assert_eq!(bulk.get_by_rank(rank), scrambled.get_by_rank(rank));
            }
        }
    }

    #[test]
    fn from_sorted_with_seed_follows_the_seed() {
        let items = || (0..500u64).map(|key| (key * 2 + 1, key * 3));
        let bulk = SkipList::from_sorted_with_seed(99, items());
        bulk.check_invariants();
        let mut inserted = SkipList::with_seed(99);
        for (key, value) in items() {
            inserted.insert(key, value);
        }
        assert_eq!(slot_heights(&bulk), slot_heights(&inserted));
        assert!(bulk.levels == inserted.levels);
        let other_seed = SkipList::from_sorted_with_seed(100, items());
        assert_ne!(slot_heights(&bulk), slot_heights(&other_seed));
        assert_eq!(
            slot_heights(&SkipList::from_sorted(items())),
            slot_heights(&SkipList::from_sorted_with_seed(DEFAULT_SEED, items()))
        );
    }

    #[test]
    fn from_sorted_reserves_from_size_hint() {
        let count = 100_000;
        let exact = SkipList::from_sorted((0..count as u64).map(|key| (key, ())));
        assert_eq!(exact.slots.capacity(), count, "exact hint, exact slots");
        // Growing by doubling would leave the pool at least 1.5x its length.
        assert!(exact.levels.capacity() < exact.levels.len() + count / 32);
        exact.check_invariants();
        // A lower bound of 0 only costs reallocations, never correctness.
        let filtered = SkipList::from_sorted(
            (0..count as u64)
                .filter(|key| key % 3 != 0)
                .map(|key| (key, ())),
        );
        filtered.check_invariants();
        assert_eq!(filtered.len(), count - count.div_ceil(3));
        assert_eq!(filtered.get_by_rank(1), Some((&2, &())));
    }

    /// Every read of `list` at `key` (and at a rank derived from it) agrees with `model`.
    fn assert_reads_agree(list: &SkipList<u64, u64>, model: &BTreeMap<u64, u64>, key: u64) {
        assert_eq!(list.get(&key), model.get(&key));
        let less = model.range(..key).count();
        assert_eq!(list.count_less(&key), less);
        assert_eq!(list.rank(&key), model.contains_key(&key).then_some(less));
        let rank = (key as usize) % (model.len() + 2);
        assert_eq!(list.get_by_rank(rank), model.iter().nth(rank));
        let tail: Vec<_> = list.iter_from_rank(rank).take(20).collect();
        let expected: Vec<_> = model.iter().skip(rank).take(20).collect();
        assert_eq!(tail, expected);
    }

    #[test]
    fn from_sorted_list_keeps_working_under_churn() {
        let mut state = 0xB01D_FACE_CAFE_F00D;
        let mut keys: Vec<u64> = (0..4000).map(|_| xorshift(&mut state) % 8_000).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut list = SkipList::from_sorted(keys.iter().map(|&key| (key, key)));
        let mut model: BTreeMap<u64, u64> = keys.iter().map(|&key| (key, key)).collect();
        list.check_invariants();
        let mut peak_len = list.len();

        for step in 0..30_000u64 {
            let key = xorshift(&mut state) % 8_000;
            match xorshift(&mut state) % 8 {
                0 | 1 => assert_eq!(list.insert(key, step), model.insert(key, step)),
                2 | 3 => assert_eq!(list.remove(&key), model.remove(&key)),
                _ => assert_reads_agree(&list, &model, key),
            }
            assert_eq!(list.len(), model.len());
            peak_len = peak_len.max(model.len());
            if step % 5000 == 0 {
                list.check_invariants();
            }
        }
        list.check_invariants();
        assert!(list.iter().eq(model.iter()));
        // Every insert after a remove reused a vacant slot, so the arena holds exactly the
        // most members the list ever had.
        assert_eq!(list.slots.len(), peak_len);

        list.clear();
        list.check_invariants();
        for key in (0..100u64).rev() {
            list.insert(key, key);
        }
        list.check_invariants();
        assert_eq!(list.rank(&40), Some(40));
    }

    #[test]
    fn from_sorted_drops_values_exactly_once() {
        let witness = Rc::new(());
        let list = SkipList::from_sorted((0..300u32).map(|key| (key, Rc::clone(&witness))));
        assert_eq!(Rc::strong_count(&witness), 301);
        drop(list);
        assert_eq!(Rc::strong_count(&witness), 1);
    }

    #[test]
    #[should_panic(expected = "keys must be strictly increasing (item 3 ")]
    fn from_sorted_rejects_duplicate_keys() {
        SkipList::from_sorted([(1, ()), (2, ()), (5, ()), (5, ()), (7, ())]);
    }

    #[test]
    #[should_panic(expected = "keys must be strictly increasing (item 2 ")]
    fn from_sorted_rejects_descending_keys() {
        SkipList::from_sorted([(1, ()), (5, ()), (4, ())]);
    }

    /// Everything a list holds, stale entries included, to compare two lists exactly.
    fn full_state(list: &SkipList<u64, u64>) -> impl PartialEq + fmt::Debug + '_ {
        let slots: Vec<(u8, u64, u64, u32)> = list
            .slots
            .iter()
            .map(|slot| match slot {
                Slot::Occupied(node) => (node.height.get(), node.key, node.value, NIL),
                Slot::Vacant { next_free } => (0, 0, 0, *next_free),
            })
            .collect();
        (
            slots,
            &list.levels,
            list.free_slot,
            list.free_levels,
            list.level_count,
            list.len,
            list.rng_state,
        )
    }

    /// What `replace` promises to equal.
    fn remove_then_insert(
        list: &mut SkipList<u64, u64>,
        old: u64,
        new: u64,
        value: u64,
    ) -> Option<u64> {
        let previous = list.remove(&old)?;
        list.insert(new, value);
        Some(previous)
    }

    /// Picks the `old` and `new` of a replace the way a leaderboard mostly moves keys: a
    /// present key to a slightly smaller one, sometimes far forward, sometimes back, onto
    /// itself or onto another member, and sometimes an absent `old`.
    fn pick_move(model: &BTreeMap<u64, u64>, key_space: u64, state: &mut u64) -> (u64, u64) {
        let random_key = xorshift(state) % key_space;
        let old = if model.is_empty() || xorshift(state).is_multiple_of(10) {
            random_key
        } else {
            let rank = (xorshift(state) as usize) % model.len();
            *model.keys().nth(rank).expect("rank < len")
        };
        let new = match xorshift(state) % 20 {
            0..=9 => old.saturating_sub(1 + xorshift(state) % 16),
            10..=12 => old.saturating_sub(xorshift(state) % (old + 1)),
            13..=14 => (old + 1 + xorshift(state) % 64).min(key_space - 1),
            15 => old,
            16 if !model.is_empty() => {
                let rank = (xorshift(state) as usize) % model.len();
                *model.keys().nth(rank).expect("rank < len")
            }
            _ => random_key,
        };
        (old, new)
    }

    #[test]
    fn replace_matches_model_and_remove_then_insert() {
        for (seed, key_space, steps) in [
            (1u64, 200u64, 20_000u64),
            (2, 5_000, 30_000),
            (3, 1 << 40, 20_000),
        ] {
            let mut state = 0xC0FF_EE00_0000_0001 ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut list = SkipList::with_seed(seed);
            // Does every replace as remove + insert; must stay identical to `list`.
            let mut twin = SkipList::with_seed(seed);
            let mut model = BTreeMap::new();
            while model.len() < 1000.min(key_space as usize / 2) {
                let key = xorshift(&mut state) % key_space;
                assert_eq!(list.insert(key, key), model.insert(key, key));
                twin.insert(key, key);
            }
            let mut counts = [0usize; 4];
            for step in 0..steps {
                let key = xorshift(&mut state) % key_space;
                match xorshift(&mut state) % 16 {
                    0..=8 => {
                        let (old, new) = pick_move(&model, key_space, &mut state);
                        let expected = model.remove(&old).inspect(|_| {
                            model.insert(new, step);
                        });
                        counts[match (expected.is_some(), new.cmp(&old)) {
                            (false, _) => 0,
                            (true, Ordering::Less) => 1,
                            (true, Ordering::Equal) => 2,
                            (true, Ordering::Greater) => 3,
                        }] += 1;
                        assert_eq!(list.replace(&old, new, step), expected, "{old} -> {new}");
                        assert_eq!(remove_then_insert(&mut twin, old, new, step), expected);
                    }
                    9 => {
                        assert_eq!(list.insert(key, step), model.insert(key, step));
                        twin.insert(key, step);
                    }
                    10 => {
                        assert_eq!(list.remove(&key), model.remove(&key));
                        twin.remove(&key);
                    }
                    _ => assert_reads_agree(&list, &model, key),
                }
                assert_eq!(list.len(), model.len());
                if step % 500 == 0 {
                    list.check_invariants();
                    assert!(
                        full_state(&list) == full_state(&twin),
                        "diverged by step {step}"
                    );
                }
            }
            list.check_invariants();
            assert!(list.iter().eq(model.iter()));
            assert_eq!(full_state(&list), full_state(&twin));
            // Every kind of move happened often enough to mean something.
            assert!(counts.iter().all(|&count| count > 100), "{counts:?}");
        }
    }

    #[test]
    fn replace_absent_changes_nothing() {
        let mut list = SkipList::with_seed(5);
        let mut untouched = SkipList::with_seed(5);
        for key in (10..400u64).step_by(3) {
            list.insert(key, key);
            untouched.insert(key, key);
        }
        for old in [0, 11, 12, 200, 398, 1000, u64::MAX] {
            for new in [0, 5, old, 100, 397, 5000] {
                assert_eq!(list.replace(&old, new, 7), None, "{old} -> {new}");
            }
        }
        list.check_invariants();
        assert_eq!(full_state(&list), full_state(&untouched));
    }

    #[test]
    fn replace_edge_cases() {
        // One member: onto itself, forward, backward, onto an absent key.
        let mut list = SkipList::with_seed(11);
        list.insert(50u64, 1u64);
        assert_eq!(list.replace(&50, 50, 2), Some(1));
        list.check_invariants();
        assert_eq!(list.replace(&50, 10, 3), Some(2));
        list.check_invariants();
        assert_eq!(list.replace(&10, 90, 4), Some(3));
        list.check_invariants();
        assert_eq!(list.replace(&10, 5, 5), None);
        assert_eq!(list.iter().collect::<Vec<_>>(), [(&90, &4)]);
        assert_eq!(list.slots.len(), 1, "the one slot is reused");

        // First, last and becoming first, against remove + insert on a twin.
        let keys: Vec<u64> = (1..=300).map(|key| key * 10).collect();
        let mut list = SkipList::with_seed(12);
        let mut twin = SkipList::with_seed(12);
        for &key in &keys {
            list.insert(key, key);
            twin.insert(key, key);
        }
        let moves = [
            (10, 5),      // the first member stays first
            (5, 5),       // the first member onto itself
            (3000, 2995), // the last member stays last
            (2995, 1),    // the last member becomes first
            (1500, 0),    // a middle member becomes first
            (2990, 2985), // the new last member moves a little
            (0, 2990),    // back to the end (falls back to remove + insert)
            (20, 1),      // onto another member: the first one
            (2990, 2980), // onto another member just before it
        ];
        for (old, new) in moves {
            assert_eq!(
                list.replace(&old, new, old + new),
                remove_then_insert(&mut twin, old, new, old + new),
                "{old} -> {new}"
            );
            list.check_invariants();
            assert_eq!(full_state(&list), full_state(&twin), "{old} -> {new}");
        }
        assert_eq!(list.first(), Some((&1, &21)));
        assert_eq!(list.get(&2980), Some(&(2990 + 2980)));
        assert_eq!(list.len(), keys.len() - 2);
    }

    #[test]
    fn replace_grows_and_shrinks_level_count() {
        // Two members, the second moved in front of the first over and over: each replace
        // draws a new height, so the top level comes and goes with the tall draws.
        let mut list = SkipList::with_seed(13);
        let mut twin = SkipList::with_seed(13);
        list.insert(u64::MAX, 0);
        twin.insert(u64::MAX, 0);
        let mut key = u64::MAX - 1;
        list.insert(key, 0);
        twin.insert(key, 0);
        let mut grown = 0;
        let mut shrunk = 0;
        for step in 1..=3000u64 {
            let level_count = list.level_count;
            assert_eq!(list.replace(&key, key - 1, step), Some(step - 1));
            remove_then_insert(&mut twin, key, key - 1, step);
            key -= 1;
            grown += usize::from(list.level_count > level_count);
            shrunk += usize::from(list.level_count < level_count);
            list.check_invariants();
            assert_eq!(list.first(), Some((&key, &step)));
            assert_eq!(list.rank(&u64::MAX), Some(1));
        }
        assert!(full_state(&list) == full_state(&twin));
        assert!(grown > 10 && shrunk > 10, "grown {grown}, shrunk {shrunk}");
        assert_eq!(list.slots.len(), 2);
    }

    #[test]
    fn replace_drops_values_exactly_once() {
        let witness = Rc::new(());
        let mut list = SkipList::new();
        for key in 0..100u32 {
            list.insert(key * 2, Rc::clone(&witness));
        }
        assert_eq!(Rc::strong_count(&witness), 101);
        // Forward, onto itself, backward, onto another member, absent.
        for (old, new) in [(50, 49), (49, 49), (10, 77), (80, 82), (500, 1)] {
            drop(list.replace(&old, new, Rc::clone(&witness)));
        }
        // The move onto 82 dropped 82's value and the absent one dropped its argument.
        assert_eq!(list.len(), 99);
        assert_eq!(Rc::strong_count(&witness), 100);
        drop(list);
        assert_eq!(Rc::strong_count(&witness), 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn from_sorted_agrees_with_inserts(
            mut keys in proptest::collection::vec(2u64..50_000, 0..400),
            seed in any::<u64>(),
        ) {
            keys.sort_unstable();
            keys.dedup();
            // Spread the keys two apart so each has absent neighbours.
            let keys: Vec<u64> = keys.iter().map(|key| key * 2).collect();
            let bulk = SkipList::from_sorted_with_seed(seed, keys.iter().map(|&key| (key, key * 3)));
            bulk.check_invariants();
            assert_answers_match(&bulk, &keys);
            let mut inserted = SkipList::with_seed(seed);
            for &key in &keys {
                inserted.insert(key, key * 3);
            }
            prop_assert_eq!(slot_heights(&bulk), slot_heights(&inserted));
            prop_assert!(bulk.levels == inserted.levels);
            prop_assert_eq!(bulk.level_count, inserted.level_count);
        }

        #[test]
        fn replace_agrees_with_model_and_remove_then_insert(
            initial in proptest::collection::vec(0u64..300, 0..120),
            moves in proptest::collection::vec((0u64..300, 0u64..24, 0u8..8), 1..200),
            seed in any::<u64>(),
        ) {
            let mut list = SkipList::with_seed(seed);
            let mut twin = SkipList::with_seed(seed);
            let mut model = BTreeMap::new();
            for &key in &initial {
                list.insert(key, key);
                twin.insert(key, key);
                model.insert(key, key);
            }
            for (step, &(pick, distance, kind)) in moves.iter().enumerate() {
                let value = step as u64;
                // Mostly a present key moved a little forward.
                let old = match model.len() {
                    0 => pick,
                    len if kind != 7 => *model.keys().nth(pick as usize % len).expect("in range"),
                    _ => pick,
                };
                let new = match kind {
                    0..=3 => old.saturating_sub(distance),
                    4 => old.saturating_sub(distance * 13),
                    5 => old + distance,
                    _ => pick,
                };
                let expected = model.remove(&old).inspect(|_| {
                    model.insert(new, value);
                });
                prop_assert_eq!(list.replace(&old, new, value), expected);
                prop_assert_eq!(remove_then_insert(&mut twin, old, new, value), expected);
                list.check_invariants();
                prop_assert!(list.iter().eq(model.iter()));
                prop_assert!(full_state(&list) == full_state(&twin));
            }
            for (rank, (key, _)) in model.iter().enumerate() {
                prop_assert_eq!(list.rank(key), Some(rank));
                prop_assert_eq!(list.get_by_rank(rank).map(|(key, _)| *key), Some(*key));
            }
        }
    }
}
