//! The physical limit the engine is measured against: the same thread-per-core runtime
//! and HTTP stack as `liveops`, doing only what every event must cost anyway — read
//! the body, verify its HMAC — and answering 202.
//!
//! `PORT` (default 8090), `BIND_ADDR` (default 127.0.0.1), `SHARDS` (default: cores),
//! `HMAC_SECRET` (required, ≥ 32 bytes). Stops on SIGTERM/SIGINT or after
//! `BASELINE_SECONDS` (default 3600) so a forgotten run ends by itself.

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use liveops_engine::signing::Signer;
use liveops_net::http::{bytes_response, read_body};
use liveops_net::runtime::{
    bind_reuseport, derived_connection_caps, raise_fd_limit, serve, spawn_cores,
    ConnectionCounters, ConnectionLimits, Connections, ServeOptions,
};

const BODY_BYTES_MAX: usize = 1 << 20;

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn main() -> anyhow::Result<()> {
    let secret = std::env::var("HMAC_SECRET").context("HMAC_SECRET is required")?;
    if secret.len() < 32 {
        bail!("HMAC_SECRET must be at least 32 bytes");
    }
    let shards: usize = env_or(
        "SHARDS",
        &std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .to_string(),
    )
    .parse()?;
    let bind: IpAddr = env_or("BIND_ADDR", "127.0.0.1").parse()?;
    let port: u16 = env_or("PORT", "8090").parse()?;
    let lifetime_s: u64 = env_or("BASELINE_SECONDS", "3600").parse()?;
    // The engine's connection bounds and defaults, so both measure the same runtime.
    let (fd_soft_limit, _) = raise_fd_limit()?;
    let (max_connections, max_per_host) = derived_connection_caps(fd_soft_limit);
    let options = ServeOptions {
        limits: Arc::new(ConnectionLimits::new(
            max_connections,
            max_per_host,
            ConnectionCounters::unregistered(),
        )),
        request_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
    };
    let listeners = bind_reuseport(SocketAddr::new(bind, port), shards)?;
    eprintln!(
        "baseline listening addr={} shards={shards}",
        listeners[0].local_addr()?
    );
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let signer = Signer::new(secret.as_bytes());
    let threads = spawn_cores("baseline", listeners, move |_, listener| {
        let signer = signer.clone();
        let stop = stop_rx.clone();
        let options = options.clone();
        async move {
            let handler = Rc::new(move |req: hyper::Request<hyper::body::Incoming>| {
                let signer = signer.clone();
                async move {
                    if req.method() != Method::POST {
                        return bytes_response(
                            StatusCode::METHOD_NOT_ALLOWED,
                            Bytes::new(),
                            "text/plain",
                        );
                    }
                    let (parts, body) = req.into_parts();
                    let Ok(bytes) = read_body(&parts.headers, body, BODY_BYTES_MAX).await else {
                        return bytes_response(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            Bytes::new(),
                            "text/plain",
                        );
                    };
                    let header = parts.headers.get("x-signature").map(|v| v.as_bytes());
                    match signer.verify_header(header, &bytes) {
                        Ok(()) => bytes_response(
                            StatusCode::ACCEPTED,
                            Bytes::from_static(b"{\"status\":\"accepted\"}"),
                            "application/json",
                        ),
                        Err(_) => {
                            bytes_response(StatusCode::UNAUTHORIZED, Bytes::new(), "text/plain")
                        }
                    }
                }
            });
            serve(
                listener,
                handler,
                stop,
                Rc::new(Connections::default()),
                options,
            )
            .await;
        }
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = tokio::time::sleep(Duration::from_secs(lifetime_s)) => {}
        }
        anyhow::Ok(())
    })?;
    let _ = stop.send(true);
    for thread in threads {
        let _ = thread.join();
    }
    Ok(())
}
