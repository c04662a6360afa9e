//! One shard's part of one leaderboard window: the live period in an order-statistic
//! skip list, and the closing standings of recent periods.
//!
//! # Layout
//!
//! The skip list orders compact [`RankKey`]s (score, when it was reached, sequence, and
//! the player's position in the shard's player table: 28 B). There is no map from player
//! to key: a player's current key is rebuilt from the [`Standings`] the shard keeps in
//! the player's own record. One scoring event moves every window at once, so when a
//! player reached their score is the same on every board they are on and is stored
//! once; each window adds only a score and the board generation it belongs to. Closing a
//! period bumps the board's generation, which empties every player's standing on it
//! without visiting them.
//!
//! Readers get full [`BoardKey`]s (with the player id) through a [`BoardView`]. They
//! carry the whole sort key so that shards can be merged into one global order, and a
//! global rank is the sum of each shard's [`BoardView::count_ahead`] for the same key.
//!
//! # Replay
//!
//! Recovery replays millions of events; moving three skip-list entries per event is what
//! made it slow. While a board is *unranked* its skip list is empty and only standings
//! change; [`Board::rank_all`] then builds the list once from sorted keys in O(n).

use compact_str::CompactString;
use std::cmp::Reverse;
use std::collections::VecDeque;
use std::ops::Deref;

use crate::page::RankedEntries;
use crate::skiplist::SkipList;
use crate::window::{Period, WindowKind};

/// The full sort key of a board entry: higher score first, then who reached it first,
/// then the shard-local sequence, then the player id (unique, so the order is total
/// across shards).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BoardKey {
    pub score: Reverse<u64>,
    pub reached_ms: u64,
    pub seq: u64,
    pub player: CompactString,
}

impl BoardKey {
    pub fn score(&self) -> u64 {
        self.score.0
    }
}

/// When a score was reached: the engine clock, and the shard's sequence for order within
/// one millisecond.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reached {
    pub ms: u64,
    pub seq: u64,
}

/// A player's place on every board, kept in the player's record.
#[derive(Debug, Clone, Copy, Default)]
pub struct Standings {
    /// When the player last scored: shared by every board the player is on.
    reached: Reached,
    /// Score per window, indexed by [`WindowKind::index`]; meaningful only where the
    /// generation matches the board's.
    scores: [u64; WindowKind::COUNT],
    /// The board generation each score belongs to; 0 (no board has it) means never.
    /// 16 bits: a board closes at most daily, and generations count only within one run
    /// (they restart at 1 on recovery), so they wrap after 179 years of uptime.
    generations: [u16; WindowKind::COUNT],
}

/// How a board orders its own entries. `player` is the position in the shard's player
/// table; between shards the full [`BoardKey`] decides.
///
/// Packed to 4-byte alignment: 28 B, so a skip-list node (key plus a 1 B height) takes
/// 32 B instead of the 40 B an 8-aligned key pads it to; 24 B per player over three
/// windows. Fields are read by value (a packed field cannot be borrowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(C, packed(4))]
pub struct RankKey {
    pub score: Reverse<u64>,
    pub reached: Reached,
    pub player: u32,
}

impl RankKey {
    /// The first key that ties `key` on everything but the player.
    fn first_tied_with(key: &BoardKey) -> Self {
        RankKey {
            score: key.score,
            reached: Reached {
                ms: key.reached_ms,
                seq: key.seq,
            },
            player: 0,
        }
    }

    fn ties(&self, key: &BoardKey) -> bool {
        let (score, reached) = (self.score, self.reached);
        score == key.score && reached.ms == key.reached_ms && reached.seq == key.seq
    }
}

/// What a board needs of the shard's player table to name its entries.
pub trait Roster {
    /// The id of the player at `position`.
    fn id(&self, position: u32) -> &CompactString;
    /// A known player's position and standings.
    fn find(&self, id: &str) -> Option<(u32, &Standings)>;
}

/// The standings of a closed period, best first, truncated to what readers may page.
#[derive(Debug, Clone)]
pub struct ClosedPeriod {
    pub name: String,
    pub closed_ms: u64,
    pub entries: Vec<BoardKey>,
}

impl ClosedPeriod {
    /// A period with no entries: what a shard that does not keep a period reads as.
    pub fn empty() -> Self {
        ClosedPeriod {
            name: String::new(),
            closed_ms: 0,
            entries: Vec::new(),
        }
    }
}

