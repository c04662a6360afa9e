//! Thread-per-core plumbing: pinned threads with a current-thread tokio runtime each,
//! SO_REUSEPORT listeners, and an HTTP/1.1 accept loop with graceful shutdown.
//!
//! Nothing here knows about LiveOps: the engine and the bench's baseline server share it,
//! so the baseline measures the same runtime shape the engine runs on.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{IntCounter, IntGauge};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{watch, Notify};

use crate::syn_gate::{reopen_at, Registration, SynGate, GATED_HOSTS_MAX};

/// Pending connections the kernel queues per listener before refusing.
const LISTEN_BACKLOG: i32 = 4096;

/// Binds `copies` listeners on `addr` with SO_REUSEPORT so the kernel spreads incoming
/// connections across the threads. With port 0 the first bind picks the port and the
/// others join it.
pub fn bind_reuseport(addr: SocketAddr, copies: usize) -> io::Result<Vec<std::net::TcpListener>> {
    // SO_REUSEPORT would also let this process join another's listeners on the same
    // port (same user) and silently split its traffic. A probe without it fails with
    // EADDRINUSE when anyone holds the port; with port 0 it also picks the port.
    // SO_REUSEADDR still refuses a port someone listens on, but not one whose old
    // connections linger in TIME_WAIT, so a restart can take its port back at once.
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into())?;
    let mut bound = probe.local_addr()?.as_socket().expect("an IP address");
    drop(probe);
    let mut listeners = Vec::with_capacity(copies);
    for _ in 0..copies {
        let socket = Socket::new(
            Domain::for_address(bound),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&bound.into())?;
        socket.listen(LISTEN_BACKLOG)?;
        let listener: std::net::TcpListener = socket.into();
        bound = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Starts one OS thread per element of `inputs`, pinned to a core (round robin over
/// the usable cores), each running `f(index, input)` on its own current-thread runtime
/// inside a `LocalSet`, so the future and its tasks need not be `Send`.
pub fn spawn_cores<T, F, Fut>(
    name: &str,
    inputs: Vec<T>,
    f: F,
) -> io::Result<Vec<std::thread::JoinHandle<()>>>
where
    T: Send + 'static,
    F: Fn(usize, T) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut handles = Vec::with_capacity(inputs.len());
    for (index, input) in inputs.into_iter().enumerate() {
        let core = (!cores.is_empty()).then(|| cores[index % cores.len()]);
        let f = f.clone();
        let handle = std::thread::Builder::new()
            .name(format!("{name}-{index}"))
            .spawn(move || {
                if let Some(core) = core {
                    // Pinning is an optimisation; a container may forbid it.
                    let _ = core_affinity::set_for_current(core);
                }
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime builds");
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, f(index, input));
            })?;
        handles.push(handle);
    }
    Ok(handles)
}

/// Open connections of one thread, so shutdown can wait for them to finish.
#[derive(Default)]
pub struct Connections {
    open: Cell<usize>,
    idle: Notify,
}

impl Connections {
    pub fn open(&self) -> usize {
        self.open.get()
    }

    /// Waits until no connection is open, at most `deadline`; true if all closed.
    pub async fn wait_closed(&self, deadline: Duration) -> bool {
        tokio::time::timeout(deadline, async {
            while self.open.get() > 0 {
                self.idle.notified().await;
            }
        })
        .await
        .is_ok()
    }

    fn opened(&self) {
        self.open.set(self.open.get() + 1);
    }

    fn closed(&self) {
        self.open.set(self.open.get() - 1);
        if self.open.get() == 0 {
            self.idle.notify_waiters();
        }
    }
}

pub type HttpResponse = Response<Full<Bytes>>;

