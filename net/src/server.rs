//! Assembles the engine: listeners, one pinned thread per shard running that shard's
//! worker and its share of every port's connections, readiness and graceful shutdown.

use std::io::Write;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::config::{Config, Service};
use crate::mesh::{unix_now_ms, Mesh};
use crate::metrics::Metrics;
use crate::routes::{self, App};
use crate::runtime::{bind_reuseport, serve, spawn_cores, Connections};
use liveops_engine::fairness::AuditRecord;
use liveops_engine::shard::Shard;
use liveops_engine::signing::{ReceiptSigner, Signer};

/// How long shutdown waits for in-flight requests before closing regardless; with the
/// final flush this keeps the exit within the contract's 2 s.
const DRAIN_DEADLINE_MS: u64 = 1_500;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen for {service} on {addr}: {source}")]
    Bind {
        service: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start shard threads: {0}")]
    Spawn(std::io::Error),
}

/// A running engine.
pub struct Server {
    /// The bound address of each service (the real port when 0 was asked for).
    pub addrs: Vec<(Service, SocketAddr)>,
    app: Arc<App>,
    shutdown: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

/// An audit record as one stdout line; `audit: true` lets log shippers pick them out.
#[derive(Serialize)]
struct AuditLine<'a> {
    audit: bool,
    #[serde(flatten)]
    record: &'a AuditRecord,
}

impl Server {
    pub fn start(config: &Config) -> Result<Server, StartError> {
        let shards = config.shards;
        let mut per_thread: Vec<Vec<(Service, std::net::TcpListener)>> =
            (0..shards).map(|_| Vec::new()).collect();
        let mut addrs = Vec::new();
        for (i, service) in Service::ALL.into_iter().enumerate() {
            let addr = SocketAddr::new(config.bind_addr, config.ports[i]);
            let listeners = bind_reuseport(addr, shards).map_err(|source| StartError::Bind {
                service: service.as_str(),
                addr,
                source,
            })?;
            let bound = listeners[0]
                .local_addr()
                .map_err(|source| StartError::Bind {
                    service: service.as_str(),
                    addr,
                    source,
                })?;
            addrs.push((service, bound));
            for (thread, listener) in listeners.into_iter().enumerate() {
                per_thread[thread].push((service, listener));
            }
        }
        let metrics = Arc::new(Metrics::new());
        let mesh = Mesh::new(shards, config.shard_inbox_max);
        let app = Arc::new(App {
            mesh: mesh.clone(),
            metrics: metrics.clone(),
            signer: Signer::new(&config.hmac_secret),
            receipts: ReceiptSigner::new(&config.receipt_secret),
            policy: config.policy.clone(),
            lb_topn: config.lb_topn,
            admin_token: config.admin_token.clone(),
            ready: Default::default(),
            shutting_down: Default::default(),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let started = Arc::new(AtomicUsize::new(0));
        let receipt_secret = config.receipt_secret.clone();
        let thread_app = app.clone();
        let threads = spawn_cores("shard", per_thread, move |index, listeners| {
            let app = thread_app.clone();
            let mut shutdown = shutdown_rx.clone();
            let started = started.clone();
            let shard = Shard::new(
                app.policy.clone(),
                ReceiptSigner::new(&receipt_secret),
                unix_now_ms(),
            );
            async move {
                let connections = Rc::new(Connections::default());
                for (service, listener) in listeners {
                    let app = app.clone();
                    let handler = Rc::new(move |req| routes::handle(app.clone(), service, req));
                    tokio::task::spawn_local(serve(
                        listener,
                        handler,
                        shutdown.clone(),
                        connections.clone(),
                    ));
                }
                let mesh = app.mesh.clone();
                let metrics = app.metrics.clone();
                let shard_label = index.to_string();
                let worker = tokio::task::spawn_local(async move {
                    mesh.run_worker(index, shard, |shard| {
                        after_turn(shard, &metrics, &shard_label)
                    })
                    .await;
                });
                if started.fetch_add(1, Ordering::AcqRel) + 1 == app.mesh.shards() {
                    app.ready.store(true, Ordering::Release);
                    app.metrics.ready.set(1);
                    tracing::info!(shards = app.mesh.shards(), "ready");
                }
                let _ = shutdown.wait_for(|&s| s).await;
                if !connections
                    .wait_closed(Duration::from_millis(DRAIN_DEADLINE_MS))
                    .await
                {
                    tracing::warn!(
                        shard = index,
                        open = connections.open(),
                        "connections still open at the drain deadline"
                    );
                }
                app.mesh.thread_done_serving();
                let _ = worker.await;
            }
        })
        .map_err(StartError::Spawn)?;
        Ok(Server {
            addrs,
            app,
            shutdown,
            threads,
        })
    }

    /// Stops accepting, lets in-flight requests finish (new ones get 503), waits for
    /// every shard to finish its queued work, at most `deadline`. True if all stopped.
    pub fn shutdown(self, deadline: Duration) -> bool {
        let until = Instant::now() + deadline;
        self.app.shutting_down.store(true, Ordering::Release);
        self.app.ready.store(false, Ordering::Release);
        self.app.metrics.ready.set(0);
        let _ = self.shutdown.send(true);
        while Instant::now() < until {
            if self.threads.iter().all(JoinHandle::is_finished) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

/// After each worker turn: hand the journal on, print audit records, refresh gauges.
fn after_turn(shard: &mut Shard, metrics: &Metrics, shard_label: &str) {
    // Acknowledgements are in memory until the write-ahead log takes the journal.
    metrics
        .records_applied
        .inc_by(shard.take_journal().len() as u64);
    let audit = shard.take_audit_outbox();
    if !audit.is_empty() {
        let mut out = std::io::stdout().lock();
        for record in &audit {
            let line = serde_json::to_vec(&AuditLine {
                audit: true,
                record,
            })
            .expect("audit records serialize");
            let _ = out.write_all(&line);
            let _ = out.write_all(b"\n");
        }
        let _ = out.flush();
    }
    metrics
        .players
        .with_label_values(&[shard_label])
        .set(shard.players_len() as i64);
    metrics
        .idempotency_keys
        .with_label_values(&[shard_label])
        .set(shard.idempotency_keys() as i64);
}