pub struct Board {
    pub kind: WindowKind,
    pub period: Period,
    /// The live period's generation: a standing counts only with this generation. Starts
    /// at 1 so that a new player's zeroed standings are on no board.
    generation: u16,
    ranking: SkipList<RankKey, ()>,
    /// False while replay defers ranking (see the module docs): `ranking` is then empty.
    ranked: bool,
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
            generation: 1,
            ranking: SkipList::new(),
            ranked: true,
            updated_ms: 0,
            history: VecDeque::new(),
        }
    }

    /// Live entries (while ranked).
    pub fn len(&self) -> usize {
        self.ranking.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranking.is_empty()
    }

    /// The player's score in the live period, if any.
    pub fn score_in(&self, standings: &Standings) -> Option<u64> {
        let slot = self.kind.index();
        (standings.generations[slot] == self.generation).then_some(standings.scores[slot])
    }

    fn key_in(&self, position: u32, standings: &Standings) -> Option<RankKey> {
        self.score_in(standings).map(|score| RankKey {
            score: Reverse(score),
            reached: standings.reached,
            player: position,
        })
    }

    /// Adds `score` to the player's score in the live period. The caller moves
    /// `standings.reached` to `now` once every board has been updated: see [`add_to_boards`].
    fn add(&mut self, position: u32, standings: &mut Standings, score: u64, now: Reached) {
        debug_assert!(score > 0, "zero scores do not move a board");
        let old = self.key_in(position, standings);
        let total = old.map_or(0, |k| k.score.0).saturating_add(score);
        let slot = self.kind.index();
        standings.scores[slot] = total;
        standings.generations[slot] = self.generation;
        if self.ranked {
            let key = RankKey {
                score: Reverse(total),
                reached: now,
                player: position,
            };
            match old {
                // The score grew, so the key moves towards the front: one descent.
                Some(old) => {
                    let replaced = self.ranking.replace(&old, key, ());
                    debug_assert!(replaced.is_some(), "standings and ranking agree");
                }
                None => {
                    self.ranking.insert(key, ());
                }
            }
        }
        self.updated_ms = now.ms;
    }

    /// Takes the player's live score off the board (quarantine): returns it with when
    /// it was reached, or `None` when the player has no score in the live period.
    pub fn take(
        &mut self,
        position: u32,
        standings: &mut Standings,
        at_ms: u64,
    ) -> Option<(u64, Reached)> {
        let key = self.key_in(position, standings)?;
        if self.ranked {
            let removed = self.ranking.remove(&key);
            debug_assert!(removed.is_some(), "standings and ranking agree");
        }
        standings.generations[self.kind.index()] = 0;
        self.updated_ms = at_ms;
        Some((key.score.0, key.reached))
    }

    /// Puts a held live score back (a cleared review): the player must have no score in
    /// the live period. `standings.reached` becomes `reached`: every live score of a
    /// player shares the time of the player's last scoring event.
    pub fn put(
        &mut self,
        position: u32,
        standings: &mut Standings,
        score: u64,
        reached: Reached,
        at_ms: u64,
    ) {
        debug_assert!(self.score_in(standings).is_none(), "put on no live score");
        let slot = self.kind.index();
        standings.scores[slot] = score;
        standings.generations[slot] = self.generation;
        standings.reached = reached;
        if self.ranked {
            let key = RankKey {
                score: Reverse(score),
                reached,
                player: position,
            };
            self.ranking.insert(key, ());
        }
        self.updated_ms = at_ms;
    }

    /// Takes the player's entries out of every kept closed period: (period, entry).
    pub fn take_closed(&mut self, player: &str) -> Vec<(String, BoardKey)> {
        let mut taken = Vec::new();
        for closed in &mut self.history {
            if let Some(i) = closed.entries.iter().position(|k| k.player == player) {
                taken.push((closed.name.clone(), closed.entries.remove(i)));
            }
        }
        taken
    }

    /// Puts an entry back into the kept closed period `name`, in order, keeping its best
    /// `entries_max`: the same standings as if it had never left. False when the period
    /// is no longer kept.
    pub fn put_closed(&mut self, name: &str, key: BoardKey, entries_max: usize) -> bool {
        let Some(closed) = self.history.iter_mut().find(|c| c.name == name) else {
            return false;
        };
        let at = closed.entries.partition_point(|k| *k < key);
        closed.entries.insert(at, key);
        closed.entries.truncate(entries_max);
        true
    }

    /// Whether the board keeps `period`: the live one or a kept closed one.
    pub fn keeps(&self, period: &str) -> bool {
        self.period.name == period || self.history.iter().any(|c| c.name == period)
    }

    /// Closes the live period: keeps its best `entries_max` as history (at most
    /// `periods_max` periods) and starts `next` empty. The board must be ranked.
    pub fn close(&mut self, next: Period, at_ms: u64, limits: HistoryLimits, roster: &dyn Roster) {
        assert!(self.ranked, "a period closes on a ranked board");
        let entries = self
            .ranking
            .iter()
            .take(limits.entries_max)
            .map(|(k, _)| full_key(k, roster))
            .collect();
        let closed = ClosedPeriod {
            name: std::mem::replace(&mut self.period, next).name,
            closed_ms: at_ms,
            entries,
        };
        if limits.periods_max > 0 {
            if self.history.len() == limits.periods_max {
                self.history.pop_front();
            }
            self.history.push_back(closed);
        }
        self.ranking.clear();
        // Never 0, which is every new player's "on no board".
        self.generation = self.generation.checked_add(1).unwrap_or(1);
        self.updated_ms = at_ms;
    }

    /// Replay: stops ranking; standings alone change until [`Board::rank_all`].
    pub fn defer_ranking(&mut self) {
        self.ranking.clear();
        self.ranked = false;
    }

    pub fn is_ranked(&self) -> bool {
        self.ranked
    }

    /// Ranks every player on the live period in one pass: `players` yields each player's
    /// position and standings.
    pub fn rank_all<'a>(&mut self, players: impl Iterator<Item = (u32, &'a Standings)>) {
        let mut keys: Vec<RankKey> = players
            .filter_map(|(position, standings)| self.key_in(position, standings))
            .collect();
        keys.sort_unstable();
        self.ranking = SkipList::from_sorted(keys.into_iter().map(|k| (k, ())));
        self.ranked = true;
    }

    /// Recovery: sets the live period as checkpointed (its entries follow).
    pub fn restore_period(&mut self, period: Period, updated_ms: u64) {
        self.period = period;
        self.updated_ms = updated_ms;
    }

    /// Recovery: puts back one live entry as checkpointed, into the player's standings.
    /// Only while unranked: ranking a restored board is [`Board::rank_all`]'s job.
    pub fn restore_entry(&mut self, standings: &mut Standings, score: u64, reached: Reached) {
        assert!(!self.ranked, "entries are restored with ranking deferred");
        let slot = self.kind.index();
        standings.reached = reached;
        standings.scores[slot] = score;
        standings.generations[slot] = self.generation;
    }

    /// Recovery: puts back a closed period's standings. Parts of the same period (from
    /// shards merged after a change of shard count) are merged, best first.
    pub fn restore_closed(
        &mut self,
        name: String,
        closed_ms: u64,
        entries: Vec<BoardKey>,
        limits: HistoryLimits,
    ) {
        if let Some(existing) = self.history.iter_mut().find(|c| c.name == name) {
            existing.entries.extend(entries);
            existing.entries.sort_unstable();
            existing.entries.truncate(limits.entries_max);
            existing.closed_ms = existing.closed_ms.min(closed_ms);
            return;
        }
        if limits.periods_max == 0 {
            return;
        }
        if self.history.len() == limits.periods_max {
            self.history.pop_front();
        }
        self.history.push_back(ClosedPeriod {
            name,
            closed_ms,
            entries,
        });
    }

    pub fn closed(&self, name: &str) -> Option<&ClosedPeriod> {
        self.history.iter().rev().find(|p| p.name == name)
    }

    /// Closed periods, oldest first (the order to restore them in).
    pub fn history_oldest_first(&self) -> impl Iterator<Item = &ClosedPeriod> {
        self.history.iter()
    }

    /// Closed periods, newest first.
    pub fn history(&self) -> impl Iterator<Item = &ClosedPeriod> {
        self.history.iter().rev()
    }
}

