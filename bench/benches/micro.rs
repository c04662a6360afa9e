//! Micro benches of the engine's hot paths (issue 4, item 3).
//!
//! ```text
//! CARGO_TARGET_DIR=/tmp/target-micro cargo bench -p liveops-bench --bench micro
//! CARGO_TARGET_DIR=/tmp/target-micro cargo bench -p liveops-bench --bench micro -- parse/
//! ```
//!
//! Bodies are the repository's real sample events (`sample_events/*.json`): `single` is
//! `progression.json` as sent; `batch1000` is a 1,000-event array cycling progression,
//! boss_kill and drop_claimed from the same files, each with its own player id.
//!
//! * `signature/{verify_single,verify_batch1000}`: `Signer::verify_header` of a correct
//!   `sha256=<hex>` header over the body. Throughput in bytes.
//! * `parse/{serde_json,simd_json,sonic_rs}/{single,batch1000}`: the body into each
//!   library's dynamic value (`serde_json::Value`, `simd_json::OwnedValue`,
//!   `sonic_rs::Value`). simd-json parses in place, and our body is immutable `Bytes`, so
//!   its figure includes copying the body into a fresh `Vec` first, as the server would
//!   have to. `parse/engine/*` is our whole `event::parse_body`: serde_json reading
//!   the body straight into each event's fields (no dynamic value), plus validation into
//!   typed events. Throughput in events.
//! * `skiplist/{insert,update,rank,top100}/{1M,10M}`: a `SkipList<RankKey, ()>` (a
//!   board's own 28 B key: score, when reached, sequence, player position) of N
//!   members with random scores, built once per size (in random order, as a live board
//!   grows) and reused by the four benches; a bench that is filtered out does not build it.
//!   - `insert`: one fresh key (new player, random score). Timed in chunks of 1,000
//!     inserts; each chunk is removed again untimed, so N stays within [N, N + 1,000).
//!   - `update`: what a score change does to one window's list: `replace` a random
//!     player's key by one with a higher score, a new `reached_ms` and sequence (one
//!     descent; before `replace` this was a remove and an insert). N is constant.
//!   - `rank`: `count_less` of a random existing key.
//!   - `top100`: `iter().take(100)` with the keys copied into a `Vec` (a board then
//!     names each by its player id).
//! * `page/{top_walk,selection}/...`: one page of a weekly board of 2,000,000 players
//!   split over two shards of 1,000,000 (random scores, ranked once), computed in one
//!   thread for both shards plus the merge; each shard's part is about half.
//!   - `top_walk`: what pages cost before the selection: each shard's best
//!     `offset + limit` entries (`BoardView::top`), merged, the page cut out.
//!   - `selection`: `page::select_in_process`, the route's fan-outs one after the other:
//!     rounds of 16 pivots per shard counted through the spans, then a walk of `limit`
//!     from the found boundary. `limit10` shows the selection's own cost; with
//!     `limit1000` most of the time is the walk and the merge of 1,000 entries per shard.
//! * `shard/submit_event/100k_players`: `Shard::submit_event(event, None, now)` for a
//!   random player among 100,000 already-ranked ones (80 % progression, 15 % boss kills,
//!   5 % drops; all three windows), `rate_limit_per_s: 1_000_000`. The journal is taken
//!   and dropped every 256 events, inside the timing. Building the `Event` (the HTTP
//!   layer's job) is not timed.
//! * `shard/apply_event_accepted/100k_players`: `Shard::apply` of a prepared
//!   `Record::EventAccepted` (same mix and players): what replay costs per event, without
//!   decoding. Building the record is not timed.
//! * `guard/judge_and_learn/100k_players`: the fairness guard alone, what it adds to
//!   each event: the replay check (`ReplaySet::replayed`, then `insert` and `expire` of
//!   a fresh identity, the shard's clock advancing 1 ms per event, so the default 60 s
//!   window holds 60,000 bodies), `fairness::judge` (every detector) and then
//!   `fairness::learn` (the population and the player's history), for a random player
//!   among 100,000 whose histories were warmed with 20 events each, the same event mix,
//!   each player's events 30-60 s apart (a human's pace: nothing is flagged for speed).
//!   Building the event and its identity is not timed.
//! * `idempotency/compact/{refused999,accepted1000}`: `StoredResponse::compact` of a
//!   batch's answer as the gateway writes it (1 accepted and 999 refused events, or
//!   1,000 accepted): what remembering a keyed batch's response costs. Throughput in
//!   bytes of JSON.

