//! Progression and rewards over HTTP: progress, claims at most once, receipts.

mod common;

use common::*;
use serde_json::{json, Value};

#[test]
fn progress_tracks_xp_levels_bosses_and_drops() {
    let engine = Engine::start();
    // Two different bosses: the same boss killed twice in one batch is refused by the
    // fairness guard (impossible cadence).
    let body = format!(
        "[{},{},{},{}]",
        progression("hero_1", 600),
        boss_kill("hero_1", "dragon_lord", 2500),
        boss_kill("hero_1", "goblin_king", 100),
        drop_claimed("hero_1", "epic_sword_001"),
    );
    assert_eq!(engine.post_events(&body, None).json()["accepted"], 4);
    let p = engine.get("progression", "/players/hero_1/progress").json();
    assert_eq!(p["playerId"], "hero_1");
    assert_eq!(p["season"], "1");
    assert_eq!(p["xp"], 3200);
    assert_eq!(p["level"], 4, "level = xp / 1000 + 1");
    assert_eq!(p["bossKills"], json!({"dragon_lord": 1, "goblin_king": 1}));
    assert_eq!(
        p["drops"],
        json!([{"dropId":"epic_sword_001","source":"raid_chest","claimed":false}])
    );
    assert!(p["updatedAt"].as_u64().unwrap() >= now_s() - 60);
    let r = engine.get("progression", "/players/nobody_yet/progress");
    assert_eq!((r.status, r.error_code()), (404, "player_not_found".into()));
    let r = engine.get("progression", "/players/no%20spaces/progress");
    assert_eq!((r.status, r.error_code()), (400, "invalid_field".into()));
}

#[test]
fn a_drop_is_claimed_once_with_a_verifiable_receipt() {
    let engine = Engine::start();
    let claim = r#"{"playerId":"player_123","item":"epic_sword_001"}"#;
    let r = engine.request(
        "progression",
        "POST",
        "/rewards/claim",
        &[],
        claim.as_bytes(),
    );
    assert_eq!(
        (r.status, r.error_code()),
        (401, "missing_signature".into())
    );
    let r = engine.post_signed("progression", "/rewards/claim", claim);
    assert_eq!((r.status, r.error_code()), (404, "not_earned".into()));

    assert_eq!(
        engine
            .post_events(&drop_claimed("player_123", "epic_sword_001"), None)
            .status,
        202
    );
    let r = engine.post_signed("progression", "/rewards/claim", claim);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let receipt = r.json();
    assert_eq!(receipt["playerId"], "player_123");
    assert_eq!(receipt["item"], "epic_sword_001");
    assert!(receipt["receiptId"].as_str().unwrap().starts_with("r_"));
    assert_eq!(receipt["sig"].as_str().unwrap().len(), 64);
    // The documented canonical string, signed with RECEIPT_SECRET.
    let canonical = format!(
        "liveops-receipt-v1\n{}\n{}\n{}\n{}",
        receipt["receiptId"].as_str().unwrap(),
        receipt["playerId"].as_str().unwrap(),
        receipt["item"].as_str().unwrap(),
        receipt["timestamp"]
    );
    let expected = liveops_engine::signing::Signer::new(RECEIPT_SECRET.as_bytes())
        .mac_hex(canonical.as_bytes());
    assert_eq!(receipt["sig"], expected);

    let verify = |body: &Value| {
        engine.request(
            "progression",
            "POST",
            "/rewards/verify",
            &[],
            body.to_string().as_bytes(),
        )
    };
    assert_eq!(verify(&receipt).json(), json!({"valid": true}));
    let mut forged = receipt.clone();
    forged["item"] = json!("legendary_sword");
    assert_eq!(verify(&forged).json(), json!({"valid": false}));
    let r = engine.request(
        "progression",
        "POST",
        "/rewards/verify",
        &[],
        b"{\"sig\":1}",
    );
    assert_eq!((r.status, r.error_code()), (400, "invalid_json".into()));
    // A timestamp no receipt can carry is well-formed but not genuine, as the API says;
    // one that is not an integer at all is malformed.
    for timestamp in [json!(-1), json!(1e30), json!(u64::MAX as f64 * 4.0)] {
        let mut odd = receipt.clone();
        odd["timestamp"] = timestamp.clone();
        let r = verify(&odd);
        assert_eq!(
            (r.status, r.json()),
            (200, json!({"valid": false})),
            "{timestamp}"
        );
    }
    let mut fractional = receipt.clone();
    fractional["timestamp"] = json!(1.5);
    assert_eq!(verify(&fractional).error_code(), "invalid_json");

    let again = engine.post_signed("progression", "/rewards/claim", claim);
    assert_eq!(
        (again.status, again.error_code()),
        (409, "already_claimed".into())
    );
    assert_eq!(again.json()["error"]["receiptId"], receipt["receiptId"]);
    let p = engine
        .get("progression", "/players/player_123/progress")
        .json();
    assert_eq!(p["drops"][0]["claimed"], true);
}

#[test]
fn claims_validate_and_respect_blocks() {
    let engine = Engine::start();
    for (body, code, field) in [
        ("nope", "invalid_json", None),
        (r#"{"item":"x"}"#, "missing_field", Some("playerId")),
        (
            r#"{"playerId":"a b","item":"x"}"#,
            "invalid_field",
            Some("playerId"),
        ),
        (
            r#"{"playerId":"abc","item":""}"#,
            "invalid_field",
            Some("item"),
        ),
        (
            r#"{"playerId":"abc","item":7}"#,
            "invalid_field",
            Some("item"),
        ),
        (
            r#"{"playerId":"abc","item":"x\u2028y"}"#,
            "invalid_field",
            Some("item"),
        ),
        (
            r#"{"playerId":"abc","item":"x","item":"y"}"#,
            "invalid_json",
            None,
        ),
    ] {
        let r = engine.post_signed("progression", "/rewards/claim", body);
        assert_eq!((r.status, r.error_code()), (400, code.into()), "{body}");
        assert_eq!(r.json()["error"]["field"].as_str(), field, "{body}");
    }
    assert_eq!(
        engine
            .post_events(&drop_claimed("blocked_hero", "gem"), None)
            .status,
        202
    );
    assert_eq!(
        engine
            .admin("POST", "/fairness/players/blocked_hero/block", "")
            .status,
        200
    );
    let r = engine.post_signed(
        "progression",
        "/rewards/claim",
        r#"{"playerId":"blocked_hero","item":"gem"}"#,
    );
    assert_eq!((r.status, r.error_code()), (403, "player_blocked".into()));
}

#[test]
fn concurrent_claims_mint_one_receipt() {
    let engine = Engine::start();
    assert_eq!(
        engine
            .post_events(&drop_claimed("racer_1", "crown"), None)
            .status,
        202
    );
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    engine
                        .post_signed(
                            "progression",
                            "/rewards/claim",
                            r#"{"playerId":"racer_1","item":"crown"}"#,
                        )
                        .status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        7,
        "{statuses:?}"
    );
}
