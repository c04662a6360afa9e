//! The game's content: bosses (minimum honest kill time, points) and the loot table
//! (per-item `weight` = the probability that one loot roll yields it).

/// One boss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Boss {
    /// The `bossId` sent.
    pub id: &'static str,
    /// The `tier` sent.
    pub tier: u8,
    /// Shortest honest kill, simulated seconds (before `boss_min_kill_scale`): the
    /// fight cannot be won faster, whatever the skill.
    pub min_kill_sim_s: f64,
    /// Points relative to the table's average (1.0 = `boss_points_ratio` median
    /// progression events).
    pub points_rel: f64,
}

/// The bosses: harder ones take longer and pay more. The average of `points_rel` is 1.
pub const BOSSES: [Boss; 8] = [
    Boss {
        id: "goblin_king",
        tier: 1,
        min_kill_sim_s: 20.0,
        points_rel: 0.4,
    },
    Boss {
        id: "swamp_hydra",
        tier: 1,
        min_kill_sim_s: 30.0,
        points_rel: 0.55,
    },
    Boss {
        id: "frost_giant",
        tier: 2,
        min_kill_sim_s: 45.0,
        points_rel: 0.75,
    },
    Boss {
        id: "lich_queen",
        tier: 2,
        min_kill_sim_s: 60.0,
        points_rel: 0.9,
    },
    Boss {
        id: "sand_wyrm",
        tier: 3,
        min_kill_sim_s: 75.0,
        points_rel: 1.05,
    },
    Boss {
        id: "storm_titan",
        tier: 3,
        min_kill_sim_s: 90.0,
        points_rel: 1.2,
    },
    Boss {
        id: "void_herald",
        tier: 4,
        min_kill_sim_s: 120.0,
        points_rel: 1.45,
    },
    Boss {
        id: "dragon_lord",
        tier: 5,
        min_kill_sim_s: 150.0,
        points_rel: 1.7,
    },
];

/// One loot table item.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Item {
    /// The `dropId` sent.
    pub id: &'static str,
    /// Probability that one roll yields this item (the `weight` sent).
    pub weight: f64,
}

/// The loot table, most common first; weights sum to less than 1 (the rest: nothing).
/// Items with weight at most 0.01 are the rare tier the `luck` cheaters claim.
pub const LOOT: [Item; 12] = [
    Item {
        id: "health_potion",
        weight: 0.2,
    },
    Item {
        id: "iron_ore",
        weight: 0.15,
    },
    Item {
        id: "leather_boots",
        weight: 0.1,
    },
    Item {
        id: "silver_ring",
        weight: 0.05,
    },
    Item {
        id: "mage_staff",
        weight: 0.03,
    },
    Item {
        id: "knight_shield",
        weight: 0.02,
    },
    Item {
        id: "epic_sword_001",
        weight: 0.01,
    },
    Item {
        id: "phoenix_feather",
        weight: 0.007,
    },
    Item {
        id: "void_crown",
        weight: 0.005,
    },
    Item {
        id: "dragon_scale",
        weight: 0.003,
    },
    Item {
        id: "star_shard",
        weight: 0.002,
    },
    Item {
        id: "ancient_relic",
        weight: 0.001,
    },
];

/// The item one roll yields for a uniform `u` in [0, 1), or none.
pub fn roll(u: f64) -> Option<usize> {
    let mut cumulative = 0.0;
    for (i, item) in LOOT.iter().enumerate() {
        cumulative += item.weight;
        if u < cumulative {
            return Some(i);
        }
    }
    None
}

/// Indices of the rare items whose weight lies in `[min, max]` (the `luck` cheaters'
/// choice); all items of weight at most 0.01 when none does.
pub fn rare_items(min: f64, max: f64) -> Vec<usize> {
    let chosen: Vec<usize> = (0..LOOT.len())
        .filter(|&i| (min..=max).contains(&LOOT[i].weight))
        .collect();
    if chosen.is_empty() {
        (0..LOOT.len())
            .filter(|&i| LOOT[i].weight <= 0.01)
            .collect()
    } else {
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boss_points_average_one_and_grow_with_kill_time() {
        let mean: f64 = BOSSES.iter().map(|b| b.points_rel).sum::<f64>() / BOSSES.len() as f64;
        assert!((mean - 1.0).abs() < 1e-9, "{mean}");
        assert!(BOSSES.windows(2).all(
            |w| w[0].min_kill_sim_s < w[1].min_kill_sim_s && w[0].points_rel < w[1].points_rel
        ));
    }

    #[test]
    fn rolls_follow_the_weights() {
        let total: f64 = LOOT.iter().map(|i| i.weight).sum();
        assert!(total < 1.0);
        let n = 1_000_000;
        let mut counts = [0u32; LOOT.len()];
        let mut nothing = 0;
        for k in 0..n {
            // A uniform grid over [0, 1).
            match roll((k as f64 + 0.5) / n as f64) {
                Some(i) => counts[i] += 1,
                None => nothing += 1,
            }
        }
        for (i, item) in LOOT.iter().enumerate() {
            let share = f64::from(counts[i]) / n as f64;
            assert!((share - item.weight).abs() < 1e-5, "{}: {share}", item.id);
        }
        assert!((f64::from(nothing) / n as f64 - (1.0 - total)).abs() < 1e-5);
    }

    #[test]
    fn rare_items_by_weight() {
        let rare = rare_items(0.001, 0.01);
        assert_eq!(rare.len(), 6);
        assert!(rare.iter().all(|&i| LOOT[i].weight <= 0.01));
        assert_eq!(rare_items(0.002, 0.003).len(), 2);
        assert_eq!(rare_items(0.5, 0.6).len(), 6);
    }
}
