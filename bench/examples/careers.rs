//! Careers through the whole fairness guard, in process: how many honest players the
//! detectors block or flag over many events, for a population the simulator's runs are
//! too short to show, and how soon the guard blocks inflaters among them.
//!
//! `cargo run --release -p liveops-bench --example careers -- [players] [events]
//! [skill_sigma] [xp_min] [xp_max] [seed] [inflaters_percent]` (defaults 2400 100 1.0 5
//! 150 5 0: the simulator's `stress` profile's skill and progression events) plays each
//! player's progression events, XP uniform in `[xp_min, xp_max]` times a log-normal
//! skill, at a human pace (bursts of 0.4–1.5 s, else a log-normal gap of median 4 s,
//! never under 250 ms), through `fairness::judge` and `fairness::learn` on one shard's
//! population, players interleaved, and prints the players blocked and flagged, by
//! detector and measure. A blocked player stops. `inflaters_percent` of the players play
//! honestly for 1–10 events (uniform), then multiply every event by 5–50 (uniform, as the
//! simulator's `inflate` family); the example prints how many were blocked within 30
//! inflated events and the median inflated event that blocked them. Seeded: the same
//! arguments print the same figures.

use std::collections::BTreeMap;

use liveops_engine::event::EventKind;
use liveops_engine::fairness::{self, History, Population, Seen, Thresholds};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One standard normal draw (Box-Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u: f64 = rng.random::<f64>().max(1e-12);
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut arg = |default: f64| {
        args.next()
            .map_or(default, |a| a.parse().expect("a number"))
    };
    let players = arg(2400.0) as usize;
    let events = arg(100.0) as usize;
    let skill_sigma = arg(1.0);
    let (xp_min, xp_max) = (arg(5.0), arg(150.0));
    let seed = arg(5.0) as u64;
    let inflaters_percent = arg(0.0);
    let t = Thresholds::default();
    let mut population = Population::new(&t);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let skill: Vec<f64> = (0..players)
        .map(|_| (skill_sigma * normal(&mut rng)).exp())
        .collect();
    // Per player: inflated from this own event on, by this factor (honest: never).
    let inflation: Vec<Option<(usize, f64)>> = (0..players)
        .map(|_| {
            rng.random_bool(inflaters_percent / 100.0)
                .then(|| (rng.random_range(1..=10), rng.random_range(5.0..=50.0)))
        })
        .collect();
    let mut sent = vec![0usize; players];
    let mut inflated_blocked_at = Vec::new();
    let mut history = vec![History::default(); players];
    let mut last_ms = vec![0u64; players];
    let mut now_ms = vec![1_000_000u64; players];
    let mut blocked = vec![false; players];
    let mut flagged = vec![false; players];
    let (mut blocked_young, mut decisions) = (0, BTreeMap::new());
    let mut inflater_decisions = BTreeMap::new();
    for _ in 0..events {
        for p in 0..players {
            if blocked[p] {
                continue;
            }
            let gap_ms = if rng.random_bool(0.35) {
                rng.random_range(400.0..1_500.0)
            } else {
                4_000.0 * (0.6 * normal(&mut rng)).exp()
            };
            now_ms[p] += gap_ms.max(250.0) as u64;
            let factor = match inflation[p] {
                Some((from, factor)) if sent[p] >= from => factor,
                _ => 1.0,
            };
            let xp = (rng.random_range(xp_min..=xp_max) * skill[p] * factor)
                .round()
                .max(1.0) as u64;
            sent[p] += 1;
            let event = EventKind::Progression {
                delta_xp: xp,
                activity: None,
            };
            let seen = Seen {
                event: &event,
                at_ms: now_ms[p],
                last_ms: last_ms[p],
            };
            let decision = fairness::judge(&population, &history[p], &seen, &t);
            let inflated_from = inflation[p].map(|(from, _)| from);
            if let Some(d) = decision {
                let e = d.evidence;
                let what = if d.block { "block" } else { "flag" };
                let key = format!("{what} {}/{}", e.detector.as_str(), e.measure.as_str());
                let tally = match inflated_from {
                    Some(_) => &mut inflater_decisions,
                    None => &mut decisions,
                };
                *tally.entry(key).or_insert(0u64) += 1;
                if d.block {
                    blocked[p] = true;
                    match inflated_from {
                        Some(from) if sent[p] > from => inflated_blocked_at.push(sent[p] - from),
                        Some(_) => {}
                        // "Young": fewer than 8 unflagged events of their own learned.
                        None => blocked_young += u64::from(history[p].jump.seen[0] < 8),
                    }
                    continue;
                }
                flagged[p] = true;
            }
            if inflated_from.is_some_and(|from| sent[p] >= from + 30) {
                // Judged on 30 inflated events: done.
                blocked[p] = true;
                continue;
            }
            fairness::learn(
                &mut population,
                &mut history[p],
                &seen,
                decision.is_some(),
                &t,
            );
            last_ms[p] = now_ms[p];
        }
    }
    let honest = |v: &[bool]| {
        (v.iter().zip(&inflation))
            .filter(|(&b, i)| b && i.is_none())
            .count()
    };
    let flagged_only = (flagged.iter().zip(&blocked).zip(&inflation))
        .filter(|((f, b), i)| **f && !**b && i.is_none())
        .count();
    let honest_players = inflation.iter().filter(|i| i.is_none()).count();
    let percent = |n: usize| 100.0 * n as f64 / honest_players.max(1) as f64;
    println!(
        "{honest_players} honest players x {events} events, skill sigma {skill_sigma}, XP {xp_min}-{xp_max}, seed {seed}"
    );
    println!(
        "blocked {} ({:.2} %; {blocked_young} with under 8 own events), flagged but not blocked {flagged_only} ({:.2} %)",
        honest(&blocked),
        percent(honest(&blocked)),
        percent(flagged_only),
    );
    for (decision, n) in decisions {
        println!("  {decision}: {n}");
    }
    let inflaters = inflation.iter().filter(|i| i.is_some()).count();
    if inflaters > 0 {
        inflated_blocked_at.sort_unstable();
        let median = inflated_blocked_at.get(inflated_blocked_at.len() / 2);
        println!(
            "inflaters: {} of {inflaters} blocked within 30 inflated events ({:.1} %), median at inflated event {}",
            inflated_blocked_at.len(),
            100.0 * inflated_blocked_at.len() as f64 / inflaters as f64,
            median.map_or("-".to_owned(), |m| m.to_string()),
        );
        for (decision, n) in inflater_decisions {
            println!("  {decision}: {n}");
        }
    }
}
