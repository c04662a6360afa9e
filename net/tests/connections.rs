//! Connection-level bounds: a whole-request read deadline, the per-host connection cap
//! and the file-descriptor limit raised at start.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{parse_response, Engine, Response};
use socket2::{Domain, Protocol, Socket, Type};

/// Reads until the server closes, at most `within`; (bytes, whether it closed in time).
fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let until = Instant::now() + within;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (raw, false);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut chunk) {
            Ok(0) => return (raw, true),
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (raw, false)
            }
            // A reset after the answer also ends the connection.
            Err(_) => return (raw, true),
        }
    }
}

/// A socket bound to the loopback address `from`, and the address of `port` on 127.0.0.1.
fn socket_from(from: &str, port: u16) -> (Socket, SocketAddr) {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    (socket, ([127, 0, 0, 1], port).into())
}

/// A connection to `port` on 127.0.0.1 from the loopback address `from`.
fn connect_from(from: &str, port: u16) -> TcpStream {
    let (socket, server) = socket_from(from, port);
    socket.connect(&server.into()).unwrap();
    socket.into()
}

/// Whether a connection from `from` to `port` completes its handshake within `within`.
fn connects_within(from: &str, port: u16, within: Duration) -> bool {
    let (socket, server) = socket_from(from, port);
    socket.connect_timeout(&server.into(), within).is_ok()
}

/// The engine's metrics, read from `port` by a connection from `from`.
fn metrics_from(from: &str, port: u16) -> String {
    let mut stream = connect_from(from, port);
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (raw, _) = read_until_closed(&mut stream, Duration::from_secs(5));
    String::from_utf8_lossy(&raw).into_owned()
}

/// One keep-alive `GET /healthz` on an open connection.
fn healthz(stream: &mut TcpStream) -> Response {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 1024];
    // {"status":"ok"} is the whole body: read until it is in.
    while !raw.ends_with(b"}") {
        let n = stream.read(&mut chunk).expect("an answer to /healthz");
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&chunk[..n]);
    }
    parse_response(&raw)
}

#[test]
fn a_half_sent_body_is_cut_with_408_after_the_read_deadline() {
    let engine = Engine::start_with(&[("REQUEST_READ_TIMEOUT_MS", "1000")]);
    let mut stream = connect_from("127.0.0.1", engine.port("gateway"));
    let started = Instant::now();
    // No signature needed: the body is read before anything is checked.
    stream
        .write_all(b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"type\":\"pro")
        .unwrap();
    let (raw, closed) = read_until_closed(&mut stream, Duration::from_secs(8));
    let took = started.elapsed();
    assert!(closed, "the connection is still open after {took:?}");
    let response = parse_response(&raw);
    assert_eq!(response.status, 408, "{}", String::from_utf8_lossy(&raw));
    assert_eq!(response.error_code(), "request_timeout");
    assert_eq!(response.header("connection"), Some("close"));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "cut after {took:?}"
    );
}

