//! The knobs of a simulated population: named profiles, and every parameter settable by
//! name (`--param key=value`), so the guard can be judged on populations it was not
//! tuned on.

use std::fmt;

use serde::Serialize;

use super::family::Family;

/// Most simulated players.
pub const PLAYERS_MAX: u32 = 200_000;
/// Longest run, seconds of real time.
pub const DURATION_MAX_S: f64 = 600.0;

/// A rejected parameter or profile.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParamError {
    #[error("unknown profile {0:?} (default, whales, casual, stress)")]
    UnknownProfile(String),
    #[error("unknown parameter {0:?} (see --print-params)")]
    UnknownKey(String),
    #[error("parameter {key}: {value:?} is not a number")]
    NotANumber { key: String, value: String },
    #[error("parameter {key}: {value} is outside {min}..={max}")]
    OutOfRange {
        key: String,
        value: f64,
        min: f64,
        max: f64,
    },
    #[error("parameter {key}: minimum {min} is above maximum {max}")]
    EmptyRange { key: String, min: f64, max: f64 },
    #[error("expected key=value, got {0:?}")]
    Syntax(String),
    #[error("unknown cheat family {0:?}")]
    UnknownFamily(String),
}

/// A closed range `[min, max]` a value is drawn from uniformly.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Span {
    /// Lowest value drawn.
    pub min: f64,
    /// Highest value drawn.
    pub max: f64,
}

impl Span {
    pub const fn new(min: f64, max: f64) -> Span {
        Span { min, max }
    }
}

/// Everything that shapes the population and its play. Times are in *simulated*
/// seconds (`_sim_s`) or real seconds (`_s`); see `time_scale` and `idle_scale`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Params {
    /// Profile these values started from.
    pub profile: &'static str,
    /// Simulated players.
    pub players: u32,
    /// Percent of the players who cheat (each after an honest start).
    pub cheaters_percent: f64,
    /// Percent of the honest players who are pros (earn `pro_multiplier` times the median).
    pub pros_percent: f64,
    /// How many times the median honest earning rate a pro earns.
    pub pro_multiplier: Span,
    /// Log-normal sigma of a non-pro's XP-per-action factor (skill; median 1).
    pub skill_sigma: f64,
    /// Log-normal sigma of a non-pro's pace factor (actions per second; median 1).
    pub activity_sigma: f64,
    /// Median simulated seconds between two actions of a median player in a session.
    pub action_gap_sim_s: f64,
    /// Probability that an action follows the previous one in a burst (short gap).
    pub burst_prob: f64,
    /// Gap inside a burst, simulated seconds.
    pub burst_gap_sim_s: Span,
    /// Shortest gap any human leaves between two actions, simulated seconds.
    pub human_gap_min_sim_s: f64,
    /// Median session length, simulated seconds (log-normal, sigma 0.7).
    pub session_sim_s: f64,
    /// Median idle gap between sessions, simulated seconds (log-normal, sigma 1).
    pub idle_sim_s: f64,
    /// Simulated seconds per real second inside sessions (1: real time).
    pub time_scale: f64,
    /// Simulated seconds per real second in idle gaps between sessions.
    pub idle_scale: f64,
    /// Simulated seconds of play planned before the run starts and not sent, so the
    /// run sees play already under way (boss fights ending in its first seconds).
    pub warmup_sim_s: f64,
    /// Progression `deltaXp` of a median player, drawn uniformly.
    pub progression_xp: Span,
    /// Probability that an action is a boss fight rather than a progression event.
    pub boss_share: f64,
    /// A boss kill is worth this many median progression events (the table's scale).
    pub boss_points_ratio: f64,
    /// Multiplier on every boss's minimum honest kill time.
    pub boss_min_kill_scale: f64,
    /// Probability that a progression event opens a chest (one loot roll).
    pub chest_prob: f64,
    /// Fraction of the population's clients that send an `Idempotency-Key` with every event.
    pub keyed_fraction: f64,
    /// When a cheater starts cheating, as a fraction of the run.
    pub cheat_start: Span,
    /// `speed`: events per real second (below the rate limit, far above a human).
    pub speed_rate_per_s: Span,
    /// `inflate`: factor on `deltaXp` and `points`.
    pub inflate_factor: Span,
    /// `boss_farm`: how many times faster than the boss's minimum kill time.
    pub farm_speedup: Span,
    /// `luck`: simulated seconds between two claims of a rare drop.
    pub luck_gap_sim_s: Span,
    /// `luck`: the `weight` of the rare drops claimed (the loot table's rare tier).
    pub luck_weight: Span,
    /// `replay`: real seconds between two re-sends of the same signed body.
    pub replay_gap_s: Span,
    /// `flood`: burst rate as a multiple of `rate_limit_max`.
    pub flood_factor: Span,
    /// `flood`: length of one burst, real seconds.
    pub flood_burst_s: Span,
    /// `flood`: real seconds from one burst's start to the next.
    pub flood_every_s: Span,
    /// `injection`: how many huge events.
    pub injection_count: Span,
    /// `injection`: XP of one huge event.
    pub injection_xp: Span,
    /// The engine's `RATE_LIMIT_MAX` (floods are sized from it).
    pub rate_limit_max: f64,
    /// Relative weight of each cheat family among the cheaters (0 disables it).
    pub family_weights: [f64; Family::ALL.len()],
}

