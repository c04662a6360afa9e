//! The reader that follows one shard's log: [`FeedReader`].
//!
//! It reads segment files directly (`<dir>/<first_lsn:020>.wal`, framing in
//! `liveops_storage::record`), never past the durable LSN the log publishes on its
//! [`LogWatch`], and decodes each payload with the engine's codec. See the crate docs for
//! the guarantees.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;

use liveops_engine::codec::{self, DecodeError};
use liveops_engine::shard::Record;
use liveops_storage::record::decode_record;
use liveops_storage::{
    parse_segment_file_name, segment_file_name, CorruptionReason, LogWatch, Lsn,
};

/// Bytes read from a segment file at a time (more when one frame is larger).
const READ_CHUNK_BYTES: usize = 256 * 1024;

/// One shard's log as the feed sees it: where it lives and what its writer publishes.
#[derive(Debug, Clone)]
pub struct ShardLog {
    /// Layout generation the log belongs to (`DATA_DIR/gen-G`): LSNs restart with each.
    pub generation: u64,
    /// Shard index within that generation.
    pub shard: u32,
    /// The shard's directory (`DATA_DIR/gen-G/shard-I`).
    pub dir: PathBuf,
    /// The writer's durable LSN and the readers' retention holds.
    pub watch: Arc<LogWatch>,
}

/// How far a consumer has got in one shard's log: everything up to `lsn` of
/// `generation` is applied. `lsn` 0 means nothing of that generation yet. Layout
/// generations start at 1, so `Cursor::default()` (generation 0) is [`Cursor::NEW`]: a
/// consumer that never applied anything starts at the current log's beginning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cursor {
    /// Layout generation the LSN counts in.
    pub generation: u64,
    /// Last LSN applied.
    pub lsn: Lsn,
}

impl Cursor {
    /// A consumer that has applied nothing yet, in any generation.
    pub const NEW: Cursor = Cursor {
        generation: 0,
        lsn: 0,
    };
}

/// Text form `g{generation}-{lsn}`, for logs and for sinks storing cursors as text.
impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "g{}-{}", self.generation, self.lsn)
    }
}

/// Why a cursor's text form does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a cursor (expected g<generation>-<lsn>)")]
pub struct CursorParseError(String);

/// Parses the [`Display`](fmt::Display) form `g{generation}-{lsn}` back.
impl std::str::FromStr for Cursor {
    type Err = CursorParseError;

    fn from_str(s: &str) -> Result<Cursor, CursorParseError> {
        let error = || CursorParseError(s.chars().take(64).collect());
        let (generation, lsn) = s
            .strip_prefix('g')
            .and_then(|rest| rest.split_once('-'))
            .ok_or_else(error)?;
        let number = |t: &str| {
            // `u64::from_str` takes a leading `+`; the text form never has one.
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(error());
            }
            t.parse::<u64>().map_err(|_| error())
        };
        Ok(Cursor {
            generation: number(generation)?,
            lsn: number(lsn)?,
        })
    }
}

/// A record's identity forever: unique across shards and layout generations, so a
/// consumer de-duplicates on it. Text form `g{generation}-s{shard}-{lsn}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId {
    /// Layout generation of the log the record is in.
    pub generation: u64,
    /// Shard index within that generation.
    pub shard: u32,
    /// Position in that shard's log.
    pub lsn: Lsn,
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "g{}-s{}-{}", self.generation, self.shard, self.lsn)
    }
}

/// A durable record of the log, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedRecord {
    /// Where it is in the log: the consumer's de-duplication key.
    pub id: RecordId,
    /// The engine's state change.
    pub record: Record,
}

/// Why records were skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapReason {
    /// The segments holding them were deleted: a checkpoint went over the retention
    /// budget while this consumer lagged, or the log began after a checkpoint (a new
    /// consumer on an old log, or a log re-sharded into a new generation).
    SegmentsDeleted,
    /// The consumer's cursor is in an older layout generation: that generation's log was
    /// folded into the new generation's checkpoints when `SHARDS` changed, so whatever
    /// of it the consumer had not applied cannot be read any more.
    OlderGeneration,
}

