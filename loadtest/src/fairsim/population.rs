//! Who plays: honest players with log-normal skill and pace, pros who earn 5–10× the
//! median, and cheaters of each family, all drawn from the seed alone.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::Serialize;

use super::family::Family;
use super::params::{Params, Span};

/// What a player is, known to the simulator only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "role", content = "family")]
pub enum Role {
    Honest,
    /// An honest player who legitimately earns many times the median.
    Pro,
    Cheater(Family),
}

impl Role {
    pub fn is_honest(self) -> bool {
        !matches!(self, Role::Cheater(_))
    }
}

/// One simulated player.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Player {
    /// Position in the population; also the stream of its own random numbers.
    pub index: u32,
    /// The `playerId` sent.
    pub id: String,
    /// Honest, pro or cheater (ground truth).
    pub role: Role,
    /// Multiplier on honest XP per action (skill).
    pub xp_factor: f64,
    /// Multiplier on the pace of actions (activity).
    pub pace: f64,
    /// Whether this player's client sends an `Idempotency-Key` with every event.
    pub keyed: bool,
    /// Cheaters: real milliseconds from the run's start when cheating begins.
    pub cheat_start_ms: Option<u64>,
}

/// A uniform draw from `span`.
pub fn draw(rng: &mut ChaCha8Rng, span: Span) -> f64 {
    if span.max > span.min {
        rng.random_range(span.min..=span.max)
    } else {
        span.min
    }
}

/// `median * exp(sigma * Z)`, Z standard normal.
pub fn log_normal(rng: &mut ChaCha8Rng, median: f64, sigma: f64) -> f64 {
    let z: f64 = rng.sample(StandardNormal);
    median * (sigma * z).exp()
}

/// The families cheaters `0..cheaters` play, spread by weight so each enabled family
/// gets its share (smooth weighted round robin: deterministic, no family starved in a
/// small population).
pub fn assign_families(weights: &[f64; Family::ALL.len()], cheaters: u32) -> Vec<Family> {
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return Vec::new();
    }
    let mut current = [0.0f64; Family::ALL.len()];
    (0..cheaters)
        .map(|_| {
            for (c, w) in current.iter_mut().zip(weights) {
                *c += w;
            }
            let best = (0..current.len())
                .filter(|&i| weights[i] > 0.0)
                .max_by(|&a, &b| current[a].total_cmp(&current[b]).then(b.cmp(&a)))
                .expect("a positive weight");
            current[best] -= total;
            Family::ALL[best]
        })
        .collect()
}

/// The population of `params`, determined by `seed` alone. Players are named
/// `{prefix}{index:06}`; roles are spread at random over the indices.
pub fn generate(params: &Params, seed: u64, prefix: &str, duration_ms: u64) -> Vec<Player> {
    let n = params.players;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<u32> = (0..n).collect();
    order.shuffle(&mut rng);
    let families = assign_families(&params.family_weights, params.cheaters());
    let cheaters = families.len();
    let honest = n as usize - cheaters;
    let pros = ((honest as f64) * params.pros_percent / 100.0).round() as usize;
    let mut roles = vec![Role::Honest; n as usize];
    for (k, &i) in order.iter().enumerate() {
        roles[i as usize] = if k < cheaters {
            Role::Cheater(families[k])
        } else if k < cheaters + pros {
            Role::Pro
        } else {
            Role::Honest
        };
    }
    (0..n)
        .map(|index| {
            // Each player's traits from its own stream: the same player whatever the
            // population size.
            let mut rng = player_rng(seed, index, 0);
            let role = roles[index as usize];
            let (xp_factor, pace) = match role {
                Role::Pro => {
                    // Earnings = XP per action x actions per second: split the pro's
                    // multiplier 60/40 between them (pace has a human ceiling).
                    let m = draw(&mut rng, params.pro_multiplier);
                    (
                        m.powf(0.6) * log_normal(&mut rng, 1.0, 0.1),
                        m.powf(0.4) * log_normal(&mut rng, 1.0, 0.1),
                    )
                }
                Role::Honest | Role::Cheater(_) => (
                    log_normal(&mut rng, 1.0, params.skill_sigma),
                    log_normal(&mut rng, 1.0, params.activity_sigma),
                ),
            };
            let keyed = rng.random_bool(params.keyed_fraction.clamp(0.0, 1.0));
            let cheat_start_ms = matches!(role, Role::Cheater(_))
                .then(|| (draw(&mut rng, params.cheat_start) * duration_ms as f64) as u64);
            Player {
                index,
                id: format!("{prefix}{index:06}"),
                role,
                xp_factor,
                pace,
                keyed,
                cheat_start_ms,
            }
        })
        .collect()
}

/// The random stream `stream` of player `index` under `seed`.
pub fn player_rng(seed: u64, index: u32, stream: u32) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream((u64::from(index) << 8) | u64::from(stream));
    rng
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(players: u32) -> Params {
        let mut p = Params::profile("default").unwrap();
        p.players = players;
        p
    }

    #[test]
    fn same_seed_same_population_other_seed_other() {
        let p = params(500);
        let a = generate(&p, 42, "fs_", 60_000);
        assert_eq!(a, generate(&p, 42, "fs_", 60_000));
        let b = generate(&p, 43, "fs_", 60_000);
        assert_ne!(a, b);
        assert_eq!(a[7].id, "fs_000007");
    }

    #[test]
    fn role_counts_follow_the_parameters() {
        let p = params(1000);
        let pop = generate(&p, 1, "p", 60_000);
        let cheaters: Vec<_> = pop.iter().filter(|q| !q.role.is_honest()).collect();
        assert_eq!(cheaters.len(), 100);
        assert_eq!(pop.iter().filter(|q| q.role == Role::Pro).count(), 18);
        for family in Family::ALL {
            let n = cheaters
                .iter()
                .filter(|q| q.role == Role::Cheater(family))
                .count();
            assert!((14..=15).contains(&n), "{family:?}: {n}");
        }
        for q in &pop {
            let start = q.cheat_start_ms;
            assert_eq!(start.is_some(), !q.role.is_honest());
            if let Some(s) = start {
                assert!((9_000..=30_000).contains(&s), "{s}");
            }
        }
    }

    #[test]
    fn pros_earn_many_times_the_median() {
        let mut p = params(4000);
        p.pros_percent = 10.0;
        let pop = generate(&p, 9, "p", 60_000);
        let mut rates: Vec<f64> = pop
            .iter()
            .filter(|q| q.role == Role::Honest)
            .map(|q| q.xp_factor * q.pace)
            .collect();
        rates.sort_by(f64::total_cmp);
        let median = rates[rates.len() / 2];
        assert!((0.8..1.25).contains(&median), "{median}");
        for q in pop.iter().filter(|q| q.role == Role::Pro) {
            let ratio = q.xp_factor * q.pace / median;
            assert!((3.5..14.0).contains(&ratio), "{ratio}");
        }
    }

    #[test]
    fn weighted_round_robin_spreads_families() {
        let mut w = [1.0; Family::ALL.len()];
        assert_eq!(assign_families(&w, 7), Family::ALL.to_vec());
        w[Family::Luck as usize] = 0.0;
        w[Family::Speed as usize] = 2.0;
        let f = assign_families(&w, 70);
        assert!(!f.contains(&Family::Luck));
        assert_eq!(f.iter().filter(|&&x| x == Family::Speed).count(), 20);
        assert_eq!(f.iter().filter(|&&x| x == Family::Flood).count(), 10);
        assert!(assign_families(&[0.0; 7], 5).is_empty());
    }
}
