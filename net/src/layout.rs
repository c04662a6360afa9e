//! The data directory: which generation of shard directories is current, and how the
//! engine moves to a different shard count.
//!
//! ```text
//! DATA_DIR/LOCK                   flock'ed by the engine for its life; holds its pid
//! DATA_DIR/LAYOUT                 "liveops-layout 1\ngeneration G\nshards N\n"
//! DATA_DIR/gen-G/shard-I/         shard I's log segments and checkpoints
//! ```
//!
//! When `SHARDS` differs from the layout's, every old shard is recovered (checkpoint and
//! log), its records are routed by player or key to the new shards ([`Record::split`]),
//! the new shards' state is written as checkpoints into generation G+1, and only then
//! is `LAYOUT` switched (write, fsync, rename, fsync the directory) and the old
//! generation removed. A crash before the switch leaves the old generation current;
//! leftovers of an unfinished migration are removed at the next start.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use liveops_engine::shard::{Record, Shard};
use liveops_storage::{latest_checkpoint, FileSystem, Wal, WalOptions};
use rustix::fs::FlockOperation;

use crate::store::{
    decode_checkpoint, encode_checkpoint, note_covered_keys, note_keyed, KeyedEvents, StoreError,
};

const LAYOUT_FILE: &str = "LAYOUT";
const LAYOUT_MAGIC: &str = "liveops-layout 1";
/// The file an engine `flock`s for its whole life; it holds the holder's pid.
pub const LOCK_FILE: &str = "LOCK";
/// How long a process that found the lock taken waits for the holder to write its pid
/// (the holder writes it right after locking).
const HOLDER_PID_WAIT_MS: u64 = 200;

