//! Assembles the engine: listeners, one pinned thread per shard running that shard's
//! worker and its share of every port's connections, recovery before readiness, and
//! graceful shutdown.
//!
//! Start-up: with the data directory locked, its layout is prepared (re-sharded if
//! `SHARDS` changed); each shard thread starts serving at once (`/healthz` 200,
//! everything else 503 `not_ready`) while its shard is recovered on a helper thread; when
//! every shard is back, keys whose completion a crash cut off are rebuilt on their home
//! shards, and only then is the engine ready. If a shard cannot be recovered, every
//! request is refused with 503 `storage_failed` until the process exits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::committer::{Committer, CommitterConfig};
use crate::config::{Config, Durability, RecoveryMode, Service};
use crate::host_budget::HostBudget;
use crate::layout::{self, DataDirLock, Layout};
use crate::mesh::{unix_now_ms, Mesh};
use crate::metrics::Metrics;
use crate::mirrors::{MirrorPlan, Mirrors};
use crate::routes::{self, App};
use crate::runtime::{
    bind_reuseport, derived_connection_caps, raise_fd_limit, serve, spawn_cores, ConnectionLimits,
    Connections, ServeOptions, FDS_RESERVED,
};
use crate::store::{merge_keyed, recovered_response, KeyedEvents, ShardStore, StoreError};
use liveops_engine::shard::Shard;
use liveops_engine::signing::{ReceiptSigner, Signer};
use liveops_storage::{FileSystem, LogWatch, StdFs, WalOptions};

/// Client hosts whose leaderboard read budget is remembered at once (a bucket is a few
/// dozen bytes).
const READ_BUDGET_HOSTS_MAX: usize = 65_536;
/// How long shutdown waits for in-flight requests before closing regardless; with the
/// final flush this keeps the exit within the contract's 2 s.
const DRAIN_DEADLINE_MS: u64 = 1_500;
/// Housekeeping tick with fsync durability: checkpoints are checked this often.
const TICK_INTERVAL_FSYNC_MS: u64 = 1_000;
/// While waiting for recovery, how often shard threads are checked for having died.
const SHARD_THREAD_CHECK_INTERVAL_MS: u64 = 50;
/// At shutdown, how long the mirrors get to finish their current pass (within the
/// contract's 2 s exit); their servers hold their cursors, so an unfinished pass is
/// shipped again by the next run.
const MIRROR_STOP_DEADLINE_MS: u64 = 300;

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
    #[error("data directory: {0}")]
    Layout(StoreError),
    #[error("recovery of shard {shard} ({dir}) failed: {error}")]
    Recovery {
        shard: usize,
        dir: PathBuf,
        error: StoreError,
    },
    #[error("shard thread {shard} died during start (see the panic above)")]
    ShardThreadDied { shard: usize },
    #[error("recovery of shard {shard} ({dir}) crashed: {message}")]
    RecoveryPanicked {
        shard: usize,
        dir: PathBuf,
        message: String,
    },
}

/// A running engine.
pub struct Server {
    /// The bound address of each service (the real port when 0 was asked for).
    pub addrs: Vec<(Service, SocketAddr)>,
    app: Arc<App>,
    shutdown: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
    recovered: mpsc::Receiver<Result<KeyedEvents, StartError>>,
    ttl_ms: u64,
    /// The configured mirrors until the engine is ready ([`Server::wait_ready`] starts
    /// them), then the running ones.
    mirror_plan: Mutex<Option<MirrorPlan>>,
    mirrors: Mutex<Option<Mirrors>>,
    /// Held for the server's life: no other engine uses the data directory meanwhile.
    _data_dir_lock: DataDirLock,
}

/// How each shard's log writes and recovers.
fn wal_options(config: &Config) -> WalOptions {
    WalOptions {
        durability: match config.durability {
            Durability::Fsync => liveops_storage::Durability::Fsync,
            Durability::Batch => liveops_storage::Durability::Batch,
        },
        fsync_interval_ms: config.fsync_interval_ms,
        recovery_mode: match config.recovery_mode {
            RecoveryMode::Strict => liveops_storage::RecoveryMode::Strict,
            RecoveryMode::Truncate => liveops_storage::RecoveryMode::TruncateAtCorruption,
        },
        ..WalOptions::default()
    }
}

