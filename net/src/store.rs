//! One shard's durable storage: the engine's records in the shard's write-ahead log,
//! checkpoints of its state, and recovery of both.
//!
//! * Each worker turn's journal is appended and committed as one group (one write, one
//!   `fdatasync` with `DURABILITY=fsync`) before any reply of that turn is sent.
//! * A checkpoint is the shard's [`Shard::snapshot`] records, each framed as
//!   `kind u8 | len varint | payload`, in one checkpoint file; when to take one is the
//!   caller's choice (the engine's is in `committer.rs`).
//! * Recovery loads the newest valid checkpoint, then streams the log after it through
//!   [`Shard::apply`]. Accepted events carrying an idempotency key are remembered
//!   ([`KeyedEvents`]) so keys whose completion was cut off can be rebuilt: those after
//!   the checkpoint, and those it covers that the log still holds ([`note_covered_keys`]):
//!   a key's completion is logged on its own shard after the events, so a checkpoint of
//!   the events' shard may cover them before the completion is durable.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use liveops_engine::codec::{self, DecodeError, EventKey, KeyRefView, Reader, Writer};
use liveops_engine::shard::{Record, Shard};
use liveops_storage::{
    latest_checkpoint, read_covered, CheckpointLoad, CommitInfo, FileSystem, RecoveryReport, Wal,
    WalOptions,
};

/// Largest checkpoint payload this engine writes or reads.
const CHECKPOINT_BYTES_MAX: usize = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Storage(#[from] liveops_storage::Error),
    #[error("{file}: record {lsn} does not decode: {source}")]
    BadRecord {
        file: PathBuf,
        lsn: u64,
        source: DecodeError,
    },
    #[error("{file}: checkpoint does not decode: {source}")]
    BadCheckpoint { file: PathBuf, source: DecodeError },
    #[error("checkpoint of {bytes} bytes exceeds {CHECKPOINT_BYTES_MAX}")]
    CheckpointTooLarge { bytes: usize },
    #[error("{path}: {message}")]
    Layout { path: PathBuf, message: String },
}

/// Events of requests with an idempotency key, seen during recovery: key → what
/// recovery knows of the key's latest request (a key used again after it expired has
/// events of several requests in the log; only the latest may need rebuilding).
pub type KeyedEvents = HashMap<String, KeyedRequest>;

