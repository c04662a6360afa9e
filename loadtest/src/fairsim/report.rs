//! What the engine decided, per player, and the report computed from it against the
//! ground truth. Pure: no I/O, so the arithmetic is unit tested.

use std::collections::BTreeMap;

use serde::Serialize;

use super::family::Family;
use super::params::Params;
use super::plan::Planned;
use super::population::{Player, Role};

/// How the engine answered one event.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// 202 (or 208): applied; `flag` names the flag when its score was kept off the boards.
    Accepted { flag: Option<String> },
    /// 403 `player_blocked`.
    Blocked,
    /// 429.
    RateLimited,
    /// Any other status.
    Other(u16),
    /// No answer (connection failure or timeout).
    Failed,
}

/// What the simulator saw of one player.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlayerObs {
    /// Events sent.
    pub sent: u64,
    /// Events applied (202).
    pub accepted: u64,
    /// Events applied but flagged (score off the boards).
    pub flagged: u64,
    /// Events refused with 403.
    pub refused_blocked: u64,
    /// Events refused with 429.
    pub rate_limited: u64,
    /// Events answered otherwise or not at all.
    pub other: u64,
    /// Flag kinds of this player's flagged events.
    pub flag_kinds: BTreeMap<String, u64>,
    /// Real ms from the run's start when its first cheat event was sent.
    pub first_cheat_sent_ms: Option<u64>,
    /// Earliest evidence of a block (403 answer, blocked list, audit record), run ms.
    pub block_any_ms: Option<u64>,
    /// Earliest evidence of a block at or after the cheat's start, run ms.
    pub block_after_cheat_ms: Option<u64>,
    /// Cheat events flagged.
    pub cheat_flagged: u64,
    /// Cheat events sent / applied without a flag (their score reached the boards).
    pub cheat_sent: u64,
    pub cheat_on_board: u64,
    /// Score of the cheat events sent / applied without a flag.
    pub cheat_score_sent: u64,
    pub cheat_score_on_board: u64,
    /// Score of the honest events sent / applied without a flag.
    pub honest_score_sent: u64,
    pub honest_score_on_board: u64,
    /// `flags` of `GET /fairness/players/{id}` at the end, when read.
    pub engine_flags: Option<u64>,
    /// What this player's block records in the engine's recent audit name, by
    /// `detector/measure` (`+strikes` when the ladder made the block): why an honest
    /// player was blocked is what tuning needs.
    pub block_causes: BTreeMap<String, u64>,
}

impl PlayerObs {
    /// Records the answer to `event`, sent at `sent_ms`.
    pub fn record(
        &mut self,
        event: &Planned,
        cheat_start_ms: Option<u64>,
        sent_ms: u64,
        outcome: &Outcome,
    ) {
        self.sent += 1;
        if event.cheat {
            self.cheat_sent += 1;
            self.cheat_score_sent += event.score;
            self.first_cheat_sent_ms =
                Some(self.first_cheat_sent_ms.map_or(sent_ms, |t| t.min(sent_ms)));
        } else {
            self.honest_score_sent += event.score;
        }
        match outcome {
            Outcome::Accepted { flag: None } => {
                self.accepted += 1;
                if event.cheat {
                    self.cheat_on_board += 1;
                    self.cheat_score_on_board += event.score;
                } else {
                    self.honest_score_on_board += event.score;
                }
            }
            Outcome::Accepted { flag: Some(kind) } => {
                self.accepted += 1;
                self.flagged += 1;
                self.cheat_flagged += u64::from(event.cheat);
                *self.flag_kinds.entry(kind.clone()).or_insert(0) += 1;
            }
            Outcome::Blocked => {
                self.refused_blocked += 1;
                self.note_block(sent_ms, cheat_start_ms);
            }
            Outcome::RateLimited => self.rate_limited += 1,
            Outcome::Other(_) | Outcome::Failed => self.other += 1,
        }
    }