impl Params {
    /// The named profile's values.
    pub fn profile(name: &str) -> Result<Params, ParamError> {
        let base = Params::default_profile();
        Ok(match name {
            "default" => base,
            // Fewer, much more engaged players: wide skill and activity tails, many pros
            // who earn up to 15 times the median, long sessions, fast hands.
            "whales" => Params {
                profile: "whales",
                players: 500,
                pros_percent: 10.0,
                pro_multiplier: Span::new(6.0, 15.0),
                skill_sigma: 0.9,
                activity_sigma: 0.8,
                action_gap_sim_s: 3.0,
                session_sim_s: 600.0,
                idle_sim_s: 600.0,
                boss_share: 0.02,
                chest_prob: 0.15,
                keyed_fraction: 0.9,
                ..base
            },
            // Many light players: slow cadence, short sessions, long absences, few pros.
            "casual" => Params {
                profile: "casual",
                players: 2000,
                pros_percent: 1.0,
                skill_sigma: 0.35,
                activity_sigma: 0.4,
                action_gap_sim_s: 8.0,
                burst_prob: 0.2,
                session_sim_s: 60.0,
                idle_sim_s: 3600.0,
                boss_share: 0.005,
                keyed_fraction: 0.2,
                cheat_start: Span::new(0.1, 0.6),
                ..base
            },
            // Heavy tails everywhere, a fifth of the players cheating early.
            "stress" => Params {
                profile: "stress",
                players: 3000,
                cheaters_percent: 20.0,
                pros_percent: 5.0,
                pro_multiplier: Span::new(5.0, 12.0),
                skill_sigma: 1.0,
                activity_sigma: 1.0,
                action_gap_sim_s: 2.5,
                burst_prob: 0.5,
                progression_xp: Span::new(5.0, 150.0),
                boss_share: 0.02,
                keyed_fraction: 0.5,
                cheat_start: Span::new(0.05, 0.4),
                inflate_factor: Span::new(3.0, 50.0),
                ..base
            },
            other => return Err(ParamError::UnknownProfile(other.to_owned())),
        })
    }

