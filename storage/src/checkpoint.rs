//! Checkpoint files: a shard's whole state as of an LSN, so recovery replays only the
//! log after it and old segments can be deleted.
//!
//! `checkpoint-{lsn:020}.ckpt`:
//!
//! ```text
//! offset  size  field
//!      0     8  magic           b"LVOPSCKP"
//!      8     4  format_version  u32 LE, currently 1
//!     12     4  crc32c          u32 LE over bytes 8..12, then 16..32, then the payload
//!     16     8  lsn             u64 LE, equal to the LSN in the file name
//!     24     8  payload_len     u64 LE, equal to file length - 32
//!     32     n  payload         opaque to this crate
//! ```
//!
//! Written as `.tmp` → write → fsync → rename → fsync the directory, so a checkpoint file
//! under its final name is always complete. The newest two valid checkpoints are kept:
//! if the newest one rots, recovery falls back to the older one, and the log keeps the
//! segments that fallback needs ([`CheckpointWritten::wal_keep_from_lsn`]).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::fs::FileSystem;
use crate::segment::parse_lsn_digits;
use crate::{io_error, CorruptionReason, Error, Lsn, Result};

pub const CHECKPOINT_MAGIC: [u8; 8] = *b"LVOPSCKP";
pub const CHECKPOINT_FORMAT_VERSION: u32 = 1;
pub const CHECKPOINT_HEADER_BYTES: usize = 32;
/// Largest payload: a checkpoint is read whole into memory at recovery.
pub const CHECKPOINT_PAYLOAD_BYTES_MAX: u64 = 1 << 30;
/// How many valid checkpoints are kept: the newest, and one to fall back to.
pub const CHECKPOINTS_KEPT: usize = 2;

const PREFIX: &str = "checkpoint-";
const SUFFIX: &str = ".ckpt";
const TMP_SUFFIX: &str = ".ckpt.tmp";

/// A valid checkpoint read from disk.
#[derive(Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub lsn: Lsn,
    pub file: PathBuf,
    /// Header and payload as read; kept whole so loading copies nothing.
    bytes: Vec<u8>,
}

impl Checkpoint {
    pub fn payload(&self) -> &[u8] {
        &self.bytes[CHECKPOINT_HEADER_BYTES..]
    }
}

/// Summarizes: the payload can be a gigabyte, and checkpoints end up in logs.
impl fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkpoint")
            .field("lsn", &self.lsn)
            .field("file", &self.file)
            .field("payload_bytes", &self.payload().len())
            .finish()
    }
}

/// A checkpoint file that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedCheckpoint {
    pub file: PathBuf,
    pub reason: CorruptionReason,
}

/// The result of [`latest_checkpoint`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckpointLoad {
    /// The newest valid checkpoint, if any.
    pub checkpoint: Option<Checkpoint>,
    /// Newer files that were invalid and skipped, newest first: for the operator's log.
    pub skipped: Vec<SkippedCheckpoint>,
    /// The LSN of the next older checkpoint file (named, not read), if any: the log after
    /// it is still on disk, kept for it as a fallback (see [`crate::read_covered`]).
    pub previous_lsn: Option<Lsn>,
}

/// What [`crate::Wal::checkpoint`] wrote and deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointWritten {
    pub file: PathBuf,
    pub bytes: u64,
    /// The first LSN a recovery from the older kept checkpoint (the fallback) needs, or 1
    /// when there is none; [`crate::Wal::checkpoint`] deletes the segments before it.
    pub wal_keep_from_lsn: Lsn,
    /// Log segments deleted after the checkpoint was written.
    pub wal_segments_deleted: usize,
    /// Older (or stale) checkpoint files deleted.
    pub deleted: Vec<PathBuf>,
    /// Files found invalid while choosing the fallback (also deleted).
    pub skipped: Vec<SkippedCheckpoint>,
}

/// `checkpoint-{lsn:020}.ckpt`
pub fn checkpoint_file_name(lsn: Lsn) -> String {
    format!("{PREFIX}{lsn:020}{SUFFIX}")
}

fn parse_checkpoint_file_name(name: &str) -> Option<Lsn> {
    parse_lsn_digits(name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?)
}

fn parse_tmp_file_name(name: &str) -> Option<Lsn> {
    parse_lsn_digits(name.strip_prefix(PREFIX)?.strip_suffix(TMP_SUFFIX)?)
}

