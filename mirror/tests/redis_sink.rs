//! The Redis sink against a real `redis-server` (started by each test on a free port) and
//! a real engine: shards deciding events, their records written to real WALs that the
//! feed follows. Without `redis-server` the tests skip loudly, and fail with `CI=true`.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TempDir;
use liveops_engine::board::BoardKey;
use liveops_engine::codec;
use liveops_engine::event::{Event, EventKind};
use liveops_engine::policy::Policy;
use liveops_engine::shard::{level_of, PlayerTotals, Record, Shard};
use liveops_engine::signing::ReceiptSigner;
use liveops_engine::window::WindowKind;
use liveops_mirror::{
    BoardChunk, Cursor, DriverConfig, DurableCursor, EngineState, RedisConfig, RedisSink, ShardLog,
    SinkDriver, SinkRunner, SinkStats, Standings, StateError,
};
use liveops_storage::{Durability, LogWatch, StdFs, Wal, WalOptions};
use liveops_testkit::redis::{RedisOptions, RedisServer};
use liveops_testkit::tls::write_ca_and_server_cert;
use liveops_testkit::{free_port, require_tool};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// 2026-11-24T12:00:00Z, a Tuesday.
const T0_MS: u64 = 1_795_521_600_000;
const SEASON: &str = "1";
const CLOSED_TTL_S: u64 = 3_600;

// --- a real engine ---

/// The shards, as the sink's [`EngineState`] sees them.
struct TestState {
    shards: Mutex<Vec<Shard>>,
}

impl EngineState for TestState {
    fn shards(&self) -> u32 {
        self.shards.lock().unwrap().len() as u32
    }

    fn board_chunk(
        &self,
        shard: u32,
        window: WindowKind,
        after: Option<BoardKey>,
        limit: usize,
    ) -> Result<Option<BoardChunk>, StateError> {
        let shards = self.shards.lock().unwrap();
        let shard = shards.get(shard as usize).ok_or(StateError::Stopped)?;
        Ok(shard
            .board_chunk(window, after.as_ref(), limit)
            .map(|(period, entries)| BoardChunk { period, entries }))
    }

    fn players_chunk(
        &self,
        shard: u32,
        from: usize,
        limit: usize,
    ) -> Result<Vec<PlayerTotals>, StateError> {
        let shards = self.shards.lock().unwrap();
        let shard = shards.get(shard as usize).ok_or(StateError::Stopped)?;
        Ok(shard.players_chunk(from, limit))
    }

    fn standings(
        &self,
        window: WindowKind,
        period: Option<&str>,
        limit: usize,
    ) -> Result<Option<Standings>, StateError> {
        let shards = self.shards.lock().unwrap();
        let mut entries = Vec::new();
        let mut name = None;
        let mut closed = false;
        for shard in shards.iter() {
            let Some(view) = shard.board(window) else {
                return Ok(None);
            };
            let Some(period_entries) = view.period_entries(period) else {
                return Ok(None);
            };
            name = Some(period_entries.name().to_string());
            closed = period_entries.is_closed();
            entries.extend(period_entries.ranked().entries_from(0, limit));
        }
        entries.sort();
        entries.truncate(limit);
        Ok(name.map(|period| Standings {
            period,
            closed,
            entries,
        }))
    }
}

/// Shards whose journals go to real WALs the feed follows.
struct TestEngine {
    state: Arc<TestState>,
    wals: Mutex<Vec<Wal>>,
    logs: Vec<ShardLog>,
    /// Every record written, per shard: the model the property test checks against.
    records: Mutex<Vec<Record>>,
    _dir: TempDir,
}

