//! The fairness guard: per-player rate limiting with flood escalation, blocks, the
//! detectors and the audit trail.
//!
//! Rate buckets and flood strikes are soft state: they steer decisions but are not
//! logged, so a restart forgives a flood in progress. Blocks and flags are hard state:
//! they travel as records through the shard's one `apply` path. So does everything the
//! detectors learn: [`judge`] is a pure function of the shard's state and the event
//! (clock injected), and [`learn`] is called by `apply` with what the record carries, so
//! replaying the log rebuilds the same models and histories, hence the same decisions.
//!
//! Detectors, one module each: [`jump`] (score jumps and caps), [`rate`] (rate of gain),
//! [`cadence`] (the same boss killed too fast), [`luck`] (improbable drops). Each finding
//! carries its evidence (detector, measured value, threshold). A flag keeps the event's
//! score off the boards (progression kept); a block refuses the event and blocks the
//! player for `BLOCK_SEC`. Blocks come from strong evidence (a detector's block
//! threshold, twice its flag threshold) or from `FLAG_STRIKES` flags within
//! `FLAG_STRIKE_SEC`.

use std::collections::VecDeque;

use serde::Serialize;

use crate::event::EventKind;

pub mod cadence;
pub mod jump;
pub mod luck;
pub mod model;
pub mod rate;
pub mod review;

/// Rate-limit cost of one event, in millitokens: integer arithmetic keeps the bucket
/// exact and replay-stable.
const EVENT_COST_MILLITOKENS: u64 = 1000;

/// Why a player is blocked, and by whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Block {
    pub until_ms: u64,
    pub reason: String,
    pub by: BlockedBy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockedBy {
    Fairness,
    Admin,
}

impl BlockedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            BlockedBy::Fairness => "fairness",
            BlockedBy::Admin => "admin",
        }
    }
}

/// Per-player fairness state.
///
/// The token bucket is on every event's path; everything else (flood strikes, the block,
/// counters, the drop-audit throttle) exists only for players who got into trouble, so
/// it sits behind one pointer that well-behaved players never allocate: 24 B per player
/// instead of 104, which is a tenth of a player's whole footprint.
#[derive(Debug, Clone, Default)]
pub struct PlayerGuard {
    /// Token bucket level, millitokens.
    bucket_millitokens: u64,
    /// When the bucket was last refilled, ms; 0 means never used (starts full).
    bucket_at_ms: u64,
    record: Option<Box<GuardRecord>>,
    /// What the detectors know of this player; hard state, rebuilt by replay.
    pub history: History,
}

/// The part of a player's fairness state that only trouble creates.
#[derive(Debug, Clone, Default)]
struct GuardRecord {
    /// The last whole second in which this player was rate limited.
    strike_second: u64,
    /// Consecutive seconds, up to `strike_second`, in which the player was rate limited.
    strikes: u32,
    block: Option<Block>,
    flags: u64,
    rate_limited: u64,
    /// The second of the last `drop` audit record, to emit at most one per second.
    drop_audit_second: u64,
    /// Drops since the last `drop` audit record.
    drops_unaudited: u64,
    /// Fairness blocks of this player so far: the next one lasts `BLOCK_SEC × 2^n` (see
    /// [`review::block_duration_ms`]). Hard state.
    fairness_blocks: u32,
    /// The pending review while the player is quarantined. Hard state.
    review: Option<Box<review::Review>>,
}

/// What the rate limiter says about one more event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allowed,
    /// Over the limit; a token is back after this long.
    Limited {
        retry_after_ms: u64,
        flood: bool,
    },
}

