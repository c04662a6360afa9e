//! Recording (HdrHistograms and status counts per request class) and the reports.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency a histogram tracks, microseconds (larger values are clamped). The
/// per-request timeout is at most 60 s, so nothing recorded comes near it.
const HIST_MAX_US: u64 = 120_000_000;
/// Significant digits of the histograms: 0.1 % resolution.
const HIST_SIGFIG: u8 = 3;
/// Most seconds the per-second worst latencies cover: a run is at most 3,600 s plus its
/// warm-up and drain; later completions fold into the last second.
const SECONDS_TRACKED_MAX: usize = 4_000;

/// What a request is, for the per-class counts and histograms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// `POST /events` on the gateway port.
    Write,
    /// `GET /leaderboard?window=weekly&limit=N` on the leaderboard port.
    ReadTop,
    /// `GET /leaderboard/players/{id}?window=weekly` on the leaderboard port.
    ReadRank,
}

impl Class {
    pub const ALL: [Class; 3] = [Class::Write, Class::ReadTop, Class::ReadRank];

    pub fn name(self) -> &'static str {
        match self {
            Class::Write => "write",
            Class::ReadTop => "read_top",
            Class::ReadRank => "read_rank",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Whether an HTTP status is a success for this class. A rank read's 404 (a player
    /// with no score in the window yet) is expected, not an error.
    pub fn is_ok(self, status: u16) -> bool {
        match self {
            Class::Write => status == 202 || status == 208,
            Class::ReadTop => status == 200,
            Class::ReadRank => status == 200 || status == 404,
        }
    }
}

/// Why a request got no HTTP response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No answer within the timeout after its intended send time.
    Timeout,
    /// The connection broke while sending or receiving.
    Io,
    /// A new connection (after the previous one broke) could not be opened.
    Connect,
}

impl Failure {
    fn key(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Io => "io_error",
            Failure::Connect => "connect_error",
        }
    }
}

/// What one class recorded.
#[derive(Clone, Debug)]
pub struct ClassStats {
    /// Latency from intended send time to response (or to giving up, for timeouts),
    /// microseconds.
    pub hist: Histogram<u64>,
    /// Responses by HTTP status.
    pub status: BTreeMap<u16, u64>,
    pub timeouts: u64,
    pub io_errors: u64,
    pub connect_errors: u64,
    /// Due but never sent before the run ended.
    pub unsent: u64,
    /// Events in requests that got a response.
    pub events_sent: u64,
    /// Events the engine accepted (202; a batch's `accepted`).
    pub events_accepted: u64,
    /// Latest completion, nanoseconds after `t0`.
    pub last_done_ns: u64,
    /// The worst latency of the requests completed in each second after `t0`,
    /// microseconds: a percentile says how many requests were slow, this says when (one
    /// long stall or many short ones).
    pub worst_us_by_second: Vec<u64>,
}

impl Default for ClassStats {
    fn default() -> Self {
        ClassStats {
            hist: Histogram::new_with_bounds(1, HIST_MAX_US, HIST_SIGFIG)
                .expect("valid histogram bounds"),
            status: BTreeMap::new(),
            timeouts: 0,
            io_errors: 0,
            connect_errors: 0,
            unsent: 0,
            events_sent: 0,
            events_accepted: 0,
            last_done_ns: 0,
            worst_us_by_second: Vec::new(),
        }
    }
}

impl ClassStats {
    pub fn record_response(
        &mut self,
        status: u16,
        latency_ns: u64,
        done_ns: u64,
        events_sent: u64,
        events_accepted: u64,
    ) {
        self.hist.saturating_record(latency_ns / 1000);
        *self.status.entry(status).or_insert(0) += 1;
        self.events_sent += events_sent;
        self.events_accepted += events_accepted;
        self.last_done_ns = self.last_done_ns.max(done_ns);
        self.note_worst(latency_ns, done_ns);
    }

    fn note_worst(&mut self, latency_ns: u64, done_ns: u64) {
        let second = ((done_ns / 1_000_000_000) as usize).min(SECONDS_TRACKED_MAX - 1);
        if self.worst_us_by_second.len() <= second {
            self.worst_us_by_second.resize(second + 1, 0);
        }
        let worst = &mut self.worst_us_by_second[second];
        *worst = (*worst).max(latency_ns / 1000);
    }

    /// A request without a response. Timeouts go into the histogram at the time they
    /// were given up (a lower bound of their latency); broken connections do not.
    pub fn record_failure(&mut self, failure: Failure, latency_ns: u64, done_ns: u64) {
        match failure {
            Failure::Timeout => {
                self.timeouts += 1;
                self.hist.saturating_record(latency_ns / 1000);
                self.note_worst(latency_ns, done_ns);
            }
            Failure::Io => self.io_errors += 1,
            Failure::Connect => self.connect_errors += 1,
        }
        self.last_done_ns = self.last_done_ns.max(done_ns);
    }