impl TestEngine {
    fn new(shards: u32) -> TestEngine {
        let dir = TempDir::new("redis-sink");
        let policy = Policy {
            season: SEASON.to_string(),
            ..Policy::default()
        };
        let mut wals = Vec::new();
        let mut logs = Vec::new();
        let mut engine_shards = Vec::new();
        for shard in 0..shards {
            let shard_dir = dir.path().join(format!("shard-{shard}"));
            std::fs::create_dir_all(&shard_dir).unwrap();
            let options = WalOptions {
                durability: Durability::Fsync,
                ..WalOptions::default()
            };
            let (mut wal, _, _) = Wal::open(Arc::new(StdFs), &shard_dir, options, 0).unwrap();
            let watch = LogWatch::new(u64::MAX);
            wal.set_watch(Arc::clone(&watch));
            wals.push(wal);
            logs.push(ShardLog {
                generation: 1,
                shard,
                dir: shard_dir,
                watch,
            });
            engine_shards.push(Shard::new(
                policy.clone(),
                ReceiptSigner::new(&[7; 32]),
                T0_MS,
            ));
        }
        TestEngine {
            state: Arc::new(TestState {
                shards: Mutex::new(engine_shards),
            }),
            wals: Mutex::new(wals),
            logs,
            records: Mutex::new(Vec::new()),
            _dir: dir,
        }
    }

    fn shard_of(&self, player: &str) -> usize {
        let hash = player
            .bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        (hash % self.logs.len() as u64) as usize
    }

    /// One event decided by the player's shard, its records made durable (state first,
    /// then the log, as the engine does).
    fn submit(&self, player: &str, delta_xp: u64, now_ms: u64) {
        let shard = self.shard_of(player);
        self.on_shard(shard, |s| {
            let event = Event {
                player_id: player.to_string(),
                ts: now_ms / 1000,
                kind: EventKind::Progression {
                    delta_xp,
                    activity: None,
                },
                replay_id: None,
            };
            s.submit_event(event, None, now_ms);
        });
    }

    /// Housekeeping on one shard at `now_ms` (rolls its windows).
    fn tick(&self, shard: usize, now_ms: u64) {
        self.on_shard(shard, |s| s.tick(now_ms));
    }

    fn on_shard(&self, shard: usize, decide: impl FnOnce(&mut Shard)) {
        let mut shards = self.state.shards.lock().unwrap();
        decide(&mut shards[shard]);
        let journal = shards[shard].take_journal();
        let mut wals = self.wals.lock().unwrap();
        let mut buf = Vec::new();
        for record in &journal {
            buf.clear();
            let kind = codec::encode(record, &mut buf);
            wals[shard].append(kind, &buf).unwrap();
        }
        wals[shard].commit().unwrap();
        self.records.lock().unwrap().extend(journal);
    }

    fn durable(&self) -> DurableCursor {
        let watches: Vec<_> = self.logs.iter().map(|l| Arc::clone(&l.watch)).collect();
        Arc::new(move |shard| Cursor {
            generation: 1,
            lsn: watches[shard as usize].durable_lsn(),
        })
    }

    fn sink(&self, url: &str, tls_ca_file: Option<PathBuf>, stats: &Arc<SinkStats>) -> RedisSink {
        // Small chunks: walks take many of them.
        self.sink_chunked(url, tls_ca_file, stats, 7)
    }

    fn sink_chunked(
        &self,
        url: &str,
        tls_ca_file: Option<PathBuf>,
        stats: &Arc<SinkStats>,
        rebuild_chunk_entries: usize,
    ) -> RedisSink {
        let config = RedisConfig {
            url: url.to_string(),
            tls_ca_file,
            season: SEASON.to_string(),
            windows: WindowKind::ALL.to_vec(),
            closed_ttl_s: CLOSED_TTL_S,
            command_timeout_ms: 2_000,
            connect_timeout_ms: 1_000,
            rebuild_chunk_entries,
            health_check_interval_ms: 0,
        };
        let state: Arc<dyn EngineState> = self.state.clone();
        RedisSink::new(config, state, self.durable(), Arc::clone(stats)).unwrap()
    }

