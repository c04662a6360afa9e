//! The log a checkpoint covers, read back without recovering it.
//!
//! A checkpoint stands for the records before it, but [`crate::Wal::checkpoint`] keeps
//! them on disk until the next one (the older checkpoint, the fallback, needs them).
//! Some of what those records say is not in the state a checkpoint holds. The engine's
//! event records name the request (idempotency key) they belong to, and the request's
//! completion is logged on another shard a moment later. A crash in between, after a
//! checkpoint took the events in, would forget the key: a retry would apply the events
//! again. Recovery reads the covered records back for what they name.
//!
//! [`read_covered`] only reads. Damage or a gap ends it early and is reported, never cut:
//! the records after the checkpoint are recovery's, which handles damage by its policy.

use std::path::Path;

use crate::fs::FileSystem;
use crate::verify::{Walked, Walker};
use crate::{Damage, Lsn, RecordRef, Result};

/// What [`read_covered`] read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CoveredRead {
    /// Records handed out.
    pub records: u64,
    /// Where the read ended before `through_lsn`, if it did: the records after the bad
    /// spot were not read.
    pub stopped: Option<Damage>,
}

/// Hands the records of `dir`'s log with LSNs in `after_lsn + 1..=through_lsn` that are
/// still on disk to `visit`, oldest first. Records already deleted are not an error (a
/// checkpoint's own log is kept only back to the previous checkpoint); damage or a gap
/// ends the read (see [`CoveredRead::stopped`]). The walk is `liveops wal verify`'s.
pub fn read_covered(
    fs: &dyn FileSystem,
    dir: &Path,
    after_lsn: Lsn,
    through_lsn: Lsn,
    mut visit: impl FnMut(RecordRef<'_>),
) -> Result<CoveredRead> {
    let mut read = CoveredRead::default();
    if through_lsn <= after_lsn {
        return Ok(read);
    }
    let mut walker = Walker::from_lsn(fs, dir, after_lsn + 1)?;
    while let Some(walked) = walker.next_walked()? {
        let Walked::Record {
            lsn, kind, payload, ..
        } = walked
        else {
            continue;
        };
        if lsn > through_lsn {
            return Ok(read);
        }
        if lsn > after_lsn {
            read.records += 1;
            visit(RecordRef {
                lsn,
                kind,
                payload: walker.payload(payload),
            });
        }
    }
    read.stopped = walker.damage().cloned();
    Ok(read)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::fault::FaultFs;
    use crate::segment::segment_file_name;
    use crate::{latest_checkpoint, Wal, WalOptions};

    fn options() -> WalOptions {
        WalOptions {
            // Small segments: the covered records span several files.
            segment_bytes_max: 4096,
            group_bytes_max: 1024,
            ..WalOptions::default()
        }
    }

    fn lsns_covered(fs: &FaultFs, dir: &Path, after: Lsn, through: Lsn) -> (Vec<Lsn>, CoveredRead) {
        let mut lsns = Vec::new();
        let read = read_covered(fs, dir, after, through, |record| {
            assert_eq!(record.payload, format!("record {}", record.lsn).as_bytes());
            lsns.push(record.lsn);
        })
        .unwrap();
        (lsns, read)
    }

    /// Two checkpoints over a log of many segments: what the newest covers since the
    /// previous one is read back whole, in order, and nothing past it.
    #[test]
    fn the_records_a_checkpoint_covers_since_the_previous_one_are_read_back() {
        let fs = Arc::new(FaultFs::new(7));
        let dir = Path::new("/shard");
        let (mut wal, _, _) = Wal::open(fs.clone(), dir, options(), 0).unwrap();
        let append = |wal: &mut Wal, records: std::ops::RangeInclusive<Lsn>| {
            for lsn in records {
                assert_eq!(
                    wal.append(1, format!("record {lsn}").as_bytes()).unwrap(),
                    lsn
                );
                wal.commit().unwrap();
            }
        };
        append(&mut wal, 1..=300);
        wal.checkpoint(300, b"state at 300").unwrap();
        append(&mut wal, 301..=700);
        wal.checkpoint(700, b"state at 700").unwrap();
        append(&mut wal, 701..=710);
        assert!(
            wal.segment_count() > 3,
            "the covered records span several segments"
        );

        let load = latest_checkpoint(&*fs, dir).unwrap();
        assert_eq!(load.checkpoint.as_ref().map(|c| c.lsn), Some(700));
        assert_eq!(load.previous_lsn, Some(300));
        let (lsns, read) = lsns_covered(&fs, dir, 300, 700);
        assert_eq!(lsns, (301..=700).collect::<Vec<_>>());
        assert_eq!(read.records, 400);
        assert_eq!(read.stopped, None);
        // Records deleted with the older log are simply not there.
        let (lsns, _) = lsns_covered(&fs, dir, 0, 700);
        assert_eq!(lsns.last(), Some(&700));
        assert!(
            lsns[0] > 1 && lsns[0] <= 301,
            "starts at the oldest segment left"
        );
    }

    /// Damage in the covered log ends the read and is reported; the files stay as they
    /// were (recovery, not this read, decides what to cut).
    #[test]
    fn damage_ends_the_read_without_changing_the_log() {
        let fs = Arc::new(FaultFs::new(7));
        let dir = Path::new("/shard");
        let (mut wal, _, _) = Wal::open(fs.clone(), dir, options(), 0).unwrap();
        for lsn in 1..=100 {
            wal.append(1, format!("record {lsn}").as_bytes()).unwrap();
            wal.commit().unwrap();
        }
        let first = dir.join(segment_file_name(1));
        let bytes = fs.file_len(&first).unwrap();
        fs.with_file_mut(&first, |data| data[bytes as usize / 2] ^= 0x5a);
        let (lsns, read) = lsns_covered(&fs, dir, 0, 100);
        assert!(!lsns.is_empty() && lsns.len() < 100, "{lsns:?}");
        assert_eq!(lsns, (1..=lsns.len() as Lsn).collect::<Vec<_>>());
        assert!(read.stopped.is_some());
        assert_eq!(fs.file_len(&first).unwrap(), bytes, "nothing cut");
    }
}
