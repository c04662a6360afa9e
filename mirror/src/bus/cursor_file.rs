//! A bus sink's durable cursors: [`CursorFile`].
//!
//! A broker takes no part in a transaction with our cursor, so a bus sink stores it
//! after the broker acknowledged a batch, in a small file of its own: `<dir>/<sink>.cursors`
//! (the engine passes `DATA_DIR/mirror-cursors/`), one line per shard. Each store
//! rewrites the file atomically: write a temporary file, fsync it, rename it over the
//! old one, fsync the directory. A crash between the broker's ack and the rename sends
//! that batch again on restart; the broker's de-duplication (by the message id) drops it.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::feed::Cursor;

/// First line of the file: names the format, so a future one is recognised.
const HEADER: &str = "# liveops-mirror bus cursors v1";

/// Largest cursor file read: a line per shard is some 30 bytes.
const FILE_BYTES_MAX: u64 = 1 << 20;

/// Why cursors could not be read or stored.
#[derive(Debug, thiserror::Error)]
pub enum CursorFileError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is not one this code wrote: nothing is assumed, an operator decides
    /// (deleting it makes the sink start from the log's beginning).
    #[error("{}: line {line}: {reason}", path.display())]
    Malformed {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// One sink's cursors, as last stored.
#[derive(Debug)]
pub struct CursorFile {
    /// The directory holding it: fsynced after each rename so the rename is durable.
    dir: PathBuf,
    /// `<dir>/<sink>.cursors`.
    path: PathBuf,
    /// `<dir>/<sink>.cursors.tmp`: written, then renamed over `path`.
    temp_path: PathBuf,
    /// Shard -> cursor, as in the file (shards never stored are absent: [`Cursor::NEW`]).
    cursors: BTreeMap<u32, Cursor>,
}

impl CursorFile {
    /// Opens (creating `dir` if needed) the cursors of the sink named `sink`.
    pub fn open(dir: &Path, sink: &str) -> Result<CursorFile, CursorFileError> {
        fs::create_dir_all(dir).map_err(|source| CursorFileError::Io {
            op: "create",
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(format!("{sink}.cursors"));
        let temp_path = dir.join(format!("{sink}.cursors.tmp"));
        let cursors = match File::open(&path) {
            Ok(file) => parse(&path, file)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(CursorFileError::Io {
                    op: "open",
                    path,
                    source,
                })
            }
        };
        Ok(CursorFile {
            dir: dir.to_path_buf(),
            path,
            temp_path,
            cursors,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored cursor of `shard` ([`Cursor::NEW`] if none was).
    pub fn get(&self, shard: u32) -> Cursor {
        self.cursors.get(&shard).copied().unwrap_or(Cursor::NEW)
    }

    /// Stores `cursor` for `shard` durably; on error the stored cursors are unchanged
    /// (on disk and as [`CursorFile::get`] answers).
    pub fn store(&mut self, shard: u32, cursor: Cursor) -> Result<(), CursorFileError> {
        let mut next = self.cursors.clone();
        next.insert(shard, cursor);
        let mut text = String::with_capacity(HEADER.len() + 32 * next.len());
        text.push_str(HEADER);
        text.push('\n');
        for (shard, cursor) in &next {
            text.push_str(&format!("{shard} {cursor}\n"));
        }
        self.write_atomically(text.as_bytes())?;
        self.cursors = next;
        Ok(())
    }

    fn write_atomically(&self, bytes: &[u8]) -> Result<(), CursorFileError> {
        let io_error = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| CursorFileError::Io { op, path, source }
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.temp_path)
            .map_err(io_error("create", &self.temp_path))?;
        file.write_all(bytes)
            .map_err(io_error("write", &self.temp_path))?;
        file.sync_all()
            .map_err(io_error("fsync", &self.temp_path))?;
        drop(file);
        fs::rename(&self.temp_path, &self.path).map_err(io_error("rename", &self.path))?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error("fsync", &self.dir))
    }
}

fn parse(path: &Path, file: File) -> Result<BTreeMap<u32, Cursor>, CursorFileError> {
    let mut text = String::new();
    file.take(FILE_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .map_err(|source| CursorFileError::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        })?;
    let malformed = |line: usize, reason: String| CursorFileError::Malformed {
        path: path.to_path_buf(),
        line,
        reason,
    };
    if text.len() as u64 > FILE_BYTES_MAX {
        return Err(malformed(0, format!("longer than {FILE_BYTES_MAX} bytes")));
    }
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, HEADER)) => {}
        _ => return Err(malformed(1, format!("the first line is not {HEADER:?}"))),
    }
    let mut cursors = BTreeMap::new();
    for (index, line) in lines {
        let line_no = index + 1;
        let (shard, cursor) = line
            .split_once(' ')
            .ok_or_else(|| malformed(line_no, "expected `<shard> <cursor>`".into()))?;
        let shard: u32 = shard
            .parse()
            .map_err(|_| malformed(line_no, format!("bad shard {shard:?}")))?;
        let cursor: Cursor = cursor
            .parse()
            .map_err(|e| malformed(line_no, format!("{e}")))?;
        if cursors.insert(shard, cursor).is_some() {
            return Err(malformed(line_no, format!("shard {shard} twice")));
        }
    }
    Ok(cursors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        std::env::temp_dir().join(format!(
            "liveops-cursor-file-{name}-{}-{nanos}",
            std::process::id()
        ))
    }

    #[test]
    fn cursor_text_round_trips_and_refuses_junk() {
        for cursor in [
            Cursor::NEW,
            Cursor {
                generation: 3,
                lsn: u64::MAX,
            },
        ] {
            assert_eq!(cursor.to_string().parse::<Cursor>(), Ok(cursor));
        }
        for junk in [
            "",
            "g",
            "g1",
            "g1-",
            "g-1",
            "1-2",
            "g+1-2",
            "g1-+2",
            "g1-2x",
            "g1-99999999999999999999",
        ] {
            assert!(junk.parse::<Cursor>().is_err(), "{junk:?}");
        }
    }

    #[test]
    fn stores_survive_reopening_and_a_new_sink_starts_new() {
        let dir = temp_dir("store");
        let mut file = CursorFile::open(&dir, "nats").unwrap();
        assert_eq!(file.get(0), Cursor::NEW);
        let c = |lsn| Cursor { generation: 2, lsn };
        file.store(0, c(10)).unwrap();
        file.store(3, c(7)).unwrap();
        file.store(0, c(12)).unwrap();
        let reopened = CursorFile::open(&dir, "nats").unwrap();
        assert_eq!((reopened.get(0), reopened.get(3)), (c(12), c(7)));
        assert_eq!(reopened.get(1), Cursor::NEW);
        assert_eq!(CursorFile::open(&dir, "sqs").unwrap().get(0), Cursor::NEW);
        assert!(!dir.join("nats.cursors.tmp").exists(), "renamed away");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_file_is_refused_not_reset() {
        let dir = temp_dir("damaged");
        fs::create_dir_all(&dir).unwrap();
        for text in [
            "garbage\n".to_string(),
            format!("{HEADER}\n0 g1-5\n0 g1-6\n"),
            format!("{HEADER}\n0 g1-x\n"),
            format!("{HEADER}\nzero g1-5\n"),
        ] {
            fs::write(dir.join("nats.cursors"), &text).unwrap();
            let err = CursorFile::open(&dir, "nats").unwrap_err();
            assert!(
                matches!(err, CursorFileError::Malformed { .. }),
                "{text:?}: {err}"
            );
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
