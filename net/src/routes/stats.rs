//! `GET /stats` (fairness port, admin): the operator console's live numbers in one JSON
//! document. Everything comes from the process's metrics and the shards' inbox lengths,
//! read with atomic loads: no job reaches a shard, so polling it every second costs the
//! shards nothing and cannot delay a write. Counters are cumulative since the start; the
//! console turns two polls into rates and per-interval latency percentiles.

use std::sync::atomic::Ordering;

use hyper::StatusCode;
use prometheus::core::Collector;
use serde::Serialize;

use super::{App, Outcome};
use crate::config::Service;
use crate::http::json_response;
use crate::mesh::unix_now_ms;
use crate::metrics::{Metrics, DROP_REASONS};
use liveops_engine::fairness::FlagKind;

/// The whole document.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Stats {
    /// When the numbers were read (unix ms): the console's rates divide by the
    /// difference between two polls' stamps, not by its own timer's.
    at_ms: u64,
    /// Recovery finished and no shard failed.
    ready: bool,
    /// The enabled leaderboard windows (`LB_WINDOWS`): the console's board picker.
    windows: Vec<&'static str>,
    /// Events accepted since the start.
    events_accepted: u64,
    /// Events refused since the start, by reason (`dropped_events_total`).
    events_refused: Vec<Count>,
    /// Fairness flags since the start, by kind (`anomaly_flags_total`).
    flags: Vec<Count>,
    /// Log records made durable since the start, all shards.
    wal_records: u64,
    /// Open client connections, all ports.
    connections_open: i64,
    /// Requests and their latency, per service.
    services: Vec<ServiceStats>,
    /// One entry per shard, in shard order.
    shards: Vec<ShardStats>,
    /// The configured mirrors and buses (empty without any).
    mirrors: Vec<MirrorStats>,
}

