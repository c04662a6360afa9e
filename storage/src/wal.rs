//! The segmented write-ahead log of one shard: recovery, group commit, truncation.

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checkpoint::{write_checkpoint, CheckpointWritten};
use crate::fs::{FileSystem, WritableFile};
use crate::record::{encode_record, Record, RecordRef, RECORD_BYTES_MAX, RECORD_HEADER_BYTES};
use crate::segment::{
    list_segments, read_segment, segment_file_name, SegmentCursor, Step, SEGMENT_FILE_BYTES_MAX,
};
use crate::watch::LogWatch;
use crate::{io_error, CorruptionReason, Damage, DamageKind, Error, Lsn, Result};

/// When `commit` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// After the group's write and its `fdatasync`: acknowledged means on disk.
    #[default]
    Fsync,
    /// After the write only; [`Wal::sync_if_due`] fsyncs at least every
    /// `fsync_interval_ms`. Survives a process crash, not a power loss.
    Batch,
}

/// What recovery does with corruption that is not a torn tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Stop with [`Error::Corrupt`] naming file and offset; change nothing.
    #[default]
    Strict,
    /// Cut the log at the first bad record, delete every later segment, report it.
    /// Records after the cut are lost: an operator's explicit choice.
    TruncateAtCorruption,
}

/// How a [`Wal`] writes and recovers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalOptions {
    pub durability: Durability,
    /// With [`Durability::Batch`], the longest a written record waits for its fsync
    /// (given `sync_if_due` is called at least that often). In `1..=60_000`.
    pub fsync_interval_ms: u64,
    /// A group goes to a new segment when it would push the current one past this.
    /// At least `group_bytes_max`, at most 1 GiB (recovery reads a segment whole).
    pub segment_bytes_max: u64,
    /// Most bytes one pending group may hold; `append` answers [`Error::GroupFull`]
    /// beyond. Bounds the commit buffer and the tail a crash can tear.
    pub group_bytes_max: usize,
    pub recovery_mode: RecoveryMode,
}

/// Upper limit for `fsync_interval_ms`: beyond a minute "batch" means "maybe never".
const FSYNC_INTERVAL_MS_MAX: u64 = 60_000;

impl Default for WalOptions {
    fn default() -> WalOptions {
        WalOptions {
            durability: Durability::Fsync,
            fsync_interval_ms: 10,
            segment_bytes_max: 64 * 1024 * 1024,
            // Twice the largest record, so any legal record fits into an empty group.
            group_bytes_max: 2 * RECORD_BYTES_MAX,
            recovery_mode: RecoveryMode::Strict,
        }
    }
}

impl WalOptions {
    /// Checks every limit; [`Wal::recover`] calls it.
    pub fn validate(&self) -> Result<()> {
        let invalid = |name, reason: String| Err(Error::InvalidOption { name, reason });
        if !(1..=FSYNC_INTERVAL_MS_MAX).contains(&self.fsync_interval_ms) {
            return invalid(
                "fsync_interval_ms",
                format!(
                    "{} is not in 1..={FSYNC_INTERVAL_MS_MAX}",
                    self.fsync_interval_ms
                ),
            );
        }
        if self.group_bytes_max < RECORD_HEADER_BYTES {
            return invalid(
                "group_bytes_max",
                format!("{} cannot hold even an empty record", self.group_bytes_max),
            );
        }
        if self.segment_bytes_max < self.group_bytes_max as u64 {
            return invalid(
                "segment_bytes_max",
                format!(
                    "{} is below group_bytes_max {}: a full group must fit a segment",
                    self.segment_bytes_max, self.group_bytes_max
                ),
            );
        }
        if self.segment_bytes_max > SEGMENT_FILE_BYTES_MAX {
            return invalid(
                "segment_bytes_max",
                format!(
                    "{} is over {SEGMENT_FILE_BYTES_MAX}",
                    self.segment_bytes_max
                ),
            );
        }
        Ok(())
    }
}

/// What a [`Wal::commit`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInfo {
    /// LSN of the group's first record (the next LSN if the group was empty).
    pub first_lsn: Lsn,
    /// LSN of the group's last record (`first_lsn - 1` if the group was empty).
    pub last_lsn: Lsn,
    pub records: u64,
    pub bytes: u64,
    /// Whether the group was fsynced before `commit` returned.
    pub durable: bool,
}

