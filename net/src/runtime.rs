//! Thread-per-core plumbing: pinned threads with a current-thread tokio runtime each,
//! SO_REUSEPORT listeners, and an HTTP/1.1 accept loop with graceful shutdown.
//!
//! Nothing here knows about LiveOps: the engine and the bench's baseline server share it,
//! so the baseline measures the same runtime shape the engine runs on.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{watch, Notify};

/// Pending connections the kernel queues per listener before refusing.
const LISTEN_BACKLOG: i32 = 4096;
/// Open connections one thread serves at most; more are closed on accept, so a
/// connection flood cannot exhaust memory or file descriptors.
pub const CONNECTIONS_PER_THREAD_MAX: usize = 16_384;
/// Time a client has to send the next request's headers, idle keep-alive included:
/// slow-loris protection, and the longest an idle connection is kept.
const HEADER_READ_TIMEOUT_MS: u64 = 60_000;

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

/// Serves HTTP/1.1 (keep-alive) on `listener` with `handler` until `shutdown` turns
/// true; then stops accepting and asks each open connection to close after its
/// in-flight request.
pub async fn serve<H, Fut>(
    listener: std::net::TcpListener,
    handler: Rc<H>,
    shutdown: watch::Receiver<bool>,
    connections: Rc<Connections>,
) where
    H: Fn(Request<Incoming>) -> Fut + 'static,
    Fut: Future<Output = HttpResponse> + 'static,
{
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot register listener");
            return;
        }
    };
    let mut stop = shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|&s| s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning on the error.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if connections.open() >= CONNECTIONS_PER_THREAD_MAX {
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        connections.opened();
        let handler = handler.clone();
        let connections = connections.clone();
        let mut stop = shutdown.clone();
        tokio::task::spawn_local(async move {
            let service = service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(PeerAddr(peer));
                let response = handler(req);
                async move { Ok::<_, std::convert::Infallible>(response.await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_millis(HEADER_READ_TIMEOUT_MS))
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.wait_for(|&s| s) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            connections.closed();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
