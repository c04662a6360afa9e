//! Starts the real `liveops` binary on OS-chosen ports and speaks HTTP/1.1 to it.
#![allow(dead_code)] // each test binary uses its own subset of the harness

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub mod openapi;

pub const HMAC_SECRET: &str = "test-hmac-secret-0123456789abcdef0123";
pub const RECEIPT_SECRET: &str = "test-receipt-secret-0123456789abcdef01";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

pub struct Engine {
    child: Option<Child>,
    pub ports: HashMap<String, u16>,
    /// Lines the engine printed on stdout (the audit trail).
    pub stdout: Arc<Mutex<Vec<String>>>,
    /// Lines the engine printed on stderr (logs).
    pub stderr: Arc<Mutex<Vec<String>>>,
    pub dir: PathBuf,
    /// Whether dropping the engine removes `dir` (not when a test restarts in it).
    owns_dir: bool,
}

pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn temp_dir() -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("liveops-test-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Spawns the binary with `env` (on top of test defaults) in a fresh directory.
pub fn spawn(env: &[(&str, &str)]) -> Child {
    spawn_in(&temp_dir(), env)
}

/// How a child process ended and what it printed.
pub struct Exited {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Waits for `child` to exit, at most `deadline` (then kills it and fails the test),
/// reading its piped output meanwhile so it never blocks on a full pipe.
pub fn exit_within(mut child: Child, deadline: Duration) -> Exited {
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "still running after {deadline:?}: {}{}",
                stdout.join().unwrap(),
                stderr.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Exited {
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Runs `liveops wal <command>` on `dir/data`: (exit code, stdout).
pub fn wal_tool(dir: &std::path::Path, command: &str) -> (i32, String) {
    let out = wal_tool_output(dir, command);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Runs `liveops wal <command>` on `dir/data` and returns all it printed.
pub fn wal_tool_output(dir: &std::path::Path, command: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_liveops"))
        .args(["wal", command, "data"])
        .current_dir(dir)
        .output()
        .unwrap()
}

pub fn spawn_in(dir: &std::path::Path, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_liveops"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BIND_ADDR", "127.0.0.1")
        .env("PORT", "0")
        .env("FAIRNESS_PORT", "0")
        .env("LEADERBOARD_PORT", "0")
        .env("PROGRESSION_PORT", "0")
        .env("HMAC_SECRET", HMAC_SECRET)
        .env("RECEIPT_SECRET", RECEIPT_SECRET)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SHARDS", "2")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("the liveops binary starts")
}

impl Engine {
    pub fn start() -> Engine {
        Engine::start_with(&[])
    }

    pub fn start_with(env: &[(&str, &str)]) -> Engine {
        let mut engine = Engine::start_in(&temp_dir(), env);
        engine.owns_dir = true;
        engine
    }

    /// Starts in `dir` (its `./data` is the data directory) and leaves it in place.
    pub fn start_in(dir: &std::path::Path, env: &[(&str, &str)]) -> Engine {
        let dir = dir.to_path_buf();
        let mut child = spawn_in(&dir, env);
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        {
            let lines = stderr.clone();
            let pipe = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = tx.send(line.clone());
                    lines.lock().unwrap().push(line);
                }
            });
        }
        {
            let lines = stdout.clone();
            let pipe = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let mut ports = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut ready = false;
        while !(ready && ports.len() == 4) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("engine did not start: {:?}", stderr.lock().unwrap())
            });
            if let Some(rest) = line.split("listening service=").nth(1) {
                let (service, addr) = rest.split_once(" addr=").unwrap();
                let port = addr.trim().rsplit(':').next().unwrap().parse().unwrap();
                ports.insert(service.to_owned(), port);
            }
            ready |= line.contains(" ready");
        }
        Engine {
            child: Some(child),
            ports,
            stdout,
            stderr,
            dir,
            owns_dir: false,
        }
    }

    pub fn port(&self, service: &str) -> u16 {
        self.ports[service]
    }

    pub fn request(
        &self,
        service: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.request_from(None, service, method, path, headers, body)
    }

    /// [`Engine::request`] from the local address `from` (another client host to the
    /// engine, e.g. 127.0.0.2), or the system's choice. Every response is checked
    /// against `api/openapi.yaml`.
    pub fn request_from(
        &self,
        from: Option<std::net::Ipv4Addr>,
        service: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let response = request_from(from, self.port(service), method, path, headers, body);
        openapi::check(service, method, path, &response);
        response
    }

    pub fn get(&self, service: &str, path: &str) -> Response {
        self.request(service, "GET", path, &[], b"")
    }

    /// POSTs a correctly signed body to `POST /events`.
    pub fn post_events(&self, body: &str, key: Option<&str>) -> Response {
        let sig = sign(body.as_bytes());
        let mut headers = vec![
            ("X-Signature", sig.as_str()),
            ("Content-Type", "application/json"),
        ];
        if let Some(key) = key {
            headers.push(("Idempotency-Key", key));
        }
        self.request("gateway", "POST", "/events", &headers, body.as_bytes())
    }

    pub fn post_signed(&self, service: &str, path: &str, body: &str) -> Response {
        let sig = sign(body.as_bytes());
        self.request(
            service,
            "POST",
            path,
            &[("X-Signature", sig.as_str())],
            body.as_bytes(),
        )
    }

    pub fn admin(&self, method: &str, path: &str, body: &str) -> Response {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        self.request(
            "fairness",
            method,
            path,
            &[("Authorization", auth.as_str())],
            body.as_bytes(),
        )
    }

    pub fn audit_lines(&self) -> Vec<Value> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["audit"] == Value::Bool(true))
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Sends `signal` and waits for the exit, at most `deadline`.
    pub fn stop(&mut self, signal: &str, deadline: Duration) -> (ExitStatus, Duration) {
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            if started.elapsed() > deadline {
                let _ = child.kill();
                panic!("engine did not exit within {deadline:?} of {signal}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn sign(body: &[u8]) -> String {
    let signer = liveops_engine::signing::Signer::new(HMAC_SECRET.as_bytes());
    format!("sha256={}", signer.mac_hex(body))
}

/// One HTTP/1.1 request on a fresh connection.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    request_from(None, port, method, path, headers, body)
}

/// [`request`] from the local address `from` (e.g. 127.0.0.2: another client host to
/// the engine), or the system's choice.
pub fn request_from(
    from: Option<std::net::Ipv4Addr>,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let server = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = match from {
        None => TcpStream::connect(server).expect("connects"),
        Some(ip) => {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("a socket");
            socket
                .bind(&std::net::SocketAddr::from((ip, 0)).into())
                .expect("binds the client address");
            socket.connect(&server.into()).expect("connects");
            TcpStream::from(socket)
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) and close before reading a large body.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// A fresh `eventId` for each event the helpers below make: as an honest client does,
/// so that two identical events are not refused as replays of one another.
pub fn event_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("t{}-{n}", std::process::id())
}

/// A progression event for `player` worth `xp`, stamped now, with its own `eventId`.
pub fn progression(player: &str, xp: u64) -> String {
    format!(
        r#"{{"type":"progression","playerId":"{player}","ts":{},"payload":{{"deltaXp":{xp}}},"eventId":"{}"}}"#,
        now_s(),
        event_id()
    )
}

pub fn boss_kill(player: &str, boss: &str, points: u64) -> String {
    format!(
        r#"{{"type":"boss_kill","playerId":"{player}","ts":{},"payload":{{"bossId":"{boss}","tier":5,"points":{points}}},"eventId":"{}"}}"#,
        now_s(),
        event_id()
    )
}

pub fn drop_claimed(player: &str, drop: &str) -> String {
    format!(
        r#"{{"type":"drop_claimed","playerId":"{player}","ts":{},"payload":{{"dropId":"{drop}","weight":0.05,"source":"raid_chest"}},"eventId":"{}"}}"#,
        now_s(),
        event_id()
    )
}
