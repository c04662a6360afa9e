//! The data directory belongs to one engine at a time, a start that cannot recover it
//! says so and exits, and generated dev secrets survive restarts.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::*;
use liveops_net::layout::DataDirLock;
use liveops_net::server::{Server, StartError};
use serde_json::{json, Value};

/// `liveops wal verify` on `dir/data`: exit code and stderr.
fn verify_stderr(dir: &Path) -> (i32, String) {
    let out = wal_tool_output(dir, "verify");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_second_engine_on_the_same_data_directory_exits_1_naming_the_first() {
    let dir = temp_dir();
    let mut first = Engine::start_in(&dir, &[]);
    assert_eq!(
        first
            .post_events(&progression("lock_holder", 10), None)
            .status,
        202
    );

    let Exited { code, stderr, .. } = exit_within(spawn_in(&dir, &[]), Duration::from_secs(20));
    assert_eq!(code, 1, "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("is in use by another liveops process"))
        .unwrap_or_else(|| panic!("no refusal line: {stderr}"));
    assert!(
        line.contains(&format!("pid {}", first.pid())),
        "names the holder: {line}"
    );
    assert!(
        !stderr.contains("listening service="),
        "refused before serving: {stderr}"
    );

    let (code, stderr) = verify_stderr(&dir);
    assert_eq!(
        code, 1,
        "the offline tools refuse a live directory: {stderr}"
    );
    assert!(stderr.contains(&format!("pid {}", first.pid())), "{stderr}");

    // The first engine is untouched, and its death (however it dies) frees the directory.
    assert_eq!(
        first
            .get("progression", "/players/lock_holder/progress")
            .status,
        200
    );
    first.kill9();
    let second = Engine::start_in(&dir, &[]);
    let progress = second.get("progression", "/players/lock_holder/progress");
    assert_eq!(progress.status, 200);
    assert_eq!(progress.json()["xp"], 10);
    assert_eq!(
        std::fs::read_to_string(dir.join("data/LOCK"))
            .unwrap()
            .trim(),
        second.pid().to_string(),
        "the lock file names its holder"
    );
    drop(second);
    assert_eq!(verify_stderr(&dir).0, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_shard_that_cannot_be_recovered_stops_the_start_with_its_reason() {
    let dir = temp_dir();
    let mut engine = Engine::start_in(&dir, &[]);
    engine.stop("TERM", Duration::from_secs(5));
    let shard = dir.join("data/gen-1/shard-1");
    std::fs::remove_dir_all(&shard).unwrap();
    std::fs::write(&shard, b"not a directory").unwrap();

    let Exited { code, stderr, .. } = exit_within(spawn_in(&dir, &[]), Duration::from_secs(10));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("recovery of shard 1") && stderr.contains("Not a directory"),
        "{stderr}"
    );
    assert!(!stderr.contains(" ready"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Until the process exits after a failed recovery, nothing claims it is still starting.
#[test]
fn a_failed_recovery_is_not_reported_as_still_starting() {
    let dir = temp_dir();
    let data_dir = dir.join("data");
    let vars: HashMap<String, String> = [
        ("BIND_ADDR", "127.0.0.1"),
        ("PORT", "0"),
        ("FAIRNESS_PORT", "0"),
        ("LEADERBOARD_PORT", "0"),
        ("PROGRESSION_PORT", "0"),
        ("SHARDS", "2"),
        ("HMAC_SECRET", HMAC_SECRET),
        ("RECEIPT_SECRET", RECEIPT_SECRET),
        ("DATA_DIR", data_dir.to_str().unwrap()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = liveops_net::config::from_vars(&vars, Vec::new).unwrap();
    std::fs::create_dir_all(data_dir.join("gen-1/shard-0")).unwrap();
    std::fs::write(
        data_dir.join("LAYOUT"),
        "liveops-layout 1\ngeneration 1\nshards 2\n",
    )
    .unwrap();
    std::fs::write(data_dir.join("gen-1/shard-1"), b"not a directory").unwrap();

    let server = Server::start(&config, DataDirLock::acquire(&data_dir).unwrap()).unwrap();
    let error = server.wait_ready().unwrap_err();
    assert!(
        matches!(error, StartError::Recovery { shard: 1, .. }),
        "{error}"
    );
    for (_, addr) in &server.addrs {
        let ready = request(addr.port(), "GET", "/readyz", &[], b"");
        assert_eq!(ready.status, 503);
        assert_eq!(ready.error_code(), "storage_failed", "{}", ready.json());
        let work = request(addr.port(), "GET", "/players/someone/progress", &[], b"");
        assert_eq!(work.error_code(), "storage_failed");
    }
    server.shutdown(Duration::from_secs(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dev_secrets_are_kept_in_the_data_directory_and_receipts_verify_after_a_restart() {
    let dir = temp_dir();
    // RECEIPT_SECRET unset: generated; HMAC_SECRET stays the harness's, to sign with.
    let unset = [("RECEIPT_SECRET", "")];
    let mut engine = Engine::start_in(&dir, &unset);
    let path = dir.join("data/dev-secrets/RECEIPT_SECRET");
    let secret = std::fs::read_to_string(&path).unwrap();
    assert!(secret.len() >= 32);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let logs = engine.stderr.lock().unwrap().join("\n");
    assert!(
        logs.contains(&format!("export RECEIPT_SECRET={secret}")),
        "the first start prints the export line: {logs}"
    );
    assert_eq!(
        engine
            .post_events(&drop_claimed("keeper_1", "epic_sword_001"), None)
            .status,
        202
    );
    let claim = engine.post_signed(
        "progression",
        "/rewards/claim",
        r#"{"playerId":"keeper_1","item":"epic_sword_001"}"#,
    );
    assert_eq!(claim.status, 200);
    let receipt: Value = claim.json();
    engine.stop("TERM", Duration::from_secs(5));

    let engine = Engine::start_in(&dir, &unset);
    let logs = engine.stderr.lock().unwrap().join("\n");
    assert!(
        !logs.contains(&secret),
        "a later start does not print the secret again: {logs}"
    );
    assert!(
        logs.contains(&format!("export RECEIPT_SECRET=$(cat {})", path.display())),
        "it says where the secret is kept: {logs}"
    );
    let verify = engine.request(
        "progression",
        "POST",
        "/rewards/verify",
        &[("Content-Type", "application/json")],
        receipt.to_string().as_bytes(),
    );
    assert_eq!(verify.status, 200);
    assert_eq!(
        verify.json(),
        json!({"valid": true}),
        "a receipt of the previous run"
    );
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}
