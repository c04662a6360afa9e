//! Property: for random record streams appended through the real WAL, random checkpoints
//! and a sink that fails at random and restarts from its stored cursor, the sink ends up
//! with exactly the stream (duplicates only where at-least-once allows, and equal), and
//! gaps appear only when the retention budget was exceeded.

mod common;

use std::collections::BTreeMap;

use common::{record, TempDir, TestLog};
use liveops_engine::shard::Record;
use liveops_mirror::{Cursor, FeedItem, Gap, Sink, SinkError, SinkRunner};
use liveops_storage::Durability;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// How the sink's next call fails.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Failure {
    /// `apply` fails before writing anything.
    ApplyBefore,
    /// `apply` writes the first half of the batch, then fails before storing its cursor:
    /// those items come again.
    ApplyHalfWritten,
    /// `cursor` fails (the server is unreachable on restart).
    Cursor,
}

#[derive(Debug, Clone)]
enum Op {
    Append(u64),
    Checkpoint,
    Step,
    Fail(Failure),
    /// The sink process restarts: a new runner from the sink's stored cursor.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..15u64).prop_map(Op::Append),
        2 => Just(Op::Checkpoint),
        4 => Just(Op::Step),
        1 => prop_oneof![
            Just(Failure::ApplyBefore),
            Just(Failure::ApplyHalfWritten),
            Just(Failure::Cursor)
        ]
        .prop_map(Op::Fail),
        1 => Just(Op::Restart),
    ]
}

/// A sink whose "server" state survives restarts: rows keyed by LSN, gaps, a cursor.
#[derive(Debug, Default)]
struct ModelSink {
    rows: BTreeMap<u64, Record>,
    gaps: Vec<Gap>,
    /// The stored cursor, written with the rows.
    cursor: Option<Cursor>,
    /// Items that arrived again and were de-duplicated.
    duplicates: u64,
    /// Items written by failed applies (the most duplicates at-least-once allows).
    written_by_failed_applies: u64,
    fail_next: Option<Failure>,
}

impl ModelSink {
    fn write(&mut self, items: &[FeedItem]) {
        for item in items {
            match item {
                FeedItem::Record(r) => {
                    if let Some(old) = self.rows.insert(r.id.lsn, r.record.clone()) {
                        assert_eq!(old, r.record, "a duplicate carries the same record");
                        self.duplicates += 1;
                    }
                }
                FeedItem::Gap(gap) => self.gaps.push(*gap),
            }
        }
    }
}

impl Sink for ModelSink {
    fn name(&self) -> &str {
        "model"
    }

    fn cursor(&mut self, shard: u32) -> Result<Cursor, SinkError> {
        assert_eq!(shard, 3);
        if self.fail_next == Some(Failure::Cursor) {
            self.fail_next = None;
            return Err(SinkError::new("server unreachable"));
        }
        Ok(self.cursor.unwrap_or(Cursor::NEW))
    }

    fn apply(&mut self, shard: u32, items: &[FeedItem]) -> Result<(), SinkError> {
        assert_eq!(shard, 3);
        match self.fail_next {
            Some(Failure::ApplyBefore) => {
                self.fail_next = None;
                return Err(SinkError::new("write refused"));
            }
            Some(Failure::ApplyHalfWritten) => {
                self.fail_next = None;
                let half = &items[..items.len() / 2];
                self.write(half);
                self.written_by_failed_applies += half.len() as u64;
                return Err(SinkError::new("connection lost before commit"));
            }
            _ => {}
        }
        // Contiguous from the stored cursor: nothing skipped, nothing out of order.
        let mut at = self.cursor.unwrap_or(Cursor::NEW);
        for item in items {
            match item {
                FeedItem::Record(r) => assert_eq!(r.id.lsn, at.lsn + 1, "in order"),
                FeedItem::Gap(gap) => assert_eq!(gap.after.lsn, at.lsn, "a gap starts here"),
            }
            at = item.cursor_after();
        }
        self.write(items);
        self.cursor = Some(items.last().unwrap().cursor_after());
        Ok(())
    }
}

