//! What one run does, its limits, and the parsers of the command-line values.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;

/// Highest request rate (requests per second) a run accepts.
pub const MAX_RATE: f64 = 10_000_000.0;
/// Most connections per pool (writes and reads each).
pub const MAX_CONNECTIONS: usize = 10_000;
/// Most distinct players.
pub const MAX_PLAYERS: u64 = 10_000_000;
/// Most events in one `POST /events` (the engine's own limit).
pub const MAX_BATCH: usize = 1000;
/// Longest measured duration of a run, seconds.
pub const MAX_DURATION_S: f64 = 3600.0;
/// Longest warm-up, seconds.
pub const MAX_WARMUP_S: f64 = 600.0;
/// Longest per-request timeout, seconds.
pub const MAX_TIMEOUT_S: f64 = 60.0;
/// Most tokio worker threads.
pub const MAX_THREADS: usize = 64;
/// Largest `limit` of a top-N read (the engine's own limit).
pub const MAX_TOP_N: u32 = 1000;
/// Largest pacing quantum, microseconds.
pub const MAX_PACE_QUANTUM_US: u64 = 10_000;
/// Largest Zipf exponent.
pub const MAX_ZIPF_S: f64 = 10.0;

/// How players are picked for each event and each rank read.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Popularity {
    /// Every player equally likely.
    Uniform,
    /// Player `lt_k` has weight `1 / (k + 1)^s`: `lt_0` is the most popular.
    Zipf { s: f64 },
}

/// The three event types of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Progression,
    BossKill,
    DropClaimed,
}

impl EventType {
    pub const ALL: [EventType; 3] = [
        EventType::Progression,
        EventType::BossKill,
        EventType::DropClaimed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventType::Progression => "progression",
            EventType::BossKill => "boss_kill",
            EventType::DropClaimed => "drop_claimed",
        }
    }
}

/// Relative weights of the event types, e.g. `progression=80,boss_kill=15,drop_claimed=5`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Mix {
    pub progression: u32,
    pub boss_kill: u32,
    pub drop_claimed: u32,
}

/// Largest single weight of a mix.
const MAX_MIX_WEIGHT: u32 = 1_000_000;

impl Default for Mix {
    fn default() -> Self {
        Mix {
            progression: 80,
            boss_kill: 15,
            drop_claimed: 5,
        }
    }
}

impl Mix {
    /// Parses `name=weight` pairs separated by commas. Names not given weigh 0; at least
    /// one weight must be positive.
    pub fn parse(s: &str) -> Result<Mix, String> {
        let mut weights: [Option<u32>; 3] = [None; 3];
        for part in s.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(format!("empty entry in mix {s:?}"));
            }
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("mix entry {part:?} is not name=weight"))?;
            let name = name.trim();
            let slot = EventType::ALL
                .iter()
                .position(|t| t.name() == name)
                .ok_or_else(|| {
                    format!(
                        "unknown event type {name:?} in mix (known: progression, boss_kill, drop_claimed)"
                    )
                })?;
            let weight: u32 = weight.trim().parse().map_err(|_| {
                format!("weight of {name} is not a non-negative integer: {weight:?}")
            })?;
            if weight > MAX_MIX_WEIGHT {
                return Err(format!("weight of {name} is above {MAX_MIX_WEIGHT}"));
            }
            if weights[slot].replace(weight).is_some() {
                return Err(format!("{name} given twice in mix"));
            }
        }
        let mix = Mix {
            progression: weights[0].unwrap_or(0),
            boss_kill: weights[1].unwrap_or(0),
            drop_claimed: weights[2].unwrap_or(0),
        };
        if mix.total() == 0 {
            return Err("mix has no positive weight".into());
        }
        Ok(mix)
    }

    pub fn total(&self) -> u32 {
        self.progression + self.boss_kill + self.drop_claimed
    }

    /// The event type for `roll` in `0..total()`.
    pub fn pick(&self, roll: u32) -> EventType {
        if roll < self.progression {
            EventType::Progression
        } else if roll < self.progression + self.boss_kill {
            EventType::BossKill
        } else {
            EventType::DropClaimed
        }
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "progression={},boss_kill={},drop_claimed={}",
            self.progression, self.boss_kill, self.drop_claimed
        )
    }
}

/// Parses a target host and refuses anything that is not a loopback address: load tests
/// only ever target this machine. Accepts `localhost` (taken as 127.0.0.1, never looked
/// up), any IPv4 address in 127.0.0.0/8, and `::1` (also as `[::1]` or `::ffff:127.x.y.z`).
pub fn parse_loopback_host(host: &str) -> Result<IpAddr, String> {
    let trimmed = host.trim();
    let refuse = || {
        format!(
            "refusing to target {host:?}: load tests only target this machine's loopback \
             (127.0.0.0/8, ::1 or localhost)"
        )
    };
    if trimmed.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let bare = trimmed
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(trimmed);
    let ip: IpAddr = bare.parse().map_err(|_| refuse())?;
    let loopback = match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    };
    if loopback {
        Ok(ip)
    } else {
        Err(refuse())
    }
}

