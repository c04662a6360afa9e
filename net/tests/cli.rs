//! The command line for people (`liveops send`, `claim`, `top`), run as the real binary
//! against a real engine: what it sends, what it prints, how it exits.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// A CLI run ends well within its own request timeout here.
const RUN_DEADLINE: Duration = Duration::from_secs(20);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn sample(name: &str) -> String {
    repo_root()
        .join("sample_events")
        .join(name)
        .to_str()
        .unwrap()
        .to_owned()
}

/// Runs `liveops ARGS` in `dir` with only `env` (and PATH) set, `stdin` piped in.
fn liveops_in(dir: &Path, args: &[&str], env: &[(&str, String)], stdin: &[u8]) -> Exited {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_liveops"));
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    // The CLI may exit before reading it all (a usage error): a broken pipe is fine.
    let _ = pipe.write_all(stdin);
    drop(pipe);
    exit_within(child, RUN_DEADLINE)
}

/// The environment pointing the CLI at `engine`'s ports (which the OS chose).
fn engine_env(engine: &Engine) -> Vec<(&'static str, String)> {
    let url = |service| format!("http://127.0.0.1:{}", engine.port(service));
    vec![
        ("LIVEOPS_GATEWAY_URL", url("gateway")),
        ("LIVEOPS_LEADERBOARD_URL", url("leaderboard")),
        ("LIVEOPS_PROGRESSION_URL", url("progression")),
    ]
}

/// `liveops ARGS` against `engine`, signing with the engine's secret.
fn liveops(engine: &Engine, args: &[&str], stdin: &[u8]) -> Exited {
    let mut env = engine_env(engine);
    env.push(("HMAC_SECRET", HMAC_SECRET.to_owned()));
    liveops_in(&engine.dir, args, &env, stdin)
}

fn stdout_json(ran: &Exited) -> Value {
    serde_json::from_str(&ran.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}{}", ran.stdout, ran.stderr))
}

/// The one status line the CLI wrote on stderr: `METHOD URL -> STATUS REASON`.
fn status_line(ran: &Exited, method: &str, port: u16, path: &str, status: u16) {
    let expected = format!("{method} http://127.0.0.1:{port}{path} -> {status} ");
    assert!(
        ran.stderr
            .lines()
            .next()
            .unwrap_or_default()
            .starts_with(&expected),
        "expected {expected:?} first on stderr: {}",
        ran.stderr
    );
}

#[test]
fn send_posts_a_file_and_a_batch_from_stdin_signed() {
    let engine = Engine::start();
    let gateway = engine.port("gateway");

    let ran = liveops(&engine, &["send", &sample("progression.json")], b"");
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    status_line(&ran, "POST", gateway, "/events", 202);
    let answer = stdout_json(&ran);
    assert_eq!(answer["status"], "accepted");
    assert_eq!(answer["playerId"], "player_123");
    assert_eq!(answer["xp"], 10);

    let batch = std::fs::read(sample("batch.json")).unwrap();
    let ran = liveops(&engine, &["send", "-", "--key", "batch-1"], &batch);
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    status_line(&ran, "POST", gateway, "/events", 202);
    assert_eq!(stdout_json(&ran)["accepted"], 4);
    // No FILE reads stdin too; the same key and body replay instead of applying twice.
    let ran = liveops(&engine, &["send", "--key=batch-1"], &batch);
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    status_line(&ran, "POST", gateway, "/events", 208);
    let progress = engine.get("progression", "/players/player_123/progress");
    assert_eq!(
        progress.json()["xp"],
        10 + 10 + 2500,
        "the batch applied once"
    );

    // An editor's trailing newline is sent, and signed, as it is.
    let line = format!(
        "{{\"type\":\"progression\",\"playerId\":\"p1\",\"ts\":{},\"payload\":{{\"deltaXp\":7}}}}\n",
        now_s()
    );
    let ran = liveops(&engine, &["send"], line.as_bytes());
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    assert_eq!(stdout_json(&ran)["xp"], 7);
}