/// The connection's remote address, put into every request's extensions so routes can
/// keep budgets per client host (no single host may exhaust one shared by all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// File descriptors kept out of the connection budget: logs, checkpoints, listeners,
/// each thread's epoll and wake-up descriptors.
pub const FDS_RESERVED: u64 = 512;
/// Largest connection cap derived from the fd limit: beyond it memory (a read buffer and a
/// task per connection) runs out before descriptors do.
pub const CONNECTIONS_DERIVED_MAX: u64 = 262_144;
/// Derived per-host cap: this fraction of the process cap, so that even several hosts
/// together leave most of it to everyone else.
pub const CONNECTIONS_PER_HOST_DIVISOR: usize = 16;
/// Accept errors are logged at most this often; the line counts the ones left out.
const ACCEPT_ERROR_LOG_INTERVAL_MS: u64 = 1_000;
/// Pause after a failed accept (typically EMFILE) instead of spinning on the error.
const ACCEPT_ERROR_BACKOFF_MS: u64 = 10;
/// Connections a listener accepts (admitted or refused) before it lets the thread's
/// other ready tasks and its I/O driver run. The runtime's queue of ready tasks is
/// first in, first out: a burst of thousands of new connections (clients reconnecting
/// together, a flood of refusals) accepted at once would put thousands of their tasks
/// ahead of a request that arrives meanwhile on an established connection, which would
/// then wait for all of them (in `loadtest/hostile.sh`'s mix, 100-300 ms, each second).
/// Left in the kernel's accept queue instead, the burst waits there, and a turn of the
/// thread adds at most this many tasks: well under a millisecond of work. Tokio's own
/// cooperative budget would let 128 through.
const ACCEPTS_PER_TURN_MAX: u32 = 16;

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (the most an
/// unprivileged process may take) so the connection cap, not the kernel, decides when
/// to refuse. Returns the (soft, hard) limits now in force.
pub fn raise_fd_limit() -> io::Result<(u64, u64)> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    // No hard limit: Linux still caps descriptors at fs.nr_open (1,048,576 by default).
    let hard = limit.maximum.unwrap_or(1 << 20);
    if limit.current.is_some_and(|soft| soft < hard) {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(hard),
                maximum: limit.maximum,
            },
        )?;
    }
    let now = getrlimit(Resource::Nofile);
    Ok((now.current.unwrap_or(hard), now.maximum.unwrap_or(hard)))
}

/// The connection caps derived from a soft fd limit: (per process, per host).
pub fn derived_connection_caps(fd_soft_limit: u64) -> (usize, usize) {
    let process = fd_soft_limit
        .saturating_sub(FDS_RESERVED)
        .clamp(64, CONNECTIONS_DERIVED_MAX) as usize;
    (process, (process / CONNECTIONS_PER_HOST_DIVISOR).max(8))
}

/// Counters of the connection budget, shared with the metrics registry.
#[derive(Clone)]
pub struct ConnectionCounters {
    /// Connections refused because the process held `MAX_CONNECTIONS`.
    pub refused_process: IntCounter,
    /// Connections refused because their host held `MAX_CONNECTIONS_PER_HOST`.
    pub refused_host: IntCounter,
    /// Failed `accept` calls (EMFILE and the like), whose log lines are rate-limited.
    pub accept_errors: IntCounter,
    /// Connections open now, all threads.
    pub open: IntGauge,
    /// Hosts whose connection attempts the kernel drops now ([`crate::syn_gate`]).
    pub gated_hosts: IntGauge,
}

impl ConnectionCounters {
    /// Counters no registry exposes (tools that serve without metrics).
    pub fn unregistered() -> Self {
        let counter = |name: &str| IntCounter::new(name, name).expect("a valid counter");
        ConnectionCounters {
            refused_process: counter("refused_process"),
            refused_host: counter("refused_host"),
            accept_errors: counter("accept_errors"),
            open: IntGauge::new("open", "open").expect("a valid gauge"),
            gated_hosts: IntGauge::new("gated_hosts", "gated_hosts").expect("a valid gauge"),
        }
    }
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The process holds its cap of connections.
    ProcessFull,
    /// The client's host holds its cap.
    HostFull,
}

/// Open connections per client host, and the hosts at their cap whose new attempts
/// the kernel drops ([`crate::syn_gate`]).
#[derive(Default)]
struct Hosts {
    /// Open connections per host; entries leave with their last connection, so the map
    /// holds at most `process_max` entries.
    held: HashMap<IpAddr, usize>,
    /// Hosts refused at their cap and not yet back to [`reopen_at`] connections; at most
    /// [`GATED_HOSTS_MAX`].
    gated: BTreeSet<IpAddr>,
}