    /// Evidence that the player was blocked at `at_ms` (run ms).
    pub fn note_block(&mut self, at_ms: u64, cheat_start_ms: Option<u64>) {
        self.block_any_ms = Some(self.block_any_ms.map_or(at_ms, |t| t.min(at_ms)));
        if cheat_start_ms.is_some_and(|start| at_ms >= start) {
            self.block_after_cheat_ms =
                Some(self.block_after_cheat_ms.map_or(at_ms, |t| t.min(at_ms)));
        }
    }

    fn was_flagged(&self) -> bool {
        self.flagged > 0 || self.engine_flags.is_some_and(|n| n > 0)
    }
}

/// The `q` quantile (nearest rank) of `values`, or none when empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// `part / whole`, none when `whole` is 0.
pub fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// Facts of the run itself, for judging the measurement.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct RunFacts {
    pub events_planned: u64,
    pub events_sent: u64,
    /// Answers by HTTP status, and `failed` (no answer).
    pub statuses: BTreeMap<String, u64>,
    /// How late the dispatcher released events behind the plan.
    pub dispatch_late_p99_ms: f64,
    pub dispatch_late_max_ms: f64,
    /// Wall time of the play phase, seconds.
    pub elapsed_s: f64,
    /// Reasons of the newest `/fairness/flags` records (at most 1000).
    pub engine_flags_by_reason: BTreeMap<String, u64>,
    /// Final reads that failed (a player's fairness state, a board).
    pub final_read_errors: u64,
}

/// One cheat family's outcome.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FamilyReport {
    pub family: Family,
    pub cheaters: u64,
    /// Blocked at or after their first cheat.
    pub blocked: u64,
    /// `blocked / cheaters`.
    pub recall: Option<f64>,
    /// Not blocked, but at least one cheat event flagged.
    pub flagged_only: u64,
    pub flagged_only_rate: Option<f64>,
    /// Neither blocked nor flagged after cheating.
    pub missed: u64,
    /// Blocked already in their honest phase (a false positive on a future cheater).
    pub blocked_before_cheat: u64,
    /// Seconds from the first cheat event sent to the block, over the blocked.
    pub block_s_median: Option<f64>,
    pub block_s_p90: Option<f64>,
    pub cheat_events_sent: u64,
    /// Cheat events applied without a flag.
    pub cheat_events_on_board: u64,
    pub cheat_score_sent: u64,
    /// Cheat score applied without a flag (it reached every board of the window).
    pub cheat_score_on_board: u64,
    pub cheat_score_on_board_fraction: Option<f64>,
    pub flag_kinds: BTreeMap<String, u64>,
}

/// Honest players (or pros) as a group.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct GroupReport {
    pub players: u64,
    /// Players with any block.
    pub blocked: u64,
    pub blocked_rate: Option<f64>,
    /// Players with any flagged event.
    pub flagged: u64,
    pub flagged_rate: Option<f64>,
    pub events_sent: u64,
    /// Events refused (403, 429, other) or unanswered.
    pub events_refused: u64,
    pub events_flagged: u64,
    pub score_sent: u64,
    pub score_on_board: u64,
    /// Share of the honest score sent that did not reach the boards.
    pub score_off_board_fraction: Option<f64>,
    /// Median score sent per player (earnings).
    pub score_sent_median: Option<f64>,
    pub flag_kinds: BTreeMap<String, u64>,
    /// Block records by cause (see [`PlayerObs::block_causes`]).
    pub block_causes: BTreeMap<String, u64>,
}

/// The final top 100 of one window.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct BoardReport {
    pub window: String,
    pub entries: u64,
    pub honest: u64,
    pub pros: u64,
    pub cheaters: u64,
    /// Entries not in the simulated population.
    pub unknown: u64,
    /// `honest / entries` (pros are honest).
    pub purity: Option<f64>,
    pub cheaters_by_family: BTreeMap<String, u64>,
}

/// The whole report.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Report {
    pub seed: u64,
    pub params: Params,
    pub duration_s: f64,
    pub families: Vec<FamilyReport>,
    /// Every honest player, pros included.
    pub honest: GroupReport,
    pub pros: GroupReport,
    /// Median pro earnings over the median honest non-pro's (score sent).
    pub pro_earnings_ratio: Option<f64>,
    pub boards: Vec<BoardReport>,
    pub run: RunFacts,
}

