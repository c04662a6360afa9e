//! WAL behaviour through the public API, on the in-memory fault-injecting file system
//! (and once on the real one).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use liveops_storage::fault::{Fault, FaultFs};
use liveops_storage::record::encode_record;
use liveops_storage::{
    latest_checkpoint, verify_dir, CorruptionReason, DamageKind, DumpIter, Durability, Error,
    FileSystem, Record, RecoveryMode, StdFs, Wal, WalOptions, WritableFile, RECORD_HEADER_BYTES,
};

fn setup() -> (FaultFs, Arc<dyn FileSystem>, PathBuf) {
    let fs = FaultFs::new(42);
    (fs.clone(), Arc::new(fs), PathBuf::from("/data/shard-0"))
}

fn small() -> WalOptions {
    WalOptions {
        segment_bytes_max: 1024,
        group_bytes_max: 512,
        ..WalOptions::default()
    }
}

fn truncating() -> WalOptions {
    WalOptions {
        recovery_mode: RecoveryMode::TruncateAtCorruption,
        ..small()
    }
}

fn payload(lsn: u64) -> Vec<u8> {
    format!("record-{lsn}").into_bytes()
}

/// Appends `count` records, one commit per `group` records.
fn write(wal: &mut Wal, count: u64, group: u64) {
    for i in 0..count {
        let lsn = wal.next_lsn();
        assert_eq!(wal.append((lsn % 7) as u8, &payload(lsn)).unwrap(), lsn);
        if (i + 1) % group == 0 {
            wal.commit().unwrap();
        }
    }
    wal.commit().unwrap();
}

fn expected(lsns: std::ops::RangeInclusive<u64>) -> Vec<Record> {
    lsns.map(|lsn| Record {
        lsn,
        kind: (lsn % 7) as u8,
        payload: payload(lsn),
    })
    .collect()
}

fn segment_files(fs: &dyn FileSystem, dir: &Path) -> Vec<PathBuf> {
    let mut names: Vec<String> = fs
        .list_files(dir)
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .collect();
    names.sort();
    names.into_iter().map(|n| dir.join(n)).collect()
}

fn file_len(fs: &dyn FileSystem, path: &Path) -> u64 {
    fs.file_len(path).unwrap()
}

#[test]
fn lsns_are_dense_from_one_and_survive_reopen() {
    let (_, fs, dir) = setup();
    let (mut wal, records, report) = Wal::open(fs.clone(), &dir, small(), 0).unwrap();
    assert!(records.is_empty());
    assert_eq!(report.next_lsn, 1);
    assert_eq!(wal.append(3, b"a").unwrap(), 1);
    assert_eq!(wal.append(4, b"bb").unwrap(), 2);
    let info = wal.commit().unwrap();
    assert_eq!((info.first_lsn, info.last_lsn, info.records), (1, 2, 2));
    assert_eq!(info.bytes, 2 * RECORD_HEADER_BYTES as u64 + 3);
    assert!(info.durable);
    assert_eq!(wal.durable_lsn(), 2);
    let empty = wal.commit().unwrap();
    assert_eq!((empty.records, empty.first_lsn, empty.last_lsn), (0, 3, 2));
    drop(wal);

    let (wal, records, report) = Wal::open(fs, &dir, small(), 0).unwrap();
    assert_eq!(records.iter().map(|r| r.lsn).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(records[1].payload, b"bb");
    assert_eq!(records[1].kind, 4);
    assert_eq!((report.next_lsn, wal.next_lsn()), (3, 3));
    assert!(report.torn_tail.is_none() && report.corruption.is_none());
}

/// Counts calls to prove "one write and one fdatasync per group".
#[derive(Debug)]
struct CountingFs {
    inner: FaultFs,
    appends: Arc<AtomicU64>,
    syncs: Arc<AtomicU64>,
}

#[derive(Debug)]
struct CountingFile {
    inner: Box<dyn WritableFile>,
    appends: Arc<AtomicU64>,
    syncs: Arc<AtomicU64>,
}

impl WritableFile for CountingFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.appends.fetch_add(1, Ordering::Relaxed);
        self.inner.append(buf)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.inner.sync_data()
    }
}

