//! The outbox relay, on the memory ports and on MongoDB with RabbitMQ: an event the
//! broker refuses is retried, then parked with its reason and counted, and never holds
//! up the events behind it.

use crate::helpers;
use serde_json::json;
use settle_shared::outbox::{relay, MAX_PUBLISH_ATTEMPTS, OUTBOX, PARKED, PUBLISHED};
use settle_shared::ports::documents::*;
use settle_shared::ports::events::*;
use std::time::Duration;

struct Ports {
    documents: DocumentStore,
    bus: EventBus,
    topology: Topology,
}

async fn memory_ports() -> Ports {
    Ports {
        documents: DocumentStore::Memory(MemoryDocuments::new()),
        bus: EventBus::Memory(MemoryBus::new()),
        topology: Topology::new(&helpers::unique("it.events"), &helpers::unique("it.notify")),
    }
}

async fn real_ports() -> Ports {
    let store = MongoDocuments::connect(&helpers::mongodb_uri(), &helpers::unique("it"), None, helpers::TIMEOUT)
        .await
        .unwrap_or_else(|e| helpers::unreachable("MongoDB", e));
    let bus = EventBus::RabbitMq(RabbitBus::new(&helpers::amqp_url(), None, helpers::TIMEOUT));
    if let Err(e) = bus.ping().await {
        helpers::unreachable("RabbitMQ", e);
    }
    Ports {
        documents: DocumentStore::Mongo(store),
        bus,
        topology: Topology::new(&helpers::unique("it.events"), &helpers::unique("it.notify")),
    }
}

/// An outbox record as the Payment API writes it, old enough for the relay.
fn record(id: &str, routing_key: &str, age: Duration) -> Document {
    let created = chrono::Utc::now().timestamp_millis() - age.as_millis() as i64;
    let body = json!({"id": id, "type": routing_key}).to_string();
    json!({"_id": id, "status": "pending", "routing_key": routing_key, "body": body, "created": created})
        .as_object()
        .cloned()
        .unwrap()
}

async fn status(documents: &DocumentStore, id: &str) -> Document {
    documents.get(OUTBOX, id).await.unwrap().expect("outbox record")
}

async fn a_refused_event_is_parked_and_blocks_nothing(p: Ports) {
    // Arrange: three due events, the middle one with a routing key no broker takes,
    // and one written just now (the request that wrote it publishes it itself).
    p.bus.declare(&p.topology).await.unwrap();
    let mut sub = p.bus.subscribe(&p.topology.queue, 10).await.unwrap();
    let bad = helpers::unique("evt_bad");
    let old = Duration::from_secs(60);
    let refused_key = "x".repeat(MAX_ROUTING_KEY_BYTES + 1);
    for doc in [
        record("evt_a", "payment.succeeded", old + Duration::from_secs(2)),
        record(&bad, &refused_key, old + Duration::from_secs(1)),
        record("evt_b", "refund.succeeded", old),
        record("evt_new", "payment.failed", Duration::ZERO),
    ] {
        p.documents.insert(OUTBOX, doc).await.unwrap();
    }
    let metrics = settle_shared::metrics::capture();

    // Act: the first pass publishes both good events past the refused one.
    let first = relay(&p.documents, &p.bus, &p.topology.exchange, "test").await.unwrap();
    assert_eq!((first.due, first.published, first.refused, first.parked), (3, 2, 1, 0), "{first:?}");
    for id in ["evt_a", "evt_b"] {
        assert_eq!(status(&p.documents, id).await["status"], PUBLISHED);
    }
    let refused = status(&p.documents, &bad).await;
    assert_eq!(refused["status"], "pending");
    assert_eq!(refused["publish_attempts"], 1);
    assert!(refused["last_error"].as_str().unwrap().contains("255"), "{refused:?}");
    assert_eq!(status(&p.documents, "evt_new").await["status"], "pending", "within the grace period");

    // Later passes retry it until the last allowed attempt parks it.
    for pass in 2..=MAX_PUBLISH_ATTEMPTS {
        let report = relay(&p.documents, &p.bus, &p.topology.exchange, "test").await.unwrap();
        let parked_now = usize::from(pass == MAX_PUBLISH_ATTEMPTS);
        assert_eq!((report.due, report.published, report.parked), (1, 0, parked_now), "pass {pass}: {report:?}");
    }
    let parked = status(&p.documents, &bad).await;
    assert_eq!(parked["status"], PARKED);
    assert_eq!(parked["publish_attempts"], MAX_PUBLISH_ATTEMPTS);
    assert!(parked["parked_reason"].as_str().unwrap().contains("routing key"), "{parked:?}");
    let after = relay(&p.documents, &p.bus, &p.topology.exchange, "test").await.unwrap();
    assert_eq!(after.due, 0, "a parked event is not read again");
    assert_eq!(after.summary(), "outbox relay: nothing pending");

    // Assert: the good events arrived once each; the park was counted once.
    let mut ids = Vec::new();
    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
        ids.push(d.message_id.clone().unwrap());
        d.ack().await.unwrap();
    }
    ids.sort();
    assert_eq!(ids, ["evt_a", "evt_b"]);
    let lines: Vec<String> = metrics.lock().unwrap().iter().filter(|l| l.contains(&bad)).cloned().collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("\"OutboxParked\":1"), "{lines:?}");
}

async fn an_unreachable_broker_stops_the_pass_without_costing_attempts(p: Ports) {
    p.documents.insert(OUTBOX, record("evt_c", "payment.succeeded", Duration::from_secs(60))).await.unwrap();
    let down =
        EventBus::RabbitMq(RabbitBus::new("amqp://guest:guest@127.0.0.1:1/%2f", None, Duration::from_millis(300)));
    let report = relay(&p.documents, &down, &p.topology.exchange, "test").await.unwrap();
    assert_eq!((report.due, report.published, report.refused, report.parked), (1, 0, 0, 0), "{report:?}");
    assert!(report.stopped.as_deref().unwrap_or_default().contains("unavailable"), "{report:?}");
    let record = status(&p.documents, "evt_c").await;
    assert_eq!(record["status"], "pending");
    assert!(record.get("publish_attempts").is_none(), "an outage costs no attempt: {record:?}");
    // Back: the same event goes out.
    p.bus.declare(&p.topology).await.unwrap();
    let report = relay(&p.documents, &p.bus, &p.topology.exchange, "test").await.unwrap();
    assert_eq!(report.published, 1, "{report:?}");
}

crate::contract_tests!(
    memory: memory_ports,
    real: real_ports,
    contracts: [a_refused_event_is_parked_and_blocks_nothing, an_unreachable_broker_stops_the_pass_without_costing_attempts]
);
