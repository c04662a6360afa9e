//! `liveops-loadtest`: an open-loop load generator for the LiveOps Guard engine.
//!
//! # Coordinated omission, and how this tool avoids it
//!
//! A closed-loop generator (each connection sends, waits for the answer, sends again) slows
//! down exactly when the server does: while the server stalls for 100 ms, a connection
//! sends nothing, so the requests that real clients would have sent during the stall are
//! never sent and never measured. The stall shows up as one slow sample instead of
//! hundreds, and the percentiles look far better than what users would see. The
//! generator has "coordinated" with the server to "omit" the bad samples.
//!
//! This tool is open-loop: request `i` of a run is *intended* to be sent at
//! `t0 + i / rate`, a schedule fixed before the run starts and independent of how the
//! server answers. A pacing thread releases each request when its time comes (precise
//! OS sleeps, off the async runtime); released requests wait in a queue for a free
//! keep-alive connection; and every latency is measured from the request's intended
//! send time to the end of its response, so time spent queued behind a slow server
//! counts, as it would for a real client. A stall of 100 ms at 10,000 requests/s
//! therefore appears as 1,000 requests with latencies from 100 ms down to 0, as it
//! should. If the generator cannot keep up (all connections busy, or out of CPU), the
//! report says how far behind the schedule it was when the run ended
//! (`generator.behind_at_end_ms`) instead of silently sending less; the pacing thread's
//! own lateness is reported too (`generator.pacer_late_*`), and is a floor under every
//! latency measured. By default the pacing thread wakes at most every 100 us
//! (`--pace-quantum-us`, 0 for every request): at high rates this saves a third of the
//! generator's CPU (each wake-up is a context switch on both sides), and the up to
//! 100 us a request may wait for its release is in its latency, not hidden.
//!
//! Latencies go into HdrHistograms (microseconds, 3 significant digits), one per request
//! class: `write` (`POST /events`), `read_top` (`GET /leaderboard?window=weekly&limit=N`)
//! and `read_rank` (`GET /leaderboard/players/{id}?window=weekly`). Requests intended
//! during the warm-up are sent but not recorded. When the schedule ends, requests
//! already due are still sent and awaited, up to the per-request timeout counted from
//! their intended time; a timed-out request is recorded at the time it was given up.
//!
//! # Safety
//!
//! Only loopback targets are accepted (127.0.0.0/8, `::1`, `localhost`): see
//! [`config::parse_loopback_host`]. Every run ends by itself: the duration is at most
//! an hour, the warm-up ten minutes, the drain the per-request timeout (at most 60 s),
//! and a `--find-max` search at most [`findmax::MAX_STEPS`] steps.
//!
//! # What is sent
//!
//! Writes are signed (`X-Signature: sha256=<hex HMAC-SHA256 of the body>`) with the
//! engine's `HMAC_SECRET`: one event object, or a JSON array of `batch` events. Players
//! are `lt_0 .. lt_{players-1}`, picked uniformly or by a Zipf law (`lt_0` the most
//! popular). Event types follow the mix; `ts` is the current unix time; `deltaXp` and
//! `points` are 1..=100 (nothing the fairness guard's score model would flag); boss and
//! drop ids come from small fixed sets. With `idempotency_keys`, each write carries a
//! unique `Idempotency-Key`. A fraction `read_ratio` of the requests are reads on the
//! leaderboard port, alternately top-N and a picked player's rank (a 404 there, for a
//! player with no score yet, is expected and counted in `not_found`, not as an error).
//! Writes and reads are two lanes, each at its share of the rate with its own schedule
//! and connection pool.
//!
//! # The JSON report
//!
//! `loadtest --json FILE` writes one object:
//!
//! - `tool` (`"liveops-loadtest"`), `version`, `mode` (`"run"` or `"find_max"`),
//!   `started_at` (unix seconds), `config` (every option except the secret: `host`,
//!   `port`, `read_port`, `rate`, `duration_s`, `warmup_s`, `connections`,
//!   `read_connections`, `threads`, `players`, `popularity`
//!   (`{"kind":"uniform"}` or `{"kind":"zipf","s":1.1}`), `mix`, `batch`, `read_ratio`,
//!   `top_n`, `idempotency_keys`, `timeout_s`, `seed`, `pace_quantum_us`).
//! - mode `run`: `result`, a run report (below).
//! - mode `find_max`: `find_max_config` (`p99_ms`, `start_rate`, `max_rate`,
//!   `step_duration_s`, `step_warmup_s`, `pause_s`, `resolution`, `max_error_rate`,
//!   `max_steps`) and `find_max`: `p99_bound_ms`, `max_rate` (highest passing rate in
//!   requests/s, or `null`), `max_events_per_s`, `first_failing_rate`, `hit_ceiling`,
//!   and `steps`: each `index`, `phase` (`ramp_up`, `ramp_down`, `bisect`), `rate`,
//!   `pass`, `reasons`, `p99_ms` (worst class), `error_rate`, `behind_at_end_ms` and
//!   `report` (a run report).
//!
//! A run report ([`stats::RunReport`]) covers the measured window only: `target_rate`,
//! `write_rate`, `read_rate` (requests/s asked), `duration_s`, `warmup_s`, `elapsed_s`
//! (measured-window start to last measured completion, at least `duration_s`; the
//! divisor of every rate), `scheduled`, `completed` (got an HTTP response), `ok`,
//! `errors` (`scheduled - ok`), `error_rate`, `throughput_rps` (answered requests/s),
//! `events_sent`, `events_accepted`, `events_per_s` (accepted events/s), `status`
//! (counts by HTTP status `"202"`, `"429"`, ... and by failure `"timeout"`,
//! `"io_error"`, `"connect_error"`, `"unsent"`), `classes` (`write`, `read_top`,
//! `read_rank`, those sent: each with `scheduled`, `completed`, `ok`, `errors`,
//! `error_rate`, `throughput_rps`, `events_sent`, `events_accepted`, `not_found`,
//! `status`, and `latency_ms`: `count`, `mean`, `p50`, `p90`, `p95`, `p99`, `p99_9`,
//! `max`), and `generator`: `behind_at_end_ms`, `queued_at_end`, `max_behind_ms`,
//! `fell_behind` (behind at end > 10 ms), `pacer_late_p50_ms`, `pacer_late_p99_ms`,
//! `pacer_late_max_ms`, `connect_errors`.
//!
//! Success statuses: writes 202 and 208, top reads 200, rank reads 200 and 404.

pub mod config;
pub mod fairsim;
pub mod findmax;
pub mod runner;
pub mod schedule;
pub mod stats;
pub mod workload;

pub use config::{parse_loopback_host, Mix, Popularity, RunConfig};
pub use findmax::{find_max, FindMaxConfig, FindMaxReport, Step};
pub use runner::run;
pub use stats::{ClassReport, LatencyMs, RunReport};