/// Everything one constant-rate run needs.
#[derive(Clone, Debug, Serialize)]
pub struct RunConfig {
    /// Always a loopback address (see [`parse_loopback_host`]).
    pub host: IpAddr,
    /// Gateway port: `POST /events`.
    pub port: u16,
    /// Leaderboard port: the reads.
    pub read_port: u16,
    /// Requests per second, writes and reads together.
    pub rate: f64,
    /// Measured seconds.
    pub duration_s: f64,
    /// Seconds at the target rate before measuring; not recorded.
    pub warmup_s: f64,
    /// Keep-alive connections to the gateway.
    pub connections: usize,
    /// Keep-alive connections to the leaderboard port (used only when `read_ratio > 0`).
    pub read_connections: usize,
    /// Tokio worker threads of the generator.
    pub threads: usize,
    /// Player ids are `lt_0` .. `lt_{players-1}`.
    pub players: u64,
    pub popularity: Popularity,
    pub mix: Mix,
    /// Events per `POST /events`; 1 sends a single object, more send a JSON array.
    pub batch: usize,
    /// Fraction of the requests that are reads, in `[0, 1]`.
    pub read_ratio: f64,
    /// `limit` of the top-N reads.
    pub top_n: u32,
    /// Send a unique `Idempotency-Key` with every write.
    pub idempotency_keys: bool,
    /// `HMAC_SECRET` of the engine.
    #[serde(skip)]
    pub secret: Vec<u8>,
    /// A request not answered this long after its intended send time is given up.
    pub timeout_s: f64,
    /// Seed of the player and event choices.
    pub seed: u64,
    /// The pacing thread wakes at most once per this many microseconds, releasing every
    /// request due by then. 0 wakes for each request (most precise); a larger quantum
    /// costs the generator fewer wake-ups at high rates, and delays requests by up to
    /// the quantum, which shows in the latencies (never hidden: they are measured from
    /// the exact intended time).
    pub pace_quantum_us: u64,
}

impl RunConfig {
    /// A configuration with the defaults of the command line, for `rate` requests per
    /// second during `duration_s` against 127.0.0.1:8080 (reads: 8082).
    pub fn new(secret: impl Into<Vec<u8>>, rate: f64, duration_s: f64) -> RunConfig {
        RunConfig {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8080,
            read_port: 8082,
            rate,
            duration_s,
            warmup_s: 0.0,
            connections: 64,
            read_connections: 16,
            threads: 1,
            players: 100_000,
            popularity: Popularity::Uniform,
            mix: Mix::default(),
            batch: 1,
            read_ratio: 0.0,
            top_n: 100,
            idempotency_keys: false,
            secret: secret.into(),
            timeout_s: 5.0,
            seed: 1,
            pace_quantum_us: 100,
        }
    }

    /// Checks every limit; the error names the option.
    pub fn validate(&self) -> Result<(), String> {
        parse_loopback_host(&self.host.to_string())?;
        check_positive("rate", self.rate, MAX_RATE)?;
        check_positive("duration", self.duration_s, MAX_DURATION_S)?;
        check_range("warmup", self.warmup_s, 0.0, MAX_WARMUP_S)?;
        check_range("timeout", self.timeout_s, 0.001, MAX_TIMEOUT_S)?;
        check_range("read-ratio", self.read_ratio, 0.0, 1.0)?;
        if self.rate * self.duration_s < 1.0 {
            return Err("rate x duration schedules no request: raise one of them".into());
        }
        if self.port == 0 || self.read_port == 0 {
            return Err("ports must be 1-65535".into());
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            return Err(format!("connections must be 1-{MAX_CONNECTIONS}"));
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.read_connections) {
            return Err(format!("read-connections must be 1-{MAX_CONNECTIONS}"));
        }
        if !(1..=MAX_THREADS).contains(&self.threads) {
            return Err(format!("threads must be 1-{MAX_THREADS}"));
        }
        if !(1..=MAX_PLAYERS).contains(&self.players) {
            return Err(format!("players must be 1-{MAX_PLAYERS}"));
        }
        if !(1..=MAX_BATCH).contains(&self.batch) {
            return Err(format!("batch must be 1-{MAX_BATCH}"));
        }
        if self.pace_quantum_us > MAX_PACE_QUANTUM_US {
            return Err(format!(
                "pace-quantum-us must be at most {MAX_PACE_QUANTUM_US}"
            ));
        }
        if !(1..=MAX_TOP_N).contains(&self.top_n) {
            return Err(format!("top-n must be 1-{MAX_TOP_N}"));
        }
        if let Popularity::Zipf { s } = self.popularity {
            if !(s > 0.0 && s <= MAX_ZIPF_S) {
                return Err(format!("zipf exponent must be in (0, {MAX_ZIPF_S}]"));
            }
        }
        if self.mix.total() == 0 {
            return Err("mix has no positive weight".into());
        }
        if self.secret.is_empty() {
            return Err("the HMAC secret is empty: pass --secret or set HMAC_SECRET".into());
        }
        Ok(())
    }

