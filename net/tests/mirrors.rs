//! The engine with its mirrors on (issue 10), against real servers: the machine's
//! Redis and Postgres for the steady state, a Redis of the test's own that it kills and
//! restarts, and kill -9 of the engine while it ships to Postgres. What the mirrors hold
//! is read with `redis-cli` and `psql` and compared with what the API answers.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::{progression, Engine};
use liveops_testkit::redis::RedisServer;
use liveops_testkit::{eventually, free_port};

const REDIS_PORT: u16 = 6379;
const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432";

/// A unique name for this test's keys and database.
fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{tag}_{}_{nanos}", std::process::id())
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--no-raw"])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8(out.stdout).unwrap()
}

/// `ZREVRANGE key 0 -1 WITHSCORES` as player → score.
fn redis_board(port: u16, key: &str) -> BTreeMap<String, u64> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--raw"])
        .args(["ZREVRANGE", key, "0", "-1", "WITHSCORES"])
        .output()
        .expect("redis-cli runs");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks(2)
        .filter(|pair| pair.len() == 2)
        .map(|pair| (pair[0].to_owned(), pair[1].parse().unwrap()))
        .collect()
}

fn psql(database: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            &format!("{POSTGRES}/{database}"),
            "-tAq",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A database of the test's own on the machine's Postgres, dropped at the end.
struct Database(String);

impl Database {
    fn create(name: String) -> Database {
        psql("test", &format!("CREATE DATABASE {name}"));
        Database(name)
    }

    fn url(&self) -> String {
        format!("{POSTGRES}/{}", self.0)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                &format!("{POSTGRES}/test"),
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0),
            ])
            .output();
    }
}