use std::cmp::Reverse;
use std::hint::black_box;
use std::time::{Duration, Instant};

use compact_str::CompactString;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use liveops_engine::board::{
    add_to_boards, merge_sorted, Board, BoardView, RankKey, Reached, Roster, Standings,
};
use liveops_engine::event::{self, Body, Event, EventKind, TsPolicy};
use liveops_engine::fairness::{self, History, Population, Seen, Thresholds};
use liveops_engine::idempotency::StoredResponse;
use liveops_engine::page::{select_in_process, RankedEntries};
use liveops_engine::policy::Policy;
use liveops_engine::replay::{ReplayId, ReplaySet};
use liveops_engine::shard::{EventOutcome, Record, Shard};
use liveops_engine::signing::{ReceiptSigner, Signer};
use liveops_engine::skiplist::SkipList;
use liveops_engine::window::{Period, WindowKind};

const PROGRESSION: &[u8] = include_bytes!("../../sample_events/progression.json");
const BOSS_KILL: &[u8] = include_bytes!("../../sample_events/boss_kill.json");
const DROP_CLAIMED: &[u8] = include_bytes!("../../sample_events/drop_claimed.json");

/// 2026-01-01T01:00:00Z: the engine clock. The shard benches advance it by 1 ms per
/// 1,000 events, so no window closes during a run (the daily one ends at midnight).
const BASE_MS: u64 = 1_767_229_200_000;
const NOW_S: u64 = BASE_MS / 1000;
const TS_POLICY: TsPolicy = TsPolicy {
    skew_s: 300,
    max_age_s: None,
};
const SECRET: &[u8] = b"bench-signing-secret-0123456789ab";
const SHARD_PLAYERS: u64 = 100_000;
/// Inserts timed between two untimed clean-ups in `skiplist/insert`.
const INSERT_CHUNK: u64 = 1_000;

