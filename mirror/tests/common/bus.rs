//! Helpers of the bus tests: real broker processes on free ports, and the checks every
//! bus test makes on what a consumer read.

use std::collections::{HashMap, HashSet};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Whether `tool` can be run. Missing: panics under `CI=true` (CI must have it), else
/// says so loudly and the caller returns.
pub fn require_tool(tool: &str, probe_arg: &str, install: &str) -> bool {
    let found = Command::new(tool)
        .arg(probe_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is required under CI ({install})"
        );
        eprintln!("SKIPPED: {tool} is not installed ({install}); this test did not run");
    }
    found
}

/// A port nobody listens on now, on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A broker process, killed (and reaped) on drop, also when a test panics.
pub struct Broker {
    /// What starts it again (same port, same store).
    command: Vec<String>,
    pub port: u16,
    child: Option<Child>,
}

impl Broker {
    /// Starts `program args...` and waits until it accepts connections on `port`.
    pub fn start(program: &str, args: &[String], port: u16) -> Broker {
        let mut command = vec![program.to_string()];
        command.extend_from_slice(args);
        let mut broker = Broker {
            command,
            port,
            child: None,
        };
        broker.restart();
        broker
    }

    /// Kills it at once (SIGKILL: a crash, not a shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again with the same arguments.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "running");
        let child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.command[0]));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{} does not listen on {}",
                self.command[0],
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `done` every 10 ms for up to `limit`.
pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Checks what a consumer read, in the broker's order: `(id, body)` pairs. Every one of
/// lsns `1..=records` of shard 3, generation 1 (the test log's) is there exactly once
/// (`allow_duplicates`: at least once), ids match bodies, and each player's messages
/// come in log order. Returns the number of messages.
pub fn check_delivery(messages: &[(String, Value)], records: u64, allow_duplicates: bool) -> usize {
    let mut seen = HashSet::new();
    let mut last_per_player: HashMap<String, u64> = HashMap::new();
    for (id, body) in messages {
        assert_eq!(
            body["id"].as_str(),
            Some(id.as_str()),
            "header id = body id"
        );
        assert_eq!(body["v"], 1);
        let lsn: u64 = id
            .strip_prefix("g1-s3-")
            .and_then(|lsn| lsn.parse().ok())
            .unwrap_or_else(|| panic!("unexpected id {id}"));
        assert!((1..=records).contains(&lsn), "{id} was never written");
        let fresh = seen.insert(lsn);
        assert!(fresh || allow_duplicates, "{id} stored twice");
        let player = body["playerId"]
            .as_str()
            .expect("test records have players");
        assert_eq!(player, format!("player-{}", lsn % 17));
        let last = last_per_player.entry(player.to_string()).or_insert(0);
        if fresh {
            assert!(lsn > *last, "{player}: {id} after lsn {last}");
            *last = lsn;
        }
    }
    assert_eq!(seen.len() as u64, records, "every record forwarded");
    messages.len()
}
