//! The idempotency store under a hostile client: one host flooding keyed requests
//! fills only its own share of the store.

mod common;

use common::*;

/// A keyed, signed `POST /events` from the client address `from`.
fn post_keyed_from(engine: &Engine, from: std::net::Ipv4Addr, body: &str, key: &str) -> Response {
    let sig = sign(body.as_bytes());
    engine.request_from(
        Some(from),
        "gateway",
        "POST",
        "/events",
        &[("X-Signature", &sig), ("Idempotency-Key", key)],
        body.as_bytes(),
    )
}

/// Issue 9, item 5: one host flooding keyed max-size batches of one valid and 999
/// invalid events fills only its share of the idempotency store; it is told honestly
/// when its share frees up, its replays stay byte-identical, and another host's keyed
/// requests still succeed.
#[test]
fn one_host_flooding_keyed_batches_cannot_lock_out_another() {
    const TTL_S: u64 = 60;
    let engine = Engine::start_with(&[
        ("RATE_LIMIT_MAX", "1000000"),
        ("IDEMP_TTL", "60s"),
        // 512 KiB per shard; each host may hold 10% of it.
        ("IDEMP_BYTES_MAX", "1048576"),
        ("IDEMP_HOST_SHARE", "10"),
    ]);
    let flooder = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let honest = std::net::Ipv4Addr::new(127, 0, 0, 1);
    let invalid = format!(
        r#"{{"type":"progression","playerId":"flooder_x","ts":{}}}"#,
        now_s()
    );
    let batch = |i: usize| {
        let mut events = vec![progression(&format!("flooder_{}", i % 10), 1)];
        events.extend(std::iter::repeat_n(invalid.clone(), 999));
        format!("[{}]", events.join(","))
    };
    let started = std::time::Instant::now();
    let first_body = batch(0);
    let first = post_keyed_from(&engine, flooder, &first_body, "flood-0");
    assert_eq!(
        first.status,
        202,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    assert_eq!(first.json()["rejected"], 999);
    let remembered = liveops_engine::idempotency::StoredResponse::compact(202, &first.body);
    eprintln!(
        "a 1-valid, 999-invalid batch answers {} bytes of JSON and is remembered in {}",
        first.body.len(),
        remembered.body.len()
    );
    assert!(remembered.body.len() * 20 < first.body.len());
    let mut refused = None;
    for i in 1..400 {
        let asked = std::time::Instant::now();
        let r = post_keyed_from(&engine, flooder, &batch(i), &format!("flood-{i}"));
        match r.status {
            202 => {}
            503 => {
                refused = Some((i, r, asked.elapsed()));
                break;
            }
            other => panic!(
                "flood request {i}: {other} {}",
                String::from_utf8_lossy(&r.body)
            ),
        }
    }
    let (accepted, refused, held) = refused.expect("the flooding host reaches its share");
    // Its first key expires seconds from now: the refusal is held for the longest
    // hold, 1 s, so that a client looping on it costs a timer, not the shard's time.
    assert!(
        held >= std::time::Duration::from_millis(900),
        "the 503 came after {held:?}, not held"
    );
    eprintln!("the flooding host's share held {accepted} such batches");
    assert!(accepted >= 10, "the share holds {accepted} such batches");
    assert_eq!(refused.error_code(), "idempotency_store_full");
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    let elapsed_s = started.elapsed().as_secs();
    assert!(
        retry_after <= TTL_S && retry_after + elapsed_s + 1 >= TTL_S,
        "Retry-After {retry_after}s is when the host's first key expires ({TTL_S}s after it, {elapsed_s}s ago)"
    );
    // Its remembered responses replay byte for byte.
    let replay = post_keyed_from(&engine, flooder, &first_body, "flood-0");
    assert_eq!(replay.status, 208);
    assert_eq!(replay.body, first.body, "the replay is the original body");
    // Another host is not affected.
    for i in 0..20 {
        let body = format!("[{},{}]", progression("honest_1", 5), invalid);
        let r = post_keyed_from(&engine, honest, &body, &format!("honest-{i}"));
        assert_eq!(
            r.status,
            202,
            "honest request {i}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    assert_eq!(
        engine
            .get("progression", "/players/honest_1/progress")
            .json()["xp"],
        100
    );
}
