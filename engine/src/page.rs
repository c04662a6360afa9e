//! One page of a leaderboard split over shards, found without reading what ranks ahead
//! of it.
//!
//! Each shard ranks its own players. Every [`BoardKey`] is unique, so the global order is
//! the merge of the shards' orders, and the number of entries ahead of a key globally is
//! the sum over shards of their entries ahead of it. The page at `offset` starts at the
//! entry `K` with exactly `offset` entries ahead of it. Taking each shard's best
//! `offset + limit` entries and merging them finds it in O(offset) per shard: 5 ms of a
//! shard's thread at offset 10,000 among 2 million players. [`Selection`] finds `K` by a
//! distributed selection instead, in O(polylog n) per shard:
//!
//! 1. every shard proposes up to [`PIVOTS_PER_SHARD`] evenly spaced keys from its
//!    *candidate interval*, the local ranks where `K` may still be ([`propose`]; each key
//!    is O(log n) through the skip list's spans);
//! 2. every shard counts its entries ahead of each proposed pivot ([`count_ahead_each`],
//!    O(log n) each); a pivot's sum is its global position;
//! 3. the last pivot at or before position `offset` becomes the low bound and the first
//!    one after it the high bound, which shrinks every shard's interval by a factor of
//!    `PIVOTS_PER_SHARD`.
//!
//! Once every shard has proposed its whole interval, the low bound is `K` itself. Each
//! shard then walks `limit` entries from its count ahead of the low bound ([`walk`]), and
//! the merge of the walks is the page ([`Selection::page`]).
//!
//! Shards keep taking writes between these fan-outs. Bounds are keys, not ranks, so every
//! round counts afresh; the walk counts the low bound again, and if the page no longer
//! starts inside what was walked (players passed the low bound meanwhile) the caller
//! starts over or, after a few tries, answers with the ranks it observed.

use std::cmp::Ordering;

use crate::board::{merge_sorted, BoardKey, ClosedPeriod};

/// Pivots a shard proposes per round: each round shrinks its candidate interval by this
/// factor. Fewer pivots cost fewer O(log n) searches per round but more rounds, each two
/// fan-outs; 16 finds a position among a million entries per shard in five rounds.
pub const PIVOTS_PER_SHARD: usize = 16;
/// Rounds at most: intervals shrink by 16 per round, so 2^32 entries need eight; more
/// happen only while writes keep moving the bounds, and then the page is read anyway.
pub const ROUNDS_MAX: usize = 10;
/// Offsets up to this are walked from the top directly: one fan-out walking at most
/// `offset + limit` per shard costs less than the rounds would.
pub const DIRECT_OFFSET_MAX: usize = 256;
/// Entries a walk takes beyond `limit` to reach the page from a low bound short of it.
/// Bounds the walk when the rounds ran out before converging.
pub const WALK_SLACK_MAX: usize = 1024;

/// One shard's sorted entries of one period (live or closed): what a selection reads.
pub trait RankedEntries {
    /// Entries on this shard.
    fn entry_count(&self) -> usize;
    /// Entries ranked strictly ahead of `key`, a key from any shard.
    fn count_ahead(&self, key: &BoardKey) -> usize;
    /// The entry at 0-based local `rank`.
    fn entry_at(&self, rank: usize) -> Option<BoardKey>;
    /// Up to `n` entries from 0-based local rank `from`, best first.
    fn entries_from(&self, from: usize, n: usize) -> Vec<BoardKey>;
}

/// What a shard needs of a selection to propose pivots.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// The wanted global position (0-based).
    pub offset: usize,
    /// A key at or before the wanted entry; `None` is the top of the board.
    pub low: Option<BoardKey>,
    /// A key after the wanted entry; `None` is the end of the board.
    pub high: Option<BoardKey>,
}

/// One shard's answer to a round's first fan-out.
#[derive(Debug, Clone)]
pub struct Proposal {
    /// Entries on the shard: lets the route see a page past the end without more rounds.
    pub entry_count: usize,
    /// Width of the shard's candidate interval: when every shard proposed all of its
    /// candidates, the round finds the wanted entry exactly.
    pub candidates: usize,
    /// Evenly spaced keys of the candidate interval, best first.
    pub pivots: Vec<BoardKey>,
}

/// A shard's proposal: up to [`PIVOTS_PER_SHARD`] keys evenly spaced over the local ranks
/// where the wanted entry may be. O(`PIVOTS_PER_SHARD` log n).
pub fn propose(entries: &dyn RankedEntries, bounds: &Bounds) -> Proposal {
    let entry_count = entries.entry_count();
    let from = bounds.low.as_ref().map_or(0, |k| entries.count_ahead(k));
    // The wanted entry has `offset` entries ahead of it in all, so at most that many here.
    let to = bounds
        .high
        .as_ref()
        .map_or(entry_count, |k| entries.count_ahead(k))
        .min(bounds.offset.saturating_add(1))
        .max(from);
    let candidates = to - from;
    let pivots = if candidates <= PIVOTS_PER_SHARD {
        entries.entries_from(from, candidates)
    } else {
        (0..PIVOTS_PER_SHARD)
            .filter_map(|i| entries.entry_at(from + i * candidates / PIVOTS_PER_SHARD))
            .collect()
    };
    Proposal {
        entry_count,
        candidates,
        pivots,
    }
}

