//! Durable WAL append throughput with group commit, and this machine's fdatasync latency.
//!
//! `CARGO_TARGET_DIR=/tmp/target-storage cargo bench -p liveops-storage --bench wal_append`
//!
//! * `wal_append_fsync/{1,16,256}`: one iteration appends a group of that many 200-byte
//!   records and commits it with `Durability::Fsync` (one write, one `fdatasync`);
//!   throughput is in records.
//! * `fdatasync/append_200B`: append 200 bytes to a file and `fdatasync` it, with
//!   `std::fs` directly: the floor under every durable commit.
//! * `wal_recover/100k`: recovering a log of 100,000 200-byte records (from the page
//!   cache); throughput is in records.
//!
//! Files go to a unique directory under the system temp dir, removed at the end.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use liveops_storage::{Durability, FileSystem, StdFs, Wal, WalOptions};

const PAYLOAD_BYTES: usize = 200;

/// A unique scratch directory (pid + nanoseconds), removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> ScratchDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("liveops-wal-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn wal_append(c: &mut Criterion) {
    let scratch = ScratchDir::new();
    let fs: Arc<dyn FileSystem> = Arc::new(StdFs);
    let payload = [0x5A; PAYLOAD_BYTES];
    let mut group = c.benchmark_group("wal_append_fsync");
    for batch in [1u64, 16, 256] {
        let dir = scratch.0.join(format!("batch-{batch}"));
        let (mut wal, _, _) = Wal::open(fs.clone(), &dir, WalOptions::default(), 0).expect("open");
        group.throughput(Throughput::Elements(batch));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter(|| {
                for _ in 0..batch {
                    wal.append(1, &payload).expect("append");
                }
                let info = wal.commit().expect("commit");
                // Bound the disk footprint as checkpoints would: drop closed segments.
                wal.truncate_before(info.last_lsn).expect("truncate");
                info
            })
        });
    }
    group.finish();
}

fn fdatasync(c: &mut Criterion) {
    let scratch = ScratchDir::new();
    let path = scratch.0.join("fdatasync.bin");
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .expect("create");
    let payload = [0x5A; PAYLOAD_BYTES];
    c.bench_function("fdatasync/append_200B", |b| {
        b.iter(|| {
            file.write_all(&payload).expect("write");
            file.sync_data().expect("fdatasync");
        })
    });
}

fn wal_recover(c: &mut Criterion) {
    const RECORDS: u64 = 100_000;
    let scratch = ScratchDir::new();
    let fs: Arc<dyn FileSystem> = Arc::new(StdFs);
    let dir = scratch.0.join("recover");
    let options = WalOptions {
        durability: Durability::Batch,
        ..WalOptions::default()
    };
    let (mut wal, _, _) = Wal::open(fs.clone(), &dir, options, 0).expect("open");
    let payload = [0x5A; PAYLOAD_BYTES];
    for _ in 0..RECORDS / 256 + 1 {
        for _ in 0..256 {
            wal.append(1, &payload).expect("append");
        }
        wal.commit().expect("commit");
    }
    wal.sync().expect("sync");
    let records = wal.written_lsn();
    drop(wal);

    let mut group = c.benchmark_group("wal_recover");
    group.throughput(Throughput::Elements(records));
    group.sample_size(10);
    group.bench_function("100k", |b| {
        b.iter(|| {
            let mut recovery =
                Wal::recover(fs.clone(), &dir, WalOptions::default(), 0).expect("recover");
            let mut bytes = 0;
            while let Some(record) = recovery.next_record().expect("record") {
                bytes += record.payload.len();
            }
            let (_, report) = recovery.finish().expect("finish");
            assert_eq!(report.records_replayed, records);
            bytes
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // The machine is shared: shorter runs, still enough samples for a stable median.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sample_size(30);
    targets = wal_append, fdatasync, wal_recover
}
criterion_main!(benches);