/// Connections opened together must not all be cut in the same millisecond (the
/// thread would run every 408 in a row while its other connections wait): each gets
/// the configured time plus up to a quarter more.
#[test]
fn half_sent_bodies_sent_together_are_cut_at_spread_deadlines() {
    const CONNECTIONS: usize = 40;
    let engine = Engine::start_with(&[("REQUEST_READ_TIMEOUT_MS", "1000")]);
    let port = engine.port("gateway");
    let start = std::sync::Barrier::new(CONNECTIONS);
    let cut_after: Vec<Duration> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..CONNECTIONS)
            .map(|_| {
                let start = &start;
                scope.spawn(move || {
                    let mut stream = connect_from("127.0.0.1", port);
                    start.wait();
                    let sent = Instant::now();
                    stream
                        .write_all(b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{")
                        .unwrap();
                    let (raw, closed) = read_until_closed(&mut stream, Duration::from_secs(8));
                    assert!(closed, "still open after 8 s");
                    assert_eq!(parse_response(&raw).status, 408);
                    sent.elapsed()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let first = *cut_after.iter().min().unwrap();
    let last = *cut_after.iter().max().unwrap();
    assert!(
        first >= Duration::from_millis(990),
        "one was cut after {first:?}"
    );
    assert!(last < Duration::from_secs(4), "one was cut after {last:?}");
    // 40 draws over 250 ms: their range is below 100 ms with a chance under 1e-9.
    assert!(
        last - first >= Duration::from_millis(100),
        "all {CONNECTIONS} were cut between {first:?} and {last:?}"
    );
}

#[test]
fn unfinished_headers_are_cut_with_408_after_the_read_deadline() {
    let engine = Engine::start_with(&[("REQUEST_READ_TIMEOUT_MS", "1000")]);
    let mut stream = connect_from("127.0.0.1", engine.port("leaderboard"));
    let started = Instant::now();
    // Slow-loris: a header line every 300 ms keeps hyper's own header timer happy.
    stream
        .write_all(b"GET /leaderboard HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    for i in 0..6 {
        std::thread::sleep(Duration::from_millis(300));
        if stream
            .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
            .is_err()
        {
            break;
        }
    }
    let (raw, closed) = read_until_closed(&mut stream, Duration::from_secs(8));
    let took = started.elapsed();
    assert!(closed, "the connection is still open after {took:?}");
    let response = parse_response(&raw);
    assert_eq!(response.status, 408, "{}", String::from_utf8_lossy(&raw));
    assert_eq!(response.error_code(), "request_timeout");
    assert!(took < Duration::from_secs(4), "cut after {took:?}");
}

#[test]
fn a_host_at_its_connection_cap_gets_503_then_no_answer_while_another_host_is_served() {
    let engine = Engine::start_with(&[("MAX_CONNECTIONS_PER_HOST", "4")]);
    let port = engine.port("fairness");
    // Each held connection has been answered, so the engine has accepted it.
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut stream = connect_from("127.0.0.1", port);
            assert_eq!(healthz(&mut stream).status, 200);
            stream
        })
        .collect();
    let mut refused = connect_from("127.0.0.1", port);
    let (raw, closed) = read_until_closed(&mut refused, Duration::from_secs(5));
    assert!(closed, "the fifth connection of one host is still open");
    let response = parse_response(&raw);
    assert_eq!(response.status, 503, "{}", String::from_utf8_lossy(&raw));
    assert_eq!(response.error_code(), "too_many_connections");
    assert_eq!(response.header("retry-after"), Some("1"));
    assert_eq!(response.header("connection"), Some("close"));
    // Refused once, the host's next attempts are dropped by the kernel (syn_gate): no
    // handshake, no accept, nothing for the engine to answer.
    for port in [port, engine.port("gateway")] {
        assert!(
            !connects_within("127.0.0.1", port, Duration::from_millis(500)),
            "a gated host completed a handshake on port {port}"
        );
    }

    // Another host still gets in, and sees the refusal counted and the host gated.
    let mut other = connect_from("127.0.0.2", port);
    assert_eq!(healthz(&mut other).status, 200);
    let metrics = metrics_from("127.0.0.2", port);
    assert!(
        metrics.contains("liveops_connections_refused_total{reason=\"host_limit\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("liveops_connection_hosts_gated 1"),
        "{metrics}"
    );
    // The held connections still work, and closing one frees its slot.
    assert_eq!(healthz(&mut held[0]).status, 200);
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = connect_from("127.0.0.1", port);
        again
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let (raw, _) = read_until_closed(&mut again, Duration::from_secs(5));
        if parse_response(&raw).status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot was never reused");
        std::thread::sleep(Duration::from_millis(20));
    }
    let metrics = metrics_from("127.0.0.2", port);
    assert!(
        metrics.contains("liveops_connection_hosts_gated 0"),
        "{metrics}"
    );
}

/// (soft, hard) "Max open files" of a process, from /proc.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let fields: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    (fields[0].to_owned(), fields[1].to_owned())
}

#[test]
fn the_fd_soft_limit_is_raised_to_the_hard_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    // Start the engine with a soft limit below its hard one (children inherit it).
    let ours = getrlimit(Resource::Nofile);
    let hard = ours.maximum.unwrap_or(1 << 20);
    let low = (hard / 2).min(1024);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(low),
            maximum: ours.maximum,
        },
    )
    .unwrap();
    let engine = Engine::start();
    setrlimit(Resource::Nofile, ours).unwrap();
    let (soft, hard) = open_files_limits(engine.pid());
    assert_eq!(
        soft, hard,
        "soft limit {soft} (started at {low}), hard {hard}"
    );
}