/// The process-wide connection budget, shared by every thread: a cap on all open
/// connections and one per client host, so no single host can take every slot.
pub struct ConnectionLimits {
    /// Cap on open connections, all threads together (`MAX_CONNECTIONS`).
    process_max: usize,
    /// Cap on open connections from one IP address (`MAX_CONNECTIONS_PER_HOST`).
    host_max: usize,
    /// Open connections, all threads: one atomic, touched once per accept and close.
    open: AtomicUsize,
    /// Open connections per client host, and the hosts the kernel turns away.
    per_host: Mutex<Hosts>,
    /// Drops the connection attempts of hosts at their cap in the kernel.
    gate: Arc<SynGate>,
    counters: ConnectionCounters,
    /// When an accept error was last logged (ms since `created`), to log one per second.
    accept_error_logged_ms: AtomicU64,
    /// Accept errors not logged since the last line.
    accept_errors_unlogged: AtomicU64,
    /// The zero of `accept_error_logged_ms`.
    created: Instant,
}

impl ConnectionLimits {
    pub fn new(process_max: usize, host_max: usize, counters: ConnectionCounters) -> Self {
        ConnectionLimits {
            process_max: process_max.max(1),
            host_max: host_max.max(1),
            open: AtomicUsize::new(0),
            per_host: Mutex::default(),
            gate: Arc::new(SynGate::new(counters.gated_hosts.clone())),
            counters,
            accept_error_logged_ms: AtomicU64::new(0),
            accept_errors_unlogged: AtomicU64::new(0),
            created: Instant::now(),
        }
    }

