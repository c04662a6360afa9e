//! `hostile`: the attacks of the hostile-mix harness (`loadtest/hostile.sh`), each sent
//! from loopback source addresses other than the honest client's, as other hosts would.
//!
//! - `preload`: players `pre_0 ..` get one progression event each, in signed batches of
//!   1000, so deep leaderboard pages exist.
//! - `attack`: for `--duration` seconds, at once: `--half-sent` connections that send a
//!   request head and part of its body and then stall (each slot reconnects after the
//!   server closes it, after `--reconnect-delay-ms`); `--idle` connections that send
//!   nothing; `--batch-clients` loops of signed, keyed, maximum-size batches (1 valid
//!   event + 999 invalid ones, a new `Idempotency-Key` each); and `--deep-readers`
//!   loops of `GET /leaderboard?window=weekly&offset=10000&limit=1000`.
//!
//! Only loopback targets and sources are accepted, and everything stops by itself:
//! every loop ends at the deadline, each slot makes at most `--attempts-max`
//! connections, and the process exits at the deadline plus a few seconds whatever is
//! still pending.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use liveops_engine::signing::Signer;
use liveops_loadtest::parse_loopback_host;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Longest attack, seconds.
const DURATION_MAX_S: u64 = 600;
/// Most connections of one kind in one process (file descriptors).
const CONNECTIONS_MAX: usize = 100_000;
/// Most players preloaded.
const PLAYERS_MAX: u64 = 10_000_000;
/// Largest response accepted by the small HTTP client.
const RESPONSE_BYTES_MAX: usize = 8 << 20;
/// Time a single HTTP exchange of the request loops may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Grace after the deadline before the process gives up on what is still pending.
const EXIT_GRACE: Duration = Duration::from_secs(3);

#[derive(Parser)]
#[command(about = "Attacks of the hostile-mix harness (loopback only)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Gives players pre_0 .. pre_{players-1} one event each (signed batches of 1000).
    Preload(PreloadArgs),
    /// Runs the attacks for --duration seconds.
    Attack(AttackArgs),
}

#[derive(Args)]
struct Target {
    /// Engine host (loopback only).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Gateway port (POST /events).
    #[arg(long)]
    port: u16,
    /// The engine's HMAC_SECRET.
    #[arg(long, env = "HMAC_SECRET", hide_env_values = true)]
    secret: String,
}

#[derive(Args)]
struct PreloadArgs {
    #[command(flatten)]
    target: Target,
    /// Players to create.
    #[arg(long, default_value_t = 200_000)]
    players: u64,
    /// Source address of the preload's connections.
    #[arg(long, default_value = "127.0.0.9")]
    from: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
}

#[derive(Args)]
struct AttackArgs {
    #[command(flatten)]
    target: Target,
    /// Leaderboard port (deep reads).
    #[arg(long)]
    read_port: u16,
    /// Seconds the attacks last.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Source addresses, comma-separated (loopback only); connections are spread over them.
    #[arg(
        long,
        default_value = "127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8,127.0.0.9"
    )]
    sources: String,
    /// Connections with a half-sent body.
    #[arg(long, default_value_t = 0)]
    half_sent: usize,
    /// Connections that send nothing.
    #[arg(long, default_value_t = 0)]
    idle: usize,
    /// Loops of keyed maximum-size batches (1 valid + 999 invalid events).
    #[arg(long, default_value_t = 0)]
    batch_clients: usize,
    /// Loops of deep leaderboard reads.
    #[arg(long, default_value_t = 0)]
    deep_readers: usize,
    /// Wait before a half-sent or idle slot reconnects, milliseconds.
    #[arg(long, default_value_t = 1000)]
    reconnect_delay_ms: u64,
    /// Most connections one half-sent or idle slot opens.
    #[arg(long, default_value_t = 1000)]
    attempts_max: u32,
    /// Write the counts as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime builds");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Preload(args) => preload(args).await,
            Command::Attack(args) => attack(args).await,
        }
    });
    // Connections still pending at the deadline are dropped, not awaited.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostile: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Loopback addresses from a comma-separated list.
