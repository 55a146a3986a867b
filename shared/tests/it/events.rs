//! Event-bus contract: memory model and RabbitMQ.

use crate::helpers;
use settle_shared::ports::events::*;
use std::collections::BTreeMap;
use std::time::Duration;

struct Bus {
    bus: EventBus,
    topology: Topology,
}

async fn memory_bus() -> Bus {
    let topology = Topology::new(&helpers::unique("it.events"), &helpers::unique("it.notify"));
    Bus { bus: EventBus::Memory(MemoryBus::new()), topology }
}

async fn rabbit_bus() -> Bus {
    let bus = EventBus::RabbitMq(RabbitBus::new(&helpers::amqp_url(), None, helpers::TIMEOUT));
    if let Err(e) = bus.ping().await {
        helpers::unreachable("RabbitMQ", e);
    }
    Bus { bus, topology: Topology::new(&helpers::unique("it.events"), &helpers::unique("it.notify")) }
}

fn message(routing_key: &str, id: &str) -> OutgoingMessage {
    OutgoingMessage {
        routing_key: routing_key.into(),
        message_id: id.into(),
        content_type: "application/cloudevents+json".into(),
        headers: BTreeMap::from([("traceparent".to_string(), "00-abc-def-01".to_string())]),
        body: format!("{{\"id\":\"{id}\"}}").into_bytes(),
    }
}

async fn next(sub: &mut Subscription) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("a delivery within 10 s")
        .expect("subscription open")
        .expect("delivery ok")
}

async fn published_messages_arrive_intact_and_persistent(b: Bus) {
    b.bus.declare(&b.topology).await.unwrap();
    b.bus.declare(&b.topology).await.unwrap(); // idempotent
    let mut sub = b.bus.subscribe(&b.topology.queue, 10).await.unwrap();
    let sent = message("payment.succeeded", "evt_1");
    b.bus.publish(&b.topology.exchange, &sent).await.unwrap();
    let got = next(&mut sub).await;
    assert_eq!(got.routing_key, "payment.succeeded");
    assert_eq!(got.message_id.as_deref(), Some("evt_1"));
    assert_eq!(got.content_type.as_deref(), Some("application/cloudevents+json"));
    assert_eq!(got.delivery_mode, Some(2), "messages must be persistent");
    assert_eq!(got.headers, sent.headers);
    assert_eq!(got.body, sent.body);
    assert!(!got.redelivered);
    got.ack().await.unwrap();
}

async fn rejected_messages_are_dead_lettered(b: Bus) {
    b.bus.declare(&b.topology).await.unwrap();
    let mut sub = b.bus.subscribe(&b.topology.queue, 10).await.unwrap();
    b.bus.publish(&b.topology.exchange, &message("refund.failed", "evt_2")).await.unwrap();
    next(&mut sub).await.reject(false).await.unwrap();
    let mut dead = b.bus.subscribe(&b.topology.dead_letter_queue, 10).await.unwrap();
    let letter = next(&mut dead).await;
    assert_eq!(letter.body, message("refund.failed", "evt_2").body);
    letter.ack().await.unwrap();
}

async fn requeued_messages_come_back_redelivered(b: Bus) {
    b.bus.declare(&b.topology).await.unwrap();
    let mut sub = b.bus.subscribe(&b.topology.queue, 10).await.unwrap();
    b.bus.publish(&b.topology.exchange, &message("payment.failed", "evt_3")).await.unwrap();
    next(&mut sub).await.reject(true).await.unwrap();
    let again = next(&mut sub).await;
    assert!(again.redelivered);
    assert_eq!(again.routing_key, "payment.failed");
    again.ack().await.unwrap();
}

/// A delivery dropped without ack or reject (a crashed consumer) is not lost: it comes
/// back, marked redelivered, once its consumer is gone.
async fn unsettled_deliveries_come_back_when_the_consumer_goes(b: Bus) {
    b.bus.declare(&b.topology).await.unwrap();
    let mut first = b.bus.subscribe(&b.topology.queue, 10).await.unwrap();
    b.bus.publish(&b.topology.exchange, &message("payment.succeeded", "evt_6")).await.unwrap();
    let delivery = next(&mut first).await;
    drop(delivery);
    drop(first);
    let mut second = b.bus.subscribe(&b.topology.queue, 10).await.unwrap();
    let again = next(&mut second).await;
    assert!(again.redelivered);
    assert_eq!(again.message_id.as_deref(), Some("evt_6"));
    again.ack().await.unwrap();
}

async fn publishing_to_an_undeclared_exchange_fails(b: Bus) {
    let result = b.bus.publish(&helpers::unique("nowhere"), &message("x", "evt_4")).await;
    assert!(result.is_err(), "{result:?}");
    // The bus recovers: the next publish to a real exchange works.
    b.bus.declare(&b.topology).await.unwrap();
    b.bus.publish(&b.topology.exchange, &message("x", "evt_5")).await.unwrap();
}