#[derive(Debug, Clone, PartialEq)]
pub struct KeyedRequest {
    /// When the request reserved its key (its events' `KeyRef::reserved_ms`): tells
    /// this request's events from those of an earlier use of the key.
    pub reserved_ms: u64,
    pub fingerprint: [u8; 32],
    /// When its first event was accepted: the key's TTL runs from there.
    pub at_ms: u64,
    /// (index in the batch, player, event type) of each accepted event.
    pub events: Vec<(u32, String, &'static str)>,
}

/// Notes a replayed record's idempotency key, if any.
pub fn note_keyed(keyed: &mut KeyedEvents, record: &Record) {
    if let Record::EventAccepted {
        player,
        event,
        at_ms,
        key: Some(k),
        ..
    } = record
    {
        let key = KeyRefView {
            key: &k.key,
            fingerprint: k.fingerprint,
            index: k.index,
            reserved_ms: k.reserved_ms,
        };
        note_event_key(
            keyed,
            EventKey {
                player,
                type_name: event.type_name(),
                at_ms: *at_ms,
                key,
            },
        );
    }
}

fn note_event_key(keyed: &mut KeyedEvents, event: EventKey<'_>) {
    let request = KeyedRequest {
        reserved_ms: event.key.reserved_ms,
        fingerprint: event.key.fingerprint,
        at_ms: event.at_ms,
        events: vec![(event.key.index, event.player.to_owned(), event.type_name)],
    };
    add_keyed(keyed, event.key.key.to_owned(), request);
}

/// Notes the idempotency keys of the events `load`'s checkpoint covers that `dir`'s log
/// still holds (back to the previous checkpoint, whose fallback keeps them). The events
/// are in the checkpoint's state already; only the requests they name are read. Reading
/// is best effort: damage there is logged and ends it, and only costs what it hides.
pub fn note_covered_keys(
    fs: &dyn FileSystem,
    dir: &Path,
    load: &CheckpointLoad,
    keyed: &mut KeyedEvents,
) -> Result<(), StoreError> {
    let Some(checkpoint) = &load.checkpoint else {
        return Ok(());
    };
    let after_lsn = load.previous_lsn.unwrap_or(0);
    let mut undecodable = 0u64;
    let read = read_covered(fs, dir, after_lsn, checkpoint.lsn, |raw| {
        if raw.kind != codec::kind::EVENT_ACCEPTED {
            return;
        }
        match codec::event_key(raw.payload) {
            Ok(Some(event)) => note_event_key(keyed, event),
            Ok(None) => {}
            Err(_) => undecodable += 1,
        }
    })?;
    if read.stopped.is_some() || undecodable > 0 {
        tracing::warn!(
            dir = %dir.display(),
            stopped = ?read.stopped,
            undecodable,
            "the log a checkpoint covers was read back only in part: keys whose completion \
             a crash cut off may be forgotten"
        );
    }
    Ok(())
}

/// Adds what is known of one request to `keyed`: a later use of the key replaces what
/// an earlier one left, an earlier one is ignored, the same one is merged.
fn add_keyed(keyed: &mut KeyedEvents, key: String, request: KeyedRequest) {
    match keyed.entry(key) {
        Entry::Vacant(slot) => {
            slot.insert(request);
        }
        Entry::Occupied(mut slot) => {
            let known = slot.get_mut();
            if request.reserved_ms > known.reserved_ms {
                *known = request;
            } else if request.reserved_ms == known.reserved_ms {
                known.at_ms = known.at_ms.min(request.at_ms);
                known.events.extend(request.events);
            }
        }
    }
}

/// What a recovery found.
pub struct Recovered {
    pub shard: Shard,
    pub store: ShardStore,
    pub report: RecoveryReport,
    pub checkpoint_lsn: u64,
    pub keyed: KeyedEvents,
    pub took: Duration,
}

pub struct ShardStore {
    wal: Wal,
    /// Reused encode buffer: no allocation per record in steady state.
    buf: Vec<u8>,
}

impl ShardStore {
    /// Rebuilds `shard` (fresh, empty) from `dir` and opens the log for appending.
    pub fn recover(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        config: WalOptions,
        mut shard: Shard,
    ) -> Result<Recovered, StoreError> {
        let started = Instant::now();
        let load = latest_checkpoint(&*fs, dir)?;
        for skipped in &load.skipped {
            tracing::warn!(dir = %dir.display(), "skipped an invalid checkpoint: {skipped:?}");
        }
        let mut checkpoint_lsn = 0;
        shard.begin_replay();
        if let Some(checkpoint) = &load.checkpoint {
            decode_checkpoint(checkpoint.payload(), |record| shard.apply(record)).map_err(
                |source| StoreError::BadCheckpoint {
                    file: checkpoint.file.clone(),
                    source,
                },
            )?;
            checkpoint_lsn = checkpoint.lsn;
        }
        let mut keyed = KeyedEvents::new();
        note_covered_keys(&*fs, dir, &load, &mut keyed)?;
        let mut recovery = Wal::recover(fs, dir, config.clone(), checkpoint_lsn)?;
        while let Some(raw) = recovery.next_record()? {
            let record =
                codec::decode(raw.kind, raw.payload).map_err(|source| StoreError::BadRecord {
                    file: dir.to_path_buf(),
                    lsn: raw.lsn,
                    source,
                })?;
            note_keyed(&mut keyed, &record);
            shard.apply(record);
        }
        shard.finish_replay();
        let (mut wal, report) = recovery.finish()?;
        if load.checkpoint.is_none() && report.records_replayed == 0 {
            // A new shard directory starts with a checkpoint of the empty shard: it
            // records the periods the boards start in, so a later replay of this log
            // rebuilds them in those periods rather than in the restart's.
            wal.checkpoint(wal.written_lsn(), &encode_checkpoint(&shard)?)?;
        }
        // Replay re-applies records whose audit lines were printed in the previous run.
        shard.take_audit_outbox();
        Ok(Recovered {
            shard,
            store: ShardStore {
                wal,
                buf: Vec::with_capacity(4096),
            },
            report,
            checkpoint_lsn,
            keyed,
            took: started.elapsed(),
        })
    }

