//! A TCP forwarder in front of a server, to make an outage without killing the server
//! (for servers that keep their state only in memory, such as moto).

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the accept loop sleeps when nobody is connecting (it polls, so that it can
/// see `stop`).
const ACCEPT_POLL_MS: u64 = 2;

/// A TCP forwarder from a port of its own to a server's: [`Proxy::cut`] resets every
/// connection through it and refuses new ones (the server vanishes mid-request, as in a
/// crash, while its state survives), [`Proxy::restore`] lets them in again. Stopped on
/// drop.
pub struct Proxy {
    /// Where clients connect instead of the server's port.
    pub port: u16,
    /// What the accept thread and the test share.
    state: Arc<ProxyState>,
    /// Joined on drop, so no connection is forwarded after the proxy is gone.
    accept_thread: Option<JoinHandle<()>>,
}

struct ProxyState {
    /// True while connections are refused.
    cut: AtomicBool,
    /// True once the proxy is dropped.
    stop: AtomicBool,
    /// Both ends of every open connection, to reset them on `cut`.
    open: Mutex<Vec<TcpStream>>,
}

impl Proxy {
    /// Starts forwarding a free port of 127.0.0.1 to `target_port` of 127.0.0.1.
    pub fn start(target_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("bound").port();
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let state = Arc::new(ProxyState {
            cut: false.into(),
            stop: false.into(),
            open: Vec::new().into(),
        });
        let shared = Arc::clone(&state);
        let accept_thread = std::thread::spawn(move || {
            while !shared.stop.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(ACCEPT_POLL_MS));
                    continue;
                };
                if shared.cut.load(Ordering::Relaxed) {
                    continue; // dropped: the connection closes at once
                }
                forward(&shared, client, target_port);
            }
        });
        Proxy {
            port,
            state,
            accept_thread: Some(accept_thread),
        }
    }

    /// Resets every connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::Relaxed);
        for stream in self.state.open.lock().expect("not poisoned").drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::Relaxed);
    }
}

/// Connects `client` to the server and copies both ways on threads of their own; a
/// connection the server refuses is dropped.
fn forward(state: &ProxyState, client: TcpStream, target_port: u16) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
        return;
    };
    let clone = |s: &TcpStream| s.try_clone().expect("a socket handle");
    if client.set_nonblocking(false).is_err() {
        return;
    }
    let mut open = state.open.lock().expect("not poisoned");
    open.push(clone(&client));
    open.push(clone(&server));
    for (mut from, mut to) in [(clone(&client), clone(&server)), (server, client)] {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Both);
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.state.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
    }
}