impl PlayerGuard {
    /// Takes one token; on refusal counts a strike, and reports a flood once the player
    /// has been limited in `flood_after_s` consecutive seconds.
    pub fn take_token(&mut self, now_ms: u64, rate_per_s: u32, flood_after_s: u32) -> RateDecision {
        let rate = u64::from(rate_per_s.max(1));
        let capacity = rate * EVENT_COST_MILLITOKENS;
        if self.bucket_at_ms == 0 {
            self.bucket_millitokens = capacity;
        } else {
            // `rate` tokens per second is `rate` millitokens per millisecond.
            let elapsed_ms = now_ms.saturating_sub(self.bucket_at_ms);
            self.bucket_millitokens =
                capacity.min(self.bucket_millitokens + elapsed_ms.saturating_mul(rate));
        }
        self.bucket_at_ms = now_ms.max(1);
        if self.bucket_millitokens >= EVENT_COST_MILLITOKENS {
            self.bucket_millitokens -= EVENT_COST_MILLITOKENS;
            return RateDecision::Allowed;
        }
        let missing = EVENT_COST_MILLITOKENS - self.bucket_millitokens;
        let record = self.record_mut();
        record.rate_limited += 1;
        let second = now_ms / 1000;
        if second != record.strike_second {
            record.strikes = if second == record.strike_second + 1 {
                record.strikes + 1
            } else {
                1
            };
            record.strike_second = second;
        }
        RateDecision::Limited {
            retry_after_ms: missing.div_ceil(rate),
            flood: record.strikes >= flood_after_s.max(1),
        }
    }

    fn record_mut(&mut self) -> &mut GuardRecord {
        self.record.get_or_insert_with(Box::default)
    }

    /// Forgets the flood streak, so a player coming out of a block starts clean.
    pub fn reset_strikes(&mut self) {
        if let Some(record) = &mut self.record {
            record.strikes = 0;
        }
    }

    /// The block, active or expired but not yet lifted.
    pub fn block(&self) -> Option<&Block> {
        self.record.as_ref()?.block.as_ref()
    }

    pub fn set_block(&mut self, block: Option<Block>) {
        if block.is_some() || self.record.is_some() {
            self.record_mut().block = block;
        }
    }

    /// The active block at `now_ms`, if any.
    pub fn active_block(&self, now_ms: u64) -> Option<&Block> {
        self.block().filter(|b| b.until_ms > now_ms)
    }

    /// Events of this player flagged by the score guard.
    pub fn flags(&self) -> u64 {
        self.record.as_ref().map_or(0, |r| r.flags)
    }

    pub fn add_flag(&mut self) {
        self.record_mut().flags += 1;
    }

    /// Events of this player refused by the rate limiter.
    pub fn rate_limited(&self) -> u64 {
        self.record.as_ref().map_or(0, |r| r.rate_limited)
    }

    /// Recovery: puts back the counters as checkpointed.
    pub fn restore_counts(&mut self, flags: u64, rate_limited: u64) {
        if flags > 0 || rate_limited > 0 || self.record.is_some() {
            let record = self.record_mut();
            record.flags = flags;
            record.rate_limited = rate_limited;
        }
    }

    /// Fairness blocks so far (see [`review::block_duration_ms`]).
    pub fn fairness_blocks(&self) -> u32 {
        self.record.as_ref().map_or(0, |r| r.fairness_blocks)
    }

    pub fn set_fairness_blocks(&mut self, blocks: u32) {
        if blocks > 0 || self.record.is_some() {
            self.record_mut().fairness_blocks = blocks;
        }
    }

    /// The pending review: the player is quarantined while there is one.
    pub fn review(&self) -> Option<&review::Review> {
        self.record.as_ref()?.review.as_deref()
    }

    pub fn review_mut(&mut self) -> Option<&mut review::Review> {
        self.record.as_mut()?.review.as_deref_mut()
    }

    /// Opens (or, in recovery, puts back) the pending review, or closes it (`None`),
    /// returning the one it replaces.
    pub fn set_review(&mut self, review: Option<review::Review>) -> Option<review::Review> {
        if review.is_none() && self.record.is_none() {
            return None;
        }
        let old = std::mem::replace(&mut self.record_mut().review, review.map(Box::new));
        old.map(|r| *r)
    }

    /// Counts a dropped event; returns how many drops a `drop` audit record should report
    /// now, or `None` while this second already has one.
    pub fn note_drop(&mut self, now_ms: u64) -> Option<u64> {
        let record = self.record_mut();
        record.drops_unaudited += 1;
        let second = now_ms / 1000;
        if second == record.drop_audit_second {
            return None;
        }
        record.drop_audit_second = second;
        Some(std::mem::take(&mut record.drops_unaudited))
    }
}