/// For each pivot, the shard's entries ranked ahead of it. O(pivots × log n).
pub fn count_ahead_each(entries: &dyn RankedEntries, pivots: &[BoardKey]) -> Vec<usize> {
    pivots.iter().map(|p| entries.count_ahead(p)).collect()
}

/// One shard's answer to the last fan-out.
#[derive(Debug, Clone)]
pub struct Walk {
    /// The shard's entries ahead of the low bound, counted as it walked.
    pub ahead: usize,
    /// Up to `n` entries from the low bound on, best first.
    pub entries: Vec<BoardKey>,
}

/// Up to `n` entries from the first one at or after `from` (the top when `None`). O(log n + n).
pub fn walk(entries: &dyn RankedEntries, from: Option<&BoardKey>, n: usize) -> Walk {
    let ahead = from.map_or(0, |k| entries.count_ahead(k));
    Walk {
        ahead,
        entries: entries.entries_from(ahead, n),
    }
}

/// A page: entries best first, the first ranked `first_rank` (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub first_rank: usize,
    pub entries: Vec<BoardKey>,
}

/// Why [`Selection::page`] could not place the page exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// The page as the walks saw it, ranked by what they counted (its first rank may not
    /// be `offset + 1`): what to answer once retries are exhausted.
    pub observed: Page,
}

/// The route's side of one page selection; see the module docs.
#[derive(Debug, Clone)]
pub struct Selection {
    offset: usize,
    limit: usize,
    /// The last pivot found at or before position `offset`, with its global position.
    low: Option<(BoardKey, usize)>,
    /// The first pivot found after position `offset`.
    high: Option<BoardKey>,
    rounds: usize,
    /// No round is needed any more: the low bound is the wanted entry, or the offset is
    /// shallow, or the rounds ran out.
    settled: bool,
    /// The board has no entry at `offset`: the page is empty.
    past_end: bool,
}

impl Selection {
    pub fn new(offset: usize, limit: usize) -> Self {
        Selection {
            offset,
            limit,
            low: None,
            high: None,
            rounds: 0,
            settled: offset <= DIRECT_OFFSET_MAX,
            past_end: false,
        }
    }

    /// The bounds for the next round, or `None` when the walk comes next.
    pub fn next_round(&self) -> Option<Bounds> {
        (!self.settled).then(|| Bounds {
            offset: self.offset,
            low: self.low.as_ref().map(|(k, _)| k.clone()),
            high: self.high.clone(),
        })
    }

    /// Merges a round's proposals (one per shard) into the pivots every shard counts,
    /// best first. Empty when there is nothing to count.
    pub fn pivots(&mut self, proposals: &[Proposal]) -> Vec<BoardKey> {
        self.rounds += 1;
        let entries: usize = proposals.iter().map(|p| p.entry_count).sum();
        if entries <= self.offset {
            self.past_end = true;
            self.settled = true;
            return Vec::new();
        }
        // Every candidate is a pivot: this round's counts find the wanted entry exactly.
        if proposals.iter().all(|p| p.candidates <= PIVOTS_PER_SHARD) || self.rounds >= ROUNDS_MAX {
            self.settled = true;
        }
        let mut pivots: Vec<BoardKey> = proposals
            .iter()
            .flat_map(|p| p.pivots.iter().cloned())
            .collect();
        pivots.sort_unstable();
        pivots.dedup();
        pivots
    }

    /// Narrows the bounds from each shard's counts of the pivots
    /// (`counts[shard][pivot]`).
    pub fn narrow(&mut self, pivots: &[BoardKey], counts: &[Vec<usize>]) {
        for (i, pivot) in pivots.iter().enumerate() {
            let position: usize = counts.iter().map(|c| c.get(i).copied().unwrap_or(0)).sum();
            if position <= self.offset {
                if self.low.as_ref().is_none_or(|(low, _)| pivot > low) {
                    self.low = Some((pivot.clone(), position));
                }
            } else if self.high.as_ref().is_none_or(|high| pivot < high) {
                self.high = Some(pivot.clone());
            }
        }
    }

    /// What each shard walks: from which key, how many entries; `None` when the page is
    /// past the end of the board.
    pub fn walk_plan(&self) -> Option<(Option<BoardKey>, usize)> {
        if self.past_end {
            return None;
        }
        let (from, position) = match &self.low {
            Some((key, position)) => (Some(key.clone()), *position),
            None => (None, 0),
        };
        let short_by = self.offset.saturating_sub(position).min(WALK_SLACK_MAX);
        Some((from, short_by + self.limit))
    }

