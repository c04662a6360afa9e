//! The engine's state as the change feed's sinks read it: [`MeshState`], the
//! [`EngineState`] of the running engine, answered by the shards' read queues.

use std::sync::Arc;

use liveops_engine::board::{merge_sorted, BoardKey};
use liveops_engine::shard::PlayerTotals;
use liveops_engine::window::WindowKind;
use liveops_mirror::{BoardChunk, EngineState, Standings, StateError};

use crate::mesh::{Mesh, MeshError};

/// Sinks' reads of the running engine, through the shards' read queues (each read runs
/// within a shard's per-turn read budget, so a rebuild never pauses ingestion).
pub struct MeshState {
    pub mesh: Arc<Mesh>,
}

fn state_error(e: MeshError) -> StateError {
    match e {
        MeshError::Overloaded => StateError::Busy,
        MeshError::Stopped | MeshError::Failed => StateError::Stopped,
    }
}

impl EngineState for MeshState {
    fn shards(&self) -> u32 {
        u32::try_from(self.mesh.shards()).expect("shard counts fit u32")
    }

    fn board_chunk(
        &self,
        shard: u32,
        window: WindowKind,
        after: Option<BoardKey>,
        limit: usize,
    ) -> Result<Option<BoardChunk>, StateError> {
        self.mesh
            .read_blocking(shard as usize, move |s, now_ms| {
                s.roll_windows(now_ms);
                s.board_chunk(window, after.as_ref(), limit)
                    .map(|(period, entries)| BoardChunk { period, entries })
            })
            .map_err(state_error)
    }

    fn players_chunk(
        &self,
        shard: u32,
        from: usize,
        limit: usize,
    ) -> Result<Vec<PlayerTotals>, StateError> {
        self.mesh
            .read_blocking(shard as usize, move |s, _| s.players_chunk(from, limit))
            .map_err(state_error)
    }

    fn standings(
        &self,
        window: WindowKind,
        period: Option<&str>,
        limit: usize,
    ) -> Result<Option<Standings>, StateError> {
        let mut found: Option<(String, bool)> = None;
        let mut lists = Vec::with_capacity(self.mesh.shards());
        for shard in 0..self.mesh.shards() {
            let period = period.map(str::to_owned);
            let part = self
                .mesh
                .read_blocking(shard, move |s, now_ms| {
                    s.roll_windows(now_ms);
                    let entries = s.board(window)?.period_entries(period.as_deref())?;
                    let top = entries.ranked().entries_from(0, limit);
                    Some((entries.name().to_owned(), entries.is_closed(), top))
                })
                .map_err(state_error)?;
            if let Some((name, closed, top)) = part {
                found.get_or_insert((name, closed));
                lists.push(top);
            }
        }
        Ok(found.map(|(period, closed)| Standings {
            period,
            closed,
            entries: merge_sorted(lists, limit),
        }))
    }
}
