//! Binary encoding of [`Record`]s (WAL payloads) and primitives for checkpoints.
//!
//! The WAL frames each payload with its length, CRC32C, LSN and the record kind (see
//! `liveops-storage`); this module defines the payload of each kind. Integers are LEB128
//! varints, strings and byte strings a varint length then the bytes, `f64` 8 bytes LE,
//! fixed arrays raw. Every decoded length is checked against a limit before anything is
//! allocated, so a corrupt payload that passed its CRC still cannot make the decoder
//! allocate or loop without bound.
//!
//! ```text
//! kind 1 EventAccepted   player str | type u8 | type fields | ts v | at_ms v | seq v
//!                        | flag u8: 0x40 none; 0x80 | detector tag: flagged, then evidence
//!                          (measure u8 | measured f64 | threshold f64); older logs: 0 none or
//!                          1 score_jump, then z f64 either way
//!                        | key u8 (0 none; 2: key str | fingerprint [32] | index v | reserved_ms v;
//!                          1, older logs: the same without reserved_ms)
//!                        | totals (absent in older logs): 1 u8 | xp v | windows u8 (bit i:
//!                          a score for window i: 0 daily, 1 weekly, 2 seasonal) | score v per bit;
//!                          0 u8: none (written only when a replay id follows)
//!                        | replay id (absent in older logs): 1 u8 | body digest [16]
//!                          | position v (0: a body of one event; p + 1: batch position p)
//!    type 1 progression  delta_xp v | activity? u8 [str]
//!    type 2 boss_kill    boss_id str | tier v | points v
//!    type 3 drop_claimed drop_id str | weight? u8 [f64] | source? u8 [str]
//! kind 2 Blocked         player str | until_ms v | reason str | by u8 (1 fairness, 2 admin) | at_ms v
//!                        | evidence? (absent in older logs): u8 (0 none, 1) | detector u8
//!                          | measure u8 | measured f64 | threshold f64
//! kind 3 Unblocked       player str | reason str | at_ms v
//! kind 4 RewardClaimed   player str | item str | receipt_id str | timestamp v | at_ms v
//! kind 5 WindowClosed    window u8 (1 daily, 2 weekly, 3 seasonal) | next name str
//!                        | next ends_ms v | at_ms v
//! kind 6 KeyCompleted    key str | fingerprint [32] | status v | body bytes | expires_ms v | at_ms v
//!                        (older logs; read with no host)
//! kind 7 KeyCompleted    as kind 6, then host u8 (0 none, 4 [IPv4 4], 6 [IPv6 16])
//! kind 8 Quarantined     player str | reason str | evidence (detector u8 | measure u8
//!                        | measured f64 | threshold f64) | at_ms v | held
//! kind 9 ReviewClosed    player str | verdict u8 (1 confirmed, 2 cleared) | at_ms v | held
//!    held                n v × (window u8 | period str | score v | reached_ms v | seq v)
//!
//! Snapshot kinds (checkpoints only):
//! kind 10 PlayerState    player str | xp v | n v × (boss str | kills v)
//!                        | n v × (drop_id str | source? | receipt_id?) | updated_ms v
//!                        | block? u8 [until_ms v | reason str | by u8] | flags v | rate_limited v
//!                        | history (absent in older checkpoints): 1 u8 | own ln_mean f32 × 2
//!                          | own seen u8 × 2 | shift f32 | gain units f32 | luck llr f32
//!                          | last kill boss v | last kill at_ms v | strikes since_s v | count u8
//! kind 11 BoardPeriod    window u8 | name str | ends_ms v | updated_ms v
//! kind 12 BoardEntry     window u8 | player str | score v | reached_ms v | seq v
//! kind 13 ClosedPeriod   window u8 | name str | closed_ms v
//!                        | n v × (player str | score v | reached_ms v | seq v)
//! kind 14 ScoreModel     mean f64 | variance f64 | samples v
//! kind 15 Audit          at_ms v | kind u8 (1 flag, 2 block, 3 unblock, 4 drop,
//!                        5 quarantine, 6 review) | player str
//!                        | reason str | detail (JSON text) str
//! kind 16 NextSeq        seq v
//! kind 17 FairnessModel  name str | mean f64 | variance f64 | samples v
//! kind 18 GuardState     player str | fairness_blocks v | review? u8 [since_ms v
//!                        | reason str | evidence | blocks_before v | held]
//! kind 19 ReplaySeen     body digest [16] | accepted_ms v
//!                        | positions u8 (0: a body of one event; 1: n v × bitmap word
//!                          u64, the first n words of the batch's position bitmap)
//!
//! Detector tags (`FlagKind`): 1 score_jump, 2 impossible_score, 3 flood, 4 rate_of_gain,
//! 5 impossible_cadence, 6 improbable_luck, 7 replay. Measure tags: the index in
//! `Measure::ALL` + 1.
//! ```

use crate::event::EventKind;
use crate::event::BATCH_EVENTS_MAX;
use crate::fairness::model::LnModel;
use crate::fairness::review::{Held, Review, Verdict};
use crate::fairness::{
    cadence, jump, luck, rate, AuditKind, AuditRecord, Block, BlockedBy, Evidence, FlagKind,
    History, Measure, Strikes,
};
use crate::idempotency::StoredResponse;
use crate::replay::{PositionBits, Remembered, ReplayId, BODY_DIGEST_BYTES, POSITION_WORDS};
use crate::shard::{Drop, KeyRef, PlayerSnapshot, Record, Totals};
use crate::window::{Period, WindowKind};
use std::net::IpAddr;

/// Longest string field a record may hold (bytes): labels are 64 chars (≤ 256 bytes
/// UTF-8), reasons 200 chars, keys 255; generous but bounded.
pub const STRING_BYTES_MAX: usize = 4096;
/// Longest byte field (a remembered response body).
pub const BYTES_MAX: usize = 4 << 20;
/// Most items in one collection field (drops, bosses, closed standings).
pub const ITEMS_MAX: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload ends early")]
    Truncated,
    #[error("varint is too long")]
    VarintOverflow,
    #[error("length {0} exceeds its limit")]
    TooLong(usize),
    #[error("string is not UTF-8")]
    NotUtf8,
    #[error("unknown {what} tag {tag}")]
    UnknownTag { what: &'static str, tag: u64 },
    #[error("{0} bytes left over after the record")]
    Trailing(usize),
    #[error("audit detail is not JSON")]
    BadJson,
}

/// Serializes bytes as lowercase hex (for dumps of fingerprints).
pub fn hex_bytes<S: serde::Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

/// Serializes bytes as text, replacing invalid UTF-8 (for dumps of stored bodies).
pub fn lossy_text<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(bytes))
}

/// Appends primitives to a buffer.
pub struct Writer<'a>(pub &'a mut Vec<u8>);