fn mix(mut x: u64) -> u64 {
    // splitmix64
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A small deterministic generator, so every run measures the same operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A sample event body with its `playerId` replaced.
fn with_player(sample: &[u8], player: &str) -> Vec<u8> {
    let text = std::str::from_utf8(sample).expect("sample is UTF-8").trim();
    let replaced = text.replacen("player_123", player, 1);
    assert_ne!(replaced, text, "sample names player_123");
    replaced.into_bytes()
}

/// 1,000 real sample events in one array, cycling the three event types.
fn batch_body() -> Vec<u8> {
    let samples = [PROGRESSION, BOSS_KILL, DROP_CLAIMED];
    let mut body = b"[".to_vec();
    for i in 0..1000 {
        if i > 0 {
            body.push(b',');
        }
        body.extend(with_player(samples[i % 3], &format!("player_{i:07}")));
    }
    body.push(b']');
    body
}

struct Bodies {
    single: Vec<u8>,
    batch: Vec<u8>,
}

impl Bodies {
    fn new() -> Bodies {
        let bodies = Bodies {
            single: PROGRESSION.to_vec(),
            batch: batch_body(),
        };
        // Every body must be valid, or the benches would time error paths.
        match event::parse_body(&bodies.single, NOW_S, TS_POLICY).expect("single parses") {
            Body::Single(Ok(_)) => {}
            other => panic!("single body: {other:?}"),
        }
        match event::parse_body(&bodies.batch, NOW_S, TS_POLICY).expect("batch parses") {
            Body::Batch(events) => {
                assert_eq!(events.len(), 1000);
                assert!(events.iter().all(Result::is_ok), "every batch event valid");
            }
            other => panic!("batch body: {other:?}"),
        }
        bodies
    }

    fn each(&self) -> [(&'static str, &[u8], u64); 2] {
        [
            ("single", &self.single, 1),
            ("batch1000", &self.batch, 1000),
        ]
    }
}

fn signature(c: &mut Criterion, bodies: &Bodies) {
    let signer = Signer::new(SECRET);
    let mut group = c.benchmark_group("signature");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    for (name, body, _) in bodies.each() {
        let header = format!("sha256={}", signer.mac_hex(body));
        assert_eq!(signer.verify_header(Some(header.as_bytes()), body), Ok(()));
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("verify_{name}"), |b| {
            b.iter(|| signer.verify_header(black_box(Some(header.as_bytes())), black_box(body)))
        });
    }
    group.finish();
}

fn parse(c: &mut Criterion, bodies: &Bodies) {
    let mut group = c.benchmark_group("parse");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    for (name, body, events) in bodies.each() {
        // Each library must accept the body and read the same document, or it would be
        // timing an early error or a shortcut.
        let reference: serde_json::Value = serde_json::from_slice(body).expect("serde_json");
        let simd = simd_json::to_owned_value(&mut body.to_vec()).expect("simd-json parses");
        let sonic: sonic_rs::Value = sonic_rs::from_slice(body).expect("sonic-rs parses");
        for (library, text) in [
            (
                "simd-json",
                simd_json::to_string(&simd).expect("simd-json writes"),
            ),
            (
                "sonic-rs",
                sonic_rs::to_string(&sonic).expect("sonic-rs writes"),
            ),
        ] {
            let reread: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
            assert_eq!(reread, reference, "{library} read {name} differently");
        }

        group.throughput(Throughput::Elements(events));
        group.bench_function(BenchmarkId::new("serde_json", name), |b| {
            b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(body)).unwrap())
        });
        group.bench_function(BenchmarkId::new("simd_json", name), |b| {
            b.iter(|| {
                // The copy is part of the cost: simd-json needs a mutable buffer.
                let mut copy = black_box(body).to_vec();
                simd_json::to_owned_value(&mut copy).unwrap()
            })
        });
        group.bench_function(BenchmarkId::new("sonic_rs", name), |b| {
            b.iter(|| sonic_rs::from_slice::<sonic_rs::Value>(black_box(body)).unwrap())
        });
        group.bench_function(BenchmarkId::new("engine", name), |b| {
            b.iter(|| event::parse_body(black_box(body), NOW_S, TS_POLICY).unwrap())
        });
    }
    group.finish();
}

/// A skip list of N board keys plus each member's current key (what a board rebuilds
/// from the player's standings), for picking random members.
struct Ranking {
    list: SkipList<RankKey, ()>,
    keys: Vec<RankKey>,
    rng: Rng,
    next_seq: u64,
    fresh: u64,
}

impl Ranking {
    fn build(n: u64) -> Ranking {
        let started = Instant::now();
        let mut rng = Rng(n);
        let mut list = SkipList::new();
        let mut keys = Vec::with_capacity(n as usize);
        for i in 0..n {
            let key = RankKey {
                score: Reverse(1 + rng.below(1_000_000)),
                reached: Reached {
                    ms: BASE_MS + rng.below(3_600_000),
                    seq: i + 1,
                },
                player: i as u32,
            };
            list.insert(key, ());
            keys.push(key);
        }
        assert_eq!(list.len() as u64, n);
        eprintln!(
            "skiplist: built {n} members in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ranking {
            list,
            keys,
            rng,
            next_seq: n + 1,
            fresh: 0,
        }
    }

    fn random_index(&mut self) -> usize {
        self.rng.below(self.keys.len() as u64) as usize
    }

    fn fresh_key(&mut self) -> RankKey {
        self.fresh += 1;
        self.next_seq += 1;
        RankKey {
            score: Reverse(1 + self.rng.below(1_000_000)),
            reached: Reached {
                ms: BASE_MS + 3_600_000 + self.fresh,
                seq: self.next_seq,
            },
            player: (self.keys.len() as u64 + self.fresh) as u32,
        }
    }
}

