//! [`FaultFs`]: an in-memory [`FileSystem`] for tests that fails on demand and crashes.
//!
//! The model, kept small on purpose:
//!
//! * Each file (inode) has its written bytes and a durable length: the prefix that
//!   [`WritableFile::sync_data`] (or [`FileSystem::truncate`]) has made durable.
//! * Names have a visible map and a durable map. Creations, renames and removals change
//!   the visible map at once and reach the durable map at [`FileSystem::sync_dir`] of
//!   their directory. Directories themselves are durable as soon as they are created.
//! * [`FaultFs::crash`] is a power loss and reboot: a random prefix of the pending name
//!   changes is applied (a journaling file system commits them in order), files no durable
//!   name points to vanish, and every file is cut back to its durable length plus a random
//!   prefix of its unsynced bytes, sometimes with the end of that prefix turned to zeros
//!   (what ext4 can show when the size reached the disk but the data blocks did not).
//!   Handles opened before the crash stop working.
//! * Faults: [`Fault`] arms one failure for the next matching call;
//!   [`FaultFs::halt_after_ops`] lets `n` more mutating calls through, then the next one
//!   fails (a write among them is torn at a random point) and so does every call after
//!   it, until `crash`.
//!
//! What it does not model: a failed fsync here leaves the unsynced bytes as they were,
//! while Linux may drop them and report success on the next fsync. The WAL never syncs
//! again after a failure, so that difference cannot be observed through it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fs::{FileSystem, WritableFile};

/// A failure armed for the next matching call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The next append writes only its first `written_bytes` bytes and fails; the file
    /// system keeps working (an EIO or ENOSPC in the middle of a write).
    ShortWrite { written_bytes: usize },
    /// The next append writes only its first `written_bytes` bytes and the machine dies:
    /// that call and every later one fail until [`FaultFs::crash`].
    TornWrite { written_bytes: usize },
    /// The next fsync (file, truncate or directory) fails and makes nothing durable.
    SyncError,
}

/// The fault-injecting in-memory file system. Clones share the same state, so a test
/// keeps one clone to steer faults while the code under test owns another.
#[derive(Debug, Clone)]
pub struct FaultFs {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    rng: u64,
    /// Bumped by every crash; a handle from an older epoch is dead.
    epoch: u64,
    inodes: HashMap<u64, Inode>,
    inode_next: u64,
    names: BTreeMap<PathBuf, u64>,
    names_durable: BTreeMap<PathBuf, u64>,
    names_pending: Vec<NameOp>,
    dirs: BTreeSet<PathBuf>,
    fault: Option<Fault>,
    ops_before_halt: Option<u64>,
    halted: bool,
}

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    durable_len: usize,
}

#[derive(Debug, Clone)]
enum NameOp {
    Link {
        path: PathBuf,
        inode: u64,
    },
    Unlink {
        path: PathBuf,
    },
    Rename {
        from: PathBuf,
        to: PathBuf,
        inode: u64,
    },
}

impl NameOp {
    fn dir(&self) -> Option<&Path> {
        match self {
            NameOp::Link { path, .. } | NameOp::Unlink { path } => path.parent(),
            NameOp::Rename { to, .. } => to.parent(),
        }
    }

    fn apply(&self, names: &mut BTreeMap<PathBuf, u64>) {
        match self {
            NameOp::Link { path, inode } => {
                names.insert(path.clone(), *inode);
            }
            NameOp::Unlink { path } => {
                names.remove(path);
            }
            NameOp::Rename { from, to, inode } => {
                names.remove(from);
                names.insert(to.clone(), *inode);
            }
        }
    }
}

/// Whether a mutating call may go ahead.
enum Gate {
    Proceed,
    /// This call is the one that halts the machine.
    HaltNow,
}