impl Writer<'_> {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    pub fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    pub fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    pub fn f32(&mut self, v: f32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn evidence(&mut self, e: &Evidence) {
        self.u8(flag_tag(e.detector));
        self.u8(measure_tag(e.measure));
        self.f64(e.measured);
        self.f64(e.threshold);
    }

    fn history(&mut self, h: &History) {
        self.u8(1);
        for v in h.jump.ln_mean {
            self.f32(v);
        }
        for v in h.jump.seen {
            self.u8(v);
        }
        self.f32(h.jump.shift);
        self.f32(h.gain.units);
        self.f32(h.luck.llr);
        self.varint(u64::from(h.last_kill.boss));
        self.varint(h.last_kill.stored_ms());
        self.varint(u64::from(h.strikes.since_s));
        self.u8(h.strikes.count);
    }

    fn held(&mut self, held: &[Held]) {
        self.varint(held.len() as u64);
        for h in held {
            self.u8(window_tag(h.window));
            self.str(&h.period);
            self.varint(h.score);
            self.varint(h.reached_ms);
            self.varint(h.seq);
        }
    }

    pub fn bytes(&mut self, v: &[u8]) {
        self.varint(v.len() as u64);
        self.0.extend_from_slice(v);
    }

    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    pub fn opt_str(&mut self, v: Option<&str>) {
        match v {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }

    pub fn array32(&mut self, v: &[u8; 32]) {
        self.0.extend_from_slice(v);
    }

    fn replay_id(&mut self, id: &ReplayId) {
        self.u8(1);
        self.0.extend_from_slice(&id.body);
        self.varint(id.position.map_or(0, |p| u64::from(p) + 1));
    }

    /// A window and one of its periods: `window u8 | name str | ends_ms v`.
    pub fn period(&mut self, window: WindowKind, period: &Period) {
        self.u8(window_tag(window));
        self.str(&period.name);
        self.varint(period.ends_ms);
    }
}

/// Reads primitives from a payload, each bounded.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    /// An accepted event's totals, from their tag (0: none).
    fn totals(&mut self) -> Result<Option<Totals>, DecodeError> {
        match self.u8()? {
            0 => return Ok(None),
            1 => {}
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "totals",
                    tag: u64::from(tag),
                })
            }
        }
        let xp = self.varint()?;
        let windows = self.u8()?;
        if windows >> WindowKind::COUNT != 0 {
            return Err(DecodeError::UnknownTag {
                what: "totals windows",
                tag: u64::from(windows),
            });
        }
        let mut scores = [None; WindowKind::COUNT];
        for (i, score) in scores.iter_mut().enumerate() {
            if windows & (1 << i) != 0 {
                *score = Some(self.varint()?);
            }
        }
        Ok(Some(Totals { xp, scores }))
    }

    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::VarintOverflow)
    }

    /// A varint that must fit `usize` and `max`.
    pub fn len(&mut self, max: usize) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| DecodeError::TooLong(usize::MAX))?;
        if n > max {
            return Err(DecodeError::TooLong(n));
        }
        Ok(n)
    }

    pub fn f32(&mut self) -> Result<f32, DecodeError> {
        let b = self.take(4)?;
        Ok(f32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        u32::try_from(self.varint()?).map_err(|_| DecodeError::TooLong(usize::MAX))
    }

    fn evidence(&mut self) -> Result<Evidence, DecodeError> {
        Ok(Evidence {
            detector: flag_from_tag(self.u8()?)?,
            measure: measure_from_tag(self.u8()?)?,
            measured: self.f64()?,
            threshold: self.f64()?,
        })
    }

    fn history(&mut self) -> Result<History, DecodeError> {
        self.present("history")?;
        let ln_mean = [self.f32()?, self.f32()?];
        let seen = [self.u8()?, self.u8()?];
        Ok(History {
            jump: jump::Own {
                ln_mean,
                seen,
                shift: self.f32()?,
            },
            gain: rate::Gain { units: self.f32()? },
            luck: luck::Luck { llr: self.f32()? },
            last_kill: cadence::LastKill::new(self.u32()?, self.varint()?),
            strikes: Strikes {
                since_s: self.u32()?,
                count: self.u8()?,
            },
        })
    }

    fn held(&mut self) -> Result<Vec<Held>, DecodeError> {
        let n = self.len(ITEMS_MAX)?;
        let mut held = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            held.push(Held {
                window: window_from_tag(self.u8()?)?,
                period: self.str()?,
                score: self.varint()?,
                reached_ms: self.varint()?,
                seq: self.varint()?,
            });
        }
        Ok(held)
    }

    pub fn f64(&mut self) -> Result<f64, DecodeError> {
        let bytes: [u8; 8] = self.take(8)?.try_into().expect("8 bytes taken");
        Ok(f64::from_le_bytes(bytes))
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.len(BYTES_MAX)?;
        self.take(n)
    }

    pub fn str(&mut self) -> Result<String, DecodeError> {
        self.str_ref().map(str::to_owned)
    }

    /// A string borrowed from the buffer.
    fn str_ref(&mut self) -> Result<&'a str, DecodeError> {
        let n = self.len(STRING_BYTES_MAX)?;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8)
    }

    /// Steps over an optional string, as [`Reader::opt_str`] reads it.
    fn skip_opt_str(&mut self) -> Result<(), DecodeError> {
        if self.is_some()? {
            self.str_ref()?;
        }
        Ok(())
    }

    /// An option's tag: 0 none, 1 some.
    fn is_some(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::UnknownTag {
                what: "option",
                tag: u64::from(tag),
            }),
        }
    }

    /// Steps over an accepted event's kind and fields, as `decode` reads them; returns
    /// its type name.
    fn skip_event_kind(&mut self) -> Result<&'static str, DecodeError> {
        match self.u8()? {
            1 => {
                self.varint()?;
                self.skip_opt_str()?;
                Ok("progression")
            }
            2 => {
                self.str_ref()?;
                self.varint()?;
                self.varint()?;
                Ok("boss_kill")
            }
            3 => {
                self.str_ref()?;
                self.weight()?;
                self.skip_opt_str()?;
                Ok("drop_claimed")
            }
            tag => Err(DecodeError::UnknownTag {
                what: "event type",
                tag: u64::from(tag),
            }),
        }
    }

    /// A drop claim's optional weight.
    fn weight(&mut self) -> Result<Option<f64>, DecodeError> {
        self.is_some()?.then(|| self.f64()).transpose()
    }

    /// An accepted event's flag and its evidence, in every form logs have held.
    fn flag(&mut self) -> Result<(Option<FlagKind>, Option<Evidence>), DecodeError> {
        Ok(match self.u8()? {
            FLAG_NONE => (None, None),
            // Older logs: a z followed, and no threshold was logged.
            0 => {
                self.f64()?;
                (None, None)
            }
            1 => {
                let z = self.f64()?;
                let evidence = Evidence {
                    detector: FlagKind::ScoreJump,
                    measure: Measure::Z,
                    measured: z,
                    threshold: f64::NAN,
                };
                (
                    Some(FlagKind::ScoreJump),
                    Some(evidence).filter(|_| !z.is_nan()),
                )
            }
            tag if tag & FLAG_EVIDENCE != 0 => {
                let e = Evidence {
                    detector: flag_from_tag(tag & !FLAG_EVIDENCE)?,
                    measure: measure_from_tag(self.u8()?)?,
                    measured: self.f64()?,
                    threshold: self.f64()?,
                };
                (Some(e.detector), Some(e))
            }
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "flag",
                    tag: u64::from(tag),
                })
            }
        })
    }

    /// An accepted event's idempotency key reference, borrowed.
    fn key_ref(&mut self) -> Result<Option<KeyRefView<'a>>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            tag @ (1 | 2) => Ok(Some(KeyRefView {
                key: self.str_ref()?,
                fingerprint: self.array32()?,
                index: u32::try_from(self.varint()?)
                    .map_err(|_| DecodeError::TooLong(usize::MAX))?,
                reserved_ms: if tag == 2 { self.varint()? } else { 0 },
            })),
            tag => Err(DecodeError::UnknownTag {
                what: "option",
                tag: u64::from(tag),
            }),
        }
    }

    pub fn opt_str(&mut self) -> Result<Option<String>, DecodeError> {
        self.is_some()?.then(|| self.str()).transpose()
    }

    pub fn array32(&mut self) -> Result<[u8; 32], DecodeError> {
        Ok(self.take(32)?.try_into().expect("32 bytes taken"))
    }

    fn digest(&mut self) -> Result<[u8; BODY_DIGEST_BYTES], DecodeError> {
        Ok(self
            .take(BODY_DIGEST_BYTES)?
            .try_into()
            .expect("digest bytes taken"))
    }

    /// The tag 1 that opens an optional section (`what`, for the error).
    fn present(&mut self, what: &'static str) -> Result<(), DecodeError> {
        match self.u8()? {
            1 => Ok(()),
            tag => Err(DecodeError::UnknownTag {
                what,
                tag: u64::from(tag),
            }),
        }
    }

    /// An accepted event's replay id, from its tag.
    fn replay_id(&mut self) -> Result<ReplayId, DecodeError> {
        self.present("replay id")?;
        let body = self.digest()?;
        let position = match self.len(BATCH_EVENTS_MAX)? {
            0 => None,
            p => Some(u16::try_from(p - 1).expect("batch positions fit u16")),
        };
        Ok(ReplayId { body, position })
    }

    /// See [`Writer::period`].
    pub fn period(&mut self) -> Result<(WindowKind, Period), DecodeError> {
        let window = window_from_tag(self.u8()?)?;
        Ok((
            window,
            Period {
                name: self.str()?,
                ends_ms: self.varint()?,
            },
        ))
    }

    pub fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(self.buf.len()))
        }
    }
}

