//! The constant-rate schedule: request `i` of a lane is intended to be sent at
//! `t0 + i / rate`, whatever happened to the requests before it.

/// One lane's schedule: `warmup` requests first (not recorded), then `measured` ones.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Requests per second.
    pub rate: f64,
    /// Requests intended during the warm-up: indices `0..warmup`.
    pub warmup: u64,
    /// Every request of the run: indices `0..total`; `warmup..total` are measured.
    pub total: u64,
}

const NANOS_PER_SEC: f64 = 1e9;

impl Schedule {
    /// The schedule of `rate` requests per second for `warmup_s` then `duration_s`
    /// seconds. `rate` must be positive and finite.
    pub fn new(rate: f64, warmup_s: f64, duration_s: f64) -> Schedule {
        assert!(rate.is_finite() && rate > 0.0, "rate must be positive");
        let warmup = (warmup_s * rate).ceil() as u64;
        let measured = (duration_s * rate).round() as u64;
        Schedule {
            rate,
            warmup,
            total: warmup + measured,
        }
    }

    /// Requests that are measured (intended after the warm-up).
    pub fn measured(&self) -> u64 {
        self.total - self.warmup
    }

    /// Whether request `i` is recorded.
    pub fn is_measured(&self, i: u64) -> bool {
        i >= self.warmup && i < self.total
    }

    /// Intended send time of request `i`, in nanoseconds after `t0`.
    pub fn offset_ns(&self, i: u64) -> u64 {
        (i as f64 * NANOS_PER_SEC / self.rate) as u64
    }

    /// How many requests are due `elapsed_ns` after `t0`: those with
    /// `offset_ns(i) <= elapsed_ns`, at most `total`.
    pub fn due(&self, elapsed_ns: u64) -> u64 {
        let exact = elapsed_ns as f64 * self.rate / NANOS_PER_SEC;
        let mut n = (exact.floor() as u64).saturating_add(1);
        // Float rounding can put the boundary one index off either way: settle it with
        // `offset_ns` itself so both functions always agree.
        while n > 0 && self.offset_ns(n - 1) > elapsed_ns {
            n -= 1;
        }
        while n < self.total && self.offset_ns(n) <= elapsed_ns {
            n += 1;
        }
        n.min(self.total)
    }

    /// Offset of the end of the schedule: the intended time of the request after the last.
    pub fn end_ns(&self) -> u64 {
        self.offset_ns(self.total)
    }

    /// Offset at which measuring starts.
    pub fn measure_start_ns(&self) -> u64 {
        self.offset_ns(self.warmup)
    }
}

/// How many even numbers lie in `start..end`.
pub fn evens_in(start: u64, end: u64) -> u64 {
    if end <= start {
        0
    } else {
        end.div_ceil(2) - start.div_ceil(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_rate_and_durations() {
        let s = Schedule::new(1000.0, 2.0, 10.0);
        assert_eq!(s.warmup, 2000);
        assert_eq!(s.measured(), 10_000);
        assert_eq!(s.total, 12_000);
        assert!(!s.is_measured(1999));
        assert!(s.is_measured(2000));
        assert!(s.is_measured(11_999));
        assert!(!s.is_measured(12_000));
        assert_eq!(s.measure_start_ns(), 2_000_000_000);
        assert_eq!(s.end_ns(), 12_000_000_000);

        let s = Schedule::new(3.0, 0.0, 1.0);
        assert_eq!((s.warmup, s.total), (0, 3));
        // A partial warm-up request is still warm-up.
        let s = Schedule::new(3.0, 0.5, 1.0);
        assert_eq!((s.warmup, s.total), (2, 5));
    }

    #[test]
    fn intended_times_are_evenly_spaced() {
        let s = Schedule::new(40_000.0, 0.0, 1.0);
        assert_eq!(s.offset_ns(0), 0);
        assert_eq!(s.offset_ns(1), 25_000);
        assert_eq!(s.offset_ns(40_000), 1_000_000_000);
        let s = Schedule::new(3.0, 0.0, 1.0);
        assert_eq!(s.offset_ns(1), 333_333_333);
        assert_eq!(s.offset_ns(2), 666_666_666);
        // No drift over an hour at the highest rate.
        let s = Schedule::new(10_000_000.0, 0.0, 3600.0);
        assert_eq!(s.offset_ns(36_000_000_000), 3_600_000_000_000);
    }

    #[test]
    fn due_agrees_with_offsets() {
        for rate in [0.7, 1.0, 3.0, 999.9, 40_000.0, 123_457.0, 10_000_000.0] {
            let s = Schedule::new(rate, 1.0, 5.0);
            let mut prev = 0;
            for k in 0..5000u64 {
                // Elapsed times around and between intended times.
                let e = k * 6_000_001 % 6_100_000_000 + k % 3;
                let n = s.due(e);
                assert!(n <= s.total);
                if n > 0 {
                    assert!(s.offset_ns(n - 1) <= e, "rate {rate} e {e} n {n}");
                }
                if n < s.total {
                    assert!(s.offset_ns(n) > e, "rate {rate} e {e} n {n}");
                }
                if k > 0 && e >= prev {
                    assert!(n >= s.due(prev));
                }
                prev = e;
            }
            assert_eq!(s.due(0), 1);
            assert_eq!(s.due(u64::MAX / 2), s.total);
            assert_eq!(s.due(s.end_ns()), s.total);
        }
    }

    #[test]
    fn even_counting() {
        assert_eq!(evens_in(0, 0), 0);
        assert_eq!(evens_in(0, 1), 1);
        assert_eq!(evens_in(0, 10), 5);
        assert_eq!(evens_in(1, 10), 4);
        assert_eq!(evens_in(1, 2), 0);
        assert_eq!(evens_in(3, 9), 3);
        assert_eq!(evens_in(9, 3), 0);
        for a in 0..20 {
            for b in a..20 {
                assert_eq!(evens_in(a, b), (a..b).filter(|i| i & 1 == 0).count() as u64);
            }
        }
    }
}
