//! The I/O: plays the planned events against the engine over HTTP at their times,
//! reads its answers, polls `GET /fairness/blocked`, and at the end reads every
//! player's `GET /fairness/players/{id}`, `GET /fairness/flags` and the boards.
//!
//! One dispatcher walks all plans merged in time order, builds and signs each body when
//! its time comes (`ts` = the current unix second), and queues it for `connections`
//! workers, each with its own keep-alive connection. Lateness of the dispatch behind
//! the plan is measured and reported, so a run on a busy machine says how faithful its
//! timing was.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use liveops_engine::signing::Signer;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::plan::{item_of, Action, Planned};
use super::population::Player;
use super::report::{board_report, BoardReport, Outcome, PlayerObs, RunFacts};
use super::tables::BOSSES;

/// Most events one run may plan (memory and time bound).
pub const EVENTS_MAX: usize = 5_000_000;
/// Largest response body read.
const RESPONSE_BYTES_MAX: usize = 4 << 20;
/// Entries read from each board and from `/fairness/flags` (the engine's page limits).
const TOP_N: u32 = 100;
const FLAGS_LIMIT: u32 = 1000;
/// How long the engine has to answer `/readyz` before it is called unreachable.
const READY_WAIT: Duration = Duration::from_secs(10);

/// Where the engine listens and how to talk to it.
#[derive(Clone, Debug)]
pub struct Target {
    /// Loopback address of the engine.
    pub host: IpAddr,
    /// Gateway port (`POST /events`).
    pub gateway: u16,
    /// Leaderboard port.
    pub reads: u16,
    /// Fairness port.
    pub fairness: u16,
}

/// How the driver runs.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    pub target: Target,
    /// The engine's `HMAC_SECRET`.
    pub secret: Vec<u8>,
    /// Concurrent keep-alive connections for events.
    pub connections: usize,
    /// Longest wait for one answer.
    pub timeout: Duration,
    /// Prefix of the player ids (to map board entries back to players).
    pub prefix: String,
    /// Board windows read at the end.
    pub windows: Vec<String>,
    /// Period of `GET /fairness/blocked` polls.
    pub poll_every: Duration,
    /// Distinguishes this run's idempotency keys from another run's.
    pub run_tag: u64,
}

/// The driver's failures.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("the engine at {0} is unreachable or not ready (GET /readyz)")]
    Unreachable(SocketAddr),
    #[error("{0} events planned, more than {EVENTS_MAX}: fewer players or a shorter run")]
    TooManyEvents(usize),
}

/// What the driver brings back.
pub struct RunOutput {
    pub obs: Vec<PlayerObs>,
    pub boards: Vec<BoardReport>,
    pub facts: RunFacts,
}

/// One event queued for a worker.
struct Job {
    player: u32,
    index: u32,
    body: Bytes,
    key: Option<String>,
    /// Run milliseconds when it was released.
    sent_ms: u64,
    /// The score actually sent (an unkeyed honest duplicate is nudged by one).
    score: u64,
}

/// State shared by the dispatcher, workers and poller.
struct Shared {
    players: Arc<Vec<Player>>,
    plans: Arc<Vec<Vec<Planned>>>,
    obs: Mutex<Vec<PlayerObs>>,
    statuses: Mutex<BTreeMap<String, u64>>,
    t0: Instant,
    t0_unix_ms: u64,
    prefix: String,
}

impl Shared {
    fn run_ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    fn player_of(&self, id: &str) -> Option<u32> {
        let i: u32 = id.strip_prefix(&self.prefix)?.parse().ok()?;
        (self.players.get(i as usize)?.id == id).then_some(i)
    }

    fn note_block(&self, player: u32, run_ms: u64) {
        let start = self.players[player as usize].cheat_start_ms;
        self.obs.lock().unwrap_or_else(|e| e.into_inner())[player as usize]
            .note_block(run_ms, start);
    }

    fn note_block_cause(&self, player: u32, record: &serde_json::Value) {
        let mut obs = self.obs.lock().unwrap_or_else(|e| e.into_inner());
        *obs[player as usize]
            .block_causes
            .entry(block_cause(record))
            .or_insert(0) += 1;
    }

