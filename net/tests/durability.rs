//! The write-ahead log end to end: restarts keep every acknowledged change, SIGKILL
//! under load loses nothing acknowledged and applies nothing twice, the operator tools
//! name damage, corruption stops a strict start, and a changed SHARDS re-shards.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use serde_json::Value;

const NO_RATE_LIMIT: (&str, &str) = ("RATE_LIMIT_MAX", "1000000");
/// The load's players send as fast as the engine answers, far over a human pace: lift
/// the fairness guard's rate-of-gain threshold too, or it would block them.
const NO_GAIN_LIMIT: (&str, &str) = ("GAIN_RATE_MAX", "1000");

fn segments(dir: &Path, shard: usize) -> Vec<PathBuf> {
    let shard_dir = dir.join(format!("data/gen-1/shard-{shard}"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&shard_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}

/// The state a reader sees of `players`, to compare across restarts.
fn snapshot(engine: &Engine, players: &[String]) -> Vec<String> {
    let mut out: Vec<String> = players
        .iter()
        .map(|p| {
            String::from_utf8(
                engine
                    .get("progression", &format!("/players/{p}/progress"))
                    .body,
            )
            .unwrap()
        })
        .collect();
    for window in ["daily", "weekly", "seasonal"] {
        let page = engine
            .get(
                "leaderboard",
                &format!("/leaderboard?window={window}&limit=1000"),
            )
            .json();
        out.push(page["entries"].to_string());
    }
    out
}

#[test]
fn a_restart_keeps_every_acknowledged_change() {
    let dir = temp_dir();
    let mut engine = Engine::start_in(&dir, &[]);
    let body = format!(
        "[{},{},{}]",
        progression("keeper_1", 1500),
        boss_kill("keeper_1", "dragon_lord", 2500),
        drop_claimed("keeper_1", "crown")
    );
    assert_eq!(
        engine.post_events(&body, Some("batch-key")).json()["accepted"],
        3
    );
    // Built once: a retry must send the same bytes, whatever second it runs in.
    let single = progression("keeper_2", 700);
    assert_eq!(engine.post_events(&single, Some("single-key")).status, 202);
    let receipt = engine
        .post_signed(
            "progression",
            "/rewards/claim",
            r#"{"playerId":"keeper_1","item":"crown"}"#,
        )
        .json();
    assert_eq!(
        engine
            .admin(
                "POST",
                "/fairness/players/keeper_3/block",
                r#"{"seconds":3600,"reason":"chargeback"}"#
            )
            .status,
        200
    );
    let players = vec!["keeper_1".to_owned(), "keeper_2".to_owned()];
    let before = snapshot(&engine, &players);
    let (status, _) = engine.stop("TERM", Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    let (code, report) = wal_tool(&dir, "verify");
    assert_eq!(code, 0, "a normal stop leaves a clean log: {report}");
    assert!(
        report.contains("shard 0") && report.contains("clean"),
        "{report}"
    );

    let engine = Engine::start_in(&dir, &[]);
    assert_eq!(snapshot(&engine, &players), before);
    let again = engine.post_signed(
        "progression",
        "/rewards/claim",
        r#"{"playerId":"keeper_1","item":"crown"}"#,
    );
    assert_eq!(
        (again.status, again.json()["error"]["receiptId"].clone()),
        (409, receipt["receiptId"].clone())
    );
    assert_eq!(engine.post_events(&body, Some("batch-key")).status, 208);
    assert_eq!(engine.post_events(&single, Some("single-key")).status, 208);
    let blocked = engine.post_events(&progression("keeper_3", 1), None);
    assert_eq!(
        (blocked.status, blocked.json()["error"]["reason"].clone()),
        (403, Value::from("chargeback"))
    );
    let audit = engine
        .get("fairness", "/fairness/audit?playerId=keeper_3")
        .json();
    assert!(audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["kind"] == "block"));
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One client: sequential single events for its own player, each with its own key.
struct Client {
    player: String,
    /// (key, body) of each acknowledged request.
    acked: Vec<(String, String)>,
    /// The request in flight when the engine died, if any.
    in_flight: Option<(String, String)>,
}

fn load_until_killed(
    engine: &Engine,
    clients: usize,
    round: usize,
    stop: &AtomicBool,
) -> Vec<Client> {
    let port = engine.port("gateway");
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                s.spawn(move || {
                    let mut client = Client { player: format!("crash_{c:02}"), acked: Vec::new(), in_flight: None };
                    for n in 0.. {
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        let key = format!("r{round}-c{c}-n{n}");
                        let body = progression(&client.player, 1);
                        client.in_flight = Some((key.clone(), body.clone()));
                        let sig = sign(body.as_bytes());
                        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { break };
                        let head = format!(
                            "POST /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Signature: {sig}\r\nIdempotency-Key: {key}\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if stream.write_all(head.as_bytes()).is_err() {
                            break;
                        }
                        let mut raw = Vec::new();
                        let _ = stream.read_to_end(&mut raw);
                        if raw.is_empty() {
                            break; // the engine died with this request in flight
                        }
                        let status = parse_response(&raw).status;
                        assert_eq!(status, 202, "{}", String::from_utf8_lossy(&raw));
                        client.acked.push((key, body));
                        client.in_flight = None;
                    }
                    client
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_event_and_applies_none_twice() {
    let dir = temp_dir();
    let mut acked_total: HashMap<String, u64> = HashMap::new();
    for round in 0..3 {
        let mut engine = Engine::start_in(&dir, &[NO_RATE_LIMIT, NO_GAIN_LIMIT]);
        let stop = AtomicBool::new(false);
        let clients = std::thread::scope(|s| {
            let load = s.spawn(|| load_until_killed(&engine, 8, round, &stop));
            std::thread::sleep(Duration::from_millis(400));
            // SIGKILL mid-load: no drain, no final flush.
            Command::kill9(&engine);
            stop.store(true, Ordering::Release);
            load.join().unwrap()
        });
        engine.kill9();
        let engine = Engine::start_in(&dir, &[NO_RATE_LIMIT, NO_GAIN_LIMIT]);
        let mut acked_this_round = 0;
        for client in &clients {
            let acked = acked_total.entry(client.player.clone()).or_default();
            *acked += client.acked.len() as u64;
            acked_this_round += client.acked.len();
            let r = engine.get(
                "progression",
                &format!("/players/{}/progress", client.player),
            );
            let xp = if r.status == 404 {
                0
            } else {
                r.json()["xp"].as_u64().unwrap()
            };
            // Every acknowledged event is there; at most the one in flight besides.
            let in_flight = u64::from(client.in_flight.is_some());
            assert!(
                xp >= *acked && xp <= *acked + in_flight,
                "{}: xp {xp}, acked {acked}, in flight {in_flight}",
                client.player
            );
            // Retrying acknowledged requests is answered, not applied.
            for (key, body) in client.acked.iter().rev().take(3) {
                assert_eq!(engine.post_events(body, Some(key)).status, 208, "{key}");
            }
            // The in-flight request, retried with its key, ends up applied exactly once.
            if let Some((key, body)) = &client.in_flight {
                let r = engine.post_events(body, Some(key));
                assert!([202, 208].contains(&r.status), "{key}: {}", r.status);
                *acked += 1;
            }
            let xp = engine
                .get(
                    "progression",
                    &format!("/players/{}/progress", client.player),
                )
                .json()["xp"]
                .as_u64()
                .unwrap();
            assert_eq!(xp, *acked, "{}", client.player);
        }
        assert!(
            acked_this_round > 50,
            "round {round}: only {acked_this_round} acknowledged"
        );
        drop(engine);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `Command::kill9` for an engine borrowed by the load threads.
struct Command;

impl Command {
    fn kill9(engine: &Engine) {
        let pid = engine.pid();
        std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
    }
}

#[test]
fn retried_acknowledged_requests_answer_208_after_a_crash() {
    let dir = temp_dir();
    let mut engine = Engine::start_in(&dir, &[NO_RATE_LIMIT, NO_GAIN_LIMIT]);
    let bodies: Vec<(String, String)> = (0..20)
        .map(|i| {
            (
                format!("k208-{i}"),
                progression(&format!("replay_{}", i % 4), 5),
            )
        })
        .collect();
    for (key, body) in &bodies {
        assert_eq!(engine.post_events(body, Some(key)).status, 202);
    }
    engine.kill9();
    let engine = Engine::start_in(&dir, &[NO_RATE_LIMIT, NO_GAIN_LIMIT]);
    for (key, body) in &bodies {
        let r = engine.post_events(body, Some(key));
        assert_eq!(r.status, 208, "{key}");
        assert_eq!(r.json()["status"], "accepted");
    }
    for i in 0..4 {
        assert_eq!(
            engine
                .get("progression", &format!("/players/replay_{i}/progress"))
                .json()["xp"],
            25
        );
    }
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 9, item 2: a key used, expired, used again and replayed keeps answering 208
/// across a restart and a crash; its events are applied once per use.
#[test]
fn a_key_reused_after_it_expired_is_not_applied_again_after_a_restart() {
    let dir = temp_dir();
    // The same bytes again after the key expired: a replay, unless the replay window
    // is over too.
    let env = [
        NO_RATE_LIMIT,
        NO_GAIN_LIMIT,
        ("IDEMP_TTL", "4s"),
        ("REPLAY_WINDOW_SEC", "1"),
    ];
    let mut engine = Engine::start_in(&dir, &env);
    let body = progression("reuser_1", 10);
    let xp = |engine: &Engine| {
        engine
            .get("progression", "/players/reuser_1/progress")
            .json()["xp"]
            .clone()
    };
    assert_eq!(engine.post_events(&body, Some("K")).status, 202);
    std::thread::sleep(Duration::from_millis(4_300));
    let second = engine.post_events(&body, Some("K"));
    assert_eq!(second.status, 202, "expired: a new use");
    assert_eq!(engine.post_events(&body, Some("K")).status, 208);
    let (status, _) = engine.stop("TERM", Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    let mut engine = Engine::start_in(&dir, &env);
    let after_restart = engine.post_events(&body, Some("K"));
    let text = |r: &Response| (r.status, String::from_utf8_lossy(&r.body).into_owned());
    assert_eq!(
        text(&after_restart),
        (208, text(&second).1),
        "the latest use's response, after a restart"
    );
    assert_eq!(xp(&engine), 20);
    engine.kill9();
    let engine = Engine::start_in(&dir, &env);
    assert_eq!(
        engine.post_events(&body, Some("K")).status,
        208,
        "and after a crash"
    );
    assert_eq!(xp(&engine), 20);
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_torn_tail_is_named_by_verify_and_cut_by_recovery() {
    let dir = temp_dir();
    let mut engine = Engine::start_in(&dir, &[("SHARDS", "1")]);
    for i in 0..10 {
        assert_eq!(
            engine
                .post_events(&progression("torn_player", i + 1), None)
                .status,
            202
        );
    }
    engine.stop("TERM", Duration::from_secs(5));
    // What a crash in the middle of a write leaves: part of a record.
    let segment = segments(&dir, 0).pop().unwrap();
    let good_len = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap()
        .write_all(&[0x2a, 0, 0, 0, 7, 7, 7])
        .unwrap();
    let (code, report) = wal_tool(&dir, "verify");
    assert_eq!(code, 1, "{report}");
    let expected = format!(
        "TornTail at {} offset {good_len}",
        segment.strip_prefix(&dir).unwrap().display()
    );
    assert!(
        report.contains(&expected),
        "expected {expected:?} in {report}"
    );

    let mut engine = Engine::start_in(&dir, &[("SHARDS", "1")]);
    let logs = engine.stderr.lock().unwrap().join("\n");
    assert!(logs.contains("cut a torn tail"), "{logs}");
    assert_eq!(
        engine
            .get("progression", "/players/torn_player/progress")
            .json()["xp"],
        55
    );
    engine.stop("TERM", Duration::from_secs(5));
    assert_eq!(wal_tool(&dir, "verify").0, 0);
    let (_, dump) = wal_tool(&dir, "dump");
    assert_eq!(
        dump.lines()
            .filter(|l| l.contains("\"eventAccepted\""))
            .count(),
        10
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn corruption_before_the_tail_stops_a_strict_start() {
    let dir = temp_dir();
    let mut engine = Engine::start_in(&dir, &[("SHARDS", "1")]);
    for i in 0..10 {
        assert_eq!(
            engine
                .post_events(&progression("corrupt_player", i + 1), None)
                .status,
            202
        );
    }
    engine.stop("TERM", Duration::from_secs(5));
    let segment = segments(&dir, 0).pop().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[30] ^= 0xff; // inside the first record's payload
    std::fs::write(&segment, &bytes).unwrap();

    let out = spawn_in(&dir, &[("SHARDS", "1")])
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("recovery of shard 0")
            && stderr.contains(&segment.file_name().unwrap().to_string_lossy().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("at byte 0"), "names the offset: {stderr}");

    let engine = Engine::start_in(&dir, &[("SHARDS", "1"), ("RECOVERY_MODE", "truncate")]);
    let logs = engine.stderr.lock().unwrap().join("\n");
    assert!(
        logs.contains("RECOVERY_MODE=truncate cut corruption"),
        "{logs}"
    );
    assert_eq!(
        engine
            .get("progression", "/players/corrupt_player/progress")
            .status,
        404,
        "everything from the corruption on is gone"
    );
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_changed_shard_count_reshards_the_data() {
    let dir = temp_dir();
    let players: Vec<String> = (0..40).map(|i| format!("reshard_{i:02}")).collect();
    let mut engine = Engine::start_in(&dir, &[("SHARDS", "2"), NO_RATE_LIMIT, NO_GAIN_LIMIT]);
    let batch: Vec<String> = players
        .iter()
        .enumerate()
        .map(|(i, p)| progression(p, 10 * (i as u64 % 7) + 5))
        .collect();
    assert_eq!(
        engine
            .post_events(&format!("[{}]", batch.join(",")), Some("reshard-key"))
            .json()["accepted"],
        40
    );
    assert_eq!(
        engine
            .post_events(&drop_claimed("reshard_03", "gem"), None)
            .status,
        202
    );
    let before = snapshot(&engine, &players);
    engine.stop("TERM", Duration::from_secs(5));
    for shards in ["3", "1", "2"] {
        let mut engine =
            Engine::start_in(&dir, &[("SHARDS", shards), NO_RATE_LIMIT, NO_GAIN_LIMIT]);
        assert_eq!(snapshot(&engine, &players), before, "SHARDS={shards}");
        assert_eq!(
            engine
                .post_events(&format!("[{}]", batch.join(",")), Some("reshard-key"))
                .status,
            208
        );
        engine.stop("TERM", Duration::from_secs(5));
        assert_eq!(wal_tool(&dir, "verify").0, 0);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