/// Records a consumer will never see from the log. It must say so (log, metric, a row)
/// and, where it can, rebuild from engine state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The shard (in `through.generation`).
    pub shard: u32,
    /// The consumer had applied up to here.
    pub after: Cursor,
    /// Everything after `after` up to and including here is missing; the next record
    /// is `through.lsn + 1` of `through.generation`.
    pub through: Cursor,
    /// Why.
    pub reason: GapReason,
}

/// What the feed hands out, in log order per shard.
#[derive(Debug, Clone, PartialEq)]
// Nearly every item is a record: boxing it to shrink the rare gap would cost an
// allocation per record.
#[allow(clippy::large_enum_variant)]
pub enum FeedItem {
    Record(FeedRecord),
    Gap(Gap),
}

impl FeedItem {
    /// The consumer's cursor once it has applied this item.
    pub fn cursor_after(&self) -> Cursor {
        match self {
            FeedItem::Record(r) => Cursor {
                generation: r.id.generation,
                lsn: r.id.lsn,
            },
            FeedItem::Gap(gap) => gap.through,
        }
    }
}

/// What following a log can fail with.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A durable record that does not read back: the disk or someone else damaged it.
    #[error("corrupt durable record in {} at byte {offset}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: CorruptionReason,
    },
    /// A valid record with an LSN out of sequence.
    #[error("{} at byte {offset}: record has lsn {found}, expected {expected}", path.display())]
    LsnOutOfOrder {
        path: PathBuf,
        offset: u64,
        expected: Lsn,
        found: Lsn,
    },
    /// A payload that passed its CRC but that the engine's codec refuses: written by a
    /// newer engine, or a bug.
    #[error("record g{generation}-s{shard}-{lsn} does not decode: {source}")]
    Decode {
        generation: u64,
        shard: u32,
        lsn: Lsn,
        #[source]
        source: DecodeError,
    },
    /// The consumer's cursor names a newer layout generation than the log's: the data
    /// directory was restored or swapped under it. Nothing is read; an operator decides.
    #[error("cursor {cursor} is from a newer layout generation than the log's ({generation})")]
    CursorFromNewerGeneration { cursor: Cursor, generation: u64 },
}

/// The segment being read.
#[derive(Debug)]
struct OpenSegment {
    path: PathBuf,
    /// LSN of its first record (from its name).
    first_lsn: Lsn,
    file: File,
    /// File offset of `buf[0]`.
    buf_offset: u64,
    /// Bytes read but not yet consumed start at `buf[pos]`.
    buf: Vec<u8>,
    pos: usize,
}

/// What the bytes at the read position of a segment are.
enum Frame {
    Record {
        lsn: Lsn,
        kind: u8,
        bytes: usize,
    },
    /// Nothing more in the file (yet).
    End,
    /// Bytes that are not (yet) a whole valid frame, the file having no more.
    Partial(CorruptionReason),
}

/// Follows one shard's log from a cursor on: every durable record after it, in order,
/// and a [`Gap`] for any it cannot read. Non-blocking: [`FeedReader::read`] returns
/// what is durable now; the caller decides how to wait.
#[derive(Debug)]
pub struct FeedReader {
    log: ShardLog,
    /// LSN of the next record to hand out.
    next_lsn: Lsn,
    /// An older-generation cursor's gap, handed out first.
    pending_gap: Option<Gap>,
    segment: Option<OpenSegment>,
    /// First LSN of the segment last read to its end: `next_lsn` is not in it, so it
    /// must not be opened again for it (that would loop if the next one were missing).
    finished_first_lsn: Option<Lsn>,
}

