//! Progression: a player's progress, reward claims (signed, at most once per drop) and
//! receipt verification.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

use super::gateway::{blocked_error, verify_signature};
use super::{mesh_error, only, player_id, unknown_route, App, Outcome};
use crate::http::{json_object, json_response, read_body, ApiError};
use liveops_engine::event::check_label;
use liveops_engine::shard::ClaimError;
use liveops_engine::shard_of;
use liveops_engine::signing::Receipt;

/// Largest claim or verify body: a receipt is a few hundred bytes.
const REWARD_BODY_BYTES_MAX: usize = 64 * 1024;

pub(super) async fn route(
    app: &Arc<App>,
    segments: &[&str],
    req: Request<Incoming>,
) -> (&'static str, Outcome) {
    match segments {
        ["players", id, "progress"] => (
            "/players/{playerId}/progress",
            match only(req.method(), Method::GET) {
                Ok(()) => progress(app, id).await,
                Err(e) => Err(e),
            },
        ),
        ["rewards", "claim"] => ("/rewards/claim", claim(app, req).await),
        ["rewards", "verify"] => ("/rewards/verify", verify(app, req).await),
        _ => unknown_route(),
    }
}

async fn progress(app: &App, raw_id: &str) -> Outcome {
    let id = player_id(raw_id, "playerId")?;
    let shard = shard_of(&id, app.mesh.shards());
    let view = app
        .mesh
        .read(shard, move |s, _| s.progress(&id))
        .await
        .map_err(mesh_error)?
        .ok_or_else(|| ApiError::not_found("player_not_found", "no such player"))?;
    Ok(json_response(StatusCode::OK, &view))
}

async fn claim(app: &App, req: Request<Incoming>) -> Outcome {
    only(req.method(), Method::POST)?;
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, REWARD_BODY_BYTES_MAX).await?;
    verify_signature(app, &parts.headers, &bytes)?;
    let map = json_object(&bytes)?;
    let player = match map.get("playerId") {
        Some(Value::String(s)) => player_id(s, "playerId")?,
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_field",
                "playerId must be a string",
            )
            .with_field("playerId"))
        }
        None => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing_field",
                "playerId is required",
            )
            .with_field("playerId"))
        }
    };
    let item = match map.get("item") {
        Some(Value::String(s)) => {
            check_label(s).map_err(|m| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_field",
                    format!("item {m}"),
                )
                .with_field("item")
            })?;
            s.clone()
        }
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_field",
                "item must be a string",
            )
            .with_field("item"))
        }
        None => {
            return Err(
                ApiError::new(StatusCode::BAD_REQUEST, "missing_field", "item is required")
                    .with_field("item"),
            )
        }
    };
    let shard = shard_of(&player, app.mesh.shards());
    // A claim runs to completion once queued, even if the client hangs up.
    let claimed = app
        .mesh
        .call(shard, move |s, now_ms| s.claim(&player, &item, now_ms))
        .await
        .map_err(mesh_error)?;
    match claimed {
        Ok(receipt) => Ok(json_response(StatusCode::OK, &receipt)),
        Err(ClaimError::NotEarned) => Err(ApiError::not_found(
            "not_earned",
            "the player has not earned this item",
        )),
        Err(ClaimError::AlreadyClaimed { receipt_id }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_claimed",
            "this item was claimed already",
        )
        .with_extra("receiptId", json!(receipt_id))),
        Err(ClaimError::Blocked { until_ms, reason }) => {
            Err(blocked_error(until_ms, &reason, None))
        }
    }
}

async fn verify(app: &App, req: Request<Incoming>) -> Outcome {
    only(req.method(), Method::POST)?;
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, REWARD_BODY_BYTES_MAX).await?;
    let map = json_object(&bytes)?;
    let malformed = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "body must be a receipt {receiptId, playerId, item, timestamp, sig}: four strings and an integer",
        )
    };
    let text = |key: &str| match map.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(malformed()),
    };
    let (receipt_id, player_id, item, sig) = (
        text("receiptId")?,
        text("playerId")?,
        text("item")?,
        text("sig")?,
    );
    // Any JSON integer is a well-formed timestamp; one no receipt can carry (negative,
    // beyond 64 bits) is simply not genuine.
    let timestamp = match map.get("timestamp") {
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.as_u64(),
        Some(Value::Number(n)) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => None,
        _ => return Err(malformed()),
    };
    let valid = timestamp.is_some_and(|timestamp| {
        app.receipts.verify(&Receipt {
            receipt_id,
            player_id,
            item,
            timestamp,
            sig,
        })
    });
    Ok(json_response(StatusCode::OK, &json!({ "valid": valid })))
}
