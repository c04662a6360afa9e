//! Leaderboards over HTTP, checked against a model computed in the test: order across
//! shards, ties, paging, windows, a player's rank and neighbours.

mod common;

use common::*;
use serde_json::Value;

/// Posts scores so that several players tie; returns the expected order (best first).
fn seed_scores(engine: &Engine) -> Vec<(String, u64)> {
    let mut expected: Vec<(String, u64, u64)> = Vec::new();
    for i in 0..60u64 {
        let player = format!("lb_{i:02}");
        let score = (i * 37) % 11 * 100 + 100; // many ties
        let r = engine.post_events(&progression(&player, score), None);
        assert_eq!(r.status, 202);
        expected.push((player, score, i));
    }
    // Equal scores: who reached it first ranks first.
    expected.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
    expected.into_iter().map(|(p, s, _)| (p, s)).collect()
}

fn entries(v: &Value) -> Vec<(String, u64, u64)> {
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["playerId"].as_str().unwrap().to_owned(),
                e["score"].as_u64().unwrap(),
                e["rank"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn pages_merge_shards_in_global_order() {
    let engine = Engine::start_with(&[("LB_TOPN", "25")]);
    let expected = seed_scores(&engine);
    for window in ["daily", "weekly", "seasonal"] {
        let page = engine
            .get(
                "leaderboard",
                &format!("/leaderboard?window={window}&limit=1000"),
            )
            .json();
        let got = entries(&page);
        assert_eq!(got.len(), expected.len());
        for (i, ((p, s, rank), (ep, es))) in got.iter().zip(&expected).enumerate() {
            assert_eq!((p, s, *rank), (ep, es, i as u64 + 1), "{window} at {i}");
        }
        assert_eq!(page["window"], window);
        assert_eq!(page["season"], "1");
        assert_eq!(page["closed"], false);
        assert!(page["updatedAt"].as_u64().unwrap() >= now_s() - 60);
    }
    let weekly = engine.get("leaderboard", "/leaderboard").json();
    assert_eq!(weekly["window"], "weekly", "weekly is the default window");
    assert!(weekly["period"].as_str().unwrap().contains("-W"));
    assert_eq!(entries(&weekly).len(), 25, "LB_TOPN is the default limit");
    let daily = engine
        .get(
            "leaderboard",
            "/leaderboard/?window=daily&limit=10&offset=20",
        )
        .json();
    let got = entries(&daily);
    assert_eq!(got.len(), 10);
    assert_eq!(got[0].2, 21);
    assert_eq!((got[0].0.clone(), got[0].1), expected[20]);
    let past_end = engine.get("leaderboard", "/leaderboard?offset=100").json();
    assert!(entries(&past_end).is_empty());
}

#[test]
fn reads_see_every_accepted_event() {
    let engine = Engine::start();
    for i in 1..=20u64 {
        assert_eq!(
            engine
                .post_events(&progression("ryw_player", 10), None)
                .status,
            202
        );
        let rank = engine
            .get(
                "leaderboard",
                "/leaderboard/players/ryw_player?window=daily",
            )
            .json();
        assert_eq!(rank["score"], 10 * i);
    }
}

#[test]
fn player_rank_and_neighbours() {
    let engine = Engine::start();
    let expected = seed_scores(&engine);
    for probe in [0usize, 1, 17, 30, expected.len() - 1] {
        let (player, score) = &expected[probe];
        let r = engine
            .get(
                "leaderboard",
                &format!("/leaderboard/players/{player}?window=weekly&around=3"),
            )
            .json();
        assert_eq!(r["rank"], probe as u64 + 1, "{player}");
        assert_eq!(r["score"], *score);
        let neighbours = r["neighbours"].as_array().unwrap();
        let from = probe.saturating_sub(3);
        let to = (probe + 4).min(expected.len());
        let want: Vec<(&str, u64)> = expected[from..to]
            .iter()
            .map(|(p, _)| p.as_str())
            .zip(from as u64 + 1..)
            .collect();
        let got: Vec<(&str, u64)> = neighbours
            .iter()
            .map(|n| (n["playerId"].as_str().unwrap(), n["rank"].as_u64().unwrap()))
            .collect();
        assert_eq!(got, want, "{player}");
    }
    assert_eq!(
        engine
            .get("leaderboard", "/leaderboard/players/lb_00")
            .json()["neighbours"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let r = engine.get("leaderboard", "/leaderboard/players/never_seen");
    assert_eq!((r.status, r.error_code()), (404, "player_not_found".into()));
}

#[test]
fn bad_queries_are_refused() {
    let engine = Engine::start_with(&[("LB_WINDOWS", "daily,weekly")]);
    for (query, field) in [
        ("window=monthly", "window"),
        ("window=seasonal", "window"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("offset=1000001", "offset"),
        ("offset=-1", "offset"),
    ] {
        let r = engine.get("leaderboard", &format!("/leaderboard?{query}"));
        assert_eq!(
            (r.status, r.error_code()),
            (400, "invalid_query".into()),
            "{query}"
        );
        assert_eq!(r.json()["error"]["field"], field);
    }
    // The deepest offset the API allows is answered (here past the end: no entries).
    let deepest = engine.get("leaderboard", "/leaderboard?offset=1000000&limit=1000");
    assert_eq!(deepest.status, 200);
    assert!(entries(&deepest.json()).is_empty());
    let r = engine.get("leaderboard", "/leaderboard/players/lb_01?around=51");
    assert_eq!(r.status, 400);
    let r = engine.get("leaderboard", "/leaderboard?window=daily&period=1999-01-01");
    assert_eq!((r.status, r.error_code()), (404, "period_not_found".into()));
    let history = engine
        .get("leaderboard", "/leaderboard/history?window=daily")
        .json();
    assert_eq!(
        history["periods"].as_array().unwrap().len(),
        0,
        "no period has closed yet"
    );
    let r = engine.request("leaderboard", "POST", "/leaderboard", &[], b"");
    assert_eq!(r.status, 405);
}

/// Pages deeper than the direct walk (offset above 256) are found by the distributed
/// selection: every page of a board of 2,400 players over 3 shards, at offsets that
/// cross shard and page boundaries, is exactly the model's.
#[test]
fn deep_pages_match_the_model() {
    let engine = Engine::start_with(&[("SHARDS", "3"), ("ANOMALY_Z", "100")]);
    const PLAYERS: u64 = 2_400;
    // Distinct scores (7 is invertible modulo the prime 2,411), so the model is a sort.
    let score = |i: u64| i * 7 % 2_411 + 1;
    for chunk in (0..PLAYERS).collect::<Vec<_>>().chunks(1000) {
        let events: Vec<String> = chunk
            .iter()
            .map(|&i| progression(&format!("deep_{i:04}"), score(i)))
            .collect();
        let r = engine.post_events(&format!("[{}]", events.join(",")), None);
        assert_eq!(r.status, 202);
        assert_eq!(r.json()["accepted"], chunk.len() as u64);
    }
    let mut model: Vec<(String, u64)> = (0..PLAYERS)
        .map(|i| (format!("deep_{i:04}"), score(i)))
        .collect();
    model.sort_by_key(|(_, score)| std::cmp::Reverse(*score));
    for (offset, limit) in [
        (0usize, 1000usize),
        (256, 10),
        (257, 1000),
        (999, 3),
        (1_234, 100),
        (2_000, 1000),
        (2_399, 5),
        (2_400, 5),
        (50_000, 10),
    ] {
        let page = engine
            .get(
                "leaderboard",
                &format!("/leaderboard?window=seasonal&offset={offset}&limit={limit}"),
            )
            .json();
        let got = entries(&page);
        let want: Vec<(String, u64, u64)> = model
            .iter()
            .zip(1u64..)
            .skip(offset)
            .take(limit)
            .map(|((p, s), rank)| (p.clone(), *s, rank))
            .collect();
        assert_eq!(got, want, "offset {offset} limit {limit}");
    }
}

/// Reads are unauthenticated and a deep page costs the shards far more than a write: a
/// client host over its read budget is paced, each read held until the budget has grown
/// back (so a client looping on its reads costs a timer, not a thread's time), and
/// refused with 429 and an honest `Retry-After` when its other reads took the units
/// first; another host still reads at once.
#[test]
fn a_host_over_its_read_budget_is_paced_then_refused_and_others_still_read() {
    let engine = Engine::start_with(&[("READ_UNITS_PER_HOST_S", "1600")]);
    let greedy = Some(std::net::Ipv4Addr::new(127, 0, 0, 2));
    let deep = "/leaderboard?window=weekly&limit=1000&offset=10";
    // 100 + 400 + 1000 units each: the burst of 1600 holds one such page, and the 100
    // left need 875 ms at 1600 a second to grow to another.
    let asked = std::time::Instant::now();
    let first = engine.request_from(greedy, "leaderboard", "GET", deep, &[], b"");
    let first_took = asked.elapsed();
    assert_eq!(first.status, 200);
    let asked = std::time::Instant::now();
    let paced = engine.request_from(greedy, "leaderboard", "GET", deep, &[], b"");
    let held = asked.elapsed();
    assert_eq!(paced.status, 200);
    // The budget grows from when the first read was charged, at most `first_took`
    // before the second was asked (a slow machine's first read counts toward the wait).
    assert!(
        held + first_took >= std::time::Duration::from_millis(850),
        "the read over budget was answered after {held:?} (the first took {first_took:?}), \
         not held until the budget grew back"
    );
    // Three at once, the budget spent again: each is held, one gets the units.
    let asked = std::time::Instant::now();
    let answers: Vec<_> = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| engine.request_from(greedy, "leaderboard", "GET", deep, &[], b""))
            })
            .collect();
        readers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let held = asked.elapsed();
    let served = answers.iter().filter(|a| a.status == 200).count();
    let refused: Vec<_> = answers.iter().filter(|a| a.status == 429).collect();
    assert_eq!(
        (served, refused.len()),
        (1, 2),
        "one read fits the grown budget"
    );
    for r in refused {
        assert_eq!(r.error_code(), "rate_limited");
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    assert!(held >= std::time::Duration::from_millis(450), "{held:?}");
    let honest = engine.request_from(
        Some(std::net::Ipv4Addr::new(127, 0, 0, 1)),
        "leaderboard",
        "GET",
        "/leaderboard?window=weekly&limit=10",
        &[],
        b"",
    );
    assert_eq!(honest.status, 200);
}