    fn default_profile() -> Params {
        Params {
            profile: "default",
            players: 1000,
            cheaters_percent: 10.0,
            pros_percent: 2.0,
            pro_multiplier: Span::new(5.0, 10.0),
            skill_sigma: 0.5,
            activity_sigma: 0.5,
            action_gap_sim_s: 4.0,
            burst_prob: 0.35,
            burst_gap_sim_s: Span::new(0.4, 1.5),
            human_gap_min_sim_s: 0.25,
            session_sim_s: 180.0,
            idle_sim_s: 1200.0,
            time_scale: 1.0,
            idle_scale: 60.0,
            warmup_sim_s: 600.0,
            progression_xp: Span::new(10.0, 100.0),
            boss_share: 0.01,
            boss_points_ratio: 60.0,
            boss_min_kill_scale: 1.0,
            chest_prob: 0.1,
            keyed_fraction: 0.5,
            cheat_start: Span::new(0.15, 0.5),
            speed_rate_per_s: Span::new(5.0, 20.0),
            inflate_factor: Span::new(5.0, 50.0),
            farm_speedup: Span::new(5.0, 20.0),
            luck_gap_sim_s: Span::new(2.0, 8.0),
            luck_weight: Span::new(0.001, 0.01),
            replay_gap_s: Span::new(1.0, 5.0),
            flood_factor: Span::new(2.0, 4.0),
            flood_burst_s: Span::new(1.0, 6.0),
            flood_every_s: Span::new(8.0, 20.0),
            injection_count: Span::new(1.0, 3.0),
            injection_xp: Span::new(100_000.0, 1_000_000.0),
            rate_limit_max: 50.0,
            family_weights: [1.0; Family::ALL.len()],
        }
    }

    /// Every settable key with its current value, as `key=value` lines (spans as
    /// `key.min` and `key.max`; family weights as `family.<name>`).
    pub fn listing(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (key, _, _) in SCALARS {
            lines.push(format!("{key}={}", self.scalar(key).unwrap_or(f64::NAN)));
        }
        for (key, _, _) in SPANS {
            let span = self.span(key).expect("listed span");
            lines.push(format!("{key}.min={}", span.min));
            lines.push(format!("{key}.max={}", span.max));
        }
        for f in Family::ALL {
            lines.push(format!(
                "family.{}={}",
                f.name(),
                self.family_weights[f as usize]
            ));
        }
        lines
    }