    /// Takes a slot for a connection from `host`, released when the slot drops.
    pub fn acquire(self: &Arc<Self>, host: IpAddr) -> Result<ConnectionSlot, Refusal> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.process_max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            self.counters.refused_process.inc();
            return Err(Refusal::ProcessFull);
        }
        {
            let mut hosts = self.hosts();
            let held = hosts.held.entry(host).or_insert(0);
            if *held >= self.host_max {
                // Answered this once; from now on the kernel drops the host's attempts.
                let gate = hosts.gated.len() < GATED_HOSTS_MAX && hosts.gated.insert(host);
                drop(hosts);
                self.open.fetch_sub(1, Ordering::AcqRel);
                self.counters.refused_host.inc();
                if gate {
                    self.install_gate();
                }
                return Err(Refusal::HostFull);
            }
            *held += 1;
        }
        self.counters.open.inc();
        Ok(ConnectionSlot {
            limits: self.clone(),
            host,
        })
    }

    fn hosts(&self) -> std::sync::MutexGuard<'_, Hosts> {
        self.per_host.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Brings every listener's filter up to the gated hosts as they are now.
    fn install_gate(&self) {
        self.gate.install(|| self.hosts().gated.clone());
    }

    /// Adds `listener` to the gate; dropping the registration takes it out.
    pub fn gate_listener(
        self: &Arc<Self>,
        listener: &std::net::TcpListener,
    ) -> Option<Registration> {
        self.gate
            .register(listener)
            .inspect_err(
                |e| tracing::warn!(error = %e, "cannot add a listener to the connection filter"),
            )
            .ok()
    }

    /// Counts a failed accept and logs it, at most one line per second process-wide,
    /// with the number of errors left out since the previous line.
    fn accept_failed(&self, error: &io::Error) {
        self.counters.accept_errors.inc();
        let now_ms = self.created.elapsed().as_millis() as u64 + ACCEPT_ERROR_LOG_INTERVAL_MS;
        let last_ms = self.accept_error_logged_ms.load(Ordering::Acquire);
        let due = now_ms.saturating_sub(last_ms) >= ACCEPT_ERROR_LOG_INTERVAL_MS
            && self
                .accept_error_logged_ms
                .compare_exchange(last_ms, now_ms, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        if due {
            let suppressed = self.accept_errors_unlogged.swap(0, Ordering::AcqRel);
            tracing::warn!(
                error = %error,
                suppressed,
                "accept failed (at most one line per second; suppressed: errors since the last line)"
            );
        } else {
            self.accept_errors_unlogged.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// One open connection's share of the budget; dropping it gives the share back.
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    host: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let reopened = {
            let mut hosts = self.limits.hosts();
            let held = hosts
                .held
                .get_mut(&self.host)
                .map(|held| {
                    *held -= 1;
                    *held
                })
                .expect("a slot's host holds it");
            if held == 0 {
                hosts.held.remove(&self.host);
            }
            held <= reopen_at(self.limits.host_max) && hosts.gated.remove(&self.host)
        };
        self.limits.open.fetch_sub(1, Ordering::AcqRel);
        self.limits.counters.open.dec();
        if reopened {
            self.limits.install_gate();
        }
    }
}

/// A connection's deadlines run up to `1 / DEADLINE_SPREAD_DIVISOR` of the configured
/// time longer than it, drawn for each connection ([`spread`]).
const DEADLINE_SPREAD_DIVISOR: u32 = 4;

/// `timeout` plus a random part of up to a quarter of it, drawn anew at each call.
///
/// Connections opened together (a crowd that reconnects at once, as a slow-loris attack
/// does once cut) would otherwise reach their deadlines in the same millisecond, and the
/// thread would run thousands of 408s and closes in a row while the requests of its
/// other connections wait behind them: that held honest requests up to 57 ms in the
/// hostile mix. Longer and never shorter, so a client always has the configured time,
/// and a keep-alive pool tuned below `IDLE_TIMEOUT_MS` never races the server's close.
fn spread(timeout: Duration) -> Duration {
    // The std hasher's keys change at each `RandomState::new()`, so hashing nothing
    // is a fresh draw: enough for a spread, without a random-number crate.
    let draw = RandomState::new().build_hasher().finish();
    let fraction = (draw >> 11) as f64 / (1u64 << 53) as f64;
    timeout + (timeout / DEADLINE_SPREAD_DIVISOR).mul_f64(fraction)
}

/// How every connection is bounded.
#[derive(Clone)]
pub struct ServeOptions {
    /// The budget shared by all threads.
    pub limits: Arc<ConnectionLimits>,
    /// From a request's first byte, the time its headers and its body have to arrive
    /// (`REQUEST_READ_TIMEOUT_MS`); a late request gets 408 and its connection closes.
    /// Each connection gets up to a quarter more ([`spread`]).
    pub request_read_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request
    /// (`IDLE_TIMEOUT_MS`); each connection gets up to a quarter more ([`spread`]).
    pub idle_timeout: Duration,
}

/// A JSON error response written straight to a socket, for refusals made where no
/// HTTP machinery runs (at accept, or with the request's head unfinished).
fn canned_response(status_line: &str, code: &str, message: &str, retry_after: bool) -> Vec<u8> {
    let body = format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#);
    let retry = if retry_after {
        "Retry-After: 1\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {status_line}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{retry}Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

static PROCESS_FULL_RESPONSE: LazyLock<Vec<u8>> = LazyLock::new(|| {
    canned_response(
        "503 Service Unavailable",
        "too_many_connections",
        "the server holds its maximum of open connections (MAX_CONNECTIONS); retry later",
        true,
    )
});
static HOST_FULL_RESPONSE: LazyLock<Vec<u8>> = LazyLock::new(|| {
    canned_response(
        "503 Service Unavailable",
        "too_many_connections",
        "your host holds its maximum of open connections (MAX_CONNECTIONS_PER_HOST); close some or retry later",
        true,
    )
});
static REQUEST_TIMEOUT_RESPONSE: LazyLock<Vec<u8>> = LazyLock::new(|| {
    canned_response(
        "408 Request Timeout",
        "request_timeout",
        "the request was not received within REQUEST_READ_TIMEOUT_MS",
        false,
    )
});

/// Writes a canned response without waiting (a fresh or idle socket's send buffer
/// takes it whole) and closes. Bytes the client already sent are read away first, so
/// the close is a FIN the client can read the answer before, not a reset.
fn answer_and_close(stream: tokio::net::TcpStream, response: &[u8]) {
    let _ = stream.try_write(response);
    let mut sink = [0u8; 4096];
    let _ = stream.try_read(&mut sink);
    drop(stream);
}

/// Where one connection's current request stands, for its read deadline.
#[derive(Default)]
struct RequestClock {
    /// When the first byte of the request being read arrived; `None` between requests.
    started: Cell<Option<Instant>>,
    /// The request's handler runs: its body read keeps its own deadline
    /// ([`request_read_deadline`]) and the rest is the engine's time, not the client's.
    in_handler: Cell<bool>,
    /// Wakes the connection's watchdog when the deadline moves.
    moved: Notify,
}

impl RequestClock {
    fn bytes_arrived(&self) {
        if self.started.get().is_none() {
            self.started.set(Some(Instant::now()));
            self.moved.notify_one();
        }
    }

    /// The deadline of the head being read, if one is.
    fn head_deadline(&self, timeout: Duration) -> Option<Instant> {
        match self.started.get() {
            Some(started) if !self.in_handler.get() => Some(started + timeout),
            _ => None,
        }
    }
}

/// The accepted socket, noting in the clock when a request's first byte arrives.
struct ClockedStream {
    stream: tokio::net::TcpStream,
    clock: Rc<RequestClock>,
}

impl tokio::io::AsyncRead for ClockedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.clock.bytes_arrived();
        }
        polled
    }
}