/// LSNs of the checkpoint files in `dir`, newest first; an absent directory has none.
pub(crate) fn list_checkpoints(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<Lsn>> {
    let names = match fs.list_files(dir) {
        Ok(names) => names,
        Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(error) => return Err(io_error("list", dir)(error)),
    };
    let mut lsns: Vec<Lsn> = names
        .iter()
        .filter_map(|name| parse_checkpoint_file_name(name))
        .collect();
    lsns.sort_unstable_by(|a, b| b.cmp(a));
    Ok(lsns)
}

/// Writes the state as of `lsn` durably, then prunes: keeps it and the newest older valid
/// checkpoint, deletes every other checkpoint file. Files claiming a *higher* LSN are
/// deleted too: the caller's state is the truth now, and such a file is either invalid
/// or from history the caller did not recover from.
///
/// Reached through [`crate::Wal::checkpoint`], which first makes the log durable up to
/// `lsn`: a checkpoint covering records the log could still lose would leave the older
/// checkpoint without the log it needs to be a fallback.
pub(crate) fn write_checkpoint(
    fs: &dyn FileSystem,
    dir: &Path,
    lsn: Lsn,
    payload: &[u8],
) -> Result<CheckpointWritten> {
    if payload.len() as u64 > CHECKPOINT_PAYLOAD_BYTES_MAX {
        return Err(Error::TooLarge {
            what: "checkpoint payload",
            bytes: payload.len() as u64,
            bytes_max: CHECKPOINT_PAYLOAD_BYTES_MAX,
        });
    }
    let path = dir.join(checkpoint_file_name(lsn));
    let tmp = dir.join(format!("{PREFIX}{lsn:020}{TMP_SUFFIX}"));
    let names = fs.list_files(dir).map_err(io_error("list", dir))?;
    // Leftovers of checkpoints interrupted by a crash: never read, just in the way.
    for name in names
        .iter()
        .filter(|name| parse_tmp_file_name(name).is_some())
    {
        let stale = dir.join(name);
        fs.remove_file(&stale).map_err(io_error("remove", &stale))?;
    }

    let header = encode_header(lsn, payload);
    let mut file = fs.create_new(&tmp).map_err(io_error("create", &tmp))?;
    file.append(&header).map_err(io_error("write", &tmp))?;
    file.append(payload).map_err(io_error("write", &tmp))?;
    file.sync_data().map_err(io_error("fsync", &tmp))?;
    drop(file);
    fs.rename(&tmp, &path).map_err(io_error("rename", &tmp))?;
    fs.sync_dir(dir).map_err(io_error("sync directory", dir))?;

    // Newest first: the first valid older ones become the fallbacks.
    let mut fallbacks: Vec<Lsn> = Vec::new();
    let mut deleted = Vec::new();
    let mut skipped = Vec::new();
    for other in list_checkpoints(fs, dir)? {
        if other == lsn {
            continue;
        }
        let other_path = dir.join(checkpoint_file_name(other));
        if fallbacks.len() + 1 < CHECKPOINTS_KEPT && other < lsn {
            match read_checkpoint(fs, &other_path, other)? {
                Ok(_) => {
                    fallbacks.push(other);
                    continue;
                }
                Err(reason) => skipped.push(SkippedCheckpoint {
                    file: other_path.clone(),
                    reason,
                }),
            }
        }
        fs.remove_file(&other_path)
            .map_err(io_error("remove", &other_path))?;
        deleted.push(other_path);
    }
    if !deleted.is_empty() {
        fs.sync_dir(dir).map_err(io_error("sync directory", dir))?;
    }
    Ok(CheckpointWritten {
        file: path,
        bytes: (CHECKPOINT_HEADER_BYTES + payload.len()) as u64,
        wal_keep_from_lsn: fallbacks.last().map_or(1, |oldest| oldest + 1),
        wal_segments_deleted: 0,
        deleted,
        skipped,
    })
}

/// The newest valid checkpoint in `dir`, skipping (and reporting) invalid newer ones.
pub fn latest_checkpoint(fs: &dyn FileSystem, dir: &Path) -> Result<CheckpointLoad> {
    let mut load = CheckpointLoad::default();
    let lsns = list_checkpoints(fs, dir)?;
    for (i, &lsn) in lsns.iter().enumerate() {
        let path = dir.join(checkpoint_file_name(lsn));
        match read_checkpoint(fs, &path, lsn)? {
            Ok(checkpoint) => {
                load.checkpoint = Some(checkpoint);
                load.previous_lsn = lsns.get(i + 1).copied();
                break;
            }
            Err(reason) => load.skipped.push(SkippedCheckpoint { file: path, reason }),
        }
    }
    Ok(load)
}

/// Reads and validates one checkpoint file named for `named_lsn`. I/O failures are
/// errors; bad content is the inner `Err`.
pub(crate) fn read_checkpoint(
    fs: &dyn FileSystem,
    path: &Path,
    named_lsn: Lsn,
) -> Result<Result<Checkpoint, CorruptionReason>> {
    let file_bytes = fs.file_len(path).map_err(io_error("stat", path))?;
    if file_bytes < CHECKPOINT_HEADER_BYTES as u64 {
        return Ok(Err(CorruptionReason::Truncated {
            needed: CHECKPOINT_HEADER_BYTES as u64,
            available: file_bytes,
        }));
    }
    let bytes_max = CHECKPOINT_HEADER_BYTES as u64 + CHECKPOINT_PAYLOAD_BYTES_MAX;
    if file_bytes > bytes_max {
        return Ok(Err(CorruptionReason::FileTooLarge {
            bytes: file_bytes,
            bytes_max,
        }));
    }
    let mut bytes = Vec::new();
    fs.read_into(path, &mut bytes)
        .map_err(io_error("read", path))?;
    Ok(validate(&bytes, named_lsn).map(|lsn| Checkpoint {
        lsn,
        file: path.to_path_buf(),
        bytes,
    }))
}

/// Checks in the order that gives the most telling reason: shape first, then the CRC
/// (so a flipped version byte reads as corruption, not as a future format), then meaning.
fn validate(bytes: &[u8], named_lsn: Lsn) -> Result<Lsn, CorruptionReason> {
    assert!(bytes.len() >= CHECKPOINT_HEADER_BYTES);
    if bytes[0..8] != CHECKPOINT_MAGIC {
        return Err(CorruptionReason::BadMagic);
    }
    let header_bytes = read_u64(bytes, 24);
    let file_payload_bytes = (bytes.len() - CHECKPOINT_HEADER_BYTES) as u64;
    if header_bytes != file_payload_bytes {
        return Err(CorruptionReason::LengthMismatch {
            header_bytes,
            file_bytes: file_payload_bytes,
        });
    }
    let stored = read_u32(bytes, 12);
    let computed = checkpoint_crc(bytes);
    if stored != computed {
        return Err(CorruptionReason::ChecksumMismatch { stored, computed });
    }
    let version = read_u32(bytes, 8);
    if version != CHECKPOINT_FORMAT_VERSION {
        return Err(CorruptionReason::UnsupportedVersion { version });
    }
    let lsn = read_u64(bytes, 16);
    if lsn != named_lsn {
        return Err(CorruptionReason::NameMismatch {
            named: named_lsn,
            header: lsn,
        });
    }
    Ok(lsn)
}

fn encode_header(lsn: Lsn, payload: &[u8]) -> [u8; CHECKPOINT_HEADER_BYTES] {
    let mut header = [0u8; CHECKPOINT_HEADER_BYTES];
    header[0..8].copy_from_slice(&CHECKPOINT_MAGIC);
    header[8..12].copy_from_slice(&CHECKPOINT_FORMAT_VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&lsn.to_le_bytes());
    header[24..32].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    let crc = crc32c::crc32c_append(header_crc(&header), payload);
    header[12..16].copy_from_slice(&crc.to_le_bytes());
    header
}

/// CRC over the header minus magic and CRC field: bytes 8..12, then 16..32.
fn header_crc(header: &[u8]) -> u32 {
    crc32c::crc32c_append(
        crc32c::crc32c(&header[8..12]),
        &header[16..CHECKPOINT_HEADER_BYTES],
    )
}

fn checkpoint_crc(bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(header_crc(bytes), &bytes[CHECKPOINT_HEADER_BYTES..])
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::{Fault, FaultFs};

    fn setup() -> (FaultFs, PathBuf) {
        let fs = FaultFs::new(1);
        let dir = PathBuf::from("/shard");
        fs.create_dir_all(&dir).unwrap();
        (fs, dir)
    }

    fn files(fs: &FaultFs, dir: &Path) -> Vec<String> {
        let mut names = fs.list_files(dir).unwrap();
        names.sort();
        names
    }

    #[test]
    fn round_trip_and_keep_two() {
        let (fs, dir) = setup();
        assert_eq!(
            latest_checkpoint(&fs, &dir).unwrap(),
            CheckpointLoad::default()
        );
        let first = write_checkpoint(&fs, &dir, 10, b"state@10").unwrap();
        assert_eq!(
            first.wal_keep_from_lsn, 1,
            "no fallback yet: keep the whole log"
        );
        let second = write_checkpoint(&fs, &dir, 20, b"state@20").unwrap();
        assert_eq!(second.wal_keep_from_lsn, 11);
        let third = write_checkpoint(&fs, &dir, 30, b"state@30").unwrap();
        assert_eq!(third.wal_keep_from_lsn, 21);
        assert_eq!(third.deleted, vec![dir.join(checkpoint_file_name(10))]);
        assert_eq!(
            files(&fs, &dir),
            [checkpoint_file_name(20), checkpoint_file_name(30)]
        );
        let load = latest_checkpoint(&fs, &dir).unwrap();
        let checkpoint = load.checkpoint.unwrap();
        assert_eq!(
            (checkpoint.lsn, checkpoint.payload()),
            (30, &b"state@30"[..])
        );
        assert!(load.skipped.is_empty());
    }

    #[test]
    fn falls_back_past_invalid_ones_and_reports_them() {
        let (fs, dir) = setup();
        write_checkpoint(&fs, &dir, 10, b"ten").unwrap();
        write_checkpoint(&fs, &dir, 20, b"twenty").unwrap();
        let newest = dir.join(checkpoint_file_name(20));
        fs.with_file_mut(&newest, |bytes| bytes[CHECKPOINT_HEADER_BYTES] ^= 0x40);
        let load = latest_checkpoint(&fs, &dir).unwrap();
        assert_eq!(load.checkpoint.unwrap().payload(), b"ten");
        assert_eq!(load.skipped.len(), 1);
        assert_eq!(load.skipped[0].file, newest);
        assert!(matches!(
            load.skipped[0].reason,
            CorruptionReason::ChecksumMismatch { .. }
        ));

        // Each way a file can be wrong is caught and named.
        type Damage = fn(&mut Vec<u8>);
        let cases: [(&str, Damage); 5] = [
            ("truncated header", |b| b.truncate(20)),
            ("magic", |b| b[0] = b'X'),
            ("short payload", |b| {
                b.pop();
            }),
            ("version", |b| b[8] = 2),
            ("lsn", |b| b[16] ^= 1),
        ];
        for (what, damage) in cases {
            fs.with_file_mut(&newest, |bytes| {
                bytes.clear();
                bytes.extend_from_slice(&encode_header(20, b"twenty"));
                bytes.extend_from_slice(b"twenty");
                damage(bytes);
            });
            let load = latest_checkpoint(&fs, &dir).unwrap();
            assert_eq!(load.checkpoint.unwrap().lsn, 10, "{what}");
            assert_eq!(load.skipped.len(), 1, "{what}");
        }
    }

    #[test]
    fn writing_prunes_invalid_and_stale_files() {
        let (fs, dir) = setup();
        write_checkpoint(&fs, &dir, 10, b"ten").unwrap();
        write_checkpoint(&fs, &dir, 20, b"twenty").unwrap();
        fs.with_file_mut(&dir.join(checkpoint_file_name(20)), |b| b.truncate(5));
        // A leftover temporary file from a crashed write is removed, not read.
        fs.create_new(&dir.join(format!("{PREFIX}{:020}{TMP_SUFFIX}", 40)))
            .unwrap();
        let written = write_checkpoint(&fs, &dir, 15, b"fifteen").unwrap();
        assert_eq!(written.wal_keep_from_lsn, 11);
        assert_eq!(
            files(&fs, &dir),
            [checkpoint_file_name(10), checkpoint_file_name(15)]
        );
        // The invalid one at 20 was a candidate only because it is newer; it was deleted
        // as "newer than the truth", not skipped as a fallback.
        assert!(written.skipped.is_empty());
    }

    #[test]
    fn a_crash_mid_write_leaves_the_old_checkpoint() {
        for ops in 0..6 {
            let (fs, dir) = setup();
            write_checkpoint(&fs, &dir, 10, b"ten").unwrap();
            fs.halt_after_ops(ops);
            assert!(write_checkpoint(&fs, &dir, 20, b"twenty").is_err());
            fs.crash();
            let load = latest_checkpoint(&fs, &dir).unwrap();
            let checkpoint = load.checkpoint.unwrap();
            assert!(
                checkpoint.lsn == 10 || checkpoint.payload() == b"twenty",
                "ops {ops}"
            );
            assert!(
                load.skipped.is_empty(),
                "ops {ops}: a half-written checkpoint is never visible"
            );
        }
    }

    #[test]
    fn fsync_failure_is_an_error() {
        let (fs, dir) = setup();
        fs.inject(Fault::SyncError);
        assert!(matches!(
            write_checkpoint(&fs, &dir, 1, b"x"),
            Err(Error::Io { op: "fsync", .. })
        ));
    }
}