/// Bytes cut from the log by recovery, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// Where the first bad byte is; the file now ends there (or is deleted if the damage
    /// is a gap before it).
    pub damage: Damage,
    /// Bytes removed from that file.
    pub bytes_cut: u64,
    /// Later segments deleted with it ([`RecoveryMode::TruncateAtCorruption`] only).
    pub segments_deleted: Vec<PathBuf>,
}

/// What recovery found and changed: for the operator's log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecoveryReport {
    /// Records up to this LSN were skipped (they are in the checkpoint).
    pub after_lsn: Lsn,
    pub segments_read: usize,
    /// Records handed out by [`Recovery::next_record`] (those after `after_lsn`).
    pub records_replayed: u64,
    /// The LSN the next append gets.
    pub next_lsn: Lsn,
    /// A torn tail that was cut: expected after a crash, nothing acknowledged is lost.
    pub torn_tail: Option<Cut>,
    /// Corruption cut away under [`RecoveryMode::TruncateAtCorruption`].
    pub corruption: Option<Cut>,
    /// Set when the surviving log ended before `after_lsn`: every segment was deleted and
    /// the log restarts at this LSN (`after_lsn + 1`); the checkpoint holds the rest.
    pub restarted_at_lsn: Option<Lsn>,
}

/// A recovery in progress: hands out the records after `after_lsn` one at a time, in
/// one pass over the segments, then becomes a [`Wal`] with [`Recovery::finish`].
///
/// ```no_run
/// # use std::sync::Arc;
/// # use liveops_storage::*;
/// # fn main() -> Result<()> {
/// let fs: Arc<dyn FileSystem> = Arc::new(StdFs);
/// let dir = std::path::Path::new("data/shard-0");
/// let checkpoint = latest_checkpoint(&*fs, dir)?.checkpoint;
/// let after_lsn = checkpoint.as_ref().map_or(0, |c| c.lsn);
/// let mut recovery = Wal::recover(fs, dir, WalOptions::default(), after_lsn)?;
/// while let Some(record) = recovery.next_record()? {
///     // apply(record.kind, record.payload)
/// }
/// let (mut wal, report) = recovery.finish()?;
/// # Ok(()) }
/// ```
pub struct Recovery {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    options: WalOptions,
    after_lsn: Lsn,
    /// First LSNs of every segment found, ascending.
    segments: Vec<Lsn>,
    /// The segment to load or being scanned.
    index: usize,
    /// The segment holding `after_lsn + 1`: earlier ones are not read.
    index_start: usize,
    cursor: Option<SegmentCursor>,
    buf: Vec<u8>,
    /// The LSN the log must hold next.
    lsn_next: Lsn,
    /// How many of `segments` survive, and the valid length of the last of them.
    segments_kept: usize,
    active_bytes: u64,
    finished: bool,
    report: RecoveryReport,
}

