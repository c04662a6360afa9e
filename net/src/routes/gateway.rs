//! `POST /events`: size limit, signature, idempotency, validation, then each event on
//! the shard that owns its player.
//!
//! Order of checks: 413 → 401 → 400 (whole body) → idempotency (208/409/422) → per event
//! 400/409 (replayed)/403/429/409/503 or 202. Each event carries the identity of the
//! signed bytes it came in (`liveops_engine::replay`): its shard refuses it if it applied
//! that identity within `REPLAY_WINDOW_SEC`, whatever `Idempotency-Key` it carries (the
//! header is not signed). Once an idempotency key is reserved, the rest runs in
//! its own task: a client hanging up must not leave a key in flight or half a batch
//! unrecorded.

use std::net::IpAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{HeaderMap, Method, Request, StatusCode};
use serde::Serialize;
use serde_json::json;

use super::{hold_over_budget, mesh_error, only, unknown_route, App, Outcome};
use crate::heavy_work::{self, HEAVY_BYTES_MIN, HEAVY_ITEMS_MIN};
use crate::host_budget::client_host;
use crate::http::{
    bytes_response, read_body, retry_after_s, set_retry_after, ApiError, ErrorResponse,
};
use crate::mesh::{unix_now_ms, MeshError};
use crate::runtime::PeerAddr;
use liveops_engine::event::{parse_body, Body, Event, ValidationError};
use liveops_engine::fairness::FlagKind;
use liveops_engine::idempotency::{Reserve, StoredResponse};
use liveops_engine::replay::ReplayId;
use liveops_engine::shard::{EventOutcome, KeyRef, Rejection};
use liveops_engine::shard_of;
use liveops_engine::signing::{fingerprint, SignatureError};

/// Largest `POST /events` body (the contract's 1 MiB).
pub const EVENTS_BODY_BYTES_MAX: usize = 1 << 20;
/// Longest `Idempotency-Key`.
pub(crate) const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;

/// Whether `key` may be an `Idempotency-Key`: 1 to [`IDEMPOTENCY_KEY_BYTES_MAX`]
/// printable ASCII characters.
pub(crate) fn idempotency_key_valid(key: &[u8]) -> bool {
    (1..=IDEMPOTENCY_KEY_BYTES_MAX).contains(&key.len())
        && key.iter().all(|b| (0x20..=0x7e).contains(b))
}

pub(super) async fn route(
    app: &Arc<App>,
    segments: &[&str],
    req: Request<Incoming>,
) -> (&'static str, Outcome) {
    match segments {
        ["events"] => ("/events", post_events(app, req).await),
        _ => unknown_route(),
    }
}

async fn post_events(app: &Arc<App>, req: Request<Incoming>) -> Outcome {
    only(req.method(), Method::POST)?;
    let (parts, body) = req.into_parts();
    let refused = |reason: &str| {
        app.metrics
            .dropped_events
            .with_label_values(&[reason])
            .inc()
    };
    let bytes = read_body(&parts.headers, body, EVENTS_BODY_BYTES_MAX)
        .await
        .inspect_err(|e| {
            refused(if e.status == StatusCode::PAYLOAD_TOO_LARGE {
                "too_large"
            } else {
                "invalid"
            })
        })?;
    // Hashing and parsing a large batch keeps the thread for a millisecond or more.
    let checked = heavy_work::run_if(bytes.len() >= HEAVY_BYTES_MIN, || {
        verify_signature(app, &parts.headers, &bytes).inspect_err(|_| refused("bad_signature"))?;
        let key = idempotency_key(&parts.headers).inspect_err(|_| refused("invalid"))?;
        let now_s = unix_now_ms() / 1000;
        let mut body = parse_body(&bytes, now_s, app.policy.ts).map_err(|e| {
            refused("invalid");
            ApiError::bad_request(e)
        })?;
        let request_fingerprint = fingerprint(&bytes);
        identify(&mut body, &request_fingerprint);
        Ok::<_, ApiError>((key, body, request_fingerprint))
    });
    let (key, body, request_fingerprint) = checked.await?;
    if let Body::Single(Err(e)) = body {
        // Nothing to apply: answer before touching any key.
        refused("invalid");
        return Err(ApiError::bad_request(e));
    }
    let app = app.clone();
    // Only a keyed request is charged to its host.
    let host = key
        .as_ref()
        .and_then(|_| parts.extensions.get::<PeerAddr>())
        .map(|peer| client_host(peer.0.ip()));
    tokio::task::spawn_local(async move {
        apply_events(&app, body, key, request_fingerprint, host).await
    })
    .await
    .unwrap_or_else(|_| Err(ApiError::overloaded()))
}