fn run_case(ops: Vec<Op>, retain_bytes_max: u64, batch: usize) -> Result<(), TestCaseError> {
    let dir = TempDir::new("model");
    let mut log = TestLog::open(dir.path(), 3, Durability::Fsync, retain_bytes_max);
    let mut appended = 0;
    let mut runner = SinkRunner::new(ModelSink::default(), vec![log.shard_log(1)], batch);
    for op in ops {
        match op {
            Op::Append(count) => {
                log.append(appended + 1, count);
                appended += count;
            }
            Op::Checkpoint => log.checkpoint(),
            Op::Step => {
                let _ = runner.step();
            }
            Op::Fail(failure) => runner.sink_mut().fail_next = Some(failure),
            Op::Restart => {
                let sink = runner.into_sink();
                runner = SinkRunner::new(sink, vec![log.shard_log(1)], batch);
            }
        }
    }
    // Drain: failures pending at the end are retried like the driver would.
    let mut passes = 0;
    loop {
        match runner.step() {
            Ok(0) => break,
            Ok(_) | Err(_) => passes += 1,
        }
        prop_assert!(passes < 10_000, "drains");
    }
    let sink = runner.into_sink();
    let last = Cursor {
        generation: 1,
        lsn: appended,
    };
    if appended > 0 {
        prop_assert_eq!(sink.cursor, Some(last), "caught up");
    }
    // Every LSN is a row equal to what was appended, or inside a reported gap.
    let in_gap = |lsn: u64| {
        sink.gaps
            .iter()
            .any(|g| g.after.lsn < lsn && lsn <= g.through.lsn)
    };
    for lsn in 1..=appended {
        match sink.rows.get(&lsn) {
            Some(row) => prop_assert_eq!(row, &record(lsn)),
            None => prop_assert!(in_gap(lsn), "lsn {} neither mirrored nor in a gap", lsn),
        }
    }
    prop_assert!(sink.rows.keys().all(|&lsn| (1..=appended).contains(&lsn)));
    prop_assert!(sink.duplicates <= sink.written_by_failed_applies);
    // Gaps happen exactly when the budget made a checkpoint delete held segments, and
    // cover only what it deleted.
    let over_through = log.watch.over_budget_through_lsn();
    if sink.gaps.is_empty() {
        // Deleted over budget but still read: the reader had the file open, or the
        // sink had caught up with it meanwhile. Either way nothing was lost.
    } else {
        prop_assert!(
            log.watch.over_budget_segments() > 0,
            "gap without exceeding the budget"
        );
        for gap in &sink.gaps {
            prop_assert!(
                gap.through.lsn <= over_through,
                "gap {:?} beyond what was deleted",
                gap
            );
        }
    }
    if retain_bytes_max == u64::MAX {
        prop_assert!(sink.gaps.is_empty());
        prop_assert_eq!(log.watch.over_budget_segments(), 0);
    }
    Ok(())
}

fn runner(cases: u32, seed: u8) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]),
    )
}

#[test]
fn with_an_unbounded_budget_the_sink_gets_exactly_the_stream() {
    let strategy = (prop::collection::vec(op(), 1..80), 1..12usize);
    runner(256, 1)
        .run(&strategy, |(ops, batch)| run_case(ops, u64::MAX, batch))
        .unwrap();
}

#[test]
fn over_a_small_budget_every_lost_record_is_a_reported_gap() {
    let strategy = (prop::collection::vec(op(), 1..80), 1..12usize, 0..600u64);
    runner(256, 2)
        .run(&strategy, |(ops, batch, budget)| {
            run_case(ops, budget, batch)
        })
        .unwrap();
}

/// The budget test above must actually see gaps, or it proves nothing about them.
#[test]
fn a_sink_far_behind_a_tiny_budget_gets_a_gap() {
    let dir = TempDir::new("model-gap");
    let mut log = TestLog::open(dir.path(), 3, Durability::Fsync, 0);
    let mut runner = SinkRunner::new(ModelSink::default(), vec![log.shard_log(1)], 5);
    log.append(1, 40);
    log.checkpoint();
    log.append(41, 2);
    log.checkpoint();
    while runner.step().unwrap() > 0 {}
    let sink = runner.into_sink();
    assert_eq!(sink.gaps.len(), 1, "{:?}", sink.gaps);
    assert!(log.watch.over_budget_segments() > 0);
    assert_eq!(sink.cursor.unwrap().lsn, 42);
}