    /// Appends `records` as one group and commits it. On error the log is poisoned and
    /// nothing of the group may be acknowledged.
    pub fn commit(&mut self, records: &[Record]) -> Result<(), StoreError> {
        self.write_records(records, Wal::commit)
    }

    /// Appends `records` as one group and writes it without its fsync (see
    /// [`Wal::commit_unsynced`]): for a turn that acknowledges nothing. On error the log
    /// is poisoned.
    pub fn commit_unsynced(&mut self, records: &[Record]) -> Result<(), StoreError> {
        self.write_records(records, Wal::commit_unsynced)
    }

    fn write_records(
        &mut self,
        records: &[Record],
        write_group: fn(&mut Wal) -> liveops_storage::Result<CommitInfo>,
    ) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        for record in records {
            self.buf.clear();
            let kind = codec::encode(record, &mut self.buf);
            match self.wal.append(kind, &self.buf) {
                // More than one log group holds: write it as several, each written the
                // same way before any answer goes out.
                Err(liveops_storage::Error::GroupFull { .. }) => {
                    write_group(&mut self.wal)?;
                    self.wal.append(kind, &self.buf)?;
                }
                appended => {
                    appended?;
                }
            }
        }
        write_group(&mut self.wal)?;
        Ok(())
    }

    /// How long until written records are due for their fsync, if any wait for one
    /// (see [`Wal::sync_due_in`]).
    pub fn sync_due_in(&self) -> Option<Duration> {
        self.wal.sync_due_in(Instant::now())
    }

    /// Fsyncs every written record now.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.wal.sync()?;
        Ok(())
    }

    /// With batch durability: fsyncs if the interval has passed.
    pub fn sync_if_due(&mut self) -> Result<(), StoreError> {
        self.wal.sync_if_due(Instant::now())?;
        Ok(())
    }

    /// Writes a checkpoint of `shard` as of everything committed, then drops the log it
    /// covers. Returns the checkpoint's size in bytes.
    pub fn checkpoint(&mut self, shard: &Shard) -> Result<u64, StoreError> {
        self.write_checkpoint(&encode_checkpoint(shard)?)
    }

    /// Writes `payload` (a shard's state as of everything committed so far) as a
    /// checkpoint, then drops the log it covers. Returns its size in bytes.
    pub fn write_checkpoint(&mut self, payload: &[u8]) -> Result<u64, StoreError> {
        let written = self.wal.checkpoint(self.wal.written_lsn(), payload)?;
        Ok(written.bytes)
    }

    pub fn dir(&self) -> &Path {
        self.wal.dir()
    }

    /// The last log position known durable.
    pub fn durable_lsn(&self) -> u64 {
        self.wal.durable_lsn()
    }

    /// Log segment files on disk.
    pub fn segment_count(&self) -> usize {
        self.wal.segment_count()
    }

    /// Lets the change feed (`liveops-mirror`) follow this shard's log: the log
    /// publishes its durable LSN to `watch` after every commit or sync, and checkpoints
    /// keep the segments the watch's sinks still need, within its budget. Attached only
    /// when a sink is configured; without it nothing changes.
    pub fn watch_log(&mut self, watch: Arc<liveops_storage::LogWatch>) {
        self.wal.set_watch(watch);
    }
}

/// A shard's state as a checkpoint payload.
pub fn encode_checkpoint(shard: &Shard) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(64 * 1024);
    let mut payload = Vec::with_capacity(256);
    for record in shard.snapshot() {
        payload.clear();
        let kind = codec::encode(&record, &mut payload);
        out.push(kind);
        Writer(&mut out).bytes(&payload);
        if out.len() > CHECKPOINT_BYTES_MAX {
            return Err(StoreError::CheckpointTooLarge { bytes: out.len() });
        }
    }
    Ok(out)
}