/// One labelled counter's value.
#[derive(Serialize)]
struct Count {
    /// The label (a refusal reason or a flag kind).
    name: &'static str,
    /// Its value since the start.
    count: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceStats {
    /// The port's service (`gateway`, `fairness`, ...).
    service: &'static str,
    /// Requests answered since the start.
    requests: u64,
    /// Of which answered 5xx.
    requests_5xx: u64,
    /// The latency histogram, cumulative as Prometheus keeps it: `count` requests took at
    /// most `le_seconds` each.
    latency_buckets: Vec<Bucket>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Bucket {
    /// The bucket's upper bound; the last one is `null` (+Inf, which JSON lacks).
    le_seconds: Option<f64>,
    /// Requests at or under the bound (cumulative).
    count: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ShardStats {
    /// The shard's index.
    shard: usize,
    /// Stopped after a storage failure: acknowledges nothing until a restart.
    failed: bool,
    /// Players the shard holds (its memory use grows with them).
    players: i64,
    /// Live idempotency keys on the shard (bounded by `IDEMP_KEYS_MAX`).
    idempotency_keys: i64,
    /// Writes waiting in the shard's inbox (full at the inbox bound: 503 `overloaded`).
    queued_writes: usize,
    /// Reads waiting in the shard's inbox.
    queued_reads: usize,
    /// The last write-ahead log position known durable.
    wal_durable_lsn: i64,
    /// Log segment files on disk.
    wal_segments: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MirrorStats {
    /// `redis`, `postgres`, or the bus (`nats`, `sqs`, `servicebus`).
    sink: &'static str,
    /// `up`, `degraded` or `resyncing`.
    state: &'static str,
    /// Durable log records it has not applied yet, all shards.
    lag_records: u64,
    /// Age of the newest record it applied while more wait behind it.
    lag_seconds: f64,
    /// Failed passes since the start (each followed by a backoff).
    errors: u64,
    /// Stretches of log it could not read any more.
    gaps: u64,
}

pub(super) fn stats(app: &App) -> Outcome {
    let m = &app.metrics;
    let shard_gauge =
        |vec: &prometheus::IntGaugeVec, shard: &str| vec.with_label_values(&[shard]).get();
    let shards = (0..app.mesh.shards())
        .map(|shard| {
            let label = shard.to_string();
            let (queued_writes, queued_reads) = app.mesh.queued(shard);
            ShardStats {
                shard,
                failed: app.mesh.failed(shard),
                players: shard_gauge(&m.players, &label),
                idempotency_keys: shard_gauge(&m.idempotency_keys, &label),
                queued_writes,
                queued_reads,
                wal_durable_lsn: shard_gauge(&m.wal_durable_lsn, &label),
                wal_segments: shard_gauge(&m.wal_segments, &label),
            }
        })
        .collect();
    let load = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
    let mirrors = m
        .sinks()
        .iter()
        .map(|(sink, s)| MirrorStats {
            sink,
            state: s.state().as_str(),
            lag_records: load(&s.lag_records),
            lag_seconds: load(&s.lag_ms) as f64 / 1000.0,
            errors: load(&s.errors),
            gaps: load(&s.gaps),
        })
        .collect();
    let stats = Stats {
        at_ms: unix_now_ms(),
        ready: app.ready.load(Ordering::Acquire) && !app.mesh.any_failed(),
        windows: app.policy.windows.iter().map(|w| w.as_str()).collect(),
        events_accepted: m.events_accepted.get(),
        events_refused: DROP_REASONS
            .iter()
            .map(|&name| Count {
                name,
                count: m.dropped_events.with_label_values(&[name]).get(),
            })
            .collect(),
        flags: FlagKind::ALL
            .iter()
            .map(|kind| Count {
                name: kind.as_str(),
                count: m.anomaly_flags.with_label_values(&[kind.as_str()]).get(),
            })
            .collect(),
        wal_records: m.records_applied.get(),
        connections_open: m.connections_open.get(),
        services: service_stats(m),
        shards,
        mirrors,
    };
    Ok(json_response(StatusCode::OK, &stats))
}

/// Sums the request counters and latency histograms of each service's routes.
fn service_stats(m: &Metrics) -> Vec<ServiceStats> {
    let mut out: Vec<ServiceStats> = Service::ALL
        .iter()
        .map(|s| ServiceStats {
            service: s.as_str(),
            requests: 0,
            requests_5xx: 0,
            latency_buckets: Vec::new(),
        })
        .collect();
    let label = |metric: &prometheus::proto::Metric, name: &str| {
        metric
            .get_label()
            .iter()
            .find(|l| l.name() == name)
            .map(|l| l.value().to_owned())
    };
    let entry = |out: &[ServiceStats], service: Option<String>| {
        let service = service?;
        out.iter().position(|s| s.service == service)
    };
    for family in m.requests.collect() {
        for metric in family.get_metric() {
            let Some(i) = entry(&out, label(metric, "service")) else {
                continue;
            };
            let count = metric.get_counter().get_value() as u64;
            out[i].requests += count;
            if label(metric, "status").is_some_and(|s| s.starts_with('5')) {
                out[i].requests_5xx += count;
            }
        }
    }
    for family in m.latency.collect() {
        for metric in family.get_metric() {
            let Some(i) = entry(&out, label(metric, "service")) else {
                continue;
            };
            let histogram = metric.get_histogram();
            let buckets = &mut out[i].latency_buckets;
            if buckets.is_empty() {
                buckets.extend(histogram.get_bucket().iter().map(|b| Bucket {
                    le_seconds: Some(b.upper_bound()),
                    count: 0,
                }));
                buckets.push(Bucket {
                    le_seconds: None,
                    count: 0,
                });
            }
            let finite = histogram.get_bucket().iter().map(|b| b.cumulative_count());
            // Every series of the vector has the same bounds; the +Inf bucket is the count.
            for (bucket, count) in buckets
                .iter_mut()
                .zip(finite.chain([histogram.get_sample_count()]))
            {
                bucket.count += count;
            }
        }
    }
    out
}