/// Summarizes: the read buffer holds a whole segment.
impl fmt::Debug for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recovery")
            .field("dir", &self.dir)
            .field("after_lsn", &self.after_lsn)
            .field("segments", &self.segments.len())
            .field("index", &self.index)
            .field("lsn_next", &self.lsn_next)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl Recovery {
    /// The next record with an LSN above `after_lsn`, or `None` once the log is done.
    ///
    /// Damage is handled as the recovery mode says the moment it is met: a torn tail or
    /// (in [`RecoveryMode::TruncateAtCorruption`]) corruption is cut and the iteration
    /// ends; in [`RecoveryMode::Strict`] corruption is returned as [`Error::Corrupt`].
    /// Every record handed out before that is valid and in LSN order.
    pub fn next_record(&mut self) -> Result<Option<RecordRef<'_>>> {
        loop {
            if self.finished {
                return Ok(None);
            }
            let Some(cursor) = self.cursor.as_mut() else {
                if self.index == self.segments.len() {
                    self.segments_kept = self.segments.len();
                    self.finished = true;
                } else {
                    self.load_segment()?;
                }
                continue;
            };
            match cursor.step(&self.buf) {
                Step::Record {
                    lsn, kind, payload, ..
                } => {
                    debug_assert_eq!(lsn, self.lsn_next);
                    self.lsn_next = lsn + 1;
                    if lsn > self.after_lsn {
                        self.report.records_replayed += 1;
                        return Ok(Some(RecordRef {
                            lsn,
                            kind,
                            payload: &self.buf[payload],
                        }));
                    }
                }
                Step::End => {
                    self.active_bytes = cursor.offset() as u64;
                    self.cursor = None;
                    self.index += 1;
                }
                Step::Damaged {
                    offset,
                    kind,
                    reason,
                } => {
                    self.cursor = None;
                    self.cut_record(offset as u64, kind, reason)?;
                }
            }
        }
    }

    /// Reads whatever is left, applies the checkpoint rule and opens the log for
    /// appending. The active segment and the directory are fsynced first: a previous
    /// process may have died after writing records or creating files but before making
    /// them durable, and what was just replayed (or will be appended to) must not vanish
    /// in a later power loss.
    pub fn finish(mut self) -> Result<(Wal, RecoveryReport)> {
        while self.next_record()?.is_some() {}
        let fs = Arc::clone(&self.fs);
        let dir = self.dir.clone();
        let mut segments: VecDeque<Lsn> = self.segments[..self.segments_kept]
            .iter()
            .copied()
            .collect();
        // No scanned segment survived (only the unread ones wholly before `after_lsn`, or
        // none), or what survived ends before the checkpoint: all of it is inside the
        // checkpoint, so start clean after it rather than leave a gap in the log.
        if self.segments_kept <= self.index_start || self.lsn_next <= self.after_lsn {
            let deleted = segments.len();
            for first in segments.drain(..) {
                let path = dir.join(segment_file_name(first));
                fs.remove_file(&path).map_err(io_error("remove", &path))?;
            }
            if deleted > 0 {
                fs.sync_dir(&dir)
                    .map_err(io_error("sync directory", &dir))?;
                self.report.restarted_at_lsn = Some(self.after_lsn + 1);
            }
            self.lsn_next = self.after_lsn + 1;
        }
        let active = match segments.back() {
            None => None,
            Some(&first) => {
                assert!(first <= self.lsn_next);
                assert!(self.active_bytes > 0 || first == self.lsn_next);
                let path = dir.join(segment_file_name(first));
                let mut file = fs.open_append(&path).map_err(io_error("open", &path))?;
                file.sync_data().map_err(io_error("fsync", &path))?;
                fs.sync_dir(&dir)
                    .map_err(io_error("sync directory", &dir))?;
                Some(ActiveSegment {
                    file,
                    bytes: self.active_bytes,
                })
            }
        };
        self.report.next_lsn = self.lsn_next;
        let lsn_last = self.lsn_next - 1;
        let wal = Wal {
            fs,
            dir,
            pending: Vec::with_capacity(
                self.options
                    .group_bytes_max
                    .min(PENDING_CAPACITY_BYTES_INITIAL),
            ),
            options: self.options,
            segments,
            active,
            pending_records: 0,
            lsn_next: self.lsn_next,
            lsn_written: lsn_last,
            lsn_durable: lsn_last,
            synced_at: Instant::now(),
            poisoned: false,
            watch: None,
        };
        wal.assert_invariants();
        Ok((wal, self.report))
    }

    fn load_segment(&mut self) -> Result<()> {
        let first = self.segments[self.index];
        let path = self.segment_path(self.index);
        let expected = if self.index == self.index_start {
            // Only possible for a log whose oldest segment starts after the checkpoint.
            (first > self.after_lsn + 1).then_some(self.after_lsn + 1)
        } else {
            (first != self.lsn_next).then_some(self.lsn_next)
        };
        if let Some(expected) = expected {
            let reason = CorruptionReason::LogGap {
                expected,
                found: first,
            };
            return self.cut_segments_from(self.index, reason);
        }
        if let Err(reason) = read_segment(&*self.fs, &path, &mut self.buf)? {
            return self.cut_segments_from(self.index, reason);
        }
        self.report.segments_read += 1;
        self.lsn_next = first;
        self.cursor = Some(SegmentCursor::new(
            first,
            self.index + 1 == self.segments.len(),
        ));
        Ok(())
    }

    /// Damage inside segment `index` at `offset`: a torn tail is cut always; corruption
    /// per the recovery mode. The file is truncated (and fsynced) before later segments
    /// are deleted, so a crash halfway leaves a log that recovery cuts the same way.
    fn cut_record(
        &mut self,
        offset: u64,
        kind: DamageKind,
        reason: CorruptionReason,
    ) -> Result<()> {
        let path = self.segment_path(self.index);
        let damage = Damage {
            file: path.clone(),
            offset,
            kind,
            reason,
        };
        if kind == DamageKind::Corruption && self.options.recovery_mode == RecoveryMode::Strict {
            return Err(damage.into_error());
        }
        let bytes_cut = self.buf.len() as u64 - offset;
        self.fs
            .truncate(&path, offset)
            .map_err(io_error("truncate", &path))?;
        let segments_deleted = self.delete_segments_after(self.index + 1)?;
        assert!(
            kind == DamageKind::Corruption || segments_deleted.is_empty(),
            "a torn tail is in the last segment"
        );
        let cut = Cut {
            damage,
            bytes_cut,
            segments_deleted,
        };
        match kind {
            DamageKind::TornTail => self.report.torn_tail = Some(cut),
            DamageKind::Corruption => self.report.corruption = Some(cut),
        }
        self.segments_kept = self.index + 1;
        self.active_bytes = offset;
        self.finished = true;
        Ok(())
    }

    /// Segment `index` must not be read at all (a gap before it, or too large): cut the
    /// log just before it, if the recovery mode allows.
    fn cut_segments_from(&mut self, index: usize, reason: CorruptionReason) -> Result<()> {
        let path = self.segment_path(index);
        let damage = Damage {
            file: path.clone(),
            offset: 0,
            kind: DamageKind::Corruption,
            reason,
        };
        if self.options.recovery_mode == RecoveryMode::Strict {
            return Err(damage.into_error());
        }
        let bytes_cut = self.fs.file_len(&path).map_err(io_error("stat", &path))?;
        let segments_deleted = self.delete_segments_after(index)?;
        self.report.corruption = Some(Cut {
            damage,
            bytes_cut,
            segments_deleted,
        });
        // `active_bytes` still holds the valid length of segment `index - 1`, which was
        // scanned to its end; with no segment left, `finish` restarts the log.
        self.segments_kept = index;
        self.finished = true;
        Ok(())
    }

    /// Deletes segments `from..`, newest first, then fsyncs the directory.
    fn delete_segments_after(&mut self, from: usize) -> Result<Vec<PathBuf>> {
        let mut deleted = Vec::new();
        for index in (from..self.segments.len()).rev() {
            let path = self.segment_path(index);
            self.fs
                .remove_file(&path)
                .map_err(io_error("remove", &path))?;
            deleted.push(path);
        }
        if !deleted.is_empty() {
            self.fs
                .sync_dir(&self.dir)
                .map_err(io_error("sync directory", &self.dir))?;
        }
        Ok(deleted)
    }

    fn segment_path(&self, index: usize) -> PathBuf {
        self.dir.join(segment_file_name(self.segments[index]))
    }
}