/// How much of closed periods a board keeps.
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    /// Best entries kept per closed period.
    pub entries_max: usize,
    /// Closed periods kept.
    pub periods_max: usize,
}

/// Adds `score` to the player's score on every board, reached at `now`.
pub fn add_to_boards(
    boards: &mut [Board],
    position: u32,
    standings: &mut Standings,
    score: u64,
    now: Reached,
) {
    for board in boards {
        board.add(position, standings, score, now);
    }
    standings.reached = now;
}

fn full_key(key: &RankKey, roster: &dyn Roster) -> BoardKey {
    BoardKey {
        score: key.score,
        reached_ms: key.reached.ms,
        seq: key.reached.seq,
        player: roster.id(key.player).clone(),
    }
}

/// A ranked board with the player table that names its entries: what readers see.
pub struct BoardView<'a> {
    board: &'a Board,
    roster: &'a dyn Roster,
}

impl<'a> BoardView<'a> {
    pub fn new(board: &'a Board, roster: &'a dyn Roster) -> Self {
        debug_assert!(board.ranked, "reads wait for replay to finish");
        BoardView { board, roster }
    }

    /// The player's live entry, if they have a score in this period.
    pub fn key_of(&self, player: &str) -> Option<BoardKey> {
        let (position, standings) = self.roster.find(player)?;
        self.board
            .key_in(position, standings)
            .map(|k| full_key(&k, self.roster))
    }

