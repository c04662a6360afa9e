//! The fairness API: a player's standing, blocks, flags, the audit trail, and the
//! operators' block, unblock and review queue (behind `ADMIN_TOKEN`).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{HeaderMap, Method, Request, StatusCode};
use serde_json::{json, Value};

use super::{
    mesh_error, method_not_allowed, no_store, only, player_id, unknown_route, App, Outcome,
};
use crate::http::{json_object, json_response, read_body, ApiError, Query};
use liveops_engine::event::check_text;
use liveops_engine::fairness::{AuditKind, AuditRecord};
use liveops_engine::shard::{BlockedView, ReviewView};
use liveops_engine::shard_of;

/// Largest admin request body.
const ADMIN_BODY_BYTES_MAX: usize = 64 * 1024;
/// Most records one audit or flags page returns.
const AUDIT_PAGE_MAX: usize = 1000;
/// Most blocks one `GET /fairness/blocked?limit=` page returns.
const BLOCKED_PAGE_MAX: usize = 10_000;
/// Most reviews one `GET /fairness/reviews?limit=` page returns.
const REVIEWS_PAGE_MAX: usize = 1000;
/// Longest admin block, seconds (a year).
const ADMIN_BLOCK_S_MAX: u64 = 31_536_000;
/// Longest admin block reason, chars.
const ADMIN_REASON_CHARS_MAX: usize = 200;

pub(super) async fn route(
    app: &Arc<App>,
    segments: &[&str],
    req: Request<Incoming>,
) -> (&'static str, Outcome) {
    match segments {
        ["fairness", "players", id] => (
            "/fairness/players/{playerId}",
            async {
                only(req.method(), Method::GET)?;
                player_view(app, id).await
            }
            .await,
        ),
        ["fairness", "players", id, "block"] => (
            "/fairness/players/{playerId}/block",
            no_store(block_route(app, id, req).await),
        ),
        ["fairness", "players", id, "review", verdict @ ("confirm" | "clear")] => (
            match *verdict {
                "confirm" => "/fairness/players/{playerId}/review/confirm",
                _ => "/fairness/players/{playerId}/review/clear",
            },
            no_store(review_route(app, id, verdict == &"confirm", req).await),
        ),
        ["fairness", "reviews"] => (
            "/fairness/reviews",
            no_store(
                async {
                    only(req.method(), Method::GET)?;
                    authorize(app, req.headers())?;
                    let query = Query::parse(req.uri().query());
                    let limit = query.int("limit", 100, 1..=REVIEWS_PAGE_MAX)?;
                    let after = query
                        .get("after")
                        .map(|p| player_id(p, "after"))
                        .transpose()?;
                    reviews(app, after, limit).await
                }
                .await,
            ),
        ),
        ["fairness", "blocked"] => (
            "/fairness/blocked",
            async {
                only(req.method(), Method::GET)?;
                let query = Query::parse(req.uri().query());
                let limit = match query.get("limit") {
                    None => None,
                    Some(_) => Some(query.int("limit", BLOCKED_PAGE_MAX, 1..=BLOCKED_PAGE_MAX)?),
                };
                blocked(app, limit).await
            }
            .await,
        ),
        ["fairness", "flags"] => (
            "/fairness/flags",
            async {
                only(req.method(), Method::GET)?;
                let query = Query::parse(req.uri().query());
                let limit = query.int("limit", 100, 1..=AUDIT_PAGE_MAX)?;
                let records = audit_records(app, None, Some(AuditKind::Flag), limit).await?;
                Ok(json_response(StatusCode::OK, &json!({ "flags": records })))
            }
            .await,
        ),
        ["fairness", "audit"] => (
            "/fairness/audit",
            async {
                only(req.method(), Method::GET)?;
                let query = Query::parse(req.uri().query());
                let limit = query.int("limit", 100, 1..=AUDIT_PAGE_MAX)?;
                let player = query
                    .get("playerId")
                    .map(|p| player_id(p, "playerId"))
                    .transpose()?;
                let records = audit_records(app, player, None, limit).await?;
                Ok(json_response(
                    StatusCode::OK,
                    &json!({ "records": records }),
                ))
            }
            .await,
        ),
        _ => unknown_route(),
    }
}

async fn player_view(app: &App, raw_id: &str) -> Outcome {
    let id = player_id(raw_id, "playerId")?;
    let shard = shard_of(&id, app.mesh.shards());
    let view = app
        .mesh
        .read(shard, move |s, now_ms| s.guard_view(&id, now_ms))
        .await
        .map_err(mesh_error)?
        .ok_or_else(|| ApiError::not_found("player_not_found", "no such player"))?;
    Ok(json_response(StatusCode::OK, &view))
}

