//! Leaderboard reads. Every shard ranks its own players, and a global rank is one plus
//! the sum over shards of entries ranked ahead. A page is found by a distributed
//! selection (`liveops_engine::page`): a few fan-outs of O(log n) work per shard find
//! where it starts, then each shard walks `limit` entries and the route merges them.
//! Each read first lets the shard roll its windows, so a read right after a boundary
//! sees the new period.

use std::collections::BTreeMap;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde::Serialize;
use serde_json::json;

use super::{hold_over_budget, mesh_error, only, player_id, unknown_route, App, Outcome};
use crate::heavy_work::{self, HEAVY_ITEMS_MIN};
use crate::host_budget::client_host;
use crate::http::{json_response, retry_after_s, ApiError, Query};
use crate::mesh::unix_now_ms;
use crate::runtime::PeerAddr;
use liveops_engine::board::{BoardKey, ClosedPeriod, PeriodEntries};
use liveops_engine::page::{
    count_ahead_each, cut_at, propose, walk, Page, RankedEntries, Selection,
};
use liveops_engine::shard_of;
use liveops_engine::window::WindowKind;

/// Largest page.
pub(crate) const PAGE_LIMIT_MAX: usize = 1000;
/// Deepest offset, as the API promises. A page's cost on each shard does not grow with
/// it: see `liveops_engine::page`.
const PAGE_OFFSET_MAX: usize = 1_000_000;
/// Selections started afresh when writes move the page between their fan-outs, before
/// the page is answered as the last one saw it (with the ranks it counted).
const PAGE_ATTEMPTS_MAX: usize = 3;
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
    if let Some(peer) = req.extensions().get::<PeerAddr>() {
        let cost = read_cost(segments, &query, app.lb_topn);
        let host = client_host(peer.0.ip());
        let take = || app.read_budget.take(host, cost, unix_now_ms());
        if let Err(wait_ms) = take() {
            // Paced: held until the host's budget has grown back (at most 1 s), then
            // served if it still holds the read's units (other reads of the host may
            // have taken them meanwhile), refused otherwise.
            let left_ms = hold_over_budget(wait_ms).await;
            let retried = if left_ms > 0 { Err(left_ms) } else { take() };
            if let Err(wait_ms) = retried {
                return (label, Err(read_budget_spent(wait_ms)));
            }
        }
    }
    let outcome = match segments {
        ["leaderboard", "players", id] => player_rank(app, id, &query).await,
        ["leaderboard", "history"] => history(app, &query).await,
        _ => page(app, &query).await,
    };
    (label, outcome)
}

/// Read units every leaderboard read costs besides its entries: its fan-outs to every
/// shard and its HTTP exchange.
const READ_UNITS_PER_REQUEST: u64 = 100;
/// Extra units of a page deep enough to need the distributed selection's rounds.
const READ_UNITS_SELECTION: u64 = 400;

/// What a read costs its client host's budget: one unit per entry it may return, plus
/// the fixed costs above. Malformed numbers cost the base only: they are refused next.
fn read_cost(segments: &[&str], query: &Query, lb_topn: usize) -> u64 {
    let number = |key: &str, default: usize| {
        query
            .get(key)
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(default)
    };
    let entries = match segments {
        ["leaderboard", "players", _] => 2 * number("around", 0).min(AROUND_MAX) + 1,
        ["leaderboard", "history"] => 0,
        _ => number("limit", lb_topn).min(PAGE_LIMIT_MAX),
    };
    let selection = match segments {
        ["leaderboard"] if number("offset", 0) > 0 => READ_UNITS_SELECTION,
        _ => 0,
    };
    READ_UNITS_PER_REQUEST + selection + entries as u64
}

fn read_budget_spent(wait_ms: u64) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "leaderboard reads from this client host are over READ_UNITS_PER_HOST_S",
    )
    .retry_after(retry_after_s(wait_ms))
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

/// What every shard says, with each fan-out, about the period it read.
struct PeriodInfo {
    /// `None` when the shard does not keep the asked closed period.
    name: Option<String>,
    closed: bool,
    updated_ms: u64,
    /// A closed period this shard cut to its best entries: its worst kept entry. Past
    /// it, the merged order could skip entries the shard did not keep.
    cut_after: Option<BoardKey>,
}

/// Reads one period of one window on every shard, and notices when the period read
/// changes between the fan-outs of one selection (a window rolled over).
struct PeriodReader<'a> {
    app: &'a App,
    kind: WindowKind,
    period: Option<Arc<str>>,
    /// The period the first fan-out read.
    seen: Option<String>,
    /// Set when a later fan-out read another period than the first.
    changed: bool,
    /// What the last fan-out said about the period: answers the page's metadata.
    last: Vec<PeriodInfo>,
}

