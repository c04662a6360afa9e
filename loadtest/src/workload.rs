//! What is sent: players, event bodies, signatures, read paths.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use liveops_engine::signing::Signer;
use rand::rngs::SmallRng;
use rand::Rng;
use rand_distr::{Distribution, Zipf};

use crate::config::{EventType, Mix, Popularity};

/// Picks player numbers in `0..players`.
#[derive(Clone, Debug)]
pub enum PlayerPicker {
    Uniform { players: u64 },
    Zipf { players: u64, dist: Zipf<f64> },
}

impl PlayerPicker {
    pub fn new(players: u64, popularity: Popularity) -> PlayerPicker {
        assert!(players >= 1, "at least one player");
        match popularity {
            Popularity::Uniform => PlayerPicker::Uniform { players },
            Popularity::Zipf { s } => PlayerPicker::Zipf {
                players,
                dist: Zipf::new(players as f64, s).expect("validated zipf parameters"),
            },
        }
    }

    /// A player number in `0..players`.
    pub fn pick(&self, rng: &mut SmallRng) -> u64 {
        match self {
            PlayerPicker::Uniform { players } => rng.random_range(0..*players),
            PlayerPicker::Zipf { players, dist } => {
                // Zipf ranks are 1..=players (as floats); rank 1 is `lt_0`.
                let rank = dist.sample(rng) as u64;
                rank.clamp(1, *players) - 1
            }
        }
    }
}

/// Distinct boss ids used (keeps the engine's per-player boss table small).
const BOSSES: u32 = 8;
/// Distinct drop ids used (well under the engine's per-player drop limit).
const DROPS: u32 = 16;

/// Builds signed write bodies and read paths.
pub struct Workload {
    picker: PlayerPicker,
    mix: Mix,
    batch: usize,
    signer: Signer,
    top_n: u32,
    /// The next single event's `eventId`, from a start unique to the run: the engine
    /// refuses a body it applied within its replay window, and single events of the
    /// same player, score and second would otherwise be byte-identical. (A batch's
    /// events differ by their positions, its bodies by their random content.)
    next_event_id: AtomicU64,
}

impl Workload {
    pub fn new(
        players: u64,
        popularity: Popularity,
        mix: Mix,
        batch: usize,
        secret: &[u8],
        top_n: u32,
    ) -> Workload {
        Workload {
            picker: PlayerPicker::new(players, popularity),
            mix,
            batch: batch.max(1),
            signer: Signer::new(secret),
            top_n,
            next_event_id: AtomicU64::new(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64),
            ),
        }
    }

    /// Events per write request.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Appends one event to `out`. Scores (`deltaXp`, `points`) are 1..=100 so the
    /// fairness guard's score model sees nothing anomalous.
    pub fn write_event(&self, out: &mut Vec<u8>, rng: &mut SmallRng, ts: u64) {
        let player = self.picker.pick(rng);
        let kind = self.mix.pick(rng.random_range(0..self.mix.total()));
        let score: u32 = rng.random_range(1..=100);
        // Writing into a Vec cannot fail.
        let _ = match kind {
            EventType::Progression => write!(
                out,
                r#"{{"type":"progression","playerId":"lt_{player}","ts":{ts},"payload":{{"deltaXp":{score},"activity":"quest"}}}}"#
            ),
            EventType::BossKill => {
                let boss = rng.random_range(0..BOSSES);
                write!(
                    out,
                    r#"{{"type":"boss_kill","playerId":"lt_{player}","ts":{ts},"payload":{{"bossId":"boss_{boss}","tier":{tier},"points":{score}}}}}"#,
                    tier = boss % 5 + 1
                )
            }
            EventType::DropClaimed => {
                let drop = rng.random_range(0..DROPS);
                write!(
                    out,
                    r#"{{"type":"drop_claimed","playerId":"lt_{player}","ts":{ts},"payload":{{"dropId":"drop_{drop}","weight":0.05,"source":"raid_chest"}}}}"#
                )
            }
        };
    }

    /// A write body: one event object, or a JSON array of `batch` events.
    pub fn write_body(&self, rng: &mut SmallRng, ts: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 * self.batch + 2);
        if self.batch == 1 {
            self.write_event(&mut out, rng, ts);
            // The event's closing brace, reopened for its id.
            out.pop();
            let id = self.next_event_id.fetch_add(1, Ordering::Relaxed);
            let _ = write!(out, r#","eventId":"{id:x}"}}"#);
        } else {
            out.push(b'[');
            for k in 0..self.batch {
                if k > 0 {
                    out.push(b',');
                }
                self.write_event(&mut out, rng, ts);
            }
            out.push(b']');
        }
        out
    }

    /// The `X-Signature` header value for `body`.
    pub fn signature(&self, body: &[u8]) -> String {
        let mut header = String::with_capacity(7 + 64);
        header.push_str("sha256=");
        header.push_str(&self.signer.mac_hex(body));
        header
    }

    /// Path of a top-N read.
    pub fn top_path(&self) -> String {
        format!("/leaderboard?window=weekly&limit={}", self.top_n)
    }

    /// Path of a rank read for a picked player.
    pub fn rank_path(&self, rng: &mut SmallRng) -> String {
        format!(
            "/leaderboard/players/lt_{}?window=weekly",
            self.picker.pick(rng)
        )
    }
}