/// Starting capacity of the group buffer; it grows to the largest group seen (at most
/// `group_bytes_max`) and is then reused, so steady-state commits do not allocate.
const PENDING_CAPACITY_BYTES_INITIAL: usize = 1024 * 1024;

/// The segmented write-ahead log of one shard directory. Not shared between threads:
/// the shard that owns the directory owns its `Wal`.
#[derive(Debug)]
pub struct Wal {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    options: WalOptions,
    /// First LSNs of the segments on disk, oldest first; the last is the active one.
    segments: VecDeque<Lsn>,
    active: Option<ActiveSegment>,
    /// Encoded frames of the pending group, written by the next commit.
    pending: Vec<u8>,
    pending_records: u64,
    /// The LSN the next append gets.
    lsn_next: Lsn,
    /// Last LSN handed to the file system by a successful commit.
    lsn_written: Lsn,
    /// Last LSN known durable.
    lsn_durable: Lsn,
    synced_at: Instant,
    poisoned: bool,
    /// Readers following this log from other threads (the change feed), if any: gets
    /// the durable LSN and holds segments back at checkpoints. `None` costs nothing.
    watch: Option<Arc<LogWatch>>,
}

#[derive(Debug)]
struct ActiveSegment {
    file: Box<dyn WritableFile>,
    bytes: u64,
}