/// Flag kinds, also the `kind` label of `anomaly_flags_total`: one per detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagKind {
    /// A score far outside the population and the player's own history.
    ScoreJump,
    /// A score that can only be forged (over a cap, or twice `ANOMALY_Z`).
    ImpossibleScore,
    /// Sustained flooding: the player is blocked.
    Flood,
    /// Gain per second beyond a human pace.
    RateOfGain,
    /// The same boss killed again faster than an honest fight.
    #[serde(rename = "impossible_cadence")]
    Cadence,
    /// A run of rare drops too lucky to be honest.
    #[serde(rename = "improbable_luck")]
    Luck,
    /// Signed events re-sent verbatim again and again (see `crate::replay`).
    Replay,
}

impl FlagKind {
    /// Every kind, so that metrics can show each one from the first scrape.
    pub const ALL: [FlagKind; 7] = [
        FlagKind::ScoreJump,
        FlagKind::ImpossibleScore,
        FlagKind::Flood,
        FlagKind::RateOfGain,
        FlagKind::Cadence,
        FlagKind::Luck,
        FlagKind::Replay,
    ];

    /// In words, for block reasons.
    pub fn describe(self) -> &'static str {
        match self {
            FlagKind::ScoreJump => "score jump",
            FlagKind::ImpossibleScore => "impossible score",
            FlagKind::Flood => "flooding",
            FlagKind::RateOfGain => "rate of gain",
            FlagKind::Cadence => "impossible cadence",
            FlagKind::Luck => "improbable luck",
            FlagKind::Replay => "replayed events",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FlagKind::ScoreJump => "score_jump",
            FlagKind::ImpossibleScore => "impossible_score",
            FlagKind::Flood => "flood",
            FlagKind::RateOfGain => "rate_of_gain",
            FlagKind::Cadence => "impossible_cadence",
            FlagKind::Luck => "improbable_luck",
            FlagKind::Replay => "replay",
        }
    }
}

/// The detectors' thresholds (each a config key, see the README), with their defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// Score jump flag threshold in population deviations (`ANOMALY_Z`); twice it blocks.
    /// Also how far the rate of gain's population tail lies above its mean.
    pub anomaly_z: f64,
    /// Prior median score of a progression event (`ANOMALY_PRIOR_PROGRESSION`): what a
    /// cold shard judges by.
    pub prior_progression: f64,
    /// Prior median score of a boss kill (`ANOMALY_PRIOR_BOSS_KILL`).
    pub prior_boss_kill: f64,
    /// Largest honest progression score (`SCORE_CAP_PROGRESSION`); above it blocks.
    pub cap_progression: u64,
    /// Largest honest boss kill score (`SCORE_CAP_BOSS_KILL`); above it blocks.
    pub cap_boss_kill: u64,
    /// Nats per event a player's scores must exceed their own mean by before the shift
    /// CUSUM grows (`ANOMALY_SHIFT_DRIFT`): ordinary variation stays below it.
    pub shift_drift: f64,
    /// Shift CUSUM flag threshold, nats (`ANOMALY_SHIFT_MAX`); twice it blocks.
    pub shift_max: f64,
    /// Highest sustained gain, in the player's own typical events per second, that a
    /// human reaches (`GAIN_RATE_MAX`); above it (or the population's tail) flags, twice
    /// it blocks.
    pub gain_rate_max: f64,
    /// Time constant of the rate-of-gain window, ms (`GAIN_WINDOW_SEC`).
    pub gain_window_ms: u64,
    /// A rematch of the same boss sooner than this share of its typical fight is flagged,
    /// sooner than half of it blocked (`CADENCE_FRACTION`).
    pub cadence_fraction: f64,
    /// The rematch threshold never goes below this, ms (`CADENCE_FLOOR_SEC`), and is this
    /// alone until the boss has `cadence_min_samples` learned fights.
    pub cadence_floor_ms: u64,
    /// Learned fights a boss needs before its typical fight is used
    /// (`CADENCE_MIN_SAMPLES`).
    pub cadence_min_samples: u64,
    /// The weight at which a claim is neutral evidence (`LUCK_REFERENCE_WEIGHT`): rarer
    /// claims add to the player's luck, commoner ones take away.
    pub luck_reference_weight: f64,
    /// Luck CUSUM flag threshold, nats (`LUCK_LLR_MAX`); twice it blocks.
    pub luck_llr_max: f64,
    /// Flags within `flag_strike_ms` that make a block (`FLAG_STRIKES`).
    pub flag_strikes: u8,
    /// The window of those flags, ms (`FLAG_STRIKE_SEC`).
    pub flag_strike_ms: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            anomaly_z: 3.5,
            prior_progression: 50.0,
            prior_boss_kill: 2500.0,
            cap_progression: 20_000,
            cap_boss_kill: 100_000,
            shift_drift: 0.5,
            shift_max: 3.0,
            gain_rate_max: 4.0,
            gain_window_ms: 5_000,
            cadence_fraction: 0.3,
            cadence_floor_ms: 5_000,
            cadence_min_samples: 3,
            luck_reference_weight: 0.05,
            luck_llr_max: 7.0,
            flag_strikes: 3,
            flag_strike_ms: 300_000,
        }
    }
}

