//! The feed reader on a real log: rollover, the durable bound, torn tails, deleted
//! segments and layout generations.

mod common;

use std::io::Write;

use common::{record, TempDir, TestLog};
use liveops_mirror::{Cursor, FeedError, FeedItem, FeedReader, Gap, GapReason, RecordId};
use liveops_storage::{segment_file_name, Durability};

/// Reads everything durable now, in batches of `batch`.
fn read_all(reader: &mut FeedReader, batch: usize) -> Vec<FeedItem> {
    let mut out = Vec::new();
    while reader.read(batch, &mut out).unwrap() > 0 {}
    out
}

fn lsns(items: &[FeedItem]) -> Vec<u64> {
    items
        .iter()
        .map(|item| match item {
            FeedItem::Record(r) => r.id.lsn,
            FeedItem::Gap(gap) => panic!("unexpected gap {gap:?}"),
        })
        .collect()
}

fn at(generation: u64, lsn: u64) -> Cursor {
    Cursor { generation, lsn }
}

#[test]
fn follows_rollover_in_order_and_tails_new_records() {
    let dir = TempDir::new("rollover");
    let mut log = TestLog::open(dir.path(), 4, Durability::Fsync, u64::MAX);
    log.append(1, 30);
    assert!(log.wal.segment_count() >= 4, "several segments");
    let mut reader = FeedReader::open(log.shard_log(2), Cursor::NEW).unwrap();
    let items = read_all(&mut reader, 7);
    assert_eq!(lsns(&items), (1..=30).collect::<Vec<_>>());
    for item in &items {
        let FeedItem::Record(r) = item else {
            unreachable!()
        };
        assert_eq!(
            r.id,
            RecordId {
                generation: 2,
                shard: 3,
                lsn: r.id.lsn
            }
        );
        assert_eq!(r.record, record(r.id.lsn), "decoded as written");
    }
    assert_eq!(r_id_text(&items[0]), "g2-s3-1");
    // At the end it waits; new records, in a new segment too, come next.
    assert_eq!(reader.read(100, &mut Vec::new()).unwrap(), 0);
    log.append(31, 10);
    assert_eq!(
        lsns(&read_all(&mut reader, 3)),
        (31..=40).collect::<Vec<_>>()
    );
    assert_eq!(reader.position(), at(2, 40));

    // A reader opened mid-way starts right after its cursor.
    let mut reader = FeedReader::open(log.shard_log(2), at(2, 17)).unwrap();
    assert_eq!(
        lsns(&read_all(&mut reader, 100)),
        (18..=40).collect::<Vec<_>>()
    );
}

fn r_id_text(item: &FeedItem) -> String {
    match item {
        FeedItem::Record(r) => r.id.to_string(),
        FeedItem::Gap(_) => unreachable!(),
    }
}

#[test]
fn never_reads_past_the_durable_lsn() {
    let dir = TempDir::new("durable");
    let mut log = TestLog::open(dir.path(), 100, Durability::Batch, u64::MAX);
    log.append(1, 5);
    assert_eq!(log.watch.durable_lsn(), 0, "written, not fsynced");
    let mut reader = FeedReader::open(log.shard_log(1), Cursor::NEW).unwrap();
    assert_eq!(
        reader.read(100, &mut Vec::new()).unwrap(),
        0,
        "on disk but not durable"
    );
    assert_eq!(log.wal.sync().unwrap(), 5);
    assert_eq!(lsns(&read_all(&mut reader, 100)), vec![1, 2, 3, 4, 5]);
}

#[test]
fn a_torn_tail_past_the_durable_lsn_is_never_read_as_data() {
    let dir = TempDir::new("torn");
    let mut log = TestLog::open(dir.path(), 100, Durability::Fsync, u64::MAX);
    log.append(1, 3);
    // A group being written (or torn by a crash): half a valid frame of record 4, then
    // garbage, at the end of the active segment.
    let mut frame = Vec::new();
    let mut payload = Vec::new();
    let kind = liveops_engine::codec::encode(&record(4), &mut payload);
    liveops_storage::record::encode_record(&mut frame, 4, kind, &payload).unwrap();
    let segment = dir.path().join(segment_file_name(1));
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap();
    file.write_all(&frame[..frame.len() / 2]).unwrap();
    file.write_all(&[0xA5; 40]).unwrap();
    let mut reader = FeedReader::open(log.shard_log(1), Cursor::NEW).unwrap();
    assert_eq!(lsns(&read_all(&mut reader, 100)), vec![1, 2, 3]);
    assert_eq!(
        reader.read(100, &mut Vec::new()).unwrap(),
        0,
        "and no error either"
    );
}