impl Wal {
    /// Starts recovering the log in `dir` (created if missing), reading the records
    /// after `after_lsn`: the LSN of the checkpoint the caller loaded, or 0.
    pub fn recover(
        fs: Arc<dyn FileSystem>,
        dir: impl Into<PathBuf>,
        options: WalOptions,
        after_lsn: Lsn,
    ) -> Result<Recovery> {
        options.validate()?;
        let dir = dir.into();
        fs.create_dir_all(&dir)
            .map_err(io_error("create directory", &dir))?;
        let segments = list_segments(&*fs, &dir)?;
        // The segment holding `after_lsn + 1` is the last one starting at or before it;
        // if none does, start at the first, whose gap `load_segment` reports.
        let index_start = segments
            .iter()
            .rposition(|&first| first <= after_lsn + 1)
            .unwrap_or(0);
        let lsn_next = segments.get(index_start).copied().unwrap_or(after_lsn + 1);
        Ok(Recovery {
            fs,
            dir,
            options,
            after_lsn,
            segments,
            index: index_start,
            index_start,
            cursor: None,
            buf: Vec::new(),
            lsn_next,
            segments_kept: 0,
            active_bytes: 0,
            finished: false,
            report: RecoveryReport {
                after_lsn,
                ..RecoveryReport::default()
            },
        })
    }

    /// Recovers and collects every record after `after_lsn` into memory: for tests, tools
    /// and small logs. The engine should stream with [`Wal::recover`] instead.
    pub fn open(
        fs: Arc<dyn FileSystem>,
        dir: impl Into<PathBuf>,
        options: WalOptions,
        after_lsn: Lsn,
    ) -> Result<(Wal, Vec<Record>, RecoveryReport)> {
        let mut recovery = Wal::recover(fs, dir, options, after_lsn)?;
        let mut records = Vec::new();
        while let Some(record) = recovery.next_record()? {
            records.push(record.to_record());
        }
        let (wal, report) = recovery.finish()?;
        Ok((wal, records, report))
    }