fn loopback_sources(list: &str) -> anyhow::Result<Vec<IpAddr>> {
    let sources = list
        .split(',')
        .map(|s| parse_loopback_host(s).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if sources.is_empty() {
        bail!("no source address");
    }
    Ok(sources)
}

/// Raises this process's soft fd limit to its hard limit; returns the soft limit.
fn raise_fd_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(1 << 20);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: limit.maximum,
        },
    );
    getrlimit(Resource::Nofile).current.unwrap_or(hard)
}

async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = match to {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(from, 0))?;
    tokio::time::timeout(Duration::from_secs(5), socket.connect(to))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// One request on a keep-alive connection: (status, body).
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    tokio::time::timeout(EXCHANGE_TIMEOUT, async {
        stream.write_all(request).await?;
        read_response(stream).await
    })
    .await
    .map_err(|_| anyhow!("no answer within {EXCHANGE_TIMEOUT:?}"))?
}

/// Reads one response with a Content-Length body.
async fn read_response(stream: &mut TcpStream) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut raw = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 64 * 1024];
    let head_end = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if raw.len() > 64 * 1024 {
            bail!("response head too long");
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed before a response");
        }
        raw.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line"))?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    if length > RESPONSE_BYTES_MAX {
        bail!("response of {length} bytes");
    }
    while raw.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed inside a response body");
        }
        raw.extend_from_slice(&chunk[..n]);
    }
    Ok((status, raw[head_end..head_end + length].to_vec()))
}

