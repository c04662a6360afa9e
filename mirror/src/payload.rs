//! An accepted event's payload as posted, as JSON: what the bus envelope's `event.payload`
//! and the Postgres `events.payload` column both hold, written by one serializer.

use liveops_engine::event::EventKind;
use serde::Serialize;

/// The payload's fields as the client posted them; optional fields it left out stay out.
#[derive(Serialize)]
#[serde(untagged, rename_all_fields = "camelCase")]
pub enum Payload<'a> {
    Progression {
        delta_xp: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        activity: Option<&'a str>,
    },
    BossKill {
        boss_id: &'a str,
        tier: u64,
        points: u64,
    },
    DropClaimed {
        drop_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        weight: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        source: Option<&'a str>,
    },
}

impl<'a> Payload<'a> {
    pub fn of(event: &'a EventKind) -> Payload<'a> {
        match event {
            EventKind::Progression { delta_xp, activity } => Payload::Progression {
                delta_xp: *delta_xp,
                activity: activity.as_deref(),
            },
            EventKind::BossKill {
                boss_id,
                tier,
                points,
            } => Payload::BossKill {
                boss_id,
                tier: *tier,
                points: *points,
            },
            EventKind::DropClaimed {
                drop_id,
                weight,
                source,
            } => Payload::DropClaimed {
                drop_id,
                weight: *weight,
                source: source.as_deref(),
            },
        }
    }
}