/// What a detector measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Population deviations of `ln(score)`.
    Z,
    /// The event's score.
    Score,
    /// The own-history shift CUSUM, nats.
    ShiftNats,
    /// Gain in own typical events per second.
    UnitsPerS,
    /// Seconds since the same boss's last kill.
    KillGapS,
    /// The luck CUSUM, nats.
    LlrNats,
    /// Consecutive seconds rate limited.
    LimitedS,
    /// Seconds from the player's previous event to a boss kill: the fight.
    FightS,
    /// Replays of one signed body refused within the replay window.
    Replays,
}

impl Measure {
    /// Every measure in tag order (the codec's tag is the index + 1).
    pub const ALL: [Measure; 9] = [
        Measure::Z,
        Measure::Score,
        Measure::ShiftNats,
        Measure::UnitsPerS,
        Measure::KillGapS,
        Measure::LlrNats,
        Measure::LimitedS,
        Measure::FightS,
        Measure::Replays,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Measure::Z => "z",
            Measure::Score => "score",
            Measure::ShiftNats => "shift_nats",
            Measure::UnitsPerS => "units_per_s",
            Measure::KillGapS => "kill_gap_s",
            Measure::LlrNats => "llr_nats",
            Measure::LimitedS => "limited_s",
            Measure::FightS => "fight_s",
            Measure::Replays => "replays",
        }
    }
}

/// What a detector measured against what it allows: the evidence of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// Which detector decided (also the metric's `kind`).
    pub detector: FlagKind,
    /// What `measured` is, so the numbers read without the code.
    pub measure: Measure,
    /// The value the detector saw.
    pub measured: f64,
    /// The threshold `measured` crossed (below it, for a gap); NaN when unknown (flags
    /// of logs older than the evidence).
    pub threshold: f64,
}

impl Evidence {
    /// The evidence as audit detail fields (`threshold` null when unknown).
    pub fn insert_into(self, detail: &mut serde_json::Value) {
        if let Some(map) = detail.as_object_mut() {
            map.insert("detector".into(), self.detector.as_str().into());
            map.insert("measure".into(), self.measure.as_str().into());
            map.insert("measured".into(), self.measured.into());
            map.insert("threshold".into(), self.threshold.into());
        }
    }
}

/// A detector's finding on one event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Finding {
    /// Kept off the boards.
    Flag(Evidence),
    /// Strong evidence: refused, the player blocked.
    Block(Evidence),
}

/// Events the detectors' tests share.
#[cfg(test)]
pub(crate) mod test_events {
    use crate::event::EventKind;

    /// A quest worth `xp`.
    pub fn quest(xp: u64) -> EventKind {
        EventKind::Progression {
            delta_xp: xp,
            activity: None,
        }
    }
}

impl Finding {
    /// The ladder every detector shares: beyond its threshold an event is flagged, beyond
    /// twice its threshold the player is blocked (the evidence then names the doubled
    /// threshold); `None` within it.
    pub fn grade(evidence: Evidence) -> Option<Finding> {
        if evidence.measured > 2.0 * evidence.threshold {
            Some(Finding::Block(Evidence {
                threshold: 2.0 * evidence.threshold,
                ..evidence
            }))
        } else if evidence.measured > evidence.threshold {
            Some(Finding::Flag(evidence))
        } else {
            None
        }
    }

    /// The same ladder for a measure where less is worse (a fight's length): under the
    /// threshold flagged, under half of it blocked (the evidence then names the half).
    pub fn grade_below(evidence: Evidence) -> Option<Finding> {
        if evidence.measured < evidence.threshold / 2.0 {
            Some(Finding::Block(Evidence {
                threshold: evidence.threshold / 2.0,
                ..evidence
            }))
        } else if evidence.measured < evidence.threshold {
            Some(Finding::Flag(evidence))
        } else {
            None
        }
    }
}

