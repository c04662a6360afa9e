//! `liveops top`: a leaderboard page as a table.

use std::io::Write;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde::Deserialize;

use super::args::Args;
use super::client::{self, Call};
use super::{connection_help, exchange, outcome_help, terminal_safe, write_body, CliError};
use crate::config::Service;
use crate::routes::PAGE_LIMIT_MAX;

/// Rows when `--limit` is not given: a screenful.
const LIMIT_DEFAULT: usize = 10;
/// Widest player column: ids are at most 64 characters; a longer one is not the
/// engine's and is cut.
const PLAYER_CHARS_MAX: usize = 64;

pub fn help() -> String {
    format!(
        "liveops top: a leaderboard's best players, as a table

usage: liveops top [--window W] [--limit N] [--host HOST] [--leaderboard URL]

Reads GET /leaderboard and prints rank, player and score.

options:
  --window W          daily, weekly or seasonal (those LB_WINDOWS enables); default: the
                      engine's default, weekly
  --limit N           rows, 1-{PAGE_LIMIT_MAX} (the API's largest page); default {LIMIT_DEFAULT}

{}

{}

examples:
  liveops top
  liveops top --window daily --limit 50
  liveops top --host 10.0.0.5 --window seasonal",
        connection_help(Service::Leaderboard),
        outcome_help()
    )
}

/// A leaderboard page, as `GET /leaderboard` answers it.
#[derive(Debug, Deserialize)]
struct Page {
    /// The window read.
    window: String,
    /// The season the engine serves.
    season: String,
    /// The period's name (`2026-W48`).
    period: String,
    /// Whether the period is a closed one (history); absent means live.
    #[serde(default)]
    closed: bool,
    /// The rows, best first.
    entries: Vec<Entry>,
}

/// One row of a page.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    /// 1-based rank on the whole board.
    rank: u64,
    /// The player.
    player_id: String,
    /// XP gained inside the window.
    score: u64,
}

pub fn run(raw: &[&str], out: &mut dyn Write, err: &mut dyn Write) -> Result<StatusCode, CliError> {
    let args = Args::parse(raw, &["window", "limit", "host", "leaderboard"])?;
    args.positionals(0, 0, "no arguments besides the options")?;
    let limit = match args.flag("limit") {
        None => LIMIT_DEFAULT,
        Some(raw) => raw
            .parse()
            .ok()
            .filter(|n| (1..=PAGE_LIMIT_MAX).contains(n))
            .ok_or_else(|| {
                CliError::Usage(format!("--limit must be 1-{PAGE_LIMIT_MAX}, got {raw:?}"))
            })?,
    };
    let base = client::base_url(
        Service::Leaderboard,
        args.flag("leaderboard"),
        args.flag("host"),
        |k| std::env::var(k).ok(),
    )?;
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(window) = args.flag("window") {
        query.append_pair("window", window);
    }
    query.append_pair("limit", &limit.to_string());
    let call = Call {
        method: Method::GET,
        base: &base,
        path_and_query: format!("/leaderboard?{}", query.finish()),
        headers: Vec::new(),
        body: Bytes::new(),
    };
    let reply = exchange(&call, err)?;
    if !reply.status.is_success() {
        write_body(out, &reply.body)?;
        return Ok(reply.status);
    }
    let page: Page = serde_json::from_slice(&reply.body).map_err(|e| CliError::Unexpected {
        url: base.url(&call.path_and_query),
        message: e.to_string(),
    })?;
    write!(out, "{}", table(&page))?;
    Ok(reply.status)
}

/// The page as text: a title line, then rank, player and score in aligned columns.
fn table(page: &Page) -> String {
    let mut text = terminal_safe(&format!(
        "{} {} (season {}{})\n",
        page.window,
        page.period,
        page.season,
        if page.closed { ", closed" } else { "" }
    ));
    if page.entries.is_empty() {
        text.push_str("no players ranked yet\n");
        return text;
    }
    let header = ("RANK".to_owned(), "PLAYER".to_owned(), "SCORE".to_owned());
    let rows: Vec<(String, String, String)> = std::iter::once(header)
        .chain(page.entries.iter().map(|e| {
            let player: String = e.player_id.chars().take(PLAYER_CHARS_MAX).collect();
            (
                e.rank.to_string(),
                terminal_safe(&player),
                e.score.to_string(),
            )
        }))
        .collect();
    let width = |column: fn(&(String, String, String)) -> &String| {
        rows.iter()
            .map(|r| column(r).chars().count())
            .max()
            .unwrap_or(0)
    };
    let (rank_w, player_w, score_w) = (width(|r| &r.0), width(|r| &r.1), width(|r| &r.2));
    for (rank, player, score) in &rows {
        text.push_str(&format!(
            "{rank:>rank_w$}  {player:<player_w$}  {score:>score_w$}\n"
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_prints_as_aligned_columns() {
        let page: Page = serde_json::from_str(
            r#"{"window":"weekly","season":"1","period":"2026-W48","closed":false,"updatedAt":1,
                "entries":[{"rank":1,"playerId":"player_123","score":2510},
                           {"rank":2,"playerId":"p1","score":10}]}"#,
        )
        .unwrap();
        assert_eq!(
            table(&page),
            "weekly 2026-W48 (season 1)\n\
             RANK  PLAYER      SCORE\n   \
                1  player_123   2510\n   \
                2  p1             10\n"
        );
    }

    #[test]
    fn an_empty_or_closed_page_says_so_and_hostile_ids_are_tamed() {
        let empty: Page = serde_json::from_str(
            r#"{"window":"daily","season":"s","period":"2026-12-01","closed":true,"entries":[]}"#,
        )
        .unwrap();
        assert_eq!(
            table(&empty),
            "daily 2026-12-01 (season s, closed)\nno players ranked yet\n"
        );
        let hostile = Page {
            window: "weekly".into(),
            season: "1".into(),
            period: "\u{1b}[2J".into(),
            closed: false,
            entries: vec![Entry {
                rank: 1,
                player_id: "x".repeat(100) + "\u{1b}",
                score: 1,
            }],
        };
        let text = table(&hostile);
        assert!(!text.contains('\u{1b}'), "{text:?}");
        assert!(text.contains(&format!(" {} ", "x".repeat(PLAYER_CHARS_MAX))));
        assert!(!text.contains(&"x".repeat(PLAYER_CHARS_MAX + 1)));
    }
}