    /// The best `n` live entries.
    pub fn top(&self, n: usize) -> Vec<BoardKey> {
        self.iter().take(n).collect()
    }

    /// Each live entry, best first.
    pub fn iter(&self) -> impl Iterator<Item = BoardKey> + 'a {
        let roster = self.roster;
        self.board
            .ranking
            .iter()
            .map(move |(k, _)| full_key(k, roster))
    }

    /// Live entries ranked strictly ahead of `key` (a key from any shard). Entries that
    /// tie on everything but the player are ordered by player id, as between shards.
    pub fn count_ahead(&self, key: &BoardKey) -> usize {
        let ranking = &self.board.ranking;
        let before_ties = ranking.count_less(&RankKey::first_tied_with(key));
        let tied_ahead = ranking
            .iter_from_rank(before_ties)
            .map(|(k, _)| k)
            .take_while(|k| k.ties(key))
            .filter(|k| **self.roster.id(k.player) < *key.player)
            .count();
        before_ties + tied_ahead
    }

    /// Up to `n` live entries just ahead of `key` and up to `n` just behind it (`key`
    /// itself excluded), best first.
    pub fn around(&self, key: &BoardKey, n: usize) -> Vec<BoardKey> {
        let ahead = self.count_ahead(key);
        let first = ahead.saturating_sub(n);
        let ranking = &self.board.ranking;
        let mut out: Vec<BoardKey> = ranking
            .iter_from_rank(first)
            .take(ahead - first)
            .map(|(k, _)| full_key(k, self.roster))
            .collect();
        let is_here = self.key_of(&key.player).as_ref() == Some(key);
        out.extend(
            ranking
                .iter_from_rank(ahead + usize::from(is_here))
                .take(n)
                .map(|(k, _)| full_key(k, self.roster)),
        );
        out
    }
}

impl RankedEntries for BoardView<'_> {
    fn entry_count(&self) -> usize {
        self.board.ranking.len()
    }

    fn count_ahead(&self, key: &BoardKey) -> usize {
        BoardView::count_ahead(self, key)
    }

    fn entry_at(&self, rank: usize) -> Option<BoardKey> {
        let (key, _) = self.board.ranking.get_by_rank(rank)?;
        Some(full_key(key, self.roster))
    }

    fn entries_from(&self, from: usize, n: usize) -> Vec<BoardKey> {
        self.board
            .ranking
            .iter_from_rank(from)
            .take(n)
            .map(|(k, _)| full_key(k, self.roster))
            .collect()
    }
}

/// The entries of one period of a board, live or closed: what a page reads.
pub enum PeriodEntries<'a> {
    Live(BoardView<'a>),
    Closed(&'a ClosedPeriod),
}

impl<'a> BoardView<'a> {
    /// The live period when `period` is `None` or names it, else the kept closed period
    /// of that name, if any.
    pub fn period_entries(self, period: Option<&str>) -> Option<PeriodEntries<'a>> {
        match period {
            Some(name) if name != self.board.period.name => {
                self.board.closed(name).map(PeriodEntries::Closed)
            }
            _ => Some(PeriodEntries::Live(self)),
        }
    }
}