impl FaultFs {
    /// An empty file system whose random choices (torn points, crash leftovers) follow
    /// `seed`, so a failing test replays exactly.
    pub fn new(seed: u64) -> FaultFs {
        let state = State {
            // xorshift must not start at zero.
            rng: (seed ^ 0x9E37_79B9_7F4A_7C15) | 1,
            epoch: 0,
            inodes: HashMap::new(),
            inode_next: 1,
            names: BTreeMap::new(),
            names_durable: BTreeMap::new(),
            names_pending: Vec::new(),
            dirs: BTreeSet::new(),
            fault: None,
            ops_before_halt: None,
            halted: false,
        };
        FaultFs {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// Arms `fault` for the next matching call (replacing any armed one).
    pub fn inject(&self, fault: Fault) {
        self.lock().fault = Some(fault);
    }

    /// Lets `ops` more mutating calls (append, sync, create, truncate, rename, remove,
    /// directory sync) succeed; the one after fails and halts the machine.
    pub fn halt_after_ops(&self, ops: u64) {
        self.lock().ops_before_halt = Some(ops);
    }

    /// Whether the machine is halted, waiting for [`FaultFs::crash`].
    pub fn is_halted(&self) -> bool {
        self.lock().halted
    }

    /// Power loss and reboot: keeps what was durable plus random leftovers (see the
    /// module docs), clears armed faults and the halt.
    pub fn crash(&self) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let applied = state.random_upto(state.names_pending.len() as u64) as usize;
        for op in state.names_pending.drain(..).take(applied) {
            op.apply(&mut state.names_durable);
        }
        state.names = state.names_durable.clone();
        let live: BTreeSet<u64> = state.names.values().copied().collect();
        state.inodes.retain(|id, _| live.contains(id));
        let mut ids: Vec<u64> = state.inodes.keys().copied().collect();
        ids.sort_unstable(); // HashMap order is random per process; keep runs replayable.
        for id in ids {
            let unsynced = {
                let inode = &state.inodes[&id];
                (inode.data.len() - inode.durable_len) as u64
            };
            let kept = match state.random_upto(2) {
                0 => 0,
                1 => unsynced,
                _ => state.random_upto(unsynced),
            } as usize;
            let zeroed = if kept > 0 && state.random_upto(3) == 0 {
                state.random_upto(kept as u64 - 1) as usize + 1
            } else {
                0
            };
            let inode = state.inodes.get_mut(&id).expect("id listed above");
            let len = inode.durable_len + kept;
            inode.data.truncate(len);
            inode.data[len - zeroed..].fill(0);
            inode.durable_len = len;
        }
        state.fault = None;
        state.ops_before_halt = None;
        state.halted = false;
        state.epoch += 1;
    }

    /// Edits a file's bytes in place and durably, as a failing disk or a stray process
    /// would. Panics if the file does not exist: only tests call this.
    pub fn with_file_mut<R>(&self, path: &Path, edit: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        let mut state = self.lock();
        let id = *state.names.get(path).expect("with_file_mut: no such file");
        let inode = state.inodes.get_mut(&id).expect("named inode exists");
        let result = edit(&mut inode.data);
        inode.durable_len = inode.data.len();
        result
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock can only come from a failing test; its state is
        // still the best description of the "disk", so keep using it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    /// Uniform-ish in `0..=max` (xorshift64*; modulo bias is irrelevant here).
    fn random_upto(&mut self, max: u64) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let value = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        if max == u64::MAX {
            value
        } else {
            value % (max + 1)
        }
    }

    fn check_up(&self) -> io::Result<()> {
        if self.halted {
            return Err(io::Error::other("FaultFs: the machine is halted"));
        }
        Ok(())
    }

    fn gate(&mut self) -> io::Result<Gate> {
        self.check_up()?;
        match self.ops_before_halt {
            Some(0) => {
                self.halted = true;
                Ok(Gate::HaltNow)
            }
            Some(left) => {
                self.ops_before_halt = Some(left - 1);
                Ok(Gate::Proceed)
            }
            None => Ok(Gate::Proceed),
        }
    }

    fn take_sync_fault(&mut self) -> bool {
        if self.fault == Some(Fault::SyncError) {
            self.fault = None;
            return true;
        }
        false
    }

    fn lookup(&self, path: &Path) -> io::Result<u64> {
        self.names.get(path).copied().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("FaultFs: no file {}", path.display()),
            )
        })
    }

    fn check_parent(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(parent) if self.dirs.contains(parent) => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("FaultFs: no directory for {}", path.display()),
            )),
        }
    }
}

fn halted_error() -> io::Error {
    io::Error::other("FaultFs: the machine halted during this call")
}