fn post(path: &str, host: SocketAddr, body: &[u8], headers: &[(&str, &str)]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

async fn preload(args: PreloadArgs) -> anyhow::Result<()> {
    let host = parse_loopback_host(&args.target.host).map_err(anyhow::Error::msg)?;
    let from = parse_loopback_host(&args.from).map_err(anyhow::Error::msg)?;
    if !(1..=PLAYERS_MAX).contains(&args.players) || !(1..=64).contains(&args.connections) {
        bail!("players must be 1..={PLAYERS_MAX}, connections 1..=64");
    }
    let to = SocketAddr::new(host, args.target.port);
    let signer = Arc::new(Signer::new(args.target.secret.as_bytes()));
    let batches = args.players.div_ceil(1000);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (signer, next) = (signer.clone(), next.clone());
        let players = args.players;
        tasks.push(tokio::spawn(async move {
            let mut stream = connect_from(from, to).await?;
            loop {
                let batch = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if batch >= batches {
                    return anyhow::Ok(());
                }
                let ts = unix_now_s();
                let first = batch * 1000;
                let events: Vec<String> = (first..(first + 1000).min(players))
                    .map(|p| {
                        // Scores spread over 1..=1000 so deep pages hold distinct ranks.
                        format!(
                            r#"{{"type":"progression","playerId":"pre_{p}","ts":{ts},"payload":{{"deltaXp":{}}}}}"#,
                            p % 1000 + 1
                        )
                    })
                    .collect();
                let body = format!("[{}]", events.join(","));
                let sig = format!("sha256={}", signer.mac_hex(body.as_bytes()));
                let request = post("/events", to, body.as_bytes(), &[("X-Signature", &sig)]);
                let (status, response) = exchange(&mut stream, &request).await?;
                if status != 202 {
                    bail!(
                        "preload batch {batch}: status {status}: {}",
                        String::from_utf8_lossy(&response[..response.len().min(300)])
                    );
                }
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    println!(
        "preload: {} players in {:.1} s",
        args.players,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Outcome counts of one attack kind, by name.
#[derive(Default)]
struct Tally(Mutex<BTreeMap<String, u64>>);

impl Tally {
    fn add(&self, what: &str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(what.to_owned())
            .or_insert(0) += 1;
    }

    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What a stalled connection got before it ended.
fn classify_ending(raw: &[u8], read: std::io::Result<usize>) -> String {
    if raw.is_empty() {
        return match read {
            Ok(_) => "closed_without_answer".into(),
            Err(e) => format!("error_{:?}", e.kind()).to_lowercase(),
        };
    }
    let head = String::from_utf8_lossy(&raw[..raw.len().min(64)]).into_owned();
    match head.split(' ').nth(1) {
        Some(status) => format!("answered_{status}"),
        None => "answered_garbage".into(),
    }
}

/// One slot of stalled connections: connect, send `prefix`, wait for the server to end
/// it, wait, again; until the deadline or `attempts_max` connections.
async fn stall_slot(
    from: IpAddr,
    to: SocketAddr,
    prefix: Arc<Vec<u8>>,
    deadline: tokio::time::Instant,
    reconnect_delay: Duration,
    attempts_max: u32,
    tally: Arc<Tally>,
) {
    for _ in 0..attempts_max {
        if tokio::time::Instant::now() >= deadline {
            return;
        }
        let mut stream = match connect_from(from, to).await {
            Ok(stream) => stream,
            Err(e) => {
                tally.add(&format!("connect_{:?}", e.kind()).to_lowercase());
                tokio::time::sleep(reconnect_delay).await;
                continue;
            }
        };
        tally.add("connected");
        if !prefix.is_empty() && stream.write_all(&prefix).await.is_err() {
            tally.add("write_failed");
        }
        let mut raw = Vec::new();
        let mut chunk = [0u8; 1024];
        let ended = tokio::time::timeout_at(deadline, async {
            loop {
                match stream.read(&mut chunk).await {
                    Ok(0) => return Ok(0),
                    Ok(n) if raw.len() < 4096 => raw.extend_from_slice(&chunk[..n]),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
        })
        .await;
        match ended {
            Ok(read) => tally.add(&classify_ending(&raw, read)),
            Err(_) => {
                tally.add("held_to_the_end");
                return;
            }
        }
        tokio::time::sleep(reconnect_delay).await;
    }
}

/// A keyed batch of 1 valid event and 999 invalid ones (negative deltaXp), signed. The
/// valid event's `eventId` keeps each body new (the engine refuses replays).
fn hostile_batch(signer: &Signer, to: SocketAddr, n: u64, run: u64) -> Vec<u8> {
    let ts = unix_now_s();
    let mut events = Vec::with_capacity(1000);
    events.push(format!(
        r#"{{"type":"progression","playerId":"atk_{}","ts":{ts},"payload":{{"deltaXp":1}},"eventId":"{run}-{n}"}}"#,
        n % 1000
    ));
    for i in 1..1000 {
        events.push(format!(
            r#"{{"type":"progression","playerId":"atk_{i}","ts":{ts},"payload":{{"deltaXp":-1,"activity":"padding-padding-padding-padding-padding-padding-padding-padding"}}}}"#
        ));
    }
    let body = format!("[{}]", events.join(","));
    let sig = format!("sha256={}", signer.mac_hex(body.as_bytes()));
    let key = format!("hostile-{run}-{n}");
    post(
        "/events",
        to,
        body.as_bytes(),
        &[("X-Signature", &sig), ("Idempotency-Key", &key)],
    )
}

/// A loop of requests on one keep-alive connection (reopened when it breaks) until the
/// deadline; statuses into `tally`, latencies into `latency_us`.
async fn request_loop(
    from: IpAddr,
    to: SocketAddr,
    deadline: tokio::time::Instant,
    make: impl Fn(u64) -> Vec<u8>,
    tally: Arc<Tally>,
    latency_us: Arc<Mutex<Histogram<u64>>>,
) {
    let mut stream: Option<TcpStream> = None;
    let mut n = 0u64;
    while tokio::time::Instant::now() < deadline {
        if stream.is_none() {
            match connect_from(from, to).await {
                Ok(s) => stream = Some(s),
                Err(e) => {
                    tally.add(&format!("connect_{:?}", e.kind()).to_lowercase());
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let request = make(n);
        n += 1;
        let sent = Instant::now();
        let Some(open) = stream.as_mut() else {
            continue;
        };
        match tokio::time::timeout_at(deadline, exchange(open, &request)).await {
            Ok(Ok((status, _))) => {
                tally.add(&status.to_string());
                latency_us
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .saturating_record(sent.elapsed().as_micros() as u64);
                if status == 503 || status == 408 {
                    stream = None;
                }
            }
            Ok(Err(_)) => {
                tally.add("failed");
                stream = None;
            }
            Err(_) => return,
        }
    }
}

fn latency_summary(h: &Histogram<u64>) -> serde_json::Value {
    json!({
        "count": h.len(),
        "p50_ms": h.value_at_quantile(0.5) as f64 / 1000.0,
        "p99_ms": h.value_at_quantile(0.99) as f64 / 1000.0,
        "max_ms": h.max() as f64 / 1000.0,
    })
}

async fn attack(args: AttackArgs) -> anyhow::Result<()> {
    let host = parse_loopback_host(&args.target.host).map_err(anyhow::Error::msg)?;
    let sources = loopback_sources(&args.sources)?;
    if !(1..=DURATION_MAX_S).contains(&args.duration) {
        bail!("duration must be 1..={DURATION_MAX_S} s");
    }
    for (name, n) in [
        ("half-sent", args.half_sent),
        ("idle", args.idle),
        ("batch-clients", args.batch_clients),
        ("deep-readers", args.deep_readers),
    ] {
        if n > CONNECTIONS_MAX {
            bail!("{name} must be at most {CONNECTIONS_MAX}");
        }
    }
    let fd_limit = raise_fd_limit();
    let wanted = (args.half_sent + args.idle + args.batch_clients + args.deep_readers) as u64;
    if wanted + 64 > fd_limit {
        bail!("{wanted} connections do not fit this process's fd limit {fd_limit}: split them over processes");
    }
    let gateway = SocketAddr::new(host, args.target.port);
    let reads = SocketAddr::new(host, args.read_port);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.duration);
    let reconnect_delay = Duration::from_millis(args.reconnect_delay_ms);
    let run = unix_now_s() ^ u64::from(std::process::id()) << 32;

    let half_sent = Arc::new(Tally::default());
    let idle = Arc::new(Tally::default());
    let batches = Arc::new(Tally::default());
    let deep = Arc::new(Tally::default());
    let new_histogram = || {
        Arc::new(Mutex::new(
            Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"),
        ))
    };
    let batch_latency = new_histogram();
    let deep_latency = new_histogram();
    // A head announcing 1,000,000 bytes, then 100 of them: the engine reads bodies
    // before checking signatures, so none is needed.
    let half_sent_prefix = {
        let mut bytes = format!(
            "POST /events HTTP/1.1\r\nHost: {gateway}\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
        )
        .into_bytes();
        bytes.extend_from_slice(&[b' '; 100]);
        Arc::new(bytes)
    };
    let nothing = Arc::new(Vec::new());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.half_sent {
        tasks.spawn(stall_slot(
            sources[i % sources.len()],
            gateway,
            half_sent_prefix.clone(),
            deadline,
            reconnect_delay,
            args.attempts_max,
            half_sent.clone(),
        ));
    }
    for i in 0..args.idle {
        tasks.spawn(stall_slot(
            sources[(i + 3) % sources.len()],
            reads,
            nothing.clone(),
            deadline,
            reconnect_delay,
            args.attempts_max,
            idle.clone(),
        ));
    }
    let signer = Arc::new(Signer::new(args.target.secret.as_bytes()));
    for c in 0..args.batch_clients {
        let signer = signer.clone();
        let offset = (c as u64) << 40;
        tasks.spawn(request_loop(
            *sources.last().expect("sources"),
            gateway,
            deadline,
            move |n| hostile_batch(&signer, gateway, offset + n, run),
            batches.clone(),
            batch_latency.clone(),
        ));
    }
    let deep_request = Arc::new(
        format!("GET /leaderboard?window=weekly&offset=10000&limit=1000 HTTP/1.1\r\nHost: {reads}\r\n\r\n")
            .into_bytes(),
    );
    for i in 0..args.deep_readers {
        let request = deep_request.clone();
        tasks.spawn(request_loop(
            sources[i % sources.len()],
            reads,
            deadline,
            move |_| request.to_vec(),
            deep.clone(),
            deep_latency.clone(),
        ));
    }
    let started = Instant::now();
    let _ = tokio::time::timeout_at(deadline + EXIT_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    let report = json!({
        "duration_s": started.elapsed().as_secs_f64(),
        "sources": sources.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        "half_sent": {"slots": args.half_sent, "outcomes": half_sent.snapshot()},
        "idle": {"slots": args.idle, "outcomes": idle.snapshot()},
        "keyed_batches": {
            "clients": args.batch_clients,
            "statuses": batches.snapshot(),
            "latency": latency_summary(&batch_latency.lock().unwrap_or_else(|e| e.into_inner())),
        },
        "deep_reads": {
            "readers": args.deep_readers,
            "statuses": deep.snapshot(),
            "latency": latency_summary(&deep_latency.lock().unwrap_or_else(|e| e.into_inner())),
        },
    });
    println!("{}", serde_json::to_string(&report)?);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