pub(super) fn verify_signature(
    app: &App,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    let header = headers.get("x-signature").map(HeaderValue::as_bytes);
    app.signer.verify_header(header, body).map_err(|e| match e {
        SignatureError::Missing => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_signature",
            "X-Signature header is required: sha256=<hex HMAC-SHA256 of the body>",
        ),
        SignatureError::Mismatch => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "X-Signature does not match the body",
        ),
    })
}

/// Gives each event the identity of the signed body it came in: the body's digest and,
/// in a batch, the event's position.
fn identify(body: &mut Body, fingerprint: &[u8; 32]) {
    match body {
        Body::Single(event) => {
            if let Ok(event) = event {
                event.replay_id = Some(ReplayId::new(fingerprint, None));
            }
        }
        Body::Batch(items) => {
            for (position, item) in items.iter_mut().enumerate() {
                if let Ok(event) = item {
                    event.replay_id = Some(ReplayId::new(fingerprint, Some(position)));
                }
            }
        }
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bytes = raw.as_bytes();
    if !idempotency_key_valid(bytes) {
        return Err(ApiError::bad_request(ValidationError::field(
            "invalid_idempotency_key",
            "Idempotency-Key",
            format!("Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} printable ASCII characters"),
        )));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

async fn apply_events(
    app: &App,
    body: Body,
    key: Option<String>,
    request_fingerprint: [u8; 32],
    host: Option<IpAddr>,
) -> Outcome {
    let mut reserved_ms = 0;
    if let Some(key) = &key {
        let home = shard_of(key, app.mesh.shards());
        let owned = key.clone();
        // The reservation lives in memory only (a crash forgets it, durable turn or
        // not), so the request does not wait for the home shard's fsync here: only the
        // event and the key's completion, which the log keeps, are answered once durable.
        let (reserved, now_ms) = app
            .mesh
            .call_unlogged(home, move |shard, now_ms| {
                let reserved = shard.reserve_key(&owned, request_fingerprint, host, now_ms);
                (reserved, now_ms)
            })
            .await
            .map_err(mesh_error)?;
        reserved_ms = now_ms;
        match reserved {
            Reserve::Reserved => {}
            Reserve::Replay(stored) => {
                let json = stored.json().map_err(|e| {
                    tracing::error!(error = %e, "a remembered response does not decode");
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "the remembered response for this Idempotency-Key is unreadable",
                    )
                })?;
                let mut response = bytes_response(
                    StatusCode::ALREADY_REPORTED,
                    json.into_owned().into(),
                    "application/json",
                );
                response
                    .headers_mut()
                    .insert("idempotency-replayed", HeaderValue::from_static("true"));
                return Ok(response);
            }
            Reserve::InFlight => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "idempotency_in_flight",
                    "a request with this Idempotency-Key is still being processed",
                ))
            }
            Reserve::Mismatch => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with a different body",
                ))
            }
            Reserve::Full { retry_after_ms } => {
                let retry_after_ms = hold_over_budget(retry_after_ms).await;
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "idempotency_store_full",
                    "the idempotency store, or this client's share of it, is full; \
                     retry after Retry-After, when one of the keys holding it expires",
                )
                .retry_after(retry_after_s(retry_after_ms)));
            }
        }
    }
    let (status, body, retry_after, applied) = match body {
        Body::Single(Ok(event)) => {
            let key = key_ref(&key, request_fingerprint, reserved_ms, 0);
            single(app, event, key).await
        }
        Body::Single(Err(_)) => unreachable!("refused before reserving"),
        Body::Batch(items) => batch(app, items, &key, request_fingerprint, reserved_ms).await,
    };
    if let Some(key) = key {
        let home = shard_of(&key, app.mesh.shards());
        let stored = heavy_work::run_if(body.len() >= HEAVY_BYTES_MIN, || {
            StoredResponse::compact(status, &body)
        })
        .await;
        // The key must leave the in-flight state whatever happens, so this waits for
        // room in the inbox rather than failing. The answer goes out once the completion
        // is queued, not once it has run or is durable:
        // - a retry's reservation, sent after this answer, is queued behind it and sees
        //   it (the inbox is first in, first out);
        // - every event it completes is on disk already and names the key (`KeyRef`), so
        //   if a crash takes the completion back, recovery rebuilds it from them (README,
        //   Recovery).
        // Waiting for it to run would put a second wait for the key's shard on every
        // keyed request.
        let _ = app
            .mesh
            .queue_until_room(home, move |shard, now_ms| {
                if applied {
                    shard.complete_key(key, request_fingerprint, stored, now_ms);
                } else {
                    shard.release_key(&key);
                }
            })
            .await;
    }
    let status = StatusCode::from_u16(status).expect("statuses we produce are valid");
    let mut response = bytes_response(status, body.into(), "application/json");
    if let Some(seconds) = retry_after {
        set_retry_after(&mut response, seconds);
    }
    Ok(response)
}