    /// `window`'s live board merged across shards: player -> score.
    fn board(&self, window: WindowKind) -> BTreeMap<String, u64> {
        let shards = self.state.shards.lock().unwrap();
        shards
            .iter()
            .flat_map(|s| s.board(window).unwrap().iter().collect::<Vec<_>>())
            .map(|k| (k.player.to_string(), k.score()))
            .collect()
    }

    /// A closed period's standings merged across shards.
    fn closed_board(&self, window: WindowKind, period: &str) -> BTreeMap<String, u64> {
        let standings = self
            .state
            .standings(window, Some(period), 10_000)
            .unwrap()
            .unwrap();
        assert!(standings.closed);
        standings
            .entries
            .iter()
            .map(|k| (k.player.to_string(), k.score()))
            .collect()
    }

    /// player -> (xp, updated_ms).
    fn progress(&self) -> BTreeMap<String, (u64, u64)> {
        let shards = self.state.shards.lock().unwrap();
        shards
            .iter()
            .flat_map(|s| s.players_chunk(0, usize::MAX))
            .map(|p| (p.player.to_string(), (p.xp, p.updated_ms)))
            .collect()
    }
}

// --- reading Redis ---

fn zset(conn: &mut redis::Connection, key: &str) -> BTreeMap<String, u64> {
    let entries: Vec<(String, u64)> = redis::cmd("ZREVRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(conn)
        .unwrap();
    assert!(
        entries.windows(2).all(|w| w[0].1 >= w[1].1),
        "best first: {entries:?}"
    );
    entries.into_iter().collect()
}

fn progress_in_redis(
    conn: &mut redis::Connection,
    players: impl Iterator<Item = String>,
) -> BTreeMap<String, (u64, u64)> {
    players
        .filter_map(|p| {
            let hash: BTreeMap<String, u64> = redis::cmd("HGETALL")
                .arg(format!("progress:{SEASON}:{p}"))
                .query(conn)
                .unwrap();
            if hash.is_empty() {
                return None;
            }
            assert_eq!(hash["level"], level_of(hash["xp"]), "{p}: {hash:?}");
            Some((p, (hash["xp"], hash["updatedAt"])))
        })
        .collect()
}

/// Whether Redis mirrors every live board and every player's progress exactly.
fn mirrored(engine: &TestEngine, client: &redis::Client) -> Result<(), String> {
    let mut conn = client.get_connection().map_err(|e| e.to_string())?;
    for window in WindowKind::ALL {
        let want = engine.board(window);
        let got = zset(&mut conn, &format!("lb:{SEASON}:{window}"));
        if got != want {
            return Err(format!("{window}: redis {got:?} engine {want:?}"));
        }
    }
    let want = engine.progress();
    let got = progress_in_redis(&mut conn, want.keys().cloned());
    if got != want {
        return Err(format!("progress: redis {got:?} engine {want:?}"));
    }
    Ok(())
}

fn wait_mirrored(engine: &TestEngine, client: &redis::Client) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match mirrored(engine, client) {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("Redis never matched: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Steps `runner` until a pass applies nothing and fails nothing.
fn drain(runner: &mut SinkRunner<RedisSink>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match runner.step().and_then(|n| runner.idle().map(|()| n)) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                assert!(Instant::now() < deadline, "the sink kept failing: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn players(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("player-{i}")).collect()
}

/// Every player scores on day one, then a runner for `url` has mirrored it.
fn day_one(engine: &TestEngine, players: &[String], url: &str) -> SinkRunner<RedisSink> {
    for (i, p) in players.iter().enumerate() {
        engine.submit(p, 100 + i as u64, T0_MS + i as u64);
    }
    let stats = Arc::new(SinkStats::default());
    let mut runner = SinkRunner::with_stats(
        engine.sink(url, None, &stats),
        engine.logs.clone(),
        8,
        stats,
    );
    drain(&mut runner);
    runner
}

// --- tests ---

/// A `redis-server` of the test's own on a free port, and its URL; `None` (after a loud
/// skip, or a failure under `CI=true`) when `redis-server` is not installed.
fn own_redis(test: &str) -> Option<(RedisServer, String)> {
    if !require_tool(test, &["redis-server"]) {
        return None;
    }
    let port = free_port();
    Some((
        RedisServer::start(port),
        format!("redis://127.0.0.1:{port}"),
    ))
}

#[test]
fn mirrors_boards_and_progress_and_rebuilds_after_redis_restarts_empty() {
    let Some((mut server, url)) =
        own_redis("mirrors_boards_and_progress_and_rebuilds_after_redis_restarts_empty")
    else {
        return;
    };
    let url = format!("{url}/0");
    let client = redis::Client::open(url.as_str()).unwrap();
    let engine = TestEngine::new(3);
    // Some state before the sink starts: its first rebuild walks it.
    let players = players(25);
    for (i, p) in players.iter().enumerate() {
        engine.submit(p, 10 + i as u64, T0_MS + i as u64);
    }
    let stats = Arc::new(SinkStats::default());
    let sink = engine.sink(&url, None, &stats);
    let config = DriverConfig {
        batch_items_max: 16,
        idle_poll: Duration::from_millis(1),
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
    };
    let driver =
        SinkDriver::spawn_with_stats(sink, engine.logs.clone(), config, Arc::clone(&stats))
            .unwrap();
    let mut now_ms = T0_MS + 1_000;
    let mut step = |engine: &TestEngine, rounds: u64| {
        for round in 0..rounds {
            for (i, p) in players.iter().enumerate() {
                now_ms += 7;
                engine.submit(p, 1 + (round * 13 + i as u64) % 40, now_ms);
            }
        }
    };
    step(&engine, 4);
    wait_mirrored(&engine, &client);
    let resyncs_before = stats.resyncs.load(Ordering::Relaxed);
    assert!(resyncs_before >= 1, "the first cursor call rebuilt");
    assert!(stats.writes.load(Ordering::Relaxed) > 0);

    // Redis dies mid-stream and comes back empty on the same port.
    step(&engine, 2);
    server.kill();
    step(&engine, 2);
    std::thread::sleep(Duration::from_millis(50));
    server.restart();
    step(&engine, 2);
    wait_mirrored(&engine, &client);
    assert!(stats.reconnects.load(Ordering::Relaxed) >= 1);
    assert!(stats.resyncs.load(Ordering::Relaxed) > resyncs_before);
    assert!(stats.errors.load(Ordering::Relaxed) >= 1);
    assert_eq!(stats.resyncing.load(Ordering::Relaxed), 0);
    // The marker says our hashes are whole.
    let mut conn = client.get_connection().unwrap();
    let marker: Option<String> = redis::cmd("GET")
        .arg(format!("liveops:{SEASON}:mirror"))
        .query(&mut conn)
        .unwrap();
    assert!(marker.is_some());
    driver.stop().expect("the sink thread did not panic");
}

#[test]
fn rollover_moves_the_live_set_to_an_expiring_closed_period_set() {
    let Some((_server, url)) =
        own_redis("rollover_moves_the_live_set_to_an_expiring_closed_period_set")
    else {
        return;
    };
    let client = redis::Client::open(url.as_str()).unwrap();
    let engine = TestEngine::new(2);
    let players = players(12);
    let (early, late): (Vec<_>, Vec<_>) = players.iter().partition(|p| engine.shard_of(p) == 0);
    assert!(
        !early.is_empty() && !late.is_empty(),
        "players on both shards"
    );
    let mut runner = day_one(&engine, &players, &url);
    let day1 = WindowKind::Daily.period_at(T0_MS, SEASON).name;
    let next_day_ms = T0_MS + 12 * 3_600_000 + 5;
    // Shard 0 rolls first; shard 1 still accepts events in the old day, then rolls.
    engine.submit(early[0], 5, next_day_ms);
    drain(&mut runner);
    engine.submit(late[0], 1_000, T0_MS + 60_000);
    drain(&mut runner);
    engine.tick(1, next_day_ms + 1);
    engine.tick(0, next_day_ms + 2);
    engine.submit(late[1], 3, next_day_ms + 10);
    drain(&mut runner);

    let mut conn = client.get_connection().unwrap();
    let closed_key = format!("lb:{SEASON}:daily:{day1}");
    let closed = zset(&mut conn, &closed_key);
    assert_eq!(closed, engine.closed_board(WindowKind::Daily, &day1));
    assert_eq!(closed.len(), players.len(), "every player scored on day 1");
    assert_eq!(
        closed[late[0].as_str()],
        engine.closed_board(WindowKind::Daily, &day1)[late[0].as_str()],
        "the late shard's old-day event landed in the closed set"
    );
    let ttl: i64 = redis::cmd("TTL").arg(&closed_key).query(&mut conn).unwrap();
    assert!(ttl > 0 && ttl <= CLOSED_TTL_S as i64, "ttl {ttl}");
    let live = engine.board(WindowKind::Daily);
    assert_eq!(live.len(), 2, "only the new day's scorers: {live:?}");
    mirrored(&engine, &client).unwrap();
    // Redis loses everything while the engine is quiet: the idle check rebuilds, and the
    // new day stays live.
    redis::cmd("FLUSHALL").exec(&mut conn).unwrap();
    drain(&mut runner);
    mirrored(&engine, &client).unwrap();
}

#[test]
fn mirrors_over_tls_with_a_password_and_a_private_ca() {
    if !require_tool(
        "mirrors_over_tls_with_a_password_and_a_private_ca",
        &["redis-server"],
    ) {
        return;
    }
    let dir = TempDir::new("redis-tls");
    let tls = write_ca_and_server_cert(dir.path());
    let ca = tls.ca_file.clone();
    let port = free_port();
    let _server = RedisServer::start_with(
        port,
        RedisOptions {
            tls: Some(&tls),
            password: Some("s3cret-pass"),
        },
    );
    let engine = TestEngine::new(2);
    for (i, p) in players(9).iter().enumerate() {
        engine.submit(p, 50 + i as u64, T0_MS + i as u64);
    }
    let stats = Arc::new(SinkStats::default());
    let url = format!("rediss://:s3cret-pass@127.0.0.1:{port}");
    let mut runner = SinkRunner::with_stats(
        engine.sink(&url, Some(ca.clone()), &stats),
        engine.logs.clone(),
        8,
        Arc::clone(&stats),
    );
    drain(&mut runner);
    for (i, p) in players(9).iter().enumerate() {
        engine.submit(p, 3 + i as u64, T0_MS + 100 + i as u64);
    }
    drain(&mut runner);
    let client = redis::Client::build_with_tls(
        url.as_str(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(&ca).unwrap()),
        },
    )
    .unwrap();
    mirrored(&engine, &client).unwrap();

    // A wrong password, and a server whose certificate the sink does not trust, both fail.
    let bad_stats = Arc::new(SinkStats::default());
    let mut wrong_password = engine.sink(
        &format!("rediss://:nope@127.0.0.1:{port}"),
        Some(ca),
        &bad_stats,
    );
    assert!(liveops_mirror::Sink::cursor(&mut wrong_password, 0).is_err());
    let other_ca = TempDir::new("redis-tls-other");
    let untrusted_ca = write_ca_and_server_cert(other_ca.path()).ca_file;
    let mut untrusted = engine.sink(&url, Some(untrusted_ca), &bad_stats);
    assert!(liveops_mirror::Sink::cursor(&mut untrusted, 0).is_err());
}

#[derive(Debug, Clone)]
enum Op {
    /// Player index, XP.
    Submit(usize, u64),
    /// A pass of the runner (it may fail while Redis is down).
    Step,
    /// Redis dies (and stays down until `Restart`).
    Kill,
    /// Redis comes back empty.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..6usize, 1..60u64).prop_map(|(p, xp)| Op::Submit(p, xp)),
        3 => Just(Op::Step),
        1 => Just(Op::Kill),
        1 => Just(Op::Restart),
    ]
}

#[test]
fn redis_ends_equal_to_a_model_of_the_records_across_random_restarts() {
    let Some((server, url)) =
        own_redis("redis_ends_equal_to_a_model_of_the_records_across_random_restarts")
    else {
        return;
    };
    let server = Mutex::new(server);
    let client = redis::Client::open(url.as_str()).unwrap();
    let config = Config {
        cases: 16,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[42; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    runner
        .run(&proptest::collection::vec(op(), 1..60), |ops| {
            server.lock().unwrap().restart();
            let engine = TestEngine::new(2);
            let stats = Arc::new(SinkStats::default());
            let mut sink_runner = SinkRunner::with_stats(
                engine.sink(&url, None, &stats),
                engine.logs.clone(),
                5,
                stats,
            );
            let mut now_ms = T0_MS;
            let mut up = true;
            for op in ops {
                match op {
                    Op::Submit(p, xp) => {
                        now_ms += 3;
                        engine.submit(&format!("p{p}"), xp, now_ms);
                    }
                    Op::Step => {
                        let _ = sink_runner.step();
                    }
                    Op::Kill => {
                        server.lock().unwrap().kill();
                        up = false;
                    }
                    Op::Restart => {
                        server.lock().unwrap().restart();
                        up = true;
                    }
                }
            }
            if !up {
                server.lock().unwrap().restart();
            }
            drain(&mut sink_runner);
            // The model: each player's last totals, from the records themselves.
            let mut scores: BTreeMap<WindowKind, BTreeMap<String, u64>> = BTreeMap::new();
            let mut xp: BTreeMap<String, (u64, u64)> = BTreeMap::new();
            for record in engine.records.lock().unwrap().iter() {
                if let Record::EventAccepted {
                    player,
                    at_ms,
                    totals: Some(totals),
                    ..
                } = record
                {
                    for window in WindowKind::ALL {
                        if let Some(score) = totals.scores[window.index()] {
                            scores
                                .entry(window)
                                .or_default()
                                .insert(player.clone(), score);
                        }
                    }
                    xp.insert(player.clone(), (totals.xp, *at_ms));
                }
            }
            let mut conn = client.get_connection().unwrap();
            for window in WindowKind::ALL {
                let got = zset(&mut conn, &format!("lb:{SEASON}:{window}"));
                prop_assert_eq!(&got, &scores.remove(&window).unwrap_or_default());
            }
            let got = progress_in_redis(&mut conn, xp.keys().cloned());
            prop_assert_eq!(got, xp);
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_gap_rebuilds_from_engine_state() {
    let Some((_server, url)) = own_redis("a_gap_rebuilds_from_engine_state") else {
        return;
    };
    let client = redis::Client::open(url.as_str()).unwrap();
    let engine = TestEngine::new(2);
    for (i, p) in players(10).iter().enumerate() {
        engine.submit(p, 20 + i as u64, T0_MS + i as u64);
    }
    let stats = Arc::new(SinkStats::default());
    let mut sink = engine.sink(&url, None, &stats);
    let after = liveops_mirror::Sink::cursor(&mut sink, 0).unwrap();
    mirrored(&engine, &client).unwrap();
    // Records the sink never sees: the log lost them.
    for (i, p) in players(10).iter().enumerate() {
        engine.submit(p, 5 + i as u64, T0_MS + 1_000 + i as u64);
    }
    assert!(mirrored(&engine, &client).is_err(), "Redis is behind");
    let gap = liveops_mirror::Gap {
        shard: 0,
        after,
        through: (engine.durable())(0),
        reason: liveops_mirror::GapReason::SegmentsDeleted,
    };
    liveops_mirror::Sink::apply(&mut sink, 0, &[liveops_mirror::FeedItem::Gap(gap)]).unwrap();
    assert_eq!(stats.resyncs.load(Ordering::Relaxed), 2);
    mirrored(&engine, &client).unwrap();
}

/// Rebuild time for 200,000 players on one shard (run by hand:
/// `cargo test --release -p liveops-mirror --test redis_sink -- --ignored --nocapture`).
#[test]
#[ignore = "a measurement, run by hand"]
fn rebuild_of_200k_players_measured() {
    let Some((_server, url)) = own_redis("rebuild_of_200k_players_measured") else {
        return;
    };
    let engine = TestEngine::new(1);
    {
        let mut shards = engine.state.shards.lock().unwrap();
        for i in 0..200_000u64 {
            let event = Event {
                player_id: format!("player-{i}"),
                ts: T0_MS / 1000,
                kind: EventKind::Progression {
                    delta_xp: 1 + i % 5_000,
                    activity: None,
                },
                replay_id: None,
            };
            shards[0].submit_event(event, None, T0_MS + i / 100);
        }
        shards[0].take_journal();
    }
    let stats = Arc::new(SinkStats::default());
    let mut sink = engine.sink_chunked(&url, None, &stats, 10_000);
    let started = Instant::now();
    liveops_mirror::Sink::cursor(&mut sink, 0).unwrap();
    let took = started.elapsed();
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let weekly: u64 = redis::cmd("ZCARD")
        .arg(format!("lb:{SEASON}:weekly"))
        .query(&mut conn)
        .unwrap();
    assert_eq!(weekly as usize, engine.board(WindowKind::Weekly).len());
    eprintln!(
        "rebuild of {} players ({} board entries x 3 windows + hashes): {took:?}, {} writes",
        engine.progress().len(),
        weekly,
        stats.writes.load(Ordering::Relaxed)
    );
}

/// A quarantine takes the player off the mirrored sets, live and closed, and a cleared
/// review puts them back: Redis follows the engine's boards through both.
#[test]
fn a_quarantine_leaves_the_mirrored_sets_and_a_clear_restores_them() {
    let Some((_server, url)) =
        own_redis("a_quarantine_leaves_the_mirrored_sets_and_a_clear_restores_them")
    else {
        return;
    };
    let client = redis::Client::open(url.as_str()).unwrap();
    let engine = TestEngine::new(2);
    let players = players(8);
    let mut runner = day_one(&engine, &players, &url);
    // The next day: day one is closed with every player in it.
    let day1 = WindowKind::Daily.period_at(T0_MS, SEASON).name;
    let next_day_ms = T0_MS + 12 * 3_600_000 + 5;
    engine.tick(0, next_day_ms);
    engine.tick(1, next_day_ms);
    let suspect = players[3].as_str();
    engine.submit(suspect, 40, next_day_ms + 1);
    drain(&mut runner);
    let closed_key = format!("lb:{SEASON}:daily:{day1}");
    let mut conn = client.get_connection().unwrap();
    assert!(zset(&mut conn, &closed_key).contains_key(suspect));

    engine.submit(suspect, 1_000_000, next_day_ms + 2); // blocked and quarantined
    drain(&mut runner);
    mirrored(&engine, &client).unwrap();
    let closed = zset(&mut conn, &closed_key);
    assert!(!closed.contains_key(suspect));
    assert_eq!(closed, engine.closed_board(WindowKind::Daily, &day1));
    assert!(!engine.board(WindowKind::Seasonal).contains_key(suspect));

    let shard = engine.shard_of(suspect);
    engine.on_shard(shard, |s| assert!(s.review_clear(suspect, next_day_ms + 3)));
    drain(&mut runner);
    mirrored(&engine, &client).unwrap();
    assert_eq!(
        zset(&mut conn, &closed_key),
        engine.closed_board(WindowKind::Daily, &day1)
    );
    assert_eq!(engine.board(WindowKind::Seasonal)[suspect], 143);
}
