//! One constant-rate run: the pacing thread, the connection pools, the drain, the report.
//!
//! Each lane (writes to the gateway, reads from the leaderboard port) has a [`Schedule`],
//! a semaphore and a pool of keep-alive connections. The pacing thread adds one permit
//! to the lane's semaphore as each request becomes due. A connection task takes a
//! permit, claims the next request index `i` (so requests are claimed in schedule
//! order), and measures that request from `t0 + offset(i)`: its intended send time.
//! Permits left waiting because every connection is busy are the open-loop queue.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context as _};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::config::RunConfig;
use crate::schedule::{evens_in, Schedule};
use crate::stats::{
    Class, ClassReport, Failure, GeneratorReport, RunReport, Stats, BEHIND_LIMIT_MS,
};
use crate::workload::{accepted_in_batch_response, Workload};

/// Time allowed to open the first connections before the schedule starts.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest sleep of the pacing thread (it also samples how far behind the run is).
const PACER_MAX_SLEEP: Duration = Duration::from_millis(5);
/// How often the drain checks whether everything has finished.
const DRAIN_POLL: Duration = Duration::from_millis(2);
/// Extra time for connection tasks to exit once the lanes are closed.
const EXIT_GRACE: Duration = Duration::from_secs(2);

static X_SIGNATURE: HeaderName = HeaderName::from_static("x-signature");
static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

type Sender = SendRequest<Full<Bytes>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LaneKind {
    Write,
    Read,
}

/// One stream of requests at a constant rate, with its connection pool.
struct Lane {
    kind: LaneKind,
    addr: SocketAddr,
    host_header: HeaderValue,
    schedule: Schedule,
    connections: usize,
    /// One permit per request that is due and not yet claimed.
    due: Semaphore,
    /// Next request index to claim.
    claimed: AtomicU64,
    /// Requests claimed and finished (any outcome).
    finished: AtomicU64,
}

impl Lane {
    /// The class of request `i`: reads alternate top-N and rank.
    fn class_of(&self, i: u64) -> Class {
        match self.kind {
            LaneKind::Write => Class::Write,
            LaneKind::Read if i & 1 == 0 => Class::ReadTop,
            LaneKind::Read => Class::ReadRank,
        }
    }

    /// Measured requests of `class` among indices `start..end`.
    fn measured_in(&self, class: Class, start: u64, end: u64) -> u64 {
        let start = start.max(self.schedule.warmup);
        let end = end.min(self.schedule.total);
        if end <= start {
            return 0;
        }
        match class {
            Class::Write if self.kind == LaneKind::Write => end - start,
            Class::ReadTop if self.kind == LaneKind::Read => evens_in(start, end),
            Class::ReadRank if self.kind == LaneKind::Read => (end - start) - evens_in(start, end),
            _ => 0,
        }
    }
}

/// What the connection tasks share.
struct Shared {
    t0: Instant,
    timeout: Duration,
    workload: Workload,
    idempotency_keys: bool,
    /// Makes idempotency keys unique across runs.
    run_tag: u64,
    seed: u64,
    top_path: String,
    /// Shards of the recordings; connection `k` records into `stats[k % len]`.
    stats: Vec<Mutex<Stats>>,
}

/// What the pacing thread observed.
struct PacerReport {
    /// Lateness of each release, microseconds.
    late_us: Histogram<u64>,
    max_behind_ns: u64,
    behind_at_end_ns: u64,
    queued_at_end: u64,
}

/// Runs one constant-rate run on a runtime of its own and reports the measured window.
/// Blocks for about `warmup_s + duration_s` (plus at most `timeout_s` to drain).
pub fn run(cfg: &RunConfig) -> anyhow::Result<RunReport> {
    cfg.validate().map_err(|e| anyhow!(e))?;
    let runtime = if cfg.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.threads)
            .enable_all()
            .build()?
    };
    let report = runtime.block_on(run_async(cfg));
    // Do not wait for stragglers (they were aborted) beyond a moment.
    runtime.shutdown_timeout(Duration::from_millis(100));
    report
}