impl PeriodReader<'_> {
    /// Runs `f` over the period's entries on every shard (an empty list where a shard
    /// does not keep the period); results in shard order.
    async fn read<R, F>(&mut self, f: F) -> Result<Vec<R>, ApiError>
    where
        R: Send + 'static,
        F: Fn(&dyn RankedEntries) -> R + Send + Sync + 'static,
    {
        let (kind, period, f) = (self.kind, self.period.clone(), Arc::new(f));
        let entries_max = self.app.policy.history_entries_max;
        let results = self
            .app
            .mesh
            .read_all(move |s, now_ms| {
                s.roll_windows(now_ms);
                let view = s.board(kind).expect("configured window");
                match view.period_entries(period.as_deref()) {
                    Some(entries) => {
                        let cut_after = match &entries {
                            PeriodEntries::Closed(c) if c.entries.len() >= entries_max => {
                                c.entries.last().cloned()
                            }
                            _ => None,
                        };
                        let info = PeriodInfo {
                            name: Some(entries.name().to_owned()),
                            closed: entries.is_closed(),
                            updated_ms: entries.updated_ms(),
                            cut_after,
                        };
                        (info, f(entries.ranked()))
                    }
                    None => {
                        let info = PeriodInfo {
                            name: None,
                            closed: true,
                            updated_ms: 0,
                            cut_after: None,
                        };
                        (info, f(&ClosedPeriod::empty()))
                    }
                }
            })
            .await
            .map_err(mesh_error)?;
        let (infos, values): (Vec<PeriodInfo>, Vec<R>) = results.into_iter().unzip();
        for name in infos.iter().filter_map(|i| i.name.as_ref()) {
            match &self.seen {
                None => self.seen = Some(name.clone()),
                Some(seen) => self.changed |= seen != name,
            }
        }
        self.last = infos;
        Ok(values)
    }
}

/// How one selection ended.
enum Selected {
    /// The page at the asked offset.
    Exact(Page),
    /// Writes (or a rollover) moved the page between the fan-outs: the page as the walks
    /// saw it, to answer once retries are exhausted.
    Moved(Page),
}

/// One distributed selection of the page at `offset` (see `liveops_engine::page`).
async fn select_page(
    reader: &mut PeriodReader<'_>,
    offset: usize,
    limit: usize,
) -> Result<Selected, ApiError> {
    let mut selection = Selection::new(offset, limit);
    while let Some(bounds) = selection.next_round() {
        let proposals = reader.read(move |e| propose(e, &bounds)).await?;
        let pivots = Arc::new(selection.pivots(&proposals));
        if pivots.is_empty() {
            continue;
        }
        let counted = pivots.clone();
        let counts = reader.read(move |e| count_ahead_each(e, &counted)).await?;
        selection.narrow(&pivots, &counts);
    }
    let Some((from, n)) = selection.walk_plan() else {
        let past_end = Page {
            first_rank: offset + 1,
            entries: Vec::new(),
        };
        return Ok(Selected::Exact(past_end));
    };
    let walks = reader.read(move |e| walk(e, from.as_ref(), n)).await?;
    let mut page = match selection.page(walks, n) {
        Ok(page) if !reader.changed => Selected::Exact(page),
        Ok(page) => Selected::Moved(page),
        Err(moved) => Selected::Moved(moved.observed),
    };
    let cutoff = reader
        .last
        .iter()
        .filter_map(|i| i.cut_after.as_ref())
        .min();
    let (Selected::Exact(p) | Selected::Moved(p)) = &mut page;
    cut_at(p, cutoff);
    Ok(page)
}

async fn page(app: &App, query: &Query) -> Outcome {
    let kind = window(app, query)?;
    let limit = query.int("limit", app.lb_topn, 1..=PAGE_LIMIT_MAX)?;
    let offset = query.int("offset", 0, 0..=PAGE_OFFSET_MAX)?;
    let period: Option<Arc<str>> = query.get("period").map(Arc::from);
    let mut attempts = 0;
    let (page, reader) = loop {
        attempts += 1;
        let mut reader = PeriodReader {
            app,
            kind,
            period: period.clone(),
            seen: None,
            changed: false,
            last: Vec::new(),
        };
        match select_page(&mut reader, offset, limit).await? {
            Selected::Exact(page) => break (page, reader),
            Selected::Moved(page) if attempts >= PAGE_ATTEMPTS_MAX => break (page, reader),
            Selected::Moved(_) => {}
        }
    };
    let Some(first) = reader.last.iter().find(|i| i.name.is_some()) else {
        return Err(ApiError::not_found(
            "period_not_found",
            "that period is neither current nor among the kept closed periods",
        ));
    };
    let updated_ms = reader.last.iter().map(|i| i.updated_ms).max().unwrap_or(0);
    // Writing a page of a thousand entries keeps the thread for a while.
    let response = heavy_work::run_if(page.entries.len() >= HEAVY_ITEMS_MIN, || {
        let entries: Vec<_> = page
            .entries
            .iter()
            .enumerate()
            .map(|(i, key)| PageEntry {
                player_id: &key.player,
                rank: page.first_rank + i,
                score: key.score(),
            })
            .collect();
        json_response(
            StatusCode::OK,
            &PageBody {
                closed: first.closed,
                entries,
                period: first.name.as_deref(),
                season: &app.policy.season,
                updated_at: updated_ms / 1000,
                window: kind.as_str(),
            },
        )
    });
    Ok(response.await)
}

/// A page as answered, written straight from these structs: a map per entry would cost
/// a page of a thousand entries a thousand allocations more. Members in name order, as
/// the maps wrote them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PageBody<'a> {
    closed: bool,
    entries: Vec<PageEntry<'a>>,
    period: Option<&'a str>,
    season: &'a str,
    updated_at: u64,
    window: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PageEntry<'a> {
    player_id: &'a str,
    rank: usize,
    score: u64,
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