fn skiplist(c: &mut Criterion) {
    let mut group = c.benchmark_group("skiplist");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    group.sample_size(20);
    for (label, n) in [("1M", 1_000_000u64), ("10M", 10_000_000)] {
        // Built by the first bench of this size that runs, shared by the others.
        let mut ranking: Option<Ranking> = None;
        group.bench_function(BenchmarkId::new("insert", label), |b| {
            let r = ranking.get_or_insert_with(|| Ranking::build(n));
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let chunk = INSERT_CHUNK.min(iters - done);
                    let keys: Vec<RankKey> = (0..chunk).map(|_| r.fresh_key()).collect();
                    let to_remove = keys.clone();
                    let started = Instant::now();
                    for key in keys {
                        black_box(r.list.insert(key, ()));
                    }
                    timed += started.elapsed();
                    for key in &to_remove {
                        r.list.remove(key).expect("inserted above");
                    }
                    done += chunk;
                }
                timed
            });
            assert_eq!(r.list.len() as u64, n);
        });
        group.bench_function(BenchmarkId::new("update", label), |b| {
            let r = ranking.get_or_insert_with(|| Ranking::build(n));
            b.iter(|| {
                let i = r.random_index();
                let old = r.keys[i];
                r.next_seq += 1;
                let new = RankKey {
                    score: Reverse(old.score.0 + 1 + r.rng.below(100)),
                    reached: Reached {
                        ms: old.reached.ms + 1,
                        seq: r.next_seq,
                    },
                    player: old.player,
                };
                r.list.replace(&old, new, ()).expect("member");
                r.keys[i] = new;
            });
            assert_eq!(r.list.len() as u64, n);
        });
        group.bench_function(BenchmarkId::new("rank", label), |b| {
            let r = ranking.get_or_insert_with(|| Ranking::build(n));
            b.iter(|| {
                let i = r.random_index();
                r.list.count_less(black_box(&r.keys[i]))
            });
        });
        group.bench_function(BenchmarkId::new("top100", label), |b| {
            let r = ranking.get_or_insert_with(|| Ranking::build(n));
            b.iter(|| {
                r.list
                    .iter()
                    .take(100)
                    .map(|(k, _)| *k)
                    .collect::<Vec<RankKey>>()
            });
        });
        // Frees the 1M list before the 10M one is built.
        drop(ranking);
    }
    group.finish();
}

/// One shard's players and its weekly board, as much of a shard as a page reads.
struct PageShard {
    ids: Vec<CompactString>,
    standings: Vec<Standings>,
    boards: [Board; 1],
}

impl Roster for PageShard {
    fn id(&self, position: u32) -> &CompactString {
        &self.ids[position as usize]
    }

    fn find(&self, _: &str) -> Option<(u32, &Standings)> {
        unreachable!("pages never look players up by id")
    }
}

impl PageShard {
    /// `players` players with random scores, ranked once (as recovery ranks a board).
    fn build(shard: u64, players: u64) -> PageShard {
        let period = Period {
            name: "2026-W01".into(),
            ends_ms: u64::MAX,
        };
        let mut s = PageShard {
            ids: Vec::with_capacity(players as usize),
            standings: vec![Standings::default(); players as usize],
            boards: [Board::new(WindowKind::Weekly, period)],
        };
        s.boards[0].defer_ranking();
        let mut rng = Rng(shard + 1);
        for i in 0..players {
            s.ids.push(player_id(shard * players + i).into());
            let now = Reached {
                ms: BASE_MS + rng.below(3_600_000),
                seq: i + 1,
            };
            let score = 1 + rng.below(1_000_000);
            add_to_boards(
                &mut s.boards,
                i as u32,
                &mut s.standings[i as usize],
                score,
                now,
            );
        }
        let board = &mut s.boards[0];
        board.rank_all((0u32..).zip(s.standings.iter()));
        s
    }
}

