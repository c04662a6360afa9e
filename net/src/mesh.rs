//! The shard mesh: how work reaches the shard that owns it.
//!
//! Each shard has one bounded lock-free inbox (crossbeam `ArrayQueue`) and a wake-up
//! (`tokio::sync::Notify`, which keeps a permit when nobody waits, so a wake-up sent
//! between the worker's last pop and its next wait is not lost). A job is a closure run
//! on the shard's own thread with exclusive access to its state; the caller awaits its
//! result on a oneshot channel. A full inbox refuses the job at once: the request gets
//! 503 with `Retry-After` instead of queueing without bound.
//!
//! Local work goes through the same inbox as remote work, so every state change of a
//! shard happens in its worker's turn, where the journal is drained as one group.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam::queue::ArrayQueue;
use liveops_engine::shard::Shard;
use tokio::sync::{oneshot, Notify};

/// A unit of work for a shard: runs with the shard's state and its clock (unix ms).
pub type Job = Box<dyn FnOnce(&mut Shard, u64) + Send>;

/// Jobs a worker runs before it yields to the connections on its thread: keeps a busy
/// inbox from starving the accept loop and request parsing.
const TURN_JOBS_MAX: usize = 256;
/// Housekeeping period: window rollover, block and idempotency expiry.
const TICK_INTERVAL_MS: u64 = 1000;

/// Why a job could not be run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeshError {
    /// The target shard's inbox is full.
    Overloaded,
    /// The worker has stopped; the job was dropped without running.
    Stopped,
}

struct Inbox {
    queue: ArrayQueue<Job>,
    wake: Notify,
}

pub struct Mesh {
    inboxes: Vec<Inbox>,
    /// Threads still serving connections; workers run until it reaches zero.
    threads_serving: AtomicUsize,
    closed: AtomicBool,
}

impl Mesh {
    pub fn new(shards: usize, inbox_jobs_max: usize) -> Arc<Self> {
        assert!(shards > 0 && inbox_jobs_max > 0);
        Arc::new(Mesh {
            inboxes: (0..shards)
                .map(|_| Inbox {
                    queue: ArrayQueue::new(inbox_jobs_max),
                    wake: Notify::new(),
                })
                .collect(),
            threads_serving: AtomicUsize::new(shards),
            closed: AtomicBool::new(false),
        })
    }

    pub fn shards(&self) -> usize {
        self.inboxes.len()
    }

    /// Queues `job` on `shard`.
    pub fn send(&self, shard: usize, job: Job) -> Result<(), MeshError> {
        let inbox = &self.inboxes[shard];
        inbox.queue.push(job).map_err(|_| MeshError::Overloaded)?;
        inbox.wake.notify_one();
        Ok(())
    }

    /// Queues `f` on `shard` and returns the receiver of its result, so a caller can
    /// fan out to several shards before awaiting any.
    pub fn start<R, F>(&self, shard: usize, f: F) -> Result<oneshot::Receiver<R>, MeshError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Shard, u64) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.send(
            shard,
            Box::new(move |state, now_ms| {
                // The caller may have gone; the work is done either way.
                let _ = tx.send(f(state, now_ms));
            }),
        )?;
        Ok(rx)
    }

    /// Runs `f` on `shard` and waits for its result.
    pub async fn call<R, F>(&self, shard: usize, f: F) -> Result<R, MeshError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Shard, u64) -> R + Send + 'static,
    {
        finish(self.start(shard, f)?).await
    }

    /// Runs `f` on every shard and returns the results in shard order.
    pub async fn call_all<R, F>(&self, f: F) -> Result<Vec<R>, MeshError>
    where
        R: Send + 'static,
        F: Fn(&mut Shard, u64) -> R + Send + Clone + 'static,
    {
        let mut pending = Vec::with_capacity(self.shards());
        for shard in 0..self.shards() {
            pending.push(self.start(shard, f.clone())?);
        }
        let mut results = Vec::with_capacity(pending.len());
        for rx in pending {
            results.push(finish(rx).await?);
        }
        Ok(results)
    }

    /// Like [`Mesh::call`], but waits for room instead of failing when the inbox is
    /// full: for work that must happen once its request has had effects (completing an
    /// idempotency key). The wait is bounded by the worker draining its inbox.
    pub async fn call_until_done<R, F>(&self, shard: usize, f: F) -> Result<R, MeshError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Shard, u64) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let mut job: Job = Box::new(move |state, now_ms| {
            let _ = tx.send(f(state, now_ms));
        });
        loop {
            let inbox = &self.inboxes[shard];
            match inbox.queue.push(job) {
                Ok(()) => {
                    inbox.wake.notify_one();
                    return finish(rx).await;
                }
                Err(back) => {
                    job = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }

    /// Called by each thread once its connections are done; the last one closes the
    /// mesh and wakes every worker so they can finish.
    pub fn thread_done_serving(&self) {
        if self.threads_serving.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.closed.store(true, Ordering::Release);
            for inbox in &self.inboxes {
                inbox.wake.notify_one();
            }
        }
    }

    /// The worker of `index`: runs jobs in turns and housekeeping on a tick until the
    /// mesh closes and its inbox is empty. `after_turn` sees the shard after every turn
    /// (journal, audit output, gauges).
    pub async fn run_worker(
        &self,
        index: usize,
        mut shard: Shard,
        mut after_turn: impl FnMut(&mut Shard),
    ) {
        let inbox = &self.inboxes[index];
        let mut clock = Clock::default();
        let mut tick = tokio::time::interval(Duration::from_millis(TICK_INTERVAL_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut ran = 0;
            while ran < TURN_JOBS_MAX {
                let Some(job) = inbox.queue.pop() else { break };
                let now_ms = clock.now_ms();
                job(&mut shard, now_ms);
                ran += 1;
            }
            if ran > 0 {
                after_turn(&mut shard);
            }
            if ran == TURN_JOBS_MAX {
                tokio::task::yield_now().await;
                continue;
            }
            if self.closed.load(Ordering::Acquire) && inbox.queue.is_empty() {
                return;
            }
            tokio::select! {
                _ = inbox.wake.notified() => {}
                _ = tick.tick() => {
                    shard.tick(clock.now_ms());
                    after_turn(&mut shard);
                }
            }
        }
    }
}

async fn finish<R>(rx: oneshot::Receiver<R>) -> Result<R, MeshError> {
    rx.await.map_err(|_| MeshError::Stopped)
}

/// Wall clock in unix ms that never runs backwards for its shard: a step back of the
/// system clock must not refill rate buckets twice or reorder a board's ties.
#[derive(Default)]
struct Clock {
    last_ms: u64,
}

impl Clock {
    fn now_ms(&mut self) -> u64 {
        self.last_ms = self.last_ms.max(unix_now_ms());
        self.last_ms
    }
}

pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
