//! What a shard's log shares with readers that follow it from other threads (the change
//! feed of `liveops-mirror`): the durable LSN, and the segments those readers still need.
//!
//! A [`Wal`](crate::Wal) given a [`LogWatch`] ([`Wal::set_watch`](crate::Wal::set_watch))
//! publishes its durable LSN there after every commit or sync that moves it (one atomic
//! store), so a reader never reads past what survives a power loss. Readers register
//! [`RetentionHold`]s saying from which LSN on they still need the log; a checkpoint then
//! keeps those segments, up to [`LogWatch::retain_bytes_max`] bytes beyond what the
//! checkpoints themselves need. Past the budget the oldest held segments are deleted
//! anyway (a reader that far behind must not fill the disk) and
//! [`LogWatch::over_budget_through_lsn`] says which records went; the reader finds them
//! missing and reports a gap. A `Wal` without a watch behaves exactly as before.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::Lsn;

/// Shared between one shard's log (the writer) and the readers following it.
#[derive(Debug)]
pub struct LogWatch {
    /// The log's durable LSN: records up to it are fsynced and may be read.
    durable_lsn: AtomicU64,
    /// Most bytes of segments kept only for holds (not for checkpoints).
    retain_bytes_max: u64,
    /// Highest LSN a checkpoint deleted although a hold still needed it (0: never).
    over_budget_through_lsn: AtomicU64,
    /// How many held segments were deleted over the budget, for metrics and tests.
    over_budget_segments: AtomicU64,
    /// Live holds: `(hold id, first LSN still needed)`.
    holds: Mutex<Vec<(u64, Lsn)>>,
    /// Source of hold ids.
    hold_ids: AtomicU64,
}

impl LogWatch {
    /// A watch keeping at most `retain_bytes_max` bytes of log for its holds.
    pub fn new(retain_bytes_max: u64) -> Arc<LogWatch> {
        Arc::new(LogWatch {
            durable_lsn: AtomicU64::new(0),
            retain_bytes_max,
            over_budget_through_lsn: AtomicU64::new(0),
            over_budget_segments: AtomicU64::new(0),
            holds: Mutex::new(Vec::new()),
            hold_ids: AtomicU64::new(0),
        })
    }

    /// Records up to this LSN are durable and may be read.
    pub fn durable_lsn(&self) -> Lsn {
        self.durable_lsn.load(Ordering::Acquire)
    }

    pub(crate) fn publish_durable(&self, lsn: Lsn) {
        self.durable_lsn.store(lsn, Ordering::Release);
    }

    pub fn retain_bytes_max(&self) -> u64 {
        self.retain_bytes_max
    }

    /// Highest LSN deleted over the budget while a hold needed it; 0 if none ever was.
    pub fn over_budget_through_lsn(&self) -> Lsn {
        self.over_budget_through_lsn.load(Ordering::Acquire)
    }

    /// Held segments deleted over the budget so far.
    pub fn over_budget_segments(&self) -> u64 {
        self.over_budget_segments.load(Ordering::Acquire)
    }

    pub(crate) fn note_over_budget(&self, through_lsn: Lsn) {
        self.over_budget_through_lsn
            .fetch_max(through_lsn, Ordering::AcqRel);
        self.over_budget_segments.fetch_add(1, Ordering::AcqRel);
    }

    /// Registers a reader that needs the log from `needed_from_lsn` on.
    pub fn hold(self: &Arc<Self>, needed_from_lsn: Lsn) -> RetentionHold {
        let id = self.hold_ids.fetch_add(1, Ordering::Relaxed);
        self.lock_holds().push((id, needed_from_lsn));
        RetentionHold {
            watch: Arc::clone(self),
            id,
        }
    }

    /// The lowest LSN any hold still needs, or `None` without holds.
    pub fn retain_from_lsn(&self) -> Option<Lsn> {
        self.lock_holds().iter().map(|&(_, lsn)| lsn).min()
    }

