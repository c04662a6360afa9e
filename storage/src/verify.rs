//! Operator tools: [`verify_dir`] checks a shard directory without changing it, and
//! [`DumpIter`] walks every record with its file and offset. Both use the same scan as
//! recovery, so "verify says torn tail at X" means "recovery will cut at X".

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::checkpoint::{checkpoint_file_name, list_checkpoints, read_checkpoint};
use crate::fs::FileSystem;
use crate::segment::{list_segments, read_segment, segment_file_name, SegmentCursor, Step};
use crate::{CorruptionReason, Damage, DamageKind, Lsn, Result};

/// One segment as verify saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSummary {
    pub file: PathBuf,
    pub first_lsn: Lsn,
    /// Valid records read (up to the damage, if this segment has some).
    pub records: u64,
    /// Bytes those records take; the file may be longer if it is damaged.
    pub bytes: u64,
}

/// One checkpoint file as verify saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSummary {
    pub file: PathBuf,
    pub lsn: Lsn,
    /// Why it is invalid, if it is.
    pub problem: Option<CorruptionReason>,
}

/// Everything [`verify_dir`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub dir: PathBuf,
    /// Segments in LSN order, up to and including the first damaged one.
    pub segments: Vec<SegmentSummary>,
    /// Checkpoint files, newest first.
    pub checkpoints: Vec<CheckpointSummary>,
    /// Valid records in the log, in total.
    pub records: u64,
    /// LSN range of the valid records, if there are any.
    pub lsns: Option<(Lsn, Lsn)>,
    /// The first bad record of the log, if any: a torn tail (recovery will cut it) or
    /// corruption (strict recovery will refuse to start).
    pub damage: Option<Damage>,
}

impl VerifyReport {
    /// No damage in the log and every checkpoint valid.
    pub fn is_clean(&self) -> bool {
        self.damage.is_none() && self.checkpoints.iter().all(|c| c.problem.is_none())
    }
}

/// Checks every segment (framing, CRC, LSN continuity) and every checkpoint in `dir`.
/// Reads only. The log must start no later than just after the newest valid checkpoint,
/// since recovery from it would otherwise miss records.
pub fn verify_dir(fs: &dyn FileSystem, dir: &Path) -> Result<VerifyReport> {
    let mut checkpoints = Vec::new();
    for lsn in list_checkpoints(fs, dir)? {
        let file = dir.join(checkpoint_file_name(lsn));
        let problem = read_checkpoint(fs, &file, lsn)?.err();
        checkpoints.push(CheckpointSummary { file, lsn, problem });
    }
    let checkpoint_lsn = checkpoints
        .iter()
        .find(|c| c.problem.is_none())
        .map_or(0, |c| c.lsn);

    let mut walker = Walker::new(fs, dir, Some(checkpoint_lsn + 1))?;
    let mut segments = Vec::new();
    let mut records = 0;
    let mut lsns: Option<(Lsn, Lsn)> = None;
    while let Some(walked) = walker.next_walked()? {
        match walked {
            Walked::Record { lsn, .. } => {
                records += 1;
                lsns = Some((lsns.map_or(lsn, |(first, _)| first), lsn));
            }
            Walked::SegmentEnd {
                first_lsn,
                records,
                bytes,
            } => segments.push(SegmentSummary {
                file: dir.join(segment_file_name(first_lsn)),
                first_lsn,
                records,
                bytes,
            }),
        }
    }
    Ok(VerifyReport {
        dir: dir.to_path_buf(),
        segments,
        checkpoints,
        records,
        lsns,
        damage: walker.damage,
    })
}

/// A record as [`DumpIter`] yields it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpRecord {
    pub lsn: Lsn,
    pub kind: u8,
    pub payload: Vec<u8>,
    pub file: PathBuf,
    /// Byte offset of the record's frame in `file`.
    pub offset: u64,
}

/// Every valid record of a shard directory in LSN order, stopping at the first damage,
/// which [`DumpIter::damage`] then names. Items are `Err` only for I/O failures.
#[derive(Debug)]
pub struct DumpIter<'a> {
    walker: Walker<'a>,
}

impl<'a> DumpIter<'a> {
    pub fn new(fs: &'a dyn FileSystem, dir: &Path) -> Result<DumpIter<'a>> {
        // Dump shows what is there: no opinion about where the log should start.
        Ok(DumpIter {
            walker: Walker::new(fs, dir, None)?,
        })
    }

    /// Where the walk stopped early, once the iterator has returned `None`.
    pub fn damage(&self) -> Option<&Damage> {
        self.walker.damage.as_ref()
    }
}

impl Iterator for DumpIter<'_> {
    type Item = Result<DumpRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.walker.next_walked() {
                Err(error) => return Some(Err(error)),
                Ok(None) => return None,
                Ok(Some(Walked::SegmentEnd { .. })) => {}
                Ok(Some(Walked::Record {
                    lsn,
                    kind,
                    payload,
                    offset,
                })) => {
                    return Some(Ok(DumpRecord {
                        lsn,
                        kind,
                        payload: self.walker.buf[payload].to_vec(),
                        file: self.walker.path(),
                        offset: offset as u64,
                    }))
                }
            }
        }
    }
}