/// What the detectors read about one event.
pub struct Seen<'a> {
    /// The event judged.
    pub event: &'a EventKind,
    /// When the shard accepts it (engine clock).
    pub at_ms: u64,
    /// The player's previous accepted event, 0 for none.
    pub last_ms: u64,
}

/// Recent flags, for the ladder: 8 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Strikes {
    /// When the current strike window began, engine seconds.
    pub since_s: u32,
    /// Flags since then (saturating).
    pub count: u8,
}

impl Strikes {
    /// Flags counted at `at_ms`, this one excluded.
    fn at(self, at_ms: u64, t: &Thresholds) -> u8 {
        let open = (at_ms / 1000).saturating_sub(u64::from(self.since_s)) * 1000 < t.flag_strike_ms;
        if open {
            self.count
        } else {
            0
        }
    }

    fn add(&mut self, at_ms: u64, t: &Thresholds) {
        let count = self.at(at_ms, t);
        if count == 0 {
            self.since_s = u32::try_from(at_ms / 1000).unwrap_or(u32::MAX);
        }
        self.count = count.saturating_add(1);
    }
}

/// Everything the detectors know of one player: fixed-size, 40 bytes, inline in every
/// player (see the memory example).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct History {
    /// Own event sizes and the shift test (score jumps).
    pub jump: jump::Own,
    /// The rate-of-gain window.
    pub gain: rate::Gain,
    /// The luck test.
    pub luck: luck::Luck,
    /// The last boss kill, for rematches (cadence).
    pub last_kill: cadence::LastKill,
    /// Recent flags, for the ladder.
    pub strikes: Strikes,
}

/// Everything the detectors know of the shard's population.
#[derive(Debug, Clone, PartialEq)]
pub struct Population {
    /// Event sizes per scored type.
    pub jump: jump::Models,
    /// Windowed gain of unflagged events, own-typical units.
    pub gain: model::LnModel,
    /// Fight lengths per boss, and all bosses' fight seconds per unit of points.
    pub fights: cadence::Fights,
}

/// Names of the population models in checkpoints (`FairnessModel` records).
pub mod model_name {
    pub const PROGRESSION: &str = "score_jump.progression";
    pub const BOSS_KILL: &str = "score_jump.boss_kill";
    pub const GAIN: &str = "rate_of_gain";
    /// Followed by the boss id.
    pub const FIGHT_PREFIX: &str = "cadence.";
    /// Every boss's fight seconds per unit of points (named anew when it stopped being
    /// plain seconds: an older checkpoint's model is ignored, not misread).
    pub const FIGHTS_PER_UNIT: &str = "cadence_per_unit";
}

impl Population {
    pub fn new(t: &Thresholds) -> Self {
        Population {
            jump: jump::Models::new(t),
            gain: rate::model(t),
            fights: cadence::Fights::default(),
        }
    }

    /// Every model with its checkpoint name.
    pub fn models(&self) -> impl Iterator<Item = (String, model::LnModel)> + '_ {
        let fixed = [
            (model_name::PROGRESSION.to_owned(), self.jump.by_type[0]),
            (model_name::BOSS_KILL.to_owned(), self.jump.by_type[1]),
            (model_name::GAIN.to_owned(), self.gain),
            (model_name::FIGHTS_PER_UNIT.to_owned(), self.fights.per_unit),
        ];
        let fights = (self.fights.by_boss.iter())
            .map(|(boss, m)| (format!("{}{boss}", model_name::FIGHT_PREFIX), *m));
        fixed.into_iter().chain(fights)
    }

    /// Recovery: a model as checkpointed; unknown names (a newer build's) are ignored.
    pub fn restore(&mut self, name: &str, model: model::LnModel) {
        match name {
            model_name::PROGRESSION => self.jump.by_type[0] = model,
            model_name::BOSS_KILL => self.jump.by_type[1] = model,
            model_name::GAIN => self.gain = model,
            model_name::FIGHTS_PER_UNIT => self.fights.per_unit = model,
            _ => {
                if let Some(boss) = name.strip_prefix(model_name::FIGHT_PREFIX) {
                    self.fights.restore(boss, model);
                }
            }
        }
    }
}