impl CountingFs {
    fn wrap(&self, inner: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        Box::new(CountingFile {
            inner,
            appends: self.appends.clone(),
            syncs: self.syncs.clone(),
        })
    }
}

impl FileSystem for CountingFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn list_files(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list_files(dir)
    }
    fn file_len(&self, path: &Path) -> io::Result<u64> {
        self.inner.file_len(path)
    }
    fn read_into(&self, path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
        self.inner.read_into(path, buf)
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        Ok(self.wrap(self.inner.create_new(path)?))
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        Ok(self.wrap(self.inner.open_append(path)?))
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        self.inner.truncate(path, len)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
}

#[test]
fn a_group_is_one_write_and_one_fdatasync() {
    let appends = Arc::new(AtomicU64::new(0));
    let syncs = Arc::new(AtomicU64::new(0));
    let fs = Arc::new(CountingFs {
        inner: FaultFs::new(1),
        appends: appends.clone(),
        syncs: syncs.clone(),
    });
    let (mut wal, _, _) = Wal::open(fs, "/d", WalOptions::default(), 0).unwrap();
    wal.append(0, b"warm up").unwrap();
    wal.commit().unwrap(); // Creates the first segment.
    let (appends_before, syncs_before) = (
        appends.load(Ordering::Relaxed),
        syncs.load(Ordering::Relaxed),
    );
    for i in 0..256u32 {
        wal.append(1, &i.to_le_bytes().repeat(50)).unwrap();
    }
    let info = wal.commit().unwrap();
    assert_eq!(info.records, 256);
    assert_eq!(appends.load(Ordering::Relaxed) - appends_before, 1);
    assert_eq!(syncs.load(Ordering::Relaxed) - syncs_before, 1);
}

#[test]
fn segments_rotate_by_size_and_are_named_by_first_lsn() {
    let (_, fs, dir) = setup();
    let (mut wal, _, _) = Wal::open(fs.clone(), &dir, small(), 0).unwrap();
    write(&mut wal, 300, 5);
    let files = segment_files(&*fs, &dir);
    assert!(files.len() > 5, "{} segments", files.len());
    assert_eq!(wal.segment_count(), files.len());
    for file in &files {
        assert!(file_len(&*fs, file) <= 1024);
    }
    // Every record sits in the segment named for the first LSN in it.
    let mut firsts = Vec::new();
    for record in DumpIter::new(&*fs, &dir).unwrap() {
        let record = record.unwrap();
        if record.offset == 0 {
            firsts.push(record.lsn);
            assert_eq!(record.file, dir.join(format!("{:020}.wal", record.lsn)));
        }
    }
    assert_eq!(firsts.len(), files.len());
    drop(wal);
    let (_, records, report) = Wal::open(fs, &dir, small(), 0).unwrap();
    assert_eq!(records, expected(1..=300));
    assert_eq!(report.segments_read, files.len());
}

#[test]
fn torn_tail_at_every_byte_of_the_last_record_is_cut_and_reported() {
    for cut_ops in [false, true] {
        // Find where the last record starts and ends.
        let (_, fs, dir) = setup();
        let (mut wal, _, _) = Wal::open(fs.clone(), &dir, WalOptions::default(), 0).unwrap();
        write(&mut wal, 4, 1);
        let segment = segment_files(&*fs, &dir)[0].clone();
        let start = file_len(&*fs, &segment);
        write(&mut wal, 1, 1);
        let end = file_len(&*fs, &segment);

        for at in start..end {
            let (raw, fs, dir) = setup();
            let (mut wal, _, _) = Wal::open(fs.clone(), &dir, WalOptions::default(), 0).unwrap();
            write(&mut wal, 5, 1);
            drop(wal);
            raw.with_file_mut(&segment, |bytes| {
                if cut_ops {
                    bytes[at as usize] ^= 0x5A; // Damaged in place, nothing valid after.
                } else {
                    bytes.truncate(at as usize); // Only a prefix reached the disk.
                }
            });
            let (mut wal, records, report) =
                Wal::open(fs.clone(), &dir, WalOptions::default(), 0).unwrap();
            assert_eq!(records, expected(1..=4), "at {at}");
            let cut_expected = cut_ops || at > start;
            assert_eq!(report.torn_tail.is_some(), cut_expected, "at {at}");
            if let Some(cut) = &report.torn_tail {
                assert_eq!(cut.damage.file, segment);
                assert_eq!(cut.damage.offset, start);
                assert_eq!(cut.damage.kind, DamageKind::TornTail);
                assert_eq!(
                    cut.bytes_cut,
                    if cut_ops { end - start } else { at - start }
                );
            }
            assert_eq!(
                file_len(&*fs, &segment),
                start,
                "cut back to the last good record"
            );
            assert_eq!(wal.next_lsn(), 5);
            wal.append(9, b"after the cut").unwrap();
            wal.commit().unwrap();
            drop(wal);
            let (_, records, report) = Wal::open(fs, &dir, WalOptions::default(), 0).unwrap();
            assert_eq!(records.len(), 5);
            assert_eq!(records[4].payload, b"after the cut");
            assert!(report.torn_tail.is_none());
        }
    }
}

