//! Request routing for the four services, plus `/healthz`, `/readyz` and `/metrics` on
//! every port. Each route has a fixed label for metrics (never a player id).

mod console;
mod fairness;
mod gateway;
mod leaderboard;
mod progression;
mod stats;

// The command line bounds what it sends and asks by the same limits.
pub(crate) use gateway::{idempotency_key_valid, EVENTS_BODY_BYTES_MAX, IDEMPOTENCY_KEY_BYTES_MAX};
pub(crate) use leaderboard::PAGE_LIMIT_MAX;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::json;

use crate::config::Service;
use crate::host_budget::HostBudget;
use crate::http::{bytes_response, json_response, ApiError, Query};
use crate::mesh::{Mesh, MeshError};
use crate::metrics::Metrics;
use crate::runtime::HttpResponse;
use liveops_engine::event::check_player_id;
use liveops_engine::policy::Policy;
use liveops_engine::signing::{ReceiptSigner, Signer};

/// Everything a request handler needs; shared by all threads.
pub struct App {
    pub mesh: Arc<Mesh>,
    pub metrics: Arc<Metrics>,
    /// Verifies `X-Signature` with `HMAC_SECRET`.
    pub signer: Signer,
    /// Verifies receipts with `RECEIPT_SECRET` (claims are minted on the shards).
    pub receipts: ReceiptSigner,
    pub policy: Policy,
    /// Default leaderboard page size (`LB_TOPN`).
    pub lb_topn: usize,
    /// Leaderboard read units per client host (`READ_UNITS_PER_HOST_S`).
    pub read_budget: HostBudget,
    /// `None`: admin routes are disabled.
    pub admin_token: Option<String>,
    /// Recovery finished and every shard is serving.
    pub ready: AtomicBool,
    /// A shard could not be recovered at start: the process is exiting, and must not
    /// claim to be merely starting meanwhile.
    pub start_failed: AtomicBool,
    /// A shutdown signal arrived: new work is refused with 503.
    pub shutting_down: AtomicBool,
}

impl App {
    fn refuse_if_not_serving(&self) -> Result<(), ApiError> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(ApiError::shutting_down());
        }
        if self.start_failed.load(Ordering::Acquire) {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_failed",
                "the engine could not recover its data at start (see its log) and is exiting",
            )
            .retry_after(60));
        }
        if !self.ready.load(Ordering::Acquire) {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the engine is still starting",
            )
            .retry_after(1));
        }
        Ok(())
    }
}

type Outcome = Result<HttpResponse, ApiError>;

/// Serves one request on `service`'s port.
pub async fn handle(app: Arc<App>, service: Service, req: Request<Incoming>) -> HttpResponse {
    let started = Instant::now();
    let (route, outcome) = route(&app, service, req).await;
    let response = outcome.unwrap_or_else(ApiError::into_response);
    let status = response.status();
    app.metrics
        .requests
        .with_label_values(&[service.as_str(), route, status.as_str()])
        .inc();
    app.metrics
        .latency
        .with_label_values(&[service.as_str(), route])
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn route(
    app: &Arc<App>,
    service: Service,
    req: Request<Incoming>,
) -> (&'static str, Outcome) {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    match segments.as_slice() {
        ["healthz"] => (
            "/healthz",
            only(&method, Method::GET).and_then(|_| healthz(app, req.uri().query())),
        ),
        ["readyz"] => (
            "/readyz",
            only(&method, Method::GET).and_then(|_| readyz(app)),
        ),
        ["metrics"] => (
            "/metrics",
            only(&method, Method::GET).map(|_| {
                bytes_response(
                    StatusCode::OK,
                    Bytes::from(app.metrics.render()),
                    "text/plain; version=0.0.4; charset=utf-8",
                )
            }),
        ),
        // The console and its numbers take no shard work: they answer while the engine
        // starts too, so an operator sees it starting.
        ["console", asset @ ..] if service == Service::Fairness => {
            ("/console", console::asset(&method, asset))
        }
        ["stats"] if service == Service::Fairness => (
            "/stats",
            no_store(
                only(&method, Method::GET)
                    .and_then(|_| fairness::authorize(app, req.headers()))
                    .and_then(|_| stats::stats(app)),
            ),
        ),
        // Until recovery is done (and once shutdown begins) no shard work is taken.
        _ => match app.refuse_if_not_serving() {
            Err(refusal) => ("refused", Err(refusal)),
            Ok(()) => match service {
                Service::Gateway => gateway::route(app, &segments, req).await,
                // The console's page reads boards and progress from its own origin: see
                // console.rs for why these reads are served here as well.
                Service::Fairness => match segments.as_slice() {
                    ["leaderboard", ..] => leaderboard::route(app, &segments, req).await,
                    ["players", _, "progress"] => progression::route(app, &segments, req).await,
                    _ => fairness::route(app, &segments, req).await,
                },
                Service::Leaderboard => leaderboard::route(app, &segments, req).await,
                Service::Progression => progression::route(app, &segments, req).await,
            },
        },
    }
}