/// WAL record kinds.
pub mod kind {
    pub const EVENT_ACCEPTED: u8 = 1;
    pub const BLOCKED: u8 = 2;
    pub const UNBLOCKED: u8 = 3;
    pub const REWARD_CLAIMED: u8 = 4;
    pub const WINDOW_CLOSED: u8 = 5;
    /// Key completions of older builds, without the client host.
    pub const KEY_COMPLETED_NO_HOST: u8 = 6;
    pub const KEY_COMPLETED: u8 = 7;
    pub const QUARANTINED: u8 = 8;
    pub const REVIEW_CLOSED: u8 = 9;
    pub const PLAYER_STATE: u8 = 10;
    pub const BOARD_PERIOD: u8 = 11;
    pub const BOARD_ENTRY: u8 = 12;
    pub const CLOSED_PERIOD: u8 = 13;
    pub const SCORE_MODEL: u8 = 14;
    pub const AUDIT: u8 = 15;
    pub const NEXT_SEQ: u8 = 16;
    pub const FAIRNESS_MODEL: u8 = 17;
    pub const GUARD_STATE: u8 = 18;
    pub const REPLAY_SEEN: u8 = 19;
}

fn flag_tag(kind: FlagKind) -> u8 {
    match kind {
        FlagKind::ScoreJump => 1,
        FlagKind::ImpossibleScore => 2,
        FlagKind::Flood => 3,
        FlagKind::RateOfGain => 4,
        FlagKind::Cadence => 5,
        FlagKind::Luck => 6,
        FlagKind::Replay => 7,
    }
}

fn flag_from_tag(tag: u8) -> Result<FlagKind, DecodeError> {
    FlagKind::ALL
        .into_iter()
        .find(|&k| flag_tag(k) == tag)
        .ok_or(DecodeError::UnknownTag {
            what: "detector",
            tag: u64::from(tag),
        })
}

fn measure_tag(measure: Measure) -> u8 {
    let index = Measure::ALL.iter().position(|&m| m == measure);
    index.map_or(0, |i| i as u8 + 1)
}

fn measure_from_tag(tag: u8) -> Result<Measure, DecodeError> {
    (usize::from(tag).checked_sub(1))
        .and_then(|i| Measure::ALL.get(i).copied())
        .ok_or(DecodeError::UnknownTag {
            what: "measure",
            tag: u64::from(tag),
        })
}

/// Flag byte of an accepted event without a flag.
const FLAG_NONE: u8 = 0x40;
/// Flag byte bit of an accepted event with a flag and its evidence.
const FLAG_EVIDENCE: u8 = 0x80;

fn audit_tag(kind: AuditKind) -> u8 {
    match kind {
        AuditKind::Flag => 1,
        AuditKind::Block => 2,
        AuditKind::Unblock => 3,
        AuditKind::Drop => 4,
        AuditKind::Quarantine => 5,
        AuditKind::Review => 6,
    }
}

fn audit_from_tag(tag: u8) -> Result<AuditKind, DecodeError> {
    match tag {
        1 => Ok(AuditKind::Flag),
        2 => Ok(AuditKind::Block),
        3 => Ok(AuditKind::Unblock),
        4 => Ok(AuditKind::Drop),
        5 => Ok(AuditKind::Quarantine),
        6 => Ok(AuditKind::Review),
        _ => Err(DecodeError::UnknownTag {
            what: "audit kind",
            tag: u64::from(tag),
        }),
    }
}

pub fn window_tag(w: WindowKind) -> u8 {
    match w {
        WindowKind::Daily => 1,
        WindowKind::Weekly => 2,
        WindowKind::Seasonal => 3,
    }
}

pub fn window_from_tag(tag: u8) -> Result<WindowKind, DecodeError> {
    match tag {
        1 => Ok(WindowKind::Daily),
        2 => Ok(WindowKind::Weekly),
        3 => Ok(WindowKind::Seasonal),
        _ => Err(DecodeError::UnknownTag {
            what: "window",
            tag: u64::from(tag),
        }),
    }
}

pub fn blocked_by_tag(by: BlockedBy) -> u8 {
    match by {
        BlockedBy::Fairness => 1,
        BlockedBy::Admin => 2,
    }
}

pub fn blocked_by_from_tag(tag: u8) -> Result<BlockedBy, DecodeError> {
    match tag {
        1 => Ok(BlockedBy::Fairness),
        2 => Ok(BlockedBy::Admin),
        _ => Err(DecodeError::UnknownTag {
            what: "blocked-by",
            tag: u64::from(tag),
        }),
    }
}