#[test]
fn zero_filled_and_garbage_tails_are_torn() {
    let tails: [Vec<u8>; 3] = [
        vec![0; 4096],
        (0..777u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect(),
        vec![0xFF; 3],
    ];
    for tail in tails {
        let (raw, fs, dir) = setup();
        let (mut wal, _, _) = Wal::open(fs.clone(), &dir, small(), 0).unwrap();
        write(&mut wal, 3, 3);
        drop(wal);
        let segment = segment_files(&*fs, &dir)[0].clone();
        let good = file_len(&*fs, &segment);
        raw.with_file_mut(&segment, |bytes| bytes.extend_from_slice(&tail));
        let report = verify_dir(&*fs, &dir).unwrap();
        assert_eq!(report.damage.as_ref().unwrap().kind, DamageKind::TornTail);
        let (_, records, report) = Wal::open(fs.clone(), &dir, small(), 0).unwrap();
        assert_eq!(records, expected(1..=3));
        let cut = report.torn_tail.unwrap();
        assert_eq!(
            (cut.damage.offset, cut.bytes_cut),
            (good, tail.len() as u64)
        );
        assert!(verify_dir(&*fs, &dir).unwrap().is_clean());
    }
}

#[test]
fn corruption_before_the_tail_strict_refuses_truncate_cuts() {
    let (raw, fs, dir) = setup();
    let (mut wal, _, _) = Wal::open(fs.clone(), &dir, WalOptions::default(), 0).unwrap();
    write(&mut wal, 2, 1);
    let segment = segment_files(&*fs, &dir)[0].clone();
    let bad_offset = file_len(&*fs, &segment);
    write(&mut wal, 8, 1);
    drop(wal);
    raw.with_file_mut(&segment, |bytes| {
        bytes[bad_offset as usize + RECORD_HEADER_BYTES] ^= 1
    });

    let report = verify_dir(&*fs, &dir).unwrap();
    let damage = report.damage.unwrap();
    assert_eq!(
        (damage.file.clone(), damage.offset, damage.kind),
        (segment.clone(), bad_offset, DamageKind::Corruption)
    );
    assert_eq!(report.records, 2);

    let error = Wal::open(fs.clone(), &dir, WalOptions::default(), 0).unwrap_err();
    match &error {
        Error::Corrupt {
            file,
            offset,
            reason,
        } => {
            assert_eq!((file, *offset), (&segment, bad_offset));
            assert!(matches!(reason, CorruptionReason::ChecksumMismatch { .. }));
        }
        other => panic!("{other}"),
    }
    assert!(
        error.to_string().contains("00000000000000000001.wal"),
        "{error}"
    );
    assert!(
        error.to_string().contains(&format!("byte {bad_offset}")),
        "{error}"
    );
    assert_eq!(
        file_len(&*fs, &segment),
        10 * (RECORD_HEADER_BYTES as u64 + 8) + 1,
        "strict changes nothing"
    );

    let options = WalOptions {
        recovery_mode: RecoveryMode::TruncateAtCorruption,
        ..WalOptions::default()
    };
    let (wal, records, report) = Wal::open(fs.clone(), &dir, options, 0).unwrap();
    assert_eq!(records, expected(1..=2));
    let cut = report.corruption.unwrap();
    assert_eq!(
        (cut.damage.offset, cut.damage.kind),
        (bad_offset, DamageKind::Corruption)
    );
    assert_eq!(wal.next_lsn(), 3);
    drop(wal);
    let (_, records, _) = Wal::open(fs, &dir, WalOptions::default(), 0).unwrap();
    assert_eq!(records.len(), 2, "a later strict start sees a clean log");
}

#[test]
fn damage_in_a_segment_that_is_not_the_last_is_corruption() {
    let (raw, fs, dir) = setup();
    let (mut wal, _, _) = Wal::open(fs.clone(), &dir, small(), 0).unwrap();
    write(&mut wal, 200, 4);
    drop(wal);
    let files = segment_files(&*fs, &dir);
    // Cutting the end of segment 2 looks like a torn tail, but segment 3 exists, so
    // records that were durable are gone: corruption.
    let victim = files[2].clone();
    let victim_len = file_len(&*fs, &victim);
    raw.with_file_mut(&victim, |bytes| bytes.truncate(bytes.len() - 3));
    match Wal::open(fs.clone(), &dir, small(), 0).unwrap_err() {
        Error::Corrupt { file, reason, .. } => {
            assert_eq!(file, victim);
            assert!(matches!(reason, CorruptionReason::Truncated { .. }));
        }
        other => panic!("{other}"),
    }
    let (wal, records, report) = Wal::open(fs.clone(), &dir, truncating(), 0).unwrap();
    let cut = report.corruption.unwrap();
    assert_eq!(cut.segments_deleted.len(), files.len() - 3);
    assert_eq!(
        cut.segments_deleted[0],
        *files.last().unwrap(),
        "newest deleted first"
    );
    assert_eq!(segment_files(&*fs, &dir), files[..3]);
    assert!(file_len(&*fs, &victim) < victim_len);
    let last = records.last().unwrap().lsn;
    assert_eq!(records, expected(1..=last));
    assert_eq!(wal.next_lsn(), last + 1);
}

#[test]
fn a_missing_segment_is_a_gap() {
    let (_, fs, dir) = setup();
    let (mut wal, _, _) = Wal::open(fs.clone(), &dir, small(), 0).unwrap();
    write(&mut wal, 200, 4);
    drop(wal);
    let files = segment_files(&*fs, &dir);
    fs.remove_file(&files[3]).unwrap();
    match Wal::open(fs.clone(), &dir, small(), 0).unwrap_err() {
        Error::Corrupt {
            file,
            offset,
            reason,
        } => {
            assert_eq!((file, offset), (files[4].clone(), 0));
            assert!(matches!(reason, CorruptionReason::LogGap { .. }));
        }
        other => panic!("{other}"),
    }
    let (wal, records, report) = Wal::open(fs.clone(), &dir, truncating(), 0).unwrap();
    assert!(report.corruption.is_some());
    assert_eq!(segment_files(&*fs, &dir), files[..3]);
    assert_eq!(wal.next_lsn(), records.last().unwrap().lsn + 1);
}

#[test]
fn a_record_with_the_wrong_lsn_is_corruption() {
    let (raw, fs, dir) = setup();
    let (mut wal, _, _) = Wal::open(fs.clone(), &dir, small(), 0).unwrap();
    write(&mut wal, 3, 3);
    drop(wal);
    let segment = segment_files(&*fs, &dir)[0].clone();
    // A perfectly checksummed record, but LSN 7 where 4 belongs.
    raw.with_file_mut(&segment, |bytes| {
        encode_record(bytes, 7, 0, b"stray").unwrap()
    });
    match Wal::open(fs, &dir, small(), 0).unwrap_err() {
        Error::Corrupt { reason, .. } => {
            assert_eq!(
                reason,
                CorruptionReason::LsnMismatch {
                    expected: 4,
                    found: 7
                }
            )
        }
        other => panic!("{other}"),
    }
}

#[test]
fn truncate_before_deletes_whole_old_segments_only() {
    let (_, fs, dir) = setup();
    let (mut wal, _, _) = Wal::open(fs.clone(), &dir, small(), 0).unwrap();
    write(&mut wal, 200, 4);
    let files = segment_files(&*fs, &dir);
    let firsts: Vec<u64> = files
        .iter()
        .map(|f| {
            f.file_name().unwrap().to_str().unwrap()[..20]
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(wal.truncate_before(firsts[2]).unwrap(), 2);
    assert_eq!(segment_files(&*fs, &dir), files[2..]);
    // One LSN short of the next segment's start: segment 2 still holds a needed record.
    assert_eq!(wal.truncate_before(firsts[3] - 1).unwrap(), 0);
    // Far past the end: everything but the active segment goes.
    assert_eq!(wal.truncate_before(u64::MAX).unwrap(), files.len() - 3);
    assert_eq!(segment_files(&*fs, &dir), [files.last().unwrap().clone()]);
    write(&mut wal, 10, 10);
    drop(wal);
    let after = *firsts.last().unwrap() - 1;
    let (_, records, report) = Wal::open(fs, &dir, small(), after).unwrap();
    assert_eq!(records, expected(after + 1..=210));
    assert_eq!(report.after_lsn, after);
}

#[test]
fn recovery_after_a_checkpoint_reads_only_what_it_needs() {
    let (_, fs, dir) = setup();
    let (mut wal, _, _) = Wal::open(fs.clone(), &dir, small(), 0).unwrap();
    write(&mut wal, 200, 4);
    let checkpoint = wal.checkpoint(150, b"state").unwrap();
    assert_eq!(checkpoint.wal_keep_from_lsn, 1, "no fallback yet");
    assert_eq!(checkpoint.wal_segments_deleted, 0);
    drop(wal);
    let total_segments = segment_files(&*fs, &dir).len();
    let load = latest_checkpoint(&*fs, &dir).unwrap();
    let after = load.checkpoint.unwrap().lsn;
    let (_, records, report) = Wal::open(fs, &dir, small(), after).unwrap();
    assert_eq!(records, expected(151..=200));
    assert_eq!(report.records_replayed, 50);
    assert!(
        report.segments_read < total_segments / 2,
        "{} of {total_segments}",
        report.segments_read
    );
}

#[test]
fn checkpoints_cover_durable_records_and_truncate_the_log() {
    let (_, fs, dir) = setup();
    let options = WalOptions {
        durability: Durability::Batch,
        ..small()
    };
    let (mut wal, _, _) = Wal::open(fs.clone(), &dir, options, 0).unwrap();
    write(&mut wal, 100, 4);
    assert!(wal.durable_lsn() < 100);
    let first = wal.checkpoint(100, b"state@100").unwrap();
    assert_eq!(
        wal.durable_lsn(),
        100,
        "the log is synced before the checkpoint"
    );
    assert_eq!(
        (first.wal_keep_from_lsn, first.wal_segments_deleted),
        (1, 0)
    );
    write(&mut wal, 100, 4);
    let before = wal.segment_count();
    let second = wal.checkpoint(200, b"state@200").unwrap();
    assert_eq!(
        second.wal_keep_from_lsn, 101,
        "keep what the fallback checkpoint needs"
    );
    assert!(second.wal_segments_deleted > 0);
    assert_eq!(wal.segment_count(), before - second.wal_segments_deleted);
    drop(wal);
    // Both kept checkpoints can still be recovered from.
    for after in [100, 200] {
        let (_, records, _) = Wal::open(fs.clone(), &dir, small(), after).unwrap();
        assert_eq!(records, expected(after + 1..=200));
    }
    assert!(verify_dir(&*fs, &dir).unwrap().is_clean());
}

#[test]
#[should_panic(expected = "not committed")]
fn a_checkpoint_cannot_cover_uncommitted_records() {
    let (_, fs, dir) = setup();
    let (mut wal, _, _) = Wal::open(fs, &dir, small(), 0).unwrap();
    wal.append(0, b"pending").unwrap();
    let _ = wal.checkpoint(1, b"state");
}

#[test]
fn a_log_cut_below_its_checkpoint_restarts_after_it() {
    let (raw, fs, dir) = setup();
    let (mut wal, _, _) = Wal::open(fs.clone(), &dir, small(), 0).unwrap();
    write(&mut wal, 60, 3);
    wal.checkpoint(60, b"state@60").unwrap();
    drop(wal);
    // Damage takes the end of the log: the checkpoint still holds those records.
    let last = segment_files(&*fs, &dir).pop().unwrap();
    raw.with_file_mut(&last, |bytes| bytes.clear());
    let (mut wal, records, report) = Wal::open(fs.clone(), &dir, small(), 60).unwrap();
    assert!(records.is_empty());
    assert_eq!(report.restarted_at_lsn, Some(61));
    assert_eq!(wal.next_lsn(), 61);
    assert!(segment_files(&*fs, &dir).is_empty());
    assert_eq!(wal.append(0, b"next").unwrap(), 61);
    wal.commit().unwrap();
    assert_eq!(
        segment_files(&*fs, &dir),
        [dir.join(format!("{:020}.wal", 61))]
    );
    assert!(verify_dir(&*fs, &dir).unwrap().is_clean());
}

#[test]
fn a_failed_fsync_poisons_the_log() {
    let (raw, fs, dir) = setup();
    let (mut wal, _, _) = Wal::open(fs.clone(), &dir, small(), 0).unwrap();
    write(&mut wal, 3, 3);
    wal.append(0, b"doomed").unwrap();
    raw.inject(Fault::SyncError);
    assert!(matches!(wal.commit(), Err(Error::Io { op: "fsync", .. })));
    assert!(wal.is_poisoned());
    assert!(matches!(wal.append(0, b"x"), Err(Error::Poisoned)));
    assert!(matches!(wal.commit(), Err(Error::Poisoned)));
    assert!(matches!(wal.sync(), Err(Error::Poisoned)));
    assert!(matches!(
        wal.sync_if_due(Instant::now()),
        Err(Error::Poisoned)
    ));
}

#[test]
fn a_short_write_poisons_and_recovery_cuts_it() {
    let (raw, fs, dir) = setup();
    let (mut wal, _, _) = Wal::open(fs.clone(), &dir, small(), 0).unwrap();
    write(&mut wal, 3, 3);
    wal.append(0, b"half").unwrap();
    wal.append(0, b"written").unwrap();
    raw.inject(Fault::ShortWrite {
        written_bytes: RECORD_HEADER_BYTES + 2,
    });
    assert!(matches!(wal.commit(), Err(Error::Io { op: "write", .. })));
    assert!(matches!(wal.append(0, b"x"), Err(Error::Poisoned)));
    drop(wal);
    raw.crash();
    let (_, records, _) = Wal::open(fs, &dir, small(), 0).unwrap();
    assert_eq!(records, expected(1..=3));
}

/// A group that promises nothing is one write and no fdatasync; the next commit's
/// fdatasync makes it durable with its own group, and a crash before that may lose it but
/// nothing committed before it.
#[test]
fn an_unsynced_group_is_written_and_made_durable_by_the_next_commit() {
    let raw = FaultFs::new(3);
    let appends = Arc::new(AtomicU64::new(0));
    let syncs = Arc::new(AtomicU64::new(0));
    let fs: Arc<dyn FileSystem> = Arc::new(CountingFs {
        inner: raw.clone(),
        appends: appends.clone(),
        syncs: syncs.clone(),
    });
    let (mut wal, _, _) = Wal::open(fs.clone(), "/d", WalOptions::default(), 0).unwrap();
    wal.append(0, b"durable").unwrap();
    wal.commit().unwrap();
    let counts = || {
        (
            appends.load(Ordering::Relaxed),
            syncs.load(Ordering::Relaxed),
        )
    };
    let before = counts();
    wal.append(1, b"promised nothing").unwrap();
    let info = wal.commit_unsynced().unwrap();
    assert!(!info.durable);
    assert_eq!(
        counts(),
        (before.0 + 1, before.1),
        "one write, no fdatasync"
    );
    assert_eq!((wal.written_lsn(), wal.durable_lsn()), (2, 1));
    wal.append(2, b"answered").unwrap();
    assert!(wal.commit().unwrap().durable);
    assert_eq!(counts(), (before.0 + 2, before.1 + 1));
    assert_eq!(wal.durable_lsn(), 3, "the fsync covers the unsynced group");
    drop(wal);
    raw.crash();
    let (_, records, _) = Wal::open(fs.clone(), "/d", WalOptions::default(), 0).unwrap();
    assert_eq!(records.len(), 3, "all three survive a power loss");

    // Unsynced and then crashed: what was durable before it survives.
    let (mut wal, _, _) = Wal::open(fs.clone(), "/d", WalOptions::default(), 0).unwrap();
    wal.append(3, b"never synced").unwrap();
    wal.commit_unsynced().unwrap();
    assert!(!wal.sync_if_due(Instant::now()).unwrap(), "not due yet");
    drop(wal);
    raw.crash();
    let (_, records, _) = Wal::open(fs, "/d", WalOptions::default(), 0).unwrap();
    assert!(
        (3..=4).contains(&records.len()),
        "{} records after the crash",
        records.len()
    );
}

#[test]
fn batch_mode_acknowledges_after_the_write_and_syncs_when_due() {
    let (_, fs, dir) = setup();
    let options = WalOptions {
        durability: Durability::Batch,
        fsync_interval_ms: 50,
        ..small()
    };
    let (mut wal, _, _) = Wal::open(fs, &dir, options, 0).unwrap();
    let start = Instant::now();
    wal.append(0, b"a").unwrap();
    let info = wal.commit().unwrap();
    assert!(!info.durable);
    assert_eq!((wal.written_lsn(), wal.durable_lsn()), (1, 0));
    assert!(!wal.sync_if_due(start).unwrap(), "not due yet");
    assert!(wal.sync_if_due(start + Duration::from_millis(60)).unwrap());
    assert_eq!(wal.durable_lsn(), 1);
    assert!(
        !wal.sync_if_due(start + Duration::from_secs(10)).unwrap(),
        "nothing to sync"
    );
    wal.append(0, b"b").unwrap();
    wal.commit().unwrap();
    assert_eq!(wal.sync().unwrap(), 2);
}

#[test]
fn limits_on_records_groups_and_options() {
    let (_, fs, dir) = setup();
    let (mut wal, _, _) = Wal::open(fs.clone(), &dir, small(), 0).unwrap();
    assert!(matches!(
        wal.append(0, &[0; 600]),
        Err(Error::TooLarge { .. })
    ));
    wal.append(0, &[0; 400]).unwrap();
    assert!(matches!(
        wal.append(0, &[0; 100]),
        Err(Error::GroupFull { .. })
    ));
    assert_eq!(wal.next_lsn(), 2, "a refused record takes no LSN");
    wal.commit().unwrap();
    wal.append(0, &[0; 100]).unwrap();
    wal.commit().unwrap();

    let bad = [
        WalOptions {
            fsync_interval_ms: 0,
            ..small()
        },
        WalOptions {
            group_bytes_max: 4,
            ..small()
        },
        WalOptions {
            segment_bytes_max: 100,
            ..small()
        },
        WalOptions {
            segment_bytes_max: 2 << 30,
            ..WalOptions::default()
        },
    ];
    for options in bad {
        assert!(matches!(
            Wal::recover(fs.clone(), &dir, options, 0),
            Err(Error::InvalidOption { .. })
        ));
    }
    WalOptions::default().validate().unwrap();
}

#[test]
fn verify_and_dump_name_files_and_offsets() {
    let (raw, fs, dir) = setup();
    let (mut wal, _, _) = Wal::open(fs.clone(), &dir, small(), 0).unwrap();
    write(&mut wal, 100, 5);
    wal.checkpoint(50, b"fifty").unwrap();
    drop(wal);
    let report = verify_dir(&*fs, &dir).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!((report.records, report.lsns), (100, Some((1, 100))));
    assert_eq!(report.checkpoints.len(), 1);

    let dumped: Vec<_> = DumpIter::new(&*fs, &dir)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(dumped.len(), 100);
    for pair in dumped.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert_eq!(b.lsn, a.lsn + 1);
        if a.file == b.file {
            assert_eq!(
                b.offset,
                a.offset + (RECORD_HEADER_BYTES + a.payload.len()) as u64
            );
        } else {
            assert_eq!(b.offset, 0);
        }
    }

    let victim = dumped[40].clone();
    raw.with_file_mut(&victim.file, |bytes| {
        bytes[victim.offset as usize + 9] ^= 0x80
    });
    let report = verify_dir(&*fs, &dir).unwrap();
    let damage = report.damage.unwrap();
    assert_eq!(
        (damage.file, damage.offset, damage.kind),
        (victim.file.clone(), victim.offset, DamageKind::Corruption)
    );
    assert_eq!(report.records, 40);
    let mut dump = DumpIter::new(&*fs, &dir).unwrap();
    assert_eq!(dump.by_ref().count(), 40);
    assert_eq!(dump.damage().unwrap().offset, victim.offset);

    let checkpoint = dir.join(format!("checkpoint-{:020}.ckpt", 50));
    raw.with_file_mut(&checkpoint, |bytes| bytes[34] ^= 1); // In the payload.
    let report = verify_dir(&*fs, &dir).unwrap();
    assert!(report.checkpoints[0].problem.is_some());
}

#[test]
fn verify_flags_a_log_that_starts_after_the_checkpoint() {
    let (_, fs, dir) = setup();
    let (mut wal, _, _) = Wal::open(fs.clone(), &dir, small(), 0).unwrap();
    write(&mut wal, 200, 4);
    wal.checkpoint(10, b"ten").unwrap();
    wal.truncate_before(100).unwrap(); // Wrong: the checkpoint needs lsn 11 on.
    drop(wal);
    let report = verify_dir(&*fs, &dir).unwrap();
    assert!(matches!(
        report.damage.unwrap().reason,
        CorruptionReason::LogGap { expected: 11, .. }
    ));
    assert!(matches!(
        Wal::open(fs, &dir, small(), 10).unwrap_err(),
        Error::Corrupt {
            reason: CorruptionReason::LogGap { expected: 11, .. },
            ..
        }
    ));
}

/// A unique scratch directory under the system temp dir, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(tag: &str) -> ScratchDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        ScratchDir(std::env::temp_dir().join(format!(
            "liveops-storage-{tag}-{}-{nanos}",
            std::process::id()
        )))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn real_files_round_trip_and_cut_a_torn_tail() {
    let scratch = ScratchDir::new("real");
    let dir = scratch.0.join("shard-0");
    let fs: Arc<dyn FileSystem> = Arc::new(StdFs);
    let (mut wal, _, _) = Wal::open(fs.clone(), &dir, small(), 0).unwrap();
    write(&mut wal, 100, 4);
    wal.checkpoint(100, b"state").unwrap();
    drop(wal);
    let last = segment_files(&*fs, &dir).pop().unwrap();
    let good = std::fs::metadata(&last).unwrap().len();
    let mut bytes = std::fs::read(&last).unwrap();
    bytes.extend_from_slice(&[0; 10]);
    std::fs::write(&last, bytes).unwrap();

    let (_, records, report) = Wal::open(fs.clone(), &dir, small(), 0).unwrap();
    assert_eq!(records, expected(1..=100));
    assert_eq!(report.torn_tail.unwrap().damage.offset, good);
    assert_eq!(std::fs::metadata(&last).unwrap().len(), good);
    assert_eq!(
        latest_checkpoint(&*fs, &dir)
            .unwrap()
            .checkpoint
            .unwrap()
            .payload(),
        b"state"
    );
    assert!(verify_dir(&*fs, &dir).unwrap().is_clean());
}

#[test]
fn the_log_can_move_to_a_shard_thread() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Wal>();
    assert_send::<liveops_storage::Recovery>();
    assert_send::<Error>();
}
