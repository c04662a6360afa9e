//! Leaderboard windows and their periods, on UTC boundaries of the engine's clock.
//!
//! A period is named the way operators read it: daily `2026-11-24`, weekly (ISO week,
//! Monday 00:00 UTC) `2026-W48`, seasonal the configured season id. Each period also
//! carries its end instant so the hot path compares one integer instead of formatting
//! a date per event.

use std::fmt;
use std::str::FromStr;

const DAY_MS: u64 = 86_400_000;
const WEEK_MS: u64 = 7 * DAY_MS;
/// 1970-01-01 was a Thursday; ISO weeks start on Monday, three days later in the week.
const EPOCH_WEEKDAY_FROM_MONDAY: u64 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowKind {
    Daily,
    Weekly,
    Seasonal,
}

impl WindowKind {
    pub const ALL: [WindowKind; 3] = [WindowKind::Daily, WindowKind::Weekly, WindowKind::Seasonal];
    pub const COUNT: usize = Self::ALL.len();

    /// Position in [`WindowKind::ALL`], for per-window arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WindowKind::Daily => "daily",
            WindowKind::Weekly => "weekly",
            WindowKind::Seasonal => "seasonal",
        }
    }

    /// The period containing `now_ms`, with the instant it closes.
    pub fn period_at(self, now_ms: u64, season: &str) -> Period {
        match self {
            WindowKind::Daily => {
                let start_ms = now_ms - now_ms % DAY_MS;
                Period {
                    name: day_name(start_ms),
                    ends_ms: start_ms + DAY_MS,
                }
            }
            WindowKind::Weekly => {
                let days = now_ms / DAY_MS;
                // Saturating: the days before the first Monday of 1970 all fall in 1970-W01.
                let start_day = days.saturating_sub((days + EPOCH_WEEKDAY_FROM_MONDAY) % 7);
                let start_ms = start_day * DAY_MS;
                Period {
                    name: iso_week_name(start_ms),
                    ends_ms: start_ms + WEEK_MS,
                }
            }
            WindowKind::Seasonal => Period {
                name: season.to_owned(),
                // A season closes only when the operator configures another one.
                ends_ms: u64::MAX,
            },
        }
    }
}

impl fmt::Display for WindowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WindowKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "daily" => Ok(WindowKind::Daily),
            "weekly" => Ok(WindowKind::Weekly),
            "seasonal" => Ok(WindowKind::Seasonal),
            _ => Err(format!(
                "unknown window {s:?}; expected daily, weekly or seasonal"
            )),
        }
    }
}

/// One period of a window.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Period {
    pub name: String,
    /// First instant (unix ms) that belongs to the next period.
    pub ends_ms: u64,
}

fn utc_date(ms: u64) -> time::Date {
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .date()
}

fn day_name(ms: u64) -> String {
    let date = utc_date(ms);
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

fn iso_week_name(ms: u64) -> String {
    let (year, week, _) = utc_date(ms).to_iso_week_date();
    format!("{year:04}-W{week:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-24T12:00:00Z, a Tuesday in ISO week 48.
    const TUE_MS: u64 = 1_795_521_600_000;

    #[test]
    fn daily_boundaries() {
        let p = WindowKind::Daily.period_at(TUE_MS, "1");
        assert_eq!(p.name, "2026-11-24");
        assert_eq!(p.ends_ms, TUE_MS + DAY_MS / 2);
        assert_eq!(
            WindowKind::Daily.period_at(p.ends_ms - 1, "1").name,
            "2026-11-24"
        );
        assert_eq!(
            WindowKind::Daily.period_at(p.ends_ms, "1").name,
            "2026-11-25"
        );
    }

    #[test]
    fn weekly_is_iso_monday_based() {
        let p = WindowKind::Weekly.period_at(TUE_MS, "1");
        assert_eq!(p.name, "2026-W48");
        // Monday 2026-11-30 00:00 UTC starts W49.
        assert_eq!(p.ends_ms, 1_795_996_800_000);
        assert_eq!(
            WindowKind::Weekly.period_at(p.ends_ms - 1, "1").name,
            "2026-W48"
        );
        assert_eq!(
            WindowKind::Weekly.period_at(p.ends_ms, "1").name,
            "2026-W49"
        );
        // ISO year differs from the calendar year around New Year: 2027-01-01 is in 2026-W53.
        assert_eq!(
            WindowKind::Weekly.period_at(1_798_761_600_000, "1").name,
            "2026-W53"
        );
        assert_eq!(WindowKind::Weekly.period_at(0, "1").name, "1970-W01");
    }

    #[test]
    fn seasonal_never_ends_on_its_own() {
        let p = WindowKind::Seasonal.period_at(TUE_MS, "s7");
        assert_eq!(p.name, "s7");
        assert_eq!(p.ends_ms, u64::MAX);
    }

    #[test]
    fn parses_names() {
        for kind in WindowKind::ALL {
            assert_eq!(kind.as_str().parse::<WindowKind>(), Ok(kind));
        }
        assert!("monthly".parse::<WindowKind>().is_err());
    }
}
