//! One shard's part of one leaderboard window: the live period in an order-statistic
//! skip list, and the closing standings of recent periods.
//!
//! Every entry carries the full sort key (score, when it was reached, sequence, player)
//! so that shards can be merged into one global order, and a global rank is the sum of
//! each shard's `count_less` for the same key.

use std::cmp::Reverse;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::skiplist::SkipList;
use crate::window::{Period, WindowKind};

/// Sort key of a board entry: higher score first, then who reached it first, then the
/// shard-local sequence, then the player id (unique, so the order is total across shards).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BoardKey {
    pub score: Reverse<u64>,
    pub reached_ms: u64,
    pub seq: u64,
    pub player: Arc<str>,
}

impl BoardKey {
    pub fn score(&self) -> u64 {
        self.score.0
    }
}

/// The standings of a closed period, best first, truncated to what readers may page.
#[derive(Debug, Clone)]
pub struct ClosedPeriod {
    pub name: String,
    pub closed_ms: u64,
    pub entries: Vec<BoardKey>,
}

pub struct Board {
    pub kind: WindowKind,
    pub period: Period,
    ranking: SkipList<BoardKey, ()>,
    /// Each ranked player's current key, to find it for an update.
    keys: HashMap<Arc<str>, BoardKey>,
    /// When the live period last changed, ms.
    pub updated_ms: u64,
    /// Newest last.
    history: VecDeque<ClosedPeriod>,
}