    fn count_status(&self, what: String) {
        *self
            .statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(what)
            .or_insert(0) += 1;
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One keep-alive HTTP/1.1 connection, reopened when the server closes it.
struct Conn {
    addr: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
    timeout: Duration,
}

impl Conn {
    fn new(addr: SocketAddr, timeout: Duration) -> Conn {
        Conn {
            addr,
            sender: None,
            timeout,
        }
    }

    /// Sends `request`; (status, body), or none on a connection failure or timeout.
    async fn exchange(&mut self, request: Request<Full<Bytes>>) -> Option<(u16, Bytes)> {
        let answer = tokio::time::timeout(self.timeout, async {
            if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
                let stream = TcpStream::connect(self.addr).await.ok()?;
                stream.set_nodelay(true).ok()?;
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .ok()?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                self.sender = Some(sender);
            }
            let sender = self.sender.as_mut()?;
            sender.ready().await.ok()?;
            let response = sender.send_request(request).await.ok()?;
            let status = response.status().as_u16();
            let body = http_body_util::Limited::new(response.into_body(), RESPONSE_BYTES_MAX)
                .collect()
                .await
                .ok()?
                .to_bytes();
            Some((status, body))
        })
        .await
        .ok()
        .flatten();
        if answer.is_none() {
            // A timed-out or broken exchange leaves the connection unusable.
            self.sender = None;
        }
        answer
    }

    async fn get(&mut self, path: &str) -> Option<(u16, Bytes)> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(HOST, self.addr.to_string())
            .body(Full::new(Bytes::new()))
            .ok()?;
        self.exchange(request).await
    }

    async fn get_json(&mut self, path: &str) -> Option<(u16, serde_json::Value)> {
        let (status, body) = self.get(path).await?;
        Some((
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        ))
    }
}