fn page(c: &mut Criterion) {
    const SHARD_PLAYERS: u64 = 1_000_000;
    let mut group = c.benchmark_group("page");
    group.measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_millis(500));
    group.sample_size(10);
    // Built by the first bench that runs; a filtered-out group builds nothing.
    let mut shards: Option<Vec<PageShard>> = None;
    // Pages whose fan-out count was printed (criterion calls a bench more than once).
    let mut reported: Vec<(usize, usize)> = Vec::new();
    let build = || {
        let started = Instant::now();
        let shards: Vec<PageShard> = (0..2).map(|i| PageShard::build(i, SHARD_PLAYERS)).collect();
        eprintln!(
            "page: built 2 shards of {SHARD_PLAYERS} players in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        shards
    };
    for (offset, limit) in [(10_000usize, 1_000usize), (999_000, 1_000), (999_000, 10)] {
        let label = format!("offset{offset}_limit{limit}");
        // The old way walks a million entries per shard at the deepest offset: too slow
        // to be worth a bench run, so it is measured at 10,000 only.
        if offset <= 10_000 {
            group.bench_function(BenchmarkId::new("top_walk", &label), |b| {
                let shards = shards.get_or_insert_with(build);
                b.iter(|| {
                    let wanted = offset + limit;
                    let lists = shards
                        .iter()
                        .map(|s| BoardView::new(&s.boards[0], s).top(wanted))
                        .collect();
                    let merged = merge_sorted(lists, wanted);
                    merged.into_iter().skip(offset).collect::<Vec<_>>()
                });
            });
        }
        group.bench_function(BenchmarkId::new("selection", &label), |b| {
            let shards = shards.get_or_insert_with(build);
            let views: Vec<BoardView> = shards
                .iter()
                .map(|s| BoardView::new(&s.boards[0], s))
                .collect();
            let ranked: Vec<&dyn RankedEntries> =
                views.iter().map(|v| v as &dyn RankedEntries).collect();
            let (page, fan_outs) = select_in_process(&ranked, offset, limit);
            let page = page.expect("nothing moves");
            assert_eq!(page.entries.len(), limit);
            if !reported.contains(&(offset, limit)) {
                reported.push((offset, limit));
                eprintln!("page: offset {offset} limit {limit}: {fan_outs} fan-outs");
            }
            b.iter(|| select_in_process(black_box(&ranked), offset, limit));
        });
    }
    group.finish();
}

/// The `i`th event kind: 80 % progression, 15 % boss kills, 5 % drops (as the
/// durability bench), scores small enough that the guard never flags them.
fn event_kind(h: u64) -> EventKind {
    match h % 20 {
        0..=15 => EventKind::Progression {
            delta_xp: 10 + (h >> 8) % 90,
            activity: Some("quest".to_owned()),
        },
        16..=18 => EventKind::BossKill {
            boss_id: format!("boss_{}", (h >> 16) % 8),
            tier: 1 + (h >> 24) % 3,
            points: 50 + (h >> 32) % 100,
        },
        _ => EventKind::DropClaimed {
            drop_id: format!("drop_{}", (h >> 16) % 16),
            weight: Some(0.05),
            source: Some("chest".to_owned()),
        },
    }
}

fn player_id(i: u64) -> String {
    format!("player_{i:07}")
}

fn now_ms(i: u64) -> u64 {
    BASE_MS + i / 1000
}

/// A shard whose 100,000 players have each had one progression event, so every one is
/// ranked in all three windows.
fn populated_shard() -> Shard {
    let mut shard = Shard::new(
        Policy {
            rate_limit_per_s: 1_000_000,
            ..Policy::default()
        },
        ReceiptSigner::new(b"bench-receipt-secret"),
        BASE_MS,
    );
    for i in 0..SHARD_PLAYERS {
        let event = Event {
            player_id: player_id(i),
            ts: NOW_S,
            kind: EventKind::Progression {
                delta_xp: 10 + mix(i) % 90,
                activity: Some("quest".to_owned()),
            },
            replay_id: None,
        };
        let outcome = shard.submit_event(event, None, now_ms(i));
        assert!(matches!(outcome, EventOutcome::Accepted { flag: None, .. }));
        if i % 256 == 255 {
            shard.take_journal();
        }
    }
    shard.take_journal();
    shard
}

