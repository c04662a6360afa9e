//! # liveops-storage
//!
//! LiveOps Guard's own storage: one segmented write-ahead log (WAL) plus checkpoint files
//! per shard directory. The crate knows nothing of events: a record is an opaque
//! `(kind: u8, payload: bytes)` pair stamped with a log sequence number ([`Lsn`]); the
//! engine encodes its state changes into payloads and its whole state into checkpoints.
//!
//! A shard uses it like this:
//!
//! 1. [`latest_checkpoint`] loads the newest valid checkpoint (LSN `c`), or none (`c = 0`);
//! 2. [`Wal::recover`] with `after_lsn = c` streams the records after it
//!    ([`Recovery::next_record`]), then [`Recovery::finish`] yields the [`Wal`] and a
//!    [`RecoveryReport`] of anything cut;
//! 3. each loop turn: [`Wal::append`] every state change, one [`Wal::commit`], then
//!    acknowledge (with [`Durability::Batch`], also [`Wal::sync_if_due`]);
//! 4. now and then: [`Wal::checkpoint`] with the state as of [`Wal::written_lsn`].
//!
//! ## Layout on disk
//!
//! Each shard owns one directory and nobody else writes to it:
//!
//! ```text
//! <dir>/00000000000000000001.wal              segment: records from lsn 1 on
//! <dir>/00000000000000052311.wal              next segment: its first record has lsn 52311
//! <dir>/checkpoint-00000000000000052000.ckpt  older checkpoint (state after lsn 52000)
//! <dir>/checkpoint-00000000000000104000.ckpt  newest checkpoint
//! <dir>/checkpoint-00000000000000156000.ckpt.tmp   checkpoint being written; never read
//! ```
//!
//! * A segment file is a plain sequence of records (framing in [`record`]) with no
//!   header: its name carries its first LSN, and LSNs are dense (1, 2, 3, ... with no gap)
//!   within a segment and from one segment to the next. A new segment is started when
//!   the next group would push the current one past [`WalOptions::segment_bytes_max`].
//! * A checkpoint file is a 32-byte header (magic, format version, CRC32C, LSN, payload
//!   length) followed by the payload; see [`checkpoint`]. The newest two valid ones are
//!   kept.
//!
//! ## Durability policy
//!
//! * Records are appended to a pending group ([`Wal::append`]) and written by
//!   [`Wal::commit`] with one write call of one contiguous buffer.
//! * [`Durability::Fsync`] (the default): `commit` returns only after `fdatasync` of that
//!   write, so an acknowledged record survives power loss.
//! * [`Durability::Batch`]: `commit` returns after the write; [`Wal::sync_if_due`] syncs at
//!   least every [`WalOptions::fsync_interval_ms`]. A process crash loses nothing that was
//!   written (the page cache survives it); a power loss or kernel crash can lose the
//!   records of the last interval (always a suffix of the log, never a hole).
//! * A failed write or fsync poisons the [`Wal`]: that call fails and every later append,
//!   commit or sync returns [`Error::Poisoned`]. There is no retry: after a failed fsync
//!   the kernel may already have dropped the dirty pages and a second fsync would
//!   "succeed" without them (the 2018 "fsyncgate" lesson). Restart and recover instead.
//! * Before a new segment is created, the current one is fsynced; after it is created, the
//!   directory is fsynced. So only the last segment can ever hold data that was not
//!   durable, which is what lets recovery tell a torn tail from corruption.
//! * A checkpoint ([`Wal::checkpoint`]) covers only durable records: the log is fsynced
//!   up to its LSN first. It is written to a `.tmp` file, fsynced, renamed into place and
//!   the directory fsynced, so a checkpoint file either exists whole or not at all. Only
//!   then are the segments deleted that neither it nor the older kept checkpoint needs.
//!
//! * With a [`LogWatch`] ([`Wal::set_watch`]), readers on other threads (the change
//!   feed) see the durable LSN and can hold segments back from that deletion, within a
//!   byte budget; see [`watch`].
//!
//! ## Recovery policy
//!
//! [`Wal::recover`] reads the log after a given LSN (the newest checkpoint's, see
//! [`checkpoint::latest_checkpoint`]) and decides:
//!
//! * **Torn tail**: a short or CRC-bad record at the end of the *last* segment with no
//!   valid record anywhere after it (zero-filled or garbage tails included). That is what
//!   a crash during an unacknowledged write leaves. It is always cut: the file is
//!   truncated to the end of the last good record and fsynced, and
//!   [`RecoveryReport::torn_tail`] names the file and byte offset.
//! * **Corruption**: a bad record followed by a valid one, a bad record in a segment that
//!   is not the last, a CRC-valid record with the wrong LSN, or a gap in LSNs between
//!   segments. With [`RecoveryMode::Strict`] (the default) recovery stops with
//!   [`Error::Corrupt`] naming file and offset. With
//!   [`RecoveryMode::TruncateAtCorruption`] the log is cut there (that file truncated,
//!   every later segment deleted) and [`RecoveryReport::corruption`] says what was lost.
//!   One honest limit: a disk that tears a write out of order (a later sector of the
//!   last group durable, an earlier one not) leaves a bad record with a valid one after
//!   it, which reads as corruption; strict recovery then refuses to start and the
//!   operator chooses to truncate. Nothing acknowledged is in such a group.
//! * Recovery fsyncs the active segment and the directory before appending: a previous
//!   process may have died after writing or creating files without making them durable,
//!   and what was just replayed must not vanish in a later power loss.
//! * If the surviving log ends before the checkpoint's LSN (only after a cut or damage,
//!   since checkpoints cover durable records only), the records it lacks are all inside
//!   the checkpoint: every segment is deleted, the log restarts at checkpoint LSN + 1 and
//!   [`RecoveryReport::restarted_at_lsn`] says so.
//!
//! ## Operators
//!
//! [`verify::verify_dir`] checks every segment and checkpoint without changing anything
//! and names the first bad record; [`verify::DumpIter`] walks every record with its file
//! and offset. Run them on a stopped shard: a write in progress looks like a torn tail.
//!
//! ## File systems
//!
//! All I/O goes through [`fs::FileSystem`]: [`fs::StdFs`] for real files and
//! [`fault::FaultFs`], an in-memory file system for tests that tears writes, fails
//! fsyncs and crashes, dropping whatever was not made durable.

