//! Resident memory of the engine's state: N players, each with a score in every window,
//! in shards as the engine holds them. `cargo run --release -p liveops-bench --example
//! memory -- 1000000 2 [windows]` prints RSS before and after and the bytes per player
//! (windows: how many of daily, weekly, seasonal are enabled; default all three).

use liveops_engine::event::{Event, EventKind};
use liveops_engine::policy::Policy;
use liveops_engine::shard::Shard;
use liveops_engine::shard_of;
use liveops_engine::signing::ReceiptSigner;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm resident field");
    pages * 4096
}

fn main() {
    let mut args = std::env::args().skip(1);
    let players: u64 = args
        .next()
        .map_or(1_000_000, |a| a.parse().expect("players"));
    let shards: usize = args.next().map_or(2, |a| a.parse().expect("shards"));
    let windows: usize = args.next().map_or(3, |a| a.parse().expect("windows 0..=3"));
    let policy = Policy {
        rate_limit_per_s: 1_000_000,
        windows: liveops_engine::window::WindowKind::ALL[..windows].to_vec(),
        ..Policy::default()
    };
    let now_ms = 1_795_521_600_000;
    let before = rss_bytes();
    let mut engine: Vec<Shard> = (0..shards)
        .map(|_| Shard::new(policy.clone(), ReceiptSigner::new(&[7; 32]), now_ms))
        .collect();
    for i in 0..players {
        let player_id = format!("player_{i:07}");
        let shard = shard_of(&player_id, shards);
        let event = Event {
            player_id,
            ts: now_ms / 1000,
            kind: EventKind::Progression {
                delta_xp: 1 + i % 100,
                activity: None,
            },
            replay_id: None,
        };
        engine[shard].submit_event(event, None, now_ms + i / 1000);
        if i % 1_024 == 0 {
            // The engine drains the journal into the log every turn.
            engine[shard].take_journal();
        }
    }
    for shard in &mut engine {
        shard.take_journal();
    }
    let after = rss_bytes();
    let held: usize = engine.iter().map(Shard::players_len).sum();
    println!(
        "players {held} shards {shards}: rss {:.1} MiB before, {:.1} MiB after, {:.0} bytes/player",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        (after - before) as f64 / held as f64
    );
}
