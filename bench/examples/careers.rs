//! Honest careers through the whole fairness guard, in process: how many honest players
//! the detectors block or flag over many events, for a population the simulator's runs
//! are too short to show.
//!
//! `cargo run --release -p liveops-bench --example careers -- [players] [events]
//! [skill_sigma] [xp_min] [xp_max] [seed]` (defaults 2400 100 1.0 5 150 5: the
//! simulator's `stress` profile's skill and progression events) plays each player's
//! progression events, XP uniform in `[xp_min, xp_max]` times a log-normal skill, at a
//! human pace (bursts of 0.4–1.5 s, else a log-normal gap of median 4 s, never under
//! 250 ms), through `fairness::judge` and `fairness::learn` on one shard's population,
//! players interleaved, and prints the players blocked and flagged, by detector and
//! measure. A blocked player stops. Seeded: the same arguments print the same figures.

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
    let t = Thresholds::default();
    let mut population = Population::new(&t);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let skill: Vec<f64> = (0..players)
        .map(|_| (skill_sigma * normal(&mut rng)).exp())
        .collect();
    let mut history = vec![History::default(); players];
    let mut last_ms = vec![0u64; players];
    let mut now_ms = vec![1_000_000u64; players];
    let mut blocked = vec![false; players];
    let mut flagged = vec![false; players];
    let (mut blocked_young, mut decisions) = (0, BTreeMap::new());
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
            let xp = (rng.random_range(xp_min..=xp_max) * skill[p])
                .round()
                .max(1.0) as u64;
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
            if let Some(d) = decision {
                let e = d.evidence;
                let what = if d.block { "block" } else { "flag" };
                let key = format!("{what} {}/{}", e.detector.as_str(), e.measure.as_str());
                *decisions.entry(key).or_insert(0u64) += 1;
                if d.block {
                    blocked[p] = true;
                    // "Young": fewer than 8 unflagged events of their own learned.
                    blocked_young += u64::from(history[p].jump.seen[0] < 8);
                    continue;
                }
                flagged[p] = true;
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
    let count = |v: &[bool]| v.iter().filter(|&&b| b).count();
    let flagged_only = (flagged.iter().zip(&blocked))
        .filter(|(f, b)| **f && !**b)
        .count();
    let percent = |n: usize| 100.0 * n as f64 / players as f64;
    println!(
        "{players} honest players x {events} events, skill sigma {skill_sigma}, XP {xp_min}-{xp_max}, seed {seed}"
    );
    println!(
        "blocked {} ({:.2} %; {blocked_young} with under 8 own events), flagged but not blocked {flagged_only} ({:.2} %)",
        count(&blocked),
        percent(count(&blocked)),
        percent(flagged_only),
    );
    for (decision, n) in decisions {
        println!("  {decision}: {n}");
    }
}