/// Adds one player's counts by name to a group's.
fn add_counts(total: &mut BTreeMap<String, u64>, counts: &BTreeMap<String, u64>) {
    for (name, n) in counts {
        *total.entry(name.clone()).or_insert(0) += n;
    }
}

fn group(players: &[Player], obs: &[PlayerObs], keep: impl Fn(Role) -> bool) -> GroupReport {
    let members: Vec<&PlayerObs> = players
        .iter()
        .zip(obs)
        .filter(|(p, _)| keep(p.role))
        .map(|(_, o)| o)
        .collect();
    let n = members.len() as u64;
    let blocked = members.iter().filter(|o| o.block_any_ms.is_some()).count() as u64;
    let flagged = members.iter().filter(|o| o.was_flagged()).count() as u64;
    let sum = |f: &dyn Fn(&PlayerObs) -> u64| members.iter().map(|o| f(o)).sum::<u64>();
    let score_sent = sum(&|o| o.honest_score_sent);
    let score_on_board = sum(&|o| o.honest_score_on_board);
    let mut flag_kinds = BTreeMap::new();
    let mut block_causes = BTreeMap::new();
    for o in &members {
        add_counts(&mut flag_kinds, &o.flag_kinds);
        add_counts(&mut block_causes, &o.block_causes);
    }
    let earnings: Vec<f64> = members.iter().map(|o| o.honest_score_sent as f64).collect();
    GroupReport {
        players: n,
        blocked,
        blocked_rate: ratio(blocked, n),
        flagged,
        flagged_rate: ratio(flagged, n),
        events_sent: sum(&|o| o.sent),
        events_refused: sum(&|o| o.refused_blocked + o.rate_limited + o.other),
        events_flagged: sum(&|o| o.flagged),
        score_sent,
        score_on_board,
        score_off_board_fraction: ratio(score_sent - score_on_board.min(score_sent), score_sent),
        score_sent_median: quantile(&earnings, 0.5),
        flag_kinds,
        block_causes,
    }
}

fn family_report(family: Family, players: &[Player], obs: &[PlayerObs]) -> FamilyReport {
    let members: Vec<&PlayerObs> = players
        .iter()
        .zip(obs)
        .filter(|(p, _)| p.role == Role::Cheater(family))
        .map(|(_, o)| o)
        .collect();
    let n = members.len() as u64;
    let mut block_s = Vec::new();
    let (mut blocked, mut flagged_only, mut missed, mut before) = (0, 0, 0, 0);
    let mut flag_kinds = BTreeMap::new();
    for o in &members {
        add_counts(&mut flag_kinds, &o.flag_kinds);
        if o.block_any_ms.is_some() && o.block_any_ms != o.block_after_cheat_ms {
            before += 1;
        }
        match (o.block_after_cheat_ms, o.first_cheat_sent_ms) {
            (Some(block), Some(first)) => {
                blocked += 1;
                block_s.push(block.saturating_sub(first) as f64 / 1000.0);
            }
            (Some(_), None) => blocked += 1,
            (None, _) if o.cheat_flagged > 0 => flagged_only += 1,
            (None, _) => missed += 1,
        }
    }
    let sum = |f: &dyn Fn(&PlayerObs) -> u64| members.iter().map(|o| f(o)).sum::<u64>();
    let cheat_score_sent = sum(&|o| o.cheat_score_sent);
    let cheat_score_on_board = sum(&|o| o.cheat_score_on_board);
    FamilyReport {
        family,
        cheaters: n,
        blocked,
        recall: ratio(blocked, n),
        flagged_only,
        flagged_only_rate: ratio(flagged_only, n),
        missed,
        blocked_before_cheat: before,
        block_s_median: quantile(&block_s, 0.5),
        block_s_p90: quantile(&block_s, 0.9),
        cheat_events_sent: sum(&|o| o.cheat_sent),
        cheat_events_on_board: sum(&|o| o.cheat_on_board),
        cheat_score_sent,
        cheat_score_on_board,
        cheat_score_on_board_fraction: ratio(cheat_score_on_board, cheat_score_sent),
        flag_kinds,
    }
}

