//! The cheat families the simulator plays.

use serde::Serialize;

/// One way of cheating. Every cheater plays honestly first, then cheats this way from
/// a random moment to the end of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Honest-sized progression events, far faster than any human sends them (but under
    /// the rate limit).
    Speed,
    /// Honest cadence, `deltaXp` and `points` inflated 5 to 50 times.
    Inflate,
    /// The same boss killed many times faster than its minimum honest kill time.
    BossFarm,
    /// Rare drops (table weight 0.001 to 0.01) claimed far too often.
    Luck,
    /// A signed boss-kill body re-sent verbatim, without an `Idempotency-Key`.
    Replay,
    /// Bursts of events above `RATE_LIMIT_MAX`.
    Flood,
    /// One or a few huge events (e.g. 1,000,000 XP).
    Injection,
}

impl Family {
    pub const ALL: [Family; 7] = [
        Family::Speed,
        Family::Inflate,
        Family::BossFarm,
        Family::Luck,
        Family::Replay,
        Family::Flood,
        Family::Injection,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Speed => "speed",
            Family::Inflate => "inflate",
            Family::BossFarm => "boss_farm",
            Family::Luck => "luck",
            Family::Replay => "replay",
            Family::Flood => "flood",
            Family::Injection => "injection",
        }
    }

    pub fn parse(name: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_index_all() {
        for (i, f) in Family::ALL.into_iter().enumerate() {
            assert_eq!(Family::parse(f.name()), Some(f));
            assert_eq!(f as usize, i);
        }
        assert_eq!(Family::parse("teleport"), None);
    }
}
