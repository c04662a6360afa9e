//! Operator tools over a data directory: `liveops wal verify` and `liveops wal dump`.
//! Both only read; run them on a stopped engine (a write in progress looks like a torn
//! tail).

use std::io::Write;
use std::path::Path;

use liveops_storage::{verify_dir, DumpIter, StdFs};
use serde_json::json;

use crate::layout::Layout;
use crate::store::{decode_checkpoint, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{0}: no LAYOUT file: not a liveops data directory (or never started)")]
    NoLayout(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Storage(#[from] liveops_storage::Error),
    #[error("output: {0}")]
    Output(#[from] std::io::Error),
}

fn layout(data_dir: &Path) -> Result<Layout, ToolError> {
    Layout::read(data_dir)?.ok_or_else(|| ToolError::NoLayout(data_dir.display().to_string()))
}

/// Checks every segment and checkpoint of every shard; one line per shard, and one per
/// problem. Returns whether everything is clean.
pub fn verify(data_dir: &Path, out: &mut impl Write) -> Result<bool, ToolError> {
    let layout = layout(data_dir)?;
    let mut clean = true;
    for index in 0..layout.shards {
        let dir = layout.shard_dir(index);
        let report = verify_dir(&StdFs, &dir)?;
        let lsns = report
            .lsns
            .map_or("none".to_owned(), |(a, b)| format!("{a}..={b}"));
        let checkpoints = report
            .checkpoints
            .iter()
            .filter(|c| c.problem.is_none())
            .count();
        let state = if report.is_clean() {
            "clean"
        } else {
            "DAMAGED"
        };
        writeln!(
            out,
            "shard {index} ({}): {state}: {} segments, {} records (lsn {lsns}), {checkpoints} valid checkpoints",
            dir.display(),
            report.segments.len(),
            report.records,
        )?;
        if let Some(damage) = &report.damage {
            writeln!(
                out,
                "  {:?} at {} offset {}: {:?}",
                damage.kind,
                damage.file.display(),
                damage.offset,
                damage.reason
            )?;
        }
        for checkpoint in report.checkpoints.iter().filter(|c| c.problem.is_some()) {
            writeln!(
                out,
                "  invalid checkpoint {}: {:?}",
                checkpoint.file.display(),
                checkpoint.problem
            )?;
        }
        clean &= report.is_clean();
    }
    Ok(clean)
}

/// Prints every checkpoint record and every log record of every shard as JSON lines:
/// `{"shard","source":"checkpoint"|"log","file","lsn"?,"offset"?,"record":{...}}`.
/// Returns whether everything decoded without damage.
pub fn dump(data_dir: &Path, out: &mut impl Write) -> Result<bool, ToolError> {
    let layout = layout(data_dir)?;
    let mut clean = true;
    for index in 0..layout.shards {
        let dir = layout.shard_dir(index);
        let load = liveops_storage::latest_checkpoint(&StdFs, &dir)?;
        if let Some(checkpoint) = &load.checkpoint {
            let file = checkpoint.file.display().to_string();
            let mut failed = None;
            let decoded = decode_checkpoint(checkpoint.payload(), |record| {
                if failed.is_none() {
                    let line = json!({ "shard": index, "source": "checkpoint", "file": file, "lsn": checkpoint.lsn, "record": record });
                    failed = writeln!(out, "{line}").err();
                }
            });
            if let Some(e) = failed {
                return Err(e.into());
            }
            if let Err(e) = decoded {
                clean = false;
                writeln!(
                    out,
                    "{}",
                    json!({ "shard": index, "file": file, "error": e.to_string() })
                )?;
            }
        }
        let mut records = DumpIter::new(&StdFs, &dir)?;
        for raw in records.by_ref() {
            let raw = raw?;
            let line = match liveops_engine::codec::decode(raw.kind, &raw.payload) {
                Ok(record) => json!({
                    "shard": index, "source": "log", "file": raw.file.display().to_string(),
                    "lsn": raw.lsn, "offset": raw.offset, "record": record,
                }),
                Err(e) => {
                    clean = false;
                    json!({
                        "shard": index, "source": "log", "file": raw.file.display().to_string(),
                        "lsn": raw.lsn, "offset": raw.offset, "kind": raw.kind, "error": e.to_string(),
                    })
                }
            };
            writeln!(out, "{line}")?;
        }
        if let Some(damage) = records.damage() {
            clean = false;
            writeln!(
                out,
                "{}",
                json!({
                    "shard": index, "damage": format!("{:?}", damage.kind),
                    "file": damage.file.display().to_string(), "offset": damage.offset,
                    "reason": format!("{:?}", damage.reason),
                })
            )?;
        }
    }
    Ok(clean)
}
