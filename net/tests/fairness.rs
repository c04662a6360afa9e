//! The fairness guard over HTTP: score jumps (per event type, judged from the first
//! event), impossible scores, the detectors' evidence, floods, admin blocks, the audit
//! trail (API and stdout) and the metric names.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn metric(engine: &Engine, prefix: &str) -> u64 {
    let text = String::from_utf8(engine.get("fairness", "/metrics").body).unwrap();
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.split_whitespace().last())
        .map_or(0, |v| v.parse().unwrap())
}

/// Ordinary quests from 200 players on every shard.
fn warm_up(engine: &Engine) {
    let batch: Vec<String> = (0..200)
        .map(|i| progression(&format!("warm_{i:03}"), 10 + i % 20))
        .collect();
    let r = engine.post_events(&format!("[{}]", batch.join(",")), None);
    assert_eq!(r.json()["accepted"], 200);
}

/// A cold engine judges from its first event: the prior, not a warm-up, sets the model.
#[test]
fn score_jumps_are_flagged_off_the_boards_and_impossible_scores_block() {
    let engine = Engine::start();

    let r = engine.post_events(&progression("jumper", 2_000), None);
    assert_eq!(r.status, 202);
    let json = r.json();
    assert_eq!(
        (json["flagged"].as_bool(), json["flag"].as_str()),
        (Some(true), Some("score_jump"))
    );
    assert_eq!(json["xp"], 2000, "progression keeps the XP");
    let board = engine
        .get("leaderboard", "/leaderboard?window=weekly&limit=1000")
        .json();
    let on_board = board["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["playerId"] == "jumper");
    assert!(!on_board, "a flagged score stays off the leaderboards");
    assert_eq!(
        engine
            .get("leaderboard", "/leaderboard/players/jumper")
            .status,
        404
    );

    let r = engine.post_events(&progression("cheater", 1_000_000), None);
    assert_eq!((r.status, r.error_code()), (403, "player_blocked".into()));
    let error = &r.json()["error"];
    assert!(error["blockedUntil"].as_u64().unwrap() > now_s());
    assert!(error["reason"]
        .as_str()
        .unwrap()
        .contains("impossible score"));
    // The evidence: detector, measured value, threshold.
    let audit = engine
        .get("fairness", "/fairness/audit?playerId=cheater")
        .json();
    let detail = &audit["records"][0]["detail"];
    assert_eq!(detail["detector"], "impossible_score", "{audit}");
    assert_eq!(
        (detail["measured"].as_f64(), detail["threshold"].as_f64()),
        (Some(1_000_000.0), Some(20_000.0))
    );
    let flag = &engine
        .get("fairness", "/fairness/audit?playerId=jumper")
        .json()["records"][0]["detail"];
    assert_eq!(
        (flag["detector"].as_str(), flag["measure"].as_str()),
        (Some("score_jump"), Some("z"))
    );
    assert!(flag["measured"].as_f64().unwrap() > flag["threshold"].as_f64().unwrap());
    assert_eq!(
        engine
            .get("progression", "/players/cheater/progress")
            .json()["xp"],
        0
    );
    assert_eq!(
        engine.post_events(&progression("cheater", 1), None).status,
        403
    );

    let flags = engine.get("fairness", "/fairness/flags").json();
    let flagged: Vec<&str> = flags["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["playerId"].as_str().unwrap())
        .collect();
    assert_eq!(flagged, vec!["jumper"]);
    let blocked = engine.get("fairness", "/fairness/blocked").json();
    assert_eq!(blocked["blocked"][0]["playerId"], "cheater");
    assert_eq!(blocked["blocked"][0]["by"], "fairness");
    let view = engine.get("fairness", "/fairness/players/cheater").json();
    assert_eq!(view["blocked"], true);
    assert_eq!(
        engine.get("fairness", "/fairness/players/jumper").json()["flags"],
        1
    );

    assert_eq!(
        metric(&engine, "anomaly_flags_total{kind=\"score_jump\"}"),
        1
    );
    assert_eq!(
        metric(&engine, "anomaly_flags_total{kind=\"impossible_score\"}"),
        1
    );
    assert_eq!(
        metric(&engine, "dropped_events_total{reason=\"blocked\"}"),
        2
    );
}

/// A boss kill is not a quest: on an engine warm on quests, the contract's own sample
/// boss kill is scored (one shared model used to quarantine it), while a quest worth as
/// much is flagged.
#[test]
fn the_contracts_sample_boss_kill_is_scored_on_an_engine_warm_on_quests() {
    let engine = Engine::start();
    warm_up(&engine);
    let r = engine.post_events(&boss_kill("p1", "dragon_lord", 2500), None);
    assert_eq!(r.status, 202);
    assert_eq!(r.json()["flagged"], false, "{}", r.json());
    let r = engine.post_events(&progression("p2", 2500), None);
    assert_eq!(r.json()["flag"], "score_jump");
    let board = engine.get("leaderboard", "/leaderboard/players/p1").json();
    assert_eq!(board["score"], 2500, "{board}");
}

#[test]
fn sustained_flooding_blocks_for_block_sec() {
    let engine = Engine::start_with(&[("RATE_LIMIT_MAX", "5"), ("BLOCK_SEC", "2")]);
    let started = Instant::now();
    let mut blocked = None;
    while started.elapsed() < Duration::from_secs(6) {
        let r = engine.post_events(&progression("flooder", 1), None);
        assert!([202, 429, 403].contains(&r.status));
        if r.status == 403 {
            blocked = Some(r.json());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let blocked = blocked.expect("flooding for three seconds blocks");
    assert_eq!(blocked["error"]["code"], "player_blocked");
    assert!(blocked["error"]["reason"]
        .as_str()
        .unwrap()
        .starts_with("flooding"));
    assert!(metric(&engine, "dropped_events_total{reason=\"rate_limited\"}") > 0);
    assert_eq!(metric(&engine, "anomaly_flags_total{kind=\"flood\"}"), 1);
    // The block lifts after BLOCK_SEC, with an audit record.
    std::thread::sleep(Duration::from_millis(2_600));
    assert_eq!(
        engine.post_events(&progression("flooder", 1), None).status,
        202
    );
    let audit = engine
        .get("fairness", "/fairness/audit?playerId=flooder")
        .json();
    let kinds: Vec<&str> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    for kind in ["drop", "block", "unblock"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    // The same records went to stdout as JSON lines.
    std::thread::sleep(Duration::from_millis(100));
    let lines = engine.audit_lines();
    let printed: Vec<&str> = lines
        .iter()
        .filter(|l| l["playerId"] == "flooder")
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    for kind in ["drop", "block", "unblock"] {
        assert!(
            printed.contains(&kind),
            "{kind} missing from stdout {printed:?}"
        );
    }
}

#[test]
fn admin_block_and_unblock_need_the_token() {
    let engine = Engine::start();
    let r = engine.request(
        "fairness",
        "POST",
        "/fairness/players/badguy/block",
        &[],
        b"",
    );
    assert_eq!((r.status, r.error_code()), (401, "unauthorized".into()));
    let r = engine.request(
        "fairness",
        "POST",
        "/fairness/players/badguy/block",
        &[("Authorization", "Bearer wrong-token-000000000")],
        b"",
    );
    assert_eq!(r.status, 401);

    let r = engine.admin(
        "POST",
        "/fairness/players/badguy/block",
        r#"{"seconds":3600,"reason":"chargeback"}"#,
    );
    assert_eq!(r.status, 200);
    let json = r.json();
    assert_eq!(
        (
            json["blocked"].as_bool(),
            json["reason"].as_str(),
            json["by"].as_str()
        ),
        (Some(true), Some("chargeback"), Some("admin"))
    );
    let r = engine.post_events(&progression("badguy", 5), None);
    assert_eq!((r.status, r.error_code()), (403, "player_blocked".into()));
    assert_eq!(r.json()["error"]["reason"], "chargeback");
    assert_eq!(
        engine.get("fairness", "/fairness/blocked").json()["blocked"][0]["by"],
        "admin"
    );

    // The scheme name is case-insensitive.
    let lowercase = format!("bearer {}", common::ADMIN_TOKEN);
    let r = engine.request(
        "fairness",
        "POST",
        "/fairness/players/badguy/block",
        &[("Authorization", lowercase.as_str())],
        br#"{"seconds":3600,"reason":"chargeback"}"#,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = engine.admin("POST", "/fairness/players/badguy/block", r#"{"seconds":0}"#);
    assert_eq!((r.status, r.error_code()), (400, "invalid_field".into()));
    let r = engine.admin("DELETE", "/fairness/players/badguy/block", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["blocked"], false);
    assert_eq!(
        engine.post_events(&progression("badguy", 5), None).status,
        202
    );
    assert_eq!(
        engine
            .admin("DELETE", "/fairness/players/badguy/block", "")
            .status,
        404
    );
    let r = engine.admin("GET", "/fairness/players/badguy/block", "");
    assert_eq!(r.status, 405);

    let audit = engine.get("fairness", "/fairness/audit?limit=10").json();
    let kinds: Vec<&str> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds[0], "unblock", "newest first");
    let unblock = &audit["records"][0];
    assert!(unblock["detail"].is_object(), "{unblock}");
    assert!(
        kinds.contains(&"block") && kinds.contains(&"drop"),
        "{kinds:?}"
    );
}

#[test]
fn admin_routes_say_when_disabled() {
    // Outside ENV=dev: dev generates a token when none is set (for the console).
    let engine = Engine::start_with(&[("ENV", "staging"), ("ADMIN_TOKEN", "")]);
    let r = engine.admin("POST", "/fairness/players/someone/block", "");
    assert_eq!((r.status, r.error_code()), (401, "admin_disabled".into()));
}

#[test]
fn fairness_reads_validate_and_404() {
    let engine = Engine::start();
    assert_eq!(
        engine
            .get("fairness", "/fairness/players/nobody_here")
            .status,
        404
    );
    let r = engine.get("fairness", "/fairness/players/x!");
    assert_eq!((r.status, r.error_code()), (400, "invalid_field".into()));
    let r = engine.get("fairness", "/fairness/audit?limit=0");
    assert_eq!((r.status, r.error_code()), (400, "invalid_query".into()));
    let empty: Value = engine.get("fairness", "/fairness/blocked").json();
    assert_eq!(empty["blocked"].as_array().unwrap().len(), 0);
}

/// Alerts need every series from the first scrape; refused signatures and malformed
/// bodies are counted too.
#[test]
fn drop_and_flag_series_exist_from_the_first_scrape_and_count_refusals() {
    let engine = Engine::start();
    let text = String::from_utf8(engine.get("fairness", "/metrics").body).unwrap();
    for series in [
        "dropped_events_total{reason=\"bad_signature\"} 0",
        "dropped_events_total{reason=\"invalid\"} 0",
        "dropped_events_total{reason=\"blocked\"} 0",
        "dropped_events_total{reason=\"rate_limited\"} 0",
        "dropped_events_total{reason=\"overloaded\"} 0",
        "anomaly_flags_total{kind=\"score_jump\"} 0",
        "anomaly_flags_total{kind=\"impossible_score\"} 0",
        "anomaly_flags_total{kind=\"flood\"} 0",
        "anomaly_flags_total{kind=\"rate_of_gain\"} 0",
        "anomaly_flags_total{kind=\"impossible_cadence\"} 0",
        "anomaly_flags_total{kind=\"improbable_luck\"} 0",
    ] {
        assert!(text.contains(series), "{series} missing from\n{text}");
    }
    let body = progression("metric_p", 5);
    let unsigned = engine.request("gateway", "POST", "/events", &[], body.as_bytes());
    assert_eq!(unsigned.status, 401);
    let forged = sign(b"another body");
    let r = engine.request(
        "gateway",
        "POST",
        "/events",
        &[("X-Signature", &forged)],
        body.as_bytes(),
    );
    assert_eq!(r.status, 401);
    assert_eq!(engine.post_events("{bad", None).status, 400);
    assert_eq!(
        metric(&engine, "dropped_events_total{reason=\"bad_signature\"}"),
        2
    );
    assert_eq!(
        metric(&engine, "dropped_events_total{reason=\"invalid\"}"),
        1
    );
}

#[test]
fn blocked_pages_list_the_soonest_to_expire_first() {
    let engine = Engine::start();
    for (player, seconds) in [("page_c", 300), ("page_a", 100), ("page_b", 200)] {
        let body = format!(r#"{{"seconds":{seconds}}}"#);
        let path = format!("/fairness/players/{player}/block");
        assert_eq!(engine.admin("POST", &path, &body).status, 200);
    }
    let ids = |path: &str| -> Vec<String> {
        engine.get("fairness", path).json()["blocked"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["playerId"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids("/fairness/blocked"), ["page_a", "page_b", "page_c"]);
    assert_eq!(ids("/fairness/blocked?limit=2"), ["page_a", "page_b"]);
    assert_eq!(ids("/fairness/blocked?limit=1"), ["page_a"]);
    let r = engine.get("fairness", "/fairness/blocked?limit=0");
    assert_eq!((r.status, r.error_code()), (400, "invalid_query".into()));
}

/// Every live entry of `window`'s board: rank, player, score.
fn board_entries(engine: &Engine, window: &str) -> Vec<(u64, String, u64)> {
    let board = engine
        .get(
            "leaderboard",
            &format!("/leaderboard?window={window}&limit=1000"),
        )
        .json();
    board["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let id = e["playerId"].as_str().unwrap().to_owned();
            (
                e["rank"].as_u64().unwrap(),
                id,
                e["score"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn boards(engine: &Engine) -> Vec<Vec<(u64, String, u64)>> {
    ["daily", "weekly", "seasonal"]
        .iter()
        .map(|w| board_entries(engine, w))
        .collect()
}

/// The ladder over HTTP: a fairness block quarantines the player's score (held through
/// a crash and a clean restart), the review queue lists it for operators only, a clear
/// puts the score back exactly (rank and ties), a confirm discards it for good.
#[test]
fn a_quarantine_survives_restarts_and_a_review_clears_or_confirms_it() {
    let dir = temp_dir();
    let mut engine = Engine::start_in(&dir, &[]);
    for (player, xp) in [("rival", 40), ("suspect", 40), ("honest", 50), ("late", 40)] {
        assert_eq!(
            engine.post_events(&progression(player, xp), None).status,
            202
        );
    }
    let before = boards(&engine);
    assert_eq!(
        before[1][2].1, "suspect",
        "tied with rival, reached later: {before:?}"
    );

    let r = engine.post_events(&progression("suspect", 1_000_000), None);
    assert_eq!(r.status, 403);
    let on_boards =
        |engine: &Engine, id: &str| boards(engine).iter().flatten().any(|(_, p, _)| p == id);
    assert!(
        !on_boards(&engine, "suspect"),
        "quarantined off every board"
    );
    assert_eq!(
        engine
            .get("leaderboard", "/leaderboard/players/suspect")
            .status,
        404
    );
    let r = engine.get("fairness", "/fairness/reviews");
    assert_eq!((r.status, r.error_code()), (401, "unauthorized".into()));

    let queue = |engine: &Engine| engine.admin("GET", "/fairness/reviews?limit=10", "").json();
    let listed = queue(&engine);
    let review = &listed["reviews"][0];
    assert_eq!(review["playerId"], "suspect");
    assert_eq!(review["evidence"]["detector"], "impossible_score");
    assert_eq!(review["blocked"], true);
    assert_eq!(review["held"].as_array().unwrap().len(), 3, "{review}");
    assert!(review["held"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["score"] == 40));
    let player = engine.get("fairness", "/fairness/players/suspect").json();
    assert_eq!(
        (&player["quarantined"], &player["fairnessBlocks"]),
        (&Value::Bool(true), &Value::from(1))
    );

    // A crash (the log replayed), then a clean restart: the same queue.
    engine.kill9();
    let mut engine = Engine::start_in(&dir, &[]);
    assert_eq!(queue(&engine), listed);
    engine.stop("TERM", Duration::from_secs(20));
    let engine = Engine::start_in(&dir, &[]);
    assert_eq!(queue(&engine), listed);
    assert!(!on_boards(&engine, "suspect"));

    let r = engine.admin("POST", "/fairness/players/suspect/review/clear", "");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        (&r.json()["verdict"], &r.json()["blocked"]),
        (&Value::from("cleared"), &Value::Bool(false))
    );
    assert_eq!(boards(&engine), before, "restored exactly");
    assert_eq!(
        engine.post_events(&progression("suspect", 1), None).status,
        202
    );
    let r = engine.admin("POST", "/fairness/players/suspect/review/clear", "");
    assert_eq!((r.status, r.error_code()), (404, "review_not_found".into()));
    let r = engine.admin("POST", "/fairness/players/honest/review/confirm", "");
    assert_eq!((r.status, r.error_code()), (404, "review_not_found".into()));
    let r = engine.request(
        "fairness",
        "POST",
        "/fairness/players/suspect/review/confirm",
        &[],
        b"",
    );
    assert_eq!(r.status, 401);

    // Confirmed: blocked long, the held score gone for good.
    assert_eq!(
        engine
            .post_events(&progression("rival", 1_000_000), None)
            .status,
        403
    );
    let r = engine.admin("POST", "/fairness/players/rival/review/confirm", "");
    assert_eq!(r.status, 200);
    let json = r.json();
    assert_eq!(
        (&json["verdict"], &json["by"]),
        (&Value::from("confirmed"), &Value::from("admin"))
    );
    assert!(json["until"].as_u64().unwrap() >= now_s() + 29 * 86_400);
    assert!(!on_boards(&engine, "rival"));
    assert_eq!(queue(&engine)["reviews"], Value::Array(vec![]));
    let audit = engine.admin("GET", "/fairness/audit?limit=100", "").json();
    let kinds: Vec<&str> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"quarantine") && kinds.contains(&"review"),
        "{kinds:?}"
    );
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}
