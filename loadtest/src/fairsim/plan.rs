//! Each player's timeline: what it sends and when (real milliseconds from the run's
//! start), drawn from the seed alone, so the same seed replays the same play.
//!
//! Time: inside a session, `time_scale` simulated seconds pass per real second (1 by
//! default: a session second is a real second, so the engine's per-second rules see
//! human cadences as they are); idle gaps between sessions pass `idle_scale` times
//! faster (60 by default: a 20-minute break lasts 20 real seconds), so a one-minute run
//! holds sessions, breaks and returns.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::family::Family;
use super::params::Params;
use super::population::{draw, log_normal, player_rng, Player, Role};
use super::tables::{self, BOSSES, LOOT};

/// Most events planned for one player.
pub const PLAYER_EVENTS_MAX: usize = 250_000;

/// One event to send.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Action {
    Progression {
        xp: u32,
    },
    BossKill {
        boss: u8,
        points: u32,
    },
    Drop {
        item: u8,
        from_boss: bool,
    },
    /// The exact bytes sent for this player's event at index `of`, again, unkeyed.
    Replay {
        of: u32,
    },
}

/// One planned send.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Planned {
    /// Real milliseconds from the run's start.
    pub at_ms: u64,
    /// What is sent.
    pub action: Action,
    /// Part of the cheat (ground truth for the report).
    pub cheat: bool,
    /// XP this event adds when applied (`deltaXp`, `points`, or the original's).
    pub score: u64,
    /// A later replay re-sends this event's bytes: the sender keeps them.
    pub replayed: bool,
}

/// The ordered plan of one player over `[0, duration_ms)`.
pub fn plan_player(params: &Params, seed: u64, player: &Player, duration_ms: u64) -> Vec<Planned> {
    let mut b = Builder {
        params,
        player,
        rng: player_rng(seed, player.index, 1),
        out: Vec::new(),
        warmup_ms: 0,
        end_ms: 0,
    };
    // Play is planned from `warmup_ms` before the run; only what falls in the run is sent.
    b.warmup_ms = (params.warmup_sim_s / params.time_scale * 1000.0) as u64;
    b.end_ms = b.warmup_ms + duration_ms;
    let duration_ms = b.end_ms;
    let cheat_start = player
        .cheat_start_ms
        .map_or(duration_ms, |s| (s + b.warmup_ms).min(duration_ms));
    match player.role {
        Role::Honest | Role::Pro => b.honest(0, duration_ms, 1.0, false),
        Role::Cheater(family) => match family {
            // These replace honest play once the cheat starts.
            Family::Speed => {
                b.honest(0, cheat_start, 1.0, false);
                b.speed(cheat_start);
            }
            Family::Inflate => {
                b.honest(0, cheat_start, 1.0, false);
                let factor = draw(&mut b.rng, params.inflate_factor);
                b.honest(cheat_start, duration_ms, factor, true);
            }
            Family::BossFarm => {
                b.honest(0, cheat_start, 1.0, false);
                b.boss_farm(cheat_start);
            }
            // These add to honest play.
            Family::Luck => {
                b.honest(0, duration_ms, 1.0, false);
                b.luck(cheat_start);
            }
            Family::Replay => {
                b.honest(0, duration_ms, 1.0, false);
                b.replay(cheat_start);
            }
            Family::Flood => {
                b.honest(0, duration_ms, 1.0, false);
                b.flood(cheat_start);
            }
            Family::Injection => {
                b.honest(0, duration_ms, 1.0, false);
                b.injection(cheat_start);
            }
        },
    }
    b.finish()
}

/// Builds a plan; `Replay::of` holds a builder-local id until [`Builder::finish`].
struct Builder<'a> {
    params: &'a Params,
    player: &'a Player,
    rng: ChaCha8Rng,
    out: Vec<Planned>,
    /// Planned time of the run's start (events before it are not sent).
    warmup_ms: u64,
    end_ms: u64,
}

