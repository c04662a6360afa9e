//! The shard mesh: how work reaches the shard that owns it.
//!
//! Each shard has one bounded lock-free inbox (crossbeam `ArrayQueue`) and a wake-up
//! (`tokio::sync::Notify`, which keeps a permit when nobody waits, so a wake-up sent
//! between the worker's last pop and its next wait is not lost). A job is a closure run
//! on the shard's own thread with exclusive access to its state; the caller awaits its
//! result on a oneshot channel. A full inbox refuses the job at once: the request gets
//! 503 with `Retry-After` instead of queueing without bound.
//!
//! Reads wait in a second queue of the inbox, run after each turn's writes within a
//! time budget, so a burst of reads cannot hold writes back.
//!
//! Local work goes through the same inbox as remote work, so every state change of a
//! shard happens in its worker's turn. A job's answer is held until the end of the turn:
//! the worker hands the turn's answers to its [`TurnHost`] (the write-ahead log), which
//! sends them once the turn's changes are durable. If they cannot be made durable,
//! every answer is an error and the shard takes no more work. Reads, and changes the log
//! does not keep (an idempotency key's reservation), answer as soon as they have run.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam::queue::ArrayQueue;
use liveops_engine::shard::Shard;
use tokio::sync::{oneshot, Notify};

/// A job's answer, sent once the turn it ran in is durable (or has failed).
pub type Reply = Box<dyn FnOnce(Result<(), MeshError>) + Send>;
/// A unit of work for a shard: runs with the shard's state and its clock (unix ms) and
/// returns the answer to send when the turn ends, or `None` when it has answered already
/// (a read).
pub type Job = Box<dyn FnOnce(&mut Shard, u64) -> Option<Reply> + Send>;

/// What a worker needs around its turns; the engine's is the write-ahead log.
pub trait TurnHost {
    /// Ends a turn: makes its changes (the shard's journal) durable, then sends every
    /// reply exactly once, in turn order: `Ok` once durable, `Err(Failed)` if that
    /// failed. On failure the host calls [`Mesh::fail`] so the shard takes no more work.
    fn end_turn(&mut self, shard: &mut Shard, replies: Vec<Reply>);
    /// How often [`TurnHost::tick`] runs.
    fn tick_interval(&self) -> Duration;
    /// Periodic work between turns (interval fsync, checkpoints).
    fn tick(&mut self, shard: &mut Shard);
}

/// Jobs a worker runs before it yields to the connections on its thread: keeps a busy
/// inbox from starving the accept loop and request parsing.
const TURN_JOBS_MAX: usize = 256;
/// Time a worker spends on reads per turn, after the turn's writes went to the disk:
/// writes queued meanwhile wait at most this (plus one read) for their turn, however
/// many readers there are. At least one read runs per turn, so reads always progress.
const TURN_READS_BUDGET: Duration = Duration::from_micros(250);
/// Housekeeping period: window rollover, block and idempotency expiry.
const HOUSEKEEPING_INTERVAL_MS: u64 = 1000;

/// Why a job could not be run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeshError {
    /// The target shard's inbox is full.
    Overloaded,
    /// The worker has stopped; the job was dropped without running.
    Stopped,
    /// The shard's storage failed: it acknowledges nothing more.
    Failed,
}