fn shard(c: &mut Criterion) {
    let mut group = c.benchmark_group("shard");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(1));

    let mut shard = populated_shard();
    let mut rng = Rng(7);
    // Continues the clock where population stopped.
    let mut i = SHARD_PLAYERS;
    let mut submitted = 0u64;
    let mut not_accepted = 0u64;
    group.bench_function(BenchmarkId::new("submit_event", "100k_players"), |b| {
        b.iter_batched(
            || {
                i += 1;
                let event = Event {
                    player_id: player_id(rng.below(SHARD_PLAYERS)),
                    ts: NOW_S,
                    kind: event_kind(rng.next()),
                    replay_id: None,
                };
                (event, now_ms(i))
            },
            |(event, now)| {
                let outcome = shard.submit_event(event, None, now);
                if !matches!(outcome, EventOutcome::Accepted { flag: None, .. }) {
                    not_accepted += 1;
                }
                submitted += 1;
                if submitted.is_multiple_of(256) {
                    drop(shard.take_journal());
                }
                outcome
            },
            BatchSize::SmallInput,
        )
    });
    assert_eq!(
        not_accepted, 0,
        "every submitted event is accepted unflagged"
    );

    let mut shard = populated_shard();
    let mut seq = SHARD_PLAYERS + 1;
    group.bench_function(
        BenchmarkId::new("apply_event_accepted", "100k_players"),
        |b| {
            b.iter_batched(
                || {
                    i += 1;
                    seq += 1;
                    Record::EventAccepted {
                        player: player_id(rng.below(SHARD_PLAYERS)),
                        event: event_kind(rng.next()),
                        ts: NOW_S,
                        at_ms: now_ms(i),
                        seq,
                        flag: None,
                        evidence: None,
                        key: None,
                        totals: None,
                        replay_id: None,
                    }
                },
                |record| shard.apply(record),
                BatchSize::SmallInput,
            )
        },
    );
    assert_eq!(shard.players_len() as u64, SHARD_PLAYERS);
    group.finish();
}

/// The replay window of the bench's shard: the default `REPLAY_WINDOW_SEC`.
const REPLAY_WINDOW_MS: u64 = 60_000;

/// The guard's players: each one's history and the time of its last event.
struct GuardPlayers {
    population: Population,
    histories: Vec<History>,
    last_ms: Vec<u64>,
    thresholds: Thresholds,
    /// The shard's remembered bodies.
    replays: ReplaySet,
    /// The shard's clock for the replay window: 1 ms per event.
    replay_now_ms: u64,
}

/// A fresh event identity (a body's SHA-256 stand-in).
fn fresh_identity(rng: &mut Rng) -> ReplayId {
    let mut fingerprint = [0u8; 32];
    for chunk in fingerprint.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next().to_le_bytes());
    }
    ReplayId::new(&fingerprint, None)
}

impl GuardPlayers {
    /// Checks and remembers `identity`, judges and learns one event of `player`,
    /// `gap_ms` after its previous one; returns whether the guard refused, flagged or
    /// blocked it.
    fn play(&mut self, player: usize, kind: &EventKind, gap_ms: u64, identity: ReplayId) -> bool {
        self.replay_now_ms += 1;
        let now_ms = self.replay_now_ms;
        if self
            .replays
            .replayed(identity, now_ms, REPLAY_WINDOW_MS)
            .is_some()
        {
            return true;
        }
        self.replays.insert(identity, now_ms, REPLAY_WINDOW_MS);
        self.replays.expire(now_ms, REPLAY_WINDOW_MS);
        let at_ms = self.last_ms[player] + gap_ms;
        let seen = Seen {
            event: kind,
            at_ms,
            last_ms: self.last_ms[player],
        };
        let history = &mut self.histories[player];
        let decision = fairness::judge(&self.population, history, &seen, &self.thresholds);
        fairness::learn(
            &mut self.population,
            history,
            &seen,
            decision.is_some(),
            &self.thresholds,
        );
        self.last_ms[player] = at_ms;
        decision.is_some()
    }
}