/// Whether the machine's servers answer; under `CI=true` they must.
fn servers_up(test: &str) -> bool {
    if !liveops_testkit::require_tool(test, &["redis-cli", "psql", "redis-server"]) {
        return false;
    }
    let redis = redis_cli(REDIS_PORT, &["PING"]).contains("PONG");
    let postgres = Command::new("psql")
        .args([&format!("{POSTGRES}/test"), "-tAc", "SELECT 1"])
        .output()
        .is_ok_and(|o| o.status.success());
    if redis && postgres {
        return true;
    }
    let line = format!(
        "*** SKIPPED {test}: Redis on {REDIS_PORT} up: {redis}, Postgres on 5432 up: {postgres} ***"
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{line}");
    eprintln!("\n{line}\n");
    false
}

/// The API's whole weekly board as player → score.
fn api_board(engine: &Engine, window: &str) -> BTreeMap<String, u64> {
    let page = engine
        .get(
            "leaderboard",
            &format!("/leaderboard?window={window}&limit=1000"),
        )
        .json();
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["playerId"].as_str().unwrap().to_owned(),
                e["score"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Posts `batches` batches of `per_batch` events over `players` players; returns how
/// many were accepted.
fn post_load(engine: &Engine, tag: &str, batches: usize, per_batch: usize, players: usize) -> u64 {
    let mut accepted = 0;
    for b in 0..batches {
        let events: Vec<String> = (0..per_batch)
            .map(|i| {
                progression(
                    &format!("{tag}{}", (b * per_batch + i) % players),
                    1 + (i as u64 % 7),
                )
            })
            .collect();
        let response = engine.post_events(&format!("[{}]", events.join(",")), None);
        assert_eq!(response.status, 202, "{}", response.json());
        accepted += response.json()["accepted"].as_u64().unwrap();
    }
    accepted
}

fn events_count(db: &Database) -> Result<u64, String> {
    let out = Command::new("psql")
        .args([
            &db.url(),
            "-tAc",
            "SELECT count(*), count(DISTINCT (generation, shard, lsn)) FROM events",
        ])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (all, distinct) = text.split_once('|').ok_or(text.clone())?;
    let (all, distinct): (u64, u64) = (
        all.parse().map_err(|_| text.clone())?,
        distinct.parse().map_err(|_| text.clone())?,
    );
    assert_eq!(all, distinct, "no event is mirrored twice");
    Ok(all)
}

#[test]
fn both_mirrors_show_what_the_api_shows() {
    if !servers_up("both_mirrors_show_what_the_api_shows") {
        return;
    }
    let season = unique("s");
    let db = Database::create(unique("liveops_mirror"));
    let engine = Engine::start_with(&[
        ("SEASON", &season),
        ("REDIS_URL", &format!("redis://127.0.0.1:{REDIS_PORT}/0")),
        ("DB_URL", &db.url()),
    ]);
    let accepted = post_load(&engine, "p", 20, 50, 120);
    assert_eq!(accepted, 1000);
    for window in ["daily", "weekly", "seasonal"] {
        let key = format!("lb:{season}:{window}");
        eventually(Duration::from_secs(10), &key, || {
            let (redis, api) = (redis_board(REDIS_PORT, &key), api_board(&engine, window));
            (redis == api)
                .then_some(())
                .ok_or(format!("redis {redis:?} api {api:?}"))
        });
    }
    eventually(Duration::from_secs(10), "events in Postgres", || {
        let n = events_count(&db)?;
        (n == accepted)
            .then_some(())
            .ok_or(format!("{n} of {accepted}"))
    });
    let progress = engine.get("progression", "/players/p7/progress").json();
    eventually(Duration::from_secs(5), "progress hash", || {
        let xp = redis_cli(
            REDIS_PORT,
            &["HGET", &format!("progress:{season}:p7"), "xp"],
        );
        (progress["xp"].as_u64() == xp.trim().trim_matches('"').parse().ok())
            .then_some(())
            .ok_or(xp)
    });
    let xp = psql(&db.0, "SELECT xp FROM players WHERE player_id = 'p7'");
    assert_eq!(xp, progress["xp"].to_string());
    let health = engine.get("gateway", "/healthz?verbose=1").json();
    let mirrors = health["mirrors"].as_array().unwrap();
    assert_eq!(mirrors.len(), 2, "{health}");
    for mirror in mirrors {
        assert_eq!(mirror["state"], "up", "{health}");
    }
    let metrics = String::from_utf8(engine.get("gateway", "/metrics").body).unwrap();
    assert!(
        metrics.contains("liveops_mirror_state{sink=\"redis\",state=\"up\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("liveops_mirror_state{sink=\"postgres\",state=\"up\"} 1"),
        "{metrics}"
    );
    let keys = redis_cli(REDIS_PORT, &["--scan", "--pattern", &format!("*{season}*")]);
    for key in keys
        .lines()
        .map(|k| k.trim().trim_matches('"'))
        .filter(|k| !k.is_empty())
    {
        redis_cli(REDIS_PORT, &["DEL", key]);
    }
}

#[test]
fn an_unreachable_mirror_never_stops_ingestion() {
    if !liveops_testkit::require_tool("an_unreachable_mirror_never_stops_ingestion", &["psql"]) {
        return;
    }
    // Nothing listens on a port just released.
    let closed = free_port();
    let engine = Engine::start_with(&[
        ("REDIS_URL", &format!("redis://127.0.0.1:{closed}")),
        (
            "DB_URL",
            &format!("postgres://postgres@127.0.0.1:{closed}/x"),
        ),
    ]);
    assert_eq!(engine.get("gateway", "/readyz").status, 200);
    assert_eq!(post_load(&engine, "u", 2, 10, 5), 20);
    eventually(Duration::from_secs(10), "mirrors degraded", || {
        let health = engine.get("gateway", "/healthz?verbose=1").json();
        let states: Vec<String> = health["mirrors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["state"].as_str().unwrap().to_owned())
            .collect();
        (states == ["degraded", "degraded"])
            .then_some(())
            .ok_or(format!("{health}"))
    });
    assert_eq!(engine.get("gateway", "/readyz").status, 200);
    // The operator console's numbers say the same, with each sink's failed passes.
    let stats = engine.admin("GET", "/stats", "").json();
    let sinks: Vec<(String, String, bool)> = stats["mirrors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let name = m["sink"].as_str().unwrap().to_owned();
            let state = m["state"].as_str().unwrap().to_owned();
            (name, state, m["errors"].as_u64().unwrap() > 0)
        })
        .collect();
    assert_eq!(
        sinks,
        [
            ("redis".into(), "degraded".into(), true),
            ("postgres".into(), "degraded".into(), true)
        ],
        "{stats}"
    );
}

#[test]
fn redis_killed_under_load_is_rebuilt_when_it_returns() {
    if !servers_up("redis_killed_under_load_is_rebuilt_when_it_returns") {
        return;
    }
    let port = free_port();
    let mut redis = RedisServer::start(port);
    let engine = Engine::start_with(&[("REDIS_URL", &format!("redis://127.0.0.1:{port}"))]);
    post_load(&engine, "k", 5, 100, 200);
    redis.kill();
    // Ingestion goes on while Redis is away.
    post_load(&engine, "k", 5, 100, 300);
    redis.restart();
    post_load(&engine, "k", 2, 100, 300);
    eventually(Duration::from_secs(15), "Redis rebuilt", || {
        let (redis, api) = (
            redis_board(port, "lb:1:weekly"),
            api_board(&engine, "weekly"),
        );
        (redis == api).then_some(()).ok_or(format!(
            "redis {} api {} entries",
            redis.len(),
            api.len()
        ))
    });
}

#[test]
fn postgres_gets_every_event_once_across_an_engine_kill() {
    if !servers_up("postgres_gets_every_event_once_across_an_engine_kill") {
        return;
    }
    let db = Database::create(unique("liveops_kill"));
    let dir = common::temp_dir();
    let env = [("DB_URL", db.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut engine = Engine::start_in(&dir, &env);
    let mut accepted = post_load(&engine, "q", 30, 100, 500);
    // Killed while it ships: whatever Postgres holds then, it must end with each once.
    engine.kill9();
    let engine = Engine::start_in(&dir, &env);
    accepted += post_load(&engine, "q", 10, 100, 500);
    eventually(Duration::from_secs(20), "events in Postgres", || {
        let n = events_count(&db)?;
        (n == accepted)
            .then_some(())
            .ok_or(format!("{n} of {accepted}"))
    });
    let _ = std::fs::remove_dir_all(&dir);
}
