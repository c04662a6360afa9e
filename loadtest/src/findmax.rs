//! `--find-max`: the highest constant rate whose runs meet a p99 bound.
//!
//! Short runs ("steps") at increasing rates: doubling from `start_rate` until a step
//! fails (or halving until one passes, if the first fails), then a binary search between
//! the last passing and the first failing rate until they are within `resolution` of
//! each other. A step fails when the worst class's p99 is above the bound, more than
//! `max_error_rate` of its requests failed, or the generator fell behind its schedule
//! by more than the bound when the step ended.

use serde::Serialize;

use crate::config::{RunConfig, MAX_DURATION_S, MAX_RATE, MAX_WARMUP_S};
use crate::stats::RunReport;

/// Most steps of one search.
pub const MAX_STEPS: usize = 60;
/// Lowest rate the search goes down to.
pub const MIN_RATE: f64 = 1.0;

#[derive(Clone, Debug, Serialize)]
pub struct FindMaxConfig {
    /// The p99 bound, milliseconds.
    pub p99_ms: f64,
    pub start_rate: f64,
    /// The search never asks more than this.
    pub max_rate: f64,
    pub step_duration_s: f64,
    pub step_warmup_s: f64,
    /// Pause between steps, for the engine to settle.
    pub pause_s: f64,
    /// Stop when `(fail - pass) / pass` is at most this.
    pub resolution: f64,
    /// A step fails with more errors than this fraction of its requests.
    pub max_error_rate: f64,
    pub max_steps: usize,
}

impl Default for FindMaxConfig {
    fn default() -> Self {
        FindMaxConfig {
            p99_ms: 2.0,
            start_rate: 1000.0,
            max_rate: 1_000_000.0,
            step_duration_s: 5.0,
            step_warmup_s: 1.0,
            pause_s: 1.0,
            resolution: 0.05,
            max_error_rate: 0.01,
            max_steps: 30,
        }
    }
}

impl FindMaxConfig {
    pub fn validate(&self) -> Result<(), String> {
        let check = |name: &str, v: f64, lo: f64, hi: f64| {
            if v.is_finite() && v >= lo && v <= hi {
                Ok(())
            } else {
                Err(format!("{name} must be between {lo} and {hi}, got {v}"))
            }
        };
        check("p99-ms", self.p99_ms, 0.001, 60_000.0)?;
        check("start-rate", self.start_rate, MIN_RATE, MAX_RATE)?;
        check("max-rate", self.max_rate, self.start_rate, MAX_RATE)?;
        check("step-duration", self.step_duration_s, 0.1, MAX_DURATION_S)?;
        check("step-warmup", self.step_warmup_s, 0.0, MAX_WARMUP_S)?;
        check("step-pause", self.pause_s, 0.0, 60.0)?;
        check("resolution", self.resolution, 0.001, 1.0)?;
        check("max-error-rate", self.max_error_rate, 0.0, 1.0)?;
        if !(1..=MAX_STEPS).contains(&self.max_steps) {
            return Err(format!("max-steps must be 1-{MAX_STEPS}"));
        }
        Ok(())
    }
}

/// One step of the search.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub index: usize,
    /// `ramp_up`, `ramp_down` or `bisect`.
    pub phase: &'static str,
    pub rate: f64,
    pub pass: bool,
    /// Why it failed (empty when it passed).
    pub reasons: Vec<String>,
    /// The worst class's p99, milliseconds.
    pub p99_ms: f64,
    pub error_rate: f64,
    pub behind_at_end_ms: f64,
    pub report: RunReport,
}

/// The outcome of a search.
#[derive(Clone, Debug, Serialize)]
pub struct FindMaxReport {
    pub p99_bound_ms: f64,
    /// The highest passing rate (requests/s); `null` if no step passed.
    pub max_rate: Option<f64>,
    /// Accepted events/s at that rate.
    pub max_events_per_s: Option<f64>,
    /// The lowest failing rate seen above it; `null` if none failed.
    pub first_failing_rate: Option<f64>,
    /// Whether the search stopped at the `max_rate` ceiling.
    pub hit_ceiling: bool,
    pub steps: Vec<Step>,
}

