//! # liveops-testkit
//!
//! What the integration tests of every crate share to run against real servers: a
//! [`Server`] process on a free port that a test can kill (a crash, SIGKILL) and start
//! again with the same arguments, killed on drop even when the test panics;
//! [`require_tool`] (and [`require_file`]), which fails a test under `CI=true` when its
//! server's binary is missing and skips it loudly otherwise; [`free_port`], [`wait_for`] and [`eventually`];
//! the bus consumers the tests read with: [`nats::read_stream`] and [`sqs::Moto`]; the
//! servers the mirror tests run: [`redis::RedisServer`], a Postgres [`postgres::Cluster`],
//! a Service Bus stand-in ([`servicebus::Broker`]); a TCP [`proxy::Proxy`] to cut
//! connections to a server that must keep its state; test certificates ([`tls`]).
//!
//! Only for tests (a dev-dependency): nothing here is hardened for production use.

pub mod nats;
pub mod postgres;
pub mod proxy;
pub mod redis;
pub mod servicebus;
pub mod sqs;
pub mod tls;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server has to accept connections after it was started.
const SERVER_START_TIMEOUT_S: u64 = 30;

/// Whether every one of `tools` is on the PATH. A missing tool fails the test under
/// `CI=true` (CI installs it, so its absence is a broken CI, not a reason to pass);
/// elsewhere the test is skipped loudly: the line goes to the process's stderr directly,
/// past the test harness's capture, so `cargo test` shows it even when the test passes.
pub fn require_tool(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| {
            !Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {tool}"))
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    skip_or_fail(test, &format!("{} not found", missing.join(", ")))
}

/// Whether `path` exists (a tool's installed files, e.g. an npm package); like
/// [`require_tool`], a missing one fails under `CI=true` and skips loudly elsewhere.
/// `install` says how to get it.
pub fn require_file(test: &str, path: &std::path::Path, install: &str) -> bool {
    path.exists()
        || skip_or_fail(
            test,
            &format!("{} not found (install: {install})", path.display()),
        )
}

/// Fails under `CI=true`, else prints the skip past the harness's capture: false. For
/// what a test needs that is neither a tool nor a file (e.g. an IPv6 loopback).
pub fn skip_or_fail(test: &str, why: &str) -> bool {
    let line = format!("*** SKIPPED {test}: {why} (bash .ci/run installs what the tests need) ***");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{line}; CI=true requires it"
    );
    let _ = writeln!(std::io::stderr().lock(), "\n{line}\n");
    false
}

/// A port nobody listens on now, on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("bound").port()
}

/// Polls `done` every 10 ms for up to `limit`; panics naming `what` after that.
pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `check` every 50 ms until it holds, at most `within`; then panics naming `what`
/// with the last reason `check` gave.
pub fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let until = Instant::now() + within;
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if Instant::now() >= until => panic!("{what} not within {within:?}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A server process of the test's own (a broker, a Redis), killed and reaped on drop.
pub struct Server {
    /// What starts it again (same port, same store).
    command: Vec<String>,
    pub port: u16,
    child: Option<Child>,
}

impl Server {
    /// Starts `program args...` and waits until it accepts connections on `port`.
    pub fn start(program: &str, args: &[String], port: u16) -> Server {
        let mut command = vec![program.to_string()];
        command.extend_from_slice(args);
        let mut server = Server {
            command,
            port,
            child: None,
        };
        server.restart();
        server
    }

    /// Kills it at once (SIGKILL: a crash, not a shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again with the same arguments and waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "running");
        let child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.command[0]));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(SERVER_START_TIMEOUT_S);
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

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_server_stops_listening_and_a_restarted_one_listens_again() {
        if !require_tool("testkit", &["python3"]) {
            return;
        }
        let port = free_port();
        let script = format!(
            "import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('127.0.0.1',{port}))\ns.listen()\ntime.sleep(60)"
        );
        let mut server = Server::start("python3", &["-c".into(), script], port);
        server.kill();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
        server.restart();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    }
}
