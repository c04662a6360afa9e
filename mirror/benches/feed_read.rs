//! Change-feed read throughput: records read, CRC-checked and decoded per second.
//!
//! `cargo bench -p liveops-mirror --bench feed_read`
//!
//! `feed_read/100k`: a [`FeedReader`] reads a durable log of 100,000 engine records
//! (accepted events and unblocks, about 60 bytes each, in segments of about 8,000
//! records, from the page cache) from its start in batches of 4,096; throughput is in
//! records.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::{TempDir, TestLog};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use liveops_mirror::{Cursor, FeedReader};
use liveops_storage::Durability;

const RECORDS: u64 = 100_000;

fn feed_read(c: &mut Criterion) {
    let dir = TempDir::new("bench");
    let mut log = TestLog::open(dir.path(), 8_000, Durability::Batch, u64::MAX);
    log.append(1, RECORDS);
    assert_eq!(log.wal.sync().unwrap(), RECORDS);
    let mut group = c.benchmark_group("feed_read");
    group.throughput(Throughput::Elements(RECORDS));
    group.measurement_time(Duration::from_secs(5));
    group.sample_size(10);
    group.bench_function("100k", |b| {
        let mut batch = Vec::with_capacity(4096);
        b.iter(|| {
            let mut reader = FeedReader::open(log.shard_log(1), Cursor::NEW).unwrap();
            let mut total = 0;
            loop {
                batch.clear();
                let read = reader.read(4096, &mut batch).unwrap();
                if read == 0 {
                    break;
                }
                total += read;
            }
            assert_eq!(total as u64, RECORDS);
        })
    });
    group.finish();
}

criterion_group!(benches, feed_read);
criterion_main!(benches);