#[test]
fn a_damaged_durable_record_is_an_error_not_data() {
    let dir = TempDir::new("corrupt");
    let mut log = TestLog::open(dir.path(), 100, Durability::Fsync, u64::MAX);
    log.append(1, 3);
    let segment = dir.path().join(segment_file_name(1));
    let mut bytes = std::fs::read(&segment).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40; // In record 3's payload.
    std::fs::write(&segment, &bytes).unwrap();
    let mut reader = FeedReader::open(log.shard_log(1), Cursor::NEW).unwrap();
    let mut out = Vec::new();
    let error = loop {
        match reader.read(100, &mut out) {
            Ok(0) => panic!("the damaged record was skipped"),
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert!(matches!(error, FeedError::Corrupt { .. }), "{error}");
    assert_eq!(
        lsns(&out),
        vec![1, 2],
        "everything before it was handed out"
    );
}

#[test]
fn deleted_segments_are_reported_as_a_gap() {
    let dir = TempDir::new("gap");
    // No hold: checkpoints delete as usual.
    let mut log = TestLog::open(dir.path(), 4, Durability::Fsync, u64::MAX);
    log.append(1, 20);
    log.checkpoint();
    log.append(21, 2);
    log.checkpoint();
    let oldest = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| liveops_storage::parse_segment_file_name(e.unwrap().file_name().to_str()?))
        .min()
        .unwrap();
    assert!(
        oldest > 5,
        "segments were deleted (oldest left starts at {oldest})"
    );
    let mut reader = FeedReader::open(log.shard_log(1), at(1, 2)).unwrap();
    let items = read_all(&mut reader, 100);
    assert_eq!(
        items[0],
        FeedItem::Gap(Gap {
            shard: 3,
            after: at(1, 2),
            through: at(1, oldest - 1),
            reason: GapReason::SegmentsDeleted,
        })
    );
    assert_eq!(lsns(&items[1..]), (oldest..=22).collect::<Vec<_>>());
}

#[test]
fn a_cursor_of_an_older_generation_gets_a_gap_and_a_newer_one_is_refused() {
    let dir = TempDir::new("generation");
    let mut log = TestLog::open(dir.path(), 100, Durability::Fsync, u64::MAX);
    log.append(1, 3);
    let mut reader = FeedReader::open(log.shard_log(5), at(4, 1234)).unwrap();
    let items = read_all(&mut reader, 100);
    assert_eq!(
        items[0],
        FeedItem::Gap(Gap {
            shard: 3,
            after: at(4, 1234),
            through: at(5, 0),
            reason: GapReason::OlderGeneration,
        })
    );
    assert_eq!(items[0].cursor_after(), at(5, 0));
    assert_eq!(lsns(&items[1..]), vec![1, 2, 3]);
    let refused = FeedReader::open(log.shard_log(5), at(6, 1)).unwrap_err();
    assert!(matches!(
        refused,
        FeedError::CursorFromNewerGeneration { generation: 5, .. }
    ));
}

#[test]
fn a_segment_missing_after_the_one_read_is_a_gap_not_a_loop() {
    let dir = TempDir::new("missing");
    let mut log = TestLog::open(dir.path(), 4, Durability::Fsync, u64::MAX);
    log.append(1, 30);
    let mut firsts: Vec<u64> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| liveops_storage::parse_segment_file_name(e.unwrap().file_name().to_str()?))
        .collect();
    firsts.sort_unstable();
    assert!(firsts.len() >= 3);
    // Someone deletes the second segment by hand while the first is still there.
    std::fs::remove_file(dir.path().join(segment_file_name(firsts[1]))).unwrap();
    let mut reader = FeedReader::open(log.shard_log(1), Cursor::NEW).unwrap();
    let items = read_all(&mut reader, 100);
    let split = (firsts[1] - 1) as usize;
    assert_eq!(lsns(&items[..split]), (1..firsts[1]).collect::<Vec<_>>());
    assert_eq!(
        items[split],
        FeedItem::Gap(Gap {
            shard: 3,
            after: at(1, firsts[1] - 1),
            through: at(1, firsts[2] - 1),
            reason: GapReason::SegmentsDeleted,
        })
    );
    assert_eq!(
        lsns(&items[split + 1..]),
        (firsts[2]..=30).collect::<Vec<_>>()
    );
}
