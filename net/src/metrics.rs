//! Prometheus metrics. No metric has a per-player label: cardinality stays bounded by
//! the number of services, routes, statuses and reasons, all fixed sets.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use liveops_engine::fairness::FlagKind;
use liveops_mirror::{SinkState, SinkStats};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every `reason` of `dropped_events_total`: a request refused as a whole (bad signature,
/// malformed body) counts once, an event refused inside a batch once per event.
pub const DROP_REASONS: [&str; 10] = [
    "bad_signature",
    "invalid",
    "blocked",
    "rate_limited",
    "overloaded",
    "players_full",
    "player_limit",
    "too_large",
    "replay",
    "replay_window_full",
];

pub struct Metrics {
    registry: Registry,
    /// Requests by service, route template and status code.
    pub requests: IntCounterVec,
    /// Request latency by service and route template, seconds.
    pub latency: HistogramVec,
    /// Events refused, by reason (the seed's name).
    pub dropped_events: IntCounterVec,
    /// Fairness flags, by kind (the seed's name).
    pub anomaly_flags: IntCounterVec,
    /// Events accepted.
    pub events_accepted: prometheus::IntCounter,
    /// State-change records applied by the shards.
    pub records_applied: prometheus::IntCounter,
    /// Cross-shard jobs refused because the target queue was full.
    pub queue_full: prometheus::IntCounter,
    /// Players held, per shard.
    pub players: IntGaugeVec,
    /// Live idempotency keys, per shard.
    pub idempotency_keys: IntGaugeVec,
    /// 1 once the engine accepts traffic.
    pub ready: IntGauge,
    /// Shards stopped by a failed write or fsync (they acknowledge nothing more until a
    /// restart): an alert pages on any.
    pub storage_failed_shards: IntGauge,
    /// Connections refused at accept, by reason (`process_limit`, `host_limit`).
    pub connections_refused: IntCounterVec,
    /// Failed accept calls (e.g. out of file descriptors); their log lines are sampled.
    pub accept_errors: prometheus::IntCounter,
    /// Open client connections, all ports.
    pub connections_open: IntGauge,
    /// Hosts at `MAX_CONNECTIONS_PER_HOST` whose new connection attempts the kernel
    /// drops (`syn_gate`): refusals that cost no accept.
    pub connection_hosts_gated: IntGauge,
    /// The last log position known durable, per shard: its rate is the log's write rate,
    /// and a shard whose position stops moving while others move is stuck.
    pub wal_durable_lsn: IntGaugeVec,
    /// Log segment files on disk, per shard (checkpoints drop covered ones; a growing
    /// count means a mirror's retention hold or failing checkpoints).
    pub wal_segments: IntGaugeVec,
    /// The change feed's sinks (mirrors), set once at start when any is configured;
    /// their series are refreshed from the sinks' counters at each scrape.
    sinks: OnceLock<Vec<(&'static str, Arc<SinkStats>)>>,
    mirror: MirrorMetrics,
}

/// Per sink (label `sink`): how far behind it is and what it did.
struct MirrorMetrics {
    lag_records: IntGaugeVec,
    lag_seconds: prometheus::GaugeVec,
    /// 1 for the sink's current state (`up`, `degraded`, `resyncing`), 0 for the others.
    state: IntGaugeVec,
    records: IntCounterVec,
    writes: IntCounterVec,
    errors: IntCounterVec,
    reconnects: IntCounterVec,
    resyncs: IntCounterVec,
    gaps: IntCounterVec,
}

impl MirrorMetrics {
    fn new(registry: &Registry) -> MirrorMetrics {
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &["sink"]).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let lag_seconds = prometheus::GaugeVec::new(
            Opts::new(
                "liveops_mirror_lag_seconds",
                "Age of the newest record a mirror applied, while more wait behind it.",
            ),
            &["sink"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(lag_seconds.clone()))
            .expect("unique metric");
        MirrorMetrics {
            lag_records: gauge(
                "liveops_mirror_lag_records",
                "Durable log records a mirror has not applied yet, all shards.",
                &["sink"],
            ),
            lag_seconds,
            state: gauge(
                "liveops_mirror_state",
                "1 for a mirror's current state (up, degraded, resyncing).",
                &["sink", "state"],
            ),
            records: counter(
                "liveops_mirror_records_total",
                "Log records a mirror applied (again after a retry).",
            ),
            writes: counter(
                "liveops_mirror_writes_total",
                "Rows or commands a mirror wrote to its server.",
            ),
            errors: counter(
                "liveops_mirror_errors_total",
                "Failed mirror passes, each followed by a backoff.",
            ),
            reconnects: counter(
                "liveops_mirror_reconnects_total",
                "Connections a mirror reopened.",
            ),
            resyncs: counter(
                "liveops_mirror_resyncs_total",
                "Rebuilds of a mirror from the engine's state.",
            ),
            gaps: counter(
                "liveops_mirror_gaps_total",
                "Stretches of log a mirror could not read any more (see its log and mirror_gaps).",
            ),
        }
    }

    /// Brings each series up to the sink's counters.
    fn refresh(&self, sink: &str, stats: &SinkStats) {
        let load = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
        self.lag_records
            .with_label_values(&[sink])
            .set(i64::try_from(load(&stats.lag_records)).unwrap_or(i64::MAX));
        self.lag_seconds
            .with_label_values(&[sink])
            .set(load(&stats.lag_ms) as f64 / 1000.0);
        let current = stats.state();
        for state in SinkState::ALL {
            self.state
                .with_label_values(&[sink, state.as_str()])
                .set(i64::from(state == current));
        }
        for (counter, value) in [
            (&self.records, &stats.records_applied),
            (&self.writes, &stats.writes),
            (&self.errors, &stats.errors),
            (&self.reconnects, &stats.reconnects),
            (&self.resyncs, &stats.resyncs),
            (&self.gaps, &stats.gaps),
        ] {
            let counter = counter.with_label_values(&[sink]);
            counter.inc_by(load(value).saturating_sub(counter.get()));
        }
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "liveops_http_requests_total",
                "HTTP requests by service, route and status.",
            ),
            &["service", "route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "liveops_http_request_duration_seconds",
                "HTTP request latency by service and route.",
            )
            .buckets(vec![
                0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                1.0,
            ]),
            &["service", "route"],
        )
        .expect("valid metric");
        let dropped_events = IntCounterVec::new(
            Opts::new("dropped_events_total", "Events refused, by reason."),
            &["reason"],
        )
        .expect("valid metric");
        let anomaly_flags = IntCounterVec::new(
            Opts::new("anomaly_flags_total", "Fairness flags raised, by kind."),
            &["kind"],
        )
        .expect("valid metric");
        let events_accepted =
            prometheus::IntCounter::new("liveops_events_accepted_total", "Events accepted.")
                .expect("valid metric");
        let records_applied = prometheus::IntCounter::new(
            "liveops_records_applied_total",
            "State-change records applied by the shards.",
        )
        .expect("valid metric");
        let queue_full = prometheus::IntCounter::new(
            "liveops_shard_queue_full_total",
            "Cross-shard jobs refused because the target shard's queue was full.",
        )
        .expect("valid metric");
        let players = IntGaugeVec::new(
            Opts::new("liveops_players", "Players held, per shard."),
            &["shard"],
        )
        .expect("valid metric");
        let idempotency_keys = IntGaugeVec::new(
            Opts::new(
                "liveops_idempotency_keys",
                "Live idempotency keys, per shard.",
            ),
            &["shard"],
        )
        .expect("valid metric");
        let ready = IntGauge::new(
            "liveops_ready",
            "1 once recovery finished and traffic is accepted.",
        )
        .expect("valid metric");
        let storage_failed_shards = IntGauge::new(
            "liveops_storage_failed_shards",
            "Shards stopped by a failed write or fsync (restart to recover).",
        )
        .expect("valid metric");
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "liveops_connections_refused_total",
                "Connections refused at accept with 503, by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for reason in ["process_limit", "host_limit"] {
            connections_refused.with_label_values(&[reason]);
        }
        let accept_errors = prometheus::IntCounter::new(
            "liveops_accept_errors_total",
            "Failed accept calls (e.g. out of file descriptors).",
        )
        .expect("valid metric");
        let connections_open =
            IntGauge::new("liveops_connections_open", "Open client connections.")
                .expect("valid metric");
        let connection_hosts_gated = IntGauge::new(
            "liveops_connection_hosts_gated",
            "Hosts at MAX_CONNECTIONS_PER_HOST whose new connection attempts the kernel drops.",
        )
        .expect("valid metric");
        let wal_durable_lsn = IntGaugeVec::new(
            Opts::new(
                "liveops_wal_durable_lsn",
                "Last write-ahead log position known durable, per shard.",
            ),
            &["shard"],
        )
        .expect("valid metric");
        let wal_segments = IntGaugeVec::new(
            Opts::new(
                "liveops_wal_segments",
                "Write-ahead log segment files on disk, per shard.",
            ),
            &["shard"],
        )
        .expect("valid metric");
        // Alerts and dashboards need every series to exist before its first increment:
        // `rate()` over a series that appears mid-incident misses the incident's start.
        for reason in DROP_REASONS {
            dropped_events.with_label_values(&[reason]);
        }
        for kind in FlagKind::ALL {
            anomaly_flags.with_label_values(&[kind.as_str()]);
        }
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(dropped_events.clone()),
            Box::new(anomaly_flags.clone()),
            Box::new(events_accepted.clone()),
            Box::new(records_applied.clone()),
            Box::new(queue_full.clone()),
            Box::new(players.clone()),
            Box::new(idempotency_keys.clone()),
            Box::new(ready.clone()),
            Box::new(storage_failed_shards.clone()),
            Box::new(connections_refused.clone()),
            Box::new(accept_errors.clone()),
            Box::new(connections_open.clone()),
            Box::new(connection_hosts_gated.clone()),
            Box::new(wal_durable_lsn.clone()),
            Box::new(wal_segments.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        let mirror = MirrorMetrics::new(&registry);
        Metrics {
            mirror,
            sinks: OnceLock::new(),
            registry,
            requests,
            latency,
            dropped_events,
            anomaly_flags,
            events_accepted,
            records_applied,
            queue_full,
            players,
            idempotency_keys,
            ready,
            storage_failed_shards,
            connections_refused,
            accept_errors,
            connections_open,
            connection_hosts_gated,
            wal_durable_lsn,
            wal_segments,
        }
    }

    /// The counters the accept loops update.
    pub fn connection_counters(&self) -> crate::runtime::ConnectionCounters {
        crate::runtime::ConnectionCounters {
            refused_process: self
                .connections_refused
                .with_label_values(&["process_limit"]),
            refused_host: self.connections_refused.with_label_values(&["host_limit"]),
            accept_errors: self.accept_errors.clone(),
            open: self.connections_open.clone(),
            gated_hosts: self.connection_hosts_gated.clone(),
        }
    }

    /// Registers the configured sinks (once, at start): their series exist from then on.
    pub fn set_sinks(&self, sinks: Vec<(&'static str, Arc<SinkStats>)>) {
        let sinks = self.sinks.get_or_init(|| sinks);
        for (name, stats) in sinks {
            self.mirror.refresh(name, stats);
        }
    }

    /// The configured sinks and their counters (empty without mirrors).
    pub fn sinks(&self) -> &[(&'static str, Arc<SinkStats>)] {
        self.sinks.get().map_or(&[], Vec::as_slice)
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        for (name, stats) in self.sinks() {
            self.mirror.refresh(name, stats);
        }
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding to a Vec cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_and_kind_is_exported_from_the_start() {
        let text = String::from_utf8(Metrics::new().render()).unwrap();
        for reason in DROP_REASONS {
            assert!(
                text.contains(&format!("dropped_events_total{{reason=\"{reason}\"}} 0")),
                "{reason}: {text}"
            );
        }
        for kind in FlagKind::ALL {
            let line = format!("anomaly_flags_total{{kind=\"{}\"}} 0", kind.as_str());
            assert!(text.contains(&line), "{line}: {text}");
        }
    }
}