fn make_lane(cfg: &RunConfig, kind: LaneKind) -> Option<Arc<Lane>> {
    let (rate, port, connections) = match kind {
        LaneKind::Write => (cfg.write_rate(), cfg.port, cfg.connections),
        LaneKind::Read => (cfg.read_rate(), cfg.read_port, cfg.read_connections),
    };
    if rate <= 0.0 {
        return None;
    }
    let schedule = Schedule::new(rate, cfg.warmup_s, cfg.duration_s);
    if schedule.total == 0 {
        return None;
    }
    let addr = SocketAddr::new(cfg.host, port);
    Some(Arc::new(Lane {
        kind,
        addr,
        host_header: HeaderValue::from_str(&addr.to_string())
            .expect("an address is a valid header"),
        schedule,
        connections,
        due: Semaphore::new(0),
        claimed: AtomicU64::new(0),
        finished: AtomicU64::new(0),
    }))
}

async fn connect(addr: SocketAddr) -> std::io::Result<Sender> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

async fn run_async(cfg: &RunConfig) -> anyhow::Result<RunReport> {
    let lanes: Vec<Arc<Lane>> = [LaneKind::Write, LaneKind::Read]
        .into_iter()
        .filter_map(|kind| make_lane(cfg, kind))
        .collect();
    if lanes.is_empty() {
        return Err(anyhow!("the schedule has no request"));
    }

    // Open every connection before the schedule starts, so that connecting is not
    // measured, and fail at once if the target is not there.
    let mut pools: Vec<Vec<Sender>> = Vec::new();
    for lane in &lanes {
        let mut opening = tokio::task::JoinSet::new();
        for _ in 0..lane.connections {
            let addr = lane.addr;
            opening
                .spawn(async move { tokio::time::timeout(CONNECT_TIMEOUT, connect(addr)).await });
        }
        let mut pool = Vec::with_capacity(lane.connections);
        while let Some(opened) = opening.join_next().await {
            let what = match lane.kind {
                LaneKind::Write => "gateway",
                LaneKind::Read => "leaderboard port",
            };
            let sender = opened
                .context("connect task")?
                .map_err(|_| anyhow!("connecting to the {what} at {} timed out", lane.addr))?
                .with_context(|| {
                    format!(
                        "cannot connect to the {what} at {} (is the engine running? for many connections raise `ulimit -n`)",
                        lane.addr
                    )
                })?;
            pool.push(sender);
        }
        pools.push(pool);
    }

    let t0 = Instant::now() + Duration::from_millis(1);
    let shards = cfg.threads.max(1);
    let workload = Workload::new(
        cfg.players,
        cfg.popularity,
        cfg.mix,
        cfg.batch,
        &cfg.secret,
        cfg.top_n,
    );
    let shared = Arc::new(Shared {
        t0,
        timeout: Duration::from_secs_f64(cfg.timeout_s),
        top_path: workload.top_path(),
        workload,
        idempotency_keys: cfg.idempotency_keys,
        run_tag: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ cfg.seed.rotate_left(17),
        seed: cfg.seed,
        stats: (0..shards).map(|_| Mutex::new(Stats::default())).collect(),
    });

    let mut tasks = tokio::task::JoinSet::new();
    for (lane_index, (lane, pool)) in lanes.iter().zip(pools).enumerate() {
        for (id, sender) in pool.into_iter().enumerate() {
            let shared = shared.clone();
            let lane = lane.clone();
            let conn_id = (lane_index << 20) | id;
            tasks.spawn(connection_task(shared, lane, conn_id, sender));
        }
    }

    // The pacing thread: precise sleeps, off the runtime.
    let (pacer_done_tx, pacer_done_rx) = tokio::sync::oneshot::channel();
    {
        let lanes = lanes.clone();
        let quantum = Duration::from_micros(cfg.pace_quantum_us);
        std::thread::Builder::new()
            .name("loadtest-pacer".into())
            .spawn(move || {
                let report = pace(t0, &lanes, quantum);
                let _ = pacer_done_tx.send(report);
            })
            .context("start the pacing thread")?;
    }
    let pacer = pacer_done_rx
        .await
        .map_err(|_| anyhow!("the pacing thread died"))?;

    // Drain: requests already due still go out and are awaited, up to the timeout.
    let end_ns = lanes.iter().map(|l| l.schedule.end_ns()).max().unwrap_or(0);
    let drain_deadline = t0 + Duration::from_nanos(end_ns) + shared.timeout;
    loop {
        let all_done = lanes
            .iter()
            .all(|l| l.finished.load(Ordering::Acquire) >= l.schedule.total);
        if all_done || Instant::now() >= drain_deadline {
            break;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
    for lane in &lanes {
        lane.due.close();
    }
    let exit_by = tokio::time::Instant::now() + EXIT_GRACE;
    while let Ok(Some(_)) = tokio::time::timeout_at(exit_by, tasks.join_next()).await {}
    tasks.abort_all();

    // Merge the shards and count what was never sent.
    let mut stats = Stats::default();
    for shard in &shared.stats {
        stats.merge(&shard.lock().expect("stats lock"));
    }
    for lane in &lanes {
        let claimed = lane.claimed.load(Ordering::Acquire);
        for class in Class::ALL {
            stats.class_mut(class).unsent += lane.measured_in(class, claimed, lane.schedule.total);
        }
    }
    Ok(build_report(cfg, &lanes, &stats, &pacer))
}

fn build_report(
    cfg: &RunConfig,
    lanes: &[Arc<Lane>],
    stats: &Stats,
    pacer: &PacerReport,
) -> RunReport {
    // The measured window starts at the same offset on every lane (warm-up seconds).
    let measure_start_ns = lanes
        .iter()
        .map(|l| l.schedule.measure_start_ns())
        .min()
        .unwrap_or(0);
    let last_done_ns = Class::ALL
        .iter()
        .map(|c| stats.class(*c).last_done_ns)
        .max()
        .unwrap_or(0);
    let elapsed_s =
        (last_done_ns.saturating_sub(measure_start_ns) as f64 / 1e9).max(cfg.duration_s);

    let mut classes = std::collections::BTreeMap::new();
    let mut status = std::collections::BTreeMap::new();
    let (mut scheduled, mut completed, mut ok, mut errors) = (0, 0, 0, 0);
    let (mut events_sent, mut events_accepted) = (0, 0);
    for class in Class::ALL {
        let class_scheduled: u64 = lanes
            .iter()
            .map(|l| l.measured_in(class, 0, u64::MAX))
            .sum();
        if class_scheduled == 0 {
            continue;
        }
        let report = ClassReport::new(class, stats.class(class), class_scheduled, elapsed_s);
        scheduled += report.scheduled;
        completed += report.completed;
        ok += report.ok;
        errors += report.errors;
        events_sent += report.events_sent;
        events_accepted += report.events_accepted;
        for (k, n) in &report.status {
            *status.entry(k.clone()).or_insert(0) += n;
        }
        classes.insert(class.name().to_string(), report);
    }
    let connect_errors = Class::ALL
        .iter()
        .map(|c| stats.class(*c).connect_errors)
        .sum();
    let late = &pacer.late_us;
    let behind_at_end_ms = pacer.behind_at_end_ns as f64 / 1e6;
    RunReport {
        target_rate: cfg.rate,
        write_rate: cfg.write_rate(),
        read_rate: cfg.read_rate(),
        duration_s: cfg.duration_s,
        warmup_s: cfg.warmup_s,
        elapsed_s,
        scheduled,
        completed,
        ok,
        errors,
        error_rate: if scheduled == 0 {
            0.0
        } else {
            errors as f64 / scheduled as f64
        },
        throughput_rps: completed as f64 / elapsed_s,
        events_sent,
        events_accepted,
        events_per_s: events_accepted as f64 / elapsed_s,
        status,
        classes,
        generator: GeneratorReport {
            behind_at_end_ms,
            queued_at_end: pacer.queued_at_end,
            max_behind_ms: pacer.max_behind_ns as f64 / 1e6,
            fell_behind: behind_at_end_ms > BEHIND_LIMIT_MS,
            pacer_late_p50_ms: late.value_at_quantile(0.5) as f64 / 1000.0,
            pacer_late_p99_ms: late.value_at_quantile(0.99) as f64 / 1000.0,
            pacer_late_max_ms: late.max() as f64 / 1000.0,
            connect_errors,
        },
    }
}

/// Asks Linux to wake this thread's sleeps within a microsecond of their deadline
/// instead of the default 50 us "timer slack": the pacing error is a floor under every
/// latency measured.
fn tighten_timer_slack() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and only affects this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0);
    }
}

