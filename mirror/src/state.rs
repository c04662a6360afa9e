//! What a sink may ask the running engine: [`EngineState`].
//!
//! The log is the feed, but some sinks also need the engine's current state: Redis
//! rebuilds its sorted sets and progression hashes from it on connect, reconnect and
//! window rollover, and Postgres reads the standings it snapshots. The engine answers
//! these on the shards' read queues, within their per-turn read budget, in chunks, so a
//! rebuild never pauses ingestion.
//!
//! ## Rebuilding without a pause
//!
//! A chunked walk is not one consistent snapshot: writes land between chunks. It is made
//! exact by the log. Before the first chunk the sink notes the shard's durable LSN `L`
//! ([`crate::ShardLog::watch`]); every record after `L` is replayed after the walk. A
//! record carries the player's absolute totals (`Record::EventAccepted::totals`), so
//! replaying one the walk already saw writes the same value again, and one it did not
//! see brings the player up to date. Scores only grow, so a walk by rank
//! ([`EngineState::board_chunk`]) meets every entry that did not change during the walk
//! once; players are walked by table position, which never changes.

use liveops_engine::board::BoardKey;
use liveops_engine::shard::PlayerTotals;
use liveops_engine::window::{Period, WindowKind};

/// Why the engine could not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The shard's read queue is full: try again shortly.
    #[error("the shard is busy")]
    Busy,
    /// The engine is stopping, or the shard's storage failed.
    #[error("the engine is stopping")]
    Stopped,
}

/// One chunk of a walk over a shard's live board.
#[derive(Debug, Clone, PartialEq)]
pub struct BoardChunk {
    /// The board's live period when the chunk was read: a walk whose chunks disagree
    /// crossed a rollover and starts again.
    pub period: Period,
    /// Best first.
    pub entries: Vec<BoardKey>,
}

/// The best entries of one period across every shard.
#[derive(Debug, Clone, PartialEq)]
pub struct Standings {
    pub period: String,
    /// True for a closed period's final standings.
    pub closed: bool,
    /// Best first, at most the asked number.
    pub entries: Vec<BoardKey>,
}

/// The running engine, as sinks see it. Calls block the sink's thread (never a shard's).
pub trait EngineState: Send + Sync {
    /// Shards of the current layout generation.
    fn shards(&self) -> u32;
    /// Up to `limit` entries of `shard`'s live `window` board ranked after `after`
    /// (from the best when `None`); `None` if the window is not configured.
    fn board_chunk(
        &self,
        shard: u32,
        window: WindowKind,
        after: Option<BoardKey>,
        limit: usize,
    ) -> Result<Option<BoardChunk>, StateError>;
    /// `shard`'s players at table positions `from..from + limit`; fewer (none) at the
    /// end of the table.
    fn players_chunk(
        &self,
        shard: u32,
        from: usize,
        limit: usize,
    ) -> Result<Vec<PlayerTotals>, StateError>;
    /// The best `limit` entries of `window` in `period` (the live one when `None`)
    /// across all shards; `None` if the window is not configured or the closed period
    /// is no longer kept.
    fn standings(
        &self,
        window: WindowKind,
        period: Option<&str>,
        limit: usize,
    ) -> Result<Option<Standings>, StateError>;
}
