//! Seeded random crash test: thousands of operations (append groups, commits, syncs,
//! checkpoints, log truncation) with faults (short and torn writes, failed fsyncs, the
//! machine halting at a random I/O call, power loss, process crash, crashes during
//! recovery itself, a rotten checkpoint), checked after every recovery against a model
//! built only from what the log acknowledged.
//!
//! ## The model
//!
//! `written` is every record handed to the log, in LSN order: first the acknowledged ones
//! (their `commit` returned `Ok`), then the records of at most one group whose `commit`
//! failed or never returned because the machine halted. There is at most one such group
//! because a failure poisons the log: nothing more is accepted until the restart.
//! `durable` counts the leading records of `written` that must survive anything: with
//! `Durability::Fsync`, every record up to the last `commit` that returned (its fsync
//! covers the groups written before it with `commit_unsynced`, which promise nothing on
//! their own); in either mode, those written before the last successful
//! `sync`/`sync_if_due` that synced. (`acked` counts every group whose write returned,
//! `commit_unsynced`'s included.)
//!
//! ## The invariant, checked after every recovery
//!
//! The recovered log `R` (the newest valid checkpoint's records, then every record the
//! WAL replays after it) is exactly `written[..r]` for some `durable <= r <= written.len()`,
//! with LSNs `1..=r` and `next_lsn == r + 1`. Said plainly:
//!
//! * every durable acknowledged record is there, in order, kind and payload byte for byte;
//! * nothing appears that was never handed to the log, and nothing is there twice;
//! * records beyond the acknowledged ones may be there (the failed group reached the disk
//!   but its ack never happened: allowed, the engine treats them as applied and clients
//!   retry with idempotency keys), but only as a prefix of that group at the very end;
//!   a partial group never has a hole before it or anything after it;
//! * in batch mode, acknowledged-but-unsynced records may be lost, again only as a suffix;
//!   so may the groups `commit_unsynced` wrote after the last fsync.
//!
//! The checkpoint is checked too: its payload is the LSN and a hash of `written[..lsn]`,
//! so a checkpoint holding anything but a prefix of what was written fails the test.
//! After recovery the model adopts `R` (`written` cut to `r`, all of it durable, since it
//! was read back from what survived and recovery fsyncs the active segment), and
//! `verify_dir` must find the log clean.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use liveops_storage::fault::{Fault, FaultFs};
use liveops_storage::{
    latest_checkpoint, verify_dir, Durability, Error, FileSystem, Lsn, RecoveryMode, Wal,
    WalOptions,
};

const SEEDS: u64 = 48;
const STEPS_PER_SEED: u64 = 1_500;

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// In `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Default)]
struct Model {
    /// (kind, payload) of LSN `i + 1`.
    written: Vec<(u8, Vec<u8>)>,
    /// `prefix_hash[i]` is the hash of `written[..i]`; one longer than `written`.
    prefix_hash: Vec<u64>,
    acked: usize,
    durable: usize,
}

impl Model {
    fn new() -> Model {
        Model {
            prefix_hash: vec![FNV_OFFSET],
            ..Model::default()
        }
    }

