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

/// A TCP forwarder from a port of its own to a broker's: `cut` resets every connection
/// through it and refuses new ones (the broker vanishes mid-request, as in a crash, while
/// its state survives: moto keeps queues only in memory), `restore` lets them in again.
pub struct Proxy {
    pub port: u16,
    state: std::sync::Arc<ProxyState>,
    accept_thread: Option<std::thread::JoinHandle<()>>,
}

struct ProxyState {
    /// True while connections are refused.
    cut: std::sync::atomic::AtomicBool,
    /// True once the proxy is dropped.
    stop: std::sync::atomic::AtomicBool,
    /// Both ends of every open connection, to reset them on `cut`.
    open: std::sync::Mutex<Vec<TcpStream>>,
}

impl Proxy {
    pub fn start(target_port: u16) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let state = std::sync::Arc::new(ProxyState {
            cut: false.into(),
            stop: false.into(),
            open: Vec::new().into(),
        });
        let shared = std::sync::Arc::clone(&state);
        let accept_thread = std::thread::spawn(move || {
            while !shared.stop.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                };
                if shared.cut.load(Ordering::Relaxed) {
                    continue; // dropped: the connection closes at once
                }
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
                    continue;
                };
                let mut open = shared.open.lock().unwrap();
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy {
            port,
            state,
            accept_thread: Some(accept_thread),
        }
    }

    /// Resets every connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.state
            .cut
            .store(true, std::sync::atomic::Ordering::Relaxed);
        for stream in self.state.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.state
            .cut
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.state
            .stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
    }
}