    /// The page from every shard's walk of `n` entries (as [`Selection::walk_plan`] said).
    /// `Err` when writes between the fan-outs moved the page out of what was walked.
    pub fn page(&self, walks: Vec<Walk>, n: usize) -> Result<Page, Moved> {
        let ahead: usize = walks.iter().map(|w| w.ahead).sum();
        let merged = merge_sorted(walks.into_iter().map(|w| w.entries).collect(), n);
        // Each shard gave its first `n` from the low bound, so the merge's first `n` are
        // the board's first `n` from there; fewer means nothing was left out.
        let complete = merged.len() < n;
        let slice = |start: usize| -> Vec<BoardKey> {
            let start = start.min(merged.len());
            let end = (start + self.limit).min(merged.len());
            merged[start..end].to_vec()
        };
        match self.offset.checked_sub(ahead) {
            Some(start) if complete || start + self.limit <= n => Ok(Page {
                first_rank: self.offset + 1,
                entries: slice(start),
            }),
            start => {
                let start = start.unwrap_or(0).min(merged.len());
                Err(Moved {
                    observed: Page {
                        first_rank: ahead + start + 1,
                        entries: slice(start),
                    },
                })
            }
        }
    }
}

/// A page selection over shards this thread can read directly: the steps the route runs
/// as fan-outs, one after the other. For tests and benches; returns the page and how
/// many fan-outs the route would have made.
pub fn select_in_process(
    shards: &[&dyn RankedEntries],
    offset: usize,
    limit: usize,
) -> (Result<Page, Moved>, usize) {
    let mut selection = Selection::new(offset, limit);
    let mut fan_outs = 0;
    while let Some(bounds) = selection.next_round() {
        let proposals: Vec<Proposal> = shards.iter().map(|s| propose(*s, &bounds)).collect();
        fan_outs += 1;
        let pivots = selection.pivots(&proposals);
        if pivots.is_empty() {
            continue;
        }
        let counts: Vec<Vec<usize>> = shards
            .iter()
            .map(|s| count_ahead_each(*s, &pivots))
            .collect();
        fan_outs += 1;
        selection.narrow(&pivots, &counts);
    }
    let Some((from, n)) = selection.walk_plan() else {
        let past_end = Page {
            first_rank: offset + 1,
            entries: Vec::new(),
        };
        return (Ok(past_end), fan_outs);
    };
    let walks = shards.iter().map(|s| walk(*s, from.as_ref(), n)).collect();
    (selection.page(walks, n), fan_outs + 1)
}

/// Entries of `page` (best first) at or before `cutoff`: a closed period keeps each
/// shard's best entries only, so past the worst kept entry of a shard that was cut, the
/// merged order would skip entries nobody kept.
pub fn cut_at(page: &mut Page, cutoff: Option<&BoardKey>) {
    if let Some(cutoff) = cutoff {
        let kept = page
            .entries
            .partition_point(|k| k.cmp(cutoff) != Ordering::Greater);
        page.entries.truncate(kept);
    }
}

/// A closed period's entries are kept sorted, best first.
impl RankedEntries for ClosedPeriod {
    fn entry_count(&self) -> usize {
        self.entries.len()
    }

    fn count_ahead(&self, key: &BoardKey) -> usize {
        self.entries.partition_point(|k| k < key)
    }

    fn entry_at(&self, rank: usize) -> Option<BoardKey> {
        self.entries.get(rank).cloned()
    }

    fn entries_from(&self, from: usize, n: usize) -> Vec<BoardKey> {
        let rest = self.entries.get(from..).unwrap_or_default();
        rest.iter().take(n).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Reverse;

    fn key(score: u64, player: &str) -> BoardKey {
        BoardKey {
            score: Reverse(score),
            reached_ms: 0,
            seq: 0,
            player: player.into(),
        }
    }

    /// When players pass the low bound between the last count and the walk, the walk
    /// counts more entries ahead than the page's offset: the page is reported as moved,
    /// with the ranks the walk counted, never labelled with ranks it does not have.
    #[test]
    fn a_page_moved_by_writes_is_reported_with_the_ranks_observed() {
        let selection = Selection::new(10, 2);
        let (from, n) = selection.walk_plan().expect("not past the end");
        assert_eq!((from, n), (None, 12));
        // Two shards; 11 entries now ahead of where the walk started.
        let walks = vec![
            Walk {
                ahead: 6,
                entries: vec![key(50, "a"), key(40, "c")],
            },
            Walk {
                ahead: 5,
                entries: vec![key(45, "b")],
            },
        ];
        let moved = selection.page(walks, 2).expect_err("the page moved");
        assert_eq!(moved.observed.first_rank, 12);
        assert_eq!(moved.observed.entries, vec![key(50, "a"), key(45, "b")]);
    }

    /// A walk that fell short of the page (entries left on the shards that were not
    /// walked) is reported as moved too, rather than as a short page.
    #[test]
    fn a_walk_short_of_the_page_is_reported_as_moved() {
        let selection = Selection::new(3, 2);
        let walks = vec![Walk {
            ahead: 0,
            entries: vec![key(9, "a"), key(8, "b"), key(7, "c"), key(6, "d")],
        }];
        assert!(selection.page(walks.clone(), 4).is_err());
        // The same walk with room to spare: nothing was left out, the page is exact.
        let page = selection.page(walks, 5).expect("complete");
        assert_eq!(page.first_rank, 4);
        assert_eq!(page.entries, vec![key(6, "d")]);
    }
}
