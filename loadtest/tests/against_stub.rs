//! Runs the generator against a small in-test HTTP server on 127.0.0.1:0 and checks what
//! it counted and measured.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use liveops_engine::signing::Signer;
use liveops_loadtest::{run, RunConfig};

const SECRET: &str = "loadtest-secret-loadtest-secret-loadtest";

/// How the stub answers.
#[derive(Clone, Default)]
struct Behaviour {
    /// Every response waits this long.
    delay: Duration,
    /// The n-th write (1-based) stalls the server: every request answered in the next
    /// `stall` waits until the stall ends.
    stall_at: Option<u64>,
    stall: Duration,
}

struct Stub {
    addr: SocketAddr,
    writes: Arc<AtomicU64>,
    bad_signatures: Arc<AtomicU64>,
}

/// Starts the stub on its own thread and runtime: writes answer 202 and 429 alternately
/// (a batch: 202 with all but one accepted), top reads 200, rank reads 404. Wrong
/// signatures get 401.
fn start_stub(behaviour: Behaviour) -> Stub {
    let writes = Arc::new(AtomicU64::new(0));
    let bad_signatures = Arc::new(AtomicU64::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    let (w, b) = (writes.clone(), bad_signatures.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let stall_until: Arc<Mutex<Option<tokio::time::Instant>>> = Arc::new(Mutex::new(None));
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (w, b, behaviour, stall_until) =
                    (w.clone(), b.clone(), behaviour.clone(), stall_until.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (w, b, behaviour, stall_until) =
                            (w.clone(), b.clone(), behaviour.clone(), stall_until.clone());
                        async move {
                            Ok::<_, Infallible>(answer(req, &w, &b, &behaviour, &stall_until).await)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    Stub {
        addr: rx.recv().unwrap(),
        writes,
        bad_signatures,
    }
}

async fn answer(
    req: Request<Incoming>,
    writes: &AtomicU64,
    bad_signatures: &AtomicU64,
    behaviour: &Behaviour,
    stall_until: &Mutex<Option<tokio::time::Instant>>,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let signature = req
        .headers()
        .get("x-signature")
        .map(|v| v.as_bytes().to_vec());
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let mut n = 0;
    if method == Method::POST {
        n = writes.fetch_add(1, Ordering::SeqCst) + 1;
        if behaviour.stall_at == Some(n) {
            *stall_until.lock().unwrap() = Some(tokio::time::Instant::now() + behaviour.stall);
        }
    }
    if !behaviour.delay.is_zero() {
        tokio::time::sleep(behaviour.delay).await;
    }
    let until = *stall_until.lock().unwrap();
    if let Some(until) = until {
        tokio::time::sleep_until(until).await;
    }
    let reply = |status: StatusCode, body: String| {
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    match (method, path.as_str()) {
        (Method::POST, "/events") => {
            if Signer::new(SECRET.as_bytes())
                .verify_header(signature.as_deref(), &body)
                .is_err()
            {
                bad_signatures.fetch_add(1, Ordering::SeqCst);
                return reply(StatusCode::UNAUTHORIZED, "{}".into());
            }
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
            if let Some(events) = value.as_array() {
                let accepted = events.len() - 1;
                reply(
                    StatusCode::ACCEPTED,
                    format!(r#"{{"accepted":{accepted},"rejected":1,"results":[]}}"#),
                )
            } else if n & 1 == 0 {
                reply(StatusCode::ACCEPTED, r#"{"status":"accepted"}"#.into())
            } else {
                reply(StatusCode::TOO_MANY_REQUESTS, "{}".into())
            }
        }
        (Method::GET, "/leaderboard") => reply(StatusCode::OK, r#"{"entries":[]}"#.into()),
        (Method::GET, p) if p.starts_with("/leaderboard/players/lt_") => {
            reply(StatusCode::NOT_FOUND, "{}".into())
        }
        _ => reply(StatusCode::BAD_REQUEST, "{}".into()),
    }
}

/// The timing tests measure the wall-clock latency of a generator and a stub that share
/// the machine's cores with each other: run them one at a time, so that each measures
/// the generator rather than its neighbours (in parallel on 2 cores they missed their
/// bounds).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TIMING: Mutex<()> = Mutex::new(());
    TIMING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn config(stub: &Stub, rate: f64, duration_s: f64) -> RunConfig {
    let mut cfg = RunConfig::new(SECRET, rate, duration_s);
    cfg.host = stub.addr.ip();
    cfg.port = stub.addr.port();
    cfg.read_port = stub.addr.port();
    cfg.connections = 8;
    cfg.read_connections = 4;
    cfg
}

#[test]
fn counts_statuses_and_classes_at_the_asked_rate() {
    let _serial = one_at_a_time();
    let stub = start_stub(Behaviour::default());
    let mut cfg = config(&stub, 2000.0, 1.0);
    cfg.warmup_s = 0.25;
    cfg.read_ratio = 0.2;
    cfg.idempotency_keys = true;
    let started = Instant::now();
    let r = run(&cfg).unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1200), "{took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");

    assert_eq!(stub.bad_signatures.load(Ordering::SeqCst), 0);
    // Warm-up requests were sent but not recorded.
    assert_eq!(stub.writes.load(Ordering::SeqCst), 1600 + 400);
    assert_eq!(r.scheduled, 2000);
    assert_eq!(r.completed, 2000, "{r:?}");

    let w = &r.classes["write"];
    assert_eq!(w.scheduled, 1600);
    assert_eq!(w.completed, 1600);
    let (accepted, limited) = (w.status["202"], w.status["429"]);
    assert_eq!(accepted + limited, 1600);
    assert!((700..=900).contains(&accepted), "{:?}", w.status);
    assert_eq!(w.ok, accepted);
    assert_eq!(w.errors, limited);
    assert_eq!(w.events_sent, 1600);
    assert_eq!(w.events_accepted, accepted);
    assert_eq!(w.latency_ms.count, 1600);
    assert!(w.latency_ms.p50 > 0.0 && w.latency_ms.p50 <= w.latency_ms.p99);
    assert!(w.latency_ms.p99 <= w.latency_ms.max);
    assert!(w.latency_ms.max < 1000.0, "{:?}", w.latency_ms);

    let top = &r.classes["read_top"];
    let rank = &r.classes["read_rank"];
    assert_eq!(
        (top.scheduled, top.completed, top.ok, top.errors),
        (200, 200, 200, 0)
    );
    assert_eq!(top.status["200"], 200);
    assert_eq!((rank.scheduled, rank.completed, rank.ok), (200, 200, 200));
    assert_eq!((rank.not_found, rank.errors), (200, 0));
    assert_eq!(rank.latency_ms.count, 200);

    assert_eq!(
        r.status["202"] + r.status["429"] + r.status["200"] + r.status["404"],
        2000
    );
    assert_eq!(r.errors, limited);
    assert!((r.error_rate - limited as f64 / 2000.0).abs() < 1e-9);
    assert!(
        r.throughput_rps > 1500.0 && r.throughput_rps <= 2000.0,
        "{}",
        r.throughput_rps
    );
    assert!(!r.generator.fell_behind, "{:?}", r.generator);
    assert_eq!(r.generator.connect_errors, 0);

    // The JSON carries the documented fields.
    let json = serde_json::to_value(&r).unwrap();
    for field in [
        "scheduled",
        "status",
        "classes",
        "generator",
        "events_per_s",
        "elapsed_s",
    ] {
        assert!(json.get(field).is_some(), "{field}");
    }
    for field in ["p50", "p90", "p95", "p99", "p99_9", "max"] {
        assert!(
            json["classes"]["write"]["latency_ms"].get(field).is_some(),
            "{field}"
        );
    }
}

#[test]
fn batches_count_accepted_events() {
    let _serial = one_at_a_time();
    let stub = start_stub(Behaviour::default());
    let mut cfg = config(&stub, 200.0, 1.0);
    cfg.batch = 50;
    let r = run(&cfg).unwrap();
    assert_eq!(stub.bad_signatures.load(Ordering::SeqCst), 0);
    let w = &r.classes["write"];
    assert_eq!(w.status["202"], 200);
    assert_eq!(w.events_sent, 200 * 50);
    assert_eq!(w.events_accepted, 200 * 49);
    assert!(
        (r.events_per_s - 9800.0).abs() < 500.0,
        "{}",
        r.events_per_s
    );
}

#[test]
fn a_stall_is_measured_for_every_request_it_delays() {
    let _serial = one_at_a_time();
    // The 200th write stalls the server for 300 ms. At 1000 requests/s about 300
    // requests are due during the stall; a closed-loop generator would record only one
    // slow sample per connection (4 here). This one must record them all.
    let stub = start_stub(Behaviour {
        stall_at: Some(200),
        stall: Duration::from_millis(300),
        ..Behaviour::default()
    });
    let mut cfg = config(&stub, 1000.0, 1.0);
    cfg.connections = 4;
    let r = run(&cfg).unwrap();
    let w = &r.classes["write"];
    assert_eq!(w.completed, 1000);
    // At least half the stalled requests waited over 100 ms.
    assert!(w.latency_ms.p90 > 100.0, "{:?}", w.latency_ms);
    assert!(w.latency_ms.max >= 290.0, "{:?}", w.latency_ms);
    assert!(w.latency_ms.p50 < 50.0, "{:?}", w.latency_ms);
}

#[test]
fn slow_answers_time_out_and_the_run_still_ends() {
    let _serial = one_at_a_time();
    let stub = start_stub(Behaviour {
        delay: Duration::from_millis(400),
        ..Behaviour::default()
    });
    let mut cfg = config(&stub, 100.0, 0.5);
    cfg.timeout_s = 0.1;
    let started = Instant::now();
    let r = run(&cfg).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let w = &r.classes["write"];
    assert_eq!(w.scheduled, 50);
    assert_eq!(w.status["timeout"], 50, "{:?}", w.status);
    assert_eq!(w.ok, 0);
    assert_eq!(w.errors, 50);
    // Timeouts are recorded at the time they were given up.
    assert!(w.latency_ms.p50 >= 99.0, "{:?}", w.latency_ms);
}

#[test]
fn refuses_non_loopback_and_absent_targets() {
    let mut cfg = RunConfig::new(SECRET, 100.0, 1.0);
    cfg.host = "192.0.2.1".parse().unwrap();
    let err = run(&cfg).unwrap_err().to_string();
    assert!(err.contains("refusing"), "{err}");

    // A port nobody listens on: a clear error, at once.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = RunConfig::new(SECRET, 100.0, 1.0);
    cfg.port = port;
    let started = Instant::now();
    let err = format!("{:#}", run(&cfg).unwrap_err());
    assert!(err.contains("cannot connect"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
}