impl PeriodEntries<'_> {
    pub fn ranked(&self) -> &dyn RankedEntries {
        match self {
            PeriodEntries::Live(view) => view,
            PeriodEntries::Closed(closed) => *closed,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            PeriodEntries::Live(view) => &view.board.period.name,
            PeriodEntries::Closed(closed) => &closed.name,
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(self, PeriodEntries::Closed(_))
    }

    /// When the period last changed (closed: when it closed), ms.
    pub fn updated_ms(&self) -> u64 {
        match self {
            PeriodEntries::Live(view) => view.board.updated_ms,
            PeriodEntries::Closed(closed) => closed.closed_ms,
        }
    }
}

impl Deref for BoardView<'_> {
    type Target = Board;

    fn deref(&self) -> &Board {
        self.board
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

    const HISTORY: HistoryLimits = HistoryLimits {
        entries_max: 3,
        periods_max: 2,
    };

    fn period(name: &str) -> Period {
        Period {
            name: name.into(),
            ends_ms: u64::MAX,
        }
    }

    /// A player table as small as a board needs.
    #[derive(Default)]
    struct Players {
        ids: Vec<CompactString>,
        standings: Vec<Standings>,
    }

    impl Players {
        fn position(&mut self, name: &str) -> u32 {
            if let Some(p) = self.ids.iter().position(|id| &**id == name) {
                return p as u32;
            }
            self.ids.push(name.into());
            self.standings.push(Standings::default());
            (self.ids.len() - 1) as u32
        }

        fn add(&mut self, boards: &mut [Board], name: &str, score: u64, ms: u64, seq: u64) {
            let p = self.position(name);
            let now = Reached { ms, seq };
            add_to_boards(boards, p, &mut self.standings[p as usize], score, now);
        }

        fn rank_all(&self, board: &mut Board) {
            board.rank_all((0u32..).zip(self.standings.iter()));
        }
    }

    impl Roster for Players {
        fn id(&self, position: u32) -> &CompactString {
            &self.ids[position as usize]
        }

        fn find(&self, id: &str) -> Option<(u32, &Standings)> {
            let p = self.ids.iter().position(|i| &**i == id)?;
            Some((p as u32, &self.standings[p]))
        }
    }

    fn names(keys: &[BoardKey]) -> Vec<(String, u64)> {
        keys.iter()
            .map(|k| (k.player.to_string(), k.score()))
            .collect()
    }

    #[test]
    fn ranks_by_score_then_who_reached_it_first() {
        let mut boards = [Board::new(WindowKind::Weekly, period("2026-W48"))];
        let mut players = Players::default();
        players.add(&mut boards, "aaa", 10, 1, 1);
        players.add(&mut boards, "bbb", 20, 2, 2);
        players.add(&mut boards, "ccc", 10, 3, 3);
        players.add(&mut boards, "aaa", 10, 4, 4); // aaa reaches 20 after bbb
        let view = BoardView::new(&boards[0], &players);
        assert_eq!(
            names(&view.top(10)),
            vec![("bbb".into(), 20), ("aaa".into(), 20), ("ccc".into(), 10)]
        );
        assert_eq!(view.len(), 3);
        let ccc = view.key_of("ccc").unwrap();
        assert_eq!(view.count_ahead(&ccc), 2);
        assert!(view.key_of("nobody").is_none());
    }

    #[test]
    fn around_excludes_the_player_and_clips_at_the_ends() {
        let mut boards = [Board::new(WindowKind::Daily, period("d"))];
        let mut players = Players::default();
        for (i, name) in ["p00", "p01", "p02", "p03", "p04", "p05"]
            .iter()
            .enumerate()
        {
            let i = i as u64;
            players.add(&mut boards, name, 100 - i, i + 1, i + 1);
        }
        let view = BoardView::new(&boards[0], &players);
        let key = view.key_of("p01").unwrap();
        let around: Vec<String> = view
            .around(&key, 2)
            .iter()
            .map(|k| k.player.to_string())
            .collect();
        assert_eq!(around, vec!["p00", "p02", "p03"]);
    }

    #[test]
    fn close_keeps_bounded_history_and_empties_standings() {
        let mut boards = [
            Board::new(WindowKind::Daily, period("d1")),
            Board::new(WindowKind::Seasonal, period("s")),
        ];
        let mut players = Players::default();
        for day in 1..=5u64 {
            for i in 0..10u64 {
                let name = format!("p{i:02}");
                players.add(&mut boards, &name, i + 1, day * 100 + i, day * 100 + i);
            }
            let next = period(&format!("d{}", day + 1));
            boards[0].close(next, day * 1000, HISTORY, &players);
        }
        let [daily, seasonal] = &boards;
        assert!(daily.is_empty());
        assert_eq!(daily.period.name, "d6");
        let kept: Vec<&str> = daily.history().map(|c| c.name.as_str()).collect();
        assert_eq!(kept, vec!["d5", "d4"]);
        let d5 = daily.closed("d5").unwrap();
        assert_eq!(
            names(&d5.entries),
            vec![("p09".into(), 10), ("p08".into(), 9), ("p07".into(), 8)]
        );
        assert!(daily.closed("d1").is_none());
        // The close emptied the daily standings but not the seasonal ones.
        let p09 = players.find("p09").unwrap().1;
        assert_eq!(daily.score_in(p09), None);
        assert_eq!(seasonal.score_in(p09), Some(50));
        // A new score starts from zero on the new period.
        players.add(&mut boards, "p09", 7, 9_000, 9_000);
        let view = BoardView::new(&boards[0], &players);
        assert_eq!(names(&view.top(5)), vec![("p09".into(), 7)]);
    }

    /// Replay's deferred ranking must rank exactly as live updates do.
    #[test]
    fn deferred_ranking_agrees_with_live_ranking() {
        let mut live = [
            Board::new(WindowKind::Daily, period("d")),
            Board::new(WindowKind::Weekly, period("w")),
        ];
        let mut deferred = [
            Board::new(WindowKind::Daily, period("d")),
            Board::new(WindowKind::Weekly, period("w")),
        ];
        for board in &mut deferred {
            board.defer_ranking();
        }
        let (mut a, mut b) = (Players::default(), Players::default());
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for seq in 1..=5_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let name = format!("p{:03}", x % 300);
            let score = 1 + (x >> 20) % 50;
            // Coarse milliseconds so that many entries tie on time and order by sequence.
            let ms = seq / 16;
            a.add(&mut live, &name, score, ms, seq);
            b.add(&mut deferred, &name, score, ms, seq);
            if seq == 2_500 {
                live[0].close(period("d2"), ms, HISTORY, &a);
                // Replay ranks a board before it closes it.
                b.rank_all(&mut deferred[0]);
                deferred[0].close(period("d2"), ms, HISTORY, &b);
                deferred[0].defer_ranking();
            }
        }
        for board in &mut deferred {
            b.rank_all(board);
        }
        for (l, d) in live.iter().zip(&deferred) {
            let (l, d) = (BoardView::new(l, &a), BoardView::new(d, &b));
            let (lk, dk) = (l.top(1_000), d.top(1_000));
            assert_eq!(names(&lk), names(&dk));
            assert!(lk.len() > 250, "most players are on the board");
            for (rank, key) in lk.iter().enumerate() {
                assert_eq!(d.count_ahead(key), rank);
            }
            assert_eq!(
                names(
                    &l.history()
                        .flat_map(|c| c.entries.clone())
                        .collect::<Vec<_>>()
                ),
                names(
                    &d.history()
                        .flat_map(|c| c.entries.clone())
                        .collect::<Vec<_>>()
                )
            );
        }
    }

    /// Entries that tie on score, time and sequence (possible only after shards merge)
    /// count by player id, as the merge across shards orders them.
    #[test]
    fn full_ties_count_by_player_id() {
        let mut board = Board::new(WindowKind::Daily, period("d"));
        let mut players = Players::default();
        board.defer_ranking();
        let reached = Reached { ms: 5, seq: 9 };
        for name in ["bbb", "ddd"] {
            let p = players.position(name) as usize;
            board.restore_entry(&mut players.standings[p], 40, reached);
        }
        players.rank_all(&mut board);
        let view = BoardView::new(&board, &players);
        let probe = |name: &str| BoardKey {
            score: Reverse(40),
            reached_ms: 5,
            seq: 9,
            player: name.into(),
        };
        assert_eq!(view.count_ahead(&probe("aaa")), 0);
        assert_eq!(view.count_ahead(&probe("ccc")), 1);
        assert_eq!(view.count_ahead(&probe("eee")), 2);
        assert_eq!(view.count_ahead(&view.key_of("ddd").unwrap()), 1);
    }

    #[test]
    fn merge_gives_the_global_order() {
        let k = |s: u64, at: u64, name: &str| BoardKey {
            score: Reverse(s),
            reached_ms: at,
            seq: 0,
            player: name.into(),
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