/// The `accepted` count of a batch response (`{"accepted":n,...}`), if present.
pub fn accepted_in_batch_response(body: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"accepted\":";
    let head = &body[..body.len().min(256)];
    let at = head.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits: Vec<u8> = head[at..]
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn uniform_picks_stay_in_bounds_and_cover() {
        let mut rng = SmallRng::seed_from_u64(7);
        let picker = PlayerPicker::new(10, Popularity::Uniform);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[picker.pick(&mut rng) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800 && c < 1200), "{seen:?}");
        let one = PlayerPicker::new(1, Popularity::Uniform);
        assert!((0..100).all(|_| one.pick(&mut rng) == 0));
    }

    #[test]
    fn zipf_picks_stay_in_bounds_and_favour_low_ids() {
        let mut rng = SmallRng::seed_from_u64(7);
        for players in [1u64, 2, 1000, 10_000_000] {
            let picker = PlayerPicker::new(players, Popularity::Zipf { s: 1.1 });
            let mut zero = 0;
            for _ in 0..20_000 {
                let p = picker.pick(&mut rng);
                assert!(p < players, "{p} >= {players}");
                zero += u32::from(p == 0);
            }
            if players >= 1000 {
                // With s = 1.1 the first player draws several percent of all picks.
                assert!(zero > 1000, "players {players}: lt_0 picked {zero} times");
            }
        }
        let steep = PlayerPicker::new(100, Popularity::Zipf { s: 10.0 });
        assert!((0..1000).filter(|_| steep.pick(&mut rng) == 0).count() > 990);
    }

    #[test]
    fn bodies_are_valid_json_with_bounded_scores() {
        let mut rng = SmallRng::seed_from_u64(3);
        let w = Workload::new(
            50,
            Popularity::Uniform,
            Mix::default(),
            1,
            b"secret-secret-secret-secret-secret",
            100,
        );
        let mut kinds = std::collections::HashSet::new();
        let mut ids = std::collections::HashSet::new();
        for _ in 0..2000 {
            let body = w.write_body(&mut rng, 1_730_560_000);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let kind = v["type"].as_str().unwrap().to_string();
            let id = v["playerId"].as_str().unwrap();
            let n: u64 = id.strip_prefix("lt_").unwrap().parse().unwrap();
            assert!(n < 50);
            assert_eq!(v["ts"], 1_730_560_000);
            assert!(ids.insert(v["eventId"].as_str().unwrap().to_owned()));
            match kind.as_str() {
                "progression" => {
                    let xp = v["payload"]["deltaXp"].as_u64().unwrap();
                    assert!((1..=100).contains(&xp));
                }
                "boss_kill" => {
                    let pts = v["payload"]["points"].as_u64().unwrap();
                    assert!((1..=100).contains(&pts));
                }
                "drop_claimed" => assert!(v["payload"]["dropId"].is_string()),
                other => panic!("unexpected type {other}"),
            }
            kinds.insert(kind);
        }
        assert_eq!(kinds.len(), 3);
    }

    #[test]
    fn batches_are_arrays_and_signatures_match_the_engine() {
        let secret = b"secret-secret-secret-secret-secret";
        let mut rng = SmallRng::seed_from_u64(3);
        let w = Workload::new(5, Popularity::Uniform, Mix::default(), 500, secret, 10);
        let body = w.write_body(&mut rng, 1);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 500);
        let sig = w.signature(&body);
        Signer::new(secret)
            .verify_header(Some(sig.as_bytes()), &body)
            .unwrap();
        assert_eq!(w.top_path(), "/leaderboard?window=weekly&limit=10");
        let rank = w.rank_path(&mut rng);
        assert!(rank.starts_with("/leaderboard/players/lt_") && rank.ends_with("?window=weekly"));
    }

    #[test]
    fn batch_response_accepted_count() {
        assert_eq!(
            accepted_in_batch_response(br#"{"accepted":498,"rejected":2,"results":[]}"#),
            Some(498)
        );
        assert_eq!(accepted_in_batch_response(br#"{"accepted": 7}"#), Some(7));
        assert_eq!(
            accepted_in_batch_response(br#"{"status":"accepted"}"#),
            None
        );
        assert_eq!(accepted_in_batch_response(b""), None);
    }
}