use std::io;
use std::path::PathBuf;

pub mod checkpoint;
mod covered;
pub mod fault;
pub mod fs;
pub mod record;
mod segment;
pub mod verify;
mod wal;
pub mod watch;

pub use checkpoint::{
    latest_checkpoint, Checkpoint, CheckpointLoad, CheckpointWritten, SkippedCheckpoint,
};
pub use covered::{read_covered, CoveredRead};
pub use fs::{FileSystem, StdFs, WritableFile};
pub use record::{Record, RecordRef, RECORD_HEADER_BYTES, RECORD_PAYLOAD_BYTES_MAX};
pub use segment::{parse_segment_file_name, segment_file_name};
pub use verify::{verify_dir, DumpIter, DumpRecord, VerifyReport};
pub use wal::{
    CommitInfo, Cut, Durability, Recovery, RecoveryMode, RecoveryReport, Wal, WalOptions,
};
pub use watch::{LogWatch, RetentionHold};

/// Log sequence number: dense and increasing per shard, starting at 1. Zero means
/// "before the first record" (for example "no checkpoint").
pub type Lsn = u64;

/// Everything this crate can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused an operation.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Damage that the recovery mode does not allow to be cut away.
    #[error("corrupt {} at byte {offset}: {reason}", file.display())]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: CorruptionReason,
    },
    /// An earlier write or fsync failed; nothing more is accepted until a restart.
    #[error("the WAL is poisoned by an earlier failed write or fsync; restart to recover")]
    Poisoned,
    /// A payload (record or checkpoint) over its limit.
    #[error("{what} of {bytes} bytes is over the limit of {bytes_max} bytes")]
    TooLarge {
        what: &'static str,
        bytes: u64,
        bytes_max: u64,
    },
    /// The pending group has no room for this record: commit first, then append again.
    #[error("the pending group holds {group_bytes} bytes; {record_bytes} more would pass group_bytes_max {group_bytes_max}")]
    GroupFull {
        group_bytes: usize,
        record_bytes: usize,
        group_bytes_max: usize,
    },
    /// A [`WalOptions`] value outside its limits.
    #[error("invalid WAL option {name}: {reason}")]
    InvalidOption { name: &'static str, reason: String },
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why bytes on disk were judged bad.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorruptionReason {
    #[error("record truncated: it needs {needed} bytes, {available} are left")]
    Truncated { needed: u64, available: u64 },
    #[error(
        "record payload length {payload_bytes} is over the limit of {RECORD_PAYLOAD_BYTES_MAX}"
    )]
    PayloadTooLarge { payload_bytes: u64 },
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch { stored: u32, computed: u32 },
    #[error("record has lsn {found}, expected {expected}")]
    LsnMismatch { expected: Lsn, found: Lsn },
    #[error("segment starts at lsn {found}, expected lsn {expected}: records are missing")]
    LogGap { expected: Lsn, found: Lsn },
    #[error("file is {bytes} bytes, over the limit of {bytes_max}")]
    FileTooLarge { bytes: u64, bytes_max: u64 },
    #[error("not a checkpoint file (bad magic)")]
    BadMagic,
    #[error("checkpoint format version {version} is not supported")]
    UnsupportedVersion { version: u32 },
    #[error("header says {header_bytes} payload bytes, the file holds {file_bytes}")]
    LengthMismatch { header_bytes: u64, file_bytes: u64 },
    #[error("file name says lsn {named}, header says lsn {header}")]
    NameMismatch { named: Lsn, header: Lsn },
}

/// Whether damage is the expected leftover of a crash or a real corruption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    /// A short or bad record at the end of the last segment, nothing valid after it.
    TornTail,
    /// Anything else: bad data followed by good data, a bad non-last segment, a gap.
    Corruption,
}

/// A bad spot on disk: which file, where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?} in {} at byte {offset}: {reason}", file.display())]
pub struct Damage {
    pub file: PathBuf,
    pub offset: u64,
    pub kind: DamageKind,
    pub reason: CorruptionReason,
}

impl Damage {
    /// The error that reports this damage when it may not be cut away.
    pub fn into_error(self) -> Error {
        Error::Corrupt {
            file: self.file,
            offset: self.offset,
            reason: self.reason,
        }
    }
}

/// Maps an `io::Error` to [`Error::Io`] for `op` on `path`.
pub(crate) fn io_error(
    op: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}