/// What the walker met next.
pub(crate) enum Walked {
    Record {
        lsn: Lsn,
        kind: u8,
        payload: Range<usize>,
        offset: usize,
    },
    /// The segment is done (cleanly or at damage).
    SegmentEnd {
        first_lsn: Lsn,
        records: u64,
        bytes: u64,
    },
}

/// Read-only walk over all segments with recovery's rules; stops at the first damage.
pub(crate) struct Walker<'a> {
    fs: &'a dyn FileSystem,
    dir: PathBuf,
    segments: Vec<Lsn>,
    index: usize,
    buf: Vec<u8>,
    cursor: Option<SegmentCursor>,
    /// What the next segment must start with; for the first one, the latest it may start.
    lsn_expected: Option<Lsn>,
    records_in_segment: u64,
    damage: Option<Damage>,
    finished: bool,
}

/// Summarizes: the read buffer holds a whole segment.
impl fmt::Debug for Walker<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Walker")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .field("index", &self.index)
            .field("damage", &self.damage)
            .finish_non_exhaustive()
    }
}

impl<'a> Walker<'a> {
    fn new(fs: &'a dyn FileSystem, dir: &Path, lsn_first_max: Option<Lsn>) -> Result<Walker<'a>> {
        Ok(Walker {
            fs,
            dir: dir.to_path_buf(),
            segments: list_segments(fs, dir)?,
            index: 0,
            buf: Vec::new(),
            cursor: None,
            lsn_expected: lsn_first_max,
            records_in_segment: 0,
            damage: None,
            finished: false,
        })
    }

    /// A walk from the segment holding `lsn` (or the oldest one left, if none does):
    /// segments wholly before it are not read.
    pub(crate) fn from_lsn(fs: &'a dyn FileSystem, dir: &Path, lsn: Lsn) -> Result<Walker<'a>> {
        let mut walker = Walker::new(fs, dir, None)?;
        let start = walker
            .segments
            .iter()
            .rposition(|&first| first <= lsn)
            .unwrap_or(0);
        walker.segments.drain(..start);
        Ok(walker)
    }

    /// The bytes of a record the walk just returned.
    pub(crate) fn payload(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Where the walk stopped early, once it has returned `None`.
    pub(crate) fn damage(&self) -> Option<&Damage> {
        self.damage.as_ref()
    }

    fn path(&self) -> PathBuf {
        self.dir.join(segment_file_name(self.segments[self.index]))
    }

    pub(crate) fn next_walked(&mut self) -> Result<Option<Walked>> {
        loop {
            if self.finished {
                return Ok(None);
            }
            let Some(cursor) = self.cursor.as_mut() else {
                self.load_segment()?;
                continue;
            };
            let step = cursor.step(&self.buf);
            let first_lsn = self.segments[self.index];
            match step {
                Step::Record {
                    lsn,
                    kind,
                    payload,
                    offset,
                } => {
                    self.records_in_segment += 1;
                    return Ok(Some(Walked::Record {
                        lsn,
                        kind,
                        payload,
                        offset,
                    }));
                }
                Step::End => {
                    let end = Walked::SegmentEnd {
                        first_lsn,
                        records: self.records_in_segment,
                        bytes: cursor.offset() as u64,
                    };
                    self.lsn_expected = Some(cursor.lsn_next());
                    self.cursor = None;
                    self.index += 1;
                    return Ok(Some(end));
                }
                Step::Damaged {
                    offset,
                    kind,
                    reason,
                } => {
                    self.finished = true;
                    self.damage = Some(Damage {
                        file: self.path(),
                        offset: offset as u64,
                        kind,
                        reason,
                    });
                    return Ok(Some(Walked::SegmentEnd {
                        first_lsn,
                        records: self.records_in_segment,
                        bytes: offset as u64,
                    }));
                }
            }
        }
    }

    fn load_segment(&mut self) -> Result<()> {
        if self.index == self.segments.len() {
            self.finished = true;
            return Ok(());
        }
        let first = self.segments[self.index];
        let path = self.path();
        let gap = match self.lsn_expected {
            Some(expected) if self.index == 0 => (first > expected).then_some(expected),
            Some(expected) => (first != expected).then_some(expected),
            None => None,
        };
        let problem = match gap {
            Some(expected) => Some(CorruptionReason::LogGap {
                expected,
                found: first,
            }),
            None => read_segment(self.fs, &path, &mut self.buf)?.err(),
        };
        if let Some(reason) = problem {
            self.finished = true;
            self.damage = Some(Damage {
                file: path,
                offset: 0,
                kind: DamageKind::Corruption,
                reason,
            });
            return Ok(());
        }
        self.records_in_segment = 0;
        let is_last = self.index + 1 == self.segments.len();
        self.cursor = Some(SegmentCursor::new(first, is_last));
        Ok(())
    }
}
