//! Helpers shared by the feed tests: a temp directory, engine records, a real log.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use liveops_engine::codec;
use liveops_engine::event::EventKind;
use liveops_engine::shard::Record;
use liveops_mirror::ShardLog;
use liveops_storage::{Durability, LogWatch, StdFs, Wal, WalOptions, RECORD_HEADER_BYTES};

/// A directory under /dev/shm when there is one (fsync is free there: the tests check
/// logic, not disks) or the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!(
            "liveops-mirror-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `n`-th record of a test stream: accepted events mostly, some unblocks, so more
/// than one record kind goes through the codec.
pub fn record(n: u64) -> Record {
    if n % 5 == 4 {
        Record::Unblocked {
            player: format!("player-{}", n % 17),
            reason: format!("reason {n}"),
            at_ms: n,
        }
    } else {
        Record::EventAccepted {
            player: format!("player-{}", n % 17),
            event: EventKind::Progression {
                delta_xp: n,
                activity: n.is_multiple_of(3).then(|| "quest".to_string()),
            },
            ts: n,
            at_ms: 1_700_000_000_000 + n,
            seq: n,
            flag: None,
            evidence: None,
            key: None,
            totals: None,
            replay_id: None,
        }
    }
}

/// A log in `dir` whose segments hold about `records_per_segment` test records, with a
/// watch of budget `retain_bytes_max` attached.
pub struct TestLog {
    pub wal: Wal,
    pub watch: Arc<LogWatch>,
    pub dir: PathBuf,
    buf: Vec<u8>,
}

impl TestLog {
    pub fn open(
        dir: &Path,
        records_per_segment: u64,
        durability: Durability,
        retain_bytes_max: u64,
    ) -> TestLog {
        let frame_bytes_max = (RECORD_HEADER_BYTES + 80) as u64;
        let options = WalOptions {
            durability,
            segment_bytes_max: records_per_segment * frame_bytes_max,
            group_bytes_max: frame_bytes_max as usize,
            ..WalOptions::default()
        };
        let (mut wal, _, _) = Wal::open(Arc::new(StdFs), dir, options, 0).unwrap();
        let watch = LogWatch::new(retain_bytes_max);
        wal.set_watch(Arc::clone(&watch));
        TestLog {
            wal,
            watch,
            dir: dir.to_path_buf(),
            buf: Vec::new(),
        }
    }

    /// Appends and commits records `first..first + count`, one group each.
    pub fn append(&mut self, first: u64, count: u64) {
        for n in first..first + count {
            self.buf.clear();
            let kind = codec::encode(&record(n), &mut self.buf);
            assert!(self.buf.len() <= 80, "test records fit the group size");
            let lsn = self.wal.append(kind, &self.buf).unwrap();
            assert_eq!(lsn, n, "record n has lsn n");
            self.wal.commit().unwrap();
        }
    }

    pub fn shard_log(&self, generation: u64) -> ShardLog {
        ShardLog {
            generation,
            shard: 3,
            dir: self.dir.clone(),
            watch: Arc::clone(&self.watch),
        }
    }

    /// A checkpoint of everything written (its payload does not matter to the feed).
    pub fn checkpoint(&mut self) {
        let lsn = self.wal.written_lsn();
        self.wal.checkpoint(lsn, b"state").unwrap();
    }
}

pub mod bus;