/// Active blocks, soonest to expire first; with `limit`, only the first `limit` (each
/// shard sends at most that many, so the answer stays small however many are blocked).
async fn blocked(app: &App, limit: Option<usize>) -> Outcome {
    fn order(a: &BlockedView, b: &BlockedView) -> std::cmp::Ordering {
        a.until_ms
            .cmp(&b.until_ms)
            .then_with(|| a.player_id.cmp(&b.player_id))
    }
    let mut all: Vec<_> = app
        .mesh
        .read_all(move |s, now_ms| {
            let mut views = s.blocked(now_ms);
            if let Some(limit) = limit.filter(|&l| l < views.len()) {
                views.select_nth_unstable_by(limit, order);
                views.truncate(limit);
            }
            views
        })
        .await
        .map_err(mesh_error)?
        .into_iter()
        .flatten()
        .collect();
    all.sort_by(order);
    all.truncate(limit.unwrap_or(usize::MAX));
    Ok(json_response(StatusCode::OK, &json!({ "blocked": all })))
}

/// The review queue by player id after `after`: each shard sends its first `limit`, the
/// merged page keeps the first `limit`; `next` is the cursor of the following page.
async fn reviews(app: &App, after: Option<String>, limit: usize) -> Outcome {
    let mut all: Vec<ReviewView> = app
        .mesh
        .read_all(move |s, now_ms| s.reviews(after.as_deref(), limit, now_ms))
        .await
        .map_err(mesh_error)?
        .into_iter()
        .flatten()
        .collect();
    all.sort_by(|a, b| a.player_id.cmp(&b.player_id));
    all.truncate(limit);
    let next = (all.len() == limit).then(|| all.last().map(|r| r.player_id.clone()));
    Ok(json_response(
        StatusCode::OK,
        &json!({ "reviews": all, "next": next.flatten() }),
    ))
}

/// An operator's verdict on a pending review: confirm (a long block, the held scores
/// discarded) or clear (the block lifted, the held scores restored); 404 without one.
async fn review_route(app: &App, raw_id: &str, confirm: bool, req: Request<Incoming>) -> Outcome {
    only(req.method(), Method::POST)?;
    authorize(app, req.headers())?;
    let id = player_id(raw_id, "playerId")?;
    let shard = shard_of(&id, app.mesh.shards());
    let owned = id.clone();
    let closed = app
        .mesh
        .call(shard, move |s, now_ms| {
            if confirm {
                s.review_confirm(&owned, now_ms).map(|b| (Some(b), true))
            } else if s.review_clear(&owned, now_ms) {
                // An admin block of its own stays.
                let blocked = s.guard_view(&owned, now_ms).is_some_and(|v| v.blocked);
                Some((None, blocked))
            } else {
                None
            }
        })
        .await
        .map_err(mesh_error)?
        .ok_or_else(|| {
            ApiError::not_found("review_not_found", "the player has no pending review")
        })?;
    let body = match closed {
        (Some(block), _) => json!({
            "playerId": id, "verdict": "confirmed", "blocked": true,
            "until": block.until_ms / 1000, "untilMs": block.until_ms, "reason": block.reason, "by": block.by,
        }),
        (None, blocked) => json!({ "playerId": id, "verdict": "cleared", "blocked": blocked }),
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// Newest first across shards, or from the player's shard alone.
async fn audit_records(
    app: &App,
    player: Option<String>,
    kind: Option<AuditKind>,
    limit: usize,
) -> Result<Vec<AuditRecord>, ApiError> {
    let mut records: Vec<AuditRecord> = match player {
        Some(id) => {
            let shard = shard_of(&id, app.mesh.shards());
            app.mesh
                .read(shard, move |s, _| s.audit(Some(&id), kind, limit))
                .await
                .map_err(mesh_error)?
        }
        None => app
            .mesh
            .read_all(move |s, _| s.audit(None, kind, limit))
            .await
            .map_err(mesh_error)?
            .into_iter()
            .flatten()
            .collect(),
    };
    records.sort_by_key(|r| std::cmp::Reverse(r.at_ms));
    records.truncate(limit);
    Ok(records)
}

async fn block_route(app: &App, raw_id: &str, req: Request<Incoming>) -> Outcome {
    let method = req.method().clone();
    if method != Method::POST && method != Method::DELETE {
        return Err(method_not_allowed(&[Method::POST, Method::DELETE]));
    }
    authorize(app, req.headers())?;
    let id = player_id(raw_id, "playerId")?;
    let shard = shard_of(&id, app.mesh.shards());
    if method == Method::DELETE {
        let owned = id.clone();
        let lifted = app
            .mesh
            .call(shard, move |s, now_ms| s.admin_unblock(&owned, now_ms))
            .await
            .map_err(mesh_error)?;
        if !lifted {
            return Err(ApiError::not_found(
                "player_not_found",
                "the player has no active block",
            ));
        }
        return Ok(json_response(
            StatusCode::OK,
            &json!({ "playerId": id, "blocked": false }),
        ));
    }
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, ADMIN_BODY_BYTES_MAX).await?;
    let (seconds, reason) = block_request(&bytes, app.policy.block_ms / 1000)?;
    let owned = id.clone();
    let block = app
        .mesh
        .call(shard, move |s, now_ms| {
            s.admin_block(&owned, seconds * 1000, reason, now_ms)
        })
        .await
        .map_err(mesh_error)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "players_full",
                "the engine holds its maximum number of players",
            )
            .retry_after(60)
        })?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "playerId": id, "blocked": true, "until": block.until_ms / 1000, "reason": block.reason, "by": block.by }),
    ))
}