fn guard(c: &mut Criterion) {
    const WARM_EVENTS: u64 = 20;
    let mut group = c.benchmark_group("guard");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(1));
    let thresholds = Thresholds::default();
    let mut players = GuardPlayers {
        population: Population::new(&thresholds),
        histories: vec![History::default(); SHARD_PLAYERS as usize],
        last_ms: vec![BASE_MS; SHARD_PLAYERS as usize],
        thresholds,
        replays: ReplaySet::default(),
        replay_now_ms: BASE_MS,
    };
    let mut rng = Rng(11);
    let gap_ms = |rng: &mut Rng| 30_000 + rng.below(30_000);
    for _ in 0..WARM_EVENTS {
        for player in 0..SHARD_PLAYERS as usize {
            let kind = event_kind(rng.next());
            let gap = gap_ms(&mut rng);
            let identity = fresh_identity(&mut rng);
            players.play(player, &kind, gap, identity);
        }
    }
    let mut judged = 0u64;
    let mut decided = 0u64;
    group.bench_function(BenchmarkId::new("judge_and_learn", "100k_players"), |b| {
        b.iter_batched(
            || {
                let player = rng.below(SHARD_PLAYERS) as usize;
                let identity = fresh_identity(&mut rng);
                (player, event_kind(rng.next()), gap_ms(&mut rng), identity)
            },
            |(player, kind, gap, identity)| {
                judged += 1;
                decided += u64::from(players.play(player, &kind, gap, identity));
                kind
            },
            BatchSize::SmallInput,
        )
    });
    // Honest-looking events: the guard's cost is measured on its common path.
    assert!(
        decided * 1000 <= judged,
        "{decided} of {judged} bench events were flagged"
    );
    group.finish();
}

/// A batch's answer as the gateway writes it: `valid` accepted events, then `invalid`
/// refused ones, as JSON.
fn batch_answer_json(valid: usize, invalid: usize) -> Vec<u8> {
    let accepted = (0..valid).map(|index| {
        format!(
            r#"{{"flagged":false,"index":{index},"level":3,"playerId":"p_{index}","status":202,"type":"progression","xp":{}}}"#,
            1000 + index * 7
        )
    });
    let refused = (valid..valid + invalid).map(|index| {
        format!(
            r#"{{"error":{{"code":"invalid_delta_xp","field":"deltaXp","message":"deltaXp must be a whole number 0..=1000000"}},"index":{index},"status":400}}"#
        )
    });
    let results: Vec<String> = accepted.chain(refused).collect();
    format!(
        r#"{{"accepted":{valid},"rejected":{invalid},"results":[{}]}}"#,
        results.join(",")
    )
    .into_bytes()
}

fn idempotency(c: &mut Criterion) {
    let mut group = c.benchmark_group("idempotency");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    for (name, json) in [
        ("refused999", batch_answer_json(1, 999)),
        ("accepted1000", batch_answer_json(1000, 0)),
    ] {
        let stored = StoredResponse::compact(202, &json);
        assert_eq!(stored.json().unwrap().as_ref(), json.as_slice());
        group.throughput(Throughput::Bytes(json.len() as u64));
        group.bench_function(BenchmarkId::new("compact", name), |b| {
            b.iter(|| StoredResponse::compact(202, black_box(&json)))
        });
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let bodies = Bodies::new();
    signature(&mut c, &bodies);
    parse(&mut c, &bodies);
    skiplist(&mut c);
    page(&mut c);
    shard(&mut c);
    guard(&mut c);
    idempotency(&mut c);
    c.final_summary();
}
