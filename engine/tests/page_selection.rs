//! Model test of the distributed page selection (`liveops_engine::page`): random boards
//! split over several shards, random offsets and limits; the selection must give exactly
//! the page that sorting every shard's entries together gives, in few rounds, and closed
//! periods (each shard keeping only its best entries) must never show a wrong entry.

use std::collections::HashMap;

use compact_str::CompactString;
use liveops_engine::board::{
    add_to_boards, Board, BoardKey, BoardView, HistoryLimits, Reached, Roster, Standings,
};
use liveops_engine::page::{cut_at, select_in_process, Page, RankedEntries, ROUNDS_MAX};
use liveops_engine::window::{Period, WindowKind};
use proptest::prelude::*;

/// One shard's player table.
#[derive(Default)]
struct Players {
    ids: Vec<CompactString>,
    standings: Vec<Standings>,
}

impl Roster for Players {
    fn id(&self, position: u32) -> &CompactString {
        &self.ids[position as usize]
    }

    fn find(&self, id: &str) -> Option<(u32, &Standings)> {
        let p = self.ids.iter().position(|i| i == id)?;
        Some((p as u32, &self.standings[p]))
    }
}

struct TestShard {
    players: Players,
    boards: [Board; 1],
}

fn period(name: &str) -> Period {
    Period {
        name: name.into(),
        ends_ms: u64::MAX,
    }
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// `players` players spread over `shards` shards, scored by `events` random events with
/// few distinct scores and coarse clocks, so that entries tie on score and time within a
/// shard and on score, time and sequence across shards (then the player id decides;
/// within a shard the sequence is unique, as a shard's is).
fn boards(shards: usize, players: usize, events: usize, seed: u64) -> Vec<TestShard> {
    let mut out: Vec<TestShard> = (0..shards)
        .map(|_| TestShard {
            players: Players::default(),
            boards: [Board::new(WindowKind::Weekly, period("w1"))],
        })
        .collect();
    let mut state = seed | 1;
    let mut seqs = vec![0u64; shards];
    let mut positions: HashMap<usize, usize> = HashMap::new();
    for i in 0..events {
        let player = xorshift(&mut state) as usize % players.max(1);
        let shard = player % shards;
        let s = &mut out[shard];
        let position = *positions.entry(player).or_insert_with(|| {
            s.players.ids.push(format!("p{player:05}").into());
            s.players.standings.push(Standings::default());
            s.players.ids.len() - 1
        });
        seqs[shard] += 1;
        let now = Reached {
            ms: (i / 64) as u64,
            seq: seqs[shard],
        };
        let score = 1 + xorshift(&mut state) % 5;
        add_to_boards(
            &mut s.boards,
            position as u32,
            &mut s.players.standings[position],
            score,
            now,
        );
    }
    out
}

fn select(shards: &[&dyn RankedEntries], offset: usize, limit: usize) -> (Page, usize) {
    let (page, fan_outs) = select_in_process(shards, offset, limit);
    (page.expect("nothing moves between the fan-outs"), fan_outs)
}

fn all_sorted(shards: &[&dyn RankedEntries]) -> Vec<BoardKey> {
    let mut all: Vec<BoardKey> = shards
        .iter()
        .flat_map(|s| s.entries_from(0, usize::MAX))
        .collect();
    all.sort_unstable();
    all
}

fn expected_page(all: &[BoardKey], offset: usize, limit: usize) -> Vec<BoardKey> {
    all.iter().skip(offset).take(limit).cloned().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn selection_gives_the_page_that_sorting_everything_gives(
        shards in 1usize..6,
        players in 0usize..2500,
        seed in any::<u64>(),
        pages in proptest::collection::vec((0usize..3000, 1usize..300), 1..12),
    ) {
        let board = boards(shards, players, players * 2, seed);
        let views: Vec<BoardView> = board
            .iter()
            .map(|s| BoardView::new(&s.boards[0], &s.players))
            .collect();
        let ranked: Vec<&dyn RankedEntries> = views.iter().map(|v| v as &dyn RankedEntries).collect();
        let all = all_sorted(&ranked);
        // Offsets before, at and past the end of the board.
        for &(offset, limit) in &pages {
            let offset = offset % (all.len() + 50);
            let (page, fan_outs) = select(&ranked, offset, limit);
            prop_assert_eq!(page.first_rank, offset + 1);
            prop_assert_eq!(&page.entries, &expected_page(&all, offset, limit), "offset {} limit {}", offset, limit);
            prop_assert!(fan_outs <= 2 * ROUNDS_MAX + 1);
        }
    }
}

/// Deep offsets among many entries converge in a few rounds (each shard's interval shrinks
/// sixteenfold per round), not `ROUNDS_MAX`.
#[test]
fn deep_offsets_converge_in_few_rounds() {
    let board = boards(3, 40_000, 60_000, 7);
    let views: Vec<BoardView> = board
        .iter()
        .map(|s| BoardView::new(&s.boards[0], &s.players))
        .collect();
    let ranked: Vec<&dyn RankedEntries> = views.iter().map(|v| v as &dyn RankedEntries).collect();
    let all = all_sorted(&ranked);
    assert!(all.len() > 30_000);
    for offset in [257, 1_000, 10_000, 29_999, all.len() - 1, all.len()] {
        let (page, fan_outs) = select(&ranked, offset, 100);
        assert_eq!(page.entries, expected_page(&all, offset, 100), "{offset}");
        // Candidates: at most offset + 1 per shard, then / 16 per round.
        assert!(
            fan_outs <= 2 * 5 + 1,
            "offset {offset}: {fan_outs} fan-outs"
        );
    }
}

/// A closed period keeps each shard's best `entries_max`: a page shows only entries whose
/// rank is certain, so deeper than what is kept a page is short or empty, never wrong.
#[test]
fn closed_periods_never_show_an_entry_out_of_place() {
    const KEPT: usize = 40;
    let limits = HistoryLimits {
        entries_max: KEPT,
        periods_max: 2,
    };
    for seed in 1..=20u64 {
        let mut board = boards(3, 400, 600, seed);
        let mut all_live: Vec<BoardKey> = Vec::new();
        for s in &board {
            let view = BoardView::new(&s.boards[0], &s.players);
            all_live.extend(view.top(usize::MAX));
        }
        all_live.sort_unstable();
        for s in &mut board {
            let TestShard { players, boards } = s;
            boards[0].close(period("w2"), 1, limits, players);
        }
        let closed: Vec<_> = board
            .iter()
            .map(|s| s.boards[0].closed("w1").expect("kept"))
            .collect();
        let ranked: Vec<&dyn RankedEntries> =
            closed.iter().map(|c| *c as &dyn RankedEntries).collect();
        let cutoff = closed
            .iter()
            .filter(|c| c.entries.len() >= KEPT)
            .filter_map(|c| c.entries.last())
            .min()
            .cloned();
        for offset in (0..200).step_by(7) {
            let (mut page, _) = select(&ranked, offset, 13);
            cut_at(&mut page, cutoff.as_ref());
            let truth = expected_page(&all_live, offset, 13);
            assert_eq!(page.first_rank, offset + 1);
            assert!(
                truth.starts_with(&page.entries),
                "seed {seed} offset {offset}: a shown entry is out of place"
            );
            // Every position a shard's kept entries certainly cover is shown.
            let certain = KEPT.saturating_sub(offset).min(truth.len());
            assert!(page.entries.len() >= certain, "seed {seed} offset {offset}");
        }
    }
}