impl tokio::io::AsyncWrite for ClockedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The body-read deadline of the request whose handler is running.
pub struct ReadDeadline {
    /// The request's first byte plus `REQUEST_READ_TIMEOUT_MS`.
    pub at: Instant,
    /// Set when a body read ran past `at`: the connection closes after the answer,
    /// since the rest of the body may still be on its way.
    expired: Cell<bool>,
}

impl ReadDeadline {
    /// Records that the body was not read in time.
    pub fn expire(&self) {
        self.expired.set(true);
    }
}

tokio::task_local! {
    /// Scoped around each handler, so every body read ([`crate::http::read_body`])
    /// keeps its request's read deadline without each route passing it along.
    static READ_DEADLINE: Rc<ReadDeadline>;
}

/// The read deadline of the request being handled; `None` outside a handler served
/// by [`serve`].
pub fn request_read_deadline() -> Option<Rc<ReadDeadline>> {
    READ_DEADLINE.try_with(Rc::clone).ok()
}

/// Serves HTTP/1.1 (keep-alive) on `listener` with `handler` until `shutdown` turns
/// true; then stops accepting and asks each open connection to close after its
/// in-flight request. Connections beyond the caps of `options.limits` get a canned 503
/// at accept; a request not read within `options.request_read_timeout` of its first byte
/// gets 408 and its connection closes.
pub async fn serve<H, Fut>(
    listener: std::net::TcpListener,
    handler: Rc<H>,
    shutdown: watch::Receiver<bool>,
    connections: Rc<Connections>,
    options: ServeOptions,
) where
    H: Fn(Request<Incoming>) -> Fut + 'static,
    Fut: Future<Output = HttpResponse> + 'static,
{
    // Taken out of the gate when this loop ends, so the socket closes with it.
    let _gated = options.limits.gate_listener(&listener);
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot register listener");
            return;
        }
    };
    let options = Rc::new(options);
    let mut stop = shutdown.clone();
    let mut accepted_this_turn = 0;
    loop {
        if accepted_this_turn == ACCEPTS_PER_TURN_MAX {
            // Lets every task that is ready, and the I/O driver, run before more
            // connections come in: see ACCEPTS_PER_TURN_MAX.
            accepted_this_turn = 0;
            tokio::task::yield_now().await;
        }
        accepted_this_turn += 1;
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|&s| s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                options.limits.accept_failed(&e);
                tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS)).await;
                continue;
            }
        };
        let slot = match options
            .limits
            .acquire(crate::host_budget::client_host(peer.ip()))
        {
            Ok(slot) => slot,
            Err(refusal) => {
                let response = match refusal {
                    Refusal::ProcessFull => &PROCESS_FULL_RESPONSE,
                    Refusal::HostFull => &HOST_FULL_RESPONSE,
                };
                answer_and_close(stream, response);
                continue;
            }
        };
        options.limits.gate.detach(&stream);
        let _ = stream.set_nodelay(true);
        connections.opened();
        let handler = handler.clone();
        let connections = connections.clone();
        let options = options.clone();
        let stop = shutdown.clone();
        tokio::task::spawn_local(async move {
            serve_connection(stream, peer, handler, stop, &options).await;
            drop(slot);
            connections.closed();
        });
    }
}