/// A decision on one event: its evidence, and whether it blocks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// What the deciding detector measured.
    pub evidence: Evidence,
    /// Refuse the event and block the player (else: flag it).
    pub block: bool,
    /// Flags in the strike window, this one included, when the ladder made the block.
    pub strikes: Option<u8>,
}

/// Runs every detector on one event: the strongest finding (a block before a flag, then
/// in the order score jump, rate of gain, cadence, luck), escalated to a block when it
/// is a flag that completes `FLAG_STRIKES`. Pure: same state, same event, same answer.
pub fn judge(pop: &Population, history: &History, seen: &Seen, t: &Thresholds) -> Option<Decision> {
    let findings = [
        jump::assess(&pop.jump, &history.jump, seen.event, t),
        rate::assess(&pop.jump, &pop.gain, &history.jump, &history.gain, seen, t),
        cadence::assess(&pop.fights, &history.jump, &history.last_kill, seen, t),
        luck::assess(&history.luck, seen, t),
    ];
    let blocked = findings.iter().flatten().find_map(|f| match f {
        Finding::Block(e) => Some(*e),
        Finding::Flag(_) => None,
    });
    if let Some(evidence) = blocked {
        return Some(Decision {
            evidence,
            block: true,
            strikes: None,
        });
    }
    let evidence = findings.iter().flatten().find_map(|f| match f {
        Finding::Flag(e) => Some(*e),
        Finding::Block(_) => None,
    })?;
    let strikes = history.strikes.at(seen.at_ms, t).saturating_add(1);
    let escalated = strikes >= t.flag_strikes;
    Some(Decision {
        evidence,
        block: escalated,
        strikes: escalated.then_some(strikes),
    })
}

/// Learns one accepted event (called by `apply`, live and in replay). The order matters
/// and is fixed: the rate detector reads the player's typical event before it learns.
pub fn learn(
    pop: &mut Population,
    history: &mut History,
    seen: &Seen,
    flagged: bool,
    t: &Thresholds,
) {
    rate::learn(
        &pop.jump,
        &mut pop.gain,
        &history.jump,
        &mut history.gain,
        seen,
        flagged,
        t,
    );
    // Before the player's own history learns the event: the unit a kill is measured in
    // is the one it was judged with.
    cadence::learn(
        &mut pop.fights,
        &history.jump,
        &mut history.last_kill,
        seen,
        flagged,
        t,
    );
    jump::learn(&mut pop.jump, &mut history.jump, seen.event, flagged, t);
    luck::learn(&mut history.luck, seen, t);
    if flagged {
        history.strikes.add(seen.at_ms, t);
    }
}

/// One audit record: every flag, block, unblock and drop decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Unix seconds.
    pub at: u64,
    pub at_ms: u64,
    pub kind: AuditKind,
    pub player_id: String,
    pub reason: String,
    /// The decision's evidence, always a JSON object (the API's schema says so).
    pub detail: serde_json::Value,
}

