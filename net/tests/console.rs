//! The operator console (issue 13, item 1): its page and files with their security
//! headers, `GET /stats` behind the admin token, the reads the fairness port serves for
//! the page, the dev token, and the console driven end to end in headless Chromium.
//! Every response is checked against `api/openapi.yaml` by the harness.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{boss_kill, drop_claimed, progression, Engine, Response, ADMIN_TOKEN};
use serde_json::Value;

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn stats(engine: &Engine) -> Value {
    let auth = bearer(ADMIN_TOKEN);
    let r = engine.request(
        "fairness",
        "GET",
        "/stats",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

fn count(list: &Value, name: &str) -> u64 {
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {list}"))["count"]
        .as_u64()
        .unwrap()
}

#[test]
fn stats_needs_the_admin_token() {
    let engine = Engine::start();
    let refused = |r: &Response| {
        assert_eq!((r.status, r.error_code()), (401, "unauthorized".into()));
        assert_eq!(r.header("cache-control"), Some("no-store"));
    };
    refused(&engine.get("fairness", "/stats"));
    let wrong = bearer("not-the-admin-token-at-all");
    refused(&engine.request(
        "fairness",
        "GET",
        "/stats",
        &[("Authorization", &wrong)],
        b"",
    ));
    // The token in a URL is never looked at.
    let in_query = format!("/stats?token={ADMIN_TOKEN}");
    assert_eq!(engine.get("fairness", &in_query).status, 401);

    let auth = bearer(ADMIN_TOKEN);
    let r = engine.request(
        "fairness",
        "GET",
        "/stats",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = engine.request(
        "fairness",
        "POST",
        "/stats",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 405);
    // The fairness port's only: the other ports do not serve it.
    for service in ["gateway", "leaderboard", "progression"] {
        assert_eq!(engine.get(service, "/stats").status, 404, "{service}");
    }
}

#[test]
fn stats_count_what_happened() {
    let engine = Engine::start();
    for (i, body) in [
        progression("stats_a", 120),
        boss_kill("stats_b", "dragon_lord", 800),
        drop_claimed("stats_c", "epic_sword_001"),
    ]
    .iter()
    .enumerate()
    {
        let r = engine.post_events(body, Some(&format!("stats-{i}")));
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    }
    let unsigned = progression("stats_d", 5);
    let r = engine.request(
        "gateway",
        "POST",
        "/events",
        &[("X-Signature", "sha256=00")],
        unsigned.as_bytes(),
    );
    assert_eq!(r.status, 401);
    let invalid = r#"{"type":"progression","playerId":"stats_e","ts":1,"payload":{}}"#;
    assert_eq!(engine.post_events(invalid, None).status, 400);

    let s = stats(&engine);
    assert_eq!(s["ready"], true);
    assert_eq!(s["eventsAccepted"], 3);
    assert_eq!(count(&s["eventsRefused"], "bad_signature"), 1);
    assert_eq!(count(&s["eventsRefused"], "invalid"), 1);
    assert_eq!(count(&s["eventsRefused"], "rate_limited"), 0);
    assert_eq!(count(&s["flags"], "score_jump"), 0);
    assert_eq!(
        s["windows"],
        serde_json::json!(["daily", "weekly", "seasonal"])
    );
    let shards = s["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 2, "SHARDS=2 in the harness");
    let players: i64 = shards.iter().map(|s| s["players"].as_i64().unwrap()).sum();
    assert_eq!(players, 3);
    assert!(shards.iter().all(|s| s["failed"] == false));
    // Each accepted event is a durable log record before its 202.
    let lsn: i64 = shards
        .iter()
        .map(|s| s["walDurableLsn"].as_i64().unwrap())
        .sum();
    assert!(lsn >= 3, "{shards:?}");
    assert!(s["walRecords"].as_u64().unwrap() >= 3);
    assert!(shards
        .iter()
        .all(|s| s["walSegments"].as_i64().unwrap() >= 1));
    assert_eq!(s["mirrors"], serde_json::json!([]));
    let gateway = s["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["service"] == "gateway")
        .unwrap();
    assert_eq!(gateway["requests"], 5);
    assert_eq!(gateway["requests5xx"], 0);
    let buckets = gateway["latencyBuckets"].as_array().unwrap();
    let last = buckets.last().unwrap();
    assert_eq!(last["leSeconds"], Value::Null);
    assert_eq!(last["count"], 5, "the +Inf bucket counts every request");
    let counts: Vec<u64> = buckets
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .collect();
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "cumulative: {counts:?}"
    );

    // Counters only grow: a second poll sees the next event.
    assert_eq!(
        engine.post_events(&progression("stats_a", 1), None).status,
        202
    );
    assert_eq!(stats(&engine)["eventsAccepted"], 4);
}

#[test]
fn console_files_carry_the_security_headers() {
    let engine = Engine::start();
    for (path, content_type) in [
        ("/console", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/chart.js", "text/javascript"),
        ("/console/quantile.js", "text/javascript"),
        ("/console/app.css", "text/css"),
        ("/console/favicon.svg", "image/svg+xml"),
    ] {
        let r = engine.get("fairness", path);
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("content-type").unwrap().starts_with(content_type),
            "{path}"
        );
        let csp = r.header("content-security-policy").unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    // `/console/` is the page too (not a path of its own in the spec).
    let slash = common::request(engine.port("fairness"), "GET", "/console/", &[], b"");
    assert_eq!(slash.status, 200);
    assert!(String::from_utf8_lossy(&slash.body).contains("/console/app.js"));
    let missing = engine.get("fairness", "/console/secrets.txt");
    assert_eq!(missing.status, 404);
    assert!(missing.header("content-security-policy").is_some());
    assert_eq!(
        engine
            .request("fairness", "POST", "/console", &[], b"")
            .status,
        405
    );
    // Only the fairness port serves the console.
    assert_eq!(engine.get("gateway", "/console").status, 404);
}

#[test]
fn the_fairness_port_serves_the_reads_the_console_needs() {
    let engine = Engine::start();
    assert_eq!(
        engine
            .post_events(&progression("reads_a", 300), None)
            .status,
        202
    );
    assert_eq!(
        engine
            .post_events(&progression("reads_b", 200), None)
            .status,
        202
    );
    let page = engine.get("fairness", "/leaderboard?window=weekly&limit=10");
    assert_eq!(page.status, 200);
    assert_eq!(page.json()["entries"][0]["playerId"], "reads_a");
    assert_eq!(
        page.json(),
        engine
            .get("leaderboard", "/leaderboard?window=weekly&limit=10")
            .json(),
        "the same board on both ports"
    );
    let rank = engine.get(
        "fairness",
        "/leaderboard/players/reads_b?window=weekly&around=1",
    );
    assert_eq!(rank.json()["rank"], 2);
    assert_eq!(
        engine
            .get("fairness", "/leaderboard/history?window=daily")
            .status,
        200
    );
    let progress = engine.get("fairness", "/players/reads_a/progress");
    assert_eq!(progress.json()["xp"], 300);
    // Reads only: no claim or verify here, and no writes through these paths.
    assert_eq!(
        engine
            .request("fairness", "POST", "/players/reads_a/progress", &[], b"")
            .status,
        405
    );
    assert_eq!(engine.get("fairness", "/rewards/claim").status, 404);
}

#[test]
fn dev_generates_and_keeps_an_admin_token() {
    use std::os::unix::fs::PermissionsExt;
    let engine = Engine::start_with(&[("ENV", "dev"), ("ADMIN_TOKEN", "")]);
    let path = engine.dir.join("data/dev-secrets/ADMIN_TOKEN");
    let token = std::fs::read_to_string(&path).expect("the generated token is kept");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let logged = engine.stderr.lock().unwrap().join("\n");
    assert!(
        logged.contains("ADMIN_TOKEN is not set; generated one"),
        "{logged}"
    );
    let auth = bearer(token.trim());
    let r = engine.request(
        "fairness",
        "GET",
        "/stats",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200);
}

/// Where the browser suite lives, and its installed driver.
fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("console/e2e")
}

const CHROMIUM: &str = "/usr/bin/chromium";

#[test]
fn console_percentiles_agree_with_prometheus() {
    if !liveops_testkit::require_tool("console_percentiles_agree_with_prometheus", &["node"]) {
        return;
    }
    let out = Command::new("node")
        .arg("--test")
        .arg(e2e_dir().join("quantile.test.mjs"))
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn console_end_to_end_in_headless_chromium() {
    const TEST: &str = "console_end_to_end_in_headless_chromium";
    let dir = e2e_dir();
    if !liveops_testkit::require_tool(TEST, &["node"])
        || !liveops_testkit::require_file(TEST, Path::new(CHROMIUM), "apt-get install chromium")
        || !liveops_testkit::require_file(
            TEST,
            &dir.join("node_modules/playwright-core"),
            "npm ci --prefix net/console/e2e",
        )
    {
        return;
    }
    let engine = Engine::start_with(&[("ANOMALY_MIN_SAMPLES", "50")]);
    let events = [
        boss_kill("e2e_alice", "dragon_lord", 2500),
        progression("e2e_bob", 1200),
        progression("e2e_carol", 300),
        drop_claimed("e2e_carol", "epic_sword_001"),
        progression("e2e_dave", 400),
        progression("e2e_erin", 350),
    ];
    for body in &events {
        let r = engine.post_events(body, None);
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["flagged"], false, "too few samples to judge yet");
    }
    // The score model judges once it has 50 scored events per shard: a warm-up batch of
    // small scores, then one jump it flags (accepted, kept off the boards).
    let warm_up: Vec<String> = (0..200)
        .map(|i| progression(&format!("warm_{i:03}"), 10 + i % 20))
        .collect();
    let r = engine.post_events(&format!("[{}]", warm_up.join(",")), None);
    assert_eq!(r.json()["accepted"], 200);
    let jump = engine.post_events(&progression("e2e_jumper", 2_000), None);
    assert_eq!(jump.json()["flag"], "score_jump");
    // Scores over SCORE_CAP_PROGRESSION: each player blocked and quarantined, the held
    // scores of e2e_dave and e2e_erin off the boards; twelve reviews, two pages of ten.
    let cheats: Vec<String> = (0..10)
        .map(|i| format!("cheat_{i:02}"))
        .chain(["e2e_dave".into(), "e2e_erin".into()])
        .map(|player| progression(&player, 1_000_000))
        .collect();
    let r = engine.post_events(&format!("[{}]", cheats.join(",")), None);
    assert_eq!(
        r.json()["accepted"],
        0,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let queue = engine
        .admin("GET", "/fairness/reviews?limit=100", "")
        .json();
    assert_eq!(queue["reviews"].as_array().unwrap().len(), cheats.len());
    let accepted = warm_up.len() + 1 + events.len();
    let r = engine.request(
        "gateway",
        "POST",
        "/events",
        &[("X-Signature", "sha256=00")],
        progression("e2e_mallory", 5).as_bytes(),
    );
    assert_eq!(r.status, 401);

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let child = Command::new("node")
        .arg(dir.join("console.test.mjs"))
        .env(
            "CONSOLE_URL",
            format!("http://127.0.0.1:{}/console", engine.port("fairness")),
        )
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("CHROMIUM", CHROMIUM)
        .env("SCREENSHOT_DIR", &shots)
        .env("EXPECT_ACCEPTED", accepted.to_string())
        // The bad signature, and each score over the cap (refused with its block).
        .env("EXPECT_REFUSED", (1 + cheats.len()).to_string())
        // The jump, and each score over the cap.
        .env("EXPECT_FLAGS", (1 + cheats.len()).to_string())
        .env("EXPECT_SHARDS", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts");
    let run = common::exit_within(child, Duration::from_secs(120));
    eprintln!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, 0, "the browser suite failed (output above)");
    for view in ["overview", "boards", "player", "fairness"] {
        let shot = shots.join(format!("{view}.png"));
        let bytes = std::fs::metadata(&shot).map_or(0, |m| m.len());
        assert!(bytes > 10_000, "{}: {bytes} bytes", shot.display());
    }

    // The console's verdicts: e2e_dave's review cleared (his score back on the boards),
    // e2e_erin's confirmed (blocked by the admin), the ten others still pending.
    let dave = engine.get("leaderboard", "/leaderboard/players/e2e_dave?window=weekly");
    assert_eq!(
        dave.json()["score"],
        400,
        "{}",
        String::from_utf8_lossy(&dave.body)
    );
    let erin = engine.get("fairness", "/fairness/players/e2e_erin").json();
    assert_eq!(
        (&erin["blocked"], &erin["quarantined"]),
        (&Value::Bool(true), &Value::Bool(false)),
        "{erin}"
    );
    let queue = engine
        .admin("GET", "/fairness/reviews?limit=100", "")
        .json();
    assert_eq!(queue["reviews"].as_array().unwrap().len(), cheats.len() - 2);

    // The console blocked e2e_carol last: the API and the gateway agree.
    let standing = engine.get("fairness", "/fairness/players/e2e_carol").json();
    assert_eq!(standing["blocked"], true, "{standing}");
    assert_eq!(standing["reason"], "e2e-final");
    let r = engine.post_events(&progression("e2e_carol", 10), None);
    assert_eq!((r.status, r.error_code()), (403, "player_blocked".into()));
    // And its earlier block and unblock are in the audit trail, by the admin.
    let audit = engine.get("fairness", "/fairness/audit?playerId=e2e_carol&limit=10");
    let kinds: Vec<String> = audit.json()["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["kind"].as_str().unwrap(),
                r["reason"].as_str().unwrap()
            )
        })
        .collect();
    for expected in ["block:e2e-check", "unblock:admin", "block:e2e-final"] {
        assert!(
            kinds.iter().any(|k| k == expected),
            "{expected} not in {kinds:?}"
        );
    }
}
