//! Prometheus metrics. No metric has a per-player label: cardinality stays bounded by
//! the number of services, routes, statuses and reasons, all fixed sets.

use liveops_engine::fairness::FlagKind;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every `reason` of `dropped_events_total`: a request refused as a whole (bad signature,
/// malformed body) counts once, an event refused inside a batch once per event.
pub const DROP_REASONS: [&str; 8] = [
    "bad_signature",
    "invalid",
    "blocked",
    "rate_limited",
    "overloaded",
    "players_full",
    "player_limit",
    "too_large",
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
    /// Connections refused at accept, by reason (`process_limit`, `host_limit`).
    pub connections_refused: IntCounterVec,
    /// Failed accept calls (e.g. out of file descriptors); their log lines are sampled.
    pub accept_errors: prometheus::IntCounter,
    /// Open client connections, all ports.
    pub connections_open: IntGauge,
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
            Box::new(connections_refused.clone()),
            Box::new(accept_errors.clone()),
            Box::new(connections_open.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Metrics {
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
            connections_refused,
            accept_errors,
            connections_open,
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
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
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
