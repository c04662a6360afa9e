//! Leaderboard reads. Every shard ranks its own players; a page is the merge of each
//! shard's best `offset + limit`, and a global rank is one plus the sum over shards of
//! entries ranked ahead. Each read first lets the shard roll its windows, so a read
//! right after a boundary sees the new period.

use std::collections::BTreeMap;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::json;

use super::{mesh_error, only, player_id, unknown_route, App, Outcome};
use crate::http::{json_response, ApiError, Query};
use liveops_engine::board::{merge_sorted, BoardKey};
use liveops_engine::shard_of;
use liveops_engine::window::WindowKind;

/// Largest page.
const PAGE_LIMIT_MAX: usize = 1000;
/// Deepest offset: with the page limit, what closed periods keep per shard
/// (`Policy::history_entries_max`), so live and closed boards page alike.
const PAGE_OFFSET_MAX: usize = 10_000;
/// Most neighbours each side for a player's rank.
const AROUND_MAX: usize = 50;

pub(super) async fn route(
    app: &Arc<App>,
    segments: &[&str],
    req: Request<Incoming>,
) -> (&'static str, Outcome) {
    let label = match segments {
        ["leaderboard"] => "/leaderboard",
        ["leaderboard", "history"] => "/leaderboard/history",
        ["leaderboard", "players", _] => "/leaderboard/players/{playerId}",
        _ => return unknown_route(),
    };
    if let Err(e) = only(req.method(), Method::GET) {
        return (label, Err(e));
    }
    let query = Query::parse(req.uri().query());
    let outcome = match segments {
        ["leaderboard", "players", id] => player_rank(app, id, &query).await,
        ["leaderboard", "history"] => history(app, &query).await,
        _ => page(app, &query).await,
    };
    (label, outcome)
}

fn window(app: &App, query: &Query) -> Result<WindowKind, ApiError> {
    let raw = query.get("window").unwrap_or("weekly");
    let invalid = |message: String| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message).with_field("window")
    };
    let kind: WindowKind = raw.parse().map_err(invalid)?;
    if !app.policy.windows.contains(&kind) {
        return Err(invalid(format!(
            "window {kind} is not enabled (LB_WINDOWS)"
        )));
    }
    Ok(kind)
}

/// One shard's slice of a board page.
struct Slice {
    period: String,
    closed: bool,
    entries: Vec<BoardKey>,
    updated_ms: u64,
}

async fn page(app: &App, query: &Query) -> Outcome {
    let kind = window(app, query)?;
    let limit = query.int("limit", app.lb_topn, 1..=PAGE_LIMIT_MAX)?;
    let offset = query.int("offset", 0, 0..=PAGE_OFFSET_MAX)?;
    let period = query.get("period").map(str::to_owned);
    let wanted = offset + limit;
    let slices = app
        .mesh
        .read_all(move |s, now_ms| {
            s.roll_windows(now_ms);
            let board = s.board(kind).expect("configured window");
            match &period {
                Some(p) if *p != board.period.name => board.closed(p).map(|c| Slice {
                    period: c.name.clone(),
                    closed: true,
                    entries: c.entries.iter().take(wanted).cloned().collect(),
                    updated_ms: c.closed_ms,
                }),
                _ => Some(Slice {
                    period: board.period.name.clone(),
                    closed: false,
                    entries: board.top(wanted),
                    updated_ms: board.updated_ms,
                }),
            }
        })
        .await
        .map_err(mesh_error)?;
    let slices: Vec<Slice> = slices.into_iter().flatten().collect();
    let Some(first) = slices.first() else {
        return Err(ApiError::not_found(
            "period_not_found",
            "that period is neither current nor among the kept closed periods",
        ));
    };
    let (period, closed) = (first.period.clone(), first.closed);
    let updated_ms = slices.iter().map(|s| s.updated_ms).max().unwrap_or(0);
    let merged = merge_sorted(slices.into_iter().map(|s| s.entries).collect(), wanted);
    let entries: Vec<_> = merged
        .iter()
        .enumerate()
        .skip(offset)
        .map(|(i, key)| json!({ "rank": i + 1, "playerId": &*key.player, "score": key.score() }))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "window": kind.as_str(), "season": app.policy.season, "period": period, "closed": closed,
            "entries": entries, "updatedAt": updated_ms / 1000,
        }),
    ))
}

async fn history(app: &App, query: &Query) -> Outcome {
    let kind = window(app, query)?;
    let per_shard = app
        .mesh
        .read_all(move |s, now_ms| {
            s.roll_windows(now_ms);
            let board = s.board(kind).expect("configured window");
            board
                .history()
                .map(|c| (c.name.clone(), c.closed_ms))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(mesh_error)?;
    let mut periods: BTreeMap<String, u64> = BTreeMap::new();
    for (name, closed_ms) in per_shard.into_iter().flatten() {
        let at = periods.entry(name).or_insert(closed_ms);
        *at = (*at).min(closed_ms);
    }
    let mut list: Vec<(String, u64)> = periods.into_iter().collect();
    list.sort_by_key(|(_, closed_ms)| std::cmp::Reverse(*closed_ms));
    let periods: Vec<_> = list
        .into_iter()
        .map(|(name, at)| json!({ "period": name, "closedAt": at / 1000 }))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "window": kind.as_str(), "periods": periods }),
    ))
}

async fn player_rank(app: &App, raw_id: &str, query: &Query) -> Outcome {
    let kind = window(app, query)?;
    let around = query.int("around", 0, 0..=AROUND_MAX)?;
    let id = player_id(raw_id, "playerId")?;
    let home = shard_of(&id, app.mesh.shards());
    let owned = id.clone();
    let (key, period) = app
        .mesh
        .read(home, move |s, now_ms| {
            s.roll_windows(now_ms);
            let board = s.board(kind).expect("configured window");
            (board.key_of(&owned), board.period.name.clone())
        })
        .await
        .map_err(mesh_error)?;
    let key = key.ok_or_else(|| {
        ApiError::not_found("player_not_found", "the player has no score in this window")
    })?;
    let probe = key.clone();
    let parts = app
        .mesh
        .read_all(move |s, _| {
            let board = s.board(kind).expect("configured window");
            (board.count_ahead(&probe), board.around(&probe, around))
        })
        .await
        .map_err(mesh_error)?;
    let ahead: usize = parts.iter().map(|(n, _)| n).sum();
    let rank = ahead + 1;
    let mut nearby: Vec<BoardKey> = parts.into_iter().flat_map(|(_, keys)| keys).collect();
    nearby.push(key.clone());
    nearby.sort_unstable();
    let me = nearby
        .binary_search(&key)
        .expect("the player's own key is in the list");
    let from = me.saturating_sub(around);
    let to = (me + around + 1).min(nearby.len());
    let neighbours: Vec<_> = nearby[from..to]
        .iter()
        .enumerate()
        .map(|(j, k)| json!({ "rank": rank + from + j - me, "playerId": &*k.player, "score": k.score() }))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "window": kind.as_str(), "season": app.policy.season, "period": period,
            "playerId": id, "rank": rank, "score": key.score(), "neighbours": neighbours,
        }),
    ))
}