/// Encodes `record` into `buf` (appending) and returns its kind.
pub fn encode(record: &Record, buf: &mut Vec<u8>) -> u8 {
    let mut w = Writer(buf);
    match record {
        Record::EventAccepted {
            player,
            event,
            ts,
            at_ms,
            seq,
            flag,
            evidence,
            key,
            totals,
            replay_id,
        } => {
            w.str(player);
            match event {
                EventKind::Progression { delta_xp, activity } => {
                    w.u8(1);
                    w.varint(*delta_xp);
                    w.opt_str(activity.as_deref());
                }
                EventKind::BossKill {
                    boss_id,
                    tier,
                    points,
                } => {
                    w.u8(2);
                    w.str(boss_id);
                    w.varint(*tier);
                    w.varint(*points);
                }
                EventKind::DropClaimed {
                    drop_id,
                    weight,
                    source,
                } => {
                    w.u8(3);
                    w.str(drop_id);
                    match weight {
                        None => w.u8(0),
                        Some(v) => {
                            w.u8(1);
                            w.f64(*v);
                        }
                    }
                    w.opt_str(source.as_deref());
                }
            }
            w.varint(*ts);
            w.varint(*at_ms);
            w.varint(*seq);
            match (flag, evidence) {
                (Some(_), Some(e)) => {
                    w.u8(FLAG_EVIDENCE | flag_tag(e.detector));
                    w.u8(measure_tag(e.measure));
                    w.f64(e.measured);
                    w.f64(e.threshold);
                }
                // A flag without evidence is written as older logs wrote it.
                (Some(_), None) => {
                    w.u8(1);
                    w.f64(f64::NAN);
                }
                (None, _) => w.u8(FLAG_NONE),
            }
            match key {
                None => w.u8(0),
                Some(k) => {
                    w.u8(2);
                    w.str(&k.key);
                    w.array32(&k.fingerprint);
                    w.varint(u64::from(k.index));
                    w.varint(k.reserved_ms);
                }
            }
            match totals {
                Some(totals) => {
                    w.u8(1);
                    w.varint(totals.xp);
                    let windows = totals
                        .scores
                        .iter()
                        .enumerate()
                        .filter(|(_, score)| score.is_some())
                        .fold(0u8, |bits, (i, _)| bits | 1 << i);
                    w.u8(windows);
                    for score in totals.scores.iter().flatten() {
                        w.varint(*score);
                    }
                }
                None if replay_id.is_some() => w.u8(0),
                None => {}
            }
            if let Some(id) = replay_id {
                w.replay_id(id);
            }
            kind::EVENT_ACCEPTED
        }
        Record::Blocked {
            player,
            until_ms,
            reason,
            by,
            at_ms,
            evidence,
        } => {
            w.str(player);
            w.varint(*until_ms);
            w.str(reason);
            w.u8(blocked_by_tag(*by));
            w.varint(*at_ms);
            match evidence {
                None => w.u8(0),
                Some(e) => {
                    w.u8(1);
                    w.evidence(e);
                }
            }
            kind::BLOCKED
        }
        Record::Unblocked {
            player,
            reason,
            at_ms,
        } => {
            w.str(player);
            w.str(reason);
            w.varint(*at_ms);
            kind::UNBLOCKED
        }
        Record::Quarantined {
            player,
            reason,
            evidence,
            at_ms,
            held,
        } => {
            w.str(player);
            w.str(reason);
            w.evidence(evidence);
            w.varint(*at_ms);
            w.held(held);
            kind::QUARANTINED
        }
        Record::ReviewClosed {
            player,
            verdict,
            at_ms,
            held,
        } => {
            w.str(player);
            w.u8(match verdict {
                Verdict::Confirmed => 1,
                Verdict::Cleared => 2,
            });
            w.varint(*at_ms);
            w.held(held);
            kind::REVIEW_CLOSED
        }
        Record::GuardState {
            player,
            fairness_blocks,
            review,
        } => {
            w.str(player);
            w.varint(u64::from(*fairness_blocks));
            match review {
                None => w.u8(0),
                Some(r) => {
                    w.u8(1);
                    w.varint(r.since_ms);
                    w.str(&r.reason);
                    w.evidence(&r.evidence);
                    w.varint(u64::from(r.blocks_before));
                    w.held(&r.held);
                }
            }
            kind::GUARD_STATE
        }
        Record::RewardClaimed {
            player,
            item,
            receipt_id,
            timestamp,
            at_ms,
        } => {
            w.str(player);
            w.str(item);
            w.str(receipt_id);
            w.varint(*timestamp);
            w.varint(*at_ms);
            kind::REWARD_CLAIMED
        }
        Record::WindowClosed {
            window,
            next,
            at_ms,
        } => {
            w.period(*window, next);
            w.varint(*at_ms);
            kind::WINDOW_CLOSED
        }
        Record::KeyCompleted {
            key,
            fingerprint,
            response,
            expires_ms,
            at_ms,
            host,
        } => {
            w.str(key);
            w.array32(fingerprint);
            w.varint(u64::from(response.status));
            w.bytes(&response.body);
            w.varint(*expires_ms);
            w.varint(*at_ms);
            match host {
                None => w.u8(0),
                Some(IpAddr::V4(ip)) => {
                    w.u8(4);
                    w.0.extend_from_slice(&ip.octets());
                }
                Some(IpAddr::V6(ip)) => {
                    w.u8(6);
                    w.0.extend_from_slice(&ip.octets());
                }
            }
            kind::KEY_COMPLETED
        }
        Record::PlayerState(p) => {
            w.str(&p.player);
            w.varint(p.xp);
            w.varint(p.boss_kills.len() as u64);
            for (boss, kills) in &p.boss_kills {
                w.str(boss);
                w.varint(*kills);
            }
            w.varint(p.drops.len() as u64);
            for drop in &p.drops {
                w.str(&drop.drop_id);
                w.opt_str(drop.source.as_deref());
                w.opt_str(drop.claimed.as_deref());
            }
            w.varint(p.updated_ms);
            match &p.block {
                None => w.u8(0),
                Some(b) => {
                    w.u8(1);
                    w.varint(b.until_ms);
                    w.str(&b.reason);
                    w.u8(blocked_by_tag(b.by));
                }
            }
            w.varint(p.flags);
            w.varint(p.rate_limited);
            w.history(&p.history);
            kind::PLAYER_STATE
        }
        Record::BoardPeriod {
            window,
            period,
            updated_ms,
        } => {
            w.period(*window, period);
            w.varint(*updated_ms);
            kind::BOARD_PERIOD
        }
        Record::BoardEntry {
            window,
            player,
            score,
            reached_ms,
            seq,
        } => {
            w.u8(window_tag(*window));
            w.str(player);
            w.varint(*score);
            w.varint(*reached_ms);
            w.varint(*seq);
            kind::BOARD_ENTRY
        }
        Record::ClosedPeriod {
            window,
            name,
            closed_ms,
            entries,
        } => {
            w.u8(window_tag(*window));
            w.str(name);
            w.varint(*closed_ms);
            w.varint(entries.len() as u64);
            for (player, score, reached_ms, seq) in entries {
                w.str(player);
                w.varint(*score);
                w.varint(*reached_ms);
                w.varint(*seq);
            }
            kind::CLOSED_PERIOD
        }
        Record::ScoreModel {
            mean,
            variance,
            samples,
        } => {
            w.f64(*mean);
            w.f64(*variance);
            w.varint(*samples);
            kind::SCORE_MODEL
        }
        Record::FairnessModel { name, model } => {
            w.str(name);
            w.f64(model.mean);
            w.f64(model.variance);
            w.varint(model.samples);
            kind::FAIRNESS_MODEL
        }
        Record::Audit(a) => {
            w.varint(a.at_ms);
            w.u8(audit_tag(a.kind));
            w.str(&a.player_id);
            w.str(&a.reason);
            w.str(&a.detail.to_string());
            kind::AUDIT
        }
        Record::NextSeq(seq) => {
            w.varint(*seq);
            kind::NEXT_SEQ
        }
        Record::ReplaySeen(r) => {
            w.0.extend_from_slice(&r.body);
            w.varint(r.accepted_ms);
            match &r.positions {
                None => w.u8(0),
                Some(bits) => {
                    // Trailing empty words are left out: a batch of 100 needs two.
                    let used = bits
                        .iter()
                        .rposition(|&word| word != 0)
                        .map_or(0, |i| i + 1);
                    w.u8(1);
                    w.varint(used as u64);
                    for word in &bits[..used] {
                        w.0.extend_from_slice(&word.to_le_bytes());
                    }
                }
            }
            kind::REPLAY_SEEN
        }
    }
}