/// Releases each lane's requests as they become due, until the schedules end; wakes at
/// most once per `quantum` (zero: for every request).
fn pace(t0: Instant, lanes: &[Arc<Lane>], quantum: Duration) -> PacerReport {
    tighten_timer_slack();
    let mut late_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut released = vec![0u64; lanes.len()];
    let mut max_behind_ns = 0u64;
    let measure_start_ns = lanes
        .iter()
        .map(|l| l.schedule.measure_start_ns())
        .min()
        .unwrap_or(0);
    loop {
        let now = Instant::now();
        let elapsed_ns = now.saturating_duration_since(t0).as_nanos() as u64;
        let mut next_ns = u64::MAX;
        for (lane, released) in lanes.iter().zip(released.iter_mut()) {
            let schedule = &lane.schedule;
            let due = schedule.due(elapsed_ns);
            if due > *released {
                if schedule.is_measured(*released) {
                    late_us.saturating_record((elapsed_ns - schedule.offset_ns(*released)) / 1000);
                }
                lane.due.add_permits((due - *released) as usize);
                *released = due;
            }
            if *released < schedule.total {
                next_ns = next_ns.min(schedule.offset_ns(*released));
            }
            let claimed = lane.claimed.load(Ordering::Acquire);
            if claimed < *released && elapsed_ns >= measure_start_ns {
                max_behind_ns =
                    max_behind_ns.max(elapsed_ns.saturating_sub(schedule.offset_ns(claimed)));
            }
        }
        if next_ns == u64::MAX {
            // Every request has been released: how far behind is the sending?
            let mut behind_at_end_ns = 0;
            let mut queued_at_end = 0;
            for lane in lanes {
                let claimed = lane.claimed.load(Ordering::Acquire);
                if claimed < lane.schedule.total {
                    queued_at_end += lane.schedule.total - claimed;
                    behind_at_end_ns = behind_at_end_ns
                        .max(elapsed_ns.saturating_sub(lane.schedule.offset_ns(claimed)));
                }
            }
            return PacerReport {
                late_us,
                max_behind_ns: max_behind_ns.max(behind_at_end_ns),
                behind_at_end_ns,
                queued_at_end,
            };
        }
        let wake = (t0 + Duration::from_nanos(next_ns)).max(now + quantum);
        let now = Instant::now();
        if wake > now {
            std::thread::sleep((wake - now).min(PACER_MAX_SLEEP));
        }
    }
}