async fn a_tap_sees_every_event_beside_the_notifier(b: Bus) {
    b.bus.declare(&b.topology).await.unwrap();
    let tap = helpers::unique("it.tap");
    b.bus.declare_tap(&b.topology.exchange, &tap, Duration::from_secs(60)).await.unwrap();
    b.bus.declare_tap(&b.topology.exchange, &tap, Duration::from_secs(60)).await.unwrap(); // idempotent
    let (mut tapped, mut notified) =
        (b.bus.subscribe(&tap, 10).await.unwrap(), b.bus.subscribe(&b.topology.queue, 10).await.unwrap());
    b.bus.publish(&b.topology.exchange, &message("refund.succeeded", "evt_7")).await.unwrap();
    for sub in [&mut tapped, &mut notified] {
        let got = next(sub).await;
        assert_eq!(got.message_id.as_deref(), Some("evt_7"));
        got.ack().await.unwrap();
    }
    let missing =
        b.bus.declare_tap(&helpers::unique("nowhere"), &helpers::unique("it.tap"), Duration::from_secs(60)).await;
    assert!(missing.is_err(), "a tap on an undeclared exchange must fail: {missing:?}");
}

crate::contract_tests!(
    memory: memory_bus,
    real: rabbit_bus,
    contracts: [
        published_messages_arrive_intact_and_persistent,
        rejected_messages_are_dead_lettered,
        requeued_messages_come_back_redelivered,
        unsettled_deliveries_come_back_when_the_consumer_goes,
        publishing_to_an_undeclared_exchange_fails,
        a_tap_sees_every_event_beside_the_notifier,
        overlong_routing_keys_are_refused,
    ]
);

/// Confirms can fail. The model is told to nack; the real broker nacks a publish that
/// a full `reject-publish` queue cannot take. Both surface as `BusError::Nacked`.
#[tokio::test]
async fn memory_negative_confirms_surface_as_nacked() {
    let b = memory_bus().await;
    b.bus.declare(&b.topology).await.unwrap();
    let EventBus::Memory(memory) = &b.bus else { unreachable!() };
    memory.fail_next_confirms(1);
    assert!(matches!(b.bus.publish(&b.topology.exchange, &message("x", "e")).await, Err(BusError::Nacked)));
    b.bus.publish(&b.topology.exchange, &message("x", "e")).await.unwrap();
}

#[tokio::test]
async fn real_negative_confirms_surface_as_nacked() {
    use lapin::options::{QueueBindOptions, QueueDeclareOptions};
    use lapin::types::{AMQPValue, FieldTable};
    let b = rabbit_bus().await;
    b.bus.declare(&b.topology).await.unwrap();
    // Arrange: an extra queue on the exchange that holds one message and refuses more.
    let conn = lapin::Connection::connect(&helpers::amqp_url(), Default::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(1));
    args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    let full = helpers::unique("it.full");
    let options = QueueDeclareOptions { auto_delete: true, ..Default::default() };
    ch.queue_declare(full.as_str().into(), options, args).await.unwrap();
    ch.queue_bind(
        full.as_str().into(),
        b.topology.exchange.as_str().into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    // Act / Assert: the first fits, the second is refused by the broker.
    b.bus.publish(&b.topology.exchange, &message("x", "e1")).await.unwrap();
    let refused = b.bus.publish(&b.topology.exchange, &message("x", "e2")).await;
    assert!(matches!(refused, Err(BusError::Nacked)), "{refused:?}");
}

/// Publishes are `mandatory`: one that no queue takes comes back as `Unroutable`
/// instead of being confirmed and lost, and the channel stays usable.
#[tokio::test]
async fn real_unroutable_publishes_fail() {
    use lapin::options::ExchangeDeclareOptions;
    use lapin::types::FieldTable;
    let b = rabbit_bus().await;
    // Arrange: an exchange with no queue bound.
    let conn = lapin::Connection::connect(&helpers::amqp_url(), Default::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let bare = helpers::unique("it.bare");
    let options = ExchangeDeclareOptions { auto_delete: true, ..Default::default() };
    ch.exchange_declare(bare.as_str().into(), lapin::ExchangeKind::Topic, options, FieldTable::default())
        .await
        .unwrap();
    // Act / Assert
    let refused = b.bus.publish(&bare, &message("payment.succeeded", "e1")).await;
    assert!(matches!(&refused, Err(BusError::Unroutable(key)) if key == "payment.succeeded"), "{refused:?}");
    b.bus.declare(&b.topology).await.unwrap();
    b.bus.publish(&b.topology.exchange, &message("payment.succeeded", "e2")).await.unwrap();
}

/// A routing key AMQP cannot carry is refused before it reaches the broker, by both.
async fn overlong_routing_keys_are_refused(b: Bus) {
    b.bus.declare(&b.topology).await.unwrap();
    let refused = b.bus.publish(&b.topology.exchange, &message(&"k".repeat(256), "e1")).await;
    assert!(matches!(&refused, Err(BusError::Other(why)) if why.contains("255")), "{refused:?}");
    b.bus.publish(&b.topology.exchange, &message(&"k".repeat(255), "e2")).await.unwrap();
}

#[tokio::test]
async fn unreachable_broker_is_reported_as_unavailable() {
    let bus =
        EventBus::RabbitMq(RabbitBus::new("amqp://guest:guest@127.0.0.1:1/%2f", None, Duration::from_millis(500)));
    let err = bus.publish("settle.events", &message("x", "e")).await.unwrap_err();
    assert!(matches!(err, BusError::Unavailable(_)), "{err:?}");
}