/// Feeds each record of a checkpoint payload to `apply`, in order.
pub fn decode_checkpoint(bytes: &[u8], mut apply: impl FnMut(Record)) -> Result<(), DecodeError> {
    let mut reader = Reader::new(bytes);
    while reader.remaining() > 0 {
        let kind = reader.u8()?;
        let payload = reader.bytes()?;
        apply(codec::decode(kind, payload)?);
    }
    Ok(())
}

/// Adds another shard's keyed events to `into` (a batch may span shards).
pub fn merge_keyed(into: &mut KeyedEvents, from: KeyedEvents) {
    for (key, request) in from {
        add_keyed(into, key, request);
    }
}

/// The response a rebuilt key replays. The original response was never sent (the crash
/// came first), so this one lists what the log proves was applied, marked `recovered`;
/// events the log does not hold were not applied.
pub fn recovered_response(request: &KeyedRequest) -> liveops_engine::idempotency::StoredResponse {
    let mut events = request.events.clone();
    events.sort_by_key(|(index, _, _)| *index);
    let body = match events.as_slice() {
        [(0, player, kind)] => serde_json::json!({
            "status": "accepted", "playerId": player, "type": kind, "recovered": true,
        }),
        _ => serde_json::json!({
            "accepted": events.len(),
            "rejected": 0,
            "recovered": true,
            "results": events
                .iter()
                .map(|(index, player, kind)| serde_json::json!({
                    "index": index, "status": 202, "playerId": player, "type": kind,
                }))
                .collect::<Vec<_>>(),
        }),
    };
    liveops_engine::idempotency::StoredResponse {
        status: 202,
        body: serde_json::to_vec(&body).expect("JSON values serialize"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use liveops_engine::event::{Event, EventKind};
    use liveops_engine::policy::Policy;
    use liveops_engine::signing::ReceiptSigner;
    use liveops_storage::fault::FaultFs;
    use liveops_storage::StdFs;

    fn empty() -> Shard {
        let policy = Policy {
            rate_limit_per_s: 1_000_000,
            ..Policy::default()
        };
        Shard::new(policy, ReceiptSigner::new(&[3; 32]), 1_795_521_600_000)
    }

    fn keyed_event(player: &str, index: u32, reserved_ms: u64, at_ms: u64) -> Record {
        Record::EventAccepted {
            player: player.into(),
            event: EventKind::Progression {
                delta_xp: 1,
                activity: None,
            },
            ts: 1,
            at_ms,
            seq: at_ms,
            flag: None,
            evidence: None,
            key: Some(liveops_engine::shard::KeyRef {
                key: "K".into(),
                fingerprint: [4; 32],
                index,
                reserved_ms,
            }),
            totals: None,
            replay_id: None,
        }
    }

    /// Issue 9, item 2, crash cut: a key's events from an earlier, expired use must not
    /// be merged into the request whose completion was cut, whatever order the shards'
    /// logs are read in.
    #[test]
    fn only_the_latest_use_of_a_key_is_rebuilt() {
        let earlier = keyed_event("alice", 0, 1_000, 1_001);
        let latest = [
            keyed_event("bob", 0, 9_000, 9_002),
            keyed_event("carol", 1, 9_000, 9_001),
        ];
        let mut shard_a = KeyedEvents::new();
        note_keyed(&mut shard_a, &earlier);
        note_keyed(&mut shard_a, &latest[0]);
        let mut shard_b = KeyedEvents::new();
        note_keyed(&mut shard_b, &latest[1]);
        note_keyed(&mut shard_b, &earlier);
        for (first, second) in [(&shard_a, &shard_b), (&shard_b, &shard_a)] {
            let mut keyed = first.clone();
            merge_keyed(&mut keyed, second.clone());
            let request = &keyed["K"];
            assert_eq!((request.reserved_ms, request.at_ms), (9_000, 9_001));
            let mut players: Vec<&str> = request.events.iter().map(|e| e.1.as_str()).collect();
            players.sort_unstable();
            assert_eq!(players, ["bob", "carol"]);
        }
    }

    /// What the engine commits is what the change feed hands out, decoded, and only
    /// once it is durable.
    #[test]
    fn the_change_feed_reads_back_what_the_store_commits() {
        use liveops_mirror::{Cursor, FeedItem, FeedReader, ShardLog};
        let dir = std::env::temp_dir().join(format!(
            "liveops-store-feed-{}-{}",
            std::process::id(),
            unix_nanos()
        ));
        let Recovered {
            mut shard,
            mut store,
            ..
        } = ShardStore::recover(Arc::new(StdFs), &dir, WalOptions::default(), empty()).unwrap();
        let watch = liveops_storage::LogWatch::new(1 << 20);
        store.watch_log(Arc::clone(&watch));
        let log = ShardLog {
            generation: 1,
            shard: 0,
            dir: dir.clone(),
            watch: Arc::clone(&watch),
        };
        let mut reader = FeedReader::open(log, Cursor::NEW).unwrap();
        let mut items = Vec::new();
        assert_eq!(
            reader.read(100, &mut items).unwrap(),
            0,
            "nothing committed yet"
        );
        for i in 0..3u64 {
            let event = Event {
                player_id: format!("player_{i}"),
                ts: 1,
                kind: EventKind::Progression {
                    delta_xp: 1 + i,
                    activity: None,
                },
                replay_id: None,
            };
            shard.submit_event(event, None, 1_795_521_600_000 + i);
        }
        let journal = shard.take_journal();
        store.commit(&journal).unwrap();
        reader.read(100, &mut items).unwrap();
        let read: Vec<Record> = items
            .into_iter()
            .map(|item| match item {
                FeedItem::Record(r) => r.record,
                FeedItem::Gap(gap) => panic!("unexpected {gap:?}"),
            })
            .collect();
        assert_eq!(read, journal);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn unix_nanos() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    }

    /// A key's completion is logged on its own shard after the events' shard logged the
    /// events. If the events' shard checkpoints in between and the engine dies before the
    /// completion is durable, the events are in the checkpoint's state only: recovery
    /// must still know their key (from the log the checkpoint covers), or a retry with
    /// the key would apply them again.
    #[test]
    fn keys_of_events_a_checkpoint_covers_are_known_after_a_crash() {
        let fs: Arc<dyn FileSystem> = Arc::new(FaultFs::new(2));
        let dir = Path::new("/shard-1");
        let config = WalOptions::default();
        let Recovered {
            shard, mut store, ..
        } = ShardStore::recover(fs.clone(), dir, config.clone(), empty()).unwrap();
        let events = [
            keyed_event("bob", 0, 9_000, 9_002),
            keyed_event("carol", 1, 9_000, 9_003),
        ];
        store.commit(&events).unwrap();
        store.checkpoint(&shard).unwrap();
        drop(store);
        let recovered = ShardStore::recover(fs, dir, config, empty()).unwrap();
        assert_eq!(
            recovered.report.records_replayed, 0,
            "the checkpoint covers them"
        );
        let request = recovered
            .keyed
            .get("K")
            .expect("the key is known from the log the checkpoint covers");
        assert_eq!((request.reserved_ms, request.at_ms), (9_000, 9_002));
        assert_eq!(request.events.len(), 2);
    }

    #[test]
    fn a_group_larger_than_the_log_allows_is_written_as_several() {
        let fs: Arc<dyn FileSystem> = Arc::new(FaultFs::new(1));
        let dir = Path::new("/shard-0");
        let config = WalOptions {
            group_bytes_max: 4096,
            segment_bytes_max: 64 * 1024,
            ..WalOptions::default()
        };
        let Recovered {
            mut shard,
            mut store,
            ..
        } = ShardStore::recover(fs.clone(), dir, config.clone(), empty()).unwrap();
        for i in 0..500u64 {
            let event = Event {
                player_id: format!("player_{i}"),
                ts: 1,
                kind: EventKind::Progression {
                    delta_xp: 1 + i,
                    activity: None,
                },
                replay_id: None,
            };
            shard.submit_event(event, None, 1_795_521_600_000 + i);
        }
        let journal = shard.take_journal();
        assert!(journal.len() == 500);
        store
            .commit(&journal)
            .expect("an oversized group is split, not refused");
        drop(store);
        let recovered = ShardStore::recover(fs, dir, config, empty()).unwrap();
        assert_eq!(recovered.report.records_replayed, 500);
        assert_eq!(recovered.shard.players_len(), 500);
    }
}