/// Ties an event to its request's idempotency key, so recovery can rebuild the key if a
/// crash cuts off its completion.
fn key_ref(
    key: &Option<String>,
    fingerprint: [u8; 32],
    reserved_ms: u64,
    index: usize,
) -> Option<KeyRef> {
    key.as_ref().map(|key| KeyRef {
        key: key.as_str().into(),
        fingerprint,
        index: index as u32,
        reserved_ms,
    })
}

/// (status, JSON body, Retry-After seconds, whether anything was applied)
type Answer = (u16, Vec<u8>, Option<u64>, bool);

/// An accepted event as answered, serialized straight from this struct: a
/// `serde_json::Value` per event would allocate a map and a string per key, 500 times
/// for a full batch.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AcceptedEvent {
    /// Position in the batch (batches only).
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    /// "accepted" alone; the event's HTTP status, 202, in a batch.
    status: Status,
    player_id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    xp: u64,
    level: u64,
    flagged: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    flag: Option<&'static str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Status {
    Word(&'static str),
    Code(u16),
}

/// One entry of a batch's `results`.
#[derive(Serialize)]
#[serde(untagged)]
enum BatchItem {
    Accepted(AcceptedEvent),
    Refused {
        index: usize,
        status: u16,
        error: ApiError,
    },
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("our responses serialize")
}

async fn single(app: &App, event: Event, key: Option<KeyRef>) -> Answer {
    let player = event.player_id.clone();
    let type_name = event.kind.type_name();
    let shard = shard_of(&player, app.mesh.shards());
    let outcome = app
        .mesh
        .call(shard, move |s, now_ms| s.submit_event(event, key, now_ms))
        .await;
    match event_result(app, outcome, player, type_name) {
        Ok(accepted) => (202, to_json(&accepted), None, true),
        Err(e) => (
            e.status.as_u16(),
            to_json(&ErrorResponse { error: &e }),
            e.retry_after_s,
            false,
        ),
    }
}