#[test]
fn an_error_status_exits_1_and_a_bad_secret_is_explained() {
    let engine = Engine::start();
    let mut env = engine_env(&engine);
    env.push((
        "HMAC_SECRET",
        "another-secret-0123456789abcdef0123".to_owned(),
    ));
    let ran = liveops_in(&engine.dir, &["send", &sample("boss_kill.json")], &env, b"");
    assert_eq!(ran.code, 1, "{}{}", ran.stdout, ran.stderr);
    status_line(&ran, "POST", engine.port("gateway"), "/events", 401);
    assert_eq!(stdout_json(&ran)["error"]["code"], "bad_signature");
    assert!(
        ran.stderr.contains("is that the engine's HMAC_SECRET?"),
        "{}",
        ran.stderr
    );
    assert!(
        engine
            .get("progression", "/players/player_123/progress")
            .status
            == 404,
        "nothing was applied"
    );

    // A valid signature over an invalid event: the engine's 400, exit 1.
    let ran = liveops(
        &engine,
        &["send"],
        br#"{"type":"progression","playerId":"p1"}"#,
    );
    assert_eq!(ran.code, 1, "{}{}", ran.stdout, ran.stderr);
    status_line(&ran, "POST", engine.port("gateway"), "/events", 400);
    assert_eq!(stdout_json(&ran)["error"]["code"], "missing_field");
}

#[test]
fn claim_prints_the_receipt_once() {
    let engine = Engine::start();
    let progression = engine.port("progression");
    let ran = liveops(&engine, &["send", &sample("drop_claimed.json")], b"");
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);

    let ran = liveops(&engine, &["claim", "player_123", "epic_sword_001"], b"");
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    status_line(&ran, "POST", progression, "/rewards/claim", 200);
    let receipt = stdout_json(&ran);
    assert_eq!(receipt["playerId"], "player_123");
    assert_eq!(receipt["item"], "epic_sword_001");
    let verified = engine.request(
        "progression",
        "POST",
        "/rewards/verify",
        &[],
        ran.stdout.trim().as_bytes(),
    );
    assert_eq!(
        verified.json()["valid"],
        true,
        "the printed receipt verifies"
    );

    let again = liveops(&engine, &["claim", "player_123", "epic_sword_001"], b"");
    assert_eq!(again.code, 1, "{}{}", again.stdout, again.stderr);
    status_line(&again, "POST", progression, "/rewards/claim", 409);
    assert_eq!(
        stdout_json(&again)["error"]["receiptId"],
        receipt["receiptId"]
    );

    let unearned = liveops(&engine, &["claim", "player_123", "golden_crown"], b"");
    assert_eq!(unearned.code, 1);
    assert_eq!(stdout_json(&unearned)["error"]["code"], "not_earned");
}

#[test]
fn top_prints_a_table() {
    let engine = Engine::start();
    let ran = liveops(&engine, &["top"], b"");
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    assert!(
        ran.stdout.contains("no players ranked yet"),
        "{}",
        ran.stdout
    );

    let batch = std::fs::read(sample("batch.json")).unwrap();
    assert_eq!(liveops(&engine, &["send"], &batch).code, 0);
    let ran = liveops(&engine, &["top", "--window", "daily", "--limit", "5"], b"");
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    status_line(
        &ran,
        "GET",
        engine.port("leaderboard"),
        "/leaderboard?window=daily&limit=5",
        200,
    );
    let lines: Vec<Vec<&str>> = ran
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0][0], "daily", "{}", ran.stdout);
    assert_eq!(lines[1], ["RANK", "PLAYER", "SCORE"], "{}", ran.stdout);
    assert_eq!(lines[2], ["1", "player_123", "2510"], "{}", ran.stdout);
    assert_eq!(lines[3], ["2", "player_456", "10"], "{}", ran.stdout);
    assert_eq!(lines.len(), 4, "{}", ran.stdout);

    let one = liveops(&engine, &["top", "--limit", "1"], b"");
    assert_eq!(one.stdout.lines().count(), 3, "{}", one.stdout);

    let bad = liveops(&engine, &["top", "--window", "monthly"], b"");
    assert_eq!(bad.code, 1, "{}{}", bad.stdout, bad.stderr);
    assert_eq!(stdout_json(&bad)["error"]["field"], "window");
}