/// The purity of one board page (`entries`: player ids, best first).
pub fn board_report(
    window: &str,
    entries: &[String],
    players: &[Player],
    prefix: &str,
) -> BoardReport {
    let mut r = BoardReport {
        window: window.to_owned(),
        entries: entries.len() as u64,
        honest: 0,
        pros: 0,
        cheaters: 0,
        unknown: 0,
        purity: None,
        cheaters_by_family: BTreeMap::new(),
    };
    for id in entries {
        let player = id
            .strip_prefix(prefix)
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|i| players.get(i))
            .filter(|p| &p.id == id);
        match player.map(|p| p.role) {
            Some(Role::Honest) => r.honest += 1,
            Some(Role::Pro) => {
                r.honest += 1;
                r.pros += 1;
            }
            Some(Role::Cheater(f)) => {
                r.cheaters += 1;
                *r.cheaters_by_family.entry(f.name().to_owned()).or_insert(0) += 1;
            }
            None => r.unknown += 1,
        }
    }
    r.purity = ratio(r.honest, r.entries);
    r
}

/// Builds the report from the observations (`obs[i]` is `players[i]`'s).
pub fn build(
    seed: u64,
    params: &Params,
    duration_s: f64,
    players: &[Player],
    obs: &[PlayerObs],
    boards: Vec<BoardReport>,
    run: RunFacts,
) -> Report {
    let honest = group(players, obs, Role::is_honest);
    let pros = group(players, obs, |r| r == Role::Pro);
    let non_pro = group(players, obs, |r| r == Role::Honest);
    let pro_earnings_ratio = match (pros.score_sent_median, non_pro.score_sent_median) {
        (Some(p), Some(h)) if h > 0.0 => Some(p / h),
        _ => None,
    };
    Report {
        seed,
        params: params.clone(),
        duration_s,
        families: Family::ALL
            .into_iter()
            .map(|f| family_report(f, players, obs))
            .filter(|f| f.cheaters > 0)
            .collect(),
        honest,
        pros,
        pro_earnings_ratio,
        boards,
        run,
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{:.1}%", v * 100.0))
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

fn kinds(k: &BTreeMap<String, u64>) -> String {
    if k.is_empty() {
        return "-".to_owned();
    }
    k.iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Report {
    /// The human-readable report.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let p = &self.params;
        let _ = writeln!(
            s,
            "fairsim: profile {} seed {} players {} ({:.0}% cheaters, {:.0}% of honest are pros), {:.0} s",
            p.profile, self.seed, p.players, p.cheaters_percent, p.pros_percent, self.duration_s
        );
        let r = &self.run;
        let _ = writeln!(
            s,
            "run: {} of {} events sent in {:.1} s, answers {}, dispatch late p99 {:.1} ms max {:.1} ms, final read errors {}",
            r.events_sent,
            r.events_planned,
            r.elapsed_s,
            kinds(&r.statuses),
            r.dispatch_late_p99_ms,
            r.dispatch_late_max_ms,
            r.final_read_errors
        );
        let _ = writeln!(
            s,
            "{:<10} {:>4} {:>7} {:>8} {:>7} {:>6} {:>7} {:>7} {:>14} {:>9}  flags",
            "family",
            "n",
            "recall",
            "flagged",
            "missed",
            "early",
            "block50",
            "block90",
            "score on board",
            "fraction"
        );
        for f in &self.families {
            let _ = writeln!(
                s,
                "{:<10} {:>4} {:>7} {:>8} {:>7} {:>6} {:>7} {:>7} {:>14} {:>9}  {}",
                f.family.name(),
                f.cheaters,
                pct(f.recall),
                pct(f.flagged_only_rate),
                f.missed,
                f.blocked_before_cheat,
                secs(f.block_s_median),
                secs(f.block_s_p90),
                f.cheat_score_on_board,
                pct(f.cheat_score_on_board_fraction),
                kinds(&f.flag_kinds)
            );
        }
        for (name, g) in [("honest", &self.honest), ("pros", &self.pros)] {
            let _ = writeln!(
                s,
                "{name}: {} players, blocked {} ({}), flagged {} ({}), events flagged {} refused {} of {}, score off boards {}, median score sent {}, flags {}, blocks by {}",
                g.players,
                g.blocked,
                pct(g.blocked_rate),
                g.flagged,
                pct(g.flagged_rate),
                g.events_flagged,
                g.events_refused,
                g.events_sent,
                pct(g.score_off_board_fraction),
                secs(g.score_sent_median),
                kinds(&g.flag_kinds),
                kinds(&g.block_causes)
            );
        }
        let _ = writeln!(
            s,
            "pro earnings / median honest: {}",
            secs(self.pro_earnings_ratio)
        );
        for b in &self.boards {
            let _ = writeln!(
                s,
                "top {} {}: purity {} ({} honest of which {} pros, {} cheaters {}, {} unknown)",
                b.entries,
                b.window,
                pct(b.purity),
                b.honest,
                b.pros,
                b.cheaters,
                kinds(&b.cheaters_by_family),
                b.unknown
            );
        }
        let _ = writeln!(
            s,
            "engine /fairness/flags reasons: {}",
            kinds(&r.engine_flags_by_reason)
        );
        s
    }
}

/// A `--require` threshold that was not met, or could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RequireError {
    #[error("--require: expected key=value, got {0:?}")]
    Syntax(String),
    #[error("--require: unknown key {0:?} (recall[.family], median_block_s, p90_block_s, cheat_score_on_board, honest_blocked, honest_flagged, pro_blocked, pro_flagged, honest_off_board, purity)")]
    UnknownKey(String),
}

/// Checks `key=value,...` thresholds against `report`; returns what is unmet.
/// Lower bounds: `recall` (every family), `recall.<family>`, `purity` (every window).
/// Upper bounds: `median_block_s`, `p90_block_s` (every family; a family with no block
/// fails), `cheat_score_on_board` (fraction, every family), `honest_blocked`,
/// `honest_flagged`, `pro_blocked`, `pro_flagged`, `honest_off_board` (rates).
pub fn check_requirements(report: &Report, spec: &str) -> Result<Vec<String>, RequireError> {
    let mut unmet = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| RequireError::Syntax(part.to_owned()))?;
        let bound: f64 = value
            .trim()
            .parse()
            .map_err(|_| RequireError::Syntax(part.to_owned()))?;
        let mut at_least = |what: String, v: Option<f64>| {
            if v.is_none_or(|v| v < bound) {
                unmet.push(format!("{what} = {} < {bound}", show(v)));
            }
        };
        match key.trim() {
            "recall" => report
                .families
                .iter()
                .for_each(|f| at_least(format!("recall {}", f.family.name()), f.recall)),
            "purity" => report
                .boards
                .iter()
                .for_each(|b| at_least(format!("purity {}", b.window), b.purity)),
            k if k.starts_with("recall.") => {
                let name = &k["recall.".len()..];
                let family =
                    Family::parse(name).ok_or_else(|| RequireError::UnknownKey(k.to_owned()))?;
                let recall = report
                    .families
                    .iter()
                    .find(|f| f.family == family)
                    .and_then(|f| f.recall);
                at_least(format!("recall {name}"), recall);
            }
            k => {
                let values: Vec<(String, Option<f64>)> = match k {
                    "median_block_s" => report
                        .families
                        .iter()
                        .map(|f| {
                            (
                                format!("median block s {}", f.family.name()),
                                f.block_s_median,
                            )
                        })
                        .collect(),
                    "p90_block_s" => report
                        .families
                        .iter()
                        .map(|f| (format!("p90 block s {}", f.family.name()), f.block_s_p90))
                        .collect(),
                    "cheat_score_on_board" => report
                        .families
                        .iter()
                        .map(|f| {
                            (
                                format!("cheat score on board {}", f.family.name()),
                                f.cheat_score_on_board_fraction.or(Some(0.0)),
                            )
                        })
                        .collect(),
                    "honest_blocked" => vec![(
                        "honest blocked".into(),
                        report.honest.blocked_rate.or(Some(0.0)),
                    )],
                    "honest_flagged" => vec![(
                        "honest flagged".into(),
                        report.honest.flagged_rate.or(Some(0.0)),
                    )],
                    "pro_blocked" => vec![(
                        "pros blocked".into(),
                        report.pros.blocked_rate.or(Some(0.0)),
                    )],
                    "pro_flagged" => vec![(
                        "pros flagged".into(),
                        report.pros.flagged_rate.or(Some(0.0)),
                    )],
                    "honest_off_board" => vec![(
                        "honest score off board".into(),
                        report.honest.score_off_board_fraction.or(Some(0.0)),
                    )],
                    _ => return Err(RequireError::UnknownKey(k.to_owned())),
                };
                for (what, v) in values {
                    if v.is_none_or(|v| v > bound) {
                        unmet.push(format!("{what} = {} > {bound}", show(v)));
                    }
                }
            }
        }
    }
    Ok(unmet)
}