/// Liveness; with `verbose=1`, each mirror's state and lag too (a mirror that is down
/// never makes the engine unhealthy or unready: ingestion does not depend on it).
fn healthz(app: &App, query: Option<&str>) -> Outcome {
    let query = Query::parse(query);
    let verbose = match query.get("verbose") {
        None | Some("0") => false,
        Some("1") => true,
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "verbose must be 0 or 1",
            )
            .with_field("verbose"))
        }
    };
    if !verbose {
        return Ok(json_response(StatusCode::OK, &json!({"status":"ok"})));
    }
    let load = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
    let mirrors: Vec<_> = app
        .metrics
        .sinks()
        .iter()
        .map(|(name, stats)| {
            json!({
                "sink": name,
                "state": stats.state().as_str(),
                "lagRecords": load(&stats.lag_records),
                "lagSeconds": load(&stats.lag_ms) as f64 / 1000.0,
                "gaps": load(&stats.gaps),
                "errors": load(&stats.errors),
            })
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"status":"ok", "mirrors": mirrors}),
    ))
}

fn readyz(app: &App) -> Outcome {
    app.refuse_if_not_serving()?;
    Ok(json_response(StatusCode::OK, &json!({"status":"ready"})))
}

/// Marks an answer carrying admin data (or refusing it) as never to be stored by a
/// browser or proxy: a shared machine's cache must not keep what the token unlocked.
fn no_store(outcome: Outcome) -> Outcome {
    let mut response = outcome.unwrap_or_else(ApiError::into_response);
    response.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// The route label and 404 for paths no route of this port matches.
fn unknown_route() -> (&'static str, Outcome) {
    (
        "unknown",
        Err(ApiError::not_found(
            "not_found",
            "no such route on this port",
        )),
    )
}

/// Refuses methods other than `allowed` with 405 and an `Allow` header.
fn only(method: &Method, allowed: Method) -> Result<(), ApiError> {
    if *method == allowed {
        Ok(())
    } else {
        Err(method_not_allowed(&[allowed]))
    }
}

fn method_not_allowed(allowed: &[Method]) -> ApiError {
    let list = allowed
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let mut e = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("allowed: {list}"),
    );
    e.allow = Some(list);
    e
}

/// Validates a player id taken from a path or body field.
fn player_id(raw: &str, field: &str) -> Result<String, ApiError> {
    check_player_id(raw).map_err(|m| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", m).with_field(field)
    })?;
    Ok(raw.to_owned())
}

fn mesh_error(e: MeshError) -> ApiError {
    match e {
        MeshError::Overloaded => ApiError::overloaded(),
        MeshError::Stopped => ApiError::shutting_down(),
        MeshError::Failed => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_failed",
            "this shard stopped after a storage failure; nothing was applied",
        )
        .retry_after(60),
    }
}

/// Longest a request over its client's own budget is held (see [`hold_over_budget`]):
/// long enough that a refusal loop costs a timer rather than a thread, short enough
/// that a client retrying by `Retry-After` is not kept much beyond it.
const OVER_BUDGET_HOLD_MS_MAX: u64 = 1_000;

/// Holds a request that is over its client's own budget (its host's leaderboard read
/// units, its share of the idempotency store) until that budget will have grown back,
/// at most [`OVER_BUDGET_HOLD_MS_MAX`]; returns the wait left (0 when the budget should
/// now hold it). The caller then serves the request if it fits, or refuses it with the
/// wait left as its `Retry-After`.
///
/// Answered at once, a client that loops on its refusals turns each one into another
/// request, as fast as the shard thread can answer, and the honest requests on that
/// thread queue behind them (the hostile mix of `loadtest/hostile.sh`: 11,000 refused
/// reads a second took the honest writes' p50 from 1 to 70 ms). Held, each of its
/// connections costs a timer and one request per hold, and a host holds at most
/// `MAX_CONNECTIONS_PER_HOST` connections.
async fn hold_over_budget(wait_ms: u64) -> u64 {
    let held_ms = wait_ms.min(OVER_BUDGET_HOLD_MS_MAX);
    tokio::time::sleep(std::time::Duration::from_millis(held_ms)).await;
    wait_ms - held_ms
}