    pub fn merge(&mut self, other: &ClassStats) {
        self.hist.add(&other.hist).expect("same histogram bounds");
        for (status, n) in &other.status {
            *self.status.entry(*status).or_insert(0) += n;
        }
        self.timeouts += other.timeouts;
        self.io_errors += other.io_errors;
        self.connect_errors += other.connect_errors;
        self.unsent += other.unsent;
        self.events_sent += other.events_sent;
        self.events_accepted += other.events_accepted;
        self.last_done_ns = self.last_done_ns.max(other.last_done_ns);
        if self.worst_us_by_second.len() < other.worst_us_by_second.len() {
            self.worst_us_by_second
                .resize(other.worst_us_by_second.len(), 0);
        }
        for (mine, theirs) in self
            .worst_us_by_second
            .iter_mut()
            .zip(&other.worst_us_by_second)
        {
            *mine = (*mine).max(*theirs);
        }
    }

    /// Requests that got a response.
    pub fn completed(&self) -> u64 {
        self.status.values().sum()
    }

    fn failures(&self) -> u64 {
        self.timeouts + self.io_errors + self.connect_errors + self.unsent
    }
}

/// The recordings of all classes (one per shard of connections, merged at the end).
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub classes: [ClassStats; 3],
}

impl Stats {
    pub fn class_mut(&mut self, class: Class) -> &mut ClassStats {
        &mut self.classes[class.index()]
    }

    pub fn class(&self, class: Class) -> &ClassStats {
        &self.classes[class.index()]
    }