/// An exclusive `flock` on `DATA_DIR/LOCK`: while it is held no other engine serves from
/// (or re-shards, or writes into) the directory. The kernel drops it when the process
/// dies, however it dies, so a `kill -9` never leaves a stale lock behind.
#[derive(Debug)]
pub struct DataDirLock {
    /// The open lock file; the lock lives exactly as long as this descriptor.
    _file: File,
    /// The directory this lock guards, as configured (`DATA_DIR`).
    data_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "data directory {} is in use by another liveops process ({}, per {}); stop it or set another DATA_DIR",
        .dir.display(),
        .pid.map_or_else(|| "pid unknown".to_owned(), |pid| format!("pid {pid}")),
        .dir.join(LOCK_FILE).display()
    )]
    Held {
        dir: PathBuf,
        /// The holder's pid as it wrote it into the lock file, if it has.
        pid: Option<u32>,
    },
    #[error("cannot lock data directory {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl DataDirLock {
    /// Creates `data_dir` if needed and takes its lock, or says who holds it. Call it
    /// before reading or writing anything else in the directory.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, LockError> {
        let path = data_dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        if !try_flock(&file, FlockOperation::NonBlockingLockExclusive).map_err(io)? {
            return Err(LockError::Held {
                dir: data_dir.to_path_buf(),
                pid: holder_pid(&mut file),
            });
        }
        // Ours now: replace the previous holder's pid with ours, for the next one to name.
        file.set_len(0)
            .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
            .map_err(io)?;
        Ok(DataDirLock {
            _file: file,
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// Fails when a process holds `data_dir`'s lock, for the offline tools: they read
    /// the files an engine is writing. Takes nothing and creates nothing.
    pub fn check_unheld(data_dir: &Path) -> Result<(), LockError> {
        let path = data_dir.join(LOCK_FILE);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            // No lock file: no engine of this version ever ran here.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(LockError::Io { path, source }),
        };
        // A shared lock is refused while an engine holds its exclusive one; this one is
        // released when `file` closes.
        match try_flock(&file, FlockOperation::NonBlockingLockShared) {
            Ok(true) => Ok(()),
            Ok(false) => Err(LockError::Held {
                dir: data_dir.to_path_buf(),
                pid: holder_pid(&mut file),
            }),
            Err(source) => Err(LockError::Io { path, source }),
        }
    }

    /// The locked directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// `flock(fd, operation)` without blocking: true when taken, false when another holds it.
fn try_flock(file: &File, operation: FlockOperation) -> std::io::Result<bool> {
    match rustix::fs::flock(file, operation) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The pid the lock's holder wrote, waiting briefly if it has only just locked.
fn holder_pid(file: &mut File) -> Option<u32> {
    let deadline = std::time::Instant::now() + Duration::from_millis(HOLDER_PID_WAIT_MS);
    loop {
        let mut text = String::new();
        let read = std::io::Seek::rewind(file).and_then(|()| {
            // A pid is a few digits; anything longer is not one.
            Read::by_ref(file).take(32).read_to_string(&mut text)
        });
        if read.is_ok() {
            if let Ok(pid) = text.trim().parse() {
                return Some(pid);
            }
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub data_dir: PathBuf,
    pub generation: u64,
    pub shards: usize,
}

impl Layout {
    pub fn generation_dir(&self) -> PathBuf {
        self.data_dir.join(format!("gen-{}", self.generation))
    }

    pub fn shard_dir(&self, index: usize) -> PathBuf {
        self.generation_dir().join(format!("shard-{index}"))
    }

    /// The current layout, if the data directory has one.
    pub fn read(data_dir: &Path) -> Result<Option<Layout>, StoreError> {
        let path = data_dir.join(LAYOUT_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(layout_error(&path, format!("cannot read: {e}"))),
        };
        let mut lines = text.lines();
        let field = |line: Option<&str>, name: &str| -> Option<u64> {
            line?.strip_prefix(name)?.trim().parse().ok()
        };
        if lines.next() != Some(LAYOUT_MAGIC) {
            return Err(layout_error(&path, "not a liveops layout file".into()));
        }
        let generation = field(lines.next(), "generation ");
        let shards = field(lines.next(), "shards ");
        match (generation, shards) {
            (Some(generation), Some(shards)) if shards > 0 => Ok(Some(Layout {
                data_dir: data_dir.to_path_buf(),
                generation,
                shards: shards as usize,
            })),
            _ => Err(layout_error(
                &path,
                "malformed: expected generation and shards".into(),
            )),
        }
    }

    /// Makes this layout the current one, atomically.
    fn install(&self) -> Result<(), StoreError> {
        let path = self.data_dir.join(LAYOUT_FILE);
        let tmp = self.data_dir.join(format!("{LAYOUT_FILE}.tmp"));
        let text = format!(
            "{LAYOUT_MAGIC}\ngeneration {}\nshards {}\n",
            self.generation, self.shards
        );
        let io = |e: std::io::Error| layout_error(&path, format!("cannot write: {e}"));
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        std::fs::File::open(&self.data_dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(())
    }
}

fn layout_error(path: &Path, message: String) -> StoreError {
    StoreError::Layout {
        path: path.to_path_buf(),
        message,
    }
}

/// What preparing the data directory did.
pub struct Prepared {
    pub layout: Layout,
    /// Set when the shard count changed: the old count.
    pub migrated_from: Option<usize>,
}

/// Returns the layout for `shards`, creating or migrating it. `empty_shard` makes a
/// fresh shard to rebuild state into. Taking `lock` proves no other engine uses the
/// directory meanwhile.
pub fn prepare(
    fs: Arc<dyn FileSystem>,
    lock: &DataDirLock,
    shards: usize,
    config: &WalOptions,
    empty_shard: &dyn Fn() -> Shard,
    ttl_ms: u64,
    now_ms: u64,
) -> Result<Prepared, StoreError> {
    let data_dir = lock.data_dir();
    let current = Layout::read(data_dir)?;
    remove_stale_generations(data_dir, current.as_ref().map(|l| l.generation));
    match current {
        None => {
            let layout = Layout {
                data_dir: data_dir.to_path_buf(),
                generation: 1,
                shards,
            };
            layout.install()?;
            Ok(Prepared {
                layout,
                migrated_from: None,
            })
        }
        Some(layout) if layout.shards == shards => Ok(Prepared {
            layout,
            migrated_from: None,
        }),
        Some(old) => {
            let layout = migrate(fs, &old, shards, config, empty_shard, ttl_ms, now_ms)?;
            let _ = std::fs::remove_dir_all(old.generation_dir());
            Ok(Prepared {
                layout,
                migrated_from: Some(old.shards),
            })
        }
    }
}

/// Removes generation directories other than the current one (an interrupted
/// migration's, or an old one whose removal was interrupted).
fn remove_stale_generations(data_dir: &Path, current: Option<u64>) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(generation) = name
            .to_str()
            .and_then(|n| n.strip_prefix("gen-"))
            .and_then(|g| g.parse::<u64>().ok())
        else {
            continue;
        };
        if Some(generation) != current {
            tracing::warn!(dir = %entry.path().display(), "removing a stale generation directory");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn migrate(
    fs: Arc<dyn FileSystem>,
    old: &Layout,
    shards: usize,
    config: &WalOptions,
    empty_shard: &dyn Fn() -> Shard,
    ttl_ms: u64,
    now_ms: u64,
) -> Result<Layout, StoreError> {
    tracing::info!(
        from = old.shards,
        to = shards,
        "shard count changed: re-sharding the data directory"
    );
    let mut new_shards: Vec<Shard> = (0..shards).map(|_| empty_shard()).collect();
    new_shards.iter_mut().for_each(Shard::begin_replay);
    let mut tail: Vec<Record> = Vec::new();
    let mut keyed = KeyedEvents::new();
    for index in 0..old.shards {
        let dir = old.shard_dir(index);
        let load = latest_checkpoint(&*fs, &dir)?;
        note_covered_keys(&*fs, &dir, &load, &mut keyed)?;
        let mut after_lsn = 0;
        if let Some(checkpoint) = &load.checkpoint {
            decode_checkpoint(checkpoint.payload(), |record| {
                for (to, part) in record.split(shards) {
                    new_shards[to].apply(part);
                }
            })
            .map_err(|source| StoreError::BadCheckpoint {
                file: checkpoint.file.clone(),
                source,
            })?;
            after_lsn = checkpoint.lsn;
        }
        let (_, records, _) = Wal::open(fs.clone(), &dir, config.clone(), after_lsn)?;
        for raw in records {
            let record =
                liveops_engine::codec::decode(raw.kind, &raw.payload).map_err(|source| {
                    StoreError::BadRecord {
                        file: dir.clone(),
                        lsn: raw.lsn,
                        source,
                    }
                })?;
            note_keyed(&mut keyed, &record);
            tail.push(record);
        }
    }
    // Each old log is in time order; merged by time (closes first at equal times) the
    // new shards see every change in an order one engine could have produced.
    tail.sort_by_key(|r| (r.at_ms(), !matches!(r, Record::WindowClosed { .. })));
    for record in tail {
        for (to, part) in record.split(shards) {
            new_shards[to].apply(part);
        }
    }
    new_shards.iter_mut().for_each(Shard::finish_replay);
    restore_keys(&mut new_shards, keyed, ttl_ms, now_ms);
    let layout = Layout {
        data_dir: old.data_dir.clone(),
        generation: old.generation + 1,
        shards,
    };
    for (index, shard) in new_shards.iter_mut().enumerate() {
        shard.take_journal();
        shard.take_audit_outbox();
        let (mut wal, _, _) = Wal::open(fs.clone(), layout.shard_dir(index), config.clone(), 0)?;
        wal.checkpoint(0, &encode_checkpoint(shard)?)?;
    }
    layout.install()?;
    Ok(layout)
}

/// Completes, on each key's home shard, the keys whose events were logged but whose
/// completion was not. Returns how many were restored.
pub fn restore_keys(shards: &mut [Shard], keyed: KeyedEvents, ttl_ms: u64, now_ms: u64) -> usize {
    let count = shards.len();
    keyed
        .into_iter()
        .filter(|(key, request)| {
            let home = liveops_engine::shard_of(key, count);
            shards[home].restore_key(
                key.clone(),
                request.fingerprint,
                crate::store::recovered_response(request),
                request.at_ms.saturating_add(ttl_ms),
                now_ms,
            )
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lock_per_data_directory_until_dropped() {
        let dir = std::env::temp_dir().join(format!("liveops-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(DataDirLock::check_unheld(&dir).is_ok(), "no lock file yet");
        let lock = DataDirLock::acquire(&dir).unwrap();
        let me = std::process::id();
        // flock belongs to the open file, so a second open conflicts even in-process.
        match DataDirLock::acquire(&dir) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(me)),
            other => panic!("a second lock: {other:?}"),
        }
        match DataDirLock::check_unheld(&dir) {
            Err(e @ LockError::Held { .. }) => {
                assert!(e.to_string().contains(&format!("pid {me}")), "{e}")
            }
            other => panic!("the tools' check: {other:?}"),
        }
        drop(lock);
        assert!(DataDirLock::check_unheld(&dir).is_ok());
        drop(DataDirLock::acquire(&dir).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
