//! The bus envelope: every forwarded kind validates against `api/bus-envelope.schema.json`
//! and carries the fields consumers rely on; records that are not forwarded are not.

use liveops_engine::event::EventKind;
use liveops_engine::fairness::{BlockedBy, FlagKind};
use liveops_engine::idempotency::StoredResponse;
use liveops_engine::shard::{Record, Totals};
use liveops_engine::window::{Period, WindowKind};
use liveops_mirror::bus::envelope::{BODY_BYTES_MAX, TEXT_BYTES_MAX_WHEN_TRUNCATED};
use liveops_mirror::bus::{BusMessage, Encoder, MessageKind, ENGINE_GROUP};
use liveops_mirror::{FeedRecord, RecordId};
use serde_json::{json, Value};

/// 2026-12-03T10:00:00Z, a Thursday of ISO week 49.
const AT_MS: u64 = 1_796_292_000_000;

fn schema() -> jsonschema::Validator {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../api/bus-envelope.schema.json"
    );
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).expect("the schema compiles")
}

fn feed(shard: u32, lsn: u64, record: Record) -> FeedRecord {
    FeedRecord {
        id: RecordId {
            generation: 2,
            shard,
            lsn,
        },
        record,
    }
}

fn accepted(event: EventKind, flag: Option<FlagKind>, totals: Option<Totals>) -> Record {
    Record::EventAccepted {
        player: "p-1".into(),
        event,
        ts: 1_796_291_990,
        at_ms: AT_MS,
        seq: 9,
        flag,
        evidence: None,
        key: None,
        totals,
        replay_id: None,
    }
}

fn encode(encoder: &Encoder, record: &FeedRecord) -> (BusMessage, Value) {
    let message = encoder.encode(record).expect("forwarded");
    let body = serde_json::from_slice(&message.body).unwrap();
    (message, body)
}

fn assert_valid(validator: &jsonschema::Validator, body: &Value) {
    let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{body}: {errors:?}");
}

#[test]
fn every_forwarded_kind_matches_the_schema_and_the_contract() {
    let validator = schema();
    let encoder = Encoder::new(
        "s7",
        &[WindowKind::Daily, WindowKind::Weekly, WindowKind::Seasonal],
    )
    .unwrap();
    let totals = Totals {
        xp: 2500,
        scores: [Some(40), Some(90), None],
    };
    let records = [
        accepted(
            EventKind::Progression {
                delta_xp: 40,
                activity: Some("quest".into()),
            },
            None,
            Some(totals),
        ),
        accepted(
            EventKind::BossKill {
                boss_id: "dragon".into(),
                tier: 2,
                points: 500,
            },
            Some(FlagKind::ScoreJump),
            None,
        ),
        accepted(
            EventKind::DropClaimed {
                drop_id: "sword".into(),
                weight: None,
                source: Some("chest".into()),
            },
            None,
            Some(Totals::default()),
        ),
        Record::Blocked {
            player: "p-1".into(),
            until_ms: AT_MS + 3_600_000,
            reason: "impossible score".into(),
            by: BlockedBy::Fairness,
            at_ms: AT_MS,
            evidence: None,
        },
        Record::Unblocked {
            player: "p-1".into(),
            reason: "appeal".into(),
            at_ms: AT_MS,
        },
        Record::RewardClaimed {
            player: "p-1".into(),
            item: "crown".into(),
            receipt_id: "r-42".into(),
            timestamp: 1_796_292_000,
            at_ms: AT_MS,
        },
        Record::WindowClosed {
            window: WindowKind::Daily,
            next: Period {
                name: "2026-12-04".into(),
                ends_ms: AT_MS + 86_400_000,
            },
            at_ms: AT_MS,
        },
    ];
    let mut kinds = Vec::new();
    for (lsn, record) in (1..).zip(records) {
        let (message, body) = encode(&encoder, &feed(0, lsn, record));
        assert_valid(&validator, &body);
        let id = format!("g2-s0-{lsn}");
        assert_eq!(
            (message.id.as_str(), body["id"].as_str()),
            (id.as_str(), Some(id.as_str()))
        );
        assert_eq!(
            (body["v"].as_u64(), body["season"].as_str()),
            (Some(1), Some("s7"))
        );
        assert_eq!(body["at"].as_u64(), Some(AT_MS));
        assert_eq!(body["kind"].as_str(), Some(message.kind.as_str()));
        let expected_subject = match message.kind {
            MessageKind::Event => format!(
                "liveops.s7.events.{}",
                body["event"]["type"].as_str().unwrap()
            ),
            kind => format!("liveops.s7.decisions.{}", kind.as_str()),
        };
        assert_eq!(message.subject, expected_subject);
        let group = body["playerId"].as_str().unwrap_or(ENGINE_GROUP);
        assert_eq!(message.group, group);
        kinds.push((message.kind, body));
    }
    assert_eq!(
        kinds.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        [
            MessageKind::Event,
            MessageKind::Event,
            MessageKind::Event,
            MessageKind::Block,
            MessageKind::Unblock,
            MessageKind::Claim,
            MessageKind::WindowClose
        ]
    );
    let progression = &kinds[0].1;
    assert_eq!(
        progression["event"],
        json!({"type": "progression", "playerId": "p-1", "ts": 1_796_291_990u64,
               "payload": {"deltaXp": 40, "activity": "quest"}})
    );
    assert_eq!(
        progression["windows"],
        json!({"daily": "2026-12-03", "weekly": "2026-W49", "seasonal": "s7"})
    );
    assert_eq!(
        progression["totals"],
        json!({"xp": 2500, "level": 3, "scores": {"daily": 40, "weekly": 90}})
    );
    assert_eq!(progression["flag"], Value::Null);
    let boss = &kinds[1].1;
    assert_eq!(boss["flag"], "score_jump");
    assert_eq!(
        boss["event"]["payload"],
        json!({"bossId": "dragon", "tier": 2, "points": 500})
    );
    assert!(
        boss.get("totals").is_none(),
        "no totals in the record: none in the envelope"
    );
    assert_eq!(
        kinds[2].1["event"]["payload"],
        json!({"dropId": "sword", "source": "chest"})
    );
    let block = &kinds[3].1;
    assert_eq!(
        (&block["until"], &block["reason"], &block["by"]),
        (
            &json!(AT_MS + 3_600_000),
            &json!("impossible score"),
            &json!("fairness")
        )
    );
    assert_eq!(kinds[4].1["reason"], "appeal");
    let claim = &kinds[5].1;
    assert_eq!(
        (&claim["item"], &claim["receiptId"], &claim["timestamp"]),
        (&json!("crown"), &json!("r-42"), &json!(1_796_292_000u64))
    );
    let close = &kinds[6].1;
    assert_eq!(
        (&close["playerId"], &close["window"], &close["next"]),
        (&Value::Null, &json!("daily"), &json!("2026-12-04"))
    );
}