    /// Adds a record to the pending group and returns its LSN. Nothing is written until
    /// [`Wal::commit`]; nothing is acknowledged before that returns.
    pub fn append(&mut self, kind: u8, payload: &[u8]) -> Result<Lsn> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let record_bytes = RECORD_HEADER_BYTES + payload.len();
        if record_bytes > self.options.group_bytes_max {
            return Err(Error::TooLarge {
                what: "record (group_bytes_max)",
                bytes: record_bytes as u64,
                bytes_max: self.options.group_bytes_max as u64,
            });
        }
        if self.pending.len() + record_bytes > self.options.group_bytes_max {
            return Err(Error::GroupFull {
                group_bytes: self.pending.len(),
                record_bytes,
                group_bytes_max: self.options.group_bytes_max,
            });
        }
        let lsn = self.lsn_next;
        encode_record(&mut self.pending, lsn, kind, payload)?;
        self.lsn_next += 1;
        self.pending_records += 1;
        Ok(lsn)
    }

    /// Writes the pending group with one write call of one buffer and, with
    /// [`Durability::Fsync`], one `fdatasync`. Any I/O failure poisons the log.
    pub fn commit(&mut self) -> Result<CommitInfo> {
        self.write_group(self.options.durability == Durability::Fsync)
    }

    /// Writes the pending group like [`Wal::commit`], but without its `fdatasync`: for
    /// records nobody has been promised. They become durable with the next commit's
    /// fsync (or rotation), a [`Wal::sync`], or [`Wal::sync_if_due`] once they have
    /// waited `fsync_interval_ms`; a crash before that loses them, as it loses any
    /// record not yet acknowledged.
    pub fn commit_unsynced(&mut self) -> Result<CommitInfo> {
        self.write_group(false)
    }

    fn write_group(&mut self, sync: bool) -> Result<CommitInfo> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let first_lsn = self.lsn_written + 1;
        let last_lsn = self.lsn_next - 1;
        let bytes = self.pending.len() as u64;
        let records = self.pending_records;
        assert_eq!(last_lsn + 1 - first_lsn, records);
        if records == 0 {
            return Ok(CommitInfo {
                first_lsn,
                last_lsn,
                records,
                bytes,
                durable: self.lsn_durable == last_lsn,
            });
        }
        let rotate = match &self.active {
            None => true,
            Some(active) => {
                active.bytes > 0 && active.bytes + bytes > self.options.segment_bytes_max
            }
        };
        if rotate {
            if let Err(error) = self.rotate(first_lsn) {
                return Err(self.poison(error));
            }
        }
        let durable = sync;
        let active = self.active.as_mut().expect("rotate made a segment active");
        if let Err(source) = active.file.append(&self.pending) {
            return Err(self.poison_io("write", source));
        }
        active.bytes += bytes;
        assert!(active.bytes <= self.options.segment_bytes_max);
        self.lsn_written = last_lsn;
        if durable {
            if let Err(source) = active.file.sync_data() {
                return Err(self.poison_io("fsync", source));
            }
            self.set_durable(last_lsn);
            self.synced_at = Instant::now();
        }
        self.pending.clear();
        self.pending_records = 0;
        self.assert_invariants();
        Ok(CommitInfo {
            first_lsn,
            last_lsn,
            records,
            bytes,
            durable,
        })
    }

    /// Fsyncs if written records have waited long enough: `fsync_interval_ms` since the
    /// last sync (see [`Wal::sync_due_in`]). With [`Durability::Batch`], or after a
    /// [`Wal::commit_unsynced`], call it every loop turn and when that comes due.
    /// Returns whether it synced.
    pub fn sync_if_due(&mut self, now: Instant) -> Result<bool> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        if self.sync_due_in(now) != Some(Duration::ZERO) {
            return Ok(false);
        }
        self.sync()?;
        Ok(true)
    }

    /// How long until written records are due for their fsync (`fsync_interval_ms`
    /// after the last sync; zero once due), or `None` when every one is durable.
    pub fn sync_due_in(&self, now: Instant) -> Option<Duration> {
        let interval = Duration::from_millis(self.options.fsync_interval_ms);
        (self.lsn_durable < self.lsn_written)
            .then(|| interval.saturating_sub(now.saturating_duration_since(self.synced_at)))
    }

    /// Fsyncs everything committed so far (at shutdown in batch mode); returns the
    /// durable LSN. A failure poisons the log.
    pub fn sync(&mut self) -> Result<Lsn> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        if self.lsn_durable < self.lsn_written {
            let active = self
                .active
                .as_mut()
                .expect("written records live in a segment");
            if let Err(source) = active.file.sync_data() {
                return Err(self.poison_io("fsync", source));
            }
            self.set_durable(self.lsn_written);
        }
        self.synced_at = Instant::now();
        Ok(self.lsn_durable)
    }

    /// Makes the log durable up to `lsn`, writes `payload` as the checkpoint of the state
    /// after `lsn` (see [`crate::checkpoint`]), keeps it and one older valid checkpoint,
    /// then deletes the segments neither needs. `lsn` must be committed already.
    ///
    /// A failed sync poisons the log; a failed checkpoint write does not (the log is
    /// intact and the previous checkpoints still stand), it is just an error.
    pub fn checkpoint(&mut self, lsn: Lsn, payload: &[u8]) -> Result<CheckpointWritten> {
        assert!(
            lsn <= self.lsn_written,
            "checkpoint at lsn {lsn} covers records not committed (written up to {})",
            self.lsn_written
        );
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        if lsn > self.lsn_durable {
            self.sync()?;
        }
        assert!(lsn <= self.lsn_durable);
        let mut written = write_checkpoint(&*self.fs, &self.dir, lsn, payload)?;
        let delete_before = match self.watch.clone() {
            Some(watch) => self.retention_bound(&watch, written.wal_keep_from_lsn)?,
            None => written.wal_keep_from_lsn,
        };
        written.wal_segments_deleted = self.truncate_before(delete_before)?;
        Ok(written)
    }

    /// Lets readers on other threads follow this log: publishes the durable LSN to
    /// `watch` from now on and makes checkpoints keep the segments its holds need, up to
    /// its budget (see [`crate::watch`]).
    pub fn set_watch(&mut self, watch: Arc<LogWatch>) {
        watch.publish_durable(self.lsn_durable);
        self.watch = Some(watch);
    }

    /// Where a checkpoint may delete up to, given the watch's holds: segments the
    /// checkpoints no longer need (all below `keep_from`) stay while a hold needs any of
    /// their records, as long as those held segments total at most the budget; over it,
    /// the oldest go first (the log stays contiguous) and the watch is told.
    fn retention_bound(&self, watch: &LogWatch, keep_from: Lsn) -> Result<Lsn> {
        let Some(hold_from) = watch.retain_from_lsn() else {
            return Ok(keep_from);
        };
        if hold_from >= keep_from {
            return Ok(keep_from);
        }
        // Segment `i` (never the active one) holds `segments[i]..segments[i + 1]`: the
        // checkpoints let it go iff `segments[i + 1] <= keep_from`, a hold keeps it iff
        // `segments[i + 1] > hold_from`.
        let mut held = Vec::new();
        for i in 0..self.segments.len().saturating_sub(1) {
            let end = self.segments[i + 1];
            if end > keep_from {
                break;
            }
            if end > hold_from {
                let path = self.dir.join(segment_file_name(self.segments[i]));
                let bytes = self.fs.file_len(&path).map_err(io_error("stat", &path))?;
                held.push((end, bytes));
            }
        }
        let mut held_bytes: u64 = held.iter().map(|&(_, bytes)| bytes).sum();
        let mut bound = hold_from;
        for (end, bytes) in held {
            if held_bytes <= watch.retain_bytes_max() {
                break;
            }
            held_bytes -= bytes;
            bound = end;
            watch.note_over_budget(end - 1);
        }
        Ok(bound)
    }

    fn set_durable(&mut self, lsn: Lsn) {
        self.lsn_durable = lsn;
        if let Some(watch) = &self.watch {
            watch.publish_durable(lsn);
        }
    }

    /// Deletes the segments all of whose records are below `lsn` (oldest first, so a
    /// crash halfway leaves a contiguous log), never the active one. [`Wal::checkpoint`]
    /// calls it; call it directly only with an LSN no kept checkpoint needs to replay
    /// from. Returns how many were deleted.
    pub fn truncate_before(&mut self, lsn: Lsn) -> Result<usize> {
        let mut deleted = 0;
        // Segment 0 holds LSNs `segments[0]..segments[1]`: all below `lsn` iff
        // `segments[1] <= lsn`. The active (last) segment always stays.
        while self.segments.len() >= 2 && self.segments[1] <= lsn {
            let path = self.dir.join(segment_file_name(self.segments[0]));
            self.fs
                .remove_file(&path)
                .map_err(io_error("remove", &path))?;
            self.segments.pop_front();
            deleted += 1;
        }
        if deleted > 0 {
            self.fs
                .sync_dir(&self.dir)
                .map_err(io_error("sync directory", &self.dir))?;
        }
        Ok(deleted)
    }

    /// The LSN the next append gets.
    pub fn next_lsn(&self) -> Lsn {
        self.lsn_next
    }

    /// The last LSN written by a successful commit.
    pub fn written_lsn(&self) -> Lsn {
        self.lsn_written
    }

    /// The last LSN known to be durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.lsn_durable
    }

    /// Records appended but not committed yet.
    pub fn pending_records(&self) -> u64 {
        self.pending_records
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Segment files on disk, active one included.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Closes the active segment (fsynced first if any written record is not) and starts
    /// `{first_lsn}.wal`. The old segment is fsynced so that only the newest segment can
    /// hold non-durable bytes; the directory is fsynced so the new name survives.
    fn rotate(&mut self, first_lsn: Lsn) -> Result<()> {
        if self.active.is_some() && self.lsn_durable < self.lsn_written {
            self.sync()?;
        }
        let path = self.dir.join(segment_file_name(first_lsn));
        let file = self
            .fs
            .create_new(&path)
            .map_err(io_error("create", &path))?;
        self.fs
            .sync_dir(&self.dir)
            .map_err(io_error("sync directory", &self.dir))?;
        assert!(self.segments.back().is_none_or(|&last| last < first_lsn));
        self.segments.push_back(first_lsn);
        self.active = Some(ActiveSegment { file, bytes: 0 });
        Ok(())
    }

    /// Poisons the log after `op` failed on the active segment. The path is built only
    /// here, so a healthy commit allocates nothing.
    fn poison_io(&mut self, op: &'static str, source: std::io::Error) -> Error {
        let first = self
            .segments
            .back()
            .copied()
            .expect("an active segment exists");
        let path = self.dir.join(segment_file_name(first));
        self.poison(Error::Io { op, path, source })
    }

    fn poison(&mut self, error: Error) -> Error {
        self.poisoned = true;
        self.pending.clear();
        self.pending_records = 0;
        error
    }

    fn assert_invariants(&self) {
        assert!(self.lsn_durable <= self.lsn_written);
        assert_eq!(self.lsn_written + self.pending_records + 1, self.lsn_next);
        assert!(self.pending.len() <= self.options.group_bytes_max);
        assert_eq!(self.active.is_some(), !self.segments.is_empty());
        if let Some(active) = &self.active {
            assert!(active.bytes <= SEGMENT_FILE_BYTES_MAX);
        }
    }
}
