//! The file-system layer: the few operations the WAL and checkpoints need, as a trait, so
//! tests can swap in [`crate::fault::FaultFs`] and crash it at will.
//!
//! The contract is POSIX-like and deliberately pessimistic: written bytes are durable
//! only after [`WritableFile::sync_data`]; a created, renamed or removed name is durable
//! only after [`FileSystem::sync_dir`] of its directory. Code above this layer must not
//! rely on anything else surviving a crash.

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

/// Directory and file operations.
pub trait FileSystem: Debug + Send + Sync {
    /// Creates `dir` and any missing parents, making their names durable.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the regular files directly in `dir`, in no particular order.
    fn list_files(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// The file's length in bytes.
    fn file_len(&self, path: &Path) -> io::Result<u64>;
    /// Replaces `buf`'s contents with the whole file.
    fn read_into(&self, path: &Path, buf: &mut Vec<u8>) -> io::Result<()>;
    /// Creates a new empty file for writing; fails if it exists.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WritableFile>>;
    /// Opens an existing file to append to its end.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>>;
    /// Shrinks the file to `len` bytes and makes the new length durable.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Atomically renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// A file open for appending.
pub trait WritableFile: Debug + Send {
    /// Writes all of `buf` at the end of the file. For the WAL this is one call per group:
    /// one `write(2)` unless the kernel returns short, in which case the rest follows.
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// `fdatasync`: makes every appended byte (and the file's length) durable.
    fn sync_data(&mut self) -> io::Result<()>;
}

/// The real file system, through `std::fs`.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

impl FileSystem for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        // Remember which ancestors are new: each one's name lives in its parent, which
        // must be fsynced for the directory to survive a crash.
        let missing: Vec<&Path> = dir
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .take_while(|a| !a.exists())
            .collect();
        std::fs::create_dir_all(dir)?;
        for created in missing.iter().rev() {
            let parent = match created.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => Path::new("."), // A relative path's first component lives in ".".
            };
            self.sync_dir(parent)?;
        }
        Ok(())
    }

    fn list_files(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            // Names this crate writes are ASCII; anything else is not ours to read.
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }

    fn read_into(&self, path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.clear();
        File::open(path)?.read_to_end(buf)?;
        Ok(())
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let file = OpenOptions::new().write(true).create_new(true).open(path)?;
        Ok(Box::new(StdFile { file }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(Box::new(StdFile { file }))
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(len)?;
        file.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // On Linux a directory opened read-only can be fsynced; that persists its entries.
        File::open(dir)?.sync_all()
    }
}

#[derive(Debug)]
struct StdFile {
    file: File,
}

impl WritableFile for StdFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}