impl Server {
    /// Binds, prepares the data directory `lock` guards (`config.data_dir`) and starts
    /// the shard threads; recovery runs in the background: call [`Server::wait_ready`].
    pub fn start(config: &Config, lock: DataDirLock) -> Result<Server, StartError> {
        // First: every descriptor opened below counts against this limit.
        let fd_soft_limit = match raise_fd_limit() {
            Ok((soft, hard)) => {
                tracing::info!(soft, hard, "file descriptor limit (soft raised to hard)");
                soft
            }
            Err(e) => {
                let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
                    .current
                    .unwrap_or(u64::MAX);
                tracing::warn!(error = %e, soft, "cannot raise the file descriptor limit");
                soft
            }
        };
        let shards = config.shards;
        let mut per_thread: Vec<Vec<(Service, std::net::TcpListener)>> =
            (0..shards).map(|_| Vec::new()).collect();
        let mut addrs = Vec::new();
        for (i, service) in Service::ALL.into_iter().enumerate() {
            let addr = SocketAddr::new(config.bind_addr, config.ports[i]);
            let bind_error = |source| StartError::Bind {
                service: service.as_str(),
                addr,
                source,
            };
            let listeners = bind_reuseport(addr, shards).map_err(bind_error)?;
            addrs.push((service, listeners[0].local_addr().map_err(bind_error)?));
            for (thread, listener) in listeners.into_iter().enumerate() {
                per_thread[thread].push((service, listener));
            }
        }
        let fs: Arc<dyn FileSystem> = Arc::new(StdFs);
        let wal = wal_options(config);
        let policy = config.policy.clone();
        let receipt_secret = config.receipt_secret.clone();
        let empty_shard = {
            let (policy, secret) = (policy.clone(), receipt_secret.clone());
            move || Shard::new(policy.clone(), ReceiptSigner::new(&secret), unix_now_ms())
        };
        let ttl_ms = policy.idempotency_ttl_ms;
        let prepared = layout::prepare(
            fs.clone(),
            &lock,
            shards,
            &wal,
            &empty_shard,
            ttl_ms,
            unix_now_ms(),
        )
        .map_err(StartError::Layout)?;
        if let Some(from) = prepared.migrated_from {
            tracing::info!(from, to = shards, "data directory re-sharded");
        }
        let layout = prepared.layout;

        let metrics = Arc::new(Metrics::new());
        let mirror_plan = MirrorPlan::new(config, &layout);
        let watches: Vec<Option<Arc<LogWatch>>> = (0..shards)
            .map(|i| mirror_plan.as_ref().map(|plan| plan.watch(i)))
            .collect();
        if let Some(plan) = &mirror_plan {
            metrics.set_sinks(plan.stats());
        }
        let (derived_max, derived_per_host) = derived_connection_caps(fd_soft_limit);
        let max_connections = config.max_connections.unwrap_or(derived_max);
        let max_per_host = config
            .max_connections_per_host
            .unwrap_or(derived_per_host)
            .min(max_connections);
        if max_connections as u64 > fd_soft_limit.saturating_sub(FDS_RESERVED) {
            tracing::warn!(
                max_connections,
                fd_soft_limit,
                "MAX_CONNECTIONS exceeds the file descriptor limit: accepts may fail first"
            );
        }
        tracing::info!(
            max_connections,
            max_connections_per_host = max_per_host,
            request_read_timeout_ms = config.request_read_timeout_ms,
            idle_timeout_ms = config.idle_timeout_ms,
            "connection limits"
        );
        let serve_options = ServeOptions {
            limits: Arc::new(ConnectionLimits::new(
                max_connections,
                max_per_host,
                metrics.connection_counters(),
            )),
            request_read_timeout: Duration::from_millis(config.request_read_timeout_ms),
            idle_timeout: Duration::from_millis(config.idle_timeout_ms),
        };
        let mesh = Mesh::new(shards, config.shard_inbox_max);
        let app = Arc::new(App {
            mesh,
            metrics,
            signer: Signer::new(&config.hmac_secret),
            receipts: ReceiptSigner::new(&config.receipt_secret),
            policy,
            lb_topn: config.lb_topn,
            read_budget: HostBudget::new(config.read_units_per_host_s, READ_BUDGET_HOSTS_MAX),
            admin_token: config.admin_token.clone(),
            ready: Default::default(),
            start_failed: Default::default(),
            shutting_down: Default::default(),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (recovered_tx, recovered) = mpsc::channel();
        let committer = CommitterConfig {
            tick_interval: match config.durability {
                Durability::Fsync => Duration::from_millis(TICK_INTERVAL_FSYNC_MS),
                Durability::Batch => Duration::from_millis(config.fsync_interval_ms),
            },
            checkpoint_records: config.checkpoint_records,
            checkpoint_interval: Duration::from_millis(config.checkpoint_interval_ms),
            interval_sync: config.durability == Durability::Batch,
        };
        let thread_app = app.clone();
        let threads = spawn_cores("shard", per_thread, move |index, listeners| {
            let app = thread_app.clone();
            let shutdown = shutdown_rx.clone();
            let recovered_tx = recovered_tx.clone();
            let recovery = Recovery {
                fs: fs.clone(),
                layout: layout.clone(),
                wal: wal.clone(),
                watch: watches[index].clone(),
                empty: Shard::new(
                    app.policy.clone(),
                    ReceiptSigner::new(&receipt_secret),
                    unix_now_ms(),
                ),
            };
            shard_thread(
                index,
                app,
                Serving {
                    listeners,
                    options: serve_options.clone(),
                },
                shutdown,
                recovery,
                recovered_tx,
                committer.clone(),
            )
        })
        .map_err(StartError::Spawn)?;
        Ok(Server {
            addrs,
            app,
            shutdown,
            threads,
            recovered,
            ttl_ms,
            mirror_plan: Mutex::new(mirror_plan),
            mirrors: Mutex::new(None),
            _data_dir_lock: lock,
        })
    }

    /// Waits for every shard's recovery, rebuilds cut-off idempotency keys, and opens
    /// for traffic. On the first shard that fails, returns its error at once and from
    /// then on refuses every request with 503 `storage_failed`, not `not_ready`.
    pub fn wait_ready(&self) -> Result<(), StartError> {
        let mut keyed = KeyedEvents::new();
        let mut reported = 0;
        while reported < self.threads.len() {
            // Each shard thread sends one result, even if its recovery panics; a thread
            // that dies otherwise is noticed here rather than waited for forever.
            let result = match self
                .recovered
                .recv_timeout(Duration::from_millis(SHARD_THREAD_CHECK_INTERVAL_MS))
            {
                Ok(result) => result,
                Err(mpsc::RecvTimeoutError::Timeout) => match self.dead_shard_thread() {
                    Some(shard) => Err(StartError::ShardThreadDied { shard }),
                    None => continue,
                },
                Err(mpsc::RecvTimeoutError::Disconnected) => Err(StartError::ShardThreadDied {
                    shard: self.dead_shard_thread().unwrap_or(0),
                }),
            };
            match result {
                Ok(shard_keyed) => merge_keyed(&mut keyed, shard_keyed),
                Err(e) => {
                    self.app.start_failed.store(true, Ordering::Release);
                    return Err(e);
                }
            }
            reported += 1;
        }
        let restored = self.restore_keys(keyed);
        if restored > 0 {
            tracing::warn!(
                keys = restored,
                "rebuilt idempotency keys whose completion a crash cut off"
            );
        }
        self.app.ready.store(true, Ordering::Release);
        self.app.metrics.ready.set(1);
        tracing::info!(shards = self.app.mesh.shards(), "ready");
        self.start_mirrors();
        Ok(())
    }

    /// Starts the configured mirrors (they rebuild from engine state, so only once it is
    /// ready). A mirror that cannot start is logged, never fatal: ingestion does not
    /// depend on it.
    fn start_mirrors(&self) {
        let Some(plan) = self.mirror_plan.lock().expect("not poisoned").take() else {
            return;
        };
        match plan.start(self.app.mesh.clone()) {
            Ok(mirrors) => *self.mirrors.lock().expect("not poisoned") = Some(mirrors),
            Err(e) => tracing::error!("mirrors not started: {e}"),
        }
    }

    /// A shard thread that ended: before shutdown, only a panic ends one.
    fn dead_shard_thread(&self) -> Option<usize> {
        self.threads.iter().position(JoinHandle::is_finished)
    }

    fn restore_keys(&self, keyed: KeyedEvents) -> usize {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime builds");
        let mesh = self.app.mesh.clone();
        let ttl_ms = self.ttl_ms;
        runtime.block_on(async move {
            let mut restored = 0;
            for (key, request) in keyed {
                let home = liveops_engine::shard_of(&key, mesh.shards());
                let response = recovered_response(&request);
                let expires_ms = request.at_ms.saturating_add(ttl_ms);
                let done = mesh
                    .call_until_done(home, move |shard, now_ms| {
                        shard.restore_key(key, request.fingerprint, response, expires_ms, now_ms)
                    })
                    .await;
                restored += usize::from(done == Ok(true));
            }
            restored
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
        let mut stopped = false;
        while Instant::now() < until {
            if self.threads.iter().all(JoinHandle::is_finished) {
                stopped = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(mirrors) = self.mirrors.lock().expect("not poisoned").take() {
            mirrors.stop(Duration::from_millis(MIRROR_STOP_DEADLINE_MS));
        }
        stopped
    }
}

/// What a shard thread needs to recover its shard.
struct Recovery {
    fs: Arc<dyn FileSystem>,
    layout: Layout,
    wal: WalOptions,
    /// The change feed's watch of this shard's log, when mirrors are configured.
    watch: Option<Arc<LogWatch>>,
    /// A fresh shard to rebuild into.
    empty: Shard,
}

/// What a shard thread accepts on, and how its connections are bounded.
struct Serving {
    /// One SO_REUSEPORT copy of each service's listener.
    listeners: Vec<(Service, std::net::TcpListener)>,
    options: ServeOptions,
}

async fn shard_thread(
    index: usize,
    app: Arc<App>,
    serving: Serving,
    mut shutdown: watch::Receiver<bool>,
    recovery: Recovery,
    recovered_tx: mpsc::Sender<Result<KeyedEvents, StartError>>,
    committer: CommitterConfig,
) {
    let connections = Rc::new(Connections::default());
    for (service, listener) in serving.listeners {
        let app = app.clone();
        let handler = Rc::new(move |req| routes::handle(app.clone(), service, req));
        tokio::task::spawn_local(serve(
            listener,
            handler,
            shutdown.clone(),
            connections.clone(),
            serving.options.clone(),
        ));
    }
    // Recovery reads files: off this thread, so its connections get answers meanwhile.
    let dir = recovery.layout.shard_dir(index);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let recovery_dir = dir.clone();
    let watch = recovery.watch.clone();
    std::thread::spawn(move || {
        // A panic here must become a reported failure: the engine would otherwise wait
        // for this shard, answering "not_ready", forever.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ShardStore::recover(recovery.fs, &recovery_dir, recovery.wal, recovery.empty)
        }));
        let _ = done_tx.send(result.map_err(|panic| {
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned())
        }));
    });
    let recovered = match done_rx.await {
        Ok(Ok(result)) => result.map_err(|error| StartError::Recovery {
            shard: index,
            dir: dir.clone(),
            error,
        }),
        Ok(Err(message)) => Err(StartError::RecoveryPanicked {
            shard: index,
            dir: dir.clone(),
            message,
        }),
        Err(_) => Err(StartError::RecoveryPanicked {
            shard: index,
            dir: dir.clone(),
            message: "the recovery thread ended without an answer".to_owned(),
        }),
    };
    let worker = match recovered {
        Ok(mut recovered) => {
            if let Some(watch) = watch {
                recovered.store.watch_log(watch);
            }
            let report = &recovered.report;
            tracing::info!(
                shard = index,
                checkpoint_lsn = recovered.checkpoint_lsn,
                replayed = report.records_replayed,
                next_lsn = report.next_lsn,
                players = recovered.shard.players_len(),
                took_ms = recovered.took.as_millis() as u64,
                "shard recovered"
            );
            if let Some(cut) = &report.torn_tail {
                tracing::warn!(
                    shard = index,
                    "cut a torn tail (an unacknowledged write): {cut:?}"
                );
            }
            if let Some(cut) = &report.corruption {
                tracing::error!(
                    shard = index,
                    "RECOVERY_MODE=truncate cut corruption and what followed: {cut:?}"
                );
            }
            match Committer::start(index, recovered.store, app.clone(), committer) {
                Ok(mut committer) => {
                    let _ = recovered_tx.send(Ok(recovered.keyed));
                    let shard = recovered.shard;
                    let mesh = app.mesh.clone();
                    Some(tokio::task::spawn_local(async move {
                        mesh.run_worker(index, shard, &mut committer).await
                    }))
                }
                Err(e) => {
                    let _ = recovered_tx.send(Err(StartError::Spawn(e)));
                    None
                }
            }
        }
        Err(error) => {
            let _ = recovered_tx.send(Err(error));
            None
        }
    };
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
    if let Some(worker) = worker {
        let _ = worker.await;
    }
}
