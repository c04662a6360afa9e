//! Pipelined group commit: the shard thread keeps working while its previous turns are
//! written and fsynced.
//!
//! Each shard has a flusher thread that owns its [`ShardStore`]. At the end of a turn
//! the shard thread hands over the turn's journal, its audit records and its answers,
//! and goes on with the next turn. The flusher takes every turn that queued up while it
//! was busy, commits them as one group (one write, one `fdatasync`), then prints their
//! audit lines and sends their answers, in order. So an answer — a read included —
//! leaves only after everything before it in the shard is durable, and the shard thread
//! never waits on the disk: fsync latency bounds latency, not throughput.
//!
//! A group with no answer and no audit line (a turn that only completed idempotency
//! keys, say) promises nothing to anyone, so it is written without its own fsync: the next
//! group's fsync covers it, or the flusher syncs it once the log says it is due
//! (`FSYNC_INTERVAL_MS` after the last sync). Under keyed traffic that halves the fsyncs,
//! and an answer no longer waits behind the fsync of a group nobody waits for.
//!
//! A failed commit or fsync is fatal for the shard: [`Mesh::fail`] stops it taking work,
//! the engine turns not ready, and every answer not yet sent is an error.

use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::mesh::{MeshError, Reply, TurnHost};
use crate::routes::App;
use crate::store::{encode_checkpoint, ShardStore, StoreError};
use liveops_engine::fairness::AuditRecord;
use liveops_engine::shard::{Record, Shard};

/// Turns queued for the flusher before the shard thread waits (back-pressure from
/// the disk instead of unbounded memory).
const FLUSH_QUEUE_TURNS_MAX: usize = 1024;
/// Turns the flusher merges into one group commit at most.
const MERGE_TURNS_MAX: usize = 256;

enum FlushJob {
    Turn {
        records: Vec<Record>,
        audit: Vec<AuditRecord>,
        replies: Vec<Reply>,
    },
    /// A checkpoint of the state after every turn sent before it.
    Checkpoint(Vec<u8>),
    /// With batch durability: fsync if the interval has passed.
    Sync,
}

#[derive(Debug, Clone)]
pub struct CommitterConfig {
    /// Checks checkpoints (and, with batch durability, syncs) this often.
    pub tick_interval: Duration,
    pub checkpoint_records: u64,
    pub checkpoint_interval: Duration,
    /// Batch durability: ask the flusher to sync on every tick.
    pub interval_sync: bool,
}

/// The shard thread's side; implements [`TurnHost`].
pub struct Committer {
    index: usize,
    jobs: Option<SyncSender<FlushJob>>,
    flusher: Option<JoinHandle<()>>,
    app: Arc<App>,
    label: String,
    config: CommitterConfig,
    records_since_checkpoint: u64,
    last_checkpoint: Instant,
}

impl Committer {
    pub fn start(
        index: usize,
        store: ShardStore,
        app: Arc<App>,
        config: CommitterConfig,
    ) -> std::io::Result<Committer> {
        let (jobs, queue) = sync_channel(FLUSH_QUEUE_TURNS_MAX);
        let flusher_app = app.clone();
        let flusher = std::thread::Builder::new()
            .name(format!("flush-{index}"))
            .spawn(move || flush_loop(index, store, queue, flusher_app))?;
        Ok(Committer {
            index,
            jobs: Some(jobs),
            flusher: Some(flusher),
            app,
            label: index.to_string(),
            config,
            records_since_checkpoint: 0,
            last_checkpoint: Instant::now(),
        })
    }

    fn send(&self, job: FlushJob) {
        let jobs = self.jobs.as_ref().expect("open until dropped");
        // The flusher is gone only after a panic; answer rather than hang callers.
        if let Err(std::sync::mpsc::SendError(FlushJob::Turn { replies, .. })) = jobs.send(job) {
            fail_all(replies);
        }
    }
}

impl TurnHost for Committer {
    fn end_turn(&mut self, shard: &mut Shard, replies: Vec<Reply>) {
        let records = shard.take_journal();
        self.records_since_checkpoint += records.len() as u64;
        let audit = shard.take_audit_outbox();
        let metrics = &self.app.metrics;
        metrics
            .players
            .with_label_values(&[&self.label])
            .set(shard.players_len() as i64);
        metrics
            .idempotency_keys
            .with_label_values(&[&self.label])
            .set(shard.idempotency_keys() as i64);
        if records.is_empty() && audit.is_empty() && replies.is_empty() {
            return;
        }
        self.send(FlushJob::Turn {
            records,
            audit,
            replies,
        });
    }

    fn tick_interval(&self) -> Duration {
        self.config.tick_interval
    }

    fn tick(&mut self, shard: &mut Shard) {
        if self.config.interval_sync {
            self.send(FlushJob::Sync);
        }
        let due = self.records_since_checkpoint >= self.config.checkpoint_records
            || (self.records_since_checkpoint > 0
                && self.last_checkpoint.elapsed() >= self.config.checkpoint_interval);
        if !due {
            return;
        }
        let started = Instant::now();
        match encode_checkpoint(shard) {
            Ok(payload) => {
                tracing::info!(
                    shard = self.index,
                    bytes = payload.len(),
                    encode_ms = started.elapsed().as_millis() as u64,
                    "checkpoint encoded"
                );
                self.send(FlushJob::Checkpoint(payload));
            }
            Err(e) => tracing::error!(shard = self.index, "checkpoint skipped: {e}"),
        }
        self.records_since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
    }
}