    fn push(&mut self, kind: u8, payload: Vec<u8>) {
        let mut hash = *self.prefix_hash.last().expect("never empty");
        for byte in [kind]
            .iter()
            .chain(&(payload.len() as u32).to_le_bytes())
            .chain(&payload)
        {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME);
        }
        self.written.push((kind, payload));
        self.prefix_hash.push(hash);
    }

    fn truncate(&mut self, len: usize) {
        self.written.truncate(len);
        self.prefix_hash.truncate(len + 1);
        self.acked = len;
        self.durable = len;
    }

    fn checkpoint_payload(&self, lsn: Lsn) -> Vec<u8> {
        let mut payload = lsn.to_le_bytes().to_vec();
        payload.extend_from_slice(&self.prefix_hash[lsn as usize].to_le_bytes());
        payload
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

#[derive(Debug, Default)]
struct Stats {
    commits_acked: u64,
    commits_failed: u64,
    power_losses: u64,
    process_crashes: u64,
    crashes_during_recovery: u64,
    torn_tails_cut: u64,
    unacked_records_recovered: u64,
    batch_acks_lost: u64,
    checkpoints: u64,
    checkpoint_fallbacks: u64,
    segments_truncated: u64,
}

struct Run {
    rng: Rng,
    raw: FaultFs,
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    options: WalOptions,
    model: Model,
    stats: Stats,
}

impl Run {
    fn new(seed: u64) -> Run {
        let mut rng = Rng::new(seed);
        let raw = FaultFs::new(seed);
        let segment_bytes_max = 700 + rng.below(3_400);
        let options = WalOptions {
            durability: if seed.is_multiple_of(2) {
                Durability::Fsync
            } else {
                Durability::Batch
            },
            fsync_interval_ms: 5,
            segment_bytes_max,
            group_bytes_max: segment_bytes_max.min(1024) as usize,
            recovery_mode: RecoveryMode::Strict,
        };
        Run {
            rng,
            fs: Arc::new(raw.clone()),
            raw,
            dir: PathBuf::from("/data/shard-3"),
            options,
            model: Model::new(),
            stats: Stats::default(),
        }
    }

    /// Restarts (after a power loss or just a process crash) until a recovery completes,
    /// sometimes crashing the machine in the middle of recovery, then checks the invariant.
    fn restart(&mut self, power_loss: bool, seed: u64, step: u64) -> Wal {
        if power_loss || self.raw.is_halted() {
            self.raw.crash();
            self.stats.power_losses += 1;
        } else {
            self.stats.process_crashes += 1;
        }
        loop {
            if self.rng.chance(15) {
                self.raw.halt_after_ops(self.rng.below(4));
            }
            match self.recover_and_check(seed, step) {
                Ok(wal) => return wal,
                // The machine died (or an fsync failed) while recovering: start over, as
                // an operator's supervisor would. Faults not consumed here may fire later,
                // which is just more faults.
                Err(Error::Io { .. }) => {
                    self.stats.crashes_during_recovery += 1;
                    if self.raw.is_halted() || self.rng.chance(50) {
                        self.raw.crash();
                    }
                }
                Err(error) => panic!("seed {seed} step {step}: recovery failed: {error}"),
            }
        }
    }

    fn recover_and_check(&mut self, seed: u64, step: u64) -> Result<Wal, Error> {
        let context = format!("seed {seed} step {step}");
        let load = latest_checkpoint(&*self.fs, &self.dir)?;
        if !load.skipped.is_empty() {
            self.stats.checkpoint_fallbacks += 1;
        }
        let checkpoint_lsn = match &load.checkpoint {
            None => 0,
            Some(checkpoint) => {
                let payload = checkpoint.payload();
                let lsn = u64::from_le_bytes(payload[..8].try_into().unwrap());
                assert_eq!(lsn, checkpoint.lsn, "{context}");
                assert!(
                    lsn as usize <= self.model.written.len(),
                    "{context}: checkpoint past the log"
                );
                assert_eq!(
                    payload,
                    self.model.checkpoint_payload(lsn),
                    "{context}: checkpoint content"
                );
                lsn
            }
        };
        let mut recovery = Wal::recover(
            self.fs.clone(),
            &self.dir,
            self.options.clone(),
            checkpoint_lsn,
        )?;
        let mut recovered = checkpoint_lsn as usize;
        while let Some(record) = recovery.next_record()? {
            assert_eq!(record.lsn as usize, recovered + 1, "{context}: LSNs dense");
            let Some((kind, payload)) = self.model.written.get(recovered) else {
                panic!("{context}: lsn {} was never written", record.lsn);
            };
            assert_eq!(
                (record.kind, record.payload),
                (*kind, &payload[..]),
                "{context}: lsn {}",
                record.lsn
            );
            recovered += 1;
        }
        let (wal, report) = recovery.finish()?;

        // The invariant (module docs).
        let model = &self.model;
        assert!(
            recovered >= model.durable,
            "{context}: lost durable acknowledged records: recovered {recovered}, durable {}, acked {}",
            model.durable,
            model.acked
        );
        assert!(recovered <= model.written.len(), "{context}");
        assert_eq!(wal.next_lsn(), recovered as u64 + 1, "{context}");
        assert_eq!(report.next_lsn, recovered as u64 + 1, "{context}");
        assert!(
            report.corruption.is_none(),
            "{context}: strict mode never cuts corruption"
        );

        self.stats.torn_tails_cut += u64::from(report.torn_tail.is_some());
        assert_eq!(
            report.restarted_at_lsn, None,
            "{context}: checkpoints cover durable records only"
        );
        self.stats.unacked_records_recovered += recovered.saturating_sub(model.acked) as u64;
        self.stats.batch_acks_lost += model.acked.saturating_sub(recovered) as u64;
        self.model.truncate(recovered);
        let verified = verify_dir(&*self.fs, &self.dir)?;
        assert_eq!(
            verified.damage, None,
            "{context}: log not clean after recovery"
        );
        Ok(wal)
    }

    fn random_payload(&mut self) -> Vec<u8> {
        let len = self.rng.below(65) as usize;
        (0..len).map(|_| self.rng.next() as u8).collect()
    }

    /// One operation. Returns false when the log failed and the shard must restart.
    fn step(&mut self, wal: &mut Wal, now: Instant) -> bool {
        match self.rng.below(100) {
            0..=71 => {
                let group = 1 + self.rng.below(8);
                for _ in 0..group {
                    let kind = self.rng.next() as u8;
                    let payload = self.random_payload();
                    let lsn = wal
                        .append(kind, &payload)
                        .expect("a healthy log accepts appends");
                    self.model.push(kind, payload);
                    assert_eq!(lsn as usize, self.model.written.len());
                }
                self.arm_random_fault();
                // A group nobody waits for is written without its fsync; the next
                // commit's fsync (or a rotation's) must cover it.
                let committed = if self.rng.chance(30) {
                    wal.commit_unsynced()
                } else {
                    wal.commit()
                };
                match committed {
                    Ok(info) => {
                        assert_eq!(info.last_lsn as usize, self.model.written.len());
                        self.model.acked = self.model.written.len();
                        if info.durable {
                            self.model.durable = self.model.acked;
                        }
                        self.stats.commits_acked += 1;
                        true
                    }
                    Err(_) => {
                        self.stats.commits_failed += 1;
                        assert!(matches!(wal.append(0, b"x"), Err(Error::Poisoned)));
                        false
                    }
                }
            }
            72..=81 => {
                self.arm_random_fault();
                let acked = self.model.acked;
                let synced = if self.rng.chance(50) {
                    wal.sync().map(|_| true)
                } else {
                    wal.sync_if_due(now)
                };
                match synced {
                    Ok(true) => {
                        self.model.durable = acked;
                        true
                    }
                    Ok(false) => true,
                    Err(_) => false,
                }
            }
            82..=88 => self.checkpoint(wal),
            89..=90 => {
                // Bit rot in the newest checkpoint: recovery must fall back to the older.
                if let Some(newest) = self.newest_checkpoint_file() {
                    let flip = self.rng.below(u64::MAX);
                    self.raw.with_file_mut(&newest, |bytes| {
                        let at = (flip % bytes.len() as u64) as usize;
                        bytes[at] ^= 1 << (flip % 8);
                    });
                }
                true
            }
            _ => false,
        }
    }

    /// A checkpoint of everything acknowledged. It syncs the log first (so in batch mode
    /// all acks become durable), writes the checkpoint, truncates the log. A failed sync
    /// poisons the log; a failed checkpoint write or truncation does not.
    fn checkpoint(&mut self, wal: &mut Wal) -> bool {
        let lsn = wal.written_lsn();
        assert_eq!(lsn as usize, self.model.acked);
        self.arm_random_fault();
        match wal.checkpoint(lsn, &self.model.checkpoint_payload(lsn)) {
            Ok(written) => {
                self.model.durable = self.model.acked;
                self.stats.checkpoints += 1;
                self.stats.segments_truncated += written.wal_segments_deleted as u64;
                true
            }
            Err(_) => !wal.is_poisoned() && !self.raw.is_halted(),
        }
    }

    fn newest_checkpoint_file(&self) -> Option<PathBuf> {
        let mut names: Vec<String> = self
            .fs
            .list_files(&self.dir)
            .ok()?
            .into_iter()
            .filter(|n| n.starts_with("checkpoint-") && n.ends_with(".ckpt"))
            .collect();
        names.sort();
        names.pop().map(|n| self.dir.join(n))
    }

    fn arm_random_fault(&mut self) {
        match self.rng.below(100) {
            0..=2 => self.raw.inject(Fault::ShortWrite {
                written_bytes: self.rng.below(300) as usize,
            }),
            3..=5 => self.raw.inject(Fault::TornWrite {
                written_bytes: self.rng.below(300) as usize,
            }),
            6..=8 => self.raw.inject(Fault::SyncError),
            9..=12 => self.raw.halt_after_ops(self.rng.below(6)),
            _ => {}
        }
    }
}

fn run_seed(seed: u64) -> Stats {
    let mut run = Run::new(seed);
    let dir: &Path = &run.dir.clone();
    let (mut wal, records, _) = Wal::open(run.fs.clone(), dir, run.options.clone(), 0).unwrap();
    assert!(records.is_empty());
    // A synthetic clock: each step is a millisecond, so batch syncs come due now and then.
    let start = Instant::now();
    for step in 0..STEPS_PER_SEED {
        let now = start + Duration::from_millis(step);
        if !run.step(&mut wal, now) {
            drop(wal);
            let power_loss = run.rng.chance(70);
            wal = run.restart(power_loss, seed, step);
        }
    }
    drop(wal);
    run.restart(true, seed, STEPS_PER_SEED);
    run.stats
}

#[test]
fn recovered_log_is_exactly_the_acknowledged_prefix() {
    let started = Instant::now();
    let mut total = Stats::default();
    // CRASH_SEED=n replays one seed, for debugging a failure.
    let seeds = match std::env::var("CRASH_SEED") {
        Ok(seed) => {
            let seed: u64 = seed.parse().expect("CRASH_SEED is a number");
            seed..seed + 1
        }
        Err(_) => 0..SEEDS,
    };
    for seed in seeds {
        let stats = run_seed(seed);
        total.commits_acked += stats.commits_acked;
        total.commits_failed += stats.commits_failed;
        total.power_losses += stats.power_losses;
        total.process_crashes += stats.process_crashes;
        total.crashes_during_recovery += stats.crashes_during_recovery;
        total.torn_tails_cut += stats.torn_tails_cut;
        total.unacked_records_recovered += stats.unacked_records_recovered;
        total.batch_acks_lost += stats.batch_acks_lost;
        total.checkpoints += stats.checkpoints;
        total.checkpoint_fallbacks += stats.checkpoint_fallbacks;
        total.segments_truncated += stats.segments_truncated;
    }
    println!(
        "{STEPS_PER_SEED} steps per seed in {:?}: {total:#?}",
        started.elapsed()
    );
    if std::env::var("CRASH_SEED").is_ok() {
        return; // One seed need not reach every path.
    }
    // The run must have exercised every path it claims to check.
    for (what, count) in [
        ("acked commits", total.commits_acked),
        ("failed commits", total.commits_failed),
        ("power losses", total.power_losses),
        ("process crashes", total.process_crashes),
        ("crashes during recovery", total.crashes_during_recovery),
        ("torn tails cut", total.torn_tails_cut),
        ("unacked records recovered", total.unacked_records_recovered),
        ("batch acks lost", total.batch_acks_lost),
        ("checkpoints", total.checkpoints),
        ("checkpoint fallbacks", total.checkpoint_fallbacks),
        ("segments truncated", total.segments_truncated),
    ] {
        assert!(count > 0, "no {what} in the whole run");
    }
}