struct Inbox {
    /// Jobs answered once durable (writes, and anything else that must be ordered with
    /// them).
    queue: ArrayQueue<Job>,
    /// Reads (answered at once): run after each turn's writes, within
    /// [`TURN_READS_BUDGET`], so a burst of reads does not hold writes back.
    reads: ArrayQueue<Job>,
    wake: Notify,
    /// Set when the shard's storage failed; new work is refused.
    failed: AtomicBool,
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
                    reads: ArrayQueue::new(inbox_jobs_max),
                    wake: Notify::new(),
                    failed: AtomicBool::new(false),
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
        self.send_as(shard, Answer::Durable, job)
    }

    /// Queues `job` on `shard`, with the reads when it answers at once.
    fn send_as(&self, shard: usize, answer: Answer, job: Job) -> Result<(), MeshError> {
        let inbox = &self.inboxes[shard];
        if inbox.failed.load(Ordering::Acquire) {
            return Err(MeshError::Failed);
        }
        let queue = match answer {
            Answer::Durable | Answer::Ran => &inbox.queue,
            Answer::Immediate => &inbox.reads,
        };
        queue.push(job).map_err(|_| MeshError::Overloaded)?;
        inbox.wake.notify_one();
        Ok(())
    }

    /// Queues `f` on `shard` and returns the receiver of its result, answered once
    /// durable, so a caller can fan out to several shards before awaiting any.
    pub fn start<R, F>(
        &self,
        shard: usize,
        f: F,
    ) -> Result<oneshot::Receiver<Result<R, MeshError>>, MeshError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Shard, u64) -> R + Send + 'static,
    {
        self.start_as(shard, Answer::Durable, f)
    }

    fn start_as<R, F>(
        &self,
        shard: usize,
        answer: Answer,
        f: F,
    ) -> Result<oneshot::Receiver<Result<R, MeshError>>, MeshError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Shard, u64) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.send_as(shard, answer, job(tx, answer, f))?;
        Ok(rx)
    }

    /// Runs `f` on `shard` and waits for its result, answered once durable.
    pub async fn call<R, F>(&self, shard: usize, f: F) -> Result<R, MeshError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Shard, u64) -> R + Send + 'static,
    {
        finish(self.start(shard, f)?).await
    }

    /// Runs `f`, which changes only state the log does not keep, among the writes of
    /// `shard`, and answers as soon as it has run (see [`Answer::Ran`]).
    pub async fn call_unlogged<R, F>(&self, shard: usize, f: F) -> Result<R, MeshError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Shard, u64) -> R + Send + 'static,
    {
        finish(self.start_as(shard, Answer::Ran, f)?).await
    }

    /// Runs the read `f` on `shard`: answered as soon as it has run (see [`Answer`]).
    pub async fn read<R, F>(&self, shard: usize, f: F) -> Result<R, MeshError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Shard, u64) -> R + Send + 'static,
    {
        finish(self.start_as(shard, Answer::Immediate, f)?).await
    }

    /// Runs the read `f` on `shard` and blocks the calling thread until it has run: for
    /// threads outside the shards' runtimes (the change feed's sinks).
    pub fn read_blocking<R, F>(&self, shard: usize, f: F) -> Result<R, MeshError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Shard, u64) -> R + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let job: Job = Box::new(move |state, now_ms| {
            // The caller may have gone; the work is done either way.
            let _ = tx.send(f(state, now_ms));
            None
        });
        self.send_as(shard, Answer::Immediate, job)?;
        // A worker that stops drops the job unrun, and with it the sender.
        rx.recv().map_err(|_| MeshError::Stopped)
    }

    /// Runs `f` on every shard and returns the results in shard order, once durable.
    pub async fn call_all<R, F>(&self, f: F) -> Result<Vec<R>, MeshError>
    where
        R: Send + 'static,
        F: Fn(&mut Shard, u64) -> R + Send + Clone + 'static,
    {
        self.all_as(Answer::Durable, f).await
    }

    /// Runs the read `f` on every shard: each answers as soon as it has run.
    pub async fn read_all<R, F>(&self, f: F) -> Result<Vec<R>, MeshError>
    where
        R: Send + 'static,
        F: Fn(&mut Shard, u64) -> R + Send + Clone + 'static,
    {
        self.all_as(Answer::Immediate, f).await
    }

    async fn all_as<R, F>(&self, answer: Answer, f: F) -> Result<Vec<R>, MeshError>
    where
        R: Send + 'static,
        F: Fn(&mut Shard, u64) -> R + Send + Clone + 'static,
    {
        let mut pending = Vec::with_capacity(self.shards());
        for shard in 0..self.shards() {
            pending.push(self.start_as(shard, answer, f.clone())?);
        }
        let mut results = Vec::with_capacity(pending.len());
        for rx in pending {
            results.push(finish(rx).await?);
        }
        Ok(results)
    }

    /// Like [`Mesh::call`], but waits for room instead of failing when the inbox is
    /// full: for work that must happen once its request has had effects (restoring an
    /// idempotency key at start). The wait is bounded by the worker draining its inbox.
    pub async fn call_until_done<R, F>(&self, shard: usize, f: F) -> Result<R, MeshError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Shard, u64) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.push_until_room(shard, job(tx, Answer::Durable, f))
            .await?;
        finish(rx).await
    }

    /// Queues `f` among the writes of `shard`, waiting for room rather than failing, and
    /// returns once it is queued, not once it has run: nobody waits for its result. Its
    /// records go to the log with the turn it runs in. Only for a change whose record, if
    /// a crash takes it back, recovery rebuilds from records durable before it was
    /// queued: completing an idempotency key, whose events name the key. Work queued on
    /// the shard after it runs after it (the inbox is first in, first out), so a retry
    /// whose reservation is sent after this returns sees the change.
    pub async fn queue_until_room<F>(&self, shard: usize, f: F) -> Result<(), MeshError>
    where
        F: FnOnce(&mut Shard, u64) + Send + 'static,
    {
        let job: Job = Box::new(move |state, now_ms| {
            f(state, now_ms);
            None
        });
        self.push_until_room(shard, job).await
    }

    async fn push_until_room(&self, shard: usize, mut job: Job) -> Result<(), MeshError> {
        let inbox = &self.inboxes[shard];
        loop {
            if inbox.failed.load(Ordering::Acquire) {
                return Err(MeshError::Failed);
            }
            match inbox.queue.push(job) {
                Ok(()) => {
                    inbox.wake.notify_one();
                    return Ok(());
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

    /// The worker of `index`: runs jobs in turns, ends each turn through `host`, and
    /// does housekeeping on a tick, until the mesh closes and its inbox is empty.
    ///
    /// A turn runs the queued writes (up to [`TURN_JOBS_MAX`]) and hands them to the
    /// host, then runs reads for at most [`TURN_READS_BUDGET`]: reads queued in a burst
    /// neither delay the answers of the writes before them nor hold back for long the
    /// writes that arrive after them.
    pub async fn run_worker(&self, index: usize, mut shard: Shard, host: &mut impl TurnHost) {
        let inbox = &self.inboxes[index];
        let mut clock = Clock::default();
        let mut tick = tokio::time::interval(host.tick_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut housekeeping_ms = clock.now_ms();
        let mut replies: Vec<Reply> = Vec::with_capacity(TURN_JOBS_MAX);
        loop {
            let mut jobs_run = 0;
            while jobs_run < TURN_JOBS_MAX {
                let Some(job) = inbox.queue.pop() else { break };
                if inbox.failed.load(Ordering::Acquire) {
                    // Dropping the job drops its answer channel: the caller sees the stop.
                    continue;
                }
                let now_ms = clock.now_ms();
                jobs_run += 1;
                replies.extend(job(&mut shard, now_ms));
            }
            if jobs_run > 0 {
                let turn = std::mem::replace(&mut replies, Vec::with_capacity(TURN_JOBS_MAX));
                self.end_turn(index, &mut shard, host, turn);
            }
            let reads_started = std::time::Instant::now();
            let mut reads_run = 0;
            while reads_run == 0 || reads_started.elapsed() < TURN_READS_BUDGET {
                let Some(job) = inbox.reads.pop() else { break };
                if inbox.failed.load(Ordering::Acquire) {
                    continue;
                }
                let now_ms = clock.now_ms();
                reads_run += 1;
                replies.extend(job(&mut shard, now_ms));
            }
            // Reads may still have changed state (a read rolls the windows), so the host
            // sees them as a turn too; it skips empty ones.
            if reads_run > 0 {
                let turn = std::mem::replace(&mut replies, Vec::with_capacity(TURN_JOBS_MAX));
                self.end_turn(index, &mut shard, host, turn);
            }
            let more = jobs_run == TURN_JOBS_MAX || !inbox.reads.is_empty();
            if !more && self.closed.load(Ordering::Acquire) && inbox.queue.is_empty() {
                return;
            }
            // With work left, yield to the connections on this thread and go on; the
            // tick still runs when due, so housekeeping and checkpoints are not starved
            // by a steady stream of work.
            tokio::select! {
                biased;
                _ = tick.tick() => {
                    if inbox.failed.load(Ordering::Acquire) {
                        continue;
                    }
                    let now_ms = clock.now_ms();
                    if now_ms >= housekeeping_ms + HOUSEKEEPING_INTERVAL_MS {
                        housekeeping_ms = now_ms;
                        shard.tick(now_ms);
                        self.end_turn(index, &mut shard, host, Vec::new());
                    }
                    host.tick(&mut shard);
                }
                _ = tokio::task::yield_now(), if more => {}
                _ = inbox.wake.notified(), if !more => {}
            }
        }
    }

    fn end_turn(
        &self,
        index: usize,
        shard: &mut Shard,
        host: &mut impl TurnHost,
        replies: Vec<Reply>,
    ) {
        if self.inboxes[index].failed.load(Ordering::Acquire) {
            for reply in replies {
                reply(Err(MeshError::Failed));
            }
            return;
        }
        host.end_turn(shard, replies);
    }

    /// Stops shard `index` from taking work after a storage failure.
    pub fn fail(&self, index: usize) {
        self.inboxes[index].failed.store(true, Ordering::Release);
    }

    /// Whether shard `index` stopped after a storage failure.
    pub fn failed(&self, index: usize) -> bool {
        self.inboxes[index].failed.load(Ordering::Acquire)
    }

    /// Jobs waiting in shard `index`'s inbox: (writes, reads). Read without touching the
    /// shard, so asking costs its worker nothing.
    pub fn queued(&self, index: usize) -> (usize, usize) {
        let inbox = &self.inboxes[index];
        (inbox.queue.len(), inbox.reads.len())
    }

    /// Whether any shard stopped after a storage failure.
    pub fn any_failed(&self) -> bool {
        self.inboxes
            .iter()
            .any(|i| i.failed.load(Ordering::Acquire))
    }
}

/// When a job's caller gets its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Once the turn the job ran in is durable: anything that changes state, so that an
    /// answer never promises what a crash could take back.
    Durable,
    /// As soon as the job has run: reads. Waiting for the turn's fsync would put the
    /// disk's latency (and its multi-millisecond stalls) on every read while ingesting.
    /// A read may then show events whose turn is still being made durable, for the
    /// milliseconds that takes; a crash in that window can take back what a read
    /// showed, never what a 202 acknowledged.
    Immediate,
    /// As soon as the job has run, which is among the writes, in their order: changes
    /// that write no record (an idempotency key's reservation: a crash forgets it
    /// whether or not the turn was durable). Waiting for the turn's fsync would only add
    /// the disk's latency to the request; and unlike a read, the job is not held behind
    /// a burst of reads.
    Ran,
}

/// Wraps `f` as a job answering on `tx` as `answer` says.
fn job<R, F>(tx: oneshot::Sender<Result<R, MeshError>>, answer: Answer, f: F) -> Job
where
    R: Send + 'static,
    F: FnOnce(&mut Shard, u64) -> R + Send + 'static,
{
    Box::new(move |state, now_ms| {
        let value = f(state, now_ms);
        if answer != Answer::Durable {
            // The caller may have gone; the work is done either way.
            let _ = tx.send(Ok(value));
            return None;
        }
        let reply: Reply = Box::new(move |outcome: Result<(), MeshError>| {
            let _ = tx.send(outcome.map(|()| value));
        });
        Some(reply)
    })
}

pub async fn finish<R>(rx: oneshot::Receiver<Result<R, MeshError>>) -> Result<R, MeshError> {
    rx.await.unwrap_or(Err(MeshError::Stopped))
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

#[cfg(test)]
mod tests {
    use super::*;
    use liveops_engine::policy::Policy;
    use liveops_engine::signing::ReceiptSigner;

    /// A host whose log accepts `commits_ok` turns, then fails like a failed fsync.
    struct FlakyLog {
        mesh: Arc<Mesh>,
        commits_ok: usize,
        turns: usize,
    }

    impl TurnHost for FlakyLog {
        fn end_turn(&mut self, shard: &mut Shard, replies: Vec<Reply>) {
            shard.take_journal();
            self.turns += 1;
            let outcome = if self.turns > self.commits_ok {
                self.mesh.fail(0);
                Err(MeshError::Failed)
            } else {
                Ok(())
            };
            for reply in replies {
                reply(outcome);
            }
        }

        fn tick_interval(&self) -> Duration {
            Duration::from_secs(3600)
        }

        fn tick(&mut self, _: &mut Shard) {}
    }

    fn run(test: impl std::future::Future<Output = ()>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&runtime, test);
    }

    /// A one-shard mesh whose worker runs on this thread with the host `make_host`
    /// builds; the worker's task gives the host back when the mesh closes.
    fn start_worker<H: TurnHost + 'static>(
        make_host: impl FnOnce(Arc<Mesh>) -> H,
    ) -> (Arc<Mesh>, tokio::task::JoinHandle<H>) {
        let mesh = Mesh::new(1, 64);
        let shard = Shard::new(
            Policy::default(),
            ReceiptSigner::new(&[1; 32]),
            unix_now_ms(),
        );
        let mut host = make_host(mesh.clone());
        let worker_mesh = mesh.clone();
        let worker = tokio::task::spawn_local(async move {
            worker_mesh.run_worker(0, shard, &mut host).await;
            host
        });
        (mesh, worker)
    }

    #[test]
    fn answers_wait_for_the_turn_and_a_failed_commit_stops_the_shard() {
        run(async {
            let (mesh, worker) = start_worker(|mesh| FlakyLog {
                mesh,
                commits_ok: 1,
                turns: 0,
            });
            assert_eq!(mesh.call(0, |s, _| s.players_len()).await, Ok(0));
            // The second turn's commit fails: its answer is an error, not the value.
            assert_eq!(
                mesh.call(0, |s, _| s.players_len()).await,
                Err(MeshError::Failed)
            );
            assert!(mesh.any_failed());
            assert_eq!(
                mesh.send(0, Box::new(|_, _| None)).err(),
                Some(MeshError::Failed)
            );
            assert_eq!(
                mesh.call_until_done(0, |s, _| s.players_len()).await,
                Err(MeshError::Failed)
            );
            mesh.thread_done_serving();
            assert_eq!(worker.await.unwrap().turns, 2);
        });
    }

    /// A host whose disk never finishes: it takes every turn's records and keeps its
    /// replies.
    #[derive(Default)]
    struct StalledLog {
        held: Vec<Reply>,
        /// Records handed to the log so far, for tests to read while the worker runs.
        records_logged: Arc<AtomicUsize>,
    }

    impl TurnHost for StalledLog {
        fn end_turn(&mut self, shard: &mut Shard, replies: Vec<Reply>) {
            let records = shard.take_journal();
            self.records_logged
                .fetch_add(records.len(), Ordering::SeqCst);
            self.held.extend(replies);
        }

        fn tick_interval(&self) -> Duration {
            Duration::from_secs(3600)
        }

        fn tick(&mut self, _: &mut Shard) {}
    }

    #[test]
    fn reads_answer_without_waiting_for_the_turn_to_be_durable() {
        run(async {
            let (mesh, _worker) = start_worker(|_| StalledLog::default());
            let write = mesh.start(0, |s, now_ms| {
                s.admin_block("p_1", 1000, "t".into(), now_ms)
            });
            let write = write.expect("queued");
            // The read runs after the write and sees it, though the write is not durable.
            let soon = Duration::from_secs(5);
            let blocked = mesh.read(0, |s, now_ms| s.blocked(now_ms).len());
            let blocked = tokio::time::timeout(soon, blocked).await;
            assert_eq!(blocked.expect("a read does not wait for the disk"), Ok(1));
            let all = tokio::time::timeout(soon, mesh.read_all(|s, _| s.players_len())).await;
            assert_eq!(all.expect("nor does a read of every shard"), Ok(vec![1]));
            // The write's own answer still waits for durability.
            let waited = tokio::time::timeout(Duration::from_millis(50), write).await;
            assert!(waited.is_err(), "a write is answered only once durable");
        });
    }

    /// Queues `reads` reads of 3 ms each on shard 0; returns how many have run so far and
    /// their answers.
    fn queue_slow_reads(
        mesh: &Mesh,
        reads: usize,
    ) -> (
        Arc<AtomicUsize>,
        Vec<oneshot::Receiver<Result<(), MeshError>>>,
    ) {
        let done = Arc::new(AtomicUsize::new(0));
        let pending = (0..reads)
            .map(|_| {
                let done = done.clone();
                let read = mesh.start_as(0, Answer::Immediate, move |_, _| {
                    std::thread::sleep(Duration::from_millis(3));
                    done.fetch_add(1, Ordering::SeqCst);
                });
                read.expect("queued")
            })
            .collect();
        (done, pending)
    }

    /// A change the log does not keep is answered once it has run, without waiting for
    /// the disk, and in the writes' order: it sees the write queued before it, and a
    /// burst of reads queued before it does not hold it back.
    #[test]
    fn an_unlogged_change_answers_once_run_in_the_order_of_the_writes() {
        run(async {
            let (mesh, _worker) = start_worker(|_| StalledLog::default());
            let (reads_done, _reads) = queue_slow_reads(&mesh, 12);
            let write = mesh.start(0, |s, now_ms| {
                s.admin_block("p_1", 1000, "t".into(), now_ms)
            });
            let write = write.expect("queued");
            let done = reads_done.clone();
            let unlogged = mesh.call_unlogged(0, move |s, now_ms| {
                (s.blocked(now_ms).len(), done.load(Ordering::SeqCst))
            });
            let answer = tokio::time::timeout(Duration::from_secs(5), unlogged).await;
            let (blocked, reads_before) = answer
                .expect("an unlogged change does not wait for the disk")
                .expect("answered");
            assert_eq!(blocked, 1, "it runs after the write queued before it");
            assert!(reads_before <= 1, "it waited for {reads_before} reads");
            let waited = tokio::time::timeout(Duration::from_millis(50), write).await;
            assert!(waited.is_err(), "the write is answered only once durable");
        });
    }

    /// A change queued with `queue_until_room` (an idempotency key's completion) returns
    /// once queued, before it has run; it runs before work queued after it (a retry's
    /// reservation), and its records go to the log with its turn.
    #[test]
    fn a_queued_change_returns_before_it_runs_and_runs_before_later_work() {
        run(async {
            let records_logged = Arc::new(AtomicUsize::new(0));
            let host_records = records_logged.clone();
            let (mesh, _worker) = start_worker(move |_| StalledLog {
                records_logged: host_records,
                ..StalledLog::default()
            });
            let ran = Arc::new(AtomicBool::new(false));
            let ran_in_job = ran.clone();
            let queued = mesh.queue_until_room(0, move |s, now_ms| {
                s.admin_block("p_1", 1000, "t".into(), now_ms);
                ran_in_job.store(true, Ordering::SeqCst);
            });
            // A zero timeout polls once: the worker, on this thread, cannot run first.
            let queued = tokio::time::timeout(Duration::ZERO, queued).await;
            assert_eq!(queued, Ok(Ok(())), "it returns as soon as it is queued");
            assert!(!ran.load(Ordering::SeqCst), "it has not run yet");
            let later = mesh.call_unlogged(0, |s, now_ms| s.blocked(now_ms).len());
            assert_eq!(later.await, Ok(1), "work queued after it sees it");
            let read = mesh.read(0, |_, _| ()).await;
            assert_eq!(read, Ok(()));
            assert!(
                records_logged.load(Ordering::SeqCst) > 0,
                "its records go to the log with its turn"
            );
        });
    }

    /// A burst of slow reads queued before a write does not hold the write back: the
    /// write runs first, and a write queued while the reads run waits for at most a
    /// turn's budget of them, not for all of them.
    #[test]
    fn a_burst_of_reads_does_not_hold_back_a_write_queued_after_it() {
        const READS: usize = 12;
        run(async {
            let (mesh, _worker) = start_worker(|mesh| FlakyLog {
                mesh,
                commits_ok: usize::MAX,
                turns: 0,
            });
            let (reads_done, pending) = queue_slow_reads(&mesh, READS);
            let done = reads_done.clone();
            let reads_before_write = mesh
                .call(0, move |_, _| done.load(Ordering::SeqCst))
                .await
                .expect("answered");
            assert!(
                reads_before_write <= 1,
                "the write waited for {reads_before_write} of {READS} reads"
            );
            // A write queued while the reads are running waits for a turn's budget of
            // them, not for the rest of the burst.
            let done = reads_done.clone();
            let reads_before_next = mesh
                .call(0, move |_, _| done.load(Ordering::SeqCst))
                .await
                .expect("answered");
            assert!(
                reads_before_next <= 3,
                "the next write waited for {reads_before_next} of {READS} reads"
            );
            for read in pending {
                assert_eq!(finish(read).await, Ok(()));
            }
            assert_eq!(reads_done.load(Ordering::SeqCst), READS);
        });
    }

    #[test]
    fn a_full_inbox_refuses_at_once() {
        let mesh = Mesh::new(1, 2);
        for _ in 0..2 {
            assert!(mesh.send(0, Box::new(|_, _| None)).is_ok());
        }
        assert_eq!(
            mesh.send(0, Box::new(|_, _| None)).err(),
            Some(MeshError::Overloaded)
        );
    }
}
