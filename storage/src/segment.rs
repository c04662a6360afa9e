//! Segment files: their names, and the record-by-record scan that recovery, verify and
//! dump share so the three can never disagree about what is torn and what is corrupt.

use std::ops::Range;
use std::path::Path;

use crate::fs::FileSystem;
use crate::record::{decode_record, peek_lsn, RECORD_HEADER_BYTES};
use crate::{io_error, CorruptionReason, DamageKind, Lsn, Result};

/// Largest segment file recovery will read. Segments are read whole into memory, so this
/// bounds that memory even when `segment_bytes_max` was changed between runs or a file
/// was damaged; it is also the ceiling for `segment_bytes_max`.
pub(crate) const SEGMENT_FILE_BYTES_MAX: u64 = 1 << 30;

const SEGMENT_SUFFIX: &str = ".wal";
const LSN_DIGITS: usize = 20; // u64::MAX has 20 decimal digits.

/// `{first_lsn:020}.wal`: zero-padded so that name order is LSN order.
pub fn segment_file_name(first_lsn: Lsn) -> String {
    format!("{first_lsn:020}{SEGMENT_SUFFIX}")
}

/// The first LSN named by a segment file name, or `None` if it is not one.
pub fn parse_segment_file_name(name: &str) -> Option<Lsn> {
    parse_lsn_digits(name.strip_suffix(SEGMENT_SUFFIX)?)
}