impl Builder<'_> {
    fn push(&mut self, at_ms: u64, action: Action, cheat: bool, score: u64) {
        if at_ms < self.end_ms && self.out.len() < PLAYER_EVENTS_MAX {
            self.out.push(Planned {
                at_ms,
                action,
                cheat,
                score,
                replayed: false,
            });
        }
    }

    /// Simulated seconds of session play to real milliseconds.
    fn session_ms(&self, sim_s: f64) -> u64 {
        (sim_s / self.params.time_scale * 1000.0).max(1.0) as u64
    }

    fn idle_ms(&self, sim_s: f64) -> u64 {
        (sim_s / self.params.idle_scale * 1000.0) as u64
    }

    fn progression_xp(&mut self, multiplier: f64) -> u32 {
        let xp = draw(&mut self.rng, self.params.progression_xp) * self.player.xp_factor;
        (xp * multiplier).round().clamp(1.0, 1_000_000.0) as u32
    }

    fn boss_points(&mut self, boss: usize, multiplier: f64) -> u32 {
        let p = self.params;
        let median_xp = (p.progression_xp.min + p.progression_xp.max) / 2.0;
        let jitter = self.rng.random_range(0.9..=1.1);
        let points = BOSSES[boss].points_rel
            * p.boss_points_ratio
            * median_xp
            * self.player.xp_factor
            * jitter
            * multiplier;
        points.round().clamp(1.0, 1_000_000.0) as u32
    }

    fn min_kill_sim_s(&self, boss: usize) -> f64 {
        BOSSES[boss].min_kill_sim_s * self.params.boss_min_kill_scale
    }

    /// Honest play over `[from, to)`: sessions of bursty actions separated by idle
    /// gaps (`always_on`: no gaps, as cheaters playing through). Scores are multiplied
    /// by `multiplier` and the events marked `cheat` (the `inflate` family).
    fn honest(&mut self, from: u64, to: u64, multiplier: f64, cheat: bool) {
        let p = self.params;
        let session_median = p.session_sim_s;
        let idle_median = p.idle_sim_s;
        let mut t = from;
        let session_real = self.session_ms(session_median) as f64;
        let idle_real = self.idle_ms(idle_median) as f64;
        let in_session_share = session_real / (session_real + idle_real).max(1.0);
        let mut session_end = if cheat || self.rng.random_bool(in_session_share.clamp(0.0, 1.0)) {
            let length = log_normal(&mut self.rng, session_median, 0.7);
            t + (self.session_ms(length) as f64 * self.rng.random::<f64>()) as u64
        } else {
            let idle = log_normal(&mut self.rng, idle_median, 1.0);
            t += (self.idle_ms(idle) as f64 * self.rng.random::<f64>()) as u64;
            let length = log_normal(&mut self.rng, session_median, 0.7);
            t + self.session_ms(length)
        };
        while t < to && self.out.len() < PLAYER_EVENTS_MAX {
            if t >= session_end && !cheat {
                let idle = log_normal(&mut self.rng, idle_median, 1.0);
                t += self.idle_ms(idle);
                let length = log_normal(&mut self.rng, session_median, 0.7);
                session_end = t + self.session_ms(length);
                continue;
            }
            if self.rng.random_bool(p.boss_share) {
                let boss = self.rng.random_range(0..BOSSES.len());
                // Skill shortens the fight's excess over the minimum, never the minimum.
                let excess = log_normal(&mut self.rng, 0.8 / self.player.xp_factor.sqrt(), 0.5);
                t += self.session_ms(self.min_kill_sim_s(boss) * (1.0 + excess));
                if t >= to {
                    break;
                }
                let points = self.boss_points(boss, multiplier);
                self.push(
                    t,
                    Action::BossKill {
                        boss: boss as u8,
                        points,
                    },
                    cheat,
                    u64::from(points),
                );
                self.loot_roll(t, true);
            } else {
                let gap = if self.rng.random_bool(p.burst_prob) {
                    draw(&mut self.rng, p.burst_gap_sim_s)
                } else {
                    log_normal(&mut self.rng, p.action_gap_sim_s / self.player.pace, 0.6)
                };
                t += self.session_ms(gap.max(p.human_gap_min_sim_s));
                if t >= to {
                    break;
                }
                let xp = self.progression_xp(multiplier);
                self.push(t, Action::Progression { xp }, cheat, u64::from(xp));
                if self.rng.random_bool(p.chest_prob) {
                    self.loot_roll(t, false);
                }
            }
        }
    }

    /// One honest loot roll at `t`: a drop claimed a moment later with the item's
    /// probability.
    fn loot_roll(&mut self, t: u64, from_boss: bool) {
        if let Some(item) = tables::roll(self.rng.random::<f64>()) {
            let delay_sim_s = self.rng.random_range(0.3..=2.0);
            let delay = self.session_ms(delay_sim_s);
            self.push(
                t + delay,
                Action::Drop {
                    item: item as u8,
                    from_boss,
                },
                false,
                0,
            );
        }
    }

    fn speed(&mut self, start: u64) {
        let rate = draw(&mut self.rng, self.params.speed_rate_per_s);
        let mut t = start as f64;
        while (t as u64) < self.end_ms && self.out.len() < PLAYER_EVENTS_MAX {
            let xp = self.progression_xp(1.0);
            self.push(t as u64, Action::Progression { xp }, true, u64::from(xp));
            t += 1000.0 / rate * self.rng.random_range(0.8..=1.2);
        }
    }

    fn boss_farm(&mut self, start: u64) {
        let boss = self.rng.random_range(0..BOSSES.len());
        let speedup = draw(&mut self.rng, self.params.farm_speedup);
        let mut t = start;
        while t < self.end_ms && self.out.len() < PLAYER_EVENTS_MAX {
            let fight = self.min_kill_sim_s(boss) / speedup * self.rng.random_range(0.9..=1.1);
            t += self.session_ms(fight);
            let points = self.boss_points(boss, 1.0);
            self.push(
                t,
                Action::BossKill {
                    boss: boss as u8,
                    points,
                },
                true,
                u64::from(points),
            );
        }
    }

    fn luck(&mut self, start: u64) {
        let rare = tables::rare_items(self.params.luck_weight.min, self.params.luck_weight.max);
        let mut t = start;
        while t < self.end_ms && self.out.len() < PLAYER_EVENTS_MAX {
            let gap = draw(&mut self.rng, self.params.luck_gap_sim_s);
            t += self.session_ms(gap);
            let item = rare[self.rng.random_range(0..rare.len())];
            let from_boss = self.rng.random_bool(0.5);
            self.push(
                t,
                Action::Drop {
                    item: item as u8,
                    from_boss,
                },
                true,
                0,
            );
        }
    }

    fn replay(&mut self, start: u64) {
        // The last boss kill sent before the cheat, or one honest kill right at its start.
        self.out.sort_by_key(|e| e.at_ms);
        let warmup_ms = self.warmup_ms;
        let original = match self.out.iter().rposition(|e| {
            (warmup_ms..start).contains(&e.at_ms) && matches!(e.action, Action::BossKill { .. })
        }) {
            Some(i) => i,
            None => {
                let boss = self.rng.random_range(0..BOSSES.len());
                let points = self.boss_points(boss, 1.0);
                self.push(
                    start,
                    Action::BossKill {
                        boss: boss as u8,
                        points,
                    },
                    false,
                    u64::from(points),
                );
                if self.out.last().is_none_or(|e| e.at_ms != start) {
                    return;
                }
                self.out.len() - 1
            }
        };
        self.out[original].replayed = true;
        let (at, score) = (self.out[original].at_ms, self.out[original].score);
        let mut t = at.max(start);
        loop {
            t += (draw(&mut self.rng, self.params.replay_gap_s) * 1000.0) as u64;
            if t >= self.end_ms || self.out.len() >= PLAYER_EVENTS_MAX {
                break;
            }
            // `of` is the original's position in `out` now; `finish` re-maps it.
            self.push(
                t,
                Action::Replay {
                    of: original as u32,
                },
                true,
                score,
            );
        }
    }

    fn flood(&mut self, start: u64) {
        let mut t = start;
        while t < self.end_ms && self.out.len() < PLAYER_EVENTS_MAX {
            let rate = draw(&mut self.rng, self.params.flood_factor) * self.params.rate_limit_max;
            let burst_ms = draw(&mut self.rng, self.params.flood_burst_s) * 1000.0;
            let mut k = 0.0;
            while k * 1000.0 / rate < burst_ms {
                let xp = self.progression_xp(1.0);
                self.push(
                    t + (k * 1000.0 / rate) as u64,
                    Action::Progression { xp },
                    true,
                    u64::from(xp),
                );
                k += 1.0;
            }
            let every_ms = draw(&mut self.rng, self.params.flood_every_s) * 1000.0;
            t += every_ms.max(burst_ms) as u64 + 1;
        }
    }

    fn injection(&mut self, start: u64) {
        let count = draw(&mut self.rng, self.params.injection_count)
            .round()
            .max(1.0) as u32;
        let mut t = start;
        for _ in 0..count {
            let xp = draw(&mut self.rng, self.params.injection_xp).round() as u32;
            let action = if self.rng.random_bool(0.5) {
                Action::Progression { xp }
            } else {
                let boss = self.rng.random_range(0..BOSSES.len());
                Action::BossKill {
                    boss: boss as u8,
                    points: xp,
                }
            };
            self.push(t, action, true, u64::from(xp));
            t += self.rng.random_range(2_000..=10_000);
        }
    }

    /// Orders the plan by time (stable: equal times keep their order), drops the
    /// warm-up, counts time from the run's start, and points each replay at its
    /// original's new position.
    fn finish(self) -> Vec<Planned> {
        let warmup_ms = self.warmup_ms;
        let mut indexed: Vec<(usize, Planned)> = self.out.into_iter().enumerate().collect();
        indexed.sort_by_key(|(i, e)| (e.at_ms, *i));
        indexed.retain(|(_, e)| e.at_ms >= warmup_ms);
        let mut new_position = vec![None; indexed.iter().map(|(i, _)| i + 1).max().unwrap_or(0)];
        for (new, (old, _)) in indexed.iter().enumerate() {
            new_position[*old] = Some(new as u32);
        }
        indexed
            .into_iter()
            .filter_map(|(_, mut e)| {
                e.at_ms -= warmup_ms;
                if let Action::Replay { of } = &mut e.action {
                    // Originals are chosen inside the run, so this always resolves.
                    *of = (*new_position.get(*of as usize)?)?;
                }
                Some(e)
            })
            .collect()
    }
}

