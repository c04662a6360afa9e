//! `POST /events` over HTTP: signatures, validation, limits, batches, idempotency,
//! rate limits and overload.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn accepts_the_sample_events_signed_with_the_openssl_recipe() {
    if !liveops_testkit::require_tool(
        "accepts_the_sample_events_signed_with_the_openssl_recipe",
        &["openssl", "xxd"],
    ) {
        return;
    }
    let engine = Engine::start();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../sample_events");
    for name in ["progression.json", "boss_kill.json", "drop_claimed.json"] {
        let body = std::fs::read_to_string(format!("{dir}/{name}")).unwrap();
        // The seed's recipe, byte for byte: printf '%s' "$BODY" | openssl dgst -sha256 -hmac ...
        let hex = std::process::Command::new("sh")
            .arg("-c")
            .arg("printf '%s' \"$BODY\" | openssl dgst -sha256 -hmac \"$HMAC_SECRET\" -binary | xxd -p -c 256")
            .env("BODY", &body)
            .env("HMAC_SECRET", HMAC_SECRET)
            .output()
            .unwrap();
        let sig = format!("sha256={}", String::from_utf8(hex.stdout).unwrap().trim());
        let r = engine.request(
            "gateway",
            "POST",
            "/events",
            &[("X-Signature", &sig)],
            body.as_bytes(),
        );
        assert_eq!(
            r.status,
            202,
            "{name}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json()["status"], "accepted");
    }
    // The batch repeats the samples for the same player: on the engine above, its boss
    // kill would be the same dragon killed twice within a second, which the fairness
    // guard refuses (impossible cadence). A fresh engine plays it as a first session.
    let engine = Engine::start();
    let batch = std::fs::read_to_string(format!("{dir}/batch.json")).unwrap();
    let r = engine.post_events(&batch, None);
    assert_eq!(r.status, 202);
    assert_eq!(r.json()["rejected"], 0);
}

#[test]
fn signatures_are_required_and_checked() {
    let engine = Engine::start();
    let body = progression("sig_player", 10);
    let r = engine.request("gateway", "POST", "/events", &[], body.as_bytes());
    assert_eq!(
        (r.status, r.error_code()),
        (401, "missing_signature".into())
    );
    let wrong = sign(b"another body");
    let r = engine.request(
        "gateway",
        "POST",
        "/events",
        &[("X-Signature", &wrong)],
        body.as_bytes(),
    );
    assert_eq!((r.status, r.error_code()), (401, "bad_signature".into()));
    let bare_hex = sign(body.as_bytes()).replace("sha256=", "");
    let r = engine.request(
        "gateway",
        "POST",
        "/events",
        &[("X-Signature", &bare_hex)],
        body.as_bytes(),
    );
    assert_eq!(r.status, 401);
    let upper = format!("sha256={}", sign(body.as_bytes())[7..].to_uppercase());
    let r = engine.request(
        "gateway",
        "POST",
        "/events",
        &[("X-Signature", &upper)],
        body.as_bytes(),
    );
    assert_eq!(r.status, 202, "hex is accepted in either case");
    // Nothing refused was applied.
    assert_eq!(
        engine
            .get("progression", "/players/sig_player/progress")
            .json()["xp"],
        10
    );
}