/// Judges one step.
pub fn judge(report: &RunReport, fm: &FindMaxConfig) -> (bool, Vec<String>) {
    let mut reasons = Vec::new();
    let p99 = report.worst_p99_ms();
    if p99 > fm.p99_ms {
        reasons.push(format!("p99 {p99:.3} ms > {} ms", fm.p99_ms));
    }
    if report.error_rate > fm.max_error_rate {
        reasons.push(format!(
            "errors {:.3} % > {} %",
            report.error_rate * 100.0,
            fm.max_error_rate * 100.0
        ));
    }
    if report.generator.behind_at_end_ms > fm.p99_ms {
        reasons.push(format!(
            "fell behind by {:.3} ms",
            report.generator.behind_at_end_ms
        ));
    }
    (reasons.is_empty(), reasons)
}

/// Searches with `run_step(rate)` performing one step. Separate from the runner so the
/// search itself can be tested without a server.
pub fn search<F, S>(
    fm: &FindMaxConfig,
    mut run_step: F,
    mut on_step: S,
) -> anyhow::Result<FindMaxReport>
where
    F: FnMut(f64) -> anyhow::Result<RunReport>,
    S: FnMut(&Step),
{
    fm.validate().map_err(anyhow::Error::msg)?;
    let mut steps: Vec<Step> = Vec::new();
    let mut pass: Option<f64> = None;
    let mut fail: Option<f64> = None;
    let mut do_step =
        |rate: f64, phase: &'static str, steps: &mut Vec<Step>| -> anyhow::Result<bool> {
            let report = run_step(rate)?;
            let (ok, reasons) = judge(&report, fm);
            let step = Step {
                index: steps.len() + 1,
                phase,
                rate,
                pass: ok,
                reasons,
                p99_ms: report.worst_p99_ms(),
                error_rate: report.error_rate,
                behind_at_end_ms: report.generator.behind_at_end_ms,
                report,
            };
            on_step(&step);
            steps.push(step);
            Ok(ok)
        };

    // Ramp: double while passing, or halve while failing.
    let mut rate = fm.start_rate;
    let mut hit_ceiling = false;
    if do_step(rate, "ramp_up", &mut steps)? {
        pass = Some(rate);
        while steps.len() < fm.max_steps {
            if rate >= fm.max_rate {
                hit_ceiling = true;
                break;
            }
            rate = (rate * 2.0).min(fm.max_rate);
            if do_step(rate, "ramp_up", &mut steps)? {
                pass = Some(rate);
            } else {
                fail = Some(rate);
                break;
            }
        }
    } else {
        fail = Some(rate);
        while steps.len() < fm.max_steps && rate / 2.0 >= MIN_RATE {
            rate /= 2.0;
            if do_step(rate, "ramp_down", &mut steps)? {
                pass = Some(rate);
                break;
            }
            fail = Some(rate);
        }
    }

    // Bisect between the last pass and the first fail.
    if let (Some(mut lo), Some(mut hi)) = (pass, fail) {
        while steps.len() < fm.max_steps && (hi - lo) / lo > fm.resolution {
            let mid = ((lo + hi) / 2.0).round().max(MIN_RATE);
            if mid <= lo || mid >= hi {
                break;
            }
            if do_step(mid, "bisect", &mut steps)? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        pass = Some(lo);
        fail = Some(hi);
    }

    let max_events_per_s = pass.and_then(|p| {
        steps
            .iter()
            .rfind(|s| s.pass && s.rate == p)
            .map(|s| s.report.events_per_s)
    });
    Ok(FindMaxReport {
        p99_bound_ms: fm.p99_ms,
        max_rate: pass,
        max_events_per_s,
        first_failing_rate: fail,
        hit_ceiling,
        steps,
    })
}