/// Decodes a payload of `kind`.
/// An accepted event's [`KeyRef`], borrowed from its record's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRefView<'a> {
    pub key: &'a str,
    pub fingerprint: [u8; 32],
    pub index: u32,
    pub reserved_ms: u64,
}

/// What recovery needs of an accepted event that names an idempotency key, borrowed
/// from its record's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventKey<'a> {
    pub player: &'a str,
    pub type_name: &'static str,
    pub at_ms: u64,
    pub key: KeyRefView<'a>,
}

/// Reads the key of an accepted event (kind [`kind::EVENT_ACCEPTED`]) without building
/// the event: `None` when it names none. Recovery reads back every record a checkpoint
/// covers for their keys, and most events name none, so this allocates nothing and stops
/// before the totals.
pub fn event_key(payload: &[u8]) -> Result<Option<EventKey<'_>>, DecodeError> {
    let mut r = Reader::new(payload);
    let player = r.str_ref()?;
    let type_name = r.skip_event_kind()?;
    let _ts = r.varint()?;
    let at_ms = r.varint()?;
    let _seq = r.varint()?;
    r.flag()?;
    Ok(r.key_ref()?.map(|key| EventKey {
        player,
        type_name,
        at_ms,
        key,
    }))
}

pub fn decode(kind: u8, payload: &[u8]) -> Result<Record, DecodeError> {
    let mut r = Reader::new(payload);
    let record = match kind {
        kind::EVENT_ACCEPTED => {
            let player = r.str()?;
            let event = match r.u8()? {
                1 => EventKind::Progression {
                    delta_xp: r.varint()?,
                    activity: r.opt_str()?,
                },
                2 => EventKind::BossKill {
                    boss_id: r.str()?,
                    tier: r.varint()?,
                    points: r.varint()?,
                },
                3 => {
                    let drop_id = r.str()?;
                    let weight = r.weight()?;
                    EventKind::DropClaimed {
                        drop_id,
                        weight,
                        source: r.opt_str()?,
                    }
                }
                tag => {
                    return Err(DecodeError::UnknownTag {
                        what: "event type",
                        tag: u64::from(tag),
                    })
                }
            };
            let ts = r.varint()?;
            let at_ms = r.varint()?;
            let seq = r.varint()?;
            let (flag, evidence) = r.flag()?;
            let key = r.key_ref()?.map(|k| KeyRef {
                key: k.key.into(),
                fingerprint: k.fingerprint,
                index: k.index,
                reserved_ms: k.reserved_ms,
            });
            let (totals, replay_id) = if r.remaining() == 0 {
                (None, None)
            } else {
                let totals = r.totals()?;
                // "No totals" is written only before a replay id.
                let replay_id = if totals.is_none() || r.remaining() > 0 {
                    Some(r.replay_id()?)
                } else {
                    None
                };
                (totals, replay_id)
            };
            Record::EventAccepted {
                player,
                event,
                ts,
                at_ms,
                seq,
                flag,
                evidence,
                key,
                totals,
                replay_id,
            }
        }
        kind::BLOCKED => Record::Blocked {
            player: r.str()?,
            until_ms: r.varint()?,
            reason: r.str()?,
            by: blocked_by_from_tag(r.u8()?)?,
            at_ms: r.varint()?,
            evidence: if r.remaining() == 0 {
                None
            } else {
                match r.u8()? {
                    0 => None,
                    1 => Some(r.evidence()?),
                    tag => {
                        return Err(DecodeError::UnknownTag {
                            what: "option",
                            tag: u64::from(tag),
                        })
                    }
                }
            },
        },
        kind::UNBLOCKED => Record::Unblocked {
            player: r.str()?,
            reason: r.str()?,
            at_ms: r.varint()?,
        },
        kind::QUARANTINED => Record::Quarantined {
            player: r.str()?,
            reason: r.str()?,
            evidence: r.evidence()?,
            at_ms: r.varint()?,
            held: r.held()?,
        },
        kind::REVIEW_CLOSED => Record::ReviewClosed {
            player: r.str()?,
            verdict: match r.u8()? {
                1 => Verdict::Confirmed,
                2 => Verdict::Cleared,
                tag => {
                    return Err(DecodeError::UnknownTag {
                        what: "verdict",
                        tag: u64::from(tag),
                    })
                }
            },
            at_ms: r.varint()?,
            held: r.held()?,
        },
        kind::GUARD_STATE => Record::GuardState {
            player: r.str()?,
            fairness_blocks: r.u32()?,
            review: match r.u8()? {
                0 => None,
                1 => Some(Box::new(Review {
                    since_ms: r.varint()?,
                    reason: r.str()?,
                    evidence: r.evidence()?,
                    blocks_before: r.u32()?,
                    held: r.held()?,
                })),
                tag => {
                    return Err(DecodeError::UnknownTag {
                        what: "option",
                        tag: u64::from(tag),
                    })
                }
            },
        },
        kind::REWARD_CLAIMED => Record::RewardClaimed {
            player: r.str()?,
            item: r.str()?,
            receipt_id: r.str()?,
            timestamp: r.varint()?,
            at_ms: r.varint()?,
        },
        kind::WINDOW_CLOSED => {
            let (window, next) = r.period()?;
            Record::WindowClosed {
                window,
                next,
                at_ms: r.varint()?,
            }
        }
        kind::KEY_COMPLETED_NO_HOST | kind::KEY_COMPLETED => Record::KeyCompleted {
            key: r.str()?,
            fingerprint: r.array32()?,
            response: StoredResponse {
                status: u16::try_from(r.varint()?).map_err(|_| DecodeError::TooLong(usize::MAX))?,
                body: r.bytes()?.to_vec(),
            },
            expires_ms: r.varint()?,
            at_ms: r.varint()?,
            host: if kind == kind::KEY_COMPLETED {
                match r.u8()? {
                    0 => None,
                    4 => Some(IpAddr::from(
                        <[u8; 4]>::try_from(r.take(4)?).expect("4 bytes"),
                    )),
                    6 => Some(IpAddr::from(
                        <[u8; 16]>::try_from(r.take(16)?).expect("16 bytes"),
                    )),
                    tag => {
                        return Err(DecodeError::UnknownTag {
                            what: "host",
                            tag: u64::from(tag),
                        })
                    }
                }
            } else {
                None
            },
        },
        kind::PLAYER_STATE => {
            let player = r.str()?;
            let xp = r.varint()?;
            let n = r.len(ITEMS_MAX)?;
            let mut boss_kills = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                boss_kills.push((r.str()?, r.varint()?));
            }
            let n = r.len(ITEMS_MAX)?;
            let mut drops = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                drops.push(Drop {
                    drop_id: r.str()?.into(),
                    source: r.opt_str()?.map(Into::into),
                    claimed: r.opt_str()?.map(Into::into),
                });
            }
            let updated_ms = r.varint()?;
            let block = match r.u8()? {
                0 => None,
                1 => Some(Block {
                    until_ms: r.varint()?,
                    reason: r.str()?,
                    by: blocked_by_from_tag(r.u8()?)?,
                }),
                tag => {
                    return Err(DecodeError::UnknownTag {
                        what: "option",
                        tag: u64::from(tag),
                    })
                }
            };
            Record::PlayerState(Box::new(PlayerSnapshot {
                player,
                xp,
                boss_kills,
                drops,
                updated_ms,
                block,
                flags: r.varint()?,
                rate_limited: r.varint()?,
                history: if r.remaining() == 0 {
                    History::default()
                } else {
                    r.history()?
                },
            }))
        }
        kind::BOARD_PERIOD => {
            let (window, period) = r.period()?;
            Record::BoardPeriod {
                window,
                period,
                updated_ms: r.varint()?,
            }
        }
        kind::BOARD_ENTRY => Record::BoardEntry {
            window: window_from_tag(r.u8()?)?,
            player: r.str()?,
            score: r.varint()?,
            reached_ms: r.varint()?,
            seq: r.varint()?,
        },
        kind::CLOSED_PERIOD => {
            let window = window_from_tag(r.u8()?)?;
            let name = r.str()?;
            let closed_ms = r.varint()?;
            let n = r.len(ITEMS_MAX)?;
            let mut entries = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                entries.push((r.str()?, r.varint()?, r.varint()?, r.varint()?));
            }
            Record::ClosedPeriod {
                window,
                name,
                closed_ms,
                entries,
            }
        }
        kind::SCORE_MODEL => Record::ScoreModel {
            mean: r.f64()?,
            variance: r.f64()?,
            samples: r.varint()?,
        },
        kind::AUDIT => {
            let at_ms = r.varint()?;
            let kind = audit_from_tag(r.u8()?)?;
            let player_id = r.str()?;
            let reason = r.str()?;
            let detail = match serde_json::from_str(&r.str()?).map_err(|_| DecodeError::BadJson)? {
                // Unblock records of earlier versions had no detail.
                serde_json::Value::Null => serde_json::json!({}),
                detail => detail,
            };
            Record::Audit(Box::new(AuditRecord::new(
                kind, player_id, reason, detail, at_ms,
            )))
        }
        kind::NEXT_SEQ => Record::NextSeq(r.varint()?),
        kind::REPLAY_SEEN => Record::ReplaySeen(Remembered {
            body: r.digest()?,
            accepted_ms: r.varint()?,
            positions: match r.u8()? {
                0 => None,
                1 => {
                    let used = r.len(POSITION_WORDS)?;
                    let mut bits: Box<PositionBits> = Box::new([0; POSITION_WORDS]);
                    for word in &mut bits[..used] {
                        let bytes: [u8; 8] = r.take(8)?.try_into().expect("8 bytes taken");
                        *word = u64::from_le_bytes(bytes);
                    }
                    Some(bits)
                }
                tag => {
                    return Err(DecodeError::UnknownTag {
                        what: "option",
                        tag: u64::from(tag),
                    })
                }
            },
        }),
        kind::FAIRNESS_MODEL => Record::FairnessModel {
            name: r.str()?,
            model: LnModel {
                mean: r.f64()?,
                variance: r.f64()?,
                samples: r.varint()?,
            },
        },
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "record kind",
                tag: u64::from(tag),
            })
        }
    };
    r.finish()?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<Record> {
        let key = KeyRef {
            key: "k-1".into(),
            fingerprint: [9; 32],
            index: 3,
            reserved_ms: 1_795_521_599_990,
        };
        vec![
            Record::EventAccepted {
                player: "p1x".into(),
                event: EventKind::Progression {
                    delta_xp: 10,
                    activity: Some("quest".into()),
                },
                ts: 1_730_560_000,
                at_ms: 1_795_521_600_000,
                seq: 42,
                flag: Some(FlagKind::ScoreJump),
                evidence: Some(Evidence {
                    detector: FlagKind::ScoreJump,
                    measure: Measure::ShiftNats,
                    measured: 4.25,
                    threshold: 3.0,
                }),
                key: Some(key),
                totals: Some(Totals {
                    xp: 1_000_000_010,
                    scores: [None, Some(7), Some(u64::MAX)],
                }),
                replay_id: Some(ReplayId {
                    body: [0xab; BODY_DIGEST_BYTES],
                    position: Some(999),
                }),
            },
            Record::EventAccepted {
                player: "p2x".into(),
                event: EventKind::BossKill {
                    boss_id: "dragon_lord".into(),
                    tier: 5,
                    points: 2500,
                },
                ts: 0,
                at_ms: 1,
                seq: 1,
                flag: None,
                evidence: None,
                key: None,
                totals: Some(Totals::default()),
                replay_id: None,
            },
            Record::EventAccepted {
                player: "p3x".into(),
                event: EventKind::DropClaimed {
                    drop_id: "épée".into(),
                    weight: Some(0.05),
                    source: None,
                },
                ts: u64::MAX,
                at_ms: u64::MAX,
                seq: u64::MAX,
                flag: Some(FlagKind::Luck),
                evidence: Some(Evidence {
                    detector: FlagKind::Luck,
                    measure: Measure::LlrNats,
                    measured: 5.5,
                    threshold: 3.5,
                }),
                key: None,
                totals: None,
                replay_id: Some(ReplayId {
                    body: [7; BODY_DIGEST_BYTES],
                    position: None,
                }),
            },
            Record::Blocked {
                player: "p1x".into(),
                until_ms: 5,
                reason: "flooding".into(),
                by: BlockedBy::Admin,
                at_ms: 4,
                evidence: None,
            },
            Record::Blocked {
                player: "p2x".into(),
                until_ms: 5,
                reason: "impossible_cadence".into(),
                by: BlockedBy::Fairness,
                at_ms: 4,
                evidence: Some(Evidence {
                    detector: FlagKind::Cadence,
                    measure: Measure::KillGapS,
                    measured: 2.5,
                    threshold: 9.0,
                }),
            },
            Record::Unblocked {
                player: "p1x".into(),
                reason: "expired".into(),
                at_ms: 6,
            },
            Record::RewardClaimed {
                player: "p1x".into(),
                item: "sword".into(),
                receipt_id: "r_ab".into(),
                timestamp: 7,
                at_ms: 7000,
            },
            Record::WindowClosed {
                window: WindowKind::Weekly,
                next: Period {
                    name: "2026-W49".into(),
                    ends_ms: 99,
                },
                at_ms: 8,
            },
            Record::KeyCompleted {
                key: "k".into(),
                fingerprint: [1; 32],
                response: StoredResponse {
                    status: 202,
                    body: b"{}".to_vec(),
                },
                expires_ms: 10,
                at_ms: 9,
                host: Some(IpAddr::from([127, 0, 0, 2])),
            },
            Record::KeyCompleted {
                key: "k6".into(),
                fingerprint: [1; 32],
                response: StoredResponse::compact(202, br#"[{"a":1},{"a":2},{"a":3}]"#),
                expires_ms: 10,
                at_ms: 9,
                host: Some(IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1])),
            },
            Record::KeyCompleted {
                key: "k0".into(),
                fingerprint: [1; 32],
                response: StoredResponse {
                    status: 202,
                    body: b"{}".to_vec(),
                },
                expires_ms: 10,
                at_ms: 9,
                host: None,
            },
            Record::PlayerState(Box::new(PlayerSnapshot {
                player: "p1x".into(),
                xp: 12,
                boss_kills: vec![("b".into(), 2)],
                drops: vec![Drop {
                    drop_id: "d".into(),
                    source: Some("s".into()),
                    claimed: Some("r_1".into()),
                }],
                updated_ms: 3,
                block: Some(Block {
                    until_ms: 9,
                    reason: "r".into(),
                    by: BlockedBy::Fairness,
                }),
                flags: 1,
                rate_limited: 2,
                history: History {
                    jump: jump::Own {
                        ln_mean: [3.5, 8.25],
                        seen: [200, 3],
                        shift: 1.5,
                    },
                    gain: rate::Gain { units: 12.5 },
                    luck: luck::Luck { llr: 0.75 },
                    last_kill: cadence::LastKill::new(u32::MAX, 1_795_521_600_000),
                    strikes: Strikes {
                        since_s: 1_795_521_600,
                        count: 2,
                    },
                },
            })),
            Record::BoardPeriod {
                window: WindowKind::Daily,
                period: Period {
                    name: "2026-11-24".into(),
                    ends_ms: 5,
                },
                updated_ms: 4,
            },
            Record::BoardEntry {
                window: WindowKind::Seasonal,
                player: "p1x".into(),
                score: 5,
                reached_ms: 6,
                seq: 7,
            },
            Record::ClosedPeriod {
                window: WindowKind::Daily,
                name: "d".into(),
                closed_ms: 1,
                entries: vec![("a".into(), 1, 2, 3)],
            },
            Record::ScoreModel {
                mean: 2.5,
                variance: 0.25,
                samples: 1000,
            },
            Record::FairnessModel {
                name: "cadence.dragon_lord".into(),
                model: LnModel {
                    mean: 4.5,
                    variance: 0.5,
                    samples: 12,
                },
            },
            Record::Audit(Box::new(AuditRecord {
                at: 1,
                at_ms: 1500,
                kind: AuditKind::Drop,
                player_id: "p1x".into(),
                reason: "rate_limited".into(),
                detail: serde_json::json!({"count": 3}),
            })),
            Record::NextSeq(77),
            Record::Quarantined {
                player: "p1x".into(),
                reason: "flooding".into(),
                evidence: Evidence {
                    detector: FlagKind::Flood,
                    measure: Measure::LimitedS,
                    measured: 3.0,
                    threshold: 3.0,
                },
                at_ms: 5,
                held: held_sample(),
            },
            Record::ReviewClosed {
                player: "p1x".into(),
                verdict: Verdict::Cleared,
                at_ms: 6,
                held: held_sample(),
            },
            Record::GuardState {
                player: "p1x".into(),
                fairness_blocks: 3,
                review: Some(Box::new(Review {
                    since_ms: 5,
                    reason: "flooding".into(),
                    evidence: Evidence {
                        detector: FlagKind::Luck,
                        measure: Measure::LlrNats,
                        measured: 7.5,
                        threshold: 7.0,
                    },
                    blocks_before: 2,
                    held: held_sample(),
                })),
            },
            Record::GuardState {
                player: "p2x".into(),
                fairness_blocks: 1,
                review: None,
            },
            Record::ReplaySeen(Remembered {
                body: [3; BODY_DIGEST_BYTES],
                accepted_ms: 1_795_521_600_000,
                positions: None,
            }),
            Record::ReplaySeen(Remembered {
                body: [4; BODY_DIGEST_BYTES],
                accepted_ms: 5,
                positions: Some({
                    let mut bits: Box<PositionBits> = Box::new([0; POSITION_WORDS]);
                    for p in [0, 17, 999] {
                        bits[p / 64] |= 1 << (p % 64);
                    }
                    bits
                }),
            }),
        ]
    }

    fn held_sample() -> Vec<Held> {
        vec![
            Held {
                window: WindowKind::Weekly,
                period: "2026-W48".into(),
                score: 1234,
                reached_ms: 1_795_521_600_000,
                seq: 42,
            },
            Held {
                window: WindowKind::Daily,
                period: "2026-11-23".into(),
                score: 7,
                reached_ms: 1,
                seq: 2,
            },
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        for record in samples() {
            let mut buf = Vec::new();
            let kind = encode(&record, &mut buf);
            assert_eq!(decode(kind, &buf), Ok(record.clone()), "{record:?}");
        }
    }

    /// `event_key` reads what `decode` does of every accepted event, keyed or not, of
    /// every type and flag form, and refuses what `decode` refuses of a cut record.
    #[test]
    fn event_key_reads_what_decode_reads() {
        let key = KeyRef {
            key: "k-9".into(),
            fingerprint: [4; 32],
            index: 7,
            reserved_ms: 12,
        };
        let mut checked = [0; 2];
        for record in samples() {
            let Record::EventAccepted { .. } = &record else {
                continue;
            };
            for keyed in [false, true] {
                let mut record = record.clone();
                if let Record::EventAccepted { key: slot, .. } = &mut record {
                    *slot = keyed.then(|| key.clone());
                }
                let mut buf = Vec::new();
                assert_eq!(encode(&record, &mut buf), kind::EVENT_ACCEPTED);
                let Record::EventAccepted {
                    player,
                    event,
                    at_ms,
                    key: named,
                    ..
                } = &record
                else {
                    unreachable!()
                };
                let expected = named.as_ref().map(|k| EventKey {
                    player,
                    type_name: event.type_name(),
                    at_ms: *at_ms,
                    key: KeyRefView {
                        key: &k.key,
                        fingerprint: k.fingerprint,
                        index: k.index,
                        reserved_ms: k.reserved_ms,
                    },
                });
                assert_eq!(event_key(&buf), Ok(expected), "{record:?}");
                checked[usize::from(keyed)] += 1;
                let cut = &buf[..buf.len() / 3];
                assert!(decode(kind::EVENT_ACCEPTED, cut).is_err());
                assert!(event_key(cut).is_err(), "{record:?} cut");
            }
        }
        assert_eq!(checked, [3, 3], "every type, keyed and not");
    }

    /// Logs written before keys carried their host and reservation time still replay.
    #[test]
    fn older_key_records_still_decode() {
        let mut buf = Vec::new();
        let mut w = Writer(&mut buf);
        w.str("k");
        w.array32(&[1; 32]);
        w.varint(202);
        w.bytes(b"{}");
        w.varint(10);
        w.varint(9);
        let Ok(Record::KeyCompleted { host, response, .. }) =
            decode(kind::KEY_COMPLETED_NO_HOST, &buf)
        else {
            panic!("a kind-6 completion decodes");
        };
        assert_eq!((host, response.body.as_slice()), (None, &b"{}"[..]));
        let mut record = samples().remove(0);
        let Record::EventAccepted {
            key: Some(k),
            totals,
            replay_id,
            ..
        } = &mut record
        else {
            unreachable!("the first sample is keyed")
        };
        k.reserved_ms = 0;
        // Older builds wrote no totals or replay id either.
        *totals = None;
        *replay_id = None;
        let mut buf = Vec::new();
        let kind = encode(&record, &mut buf);
        // The same event as an older build wrote it: key tag 1, no reservation time.
        let tag_at = buf.len() - 1 - 1 - 32 - 4 - 1;
        assert_eq!(buf[tag_at], 2);
        buf[tag_at] = 1;
        buf.pop();
        assert_eq!(decode(kind, &buf), Ok(record));
    }

    #[test]
    fn truncation_and_trailing_bytes_are_errors() {
        for record in samples() {
            let mut buf = Vec::new();
            let kind = encode(&record, &mut buf);
            let older = older_forms(&record);
            for len in 0..buf.len() {
                match older.iter().find(|(older_len, _)| *older_len == len) {
                    Some((_, older)) => {
                        assert_eq!(decode(kind, &buf[..len]).as_ref(), Ok(older));
                    }
                    None => assert!(
                        decode(kind, &buf[..len]).is_err(),
                        "{record:?} cut at {len}"
                    ),
                }
            }
            buf.push(0);
            let complete_or_not_an_event = !matches!(
                record,
                Record::EventAccepted {
                    replay_id: None,
                    ..
                }
            );
            if complete_or_not_an_event {
                assert_eq!(decode(kind, &buf), Err(DecodeError::Trailing(1)));
            } else {
                // Bytes after an event without a replay id are read as its optional tail.
                assert!(decode(kind, &buf).is_err());
            }
        }
        assert!(matches!(
            decode(99, &[]),
            Err(DecodeError::UnknownTag { .. })
        ));
    }

    /// The record as older builds wrote it, and those encodings' lengths, for records
    /// whose last fields are optional: an accepted event without its replay id or its
    /// totals, a block without its evidence, a player without its detector history.
    fn older_forms(record: &Record) -> Vec<(usize, Record)> {
        if let Record::EventAccepted {
            totals, replay_id, ..
        } = record
        {
            let mut forms = Vec::new();
            let mut older = record.clone();
            if replay_id.is_some() {
                let Record::EventAccepted { replay_id, .. } = &mut older else {
                    unreachable!()
                };
                *replay_id = None;
                forms.push(older.clone());
            }
            if totals.is_some() {
                let Record::EventAccepted { totals, .. } = &mut older else {
                    unreachable!()
                };
                *totals = None;
                forms.push(older);
            }
            return forms
                .into_iter()
                .map(|older| {
                    let mut buf = Vec::new();
                    encode(&older, &mut buf);
                    (buf.len(), older)
                })
                .collect();
        }
        older_form(record).into_iter().collect()
    }

    fn older_form(record: &Record) -> Option<(usize, Record)> {
        let mut older = record.clone();
        let tail_len = match &mut older {
            Record::Blocked { evidence, .. } => {
                *evidence = None;
                1
            }
            Record::PlayerState(p) => {
                p.history = History::default();
                let mut tail = Vec::new();
                Writer(&mut tail).history(&p.history);
                tail.len()
            }
            _ => return None,
        };
        let mut buf = Vec::new();
        encode(&older, &mut buf);
        Some((buf.len() - tail_len, older))
    }

    /// Accepted events of builds before the detectors' evidence: a flag byte 0 or 1, then
    /// a z either way.
    #[test]
    fn older_flag_bytes_still_decode() {
        for (flag_byte, z) in [(0u8, 0.0f64), (1, 4.25)] {
            let record = samples().remove(1);
            let mut buf = Vec::new();
            let kind = encode(&record, &mut buf);
            let at = buf
                .iter()
                .rposition(|&b| b == FLAG_NONE)
                .expect("the flag byte");
            let mut old = buf[..at].to_vec();
            old.push(flag_byte);
            old.extend_from_slice(&z.to_le_bytes());
            old.extend_from_slice(&buf[at + 1..]);
            let decoded = decode(kind, &old).expect("decodes");
            assert_eq!(
                event_key(&old),
                Ok(None),
                "event_key steps over the old flag"
            );
            let Record::EventAccepted { flag, evidence, .. } = &decoded else {
                panic!("an accepted event");
            };
            if flag_byte == 0 {
                assert_eq!(decoded, record);
            } else {
                assert_eq!(*flag, Some(FlagKind::ScoreJump));
                let e = evidence.expect("the old z as evidence");
                assert_eq!((e.measure, e.measured), (Measure::Z, 4.25));
                assert!(e.threshold.is_nan());
            }
        }
    }

    proptest! {
        /// Garbage never panics or allocates without bound: it decodes or is refused.
        #[test]
        fn garbage_never_panics(kind in 0u8..20, bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(kind, &bytes);
            let _ = event_key(&bytes);
        }
    }

    #[test]
    fn lengths_are_bounded_before_allocation() {
        let mut buf = Vec::new();
        Writer(&mut buf).varint(u64::MAX);
        assert!(decode(kind::EVENT_ACCEPTED, &buf).is_err());
        let mut buf = Vec::new();
        Writer(&mut buf).varint((STRING_BYTES_MAX + 1) as u64);
        assert_eq!(
            decode(kind::EVENT_ACCEPTED, &buf),
            Err(DecodeError::TooLong(STRING_BYTES_MAX + 1))
        );
    }
}