/// One connection, from accept to close: hyper serves it while a watchdog holds each
/// request's head to its read deadline.
async fn serve_connection<H, Fut>(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    handler: Rc<H>,
    mut stop: watch::Receiver<bool>,
    options: &ServeOptions,
) where
    H: Fn(Request<Incoming>) -> Fut + 'static,
    Fut: Future<Output = HttpResponse> + 'static,
{
    let clock = Rc::new(RequestClock::default());
    let read_timeout = spread(options.request_read_timeout);
    let service = {
        let clock = clock.clone();
        service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(PeerAddr(peer));
            let started = clock.started.get().unwrap_or_else(Instant::now);
            clock.in_handler.set(true);
            let deadline = Rc::new(ReadDeadline {
                at: started + read_timeout,
                expired: Cell::new(false),
            });
            let response = READ_DEADLINE.scope(deadline.clone(), handler(req));
            let clock = clock.clone();
            async move {
                let mut response = response.await;
                if deadline.expired.get() {
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                // The next request's clock starts at its own first byte.
                clock.started.set(None);
                clock.in_handler.set(false);
                clock.moved.notify_one();
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    let io = ClockedStream {
        stream,
        clock: clock.clone(),
    };
    let mut conn = http1::Builder::new()
        .timer(TokioTimer::new())
        // Hyper's header timer runs from the end of the previous response: it bounds
        // how long a keep-alive connection may idle.
        .header_read_timeout(spread(options.idle_timeout))
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    let mut stopping = false;
    loop {
        let head_deadline = clock.head_deadline(read_timeout);
        tokio::select! {
            _ = &mut conn => return,
            _ = stop.wait_for(|&s| s), if !stopping => {
                stopping = true;
                Pin::new(&mut conn).graceful_shutdown();
            }
            _ = tokio::time::sleep_until(head_deadline.unwrap_or_else(Instant::now).into()),
                if head_deadline.is_some() => {
                // Re-checked: the head may have completed as the timer fired.
                if clock.head_deadline(read_timeout).is_some_and(|at| at <= Instant::now()) {
                    let stream = conn.into_parts().io.into_inner().stream;
                    answer_and_close(stream, &REQUEST_TIMEOUT_RESPONSE);
                    return;
                }
            }
            _ = clock.moved.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_caps_per_process_and_per_host() {
        let counters = ConnectionCounters::unregistered();
        let limits = Arc::new(ConnectionLimits::new(3, 2, counters.clone()));
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let a1 = limits.acquire(a).unwrap();
        let _a2 = limits.acquire(a).unwrap();
        assert_eq!(limits.acquire(a).err(), Some(Refusal::HostFull));
        assert_eq!(counters.gated_hosts.get(), 1, "refused at its cap: gated");
        let _b1 = limits.acquire(b).unwrap();
        assert_eq!(limits.acquire(b).err(), Some(Refusal::ProcessFull));
        assert_eq!(
            counters.gated_hosts.get(),
            1,
            "a process refusal gates nobody"
        );
        assert_eq!(counters.open.get(), 3);
        drop(a1);
        assert_eq!(counters.open.get(), 2);
        assert_eq!(
            counters.gated_hosts.get(),
            0,
            "back to 7/8 of its cap: let in"
        );
        let _b2 = limits.acquire(b).unwrap();
        assert_eq!(counters.refused_host.get(), 1);
        assert_eq!(counters.refused_process.get(), 1);
    }

    #[test]
    fn hosts_beyond_the_maximum_are_left_out() {
        let counters = ConnectionCounters::unregistered();
        let limits = Arc::new(ConnectionLimits::new(1 << 20, 1, counters.clone()));
        let mut held = Vec::new();
        for i in 0..GATED_HOSTS_MAX as u32 + 10 {
            let host = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            held.push(limits.acquire(host).unwrap());
            assert_eq!(limits.acquire(host).err(), Some(Refusal::HostFull));
        }
        assert_eq!(counters.gated_hosts.get(), GATED_HOSTS_MAX as i64);
    }

    #[test]
    fn derived_caps_leave_room_and_stay_bounded() {
        assert_eq!(derived_connection_caps(20_000), (19_488, 1_218));
        assert_eq!(derived_connection_caps(256), (64, 8));
        assert_eq!(
            derived_connection_caps(u64::MAX).0 as u64,
            CONNECTIONS_DERIVED_MAX
        );
    }

    #[test]
    fn accept_errors_are_counted_and_logged_at_most_once_a_second() {
        let counters = ConnectionCounters::unregistered();
        let limits = ConnectionLimits::new(1, 1, counters.clone());
        let error = io::Error::from_raw_os_error(24);
        for _ in 0..100 {
            limits.accept_failed(&error);
        }
        assert_eq!(counters.accept_errors.get(), 100);
        // One line went out; the other 99 wait for the next one.
        assert_eq!(limits.accept_errors_unlogged.load(Ordering::Acquire), 99);
    }

    #[test]
    fn canned_responses_are_complete_http() {
        for response in [
            &*PROCESS_FULL_RESPONSE,
            &*HOST_FULL_RESPONSE,
            &*REQUEST_TIMEOUT_RESPONSE,
        ] {
            let text = std::str::from_utf8(response).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(length, body.len(), "{text}");
            assert!(head.contains("Connection: close"));
            serde_json::from_str::<serde_json::Value>(body).unwrap();
        }
    }

    #[test]
    fn a_port_held_by_another_listener_is_refused() {
        let first = bind_reuseport("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let port = first[0].local_addr().unwrap();
        assert_eq!(
            first[1].local_addr().unwrap(),
            port,
            "the copies share the port"
        );
        let second = bind_reuseport(port, 2);
        assert_eq!(second.unwrap_err().kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn deadlines_are_spread_over_a_quarter_more_than_configured() {
        let timeout = Duration::from_millis(1000);
        let draws: Vec<Duration> = (0..1000).map(|_| spread(timeout)).collect();
        let (min, max) = (draws.iter().min().unwrap(), draws.iter().max().unwrap());
        assert!(
            *min >= timeout && *max < timeout + timeout / 4,
            "{min:?}..{max:?}"
        );
        // 1,000 uniform draws cover nearly all of the 250 ms.
        assert!(
            *min < Duration::from_millis(1030) && *max > Duration::from_millis(1220),
            "{min:?}..{max:?}"
        );
    }

    /// A burst of new connections must not run ahead of a request on an established
    /// connection: the thread is blocked while a burst queues in the kernel and a
    /// request arrives on an open connection; once it runs again, that request is
    /// answered after at most one turn's worth of accepts (without the limit, Tokio's
    /// cooperative budget lets 128 through first).
    #[test]
    fn a_burst_of_connections_waits_behind_established_requests() {
        use std::io::{Read, Write};
        const BURST: usize = 300;
        let listener = bind_reuseport("127.0.0.1:0".parse().unwrap(), 1)
            .unwrap()
            .remove(0);
        let addr = listener.local_addr().unwrap();
        let counters = ConnectionCounters::unregistered();
        let open = counters.open.clone();
        let options = ServeOptions {
            limits: Arc::new(ConnectionLimits::new(10_000, 10_000, counters)),
            request_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let server = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let handler = Rc::new(move |req: Request<Incoming>| {
                let open = open.clone();
                async move {
                    if req.uri().path() == "/block" {
                        // Holds the thread, as a long turn would, while the burst queues.
                        std::thread::sleep(Duration::from_millis(300));
                    }
                    Response::new(Full::new(Bytes::from(open.get().to_string())))
                }
            });
            let connections = Rc::new(Connections::default());
            tokio::task::LocalSet::new().block_on(
                &runtime,
                serve(listener, handler, stop_rx, connections, options),
            );
        });
        let ask = |stream: &mut std::net::TcpStream, path: &str| {
            write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        };
        let answer = |stream: &mut std::net::TcpStream| -> usize {
            let mut buf = vec![0u8; 1024];
            let mut got = 0;
            loop {
                got += stream.read(&mut buf[got..]).unwrap();
                let text = std::str::from_utf8(&buf[..got]).unwrap();
                if let Some((_, body)) = text.split_once("\r\n\r\n") {
                    if let Ok(open) = body.trim().parse() {
                        return open;
                    }
                }
            }
        };
        let mut blocker = std::net::TcpStream::connect(addr).unwrap();
        let mut established = std::net::TcpStream::connect(addr).unwrap();
        ask(&mut established, "/warm");
        assert_eq!(answer(&mut established), 2);
        ask(&mut blocker, "/block");
        std::thread::sleep(Duration::from_millis(50));
        let burst: Vec<_> = (0..BURST)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        ask(&mut established, "/probe");
        let open_at_probe = answer(&mut established);
        assert_eq!(answer(&mut blocker), 2);
        assert!(
            open_at_probe <= 2 + ACCEPTS_PER_TURN_MAX as usize,
            "{} of the burst's {BURST} connections were taken before the waiting request",
            open_at_probe - 2
        );
        stop_tx.send(true).unwrap();
        drop(burst);
        drop((blocker, established));
        server.join().unwrap();
    }
}