impl FeedReader {
    /// A reader that hands out what follows `cursor`.
    pub fn open(log: ShardLog, cursor: Cursor) -> Result<FeedReader, FeedError> {
        if cursor == Cursor::NEW {
            return Ok(FeedReader {
                log,
                next_lsn: 1,
                pending_gap: None,
                segment: None,
                finished_first_lsn: None,
            });
        }
        let (next_lsn, pending_gap) = match cursor.generation.cmp(&log.generation) {
            std::cmp::Ordering::Greater => {
                return Err(FeedError::CursorFromNewerGeneration {
                    cursor,
                    generation: log.generation,
                })
            }
            std::cmp::Ordering::Equal => (cursor.lsn + 1, None),
            std::cmp::Ordering::Less => (
                1,
                Some(Gap {
                    shard: log.shard,
                    after: cursor,
                    through: Cursor {
                        generation: log.generation,
                        lsn: 0,
                    },
                    reason: GapReason::OlderGeneration,
                }),
            ),
        };
        Ok(FeedReader {
            log,
            next_lsn,
            pending_gap,
            segment: None,
            finished_first_lsn: None,
        })
    }

    pub fn log(&self) -> &ShardLog {
        &self.log
    }

    /// Where the reader is: everything up to here was handed out.
    pub fn position(&self) -> Cursor {
        Cursor {
            generation: self.log.generation,
            lsn: self.next_lsn - 1,
        }
    }

    /// Whether records are durable that were not handed out yet.
    pub fn has_durable_unread(&self) -> bool {
        self.pending_gap.is_some() || self.next_lsn <= self.log.watch.durable_lsn()
    }

    /// Appends to `out` up to `items_max` items that are durable now; returns how many.
    /// Zero means the reader is at the durable end: wait and call again.
    pub fn read(&mut self, items_max: usize, out: &mut Vec<FeedItem>) -> Result<usize, FeedError> {
        let mut count = 0;
        if count < items_max {
            if let Some(gap) = self.pending_gap.take() {
                out.push(FeedItem::Gap(gap));
                count += 1;
            }
        }
        // Loaded before any byte is read: whatever it covers was written before it was
        // published, so it is all in the files read after.
        let durable = self.log.watch.durable_lsn();
        while count < items_max && self.next_lsn <= durable {
            if self.segment.is_none() {
                match self.locate(durable)? {
                    Located::Opened => {}
                    Located::Gap(gap) => {
                        out.push(FeedItem::Gap(gap));
                        count += 1;
                        continue;
                    }
                    Located::NotYet => break,
                }
            }
            let segment = self.segment.as_mut().expect("located");
            match next_frame(segment)? {
                Frame::Record { lsn, kind, bytes } => {
                    let offset = segment.buf_offset + segment.pos as u64;
                    let start = segment.pos + liveops_storage::RECORD_HEADER_BYTES;
                    let payload = &segment.buf[start..segment.pos + bytes];
                    if lsn < self.next_lsn {
                        // Before the cursor in a segment opened mid-way: skip.
                        segment.pos += bytes;
                        continue;
                    }
                    if lsn > self.next_lsn {
                        return Err(FeedError::LsnOutOfOrder {
                            path: segment.path.clone(),
                            offset,
                            expected: self.next_lsn,
                            found: lsn,
                        });
                    }
                    let record =
                        codec::decode(kind, payload).map_err(|source| FeedError::Decode {
                            generation: self.log.generation,
                            shard: self.log.shard,
                            lsn,
                            source,
                        })?;
                    segment.pos += bytes;
                    out.push(FeedItem::Record(FeedRecord {
                        id: RecordId {
                            generation: self.log.generation,
                            shard: self.log.shard,
                            lsn,
                        },
                        record,
                    }));
                    self.next_lsn += 1;
                    count += 1;
                }
                // The segment ends before a durable record: it went on in the next one.
                Frame::End => {
                    self.finished_first_lsn = Some(segment.first_lsn);
                    self.segment = None;
                }
                // A durable record is whole in its file; bytes that are not a whole valid
                // frame where one must be are damage, not a write in progress.
                Frame::Partial(reason) => {
                    return Err(FeedError::Corrupt {
                        path: segment.path.clone(),
                        offset: segment.buf_offset + segment.pos as u64,
                        reason,
                    })
                }
            }
        }
        Ok(count)
    }