impl FileSystem for FaultFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check_up()?;
        for ancestor in dir.ancestors().filter(|a| !a.as_os_str().is_empty()) {
            state.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    fn list_files(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        state.check_up()?;
        if !state.dirs.contains(dir) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "FaultFs: no such directory",
            ));
        }
        Ok(state
            .names
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        let state = self.lock();
        state.check_up()?;
        let id = state.lookup(path)?;
        Ok(state.inodes[&id].data.len() as u64)
    }

    fn read_into(&self, path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
        let state = self.lock();
        state.check_up()?;
        let id = state.lookup(path)?;
        buf.clear();
        buf.extend_from_slice(&state.inodes[&id].data);
        Ok(())
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let mut state = self.lock();
        state.check_up()?;
        state.check_parent(path)?;
        if state.names.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "FaultFs: file exists",
            ));
        }
        if let Gate::HaltNow = state.gate()? {
            return Err(halted_error());
        }
        let inode = state.inode_next;
        state.inode_next += 1;
        state.inodes.insert(inode, Inode::default());
        state.names.insert(path.to_path_buf(), inode);
        state.names_pending.push(NameOp::Link {
            path: path.to_path_buf(),
            inode,
        });
        Ok(Box::new(FaultFile {
            fs: self.clone(),
            inode,
            epoch: state.epoch,
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let state = self.lock();
        state.check_up()?;
        let inode = state.lookup(path)?;
        Ok(Box::new(FaultFile {
            fs: self.clone(),
            inode,
            epoch: state.epoch,
        }))
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut state = self.lock();
        state.check_up()?;
        let id = state.lookup(path)?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        if len > state.inodes[&id].data.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "FaultFs: truncate only shrinks",
            ));
        }
        if let Gate::HaltNow = state.gate()? {
            return Err(halted_error());
        }
        let sync_fails = state.take_sync_fault();
        let inode = state.inodes.get_mut(&id).expect("named inode exists");
        inode.data.truncate(len);
        inode.durable_len = inode.durable_len.min(len);
        if sync_fails {
            return Err(io::Error::other("FaultFs: injected fsync failure"));
        }
        inode.durable_len = len;
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check_up()?;
        let inode = state.lookup(from)?;
        state.check_parent(to)?;
        if let Gate::HaltNow = state.gate()? {
            return Err(halted_error());
        }
        state.names.remove(from);
        state.names.insert(to.to_path_buf(), inode);
        state.names_pending.push(NameOp::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            inode,
        });
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check_up()?;
        state.lookup(path)?;
        if let Gate::HaltNow = state.gate()? {
            return Err(halted_error());
        }
        state.names.remove(path);
        state.names_pending.push(NameOp::Unlink {
            path: path.to_path_buf(),
        });
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut guard = self.lock();
        let state = &mut *guard;
        state.check_up()?;
        if let Gate::HaltNow = state.gate()? {
            return Err(halted_error());
        }
        if state.take_sync_fault() {
            return Err(io::Error::other("FaultFs: injected fsync failure"));
        }
        let (mine, others): (Vec<NameOp>, Vec<NameOp>) = state
            .names_pending
            .drain(..)
            .partition(|op| op.dir() == Some(dir));
        for op in &mine {
            op.apply(&mut state.names_durable);
        }
        state.names_pending = others;
        Ok(())
    }
}

#[derive(Debug)]
struct FaultFile {
    fs: FaultFs,
    inode: u64,
    epoch: u64,
}

impl FaultFile {
    fn live_state(&self) -> io::Result<MutexGuard<'_, State>> {
        let state = self.fs.lock();
        state.check_up()?;
        if state.epoch != self.epoch {
            return Err(io::Error::other("FaultFs: handle from before a crash"));
        }
        Ok(state)
    }
}

