//! The engine forwarding its events to real brokers (issue 12): a `nats-server -js` of
//! the test's own, killed and restarted while events are posted, `moto_server` for SQS,
//! and `liveops_testkit`'s Service Bus stand-in (an AMQP 1.0 broker checking SAS tokens),
//! also killed and restarted. A consumer reads everything back and counts distinct ids against what the engine
//! accepted, checking each player's order.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{progression, Engine};
use liveops_testkit::servicebus::{self, KEY};
use liveops_testkit::sqs::{Moto, AWS_ENV};
use liveops_testkit::{eventually, free_port, nats, require_tool, Server};
use serde_json::Value;

const STREAM: &str = "LIVEOPS_E2E";

/// Posts `batches` batches of `per_batch` events over `players` players; returns how
/// many were accepted.
fn post_load(engine: &Engine, batches: usize, per_batch: usize, players: usize) -> u64 {
    let mut accepted = 0;
    for b in 0..batches {
        let events: Vec<String> = (0..per_batch)
            .map(|i| progression(&format!("b{}", (b * per_batch + i) % players), 5))
            .collect();
        let response = engine.post_events(&format!("[{}]", events.join(",")), None);
        assert_eq!(response.status, 202, "{}", response.json());
        accepted += response.json()["accepted"].as_u64().unwrap();
    }
    accepted
}

/// The distinct event ids among `messages` (`(broker id, body)`), after checking that
/// broker ids are the envelopes' ids and that each player's events come in log order
/// (a player lives on one shard, whose LSNs grow).
fn distinct_events(messages: &[(String, Value)]) -> usize {
    let mut seen = HashSet::new();
    let mut last_lsn: HashMap<String, u64> = HashMap::new();
    for (id, body) in messages {
        assert_eq!(
            body["id"].as_str(),
            Some(id.as_str()),
            "broker id = envelope id"
        );
        if body["kind"] != "event" || !seen.insert(id.clone()) {
            continue;
        }
        let lsn: u64 = id.rsplit('-').next().unwrap().parse().unwrap();
        let player = body["playerId"].as_str().unwrap().to_owned();
        let last = last_lsn.entry(player.clone()).or_insert(0);
        assert!(lsn > *last, "{player}: {id} after lsn {last}");
        *last = lsn;
    }
    seen.len()
}

#[test]
fn nats_gets_every_accepted_event_once_in_order_across_a_broker_crash() {
    if !require_tool("nats_gets_every_accepted_event", &["nats-server"]) {
        return;
    }
    let store = common::temp_dir();
    let port = free_port();
    let args = ["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"]
        .map(String::from)
        .into_iter()
        .chain([store.join("nats").to_string_lossy().into_owned()])
        .collect::<Vec<_>>();
    let mut broker = Server::start("nats-server", &args, port);
    let engine = Engine::start_with(&[
        ("BUS_KIND", "nats"),
        ("NATS_URL", &format!("nats://127.0.0.1:{port}")),
        ("BUS_STREAM", STREAM),
    ]);
    let mut accepted = post_load(&engine, 20, 100, 300);
    broker.kill();
    // Ingestion goes on while the broker is away.
    accepted += post_load(&engine, 20, 100, 300);
    broker.restart();
    accepted += post_load(&engine, 20, 100, 300);
    eventually(Duration::from_secs(30), "every event in the stream", || {
        let n = distinct_events(&nats::read_stream(port, STREAM)) as u64;
        (n == accepted)
            .then_some(())
            .ok_or(format!("{n} of {accepted}"))
    });
    let health = engine.get("gateway", "/healthz?verbose=1").json();
    assert_eq!(health["mirrors"][0]["sink"], "nats", "{health}");
    let _ = std::fs::remove_dir_all(&store);
}

#[test]
fn sqs_gets_every_accepted_event_once_in_order() {
    let Some(moto) = Moto::start("sqs_gets_every_accepted_event", "liveops-e2e.fifo") else {
        return;
    };
    let mut env: Vec<(&str, String)> = AWS_ENV.iter().map(|(k, v)| (*k, v.to_string())).collect();
    env.extend([
        ("BUS_KIND", "sqs".to_owned()),
        ("SQS_QUEUE_URL", moto.queue_url.clone()),
        ("SQS_ENDPOINT", moto.endpoint()),
    ]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let engine = Engine::start_with(&env);
    // moto slows down as a queue grows: a few hundred messages, not thousands.
    let accepted = post_load(&engine, 4, 50, 40);
    let mut messages = Vec::new();
    eventually(Duration::from_secs(60), "every event in the queue", || {
        messages.extend(moto.drain());
        let n = distinct_events(&messages) as u64;
        (n == accepted)
            .then_some(())
            .ok_or(format!("{n} of {accepted}"))
    });
}

#[test]
fn servicebus_gets_every_accepted_event_once_in_order() {
    let mut broker = servicebus::Broker::start();
    let engine = Engine::start_with(&[
        ("BUS_KIND", "servicebus"),
        (
            "SERVICEBUS_CONNECTION_STRING",
            &broker.connection_string(KEY),
        ),
        ("SERVICEBUS_QUEUE", servicebus::QUEUE),
    ]);
    let mut accepted = post_load(&engine, 10, 100, 300);
    broker.kill();
    // Ingestion goes on while the broker is away.
    accepted += post_load(&engine, 10, 100, 300);
    broker.restart();
    accepted += post_load(&engine, 10, 100, 300);
    eventually(Duration::from_secs(60), "every event in the queue", || {
        // message-id = envelope id and group-id = playerId are checked on each message.
        let n = distinct_events(&broker.checked_messages("1")) as u64;
        (n == accepted)
            .then_some(())
            .ok_or(format!("{n} of {accepted}"))
    });
    let health = engine.get("gateway", "/healthz?verbose=1").json();
    assert_eq!(health["mirrors"][0]["sink"], "servicebus", "{health}");
    assert_eq!(broker.tokens_refused(), 0, "the engine's tokens hold");
}