fn show(v: Option<f64>) -> String {
    v.map_or_else(|| "none".to_owned(), |v| format!("{v:.4}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fairsim::plan::Action;

    fn event(cheat: bool, score: u64) -> Planned {
        Planned {
            at_ms: 0,
            action: Action::Progression { xp: score as u32 },
            cheat,
            score,
            replayed: false,
        }
    }

    fn player(index: u32, role: Role, cheat_start_ms: Option<u64>) -> Player {
        Player {
            index,
            id: format!("t{index:06}"),
            role,
            xp_factor: 1.0,
            pace: 1.0,
            keyed: false,
            cheat_start_ms,
        }
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[3.0], 0.9), Some(3.0));
        let v: Vec<f64> = (1..=10).map(f64::from).rev().collect();
        assert_eq!(quantile(&v, 0.5), Some(5.0));
        assert_eq!(quantile(&v, 0.9), Some(9.0));
        assert_eq!(quantile(&v, 1.0), Some(10.0));
        assert_eq!(ratio(1, 4), Some(0.25));
        assert_eq!(ratio(1, 0), None);
    }

    #[test]
    fn observations_split_honest_and_cheat_scores() {
        let mut o = PlayerObs::default();
        let start = Some(10_000);
        o.record(
            &event(false, 50),
            start,
            1_000,
            &Outcome::Accepted { flag: None },
        );
        o.record(
            &event(false, 70),
            start,
            2_000,
            &Outcome::Accepted {
                flag: Some("score_jump".into()),
            },
        );
        o.record(
            &event(true, 5_000),
            start,
            11_000,
            &Outcome::Accepted { flag: None },
        );
        o.record(
            &event(true, 9_000),
            start,
            12_000,
            &Outcome::Accepted {
                flag: Some("score_jump".into()),
            },
        );
        o.record(&event(true, 9_000), start, 13_500, &Outcome::Blocked);
        o.record(&event(true, 1), start, 14_000, &Outcome::RateLimited);
        assert_eq!(
            (
                o.sent,
                o.accepted,
                o.flagged,
                o.refused_blocked,
                o.rate_limited
            ),
            (6, 4, 2, 1, 1)
        );
        assert_eq!((o.honest_score_sent, o.honest_score_on_board), (120, 50));
        assert_eq!(
            (o.cheat_score_sent, o.cheat_score_on_board),
            (23_001, 5_000)
        );
        assert_eq!((o.cheat_sent, o.cheat_on_board, o.cheat_flagged), (4, 1, 1));
        assert_eq!(o.first_cheat_sent_ms, Some(11_000));
        assert_eq!(
            (o.block_any_ms, o.block_after_cheat_ms),
            (Some(13_500), Some(13_500))
        );
        o.note_block(12_500, start);
        o.note_block(9_000, start);
        assert_eq!(
            (o.block_any_ms, o.block_after_cheat_ms),
            (Some(9_000), Some(12_500))
        );
        assert_eq!(o.flag_kinds["score_jump"], 2);
    }

    #[test]
    fn report_arithmetic() {
        let players = vec![
            player(0, Role::Honest, None),
            player(1, Role::Honest, None),
            player(2, Role::Pro, None),
            player(3, Role::Cheater(Family::Inflate), Some(1_000)),
            player(4, Role::Cheater(Family::Inflate), Some(1_000)),
            player(5, Role::Cheater(Family::Inflate), Some(1_000)),
            player(6, Role::Cheater(Family::Inflate), Some(5_000)),
        ];
        let mut obs = vec![PlayerObs::default(); players.len()];
        obs[0].honest_score_sent = 100;
        obs[0].honest_score_on_board = 100;
        obs[1].honest_score_sent = 300;
        obs[1].honest_score_on_board = 200;
        obs[1].flagged = 1;
        obs[2].honest_score_sent = 1_400;
        obs[2].honest_score_on_board = 1_400;
        obs[2].engine_flags = Some(0);
        obs[2].block_any_ms = Some(7);
        // Blocked 2 s and 4 s after the first cheat; one flagged only; one blocked
        // before cheating and never after.
        for (i, block) in [(3, 3_000), (4, 5_000)] {
            obs[i].first_cheat_sent_ms = Some(1_000);
            obs[i].block_any_ms = Some(block);
            obs[i].block_after_cheat_ms = Some(block);
        }
        obs[3].cheat_score_sent = 1_000;
        obs[3].cheat_score_on_board = 250;
        obs[5].first_cheat_sent_ms = Some(1_000);
        obs[5].cheat_flagged = 2;
        obs[6].block_any_ms = Some(2_000);
        let p = Params::profile("default").unwrap();
        let entries: Vec<String> = ["t000003", "t000002", "t000000", "stranger", "t000001"]
            .map(String::from)
            .to_vec();
        let board = board_report("weekly", &entries, &players, "t");
        assert_eq!(
            (
                board.entries,
                board.honest,
                board.pros,
                board.cheaters,
                board.unknown
            ),
            (5, 3, 1, 1, 1)
        );
        assert_eq!(board.purity, Some(0.6));
        assert_eq!(board.cheaters_by_family["inflate"], 1);
        let r = build(
            1,
            &p,
            60.0,
            &players,
            &obs,
            vec![board],
            RunFacts::default(),
        );
        assert!(r.to_text().contains("inflate"));
        assert_eq!(r.families.len(), 1);
        let f = &r.families[0];
        assert_eq!(
            (
                f.cheaters,
                f.blocked,
                f.flagged_only,
                f.missed,
                f.blocked_before_cheat
            ),
            (4, 2, 1, 1, 1)
        );
        assert_eq!(f.recall, Some(0.5));
        assert_eq!((f.block_s_median, f.block_s_p90), (Some(2.0), Some(4.0)));
        assert_eq!(f.cheat_score_on_board_fraction, Some(0.25));
        assert_eq!(
            (r.honest.players, r.honest.blocked, r.honest.flagged),
            (3, 1, 1)
        );
        assert_eq!(r.honest.score_off_board_fraction, Some(100.0 / 1_800.0));
        assert_eq!((r.pros.players, r.pros.blocked, r.pros.flagged), (1, 1, 0));
        // Nearest-rank median of the two non-pros (100, 300) is 100.
        assert_eq!(r.pro_earnings_ratio, Some(14.0));

        assert_eq!(
            check_requirements(&r, "recall=0.5, purity=0.6").unwrap(),
            Vec::<String>::new()
        );
        let unmet = check_requirements(
            &r,
            "recall=0.95,honest_blocked=0.001,pro_blocked=0,median_block_s=5,recall.inflate=0.4",
        )
        .unwrap();
        assert_eq!(unmet.len(), 3, "{unmet:?}");
        assert!(unmet[0].starts_with("recall inflate = 0.5000 < 0.95"));
        assert_eq!(check_requirements(&r, "recall.speed=0.1").unwrap().len(), 1);
        assert!(matches!(
            check_requirements(&r, "nope=1"),
            Err(RequireError::UnknownKey(_))
        ));
        assert!(matches!(
            check_requirements(&r, "recall"),
            Err(RequireError::Syntax(_))
        ));
    }
}