impl Drop for Committer {
    /// Lets the flusher finish every queued turn before the shard thread exits.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
    }
}

fn fail_all(replies: Vec<Reply>) {
    for reply in replies {
        reply(Err(MeshError::Failed));
    }
}

/// An audit record as one stdout line; `audit: true` lets log shippers pick them out.
#[derive(Serialize)]
struct AuditLine<'a> {
    audit: bool,
    #[serde(flatten)]
    record: &'a AuditRecord,
}

fn flush_loop(index: usize, mut store: ShardStore, queue: Receiver<FlushJob>, app: Arc<App>) {
    let mut failed = false;
    let fatal = |what: &str, e: &StoreError, store: &ShardStore| {
        tracing::error!(shard = index, dir = %store.dir().display(), "FATAL: {what} failed: {e}; the shard stops acknowledging");
        app.mesh.fail(index);
        app.ready.store(false, std::sync::atomic::Ordering::Release);
        app.metrics.ready.set(0);
        app.metrics.storage_failed_shards.inc();
    };
    let shard_label = index.to_string();
    let durable_lsn = app
        .metrics
        .wal_durable_lsn
        .with_label_values(&[&shard_label]);
    let segments = app.metrics.wal_segments.with_label_values(&[&shard_label]);
    let publish = |store: &ShardStore| {
        durable_lsn.set(i64::try_from(store.durable_lsn()).unwrap_or(i64::MAX));
        segments.set(i64::try_from(store.segment_count()).unwrap_or(i64::MAX));
    };
    publish(&store);
    let sync_now = |store: &mut ShardStore, failed: &mut bool| {
        if let Err(e) = store.sync() {
            fatal("fsync", &e, store);
            *failed = true;
        }
        publish(store);
    };
    let mut next = queue.recv().ok();
    while let Some(job) = next.take() {
        match job {
            FlushJob::Turn {
                mut records,
                mut audit,
                mut replies,
            } => {
                // Merge every turn that queued up meanwhile into this group.
                for _ in 1..MERGE_TURNS_MAX {
                    match queue.try_recv() {
                        Ok(FlushJob::Turn {
                            records: r,
                            audit: a,
                            replies: p,
                        }) => {
                            records.extend(r);
                            audit.extend(a);
                            replies.extend(p);
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if !failed {
                    let promises_nothing = replies.is_empty() && audit.is_empty();
                    let written = if promises_nothing {
                        store.commit_unsynced(&records)
                    } else {
                        store.commit(&records)
                    };
                    if let Err(e) = written {
                        fatal("log commit", &e, &store);
                        failed = true;
                    }
                }
                if failed {
                    fail_all(replies);
                } else {
                    app.metrics.records_applied.inc_by(records.len() as u64);
                    publish(&store);
                    print_audit(&audit);
                    for reply in replies {
                        reply(Ok(()));
                    }
                }
            }
            FlushJob::Checkpoint(payload) if !failed => {
                let started = Instant::now();
                match store.write_checkpoint(&payload) {
                    Ok(bytes) => {
                        publish(&store);
                        tracing::info!(
                            shard = index,
                            bytes,
                            took_ms = started.elapsed().as_millis() as u64,
                            "checkpoint written"
                        )
                    }
                    Err(e) => {
                        fatal("checkpoint", &e, &store);
                        failed = true;
                    }
                }
            }
            FlushJob::Sync if !failed => match store.sync_if_due() {
                Ok(()) => publish(&store),
                Err(e) => {
                    fatal("interval fsync", &e, &store);
                    failed = true;
                }
            },
            FlushJob::Checkpoint(_) | FlushJob::Sync => {}
        }
        // Records written without their fsync are synced when the log says they are
        // due, also under a stream of jobs that never lets the queue time out.
        while next.is_none() {
            let Some(due_in) = store.sync_due_in().filter(|_| !failed) else {
                next = queue.recv().ok();
                break;
            };
            if due_in.is_zero() {
                sync_now(&mut store, &mut failed);
                continue;
            }
            match queue.recv_timeout(due_in) {
                Ok(job) => next = Some(job),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    sync_now(&mut store, &mut failed);
                    break;
                }
            }
        }
    }
}

/// Audit lines go out only for durable records.
fn print_audit(audit: &[AuditRecord]) {
    if audit.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    for record in audit {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::{unix_now_ms, Mesh};
    use crate::metrics::Metrics;
    use liveops_engine::event::{Event, EventKind};
    use liveops_engine::policy::Policy;
    use liveops_engine::signing::{ReceiptSigner, Signer};
    use liveops_storage::fault::{Fault, FaultFs};
    use liveops_storage::WalOptions;
    use std::path::Path;

    fn app() -> Arc<App> {
        Arc::new(App {
            mesh: Mesh::new(1, 64),
            metrics: Arc::new(Metrics::new()),
            signer: Signer::new(&[1; 32]),
            receipts: ReceiptSigner::new(&[2; 32]),
            policy: Policy::default(),
            lb_topn: 100,
            read_budget: crate::host_budget::HostBudget::new(20_000, 16),
            admin_token: None,
            ready: std::sync::atomic::AtomicBool::new(true),
            start_failed: Default::default(),
            shutting_down: Default::default(),
        })
    }

    fn event(player: &str) -> Event {
        Event {
            player_id: player.into(),
            ts: 1,
            kind: EventKind::Progression {
                delta_xp: 5,
                activity: None,
            },
            replay_id: None,
        }
    }

    /// A shard on `fs` with its committer, its worker spawned on the current `LocalSet`;
    /// returns the worker.
    fn start_shard(
        fs: &FaultFs,
        app: &Arc<App>,
        unsynced_wait_max: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let wal_options = WalOptions {
            fsync_interval_ms: unsynced_wait_max.as_millis() as u64,
            ..WalOptions::default()
        };
        let empty = Shard::new(
            Policy::default(),
            ReceiptSigner::new(&[2; 32]),
            unix_now_ms(),
        );
        let recovered = ShardStore::recover(
            Arc::new(fs.clone()),
            Path::new("/shard-0"),
            wal_options,
            empty,
        )
        .unwrap();
        let committer_config = CommitterConfig {
            tick_interval: Duration::from_secs(3600),
            checkpoint_records: 1_000_000,
            checkpoint_interval: Duration::from_secs(3600),
            interval_sync: false,
        };
        let mut committer =
            Committer::start(0, recovered.store, app.clone(), committer_config).unwrap();
        let mesh = app.mesh.clone();
        tokio::task::spawn_local(async move {
            mesh.run_worker(0, recovered.shard, &mut committer).await;
        })
    }

    fn run(test: impl std::future::Future<Output = ()>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&runtime, test);
    }

    #[test]
    fn a_failed_fsync_stops_the_shard_and_fails_its_answers() {
        let fs = FaultFs::new(7);
        let app = app();
        run(async {
            let worker = start_shard(&fs, &app, Duration::from_millis(10));
            let first = app
                .mesh
                .call(0, |s, now| s.submit_event(event("durable"), None, now))
                .await;
            assert!(first.is_ok(), "a healthy log acknowledges");
            fs.inject(Fault::SyncError);
            let second = app
                .mesh
                .call(0, |s, now| s.submit_event(event("lost"), None, now))
                .await;
            assert_eq!(
                second.err(),
                Some(MeshError::Failed),
                "no acknowledgement without fsync"
            );
            assert!(app.mesh.any_failed());
            assert!(
                !app.ready.load(std::sync::atomic::Ordering::Acquire),
                "the engine reports itself not ready"
            );
            assert_eq!(
                app.metrics.storage_failed_shards.get(),
                1,
                "and counts the shard for the alert"
            );
            let third = app.mesh.call(0, |s, _| s.players_len()).await;
            assert_eq!(
                third.err(),
                Some(MeshError::Failed),
                "and takes no more work, not even reads"
            );
            app.mesh.thread_done_serving();
            worker.await.unwrap();
        });
    }

    /// A turn that answers nothing (an idempotency key's completion) is written without
    /// its own fsync: it becomes durable within `unsynced_wait_max`, or at once with the
    /// next turn that answers.
    #[test]
    fn a_turn_that_answers_nothing_is_synced_later_or_with_the_next_answer() {
        let fs = FaultFs::new(9);
        let app = app();
        let durable = || app.metrics.wal_durable_lsn.with_label_values(&["0"]).get();
        let submit_unanswered = |player: &'static str| {
            app.mesh.queue_until_room(0, move |s, now| {
                let _ = s.submit_event(event(player), None, now);
            })
        };
        run(async {
            let worker = start_shard(&fs, &app, Duration::from_secs(1));
            let answered = app
                .mesh
                .call(0, |s, now| s.submit_event(event("a"), None, now))
                .await;
            assert!(answered.is_ok());
            let after_answer = durable();
            assert!(after_answer > 0);

            submit_unanswered("b").await.expect("queued");
            // A read runs once the turn before it has gone to the flusher.
            app.mesh.read(0, |_, _| ()).await.expect("read");
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(durable(), after_answer, "no fsync of its own");
            let deadline = Instant::now() + Duration::from_secs(10);
            while durable() == after_answer && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let synced_later = durable();
            assert!(synced_later > after_answer, "synced once it has waited");

            submit_unanswered("c").await.expect("queued");
            let answered = app
                .mesh
                .call(0, |s, now| s.submit_event(event("d"), None, now))
                .await;
            assert!(answered.is_ok());
            assert!(
                durable() >= synced_later + 2,
                "the answered turn's fsync covers the turn before it"
            );
            app.mesh.thread_done_serving();
            worker.await.unwrap();
        });
    }
}