    /// Opens the segment holding `next_lsn` (durable, at most `durable`), or reports the
    /// records that no segment holds any more.
    fn locate(&mut self, durable: Lsn) -> Result<Located, FeedError> {
        // A segment can vanish between listing and opening (a checkpoint deleted it):
        // list again, and then it is simply missing.
        for _ in 0..2 {
            let firsts = self.list_segments()?;
            let holder = firsts
                .iter()
                .rev()
                .find(|&&first| first <= self.next_lsn)
                .filter(|&&first| Some(first) != self.finished_first_lsn);
            let Some(&first_lsn) = holder else {
                // Segments are deleted oldest first, so every one after the missing
                // records is still there: the gap ends before the next one left.
                let through = firsts
                    .iter()
                    .find(|&&first| first > self.next_lsn)
                    .map_or(durable, |&first| (first - 1).min(durable));
                let gap = Gap {
                    shard: self.log.shard,
                    after: self.position(),
                    through: Cursor {
                        generation: self.log.generation,
                        lsn: through,
                    },
                    reason: GapReason::SegmentsDeleted,
                };
                self.next_lsn = through + 1;
                return Ok(Located::Gap(gap));
            };
            let path = self.log.dir.join(segment_file_name(first_lsn));
            match File::open(&path) {
                Ok(file) => {
                    self.segment = Some(OpenSegment {
                        path,
                        first_lsn,
                        file,
                        buf_offset: 0,
                        buf: Vec::new(),
                        pos: 0,
                    });
                    return Ok(Located::Opened);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(FeedError::Io {
                        op: "open",
                        path,
                        source,
                    })
                }
            }
        }
        // Deleted twice in a row under us: try again on the next read.
        Ok(Located::NotYet)
    }

    fn list_segments(&self) -> Result<Vec<Lsn>, FeedError> {
        let dir = &self.log.dir;
        let io_error = |source| FeedError::Io {
            op: "list",
            path: dir.clone(),
            source,
        };
        let mut firsts = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_error)? {
            let entry = entry.map_err(io_error)?;
            if let Some(first) = entry.file_name().to_str().and_then(parse_segment_file_name) {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        Ok(firsts)
    }

    /// First LSN of the segment being read, if one is open (for tests and metrics).
    pub fn segment_first_lsn(&self) -> Option<Lsn> {
        self.segment.as_ref().map(|s| s.first_lsn)
    }
}

enum Located {
    Opened,
    Gap(Gap),
    NotYet,
}

/// Decodes the frame at the read position, reading more of the file as needed.
fn next_frame(segment: &mut OpenSegment) -> Result<Frame, FeedError> {
    loop {
        let reason = match decode_record(&segment.buf[segment.pos..]) {
            Ok((record, bytes)) => {
                return Ok(Frame::Record {
                    lsn: record.lsn,
                    kind: record.kind,
                    bytes,
                })
            }
            Err(reason) => reason,
        };
        let needed = match reason {
            CorruptionReason::Truncated { needed, .. } => needed as usize,
            _ => return Ok(Frame::Partial(reason)),
        };
        if fill(segment, needed)? == 0 {
            return Ok(if segment.pos == segment.buf.len() {
                Frame::End
            } else {
                Frame::Partial(reason)
            });
        }
    }
}

/// Reads more of the file so that at least `needed` unconsumed bytes could be present;
/// returns how many bytes it read (0 at the end of the file). Consumed bytes are dropped
/// first, so the buffer holds at most one chunk or one frame.
fn fill(segment: &mut OpenSegment, needed: usize) -> Result<usize, FeedError> {
    if segment.pos > 0 {
        segment.buf.drain(..segment.pos);
        segment.buf_offset += segment.pos as u64;
        segment.pos = 0;
    }
    let want = needed.max(READ_CHUNK_BYTES);
    // `read_to_end` appends without zero-filling first and stops at `want` or the end.
    let read = (&mut segment.file)
        .take(want as u64)
        .read_to_end(&mut segment.buf)
        .map_err(|source| FeedError::Io {
            op: "read",
            path: segment.path.clone(),
            source,
        })?;
    Ok(read)
}