    /// Sets one parameter by name (`players`, `skill_sigma`, `inflate_factor.max`,
    /// `family.luck`, ...), within its bounds.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ParamError> {
        let number: f64 = value.trim().parse().map_err(|_| ParamError::NotANumber {
            key: key.to_owned(),
            value: value.to_owned(),
        })?;
        if !number.is_finite() {
            return Err(ParamError::NotANumber {
                key: key.to_owned(),
                value: value.to_owned(),
            });
        }
        let check = |min: f64, max: f64| {
            if (min..=max).contains(&number) {
                Ok(number)
            } else {
                Err(ParamError::OutOfRange {
                    key: key.to_owned(),
                    value: number,
                    min,
                    max,
                })
            }
        };
        if let Some(name) = key.strip_prefix("family.") {
            let family = Family::parse(name).ok_or(ParamError::UnknownFamily(name.to_owned()))?;
            self.family_weights[family as usize] = check(0.0, 1000.0)?;
            return Ok(());
        }
        if let Some(&(_, min, max)) = SCALARS.iter().find(|(k, _, _)| *k == key) {
            let v = check(min, max)?;
            *self.scalar_mut(key).expect("listed scalar") = v;
            return Ok(());
        }
        if let Some((base, end)) = key.rsplit_once('.') {
            if let Some(&(_, min, max)) = SPANS.iter().find(|(k, _, _)| *k == base) {
                let v = check(min, max)?;
                let span = self.span_mut(base).expect("listed span");
                match end {
                    "min" => span.min = v,
                    "max" => span.max = v,
                    _ => return Err(ParamError::UnknownKey(key.to_owned())),
                }
                return Ok(());
            }
        }
        Err(ParamError::UnknownKey(key.to_owned()))
    }

    /// Applies `key=value[,key=value...]`.
    pub fn set_all(&mut self, assignments: &str) -> Result<(), ParamError> {
        for part in assignments.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| ParamError::Syntax(part.to_owned()))?;
            self.set(k.trim(), v)?;
        }
        Ok(())
    }

    /// Checks what single assignments cannot: every span is ordered.
    pub fn validate(&self) -> Result<(), ParamError> {
        for (key, _, _) in SPANS {
            let span = self.span(key).expect("listed span");
            if span.min > span.max {
                return Err(ParamError::EmptyRange {
                    key: (*key).to_owned(),
                    min: span.min,
                    max: span.max,
                });
            }
        }
        Ok(())
    }

    /// The number of cheaters (rounded down).
    pub fn cheaters(&self) -> u32 {
        (f64::from(self.players) * self.cheaters_percent / 100.0).floor() as u32
    }

    fn scalar(&self, key: &str) -> Option<f64> {
        let mut copy = self.clone();
        copy.scalar_mut(key).map(|v| *v)
    }

    fn scalar_mut(&mut self, key: &str) -> Option<&mut f64> {
        Some(match key {
            "cheaters_percent" => &mut self.cheaters_percent,
            "pros_percent" => &mut self.pros_percent,
            "skill_sigma" => &mut self.skill_sigma,
            "activity_sigma" => &mut self.activity_sigma,
            "action_gap_sim_s" => &mut self.action_gap_sim_s,
            "burst_prob" => &mut self.burst_prob,
            "human_gap_min_sim_s" => &mut self.human_gap_min_sim_s,
            "session_sim_s" => &mut self.session_sim_s,
            "idle_sim_s" => &mut self.idle_sim_s,
            "time_scale" => &mut self.time_scale,
            "idle_scale" => &mut self.idle_scale,
            "warmup_sim_s" => &mut self.warmup_sim_s,
            "boss_share" => &mut self.boss_share,
            "boss_points_ratio" => &mut self.boss_points_ratio,
            "boss_min_kill_scale" => &mut self.boss_min_kill_scale,
            "chest_prob" => &mut self.chest_prob,
            "keyed_fraction" => &mut self.keyed_fraction,
            "rate_limit_max" => &mut self.rate_limit_max,
            _ => return None,
        })
    }

    fn span(&self, key: &str) -> Option<Span> {
        let mut copy = self.clone();
        copy.span_mut(key).map(|s| *s)
    }

    fn span_mut(&mut self, key: &str) -> Option<&mut Span> {
        Some(match key {
            "pro_multiplier" => &mut self.pro_multiplier,
            "burst_gap_sim_s" => &mut self.burst_gap_sim_s,
            "progression_xp" => &mut self.progression_xp,
            "cheat_start" => &mut self.cheat_start,
            "speed_rate_per_s" => &mut self.speed_rate_per_s,
            "inflate_factor" => &mut self.inflate_factor,
            "farm_speedup" => &mut self.farm_speedup,
            "luck_gap_sim_s" => &mut self.luck_gap_sim_s,
            "luck_weight" => &mut self.luck_weight,
            "replay_gap_s" => &mut self.replay_gap_s,
            "flood_factor" => &mut self.flood_factor,
            "flood_burst_s" => &mut self.flood_burst_s,
            "flood_every_s" => &mut self.flood_every_s,
            "injection_count" => &mut self.injection_count,
            "injection_xp" => &mut self.injection_xp,
            _ => return None,
        })
    }
}