/// The JSON body of `action` for `player` at unix second `ts`, `nudge` added to its
/// score (progression and boss kills) or, for a drop, as its `eventId` (when not 0).
pub fn event_body(player: &str, action: Action, ts: u64, nudge: u32) -> String {
    match action {
        Action::Progression { xp } => format!(
            r#"{{"type":"progression","playerId":"{player}","ts":{ts},"payload":{{"deltaXp":{},"activity":"quest"}}}}"#,
            xp.saturating_add(nudge).min(1_000_000)
        ),
        Action::BossKill { boss, points } => {
            let b = &BOSSES[usize::from(boss)];
            format!(
                r#"{{"type":"boss_kill","playerId":"{player}","ts":{ts},"payload":{{"bossId":"{}","tier":{},"points":{}}}}}"#,
                b.id,
                b.tier,
                points.saturating_add(nudge).min(1_000_000)
            )
        }
        Action::Drop { item, from_boss } => {
            let item = item_of(item);
            let event_id = if nudge == 0 {
                String::new()
            } else {
                format!(r#""eventId":"claim-{nudge}","#)
            };
            format!(
                r#"{{"type":"drop_claimed",{event_id}"playerId":"{player}","ts":{ts},"payload":{{"dropId":"{}","weight":{},"source":"{}"}}}}"#,
                item.id,
                item.weight,
                if from_boss { "boss_chest" } else { "chest" }
            )
        }
        // Replays re-send stored bytes; they are never built.
        Action::Replay { .. } => String::new(),
    }
}

/// What an event's answer says.
pub fn classify(answer: Option<(u16, Bytes)>) -> (Outcome, String) {
    let Some((status, body)) = answer else {
        return (Outcome::Failed, "failed".into());
    };
    let outcome = match status {
        202 | 208 => {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let flag = (v["flagged"] == serde_json::Value::Bool(true))
                .then(|| v["flag"].as_str().unwrap_or("unknown").to_owned());
            Outcome::Accepted { flag }
        }
        403 => Outcome::Blocked,
        429 => Outcome::RateLimited,
        other => Outcome::Other(other),
    };
    (outcome, status.to_string())
}

/// Plays `plans` (`plans[i]` is `players[i]`'s) against the engine and reads the outcome.
pub async fn run(
    cfg: &DriverConfig,
    players: Vec<Player>,
    plans: Vec<Vec<Planned>>,
) -> Result<RunOutput, DriverError> {
    let planned: usize = plans.iter().map(Vec::len).sum();
    if planned > EVENTS_MAX {
        return Err(DriverError::TooManyEvents(planned));
    }
    let gateway = SocketAddr::new(cfg.target.host, cfg.target.gateway);
    let fairness = SocketAddr::new(cfg.target.host, cfg.target.fairness);
    let reads = SocketAddr::new(cfg.target.host, cfg.target.reads);
    for addr in [gateway, fairness, reads] {
        wait_ready(addr).await?;
    }
    let mut order: Vec<(u64, u32, u32)> = Vec::with_capacity(planned);
    for (p, plan) in plans.iter().enumerate() {
        for (i, e) in plan.iter().enumerate() {
            order.push((e.at_ms, p as u32, i as u32));
        }
    }
    order.sort_unstable();
    let n = players.len();
    let shared = Arc::new(Shared {
        players: Arc::new(players),
        plans: Arc::new(plans),
        obs: Mutex::new(vec![PlayerObs::default(); n]),
        statuses: Mutex::new(BTreeMap::new()),
        t0: Instant::now(),
        t0_unix_ms: unix_ms(),
        prefix: cfg.prefix.clone(),
    });

    let stop_polling = Arc::new(AtomicBool::new(false));
    let poller = tokio::spawn(poll_blocked(
        shared.clone(),
        Conn::new(fairness, cfg.timeout),
        cfg.poll_every,
        stop_polling.clone(),
    ));
    let (tx, rx) = tokio::sync::mpsc::channel::<Job>(cfg.connections * 8);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let signer = Arc::new(Signer::new(&cfg.secret));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..cfg.connections {
        workers.spawn(worker(
            shared.clone(),
            rx.clone(),
            signer.clone(),
            Conn::new(gateway, cfg.timeout),
        ));
    }
    let late = dispatch(&shared, &order, tx, cfg.run_tag).await;
    while workers.join_next().await.is_some() {}
    let elapsed_s = shared.t0.elapsed().as_secs_f64();
    stop_polling.store(true, Ordering::Release);
    let _ = poller.await;

    let mut facts = RunFacts {
        events_planned: planned as u64,
        dispatch_late_p99_ms: late.value_at_quantile(0.99) as f64 / 1000.0,
        dispatch_late_max_ms: late.max() as f64 / 1000.0,
        elapsed_s,
        ..RunFacts::default()
    };
    let mut conn = Conn::new(fairness, cfg.timeout);
    poll_once(&shared, &mut conn).await;
    facts.final_read_errors += read_player_states(&shared, fairness, cfg).await;
    match conn
        .get_json(&format!("/fairness/flags?limit={FLAGS_LIMIT}"))
        .await
    {
        Some((200, v)) => {
            for record in v["flags"].as_array().into_iter().flatten() {
                let reason = record["reason"].as_str().unwrap_or("unknown").to_owned();
                *facts.engine_flags_by_reason.entry(reason).or_insert(0) += 1;
            }
        }
        _ => facts.final_read_errors += 1,
    }
    let mut boards = Vec::new();
    let mut conn = Conn::new(reads, cfg.timeout);
    for window in &cfg.windows {
        match conn
            .get_json(&format!("/leaderboard?window={window}&limit={TOP_N}"))
            .await
        {
            Some((200, v)) => {
                let ids: Vec<String> = v["entries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["playerId"].as_str().map(str::to_owned))
                    .collect();
                boards.push(board_report(window, &ids, &shared.players, &cfg.prefix));
            }
            _ => facts.final_read_errors += 1,
        }
    }
    let shared = Arc::try_unwrap(shared).ok().expect("every task has ended");
    facts.statuses = shared
        .statuses
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    let obs = shared.obs.into_inner().unwrap_or_else(|e| e.into_inner());
    facts.events_sent = obs.iter().map(|o| o.sent).sum();
    Ok(RunOutput { obs, boards, facts })
}

async fn wait_ready(addr: SocketAddr) -> Result<(), DriverError> {
    let deadline = Instant::now() + READY_WAIT;
    let mut conn = Conn::new(addr, Duration::from_secs(2));
    loop {
        if let Some((200, _)) = conn.get("/readyz").await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(DriverError::Unreachable(addr));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Releases every planned event at its time; returns the lateness histogram (µs).
async fn dispatch(
    shared: &Shared,
    order: &[(u64, u32, u32)],
    tx: tokio::sync::mpsc::Sender<Job>,
    run_tag: u64,
) -> Histogram<u64> {
    let mut late = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
    // Bodies kept for replays, and each player's bodies of the current second.
    let mut kept: HashMap<(u32, u32), Bytes> = HashMap::new();
    let mut same_second: HashMap<u32, (u64, Vec<u64>)> = HashMap::new();
    for &(at_ms, p, i) in order {
        let due = shared.t0 + Duration::from_millis(at_ms);
        tokio::time::sleep_until(due).await;
        late.saturating_record(Instant::now().saturating_duration_since(due).as_micros() as u64);
        let player = &shared.players[p as usize];
        let event = &shared.plans[p as usize][i as usize];
        let (body, key, score) = match event.action {
            Action::Replay { of } => match kept.get(&(p, of)) {
                Some(body) => (body.clone(), None, event.score),
                // The original was never sent (cannot happen: it is planned earlier).
                None => continue,
            },
            action => {
                let ts = (shared.t0_unix_ms + shared.run_ms()) / 1000;
                let mut nudge = 0;
                let mut body = event_body(&player.id, action, ts, 0);
                // An honest client never sends two identical bodies in one second: the
                // engine would refuse the second as a replay, with or without a key (the
                // key is not signed). A score is nudged by one; two claims of the same
                // item (two chests) get an `eventId`, the contract's way to tell them
                // apart.
                let (second, seen) = same_second.entry(p).or_insert((ts, Vec::new()));
                if *second != ts {
                    *second = ts;
                    seen.clear();
                }
                while seen.contains(&hash(&body)) && nudge < 1000 {
                    nudge += 1;
                    body = event_body(&player.id, action, ts, nudge);
                }
                seen.push(hash(&body));
                let key = player.keyed.then(|| format!("fs-{run_tag:x}-{p}-{i}"));
                let body = Bytes::from(body);
                if event.replayed {
                    kept.insert((p, i), body.clone());
                }
                let nudged = match action {
                    Action::Drop { .. } => 0,
                    _ => u64::from(nudge),
                };
                (body, key, event.score + nudged)
            }
        };
        let job = Job {
            player: p,
            index: i,
            body,
            key,
            sent_ms: shared.run_ms(),
            score,
        };
        if tx.send(job).await.is_err() {
            break;
        }
    }
    late
}

fn hash(body: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    body.hash(&mut h);
    h.finish()
}

async fn worker(
    shared: Arc<Shared>,
    rx: Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Job>>>,
    signer: Arc<Signer>,
    mut conn: Conn,
) {
    loop {
        let Some(job) = rx.lock().await.recv().await else {
            return;
        };
        let signature = format!("sha256={}", signer.mac_hex(&job.body));
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri("/events")
            .header(HOST, conn.addr.to_string())
            .header(CONTENT_TYPE, "application/json")
            .header("X-Signature", signature);
        if let Some(key) = &job.key {
            builder = builder.header("Idempotency-Key", key);
        }
        let answer = match builder.body(Full::new(job.body)) {
            Ok(request) => conn.exchange(request).await,
            Err(_) => None,
        };
        let (outcome, status) = classify(answer);
        shared.count_status(status);
        let mut event = shared.plans[job.player as usize][job.index as usize];
        event.score = job.score;
        let start = shared.players[job.player as usize].cheat_start_ms;
        shared.obs.lock().unwrap_or_else(|e| e.into_inner())[job.player as usize].record(
            &event,
            start,
            job.sent_ms,
            &outcome,
        );
    }
}

async fn poll_blocked(shared: Arc<Shared>, mut conn: Conn, every: Duration, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Acquire) {
        poll_once(&shared, &mut conn).await;
        tokio::time::sleep(every).await;
    }
}

/// One `GET /fairness/blocked`: every listed player was blocked at least since now.
async fn poll_once(shared: &Shared, conn: &mut Conn) {
    let now = shared.run_ms();
    if let Some((200, v)) = conn.get_json("/fairness/blocked").await {
        for entry in v["blocked"].as_array().into_iter().flatten() {
            if let Some(p) = entry["playerId"]
                .as_str()
                .and_then(|id| shared.player_of(id))
            {
                shared.note_block(p, now);
            }
        }
    }
}

/// A block audit record's cause: `detector/measure`, `+strikes` when the ladder made it
/// (its reason ends "(n flags)"), or the record's `by` (flood, admin) when it names no
/// detector.
fn block_cause(record: &serde_json::Value) -> String {
    let detail = &record["detail"];
    let cause = match (detail["detector"].as_str(), detail["measure"].as_str()) {
        (Some(detector), Some(measure)) => format!("{detector}/{measure}"),
        _ => detail["by"].as_str().unwrap_or("unknown").to_owned(),
    };
    let by_strikes = (record["reason"].as_str()).is_some_and(|r| r.ends_with(" flags)"));
    if by_strikes {
        format!("{cause}+strikes")
    } else {
        cause
    }
}

/// `GET /fairness/players/{id}` for every player: the engine's flag count, block records
/// of the recent audit (their `atMs`), and a block still active. Returns failed reads.
async fn read_player_states(shared: &Arc<Shared>, fairness: SocketAddr, cfg: &DriverConfig) -> u64 {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..cfg.connections.min(8) {
        let (shared, next, errors) = (shared.clone(), next.clone(), errors.clone());
        let mut conn = Conn::new(fairness, cfg.timeout);
        tasks.spawn(async move {
            loop {
                let p = next.fetch_add(1, Ordering::Relaxed);
                let Some(player) = shared.players.get(p) else {
                    return;
                };
                match conn
                    .get_json(&format!("/fairness/players/{}", player.id))
                    .await
                {
                    Some((200, v)) => {
                        let now = shared.run_ms();
                        if v["blocked"] == serde_json::Value::Bool(true) {
                            shared.note_block(p as u32, now);
                        }
                        for record in v["recentAudit"].as_array().into_iter().flatten() {
                            if record["kind"] == "block" {
                                if let Some(at) = record["atMs"].as_u64() {
                                    shared
                                        .note_block(p as u32, at.saturating_sub(shared.t0_unix_ms));
                                }
                                shared.note_block_cause(p as u32, record);
                            }
                        }
                        shared.obs.lock().unwrap_or_else(|e| e.into_inner())[p].engine_flags =
                            v["flags"].as_u64();
                    }
                    // Never seen by the engine (nothing sent, or nothing accepted).
                    Some((404, _)) => {}
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    errors.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_causes_name_the_detector_and_the_ladder() {
        let record = |reason: &str, detail: serde_json::Value| serde_json::json!({ "kind": "block", "reason": reason, "detail": detail });
        let shift = serde_json::json!({ "by": "fairness", "detector": "score_jump", "measure": "shift_nats" });
        assert_eq!(
            block_cause(&record("score jump (3 flags)", shift.clone())),
            "score_jump/shift_nats+strikes"
        );
        assert_eq!(
            block_cause(&record("score jump", shift)),
            "score_jump/shift_nats"
        );
        let flood = serde_json::json!({ "by": "flood" });
        assert_eq!(block_cause(&record("rate limited", flood)), "flood");
        assert_eq!(block_cause(&record("x", serde_json::json!({}))), "unknown");
    }

    #[test]
    fn bodies_are_the_contract_events() {
        let v: serde_json::Value =
            serde_json::from_str(&event_body("p1", Action::Progression { xp: 42 }, 7, 1)).unwrap();
        assert_eq!(v["type"], "progression");
        assert_eq!(v["payload"]["deltaXp"], 43);
        assert_eq!(v["ts"], 7);
        let v: serde_json::Value = serde_json::from_str(&event_body(
            "p1",
            Action::BossKill {
                boss: 7,
                points: 999_999,
            },
            7,
            5,
        ))
        .unwrap();
        assert_eq!(v["payload"]["bossId"], "dragon_lord");
        assert_eq!(v["payload"]["tier"], 5);
        assert_eq!(v["payload"]["points"], 1_000_000);
        let v: serde_json::Value = serde_json::from_str(&event_body(
            "p1",
            Action::Drop {
                item: 11,
                from_boss: true,
            },
            7,
            0,
        ))
        .unwrap();
        assert_eq!(v["payload"]["dropId"], "ancient_relic");
        assert_eq!(v["payload"]["weight"], 0.001);
        assert_eq!(v["payload"]["source"], "boss_chest");
        assert!(v.get("eventId").is_none());
        // A second identical claim in the same second is told apart by an eventId.
        let drop = Action::Drop {
            item: 11,
            from_boss: true,
        };
        let v: serde_json::Value = serde_json::from_str(&event_body("p1", drop, 7, 2)).unwrap();
        assert_eq!(v["eventId"], "claim-2");
        assert_eq!(v["payload"]["weight"], 0.001);
    }

    #[test]
    fn answers_are_classified() {
        let ok = |s: u16, b: &str| classify(Some((s, Bytes::from(b.to_owned())))).0;
        assert_eq!(
            ok(202, r#"{"flagged":false}"#),
            Outcome::Accepted { flag: None }
        );
        assert_eq!(
            ok(202, r#"{"flagged":true,"flag":"score_jump"}"#),
            Outcome::Accepted {
                flag: Some("score_jump".into())
            }
        );
        assert_eq!(ok(403, "{}"), Outcome::Blocked);
        assert_eq!(ok(429, "{}"), Outcome::RateLimited);
        assert_eq!(ok(503, "{}"), Outcome::Other(503));
        assert_eq!(classify(None), (Outcome::Failed, "failed".to_owned()));
    }
}