impl Board {
    pub fn new(kind: WindowKind, period: Period) -> Self {
        Board {
            kind,
            period,
            ranking: SkipList::new(),
            keys: HashMap::new(),
            updated_ms: 0,
            history: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.ranking.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranking.is_empty()
    }

    /// Adds `score` to the player's score in the live period.
    pub fn add(&mut self, player: &Arc<str>, score: u64, at_ms: u64, seq: u64) {
        debug_assert!(score > 0, "zero scores do not move a board");
        let total = match self.keys.get(player) {
            Some(old) => {
                let old = old.clone();
                let removed = self.ranking.remove(&old);
                debug_assert!(removed.is_some(), "keys and ranking agree");
                old.score() + score
            }
            None => score,
        };
        let key = BoardKey {
            score: Reverse(total),
            reached_ms: at_ms,
            seq,
            player: player.clone(),
        };
        self.keys.insert(player.clone(), key.clone());
        self.ranking.insert(key, ());
        self.updated_ms = at_ms;
    }

    /// Closes the live period: keeps its best `entries_max` as history (at most
    /// `periods_max` periods) and starts `next` empty.
    pub fn close(&mut self, next: Period, at_ms: u64, entries_max: usize, periods_max: usize) {
        let entries = self
            .ranking
            .iter()
            .take(entries_max)
            .map(|(k, _)| k.clone())
            .collect();
        let closed = ClosedPeriod {
            name: std::mem::replace(&mut self.period, next).name,
            closed_ms: at_ms,
            entries,
        };
        if periods_max > 0 {
            if self.history.len() == periods_max {
                self.history.pop_front();
            }
            self.history.push_back(closed);
        }
        self.ranking.clear();
        self.keys.clear();
        self.updated_ms = at_ms;
    }

    pub fn key_of(&self, player: &str) -> Option<&BoardKey> {
        self.keys.get(player)
    }

    /// The best `n` live entries.
    pub fn top(&self, n: usize) -> Vec<BoardKey> {
        self.ranking
            .iter()
            .take(n)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Live entries ranked strictly ahead of `key`.
    pub fn count_ahead(&self, key: &BoardKey) -> usize {
        self.ranking.count_less(key)
    }

    /// Up to `n` live entries just ahead of `key` and up to `n` just behind it (`key`
    /// itself excluded), best first.
    pub fn around(&self, key: &BoardKey, n: usize) -> Vec<BoardKey> {
        let ahead = self.ranking.count_less(key);
        let first = ahead.saturating_sub(n);
        let mut out: Vec<BoardKey> = self
            .ranking
            .iter_from_rank(first)
            .take(ahead - first)
            .map(|(k, _)| k.clone())
            .collect();
        let behind_from = ahead + usize::from(self.ranking.get(key).is_some());
        out.extend(
            self.ranking
                .iter_from_rank(behind_from)
                .take(n)
                .map(|(k, _)| k.clone()),
        );
        out
    }

    pub fn closed(&self, name: &str) -> Option<&ClosedPeriod> {
        self.history.iter().rev().find(|p| p.name == name)
    }

    /// Recovery: sets the live period as checkpointed (its entries follow).
    pub fn restore_period(&mut self, period: Period, updated_ms: u64) {
        self.period = period;
        self.updated_ms = updated_ms;
    }

    /// Recovery: puts back one live entry as checkpointed.
    pub fn restore_entry(&mut self, key: BoardKey) {
        if let Some(old) = self.keys.insert(key.player.clone(), key.clone()) {
            self.ranking.remove(&old);
        }
        self.ranking.insert(key, ());
    }

    /// Recovery: puts back a closed period's standings. Parts of the same period (from
    /// shards merged after a change of shard count) are merged, best first.
    pub fn restore_closed(
        &mut self,
        name: String,
        closed_ms: u64,
        entries: Vec<BoardKey>,
        entries_max: usize,
        periods_max: usize,
    ) {
        if let Some(existing) = self.history.iter_mut().find(|c| c.name == name) {
            existing.entries.extend(entries);
            existing.entries.sort_unstable();
            existing.entries.truncate(entries_max);
            existing.closed_ms = existing.closed_ms.min(closed_ms);
            return;
        }
        if periods_max == 0 {
            return;
        }
        if self.history.len() == periods_max {
            self.history.pop_front();
        }
        self.history.push_back(ClosedPeriod {
            name,
            closed_ms,
            entries,
        });
    }

    /// Closed periods, oldest first (the order to restore them in).
    pub fn history_oldest_first(&self) -> impl Iterator<Item = &ClosedPeriod> {
        self.history.iter()
    }

    /// Closed periods, newest first.
    pub fn history(&self) -> impl Iterator<Item = &ClosedPeriod> {
        self.history.iter().rev()
    }

    /// Each live entry, best first (for checkpoints and mirrors).
    pub fn iter(&self) -> impl Iterator<Item = &BoardKey> {
        self.ranking.iter().map(|(k, _)| k)
    }
}

/// Merges per-shard lists (each sorted best first) into one sorted list of at most `n`.
pub fn merge_sorted(lists: Vec<Vec<BoardKey>>, n: usize) -> Vec<BoardKey> {
    let mut all: Vec<BoardKey> = lists.into_iter().flatten().collect();
    all.sort_unstable_by(Ord::cmp);
    all.truncate(n);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn period(name: &str) -> Period {
        Period {
            name: name.into(),
            ends_ms: u64::MAX,
        }
    }

    fn p(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    #[test]
    fn ranks_by_score_then_who_reached_it_first() {
        let mut board = Board::new(WindowKind::Weekly, period("2026-W48"));
        board.add(&p("aaa"), 10, 1, 1);
        board.add(&p("bbb"), 20, 2, 2);
        board.add(&p("ccc"), 10, 3, 3);
        board.add(&p("aaa"), 10, 4, 4); // aaa reaches 20 after bbb
        let order: Vec<(String, u64)> = board
            .top(10)
            .iter()
            .map(|k| (k.player.to_string(), k.score()))
            .collect();
        assert_eq!(
            order,
            vec![("bbb".into(), 20), ("aaa".into(), 20), ("ccc".into(), 10)]
        );
        assert_eq!(board.len(), 3);
        let ccc = board.key_of("ccc").unwrap().clone();
        assert_eq!(board.count_ahead(&ccc), 2);
    }

    #[test]
    fn around_excludes_the_player_and_clips_at_the_ends() {
        let mut board = Board::new(WindowKind::Daily, period("d"));
        for (i, name) in ["p00", "p01", "p02", "p03", "p04", "p05"]
            .iter()
            .enumerate()
        {
            board.add(&p(name), 100 - i as u64, i as u64 + 1, i as u64 + 1);
        }
        let key = board.key_of("p01").unwrap().clone();
        let names: Vec<String> = board
            .around(&key, 2)
            .iter()
            .map(|k| k.player.to_string())
            .collect();
        assert_eq!(names, vec!["p00", "p02", "p03"]);
    }

    #[test]
    fn close_keeps_bounded_history() {
        let mut board = Board::new(WindowKind::Daily, period("d1"));
        for day in 1..=5u64 {
            for i in 0..10u64 {
                board.add(&p(&format!("p{i:02}")), i + 1, day * 100 + i, day * 100 + i);
            }
            board.close(period(&format!("d{}", day + 1)), day * 1000, 3, 2);
        }
        assert!(board.is_empty());
        assert_eq!(board.period.name, "d6");
        let names: Vec<&str> = board.history().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["d5", "d4"]);
        let d5 = board.closed("d5").unwrap();
        assert_eq!(d5.entries.len(), 3);
        assert_eq!(d5.entries[0].score(), 10);
        assert!(board.closed("d1").is_none());
    }

    #[test]
    fn merge_gives_the_global_order() {
        let k = |s: u64, at: u64, name: &str| BoardKey {
            score: Reverse(s),
            reached_ms: at,
            seq: 0,
            player: p(name),
        };
        let merged = merge_sorted(
            vec![
                vec![k(9, 1, "a"), k(5, 1, "b")],
                vec![k(9, 0, "c"), k(1, 0, "d")],
            ],
            3,
        );
        let names: Vec<&str> = merged.iter().map(|k| &*k.player).collect();
        assert_eq!(names, vec!["c", "a", "b"]);
    }
}