    pub fn merge(&mut self, other: &Stats) {
        for (mine, theirs) in self.classes.iter_mut().zip(&other.classes) {
            mine.merge(theirs);
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct LatencyMs {
    /// Values in the histogram (responses and timeouts).
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl LatencyMs {
    pub fn from_histogram(hist: &Histogram<u64>) -> LatencyMs {
        if hist.is_empty() {
            return LatencyMs::default();
        }
        LatencyMs {
            count: hist.len(),
            mean: hist.mean() / 1000.0,
            p50: us_to_ms(hist.value_at_quantile(0.50)),
            p90: us_to_ms(hist.value_at_quantile(0.90)),
            p95: us_to_ms(hist.value_at_quantile(0.95)),
            p99: us_to_ms(hist.value_at_quantile(0.99)),
            p99_9: us_to_ms(hist.value_at_quantile(0.999)),
            max: us_to_ms(hist.max()),
        }
    }
}

/// One class of requests over the measured window.
#[derive(Clone, Debug, Serialize)]
pub struct ClassReport {
    /// Requests intended inside the measured window.
    pub scheduled: u64,
    /// Of those, requests that got an HTTP response (any status).
    pub completed: u64,
    /// Responses with a success status (writes: 202, 208; top reads: 200; rank reads:
    /// 200 and the expected 404).
    pub ok: u64,
    /// `scheduled - ok`: error statuses, timeouts, broken connections, unsent.
    pub errors: u64,
    pub error_rate: f64,
    /// `completed / elapsed_s`.
    pub throughput_rps: f64,
    /// Events in answered write requests (0 for reads).
    pub events_sent: u64,
    /// Events the engine accepted (0 for reads).
    pub events_accepted: u64,
    /// Rank reads answered 404 (player not on the board yet): counted in `ok`.
    pub not_found: u64,
    /// Counts by HTTP status (`"202"`, `"429"`, ...) and failure (`"timeout"`,
    /// `"io_error"`, `"connect_error"`, `"unsent"`).
    pub status: BTreeMap<String, u64>,
    pub latency_ms: LatencyMs,
    /// The worst latency of the requests completed in each second of the run (warm-up
    /// included), milliseconds.
    pub latency_max_ms_by_second: Vec<f64>,
}

impl ClassReport {
    pub fn new(class: Class, stats: &ClassStats, scheduled: u64, elapsed_s: f64) -> ClassReport {
        let completed = stats.completed();
        let ok: u64 = stats
            .status
            .iter()
            .filter(|(s, _)| class.is_ok(**s))
            .map(|(_, n)| n)
            .sum();
        let mut status: BTreeMap<String, u64> = stats
            .status
            .iter()
            .map(|(s, n)| (s.to_string(), *n))
            .collect();
        for (key, n) in [
            (Failure::Timeout.key(), stats.timeouts),
            (Failure::Io.key(), stats.io_errors),
            (Failure::Connect.key(), stats.connect_errors),
            ("unsent", stats.unsent),
        ] {
            if n > 0 {
                status.insert(key.to_string(), n);
            }
        }
        // Every scheduled request ends as exactly one response or failure; should a
        // task have been cut off mid-request, `scheduled - ok` still counts it.
        let errors = ((completed - ok) + stats.failures()).max(scheduled.saturating_sub(ok));
        ClassReport {
            scheduled,
            completed,
            ok,
            errors,
            error_rate: ratio(errors, scheduled),
            throughput_rps: completed as f64 / elapsed_s,
            events_sent: stats.events_sent,
            events_accepted: stats.events_accepted,
            not_found: if class == Class::ReadRank {
                stats.status.get(&404).copied().unwrap_or(0)
            } else {
                0
            },
            status,
            latency_ms: LatencyMs::from_histogram(&stats.hist),
            latency_max_ms_by_second: stats
                .worst_us_by_second
                .iter()
                .map(|&us| us_to_ms(us))
                .collect(),
        }
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Whether the generator kept to its schedule.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GeneratorReport {
    /// When the schedule ended: the age of the oldest request that was due but not yet
    /// sent (0 when every due request had been sent). Requests wait for a free
    /// connection, so this grows when every connection is busy (the engine is slower
    /// than the rate: raise `--connections` or lower `--rate`) or when the generator
    /// is out of CPU.
    pub behind_at_end_ms: f64,
    /// Requests due but not yet sent when the schedule ended.
    pub queued_at_end: u64,
    /// Largest such age seen during the measured window.
    pub max_behind_ms: f64,
    /// `behind_at_end_ms` above [`BEHIND_LIMIT_MS`]: the rate was not delivered.
    pub fell_behind: bool,
    /// How late the pacing thread released requests (sleep overshoot, CPU starvation):
    /// a floor under every latency measured.
    pub pacer_late_p50_ms: f64,
    pub pacer_late_p99_ms: f64,
    pub pacer_late_max_ms: f64,
    /// Failed attempts to (re)open a connection.
    pub connect_errors: u64,
}

/// `behind_at_end_ms` above this marks a run as fallen behind.
pub const BEHIND_LIMIT_MS: f64 = 10.0;

/// The result of one constant-rate run, over the measured window only.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// Requests per second asked for (writes and reads).
    pub target_rate: f64,
    pub write_rate: f64,
    pub read_rate: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// From the start of the measured window to the last measured completion (at least
    /// `duration_s`): the divisor of every rate below.
    pub elapsed_s: f64,
    /// Requests intended inside the measured window.
    pub scheduled: u64,
    pub completed: u64,
    pub ok: u64,
    pub errors: u64,
    pub error_rate: f64,
    /// Answered requests per second.
    pub throughput_rps: f64,
    /// Events in answered writes.
    pub events_sent: u64,
    pub events_accepted: u64,
    /// Accepted events per second.
    pub events_per_s: f64,
    /// All classes together, by status / failure.
    pub status: BTreeMap<String, u64>,
    /// `write`, `read_top`, `read_rank`: only the classes the run sent.
    pub classes: BTreeMap<String, ClassReport>,
    pub generator: GeneratorReport,
}

impl RunReport {
    /// The worst p99 among the classes, milliseconds.
    pub fn worst_p99_ms(&self) -> f64 {
        self.classes
            .values()
            .map(|c| c.latency_ms.p99)
            .fold(0.0, f64::max)
    }

    /// The human summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "rate {:.0}/s asked ({:.0} writes, {:.0} reads) for {} s after {} s warm-up; measured over {:.2} s",
            self.target_rate,
            self.write_rate,
            self.read_rate,
            self.duration_s,
            self.warmup_s,
            self.elapsed_s
        );
        let _ = writeln!(
            out,
            "requests: {} scheduled, {} answered, {} ok, {} errors ({:.3} %); throughput {:.1} req/s",
            self.scheduled,
            self.completed,
            self.ok,
            self.errors,
            self.error_rate * 100.0,
            self.throughput_rps
        );
        if self.events_sent > 0 {
            let _ = writeln!(
                out,
                "events: {} sent, {} accepted; {:.1} accepted events/s",
                self.events_sent, self.events_accepted, self.events_per_s
            );
        }
        let _ = writeln!(out, "status: {}", render_status(&self.status));
        let g = &self.generator;
        let _ = writeln!(
            out,
            "generator: behind at end {:.3} ms ({} queued), max behind {:.3} ms, pacer late p50 {:.3} / p99 {:.3} / max {:.3} ms, connect errors {}{}",
            g.behind_at_end_ms,
            g.queued_at_end,
            g.max_behind_ms,
            g.pacer_late_p50_ms,
            g.pacer_late_p99_ms,
            g.pacer_late_max_ms,
            g.connect_errors,
            if g.fell_behind {
                "  << FELL BEHIND: the rate was not delivered"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "{:<10} {:>10} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  (latency ms)",
            "class", "answered", "req/s", "p50", "p90", "p95", "p99", "p99.9", "max"
        );
        for class in Class::ALL {
            if let Some(c) = self.classes.get(class.name()) {
                let l = &c.latency_ms;
                let _ = writeln!(
                    out,
                    "{:<10} {:>10} {:>11.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                    class.name(),
                    c.completed,
                    c.throughput_rps,
                    l.p50,
                    l.p90,
                    l.p95,
                    l.p99,
                    l.p99_9,
                    l.max
                );
                let _ = writeln!(
                    out,
                    "{:<10} status: {}{}",
                    "",
                    render_status(&c.status),
                    if c.not_found > 0 {
                        " (404: player not ranked yet, expected)"
                    } else {
                        ""
                    }
                );
            }
        }
        out
    }
}

fn render_status(status: &BTreeMap<String, u64>) -> String {
    if status.is_empty() {
        return "-".into();
    }
    status
        .iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_report_counts_and_percentiles() {
        let mut s = ClassStats::default();
        for k in 1..=1000u64 {
            s.record_response(202, k * 1_000_000 / 1000, k, 1, 1);
        }
        s.record_response(429, 500_000, 2000, 1, 0);
        s.record_failure(Failure::Timeout, 5_000_000_000, 3000);
        s.record_failure(Failure::Io, 1, 3001);
        s.unsent = 3;
        let r = ClassReport::new(Class::Write, &s, 1006, 2.0);
        assert_eq!(r.completed, 1001);
        assert_eq!(r.ok, 1000);
        assert_eq!(r.errors, 6);
        assert_eq!(r.status["202"], 1000);
        assert_eq!(r.status["429"], 1);
        assert_eq!(r.status["timeout"], 1);
        assert_eq!(r.status["io_error"], 1);
        assert_eq!(r.status["unsent"], 3);
        assert_eq!(r.latency_ms.count, 1002);
        assert!((r.latency_ms.p50 - 0.5).abs() < 0.01, "{:?}", r.latency_ms);
        assert!(
            (r.latency_ms.max - 5000.0).abs() < 5.0,
            "{:?}",
            r.latency_ms
        );
        assert_eq!(s.last_done_ns, 3001);
        assert!((r.throughput_rps - 500.5).abs() < 1e-9);
    }

    #[test]
    fn worst_latency_is_kept_per_second_of_completion_and_merged_by_max() {
        let second_ns = 1_000_000_000;
        let mut a = ClassStats::default();
        a.record_response(202, 2_000_000, second_ns / 2, 1, 1);
        a.record_response(202, 7_000_000, second_ns / 3, 1, 1);
        a.record_failure(Failure::Timeout, 5 * second_ns, 3 * second_ns + 1);
        a.record_failure(Failure::Io, 9 * second_ns, 5 * second_ns);
        let mut b = ClassStats::default();
        b.record_response(202, 9_000_000, second_ns / 4, 1, 1);
        b.record_response(202, 1_000_000, 4 * second_ns, 1, 1);
        a.merge(&b);
        let r = ClassReport::new(Class::Write, &a, 5, 5.0);
        // Second 5 is absent: a broken connection has no latency.
        assert_eq!(r.latency_max_ms_by_second, vec![9.0, 0.0, 0.0, 5000.0, 1.0]);
    }

    #[test]
    fn rank_404_is_expected() {
        let mut s = ClassStats::default();
        s.record_response(404, 1000, 1, 0, 0);
        s.record_response(200, 1000, 1, 0, 0);
        let r = ClassReport::new(Class::ReadRank, &s, 2, 1.0);
        assert_eq!((r.ok, r.errors, r.not_found), (2, 0, 1));
        let r = ClassReport::new(Class::ReadTop, &s, 2, 1.0);
        assert_eq!((r.ok, r.errors, r.not_found), (1, 1, 0));
    }

    #[test]
    fn merge_adds_everything() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        a.class_mut(Class::Write)
            .record_response(202, 1_000_000, 10, 5, 5);
        b.class_mut(Class::Write)
            .record_response(202, 3_000_000, 20, 5, 4);
        b.class_mut(Class::ReadTop)
            .record_failure(Failure::Connect, 0, 30);
        a.merge(&b);
        let w = a.class(Class::Write);
        assert_eq!(w.status[&202], 2);
        assert_eq!((w.events_sent, w.events_accepted), (10, 9));
        assert_eq!(w.hist.len(), 2);
        assert_eq!(w.last_done_ns, 20);
        assert_eq!(a.class(Class::ReadTop).connect_errors, 1);
    }
}