/// What happened to one request.
enum Outcome {
    Response { status: u16, body: Bytes },
    Failed(Failure),
}

/// Serves a lane's due requests over one keep-alive connection (reopened when it breaks)
/// until the lane is closed.
async fn connection_task(shared: Arc<Shared>, lane: Arc<Lane>, conn_id: usize, sender: Sender) {
    let mut rng = SmallRng::seed_from_u64(
        shared
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(conn_id as u64),
    );
    let shard = &shared.stats[conn_id % shared.stats.len()];
    let mut sender = Some(sender);
    while let Ok(permit) = lane.due.acquire().await {
        permit.forget();
        let i = lane.claimed.fetch_add(1, Ordering::AcqRel);
        let intended = shared.t0 + Duration::from_nanos(lane.schedule.offset_ns(i));
        let deadline = intended + shared.timeout;
        let class = lane.class_of(i);
        let measured = lane.schedule.is_measured(i);

        let (outcome, events) = if Instant::now() >= deadline {
            // Waited in the queue past its timeout: not worth sending.
            (Outcome::Failed(Failure::Timeout), 0)
        } else {
            let (request, events) = build_request(&shared, &lane, class, i, &mut rng);
            let outcome = tokio::time::timeout_at(
                tokio::time::Instant::from_std(deadline),
                send(&mut sender, lane.addr, request),
            )
            .await
            .unwrap_or(Outcome::Failed(Failure::Timeout));
            (outcome, events)
        };
        let done = Instant::now();
        if let Outcome::Failed(_) = outcome {
            // The connection's state is unknown (a request may still be in flight).
            sender = None;
        }
        if measured {
            let latency_ns = done.saturating_duration_since(intended).as_nanos() as u64;
            let done_ns = done.saturating_duration_since(shared.t0).as_nanos() as u64;
            let mut stats = shard.lock().expect("stats lock");
            let class_stats = stats.class_mut(class);
            match outcome {
                Outcome::Response { status, body } => {
                    let accepted = if class == Class::Write && status == 202 {
                        if shared.workload.batch() == 1 {
                            1
                        } else {
                            accepted_in_batch_response(&body).unwrap_or(0)
                        }
                    } else {
                        0
                    };
                    class_stats.record_response(status, latency_ns, done_ns, events, accepted);
                }
                Outcome::Failed(failure) => {
                    class_stats.record_failure(failure, latency_ns, done_ns)
                }
            }
        }
        lane.finished.fetch_add(1, Ordering::AcqRel);
    }
}