impl WritableFile for FaultFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut state = self.live_state()?;
        let gate = state.gate()?;
        let torn_bytes = match (gate, state.fault) {
            (Gate::HaltNow, _) => Some(state.random_upto(buf.len() as u64) as usize),
            (Gate::Proceed, Some(Fault::ShortWrite { written_bytes })) => {
                state.fault = None;
                Some(written_bytes.min(buf.len()))
            }
            (Gate::Proceed, Some(Fault::TornWrite { written_bytes })) => {
                state.fault = None;
                state.halted = true;
                Some(written_bytes.min(buf.len()))
            }
            (Gate::Proceed, _) => None,
        };
        let inode = state
            .inodes
            .get_mut(&self.inode)
            .expect("open inode exists");
        match torn_bytes {
            None => {
                inode.data.extend_from_slice(buf);
                Ok(())
            }
            Some(written) => {
                inode.data.extend_from_slice(&buf[..written]);
                Err(io::Error::other(format!(
                    "FaultFs: write of {} bytes failed after {written}",
                    buf.len()
                )))
            }
        }
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut state = self.live_state()?;
        if let Gate::HaltNow = state.gate()? {
            return Err(halted_error());
        }
        if state.take_sync_fault() {
            return Err(io::Error::other("FaultFs: injected fsync failure"));
        }
        let inode = state
            .inodes
            .get_mut(&self.inode)
            .expect("open inode exists");
        inode.durable_len = inode.data.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (FaultFs, PathBuf) {
        let fs = FaultFs::new(7);
        let dir = PathBuf::from("/d");
        fs.create_dir_all(&dir).unwrap();
        (fs, dir)
    }

    fn read(fs: &FaultFs, path: &Path) -> Option<Vec<u8>> {
        let mut buf = Vec::new();
        fs.read_into(path, &mut buf).ok().map(|()| buf)
    }

    #[test]
    fn crash_keeps_synced_bytes_and_synced_names() {
        for seed in 0..50 {
            let fs = FaultFs::new(seed);
            let dir = PathBuf::from("/d");
            fs.create_dir_all(&dir).unwrap();
            let path = dir.join("a");
            let mut file = fs.create_new(&path).unwrap();
            file.append(b"durable").unwrap();
            file.sync_data().unwrap();
            fs.sync_dir(&dir).unwrap();
            file.append(b"-maybe").unwrap();
            fs.crash();
            let data = read(&fs, &path).unwrap();
            assert!(data.len() >= 7 && data.len() <= 13, "seed {seed}: {data:?}");
            assert_eq!(&data[..7], b"durable");
            let tail = &data[7..];
            let zeros = tail.iter().rev().take_while(|b| **b == 0).count();
            assert_eq!(
                &tail[..tail.len() - zeros],
                &b"-maybe"[..tail.len() - zeros]
            );
            assert!(file.append(b"x").is_err(), "old handles die with the crash");
        }
    }

    #[test]
    fn unsynced_names_may_vanish() {
        let mut vanished = 0;
        for seed in 0..50 {
            let fs = FaultFs::new(seed);
            let dir = PathBuf::from("/d");
            fs.create_dir_all(&dir).unwrap();
            let mut file = fs.create_new(&dir.join("a")).unwrap();
            file.append(b"x").unwrap();
            file.sync_data().unwrap();
            fs.crash();
            if read(&fs, &dir.join("a")).is_none() {
                vanished += 1;
            }
        }
        assert!(vanished > 0 && vanished < 50, "{vanished}");
    }

    #[test]
    fn rename_is_atomic_across_crashes() {
        for seed in 0..50 {
            let fs = FaultFs::new(seed);
            let dir = PathBuf::from("/d");
            fs.create_dir_all(&dir).unwrap();
            let mut old = fs.create_new(&dir.join("t")).unwrap();
            old.append(b"old").unwrap();
            old.sync_data().unwrap();
            fs.rename(&dir.join("t"), &dir.join("f")).unwrap();
            fs.sync_dir(&dir).unwrap();
            let mut new = fs.create_new(&dir.join("t")).unwrap();
            new.append(b"new").unwrap();
            new.sync_data().unwrap();
            fs.rename(&dir.join("t"), &dir.join("f")).unwrap();
            fs.crash();
            let data = read(&fs, &dir.join("f")).unwrap();
            assert!(data == b"old" || data == b"new", "{data:?}");
        }
    }

    #[test]
    fn faults_fire_once_and_halt_sticks() {
        let (fs, dir) = setup();
        let mut file = fs.create_new(&dir.join("a")).unwrap();
        fs.inject(Fault::ShortWrite { written_bytes: 2 });
        assert!(file.append(b"abcd").is_err());
        file.append(b"ef").unwrap();
        assert_eq!(read(&fs, &dir.join("a")).unwrap(), b"abef");
        fs.inject(Fault::SyncError);
        assert!(file.sync_data().is_err());
        file.sync_data().unwrap();

        fs.halt_after_ops(1);
        file.append(b"g").unwrap();
        assert!(file.sync_data().is_err());
        assert!(fs.is_halted());
        assert!(
            read(&fs, &dir.join("a")).is_none(),
            "a halted machine answers nothing"
        );
        fs.crash();
        assert!(!fs.is_halted());
        assert!(read(&fs, &dir.join("a")).is_some());
    }

    #[test]
    fn torn_write_writes_a_prefix_and_halts() {
        let (fs, dir) = setup();
        let path = dir.join("a");
        let mut file = fs.create_new(&path).unwrap();
        fs.inject(Fault::TornWrite { written_bytes: 3 });
        assert!(file.append(b"abcdef").is_err());
        assert!(fs.is_halted());
        assert!(fs.list_files(&dir).is_err());
        fs.crash();
        // Neither the name nor the bytes were made durable: the file may be gone, and if
        // not, it holds at most the torn prefix.
        if let Some(data) = read(&fs, &dir.join("a")) {
            assert!(data.len() <= 3, "{data:?}");
            assert!(data
                .iter()
                .zip(b"abc")
                .all(|(got, wrote)| got == wrote || *got == 0));
        }
    }
}