/// Runs the search against the engine: each step is a [`crate::run`] of `base` at the
/// step's rate, `step_duration_s` long after `step_warmup_s` of warm-up.
pub fn find_max<S: FnMut(&Step)>(
    base: &RunConfig,
    fm: &FindMaxConfig,
    on_step: S,
) -> anyhow::Result<FindMaxReport> {
    let mut first = true;
    search(
        fm,
        |rate| {
            if !first {
                std::thread::sleep(std::time::Duration::from_secs_f64(fm.pause_s));
            }
            first = false;
            let mut cfg = base.clone();
            cfg.rate = rate;
            cfg.duration_s = fm.step_duration_s;
            cfg.warmup_s = fm.step_warmup_s;
            crate::runner::run(&cfg)
        },
        on_step,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{ClassReport, ClassStats, GeneratorReport};
    use std::collections::BTreeMap;

    /// A fake step: p99 grows with the rate, crossing 2 ms at `knee`.
    fn fake(rate: f64, knee: f64) -> RunReport {
        let mut stats = ClassStats::default();
        let p99_us = (rate / knee * 2000.0) as u64;
        for _ in 0..100 {
            stats.record_response(202, p99_us * 1000, 0, 1, 1);
        }
        let class = ClassReport::new(crate::stats::Class::Write, &stats, 100, 1.0);
        let mut classes = BTreeMap::new();
        classes.insert("write".to_string(), class);
        RunReport {
            target_rate: rate,
            write_rate: rate,
            read_rate: 0.0,
            duration_s: 1.0,
            warmup_s: 0.0,
            elapsed_s: 1.0,
            scheduled: 100,
            completed: 100,
            ok: 100,
            errors: 0,
            error_rate: 0.0,
            throughput_rps: rate,
            events_sent: 100,
            events_accepted: 100,
            events_per_s: rate,
            status: BTreeMap::new(),
            classes,
            generator: GeneratorReport::default(),
        }
    }

    #[test]
    fn finds_the_knee_within_resolution() {
        for knee in [1500.0, 37_000.0, 250_000.0] {
            let fm = FindMaxConfig::default();
            let mut seen = 0;
            let r = search(&fm, |rate| Ok(fake(rate, knee)), |_| seen += 1).unwrap();
            let max = r.max_rate.unwrap();
            let fail = r.first_failing_rate.unwrap();
            assert!(max <= knee * 1.001, "knee {knee}: max {max}");
            assert!(
                (fail - max) / max <= fm.resolution,
                "knee {knee}: {max}..{fail}"
            );
            assert!(
                max >= knee * (1.0 - 2.0 * fm.resolution),
                "knee {knee}: max {max}"
            );
            assert_eq!(seen, r.steps.len());
            assert!(r.steps.len() <= fm.max_steps);
            assert!(!r.hit_ceiling);
        }
    }

    #[test]
    fn ramps_down_when_the_start_fails() {
        let fm = FindMaxConfig {
            start_rate: 10_000.0,
            ..FindMaxConfig::default()
        };
        let r = search(&fm, |rate| Ok(fake(rate, 900.0)), |_| {}).unwrap();
        assert_eq!(r.steps[0].phase, "ramp_up");
        assert!(r.steps.iter().any(|s| s.phase == "ramp_down"));
        let max = r.max_rate.unwrap();
        assert!((800.0..=900.0).contains(&max), "{max}");
    }

    #[test]
    fn stops_at_the_ceiling_and_when_nothing_passes() {
        let fm = FindMaxConfig {
            max_rate: 5000.0,
            ..FindMaxConfig::default()
        };
        let r = search(&fm, |rate| Ok(fake(rate, 1e9)), |_| {}).unwrap();
        assert_eq!(r.max_rate, Some(5000.0));
        assert!(r.hit_ceiling);
        assert_eq!(r.first_failing_rate, None);

        let r = search(&fm, |rate| Ok(fake(rate, 0.1)), |_| {}).unwrap();
        assert_eq!(r.max_rate, None);
        assert!(r.steps.len() <= fm.max_steps);
    }

    #[test]
    fn errors_and_lag_fail_a_step() {
        let fm = FindMaxConfig::default();
        let mut report = fake(100.0, 1e9);
        assert!(judge(&report, &fm).0);
        report.error_rate = 0.02;
        let (ok, reasons) = judge(&report, &fm);
        assert!(!ok && reasons[0].contains("errors"), "{reasons:?}");
        report.error_rate = 0.0;
        report.generator.behind_at_end_ms = 50.0;
        let (ok, reasons) = judge(&report, &fm);
        assert!(!ok && reasons[0].contains("behind"), "{reasons:?}");
    }
}