/// The item of a drop action (for bodies and tests).
pub fn item_of(index: u8) -> &'static tables::Item {
    &LOOT[usize::from(index)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fairsim::population::generate;

    const DURATION_MS: u64 = 60_000;

    fn population(seed: u64) -> (Params, Vec<Player>) {
        let mut p = Params::profile("default").unwrap();
        p.players = 700;
        let pop = generate(&p, seed, "p", DURATION_MS);
        (p, pop)
    }

    fn first_of(pop: &[Player], role: Role) -> &Player {
        pop.iter()
            .find(|q| q.role == role)
            .expect("the role is present")
    }

    #[test]
    fn plans_are_reproducible_and_ordered() {
        let (p, pop) = population(5);
        for q in pop.iter().take(50) {
            let a = plan_player(&p, 5, q, DURATION_MS);
            assert_eq!(a, plan_player(&p, 5, q, DURATION_MS));
            assert!(a.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
            assert!(a.iter().all(|e| e.at_ms < DURATION_MS));
        }
        let honest = |seed| -> Vec<Vec<Planned>> {
            pop.iter()
                .filter(|q| q.role == Role::Honest)
                .take(20)
                .map(|q| plan_player(&p, seed, q, DURATION_MS))
                .collect()
        };
        assert_ne!(honest(5), honest(6));
    }

    #[test]
    fn honest_plans_respect_human_limits_and_never_cheat() {
        let (p, pop) = population(8);
        let mut events = 0;
        for q in pop.iter().filter(|q| q.role.is_honest()) {
            let plan = plan_player(&p, 8, q, DURATION_MS);
            events += plan.len();
            assert!(plan
                .iter()
                .all(|e| !e.cheat && !matches!(e.action, Action::Replay { .. })));
            // No more progression events in any second than bursts allow.
            let progression: Vec<u64> = plan
                .iter()
                .filter(|e| matches!(e.action, Action::Progression { .. }))
                .map(|e| e.at_ms)
                .collect();
            assert!(
                progression.windows(2).all(|w| w[1] - w[0] >= 250),
                "{}",
                q.id
            );
            for e in &plan {
                if let Action::Progression { xp } = e.action {
                    assert!(xp <= 100_000, "{xp}");
                }
            }
        }
        // Roughly one event per 3 to 10 s per player over the minute.
        let per_player = events as f64 / 630.0;
        assert!((4.0..25.0).contains(&per_player), "{per_player}");
    }

    #[test]
    fn boss_kills_never_beat_the_minimum_honestly() {
        let (p, pop) = population(3);
        for q in pop.iter().filter(|q| q.role.is_honest()) {
            let plan = plan_player(&p, 3, q, DURATION_MS);
            // The first kill may end a fight begun before the run (the warm-up).
            let mut last_kill = None;
            for e in &plan {
                if let Action::BossKill { boss, .. } = e.action {
                    let min_ms = (BOSSES[boss as usize].min_kill_sim_s * 1000.0) as u64;
                    if let Some(last) = last_kill {
                        assert!(e.at_ms - last >= min_ms, "{}: {e:?}", q.id);
                    }
                    last_kill = Some(e.at_ms);
                }
            }
        }
    }

    #[test]
    fn cheats_start_at_the_cheat_start_and_look_like_their_family() {
        let (p, pop) = population(11);
        for family in Family::ALL {
            let q = first_of(&pop, Role::Cheater(family));
            let start = q.cheat_start_ms.unwrap();
            let plan = plan_player(&p, 11, q, DURATION_MS);
            let cheats: Vec<&Planned> = plan.iter().filter(|e| e.cheat).collect();
            assert!(!cheats.is_empty(), "{family:?}");
            assert!(cheats.iter().all(|e| e.at_ms >= start), "{family:?}");
            let span_s = (DURATION_MS - start) as f64 / 1000.0;
            match family {
                Family::Speed => {
                    let rate = cheats.len() as f64 / span_s;
                    assert!((4.0..=25.0).contains(&rate), "{rate}");
                }
                Family::Inflate => {
                    // At least 5 times the player's honest median progression XP.
                    let xps: Vec<f64> = cheats
                        .iter()
                        .filter_map(|e| match e.action {
                            Action::Progression { xp } => Some(f64::from(xp)),
                            _ => None,
                        })
                        .collect();
                    let mean = xps.iter().sum::<f64>() / xps.len() as f64;
                    assert!(mean >= 4.0 * 55.0 * q.xp_factor, "{mean}");
                }
                Family::BossFarm => {
                    let kills: Vec<u64> = cheats.iter().map(|e| e.at_ms).collect();
                    let Action::BossKill { boss, .. } = cheats[0].action else {
                        panic!()
                    };
                    assert!(cheats.iter().all(
                        |e| matches!(e.action, Action::BossKill { boss: b, .. } if b == boss)
                    ));
                    let min_ms = (BOSSES[boss as usize].min_kill_sim_s * 1000.0) as u64;
                    assert!(kills.windows(2).all(|w| w[1] - w[0] < min_ms / 4));
                }
                Family::Luck => {
                    for e in &cheats {
                        let Action::Drop { item, .. } = e.action else {
                            panic!()
                        };
                        assert!(item_of(item).weight <= 0.01);
                    }
                }
                Family::Replay => {
                    for e in &cheats {
                        let Action::Replay { of } = e.action else {
                            panic!()
                        };
                        let original = &plan[of as usize];
                        assert!(original.replayed && !original.cheat);
                        assert!(matches!(original.action, Action::BossKill { .. }));
                        assert_eq!(original.score, e.score);
                        assert!(original.at_ms + 50 <= e.at_ms);
                    }
                }
                Family::Flood => {
                    // Some second holds more events than the rate limit allows.
                    let mut per_s = std::collections::HashMap::new();
                    for e in &cheats {
                        *per_s.entry(e.at_ms / 1000).or_insert(0u32) += 1;
                    }
                    assert!(per_s.values().any(|&n| f64::from(n) > p.rate_limit_max));
                }
                Family::Injection => {
                    assert!((1..=3).contains(&cheats.len()));
                    assert!(cheats.iter().all(|e| e.score >= 100_000));
                }
            }
        }
    }
}