#[test]
fn invalid_input_is_refused_with_code_and_field() {
    let engine = Engine::start();
    let cases: Vec<(String, u16, &str, Option<&str>)> = vec![
        ("{not json".into(), 400, "invalid_json", None),
        ("42".into(), 400, "invalid_json", None),
        ("[]".into(), 400, "empty_batch", None),
        (r#"{"type":"progression","playerId":"a b","ts":1,"payload":{"deltaXp":1}}"#.into(), 400, "invalid_field", Some("playerId")),
        (format!(r#"{{"type":"progression","playerId":"{}","ts":1,"payload":{{"deltaXp":1}}}}"#, "p".repeat(65)), 400, "invalid_field", Some("playerId")),
        (r#"{"type":"boss_kill","playerId":"abc","ts":1,"payload":{"bossId":"dra\u202egon","points":5}}"#.into(), 400, "invalid_field", Some("payload.bossId")),
        (r#"{"type":"drop_claimed","playerId":"abc","ts":1,"payload":{"dropId":"x\u200b"}}"#.into(), 400, "invalid_field", Some("payload.dropId")),
        (r#"{"type":"levelup","playerId":"abc","ts":1,"payload":{}}"#.into(), 400, "invalid_field", Some("type")),
        (r#"{"type":"progression","playerId":"abc","ts":1,"payload":{"deltaXp":-5}}"#.into(), 400, "invalid_field", Some("payload.deltaXp")),
        (r#"{"type":"progression","playerId":"abc","ts":1,"payload":{"deltaXp":"5"}}"#.into(), 400, "invalid_field", Some("payload.deltaXp")),
        (r#"{"type":"progression","playerId":"abc","ts":1,"payload":{"deltaXp":1000001}}"#.into(), 400, "invalid_field", Some("payload.deltaXp")),
        (r#"{"type":"boss_kill","playerId":"abc","ts":1,"payload":{"points":5}}"#.into(), 400, "missing_field", Some("payload.bossId")),
        (r#"{"type":"drop_claimed","playerId":"abc","ts":1,"payload":{"dropId":"x","weight":1.5}}"#.into(), 400, "invalid_field", Some("payload.weight")),
        (r#"{"type":"progression","playerId":"abc","payload":{"deltaXp":1}}"#.into(), 400, "missing_field", Some("ts")),
        (format!(r#"{{"type":"progression","playerId":"abc","ts":{},"payload":{{"deltaXp":1}}}}"#, now_s() + 3600), 400, "ts_in_future", Some("ts")),
    ];
    for (body, status, code, field) in cases {
        let r = engine.post_events(&body, None);
        assert_eq!(r.status, status, "{body}");
        let error = &r.json()["error"];
        assert_eq!(error["code"], code, "{body}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(error["field"].as_str(), field, "{body}");
    }
    assert_eq!(
        engine.get("progression", "/players/abc/progress").status,
        404,
        "nothing was applied"
    );
}

#[test]
fn offline_events_are_accepted_unless_too_old() {
    let engine = Engine::start_with(&[("TS_MAX_AGE", "1h")]);
    let old = |age: u64| {
        format!(
            r#"{{"type":"progression","playerId":"offline","ts":{},"payload":{{"deltaXp":1}}}}"#,
            now_s() - age
        )
    };
    assert_eq!(engine.post_events(&old(1800), None).status, 202);
    let r = engine.post_events(&old(7200), None);
    assert_eq!((r.status, r.error_code()), (400, "ts_too_old".into()));
}

#[test]
fn size_limits() {
    let engine = Engine::start();
    let huge = format!("[{}]", vec![progression("big_player", 1); 1001].join(","));
    assert!(huge.len() < 1 << 20);
    let r = engine.post_events(&huge, None);
    assert_eq!((r.status, r.error_code()), (400, "batch_too_large".into()));
    let padded = format!("{}{}", progression("big_player", 1), " ".repeat(1 << 20));
    let r = engine.post_events(&padded, None);
    assert_eq!((r.status, r.error_code()), (413, "body_too_large".into()));
}

/// Issue 13, item 5: a client still sending a too-large body reads its 413 rather than a
/// reset connection (the engine reads and drops the rest before answering).
#[test]
fn a_too_large_body_gets_its_413_while_the_client_is_still_sending() {
    use std::io::{Read, Write};
    let engine = Engine::start();
    for declared in [true, false] {
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", engine.port("gateway"))).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let total: usize = 6 << 20;
        let length = if declared {
            format!("Content-Length: {total}\r\n")
        } else {
            "Transfer-Encoding: chunked\r\n".to_owned()
        };
        let head = format!(
            "POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{length}\r\n"
        );
        stream.write_all(head.as_bytes()).unwrap();
        let chunk = vec![b' '; 64 << 10];
        for _ in 0..total / chunk.len() {
            if declared {
                stream.write_all(&chunk).unwrap();
            } else {
                let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
                framed.extend_from_slice(&chunk);
                framed.extend_from_slice(b"\r\n");
                stream.write_all(&framed).unwrap();
            }
        }
        if !declared {
            stream.write_all(b"0\r\n\r\n").unwrap();
        }
        let mut answer = [0u8; 64];
        let n = stream.read(&mut answer).unwrap();
        let status = String::from_utf8_lossy(&answer[..n]);
        assert!(
            status.starts_with("HTTP/1.1 413"),
            "declared length {declared}: {status:?}"
        );
    }
}

#[test]
fn batches_report_each_event() {
    let engine = Engine::start();
    let body = format!(
        "[{},{},{},{}]",
        progression("batch_a", 100),
        r#"{"type":"progression","playerId":"x/y","ts":1,"payload":{"deltaXp":1}}"#,
        boss_kill("batch_b", "dragon_lord", 2500),
        drop_claimed("batch_a", "epic_sword_001"),
    );
    let r = engine.post_events(&body, None);
    assert_eq!(r.status, 202);
    let json = r.json();
    assert_eq!(
        (json["accepted"].as_u64(), json["rejected"].as_u64()),
        (Some(3), Some(1))
    );
    let results = json["results"].as_array().unwrap();
    let statuses: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![202, 400, 202, 202]);
    assert_eq!(results[1]["index"], 1);
    assert_eq!(results[1]["error"]["field"], "playerId");
    assert_eq!(results[2]["xp"], 2500);
    assert_eq!(
        engine
            .get("progression", "/players/batch_a/progress")
            .json()["xp"],
        100
    );
}

#[test]
fn idempotency_keys_replay_refuse_and_never_apply_twice() {
    let engine = Engine::start();
    let body = progression("idem_player", 40);
    let first = engine.post_events(&body, Some("key-1"));
    assert_eq!(first.status, 202);
    let again = engine.post_events(&body, Some("key-1"));
    assert_eq!(again.status, 208);
    assert_eq!(again.body, first.body, "the original response is replayed");
    assert_eq!(again.header("idempotency-replayed"), Some("true"));
    let other = engine.post_events(&progression("idem_player", 41), Some("key-1"));
    assert_eq!(
        (other.status, other.error_code()),
        (422, "idempotency_key_reused".into())
    );
    assert_eq!(
        engine
            .get("progression", "/players/idem_player/progress")
            .json()["xp"],
        40
    );

    let bad = engine.post_events(&body, Some(&"k".repeat(256)));
    assert_eq!(
        (bad.status, bad.error_code()),
        (400, "invalid_idempotency_key".into())
    );

    // A keyed request that applied nothing releases its key: the retry runs.
    let engine_limited = Engine::start_with(&[("RATE_LIMIT_MAX", "1")]);
    assert_eq!(
        engine_limited
            .post_events(&progression("idem_rl", 1), None)
            .status,
        202
    );
    let limited = engine_limited.post_events(&progression("idem_rl", 2), Some("key-rl"));
    assert_eq!(limited.status, 429);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(
        engine_limited
            .post_events(&progression("idem_rl", 2), Some("key-rl"))
            .status,
        202
    );
}

#[test]
fn the_same_key_in_flight_gets_409() {
    let engine = Engine::start_with(&[("RATE_LIMIT_MAX", "1000000")]);
    let batch = format!(
        "[{}]",
        (0..1000)
            .map(|i| progression(&format!("inflight_{}", i % 50), 1))
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut seen_409 = false;
    for attempt in 0..30 {
        let key = format!("race-{attempt}");
        let statuses: Vec<u16> = std::thread::scope(|s| {
            let a = s.spawn(|| engine.post_events(&batch, Some(&key)).status);
            let b = s.spawn(|| engine.post_events(&batch, Some(&key)).status);
            vec![a.join().unwrap(), b.join().unwrap()]
        });
        assert!(statuses.contains(&202), "{statuses:?}");
        assert!(
            statuses.iter().all(|s| [202, 208, 409].contains(s)),
            "{statuses:?}"
        );
        if statuses.contains(&409) {
            seen_409 = true;
            break;
        }
    }
    assert!(seen_409, "a concurrent duplicate was never seen in flight");
    // Every batch was applied exactly once whatever the race.
    let xp: u64 = (0..50)
        .map(|i| {
            engine
                .get("progression", &format!("/players/inflight_{i}/progress"))
                .json()["xp"]
                .as_u64()
                .unwrap()
        })
        .sum();
    let accepted_batches = engine.get("gateway", "/metrics");
    let text = String::from_utf8(accepted_batches.body).unwrap();
    let accepted: u64 = text
        .lines()
        .find(|l| l.starts_with("liveops_events_accepted_total"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(xp, accepted);
    assert_eq!(xp % 1000, 0);
}

#[test]
fn rate_limits_answer_429_with_retry_after() {
    let engine = Engine::start_with(&[("RATE_LIMIT_MAX", "5")]);
    let batch = format!("[{}]", vec![progression("rl_player", 1); 8].join(","));
    let r = engine.post_events(&batch, None);
    assert_eq!(r.status, 202);
    let json = r.json();
    let statuses: Vec<u64> = json["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![202, 202, 202, 202, 202, 429, 429, 429]);
    assert_eq!(json["results"][5]["error"]["code"], "rate_limited");
    assert_eq!(r.header("retry-after"), Some("1"));
    let single = engine.post_events(&progression("rl_player", 1), None);
    assert_eq!(
        (single.status, single.error_code()),
        (429, "rate_limited".into())
    );
    assert_eq!(single.header("retry-after"), Some("1"));
    // Another player is not affected.
    assert_eq!(
        engine.post_events(&progression("rl_other", 1), None).status,
        202
    );
}

#[test]
fn full_shard_queues_answer_503_and_apply_nothing() {
    let engine = Engine::start_with(&[("SHARD_INBOX_MAX", "1"), ("RATE_LIMIT_MAX", "1000000")]);
    let results: Vec<(u16, Option<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..32)
            .map(|t| {
                let engine = &engine;
                s.spawn(move || {
                    (0..20)
                        .map(|_| {
                            let r = engine.post_events(&progression(&format!("load_{t}"), 1), None);
                            (r.status, r.header("retry-after").map(str::to_owned))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let overloaded: Vec<_> = results.iter().filter(|(s, _)| *s == 503).collect();
    assert!(
        !overloaded.is_empty(),
        "a one-job inbox under 32 clients overflows"
    );
    assert!(overloaded
        .iter()
        .all(|(_, retry)| retry.as_deref() == Some("1")));
    let accepted = results.iter().filter(|(s, _)| *s == 202).count() as u64;
    assert_eq!(accepted + overloaded.len() as u64, results.len() as u64);
    let xp: u64 = (0..32)
        .map(|t| {
            let r = engine.get("progression", &format!("/players/load_{t}/progress"));
            if r.status == 404 {
                0
            } else {
                r.json()["xp"].as_u64().unwrap()
            }
        })
        .sum();
    assert_eq!(xp, accepted, "a 503 applied nothing");
}

#[test]
fn wrong_method_and_unknown_routes() {
    let engine = Engine::start();
    let r = engine.get("gateway", "/events");
    assert_eq!(
        (r.status, r.error_code()),
        (405, "method_not_allowed".into())
    );
    assert_eq!(r.header("allow"), Some("POST"));
    let r = engine.get("gateway", "/leaderboard");
    assert_eq!(
        (r.status, r.error_code()),
        (404, "not_found".into()),
        "routes live on their own port"
    );
    let v: Value = engine.get("gateway", "/nope").json();
    assert_eq!(v["error"]["code"], "not_found");
}

/// The original Go services' README sample, `p1` and UUID player ids: the contract's
/// `^[A-Za-z0-9_.-]{1,64}$`.
#[test]
fn the_original_samples_player_ids_are_accepted() {
    let engine = Engine::start();
    for id in ["p1", "0f8e4a3c-5b1d-4c8e-9a7f-2d6b1e3c4f5a", "psn.user-01"] {
        let body = format!(
            r#"{{"type":"progression","playerId":"{id}","ts":1730560000,"payload":{{"deltaXp":10}}}}"#
        );
        let r = engine.post_events(&body, None);
        assert_eq!(r.status, 202, "{id}: {}", String::from_utf8_lossy(&r.body));
        let progress = engine.get("progression", &format!("/players/{id}/progress"));
        assert_eq!(progress.json()["xp"], 10, "{id}");
    }
}

/// A repeated key means another event to a parser that keeps the first copy: refused
/// with `invalid_json` naming the key, and nothing applied.
#[test]
fn repeated_keys_are_refused_and_named() {
    let engine = Engine::start();
    for (body, key) in [
        (
            r#"{"type":"progression","playerId":"dup_a","ts":1,"payload":{"deltaXp":1,"deltaXp":1000000}}"#,
            "deltaXp",
        ),
        (
            r#"{"type":"progression","playerId":"dup_a","ts":1,"type":"boss_kill","payload":{"deltaXp":1,"bossId":"b","points":9}}"#,
            "type",
        ),
        (
            r#"[{"type":"progression","playerId":"dup_a","ts":1,"payload":{"deltaXp":1,"meta":{"k":1,"k":2}}}]"#,
            "k",
        ),
    ] {
        let r = engine.post_events(body, None);
        assert_eq!(
            (r.status, r.error_code()),
            (400, "invalid_json".into()),
            "{body}"
        );
        let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(
            message.contains(&format!("duplicate key \"{key}\"")),
            "{message}"
        );
    }
    assert_eq!(
        engine.get("progression", "/players/dup_a/progress").status,
        404
    );
}

// --- replays (issue 11) ---

/// An event body without an `eventId`, as a client that does not know the rule sends it.
fn bare_progression(player: &str, xp: u64) -> String {
    format!(
        r#"{{"type":"progression","playerId":"{player}","ts":{},"payload":{{"deltaXp":{xp}}}}}"#,
        now_s()
    )
}

fn xp_of(engine: &Engine, player: &str) -> Value {
    engine
        .get("progression", &format!("/players/{player}/progress"))
        .json()["xp"]
        .clone()
}

#[test]
fn a_body_re_sent_verbatim_is_refused_and_not_applied_twice() {
    // Refusals only: the block that repeated replays earn is tested below.
    let engine = Engine::start_with(&[("REPLAY_BLOCK_AFTER", "0")]);
    let body = bare_progression("replayed", 10);
    assert_eq!(engine.post_events(&body, None).status, 202);
    let again = engine.post_events(&body, None);
    assert_eq!(
        (again.status, again.error_code()),
        (409, "replayed_event".into())
    );
    assert!(
        again.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("eventId"),
        "the refusal names the way out: {:?}",
        again.json()
    );
    // The Idempotency-Key is not signed: a fresh one does not make the body new.
    let keyed = engine.post_events(&body, Some("fresh-key"));
    assert_eq!(
        (keyed.status, keyed.error_code()),
        (409, "replayed_event".into())
    );
    assert_eq!(xp_of(&engine, "replayed"), 10);

    // Two identical events, told apart by their eventIds, are both applied.
    let with_id = |id: &str| body.replace("}}", &format!(r#"}},"eventId":"{id}"}}"#));
    assert_eq!(engine.post_events(&with_id("a"), None).status, 202);
    assert_eq!(engine.post_events(&with_id("b"), None).status, 202);
    assert_eq!(
        engine.post_events(&with_id("b"), None).error_code(),
        "replayed_event"
    );
    assert_eq!(xp_of(&engine, "replayed"), 30);

    // Two identical events of one batch are two events; the batch re-sent applies
    // only what was not applied the first time.
    let batch = format!("[{body},{body}]");
    let first = engine.post_events(&batch, None).json();
    assert_eq!(first["accepted"], 2, "{first}");
    let second = engine.post_events(&batch, None);
    assert_eq!(second.status, 202);
    let second = second.json();
    assert_eq!(
        (&second["accepted"], &second["rejected"]),
        (&0.into(), &2.into())
    );
    for result in second["results"].as_array().unwrap() {
        assert_eq!(result["status"], 409);
        assert_eq!(result["error"]["code"], "replayed_event");
    }
    assert_eq!(xp_of(&engine, "replayed"), 50);
    let metrics = engine.get("gateway", "/metrics");
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("dropped_events_total{reason=\"replay\"} 5"),
        "{text}"
    );
}

#[test]
fn a_body_is_remembered_for_the_replay_window_only() {
    let engine = Engine::start_with(&[("REPLAY_WINDOW_SEC", "1")]);
    let body = bare_progression("windowed", 7);
    assert_eq!(engine.post_events(&body, None).status, 202);
    assert_eq!(engine.post_events(&body, None).status, 409);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(engine.post_events(&body, None).status, 202);
    assert_eq!(xp_of(&engine, "windowed"), 14);
}

#[test]
fn a_body_replayed_again_and_again_blocks_its_player() {
    let engine = Engine::start();
    let body = boss_kill("replayer", "dragon_lord", 2500);
    assert_eq!(engine.post_events(&body, None).status, 202);
    assert_eq!(engine.post_events(&body, None).status, 409);
    let blocked = engine.post_events(&body, None);
    assert_eq!(
        (blocked.status, blocked.error_code()),
        (403, "player_blocked".into())
    );
    let standing = engine.get("fairness", "/fairness/players/replayer").json();
    assert_eq!(standing["blocked"], true, "{standing}");
    let block = &standing["recentAudit"][0];
    assert_eq!(
        (&block["detail"]["detector"], &block["detail"]["measure"]),
        (&"replay".into(), &"replays".into()),
        "{block}"
    );
}

/// The remembered bodies survive a restart within the window: from the log, and from a
/// checkpoint (taken after a second here).
#[test]
fn a_replay_is_refused_after_a_restart_within_the_window() {
    let dir = temp_dir();
    let env = [("CHECKPOINT_INTERVAL", "1s")];
    let mut engine = Engine::start_in(&dir, &env);
    let logged = bare_progression("restarted", 10);
    let checkpointed = bare_progression("restarted", 20);
    assert_eq!(engine.post_events(&checkpointed, None).status, 202);
    // A checkpoint is due a second after a change; the next tick takes it.
    std::thread::sleep(std::time::Duration::from_millis(1600));
    assert_eq!(engine.post_events(&logged, None).status, 202);
    engine.kill9();
    let engine = Engine::start_in(&dir, &env);
    for body in [&logged, &checkpointed] {
        let again = engine.post_events(body, None);
        assert_eq!(
            (again.status, again.error_code()),
            (409, "replayed_event".into())
        );
    }
    assert_eq!(xp_of(&engine, "restarted"), 30);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_full_replay_window_refuses_new_events_with_503_and_retry_after() {
    let engine = Engine::start_with(&[("SHARDS", "1"), ("REPLAY_ENTRIES_MAX", "1000")]);
    let first = bare_progression("filler_0", 1);
    assert_eq!(engine.post_events(&first, None).status, 202);
    for i in 1..1000 {
        let r = engine.post_events(&bare_progression(&format!("filler_{i}"), 1), None);
        assert_eq!(r.status, 202, "{i}");
    }
    let body = bare_progression("one_too_many", 1);
    let full = engine.post_events(&body, None);
    assert_eq!(
        (full.status, full.error_code()),
        (503, "replay_window_full".into())
    );
    let retry_after: u64 = full.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // A replay is still told apart from a new event.
    let replay = engine.post_events(&first, None);
    assert_eq!(
        (replay.status, replay.error_code()),
        (409, "replayed_event".into())
    );
    assert_eq!(
        engine
            .get("progression", "/players/one_too_many/progress")
            .status,
        404
    );
}
