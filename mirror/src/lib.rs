//! # liveops-mirror
//!
//! The change feed: one reader per shard follows that shard's write-ahead log from a
//! cursor on and hands its records, decoded and in log order, to *sinks* — mirrors of
//! the engine's state elsewhere (Redis sorted sets, Postgres tables) and message buses.
//! The log is already the ordered record of every state change, so the feed adds no
//! work to the shard: the only thing the write path does for it is publish its durable
//! LSN (one atomic store per commit, in `liveops_storage::Wal`), and only when a feed is
//! attached.
//!
//! Sinks: [`redis::RedisSink`] (`REDIS_URL`) and [`postgres::PostgresSink`] (`DB_URL`);
//! the message-bus sinks come next, on the same interface. The
//! engine attaches a [`liveops_storage::LogWatch`] to a shard's log only when a sink is
//! configured; with none, the log behaves exactly as before.
//!
//! ## Pieces
//!
//! * [`feed::FeedReader`] follows one shard's directory (`<dir>/<first_lsn>.wal`
//!   segments, CRC-framed records) from a [`Cursor`]. It never reads past the durable
//!   LSN the log publishes on its [`LogWatch`](liveops_storage::LogWatch), so it never
//!   hands out a record a power loss could take back, and never decodes the torn or
//!   half-written tail of a group in progress. It follows segment rollover, and if the
//!   segment holding its position was deleted it reports a [`Gap`] — never a silent skip.
//! * [`sink::Sink`] is the whole interface a sink implements: `name`, `cursor(shard)`
//!   (where the sink's own durable state ends), `apply(shard, items)`, and optionally
//!   `idle()` for periodic work (snapshots).
//! * [`state::EngineState`] is what a sink may ask the running engine (rebuilds,
//!   standings), answered in chunks on the shards' read budget.
//! * [`bus`] forwards the feed to message buses: [`bus::nats::NatsSink`] (JetStream),
//!   [`bus::sqs::SqsSink`] (an SQS FIFO queue) and [`bus::servicebus::ServiceBusSink`]
//!   (an Azure Service Bus queue over AMQP 1.0), one versioned JSON envelope per record
//!   (`api/bus-envelope.schema.json`), cursors in a file of their own
//!   ([`bus::cursor_file`]) stored after the broker's acks.
//! * [`sink::SinkRunner`] does one synchronous pass over the shards for one sink;
//!   [`sink::SinkDriver`] runs it on the sink's own thread, in batches of at most
//!   `batch_items_max` items, with exponential backoff and jitter after a failure. A
//!   shard never waits on a sink.
//!
//! ## Delivery guarantees
//!
//! * **Latency**: a record reaches the feed once it is durable — at its group's fsync
//!   with `DURABILITY=fsync`, within `FSYNC_INTERVAL_MS` with `DURABILITY=batch` — plus
//!   the driver's idle poll ([`sink::DriverConfig::idle_poll`], 5 ms by default).
//! * **Order**: per shard, in LSN order. Across shards there is no order (there is none
//!   in the engine either: a player lives on one shard).
//! * **At least once**: the sink stores its cursor (Postgres: in the same transaction as
//!   the rows). After any failure the runner forgets its position and resumes from
//!   [`sink::Sink::cursor`], so an item applied but whose cursor was not stored comes
//!   again. Sinks de-duplicate by [`RecordId`] or write idempotently; exactly-once is the
//!   sink's cursor-with-rows transaction on top of this.
//! * **No silent loss**: a record the log no longer holds is reported as a [`Gap`] in the
//!   sink's batch, logged at warn and counted in [`sink::SinkStats::gaps`]. The sink must
//!   make it visible (metric, a `mirror_gaps` row) and, where it can, rebuild from engine
//!   state (Redis).
//!
//! ## Retention: `MIRROR_RETAIN_MB`
//!
//! A checkpoint normally deletes every log segment no kept checkpoint needs. With sinks,
//! each sink's runner holds a [`liveops_storage::RetentionHold`] per shard at the first
//! LSN after its cursor (its stored cursor, advanced only after `apply` succeeded), and a
//! checkpoint keeps every segment holding an LSN at or after the lowest hold, as long as
//! the segments kept only for the holds total at most the budget: `MIRROR_RETAIN_MB` per
//! shard, default 1024 MiB (the engine reads that key when it gains its first sink).
//! Over the budget the oldest held segments are deleted anyway — a sink that far behind
//! must not fill the disk and stop ingestion — and
//! [`LogWatch::over_budget_segments`](liveops_storage::LogWatch::over_budget_segments)
//! counts it. The sink then meets the missing records as a [`Gap`] with
//! [`GapReason::SegmentsDeleted`]. Without sinks there is no watch, no hold and no
//! budget: today's behaviour, at zero cost.
//!
//! ## Ids and cursors across re-sharding (`SHARDS` changes)
//!
//! Changing `SHARDS` re-shards the data directory into a new layout generation
//! (`DATA_DIR/gen-G+1`, see `net/src/layout.rs`): every old shard's state is routed to
//! the new shards and written as their first checkpoints, and the old generation's logs
//! are removed. LSNs restart in the new generation, so `(shard, lsn)` alone would name
//! different records before and after. Therefore:
//!
//! * A record's id is [`RecordId`] `g{generation}-s{shard}-{lsn}`: the generation is part
//!   of it, so ids of two generations never collide and a sink de-duplicating on it can
//!   never drop a new record as a duplicate of an old one (no loss) nor store one record
//!   twice under two ids within a generation (no duplicate).
//! * A [`Cursor`] carries its generation (`g{generation}-{lsn}`). A cursor from an older
//!   generation is detected when the reader opens: the sink gets a [`Gap`] with
//!   [`GapReason::OlderGeneration`] from its old cursor to the new generation's start,
//!   then the new generation's log. The new log starts after the re-shard checkpoints,
//!   so it continues with a [`GapReason::SegmentsDeleted`] gap up to the checkpoint LSN:
//!   the state those records built is in the checkpoint, and a sink that mirrors state
//!   (Redis) rebuilds from engine state; one that mirrors history (Postgres events) has
//!   them all already if it had drained the old generation, and records the gap if not.
//! * So the operator's rule for an exact history mirror across a `SHARDS` change is: let
//!   the sinks drain (lag 0) before stopping the engine for the change; the re-shard
//!   itself writes no log records. A cursor from a *newer* generation than the log's
//!   (a data directory restored from an older backup) is refused with
//!   [`FeedError::CursorFromNewerGeneration`]: the sink is not fed and an operator
//!   decides.
//! * A later cluster mode that moves players between machines should give records ids
//!   from fixed logical partitions rather than from the hosting shard; `RecordId`'s
//!   `shard` would then be that partition and the rules above stay the same.

pub mod bus;
pub mod feed;
pub mod payload;
pub mod postgres;
pub mod redis;
pub mod sink;
pub mod state;

pub use self::redis::{DurableCursor, RedisConfig, RedisSink};
pub use feed::{
    Cursor, CursorParseError, FeedError, FeedItem, FeedReader, FeedRecord, Gap, GapReason,
    RecordId, ShardLog,
};
pub use postgres::{
    parse_cron, PostgresConfig, PostgresError, PostgresSink, SnapshotSchedule, SCHEMA_VERSION,
};
pub use sink::{
    Backoff, DriverConfig, RunError, Sink, SinkDriver, SinkError, SinkRunner, SinkState, SinkStats,
};
pub use state::{BoardChunk, EngineState, Standings, StateError};

/// Default of `MIRROR_RETAIN_MB`: log bytes per shard kept for lagging sinks beyond what
/// checkpoints need.
pub const MIRROR_RETAIN_MB_DEFAULT: u64 = 1024;