    /// Requests per second of the write lane.
    pub fn write_rate(&self) -> f64 {
        self.rate * (1.0 - self.read_ratio)
    }

    /// Requests per second of the read lane.
    pub fn read_rate(&self) -> f64 {
        self.rate * self.read_ratio
    }
}

fn check_positive(name: &str, value: f64, max: f64) -> Result<(), String> {
    if value.is_finite() && value > 0.0 && value <= max {
        Ok(())
    } else {
        Err(format!(
            "{name} must be above 0 and at most {max}, got {value}"
        ))
    }
}

fn check_range(name: &str, value: f64, min: f64, max: f64) -> Result<(), String> {
    if value.is_finite() && value >= min && value <= max {
        Ok(())
    } else {
        Err(format!(
            "{name} must be between {min} and {max}, got {value}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_all_three_and_picks_by_weight() {
        let mix = Mix::parse("progression=80, boss_kill=15,drop_claimed=5").unwrap();
        assert_eq!(mix, Mix::default());
        assert_eq!(mix.total(), 100);
        assert_eq!(mix.pick(0), EventType::Progression);
        assert_eq!(mix.pick(79), EventType::Progression);
        assert_eq!(mix.pick(80), EventType::BossKill);
        assert_eq!(mix.pick(94), EventType::BossKill);
        assert_eq!(mix.pick(95), EventType::DropClaimed);
        assert_eq!(mix.pick(99), EventType::DropClaimed);
        assert_eq!(Mix::parse(&mix.to_string()).unwrap(), mix);
    }

    #[test]
    fn mix_missing_types_weigh_zero() {
        let mix = Mix::parse("boss_kill=1").unwrap();
        assert_eq!(mix.total(), 1);
        assert_eq!(mix.pick(0), EventType::BossKill);
        let mix = Mix::parse("drop_claimed=3,progression=0").unwrap();
        assert!((0..3).all(|r| mix.pick(r) == EventType::DropClaimed));
    }

    #[test]
    fn mix_rejects_bad_input() {
        for bad in [
            "",
            "progression",
            "progression=",
            "progression=-1",
            "progression=1.5",
            "levelup=3",
            "progression=1,progression=2",
            "progression=0,boss_kill=0",
            "progression=1,,boss_kill=1",
            "progression=1000001",
        ] {
            assert!(Mix::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn loopback_hosts_are_accepted() {
        for ok in [
            "127.0.0.1",
            "127.1.2.3",
            "127.255.255.254",
            "localhost",
            "LOCALHOST",
            "::1",
            "[::1]",
            "::ffff:127.0.0.1",
            " 127.0.0.1 ",
        ] {
            let ip = parse_loopback_host(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert!(ip.is_loopback() || ip.to_canonical().is_loopback(), "{ok}");
        }
        assert_eq!(
            parse_loopback_host("localhost").unwrap(),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
    }

    #[test]
    fn other_hosts_are_refused() {
        for bad in [
            "0.0.0.0",
            "10.0.0.1",
            "128.0.0.1",
            "192.168.1.10",
            "8.8.8.8",
            "::",
            "2001:db8::1",
            "example.com",
            "localhost.example.com",
            "127.0.0.1:8080",
            "",
        ] {
            let err = parse_loopback_host(bad).expect_err(bad);
            assert!(err.contains("refusing"), "{err}");
        }
    }

    #[test]
    fn validate_enforces_limits() {
        let ok = RunConfig::new("s".repeat(32), 1000.0, 1.0);
        ok.validate().unwrap();
        type Change = Box<dyn Fn(&mut RunConfig)>;
        let cases: Vec<(&str, Change)> = vec![
            ("rate", Box::new(|c| c.rate = MAX_RATE * 2.0)),
            ("rate", Box::new(|c| c.rate = 0.0)),
            ("duration", Box::new(|c| c.duration_s = 3601.0)),
            ("duration", Box::new(|c| c.duration_s = 0.0)),
            (
                "connections",
                Box::new(|c| c.connections = MAX_CONNECTIONS + 1),
            ),
            ("connections", Box::new(|c| c.connections = 0)),
            ("players", Box::new(|c| c.players = MAX_PLAYERS + 1)),
            ("batch", Box::new(|c| c.batch = MAX_BATCH + 1)),
            ("read-ratio", Box::new(|c| c.read_ratio = 1.5)),
            (
                "zipf",
                Box::new(|c| c.popularity = Popularity::Zipf { s: 0.0 }),
            ),
            ("secret", Box::new(|c| c.secret.clear())),
            (
                "refusing",
                Box::new(|c| c.host = "10.1.1.1".parse().unwrap()),
            ),
            ("schedules no request", Box::new(|c| c.rate = 0.5)),
        ];
        for (needle, change) in cases {
            let mut c = ok.clone();
            change(&mut c);
            let err = c.validate().expect_err(needle);
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