#[test]
fn only_configured_windows_are_named() {
    let encoder = Encoder::new("1", &[WindowKind::Weekly]).unwrap();
    let record = accepted(
        EventKind::Progression {
            delta_xp: 1,
            activity: None,
        },
        None,
        Some(Totals {
            xp: 1,
            scores: [None, Some(1), None],
        }),
    );
    let (_, body) = encode(&encoder, &feed(1, 1, record));
    assert_valid(&schema(), &body);
    assert_eq!(body["windows"], json!({"weekly": "2026-W49"}));
    assert_eq!(body["event"]["payload"], json!({"deltaXp": 1}));
}

#[test]
fn records_that_are_not_game_facts_and_other_shards_window_closes_are_not_forwarded() {
    let encoder = Encoder::new("1", &WindowKind::ALL).unwrap();
    let close = Record::WindowClosed {
        window: WindowKind::Weekly,
        next: Period {
            name: "2026-W50".into(),
            ends_ms: 0,
        },
        at_ms: AT_MS,
    };
    assert!(encoder.encode(&feed(0, 1, close.clone())).is_some());
    assert!(encoder.encode(&feed(1, 1, close)).is_none());
    let key = Record::KeyCompleted {
        key: "k".into(),
        fingerprint: [0; 32],
        response: StoredResponse {
            status: 202,
            body: b"{}".to_vec(),
        },
        expires_ms: AT_MS,
        at_ms: AT_MS,
        host: None,
    };
    assert!(encoder.encode(&feed(0, 2, key)).is_none());
    assert!(encoder.encode(&feed(0, 3, Record::NextSeq(7))).is_none());
}

#[test]
fn oversized_free_text_is_cut_to_fit_and_marked() {
    let validator = schema();
    let encoder = Encoder::new("1", &WindowKind::ALL).unwrap();
    // Control characters escape to six bytes each: 64 KiB of them is 384 KiB of JSON.
    let reason = "\u{1}".repeat(64 * 1024);
    let record = Record::Unblocked {
        player: "p".into(),
        reason,
        at_ms: AT_MS,
    };
    let (message, body) = encode(&encoder, &feed(0, 1, record));
    assert!(
        message.body.len() <= BODY_BYTES_MAX,
        "{}",
        message.body.len()
    );
    assert_eq!(body["truncated"], true);
    assert_eq!(
        body["reason"].as_str().unwrap().len(),
        TEXT_BYTES_MAX_WHEN_TRUNCATED
    );
    assert_valid(&validator, &body);
}

#[test]
fn the_schema_refuses_what_consumers_could_not_rely_on() {
    let validator = schema();
    let encoder = Encoder::new("1", &WindowKind::ALL).unwrap();
    let record = Record::Unblocked {
        player: "p".into(),
        reason: "r".into(),
        at_ms: AT_MS,
    };
    let (_, good) = encode(&encoder, &feed(0, 1, record));
    assert_valid(&validator, &good);
    let broken = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut body = good.clone();
        f(body.as_object_mut().unwrap());
        body
    };
    for bad in [
        broken(&|b| drop(b.remove("id"))),
        broken(&|b| drop(b.insert("v".into(), json!(2)))),
        broken(&|b| drop(b.insert("kind".into(), json!("event")))),
        broken(&|b| drop(b.insert("surprise".into(), json!(1)))),
        broken(&|b| drop(b.insert("id".into(), json!("s0-1")))),
    ] {
        assert!(!validator.is_valid(&bad), "{bad}");
    }
    assert!(
        Encoder::new("a.b", &[]).is_err(),
        "a season must not split subjects"
    );
    assert!(Encoder::new("", &[]).is_err());
}