/// Parses the optional `{"seconds","reason"}` body of an admin block.
fn block_request(bytes: &[u8], default_s: u64) -> Result<(u64, String), ApiError> {
    let invalid = |field: &str, message: &str| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", message).with_field(field)
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok((default_s, "admin".to_owned()));
    }
    let map = json_object(bytes)?;
    let seconds = match map.get("seconds") {
        None | Some(Value::Null) => default_s,
        Some(v) => v
            .as_u64()
            .filter(|s| (1..=ADMIN_BLOCK_S_MAX).contains(s))
            .ok_or_else(|| invalid("seconds", "seconds must be a whole number 1..=31536000"))?,
    };
    let reason = match map.get("reason") {
        None | Some(Value::Null) => "admin".to_owned(),
        Some(Value::String(s)) if check_text(s, ADMIN_REASON_CHARS_MAX).is_ok() => s.clone(),
        Some(_) => {
            return Err(invalid(
                "reason",
                "reason must be 1 to 200 printable characters",
            ))
        }
    };
    Ok((seconds, reason))
}

/// Checks `Authorization: Bearer <ADMIN_TOKEN>` in constant time.
pub(super) fn authorize(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &app.admin_token else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "admin_disabled",
            "admin routes are disabled: set ADMIN_TOKEN to enable them",
        ));
    };
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| bearer_credentials(v.as_bytes()))
        .unwrap_or(b"");
    if constant_time_eq(presented, expected.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authorization: Bearer <ADMIN_TOKEN> is required",
        ))
    }
}

/// The token of a `Bearer` credential. The scheme name is case-insensitive (RFC 9110,
/// section 11.1), so `bearer` and `BEARER` work too.
fn bearer_credentials(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    let scheme = value.get(..SCHEME.len())?;
    scheme
        .eq_ignore_ascii_case(SCHEME)
        .then(|| value[SCHEME.len()..].trim_ascii_start())
}

/// Equality whose time does not depend on where the inputs differ (only on length,
/// which a token's length does not make secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_bodies() {
        assert_eq!(block_request(b"", 60).unwrap(), (60, "admin".to_owned()));
        assert_eq!(
            block_request(br#"{"seconds":5,"reason":"chargeback"}"#, 60).unwrap(),
            (5, "chargeback".to_owned())
        );
        assert_eq!(
            block_request(br#"{"seconds":0}"#, 60)
                .unwrap_err()
                .field
                .as_deref(),
            Some("seconds")
        );
        assert_eq!(
            block_request(br#"{"reason":""}"#, 60)
                .unwrap_err()
                .field
                .as_deref(),
            Some("reason")
        );
        assert_eq!(block_request(b"[1]", 60).unwrap_err().code, "invalid_json");
        assert_eq!(
            block_request(br#"{"seconds":5,"seconds":31536000}"#, 60)
                .unwrap_err()
                .code,
            "invalid_json"
        );
        assert_eq!(
            block_request("{\"reason\":\"a\u{202E}b\"}".as_bytes(), 60)
                .unwrap_err()
                .field
                .as_deref(),
            Some("reason")
        );
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_credentials(b"Bearer tok"), Some(&b"tok"[..]));
        assert_eq!(bearer_credentials(b"bearer tok"), Some(&b"tok"[..]));
        assert_eq!(bearer_credentials(b"BEARER  tok"), Some(&b"tok"[..]));
        assert_eq!(bearer_credentials(b"Basic tok"), None);
        assert_eq!(bearer_credentials(b"Bear"), None);
    }

    #[test]
    fn constant_time_equality() {
        assert!(constant_time_eq(b"token", b"token"));
        assert!(!constant_time_eq(b"token", b"tokex"));
        assert!(!constant_time_eq(b"token", b"token2"));
    }
}