/// Sends `request` on the connection, opening a new one if there is none or the engine
/// closed it (it closes idle keep-alive connections).
async fn send(
    sender: &mut Option<Sender>,
    addr: SocketAddr,
    request: Request<Full<Bytes>>,
) -> Outcome {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        *sender = None;
        match connect(addr).await {
            Ok(s) => *sender = Some(s),
            Err(_) => return Outcome::Failed(Failure::Connect),
        }
    }
    let s = sender.as_mut().expect("connected above");
    if s.ready().await.is_err() {
        return Outcome::Failed(Failure::Io);
    }
    let response = match s.send_request(request).await {
        Ok(r) => r,
        Err(_) => return Outcome::Failed(Failure::Io),
    };
    let status = response.status().as_u16();
    match response.into_body().collect().await {
        Ok(body) => Outcome::Response {
            status,
            body: body.to_bytes(),
        },
        Err(_) => Outcome::Failed(Failure::Io),
    }
}

/// Builds request `i` of `class`; also returns how many events it carries.
fn build_request(
    shared: &Shared,
    lane: &Lane,
    class: Class,
    i: u64,
    rng: &mut SmallRng,
) -> (Request<Full<Bytes>>, u64) {
    match class {
        Class::Write => {
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let body = shared.workload.write_body(rng, ts);
            let signature = shared.workload.signature(&body);
            let mut builder = Request::builder()
                .method(Method::POST)
                .uri("/events")
                .header(HOST, lane.host_header.clone())
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .header(
                    &X_SIGNATURE,
                    HeaderValue::from_str(&signature).expect("hex is a valid header"),
                );
            if shared.idempotency_keys {
                let key = format!("lt-{:016x}-{i}", shared.run_tag);
                builder = builder.header(
                    &IDEMPOTENCY_KEY,
                    HeaderValue::from_str(&key).expect("hex and digits are a valid header"),
                );
            }
            let request = builder
                .body(Full::new(Bytes::from(body)))
                .expect("valid request");
            (request, shared.workload.batch() as u64)
        }
        Class::ReadTop | Class::ReadRank => {
            let path = if class == Class::ReadTop {
                shared.top_path.clone()
            } else {
                shared.workload.rank_path(rng)
            };
            let request = Request::builder()
                .method(Method::GET)
                .uri(path)
                .header(HOST, lane.host_header.clone())
                .body(Full::new(Bytes::new()))
                .expect("valid request");
            (request, 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(rate: f64, warmup_s: f64, duration_s: f64) -> Arc<Lane> {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        Arc::new(Lane {
            kind: LaneKind::Read,
            addr,
            host_header: HeaderValue::from_static("127.0.0.1:9"),
            schedule: Schedule::new(rate, warmup_s, duration_s),
            connections: 1,
            due: Semaphore::new(0),
            claimed: AtomicU64::new(0),
            finished: AtomicU64::new(0),
        })
    }

    #[test]
    fn pacer_releases_every_request_on_time_and_reports_the_backlog() {
        // Nobody claims anything: the whole schedule ends up queued.
        let lanes = vec![lane(10_000.0, 0.01, 0.05), lane(500.0, 0.01, 0.05)];
        let t0 = Instant::now();
        let report = pace(t0, &lanes, Duration::from_micros(100));
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(59), "{took:?}");
        assert!(took < Duration::from_millis(500), "{took:?}");
        assert_eq!(lanes[0].due.available_permits(), 600);
        assert_eq!(lanes[1].due.available_permits(), 30);
        assert_eq!(report.queued_at_end, 630);
        // The oldest unsent request was due at t0.
        assert!(
            report.behind_at_end_ns >= 59_000_000,
            "{}",
            report.behind_at_end_ns
        );
        assert!(report.max_behind_ns >= report.behind_at_end_ns);
        assert!(!report.late_us.is_empty());
    }

    #[test]
    fn measured_counts_split_reads_by_parity() {
        let l = lane(1000.0, 0.1, 1.0);
        assert_eq!(l.schedule.warmup, 100);
        assert_eq!(l.measured_in(Class::ReadTop, 0, u64::MAX), 500);
        assert_eq!(l.measured_in(Class::ReadRank, 0, u64::MAX), 500);
        assert_eq!(l.measured_in(Class::Write, 0, u64::MAX), 0);
        assert_eq!(l.measured_in(Class::ReadTop, 1001, u64::MAX), 49);
        assert_eq!(l.measured_in(Class::ReadRank, 1001, u64::MAX), 50);
        assert_eq!(l.class_of(100), Class::ReadTop);
        assert_eq!(l.class_of(101), Class::ReadRank);
    }
}