async fn batch(
    app: &App,
    items: Vec<Result<Event, ValidationError>>,
    key: &Option<String>,
    request_fingerprint: [u8; 32],
    reserved_ms: u64,
) -> Answer {
    let shards = app.mesh.shards();
    let mut results: Vec<Option<Result<AcceptedEvent, ApiError>>> =
        (0..items.len()).map(|_| None).collect();
    let mut groups: Vec<Vec<(usize, Event)>> = (0..shards).map(|_| Vec::new()).collect();
    for (index, item) in items.into_iter().enumerate() {
        match item {
            Ok(event) => groups[shard_of(&event.player_id, shards)].push((index, event)),
            Err(e) => {
                app.metrics
                    .dropped_events
                    .with_label_values(&["invalid"])
                    .inc();
                results[index] = Some(Err(ApiError::bad_request(e)));
            }
        }
    }
    // Fan out to every shard first, then collect: the shards work in parallel.
    let mut pending = Vec::new();
    for (shard, group) in groups.into_iter().enumerate() {
        if group.is_empty() {
            continue;
        }
        let described: Vec<(usize, String, &'static str)> = group
            .iter()
            .map(|(i, e)| (*i, e.player_id.clone(), e.kind.type_name()))
            .collect();
        let key = key.clone();
        let started = app.mesh.start(shard, move |s, now_ms| {
            group
                .into_iter()
                .map(|(index, event)| {
                    let key = key_ref(&key, request_fingerprint, reserved_ms, index);
                    s.submit_event(event, key, now_ms)
                })
                .collect::<Vec<_>>()
        });
        pending.push((described, started));
    }
    for (described, started) in pending {
        let outcomes: Result<Vec<EventOutcome>, MeshError> = match started {
            Ok(rx) => crate::mesh::finish(rx).await,
            Err(e) => Err(e),
        };
        match outcomes {
            Ok(outcomes) => {
                for ((index, player, type_name), outcome) in described.into_iter().zip(outcomes) {
                    results[index] = Some(event_result(app, Ok(outcome), player, type_name));
                }
            }
            Err(e) => {
                for (index, player, type_name) in described {
                    results[index] = Some(event_result(app, Err(e), player, type_name));
                }
            }
        }
    }
    heavy_work::run_if(results.len() >= HEAVY_ITEMS_MIN, || batch_answer(results)).await
}

/// The answer to a batch from each of its events' results.
fn batch_answer(results: Vec<Option<Result<AcceptedEvent, ApiError>>>) -> Answer {
    let (mut accepted, mut rejected, mut retry_after) = (0u64, 0u64, None::<u64>);
    let items: Vec<BatchItem> = results
        .into_iter()
        .enumerate()
        .map(
            |(index, result)| match result.expect("every event has a result") {
                Ok(event) => {
                    accepted += 1;
                    BatchItem::Accepted(AcceptedEvent {
                        index: Some(index),
                        status: Status::Code(202),
                        ..event
                    })
                }
                Err(e) => {
                    rejected += 1;
                    if let Some(s) = e.retry_after_s {
                        retry_after = Some(retry_after.map_or(s, |r: u64| r.max(s)));
                    }
                    BatchItem::Refused {
                        index,
                        status: e.status.as_u16(),
                        error: e,
                    }
                }
            },
        )
        .collect();
    #[derive(Serialize)]
    struct BatchBody {
        accepted: u64,
        rejected: u64,
        results: Vec<BatchItem>,
    }
    let body = BatchBody {
        accepted,
        rejected,
        results: items,
    };
    (202, to_json(&body), retry_after, accepted > 0)
}

/// One event's result as the accepted JSON or the refusal, counting metrics.
fn event_result(
    app: &App,
    outcome: Result<EventOutcome, MeshError>,
    player: String,
    type_name: &'static str,
) -> Result<AcceptedEvent, ApiError> {
    let metrics = &app.metrics;
    let outcome = outcome.map_err(|e| {
        metrics.queue_full.inc();
        metrics
            .dropped_events
            .with_label_values(&["overloaded"])
            .inc();
        mesh_error(e)
    })?;
    match outcome {
        EventOutcome::Accepted { xp, level, flag } => {
            metrics.events_accepted.inc();
            if let Some(flag) = flag {
                metrics
                    .anomaly_flags
                    .with_label_values(&[flag.as_str()])
                    .inc();
            }
            Ok(AcceptedEvent {
                index: None,
                status: Status::Word("accepted"),
                player_id: player,
                kind: type_name,
                xp,
                level,
                flagged: flag.is_some(),
                flag: flag.map(FlagKind::as_str),
            })
        }
        EventOutcome::Rejected(rejection) => Err(rejection_error(app, rejection)),
    }
}

fn rejection_error(app: &App, rejection: Rejection) -> ApiError {
    let metrics = &app.metrics;
    match rejection {
        Rejection::Blocked {
            until_ms,
            reason,
            new_flag,
        } => {
            metrics.dropped_events.with_label_values(&["blocked"]).inc();
            if let Some(flag) = new_flag {
                metrics
                    .anomaly_flags
                    .with_label_values(&[flag.as_str()])
                    .inc();
            }
            blocked_error(until_ms, &reason, new_flag)
        }
        Rejection::RateLimited { retry_after_ms } => {
            metrics
                .dropped_events
                .with_label_values(&["rate_limited"])
                .inc();
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "over {} events per second for this player",
                    app.policy.rate_limit_per_s
                ),
            )
            .retry_after(retry_after_s(retry_after_ms))
        }
        Rejection::PlayersFull => {
            metrics
                .dropped_events
                .with_label_values(&["players_full"])
                .inc();
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "players_full",
                "the engine holds its maximum number of players",
            )
            .retry_after(60)
        }
        Rejection::Replayed => {
            metrics.dropped_events.with_label_values(&["replay"]).inc();
            ApiError::new(
                StatusCode::CONFLICT,
                "replayed_event",
                format!(
                    "this event's exact signed bytes were applied in the last {} s and are \
                     not applied twice; to send an identical event, give each its own \
                     eventId",
                    app.policy.replay_window_ms / 1000
                ),
            )
        }
        Rejection::ReplaysFull { retry_after_ms } => {
            metrics
                .dropped_events
                .with_label_values(&["replay_window_full"])
                .inc();
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "replay_window_full",
                "the shard remembers REPLAY_ENTRIES_MAX recent events already; \
                 retry after Retry-After, when the oldest is forgotten",
            )
            .retry_after(retry_after_s(retry_after_ms))
        }
        Rejection::PlayerLimit { field, limit } => {
            metrics
                .dropped_events
                .with_label_values(&["player_limit"])
                .inc();
            ApiError::new(
                StatusCode::CONFLICT,
                "player_limit_reached",
                format!("this player already holds {limit}; the limit is reached"),
            )
            .with_field(field)
        }
    }
}

pub(super) fn blocked_error(until_ms: u64, reason: &str, new_flag: Option<FlagKind>) -> ApiError {
    let message = match new_flag {
        Some(flag) => format!(
            "player blocked by the fairness guard ({}) until {}",
            flag.as_str(),
            until_ms / 1000
        ),
        None => format!("player is blocked until {}", until_ms / 1000),
    };
    ApiError::new(StatusCode::FORBIDDEN, "player_blocked", message)
        .with_extra("blockedUntil", json!(until_ms / 1000))
        .with_extra("reason", json!(reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_key_bounds() {
        let mut headers = HeaderMap::new();
        assert_eq!(idempotency_key(&headers).unwrap(), None);
        headers.insert("idempotency-key", HeaderValue::from_static("demo-1"));
        assert_eq!(
            idempotency_key(&headers).unwrap().as_deref(),
            Some("demo-1")
        );
        headers.insert(
            "idempotency-key",
            HeaderValue::from_str(&"k".repeat(256)).unwrap(),
        );
        assert_eq!(
            idempotency_key(&headers).unwrap_err().code,
            "invalid_idempotency_key"
        );
        headers.insert("idempotency-key", HeaderValue::from_static(""));
        assert!(idempotency_key(&headers).is_err());
    }
}