/// Scalar keys with their bounds (`players` is set through `--players`, checked in
/// [`Params::set`] too).
const SCALARS: &[(&str, f64, f64)] = &[
    ("cheaters_percent", 0.0, 100.0),
    ("pros_percent", 0.0, 100.0),
    ("skill_sigma", 0.0, 3.0),
    ("activity_sigma", 0.0, 3.0),
    ("action_gap_sim_s", 0.1, 3600.0),
    ("burst_prob", 0.0, 0.95),
    ("human_gap_min_sim_s", 0.05, 60.0),
    ("session_sim_s", 1.0, 86_400.0),
    ("idle_sim_s", 0.0, 604_800.0),
    ("time_scale", 0.1, 1000.0),
    ("idle_scale", 0.1, 100_000.0),
    ("warmup_sim_s", 0.0, 86_400.0),
    ("boss_share", 0.0, 1.0),
    ("boss_points_ratio", 1.0, 10_000.0),
    ("boss_min_kill_scale", 0.01, 100.0),
    ("chest_prob", 0.0, 1.0),
    ("keyed_fraction", 0.0, 1.0),
    ("rate_limit_max", 1.0, 100_000.0),
];

/// Span keys with the bounds of both ends.
const SPANS: &[(&str, f64, f64)] = &[
    ("pro_multiplier", 1.0, 100.0),
    ("burst_gap_sim_s", 0.05, 600.0),
    ("progression_xp", 1.0, 1_000_000.0),
    ("cheat_start", 0.0, 1.0),
    ("speed_rate_per_s", 0.1, 10_000.0),
    ("inflate_factor", 1.0, 100_000.0),
    ("farm_speedup", 1.0, 10_000.0),
    ("luck_gap_sim_s", 0.05, 3600.0),
    ("luck_weight", 1e-9, 1.0),
    ("replay_gap_s", 0.05, 600.0),
    ("flood_factor", 1.0, 1000.0),
    ("flood_burst_s", 0.1, 600.0),
    ("flood_every_s", 0.5, 3600.0),
    ("injection_count", 1.0, 1000.0),
    ("injection_xp", 1.0, 1_000_000.0),
];

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_exist_and_validate() {
        for name in ["default", "whales", "casual", "stress"] {
            let p = Params::profile(name).unwrap();
            assert_eq!(p.profile, name);
            p.validate().unwrap();
        }
        assert_eq!(
            Params::profile("nope"),
            Err(ParamError::UnknownProfile("nope".into()))
        );
    }

    #[test]
    fn every_listed_key_can_be_set_back() {
        let mut p = Params::profile("stress").unwrap();
        let listing = p.listing();
        assert!(listing.len() > 40, "{}", listing.len());
        for line in &listing {
            let (k, v) = line.split_once('=').unwrap();
            p.set(k, v).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
        assert_eq!(p, Params::profile("stress").unwrap());
    }

    #[test]
    fn set_checks_names_bounds_and_order() {
        let mut p = Params::profile("default").unwrap();
        p.set_all("skill_sigma=0.8, inflate_factor.max=9,family.flood=0")
            .unwrap();
        assert_eq!(p.skill_sigma, 0.8);
        assert_eq!(p.inflate_factor, Span::new(5.0, 9.0));
        assert_eq!(p.family_weights[Family::Flood as usize], 0.0);
        assert!(matches!(
            p.set("skill_sigma", "7"),
            Err(ParamError::OutOfRange { .. })
        ));
        assert!(matches!(
            p.set("skill_sigma", "NaN"),
            Err(ParamError::NotANumber { .. })
        ));
        assert!(matches!(p.set("nope", "1"), Err(ParamError::UnknownKey(_))));
        assert!(matches!(
            p.set("inflate_factor.mid", "1"),
            Err(ParamError::UnknownKey(_))
        ));
        assert!(matches!(
            p.set_all("skill_sigma"),
            Err(ParamError::Syntax(_))
        ));
        p.set("inflate_factor.min", "20").unwrap();
        assert!(matches!(p.validate(), Err(ParamError::EmptyRange { .. })));
    }

    #[test]
    fn cheaters_round_down() {
        let mut p = Params::profile("default").unwrap();
        p.players = 95;
        p.cheaters_percent = 10.0;
        assert_eq!(p.cheaters(), 9);
    }
}