/// Exactly twenty ASCII digits, as written by `{:020}`.
pub(crate) fn parse_lsn_digits(digits: &str) -> Option<Lsn> {
    if digits.len() != LSN_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// First LSNs of the segments in `dir`, ascending.
pub(crate) fn list_segments(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<Lsn>> {
    let names = fs.list_files(dir).map_err(io_error("list", dir))?;
    let mut lsns: Vec<Lsn> = names
        .iter()
        .filter_map(|name| parse_segment_file_name(name))
        .collect();
    lsns.sort_unstable();
    Ok(lsns)
}

/// Reads a whole segment into `buf`, refusing files over [`SEGMENT_FILE_BYTES_MAX`].
pub(crate) fn read_segment(
    fs: &dyn FileSystem,
    path: &Path,
    buf: &mut Vec<u8>,
) -> Result<Result<(), CorruptionReason>> {
    let bytes = fs.file_len(path).map_err(io_error("stat", path))?;
    if bytes > SEGMENT_FILE_BYTES_MAX {
        return Ok(Err(CorruptionReason::FileTooLarge {
            bytes,
            bytes_max: SEGMENT_FILE_BYTES_MAX,
        }));
    }
    fs.read_into(path, buf).map_err(io_error("read", path))?;
    Ok(Ok(()))
}

/// What the next frame of a segment turned out to be.
#[derive(Debug)]
pub(crate) enum Step {
    /// A good record with the expected LSN; `payload` indexes the scanned buffer.
    Record {
        lsn: Lsn,
        kind: u8,
        payload: Range<usize>,
        offset: usize,
    },
    /// The segment ends cleanly here.
    End,
    /// Bad bytes at `offset`; the scan of this segment is over.
    Damaged {
        offset: usize,
        kind: DamageKind,
        reason: CorruptionReason,
    },
}

/// Walks the records of one segment held in memory, checking that LSNs follow on.
#[derive(Debug)]
pub(crate) struct SegmentCursor {
    offset: usize,
    lsn_next: Lsn,
    is_last: bool,
    finished: bool,
}

impl SegmentCursor {
    /// A scan of a segment whose first record must have `lsn_first`; `is_last` says
    /// whether damage at its end may be a torn tail.
    pub(crate) fn new(lsn_first: Lsn, is_last: bool) -> SegmentCursor {
        assert!(lsn_first >= 1);
        SegmentCursor {
            offset: 0,
            lsn_next: lsn_first,
            is_last,
            finished: false,
        }
    }

    /// Byte offset of the next frame: after `End`, the segment's valid length.
    pub(crate) fn offset(&self) -> usize {
        self.offset
    }

    /// The LSN the next record must carry.
    pub(crate) fn lsn_next(&self) -> Lsn {
        self.lsn_next
    }

    pub(crate) fn step(&mut self, buf: &[u8]) -> Step {
        assert!(
            !self.finished,
            "stepped past the end or damage of a segment"
        );
        assert!(self.offset <= buf.len());
        if self.offset == buf.len() {
            self.finished = true;
            return Step::End;
        }
        let offset = self.offset;
        let reason = match decode_record(&buf[offset..]) {
            Ok((record, frame_bytes)) if record.lsn == self.lsn_next => {
                self.offset += frame_bytes;
                self.lsn_next += 1;
                return Step::Record {
                    lsn: record.lsn,
                    kind: record.kind,
                    payload: offset + RECORD_HEADER_BYTES..offset + frame_bytes,
                    offset,
                };
            }
            // A checksummed record in the wrong place was written whole by someone:
            // no torn write explains it.
            Ok((record, _)) => {
                self.finished = true;
                return Step::Damaged {
                    offset,
                    kind: DamageKind::Corruption,
                    reason: CorruptionReason::LsnMismatch {
                        expected: self.lsn_next,
                        found: record.lsn,
                    },
                };
            }
            Err(reason) => reason,
        };
        self.finished = true;
        let kind = if self.is_last && !valid_record_after(buf, offset + 1, self.lsn_next) {
            DamageKind::TornTail
        } else {
            DamageKind::Corruption
        };
        Step::Damaged {
            offset,
            kind,
            reason,
        }
    }
}

/// Whether any valid record starts at or after `from` that could belong to this log
/// after the damage: its LSN at least `lsn_next` and no further than the bytes left
/// could hold. A torn write leaves no such record; acknowledged data after a bad spot
/// does. The LSN filter runs before the CRC so that scanning garbage or zeros costs a
/// few loads per byte, not a CRC over a random length per byte.
fn valid_record_after(buf: &[u8], from: usize, lsn_next: Lsn) -> bool {
    let lsn_max = lsn_next + (buf.len() / RECORD_HEADER_BYTES) as u64;
    (from..buf.len()).any(|start| {
        let rest = &buf[start..];
        matches!(peek_lsn(rest), Some(lsn) if (lsn_next..=lsn_max).contains(&lsn))
            && decode_record(rest).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::encode_record;

    #[test]
    fn names_round_trip_and_sort() {
        assert_eq!(segment_file_name(1), "00000000000000000001.wal");
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        for bad in [
            "1.wal",
            "0000000000000000000a.wal",
            "00000000000000000001.wa",
            "99999999999999999999.wal",
        ] {
            assert_eq!(parse_segment_file_name(bad), None, "{bad}");
        }
        assert!(segment_file_name(9) < segment_file_name(10));
    }

    fn records(first: Lsn, count: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        for lsn in first..first + count {
            encode_record(&mut buf, lsn, 1, &[lsn as u8; 30]).unwrap();
        }
        buf
    }

    fn scan(buf: &[u8], first: Lsn, is_last: bool) -> (u64, Step) {
        let mut cursor = SegmentCursor::new(first, is_last);
        let mut count = 0;
        loop {
            match cursor.step(buf) {
                Step::Record { .. } => count += 1,
                other => return (count, other),
            }
        }
    }

    #[test]
    fn torn_only_at_the_end_of_the_last_segment() {
        let mut buf = records(5, 4);
        buf.extend_from_slice(&[0; 100]);
        let (count, step) = scan(&buf, 5, true);
        assert_eq!(count, 4);
        assert!(matches!(
            step,
            Step::Damaged {
                kind: DamageKind::TornTail,
                ..
            }
        ));
        let (_, step) = scan(&buf, 5, false);
        assert!(matches!(
            step,
            Step::Damaged {
                kind: DamageKind::Corruption,
                ..
            }
        ));
    }

    #[test]
    fn bad_record_before_good_ones_is_corruption() {
        let mut buf = records(1, 5);
        buf[RECORD_HEADER_BYTES + 3] ^= 1; // Inside the first record's payload.
        let (count, step) = scan(&buf, 1, true);
        assert_eq!(count, 0);
        assert!(matches!(
            step,
            Step::Damaged {
                kind: DamageKind::Corruption,
                offset: 0,
                ..
            }
        ));
    }

    #[test]
    fn wrong_lsn_is_corruption_even_at_the_tail() {
        let buf = records(7, 1);
        let (_, step) = scan(&buf, 6, true);
        assert!(matches!(
            step,
            Step::Damaged {
                kind: DamageKind::Corruption,
                reason: CorruptionReason::LsnMismatch {
                    expected: 6,
                    found: 7
                },
                ..
            }
        ));
    }
}