impl AuditRecord {
    /// A record at `at_ms`; `at`, the Unix seconds the API also shows, derives from it
    /// here only.
    pub fn new(
        kind: AuditKind,
        player_id: String,
        reason: String,
        detail: serde_json::Value,
        at_ms: u64,
    ) -> Self {
        AuditRecord {
            at: at_ms / 1000,
            at_ms,
            kind,
            player_id,
            reason,
            detail,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditKind {
    Flag,
    Block,
    Unblock,
    Drop,
    /// A fairness block took the player's scores off the boards, held for review.
    Quarantine,
    /// An operator closed the player's review (`reason`: confirmed or cleared).
    Review,
}

/// The shard's bounded in-memory audit trail, oldest first.
#[derive(Debug, Default)]
pub struct AuditLog {
    records: VecDeque<AuditRecord>,
    /// Records not yet handed to the output (stdout); replay discards them.
    outbox: Vec<AuditRecord>,
}

impl AuditLog {
    pub fn push(&mut self, record: AuditRecord, records_max: usize) {
        if self.records.len() == records_max {
            self.records.pop_front();
        }
        self.records.push_back(record.clone());
        self.outbox.push(record);
    }

    /// Recovery: puts back a kept record without printing it again.
    pub fn restore(&mut self, record: AuditRecord, records_max: usize) {
        if self.records.len() == records_max {
            self.records.pop_front();
        }
        self.records.push_back(record);
    }

    /// Kept records, oldest first (for checkpoints).
    pub fn oldest_first(&self) -> impl Iterator<Item = &AuditRecord> {
        self.records.iter()
    }

    /// Records written since the last call, for the output.
    pub fn take_outbox(&mut self) -> Vec<AuditRecord> {
        std::mem::take(&mut self.outbox)
    }

    /// Newest first, filtered.
    pub fn newest<'a>(
        &'a self,
        filter: impl Fn(&AuditRecord) -> bool + 'a,
    ) -> impl Iterator<Item = &'a AuditRecord> + 'a {
        self.records.iter().rev().filter(move |r| filter(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_rate_then_limits() {
        let mut guard = PlayerGuard::default();
        let t0 = 1_000_000;
        for _ in 0..5 {
            assert_eq!(guard.take_token(t0, 5, 3), RateDecision::Allowed);
        }
        assert_eq!(
            guard.take_token(t0, 5, 3),
            RateDecision::Limited {
                retry_after_ms: 200,
                flood: false
            }
        );
        // 200 ms later one token is back.
        assert_eq!(guard.take_token(t0 + 200, 5, 3), RateDecision::Allowed);
        assert_eq!(guard.rate_limited(), 1);
    }

    #[test]
    fn flood_needs_consecutive_seconds() {
        let mut guard = PlayerGuard::default();
        let mut flood_at = None;
        for ms in (0..5000).step_by(10) {
            if let RateDecision::Limited { flood: true, .. } = guard.take_token(10_000 + ms, 5, 3) {
                flood_at = Some(ms);
                break;
            }
        }
        // Limited from the first second on; the third consecutive second floods.
        let flood_at = flood_at.expect("flooding is detected");
        assert!((2000..3000).contains(&flood_at), "{flood_at}");

        let mut bursty = PlayerGuard::default();
        for second in [0u64, 2, 4, 6] {
            for i in 0..20 {
                let decision = bursty.take_token(10_000 + second * 1000 + i, 5, 3);
                assert!(!matches!(
                    decision,
                    RateDecision::Limited { flood: true, .. }
                ));
            }
        }
    }

    #[test]
    fn drops_are_audited_once_per_second() {
        let mut guard = PlayerGuard::default();
        assert_eq!(guard.note_drop(5_000), Some(1));
        assert_eq!(guard.note_drop(5_100), None);
        assert_eq!(guard.note_drop(5_900), None);
        assert_eq!(guard.note_drop(6_000), Some(3));
    }

    /// The memory target is 64 bytes of detector state per well-behaved player.
    #[test]
    fn a_players_detector_state_is_small_and_fixed() {
        assert_eq!(std::mem::size_of::<History>(), 40);
        // The ladder (block count, pending review) lives behind the trouble record's
        // pointer: a well-behaved player's guard is the bucket, that pointer and History.
        assert_eq!(std::mem::size_of::<PlayerGuard>(), 8 + 8 + 8 + 40);
        assert!(std::mem::size_of::<PlayerGuard>() <= 64);
    }

    #[test]
    fn strikes_count_within_their_window_only() {
        let t = Thresholds {
            flag_strike_ms: 10_000,
            ..Thresholds::default()
        };
        let mut strikes = Strikes::default();
        strikes.add(100_000, &t);
        strikes.add(105_000, &t);
        assert_eq!(strikes.at(109_000, &t), 2);
        assert_eq!(strikes.at(110_000, &t), 0);
        strikes.add(111_000, &t);
        assert_eq!((strikes.count, strikes.since_s), (1, 111));
    }

    #[test]
    fn audit_log_is_bounded() {
        let mut log = AuditLog::default();
        for i in 0..10 {
            log.push(
                AuditRecord {
                    at: i,
                    at_ms: i * 1000,
                    kind: AuditKind::Flag,
                    player_id: "abc".into(),
                    reason: "x".into(),
                    detail: serde_json::Value::Null,
                },
                4,
            );
        }
        let kept: Vec<u64> = log.newest(|_| true).map(|r| r.at).collect();
        assert_eq!(kept, vec![9, 8, 7, 6]);
        assert_eq!(log.take_outbox().len(), 10);
        assert!(log.take_outbox().is_empty());
    }
}