#[test]
fn the_dev_secret_an_engine_generated_is_found_and_none_is_a_clear_error() {
    // A fresh clone, as in the README: no HMAC_SECRET anywhere, ENV=dev generates one
    // into ./data/dev-secrets/.
    let dir = temp_dir();
    let engine = Engine::start_in(&dir, &[("HMAC_SECRET", "")]);
    let env = engine_env(&engine);
    let ran = liveops_in(&dir, &["send", &sample("progression.json")], &env, b"");
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    status_line(&ran, "POST", engine.port("gateway"), "/events", 202);

    // DATA_DIR in ./.env moves where the dev secret is looked for, as for the engine.
    // (Another sample: the same bytes again would be refused as a replay.)
    let elsewhere = temp_dir();
    std::fs::write(
        elsewhere.join(".env"),
        format!("DATA_DIR={}\n", dir.join("data").display()),
    )
    .unwrap();
    let ran = liveops_in(&elsewhere, &["send", &sample("boss_kill.json")], &env, b"");
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);

    // HMAC_SECRET in ./.env wins over the dev secret: here a wrong one, so 401.
    std::fs::write(
        elsewhere.join(".env"),
        format!(
            "DATA_DIR={}\nHMAC_SECRET=from-dot-env-0123456789abcdef0123456\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let ran = liveops_in(
        &elsewhere,
        &["send", &sample("progression.json")],
        &env,
        b"",
    );
    assert_eq!(ran.code, 1, "{}{}", ran.stdout, ran.stderr);
    status_line(&ran, "POST", engine.port("gateway"), "/events", 401);

    let empty = temp_dir();
    let ran = liveops_in(&empty, &["send", &sample("progression.json")], &env, b"");
    assert_eq!(ran.code, 2, "{}{}", ran.stdout, ran.stderr);
    for named in ["environment", "./.env", "data/dev-secrets/HMAC_SECRET"] {
        assert!(ran.stderr.contains(named), "{named}: {}", ran.stderr);
    }
    assert!(ran.stdout.is_empty());
    drop(engine);
    for d in [dir, elsewhere, empty] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn usage_errors_exit_2_and_send_nothing_and_no_engine_exits_3() {
    let engine = Engine::start();
    let too_large = vec![b' '; (1 << 20) + 1];
    for (args, stdin) in [
        (&["send", "--bogus"][..], &b""[..]),
        (&["send", "a.json", "b.json"], b""),
        (&["send", "/nonexistent/event.json"], b""),
        (&["send", "--key", ""], b"{}"),
        (&["send", "-"], b" \n"),
        (&["send", "-"], &too_large),
        (&["claim", "player_123"], b""),
        (&["top", "--limit", "0"], b""),
        (&["top", "--limit", "1001"], b""),
        (&["top", "--host", "127.0.0.1:9"], b""),
        (&["top", "--leaderboard", "https://example.com"], b""),
        (&["frobnicate"], b""),
    ] {
        let ran = liveops(&engine, args, stdin);
        assert_eq!(ran.code, 2, "{args:?}: {}{}", ran.stdout, ran.stderr);
        assert!(
            !ran.stderr.contains(" -> "),
            "{args:?} sent: {}",
            ran.stderr
        );
        assert!(!ran.stderr.contains("panicked"), "{}", ran.stderr);
    }
    let events_requests = || {
        let metrics = String::from_utf8(engine.get("gateway", "/metrics").body).unwrap();
        metrics.contains("route=\"/events\"")
    };
    assert!(!events_requests(), "no request reached the gateway");
    // The check above can see one.
    let ran = liveops(&engine, &["send", &sample("progression.json")], b"");
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    assert!(events_requests());

    let nobody = format!("http://127.0.0.1:{}", liveops_testkit::free_port());
    let ran = liveops_in(&engine.dir, &["top", "--leaderboard", &nobody], &[], b"");
    assert_eq!(ran.code, 3, "{}{}", ran.stdout, ran.stderr);
    assert!(ran.stderr.contains("cannot connect"), "{}", ran.stderr);
}

#[test]
fn every_command_has_help_with_examples() {
    let dir = temp_dir();
    for args in [
        &["--help"][..],
        &["help"],
        &["send", "--help"],
        &["claim", "-h"],
        &["top", "--help"],
        &["help", "top"],
        &["serve", "--help"],
        &["wal", "--help"],
    ] {
        let ran = liveops_in(&dir, args, &[], b"");
        assert_eq!(ran.code, 0, "{args:?}: {}", ran.stderr);
        assert!(
            ran.stdout.contains("usage: liveops"),
            "{args:?}: {}",
            ran.stdout
        );
        assert!(ran.stdout.contains("examples:"), "{args:?}: {}", ran.stdout);
    }
    let send = liveops_in(&dir, &["send", "--help"], &[], b"").stdout;
    for documented in [
        "HMAC_SECRET",
        ".env",
        "dev-secrets",
        "LIVEOPS_GATEWAY_URL",
        "LIVEOPS_HOST",
        "--key",
        "exit status",
    ] {
        assert!(send.contains(documented), "{documented}: {send}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
