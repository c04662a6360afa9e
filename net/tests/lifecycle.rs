//! Start-up, configuration, health, metrics and shutdown of the real binary.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn every_port_serves_health_readiness_and_metrics() {
    let engine = Engine::start();
    assert_eq!(
        engine
            .post_events(&progression("metrics_p", 5), None)
            .status,
        202
    );
    for service in ["gateway", "fairness", "leaderboard", "progression"] {
        let health = engine.get(service, "/healthz");
        assert_eq!(
            (health.status, health.json()["status"].as_str()),
            (200, Some("ok")),
            "{service}"
        );
        assert_eq!(engine.get(service, "/readyz").status, 200, "{service}");
        let metrics = engine.get(service, "/metrics");
        assert_eq!(metrics.status, 200);
        assert!(metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain"));
        let text = String::from_utf8(metrics.body).unwrap();
        assert!(text.contains("liveops_http_requests_total{route=\"/events\",service=\"gateway\",status=\"202\"} 1"), "{text}");
        assert!(text.contains("liveops_http_request_duration_seconds_bucket"));
        assert!(!text.contains("metrics_p"), "no per-player labels");
    }
}

#[test]
fn metrics_pass_promtool() {
    let engine = Engine::start();
    engine.post_events(&progression("promtool_p", 5), None);
    engine.post_events("{bad", None);
    let text = engine.get("gateway", "/metrics").body;
    if !liveops_testkit::require_tool("metrics_pass_promtool", &["promtool"]) {
        return;
    }
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child.stdin.take().unwrap().write_all(&text).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn exit_of(env: &[(&str, &str)]) -> (i32, String) {
    let out = spawn(env).wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_exits_2_naming_the_key() {
    for (env, key) in [
        (vec![("RATE_LIMIT_MAX", "lots")], "RATE_LIMIT_MAX"),
        (vec![("HMAC_SECRET", "too-short")], "HMAC_SECRET"),
        (vec![("SEASON", "spaces are bad")], "SEASON"),
        (vec![("LB_WINDOWS", "hourly")], "LB_WINDOWS"),
        (vec![("SNAPSHOT_CRON", "*/15 * * * *")], "SNAPSHOT_CRON"),
        (vec![("ENV", "qa")], "ENV"),
        (vec![("DB_URL", "mysql://x")], "DB_URL"),
    ] {
        let (code, stderr) = exit_of(&env);
        assert_eq!(code, 2, "{env:?}: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.contains(key))
            .unwrap_or_else(|| panic!("{key} not named in {stderr}"));
        assert!(line.starts_with("config error: "), "{line}");
    }
}

#[test]
fn secrets_are_required_outside_dev_and_generated_in_dev() {
    let (code, stderr) = exit_of(&[("ENV", "prod"), ("HMAC_SECRET", ""), ("RECEIPT_SECRET", "")]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("config error: HMAC_SECRET: is required outside ENV=dev"),
        "{stderr}"
    );
    assert!(stderr.contains("config error: RECEIPT_SECRET"), "{stderr}");

    let mut engine = Engine::start_with(&[("HMAC_SECRET", ""), ("RECEIPT_SECRET", "")]);
    let logs = engine.stderr.lock().unwrap().join("\n");
    assert!(
        logs.contains("HMAC_SECRET is not set; generated one (ENV=dev only)"),
        "{logs}"
    );
    let (status, _) = engine.stop("TERM", Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn dotenv_is_read_and_the_environment_wins() {
    let dir = std::env::temp_dir().join(format!("liveops-dotenv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(".env"),
        "SEASON=from_dotenv\nRATE_LIMIT_MAX=lots\n",
    )
    .unwrap();
    let out = spawn_in(&dir, &[]).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), ".env values are validated too");
    assert!(String::from_utf8_lossy(&out.stderr).contains("RATE_LIMIT_MAX"));

    let mut child = spawn_in(&dir, &[("RATE_LIMIT_MAX", "10"), ("PORT", "0")]);
    let stderr = child.stderr.take().unwrap();
    let lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let mut season_line = None;
    for line in lines.map_while(Result::ok) {
        if line.contains("starting") {
            season_line = Some(line);
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(season_line.unwrap().contains("season: \"from_dotenv\""));
}

#[test]
fn sigterm_and_sigint_exit_0_within_2_seconds() {
    for signal in ["TERM", "INT"] {
        let mut engine = Engine::start();
        assert_eq!(
            engine
                .post_events(&progression("bye_player", 1), None)
                .status,
            202
        );
        let (status, took) = engine.stop(signal, Duration::from_secs(5));
        assert_eq!(status.code(), Some(0), "{signal}");
        assert!(took < Duration::from_secs(2), "{signal} took {took:?}");
    }
}

#[test]
fn shutdown_under_load_finishes_or_refuses_in_flight_requests() {
    let mut engine = Engine::start_with(&[("RATE_LIMIT_MAX", "1000000")]);
    let port = engine.port("gateway");
    let stop_at = Instant::now() + Duration::from_millis(400);
    let outcomes = std::thread::scope(|s| {
        let clients: Vec<_> = (0..8)
            .map(|t| {
                s.spawn(move || {
                    let mut statuses = Vec::new();
                    let deadline = Instant::now() + Duration::from_secs(3);
                    // A new player per request: one player sending this fast would be
                    // blocked by the fairness guard (rate of gain), not by the shutdown.
                    let mut n = 0;
                    while Instant::now() < deadline {
                        n += 1;
                        let body = progression(&format!("drain_{t}_{n}"), 1);
                        let sig = sign(body.as_bytes());
                        // A refused connection once the listener closes ends this client.
                        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { break };
                        let head = format!("POST /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Signature: {sig}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                        if stream.write_all(head.as_bytes()).is_err() {
                            break;
                        }
                        let mut raw = Vec::new();
                        let _ = std::io::Read::read_to_end(&mut stream, &mut raw);
                        if raw.is_empty() {
                            break;
                        }
                        statuses.push(parse_response(&raw).status);
                    }
                    statuses
                })
            })
            .collect();
        while Instant::now() < stop_at {
            std::thread::sleep(Duration::from_millis(10));
        }
        let (status, took) = engine.stop("TERM", Duration::from_secs(5));
        let statuses: Vec<u16> = clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        (status, took, statuses)
    });
    let (status, took, statuses) = outcomes;
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(statuses.iter().filter(|s| **s == 202).count() > 10);
    assert!(
        statuses.iter().all(|s| *s == 202 || *s == 503),
        "{statuses:?}"
    );
}