    /// A panicking reader cannot leave the list half-changed (each change is one push,
    /// assignment or removal), so a poisoned lock is still sound to use.
    fn lock_holds(&self) -> MutexGuard<'_, Vec<(u64, Lsn)>> {
        self.holds.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One reader's claim on the log; released on drop.
#[derive(Debug)]
pub struct RetentionHold {
    /// The watch holding the claim.
    watch: Arc<LogWatch>,
    /// This hold's entry in the watch's list.
    id: u64,
}

impl RetentionHold {
    /// The reader now needs the log only from `needed_from_lsn` on.
    pub fn set(&self, needed_from_lsn: Lsn) {
        if let Some(entry) = self
            .watch
            .lock_holds()
            .iter_mut()
            .find(|(id, _)| *id == self.id)
        {
            entry.1 = needed_from_lsn;
        }
    }
}

impl Drop for RetentionHold {
    fn drop(&mut self) {
        self.watch.lock_holds().retain(|(id, _)| *id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::FaultFs;
    use crate::{Wal, WalOptions};
    use std::path::Path;

    /// A log of 30 records of 100 payload bytes in segments of 5 records each, with a
    /// watch of budget `retain_bytes_max` and, if given, a hold from `hold_from`; then
    /// a checkpoint at the end. Returns the segment count after it and the watch.
    fn checkpointed(retain_bytes_max: u64, hold_from: Option<Lsn>) -> (usize, Arc<LogWatch>) {
        let frame_bytes = (crate::RECORD_HEADER_BYTES + 100) as u64;
        let options = WalOptions {
            segment_bytes_max: 5 * frame_bytes,
            group_bytes_max: frame_bytes as usize,
            ..WalOptions::default()
        };
        let fs = Arc::new(FaultFs::new(1));
        let (mut wal, _, _) = Wal::open(fs, Path::new("/s"), options, 0).unwrap();
        let watch = LogWatch::new(retain_bytes_max);
        wal.set_watch(Arc::clone(&watch));
        let hold = hold_from.map(|lsn| watch.hold(lsn));
        for _ in 0..30 {
            wal.append(1, &[7; 100]).unwrap();
            wal.commit().unwrap();
        }
        assert_eq!(watch.durable_lsn(), 30, "every commit publishes");
        assert_eq!(wal.segment_count(), 6);
        // Two checkpoints, so the older (fallback) one no longer needs the log either.
        wal.checkpoint(29, b"a").unwrap();
        wal.checkpoint(30, b"b").unwrap();
        drop(hold);
        (wal.segment_count(), watch)
    }

    #[test]
    fn checkpoints_keep_what_a_hold_needs_within_the_budget() {
        let (segments, watch) = checkpointed(u64::MAX, None);
        assert_eq!(segments, 1, "no hold: only the active segment stays");
        assert_eq!(watch.over_budget_segments(), 0);

        let (segments, watch) = checkpointed(u64::MAX, Some(8));
        assert_eq!(
            segments, 5,
            "lsn 8 lives in segment 6..=10: it and later stay"
        );
        assert_eq!(watch.over_budget_through_lsn(), 0);

        // Segments 6, 11, 16 and 21 are held (26 is active); the budget fits two.
        let (segments, watch) = checkpointed(2 * 5 * 117, Some(8));
        assert_eq!(segments, 3, "the two oldest held segments go");
        assert_eq!(watch.over_budget_segments(), 2);
        assert_eq!(watch.over_budget_through_lsn(), 15);
    }

    #[test]
    fn the_lowest_live_hold_wins() {
        let watch = LogWatch::new(1024);
        assert_eq!(watch.retain_from_lsn(), None);
        let a = watch.hold(10);
        let b = watch.hold(5);
        assert_eq!(watch.retain_from_lsn(), Some(5));
        b.set(20);
        assert_eq!(watch.retain_from_lsn(), Some(10));
        drop(a);
        assert_eq!(watch.retain_from_lsn(), Some(20));
        drop(b);
        assert_eq!(watch.retain_from_lsn(), None);
    }
}
