//! Event-bus port (RabbitMQ / Amazon MQ): durable topic exchange, persistent messages,
//! publisher confirms awaited, a dead-letter exchange; plus the consuming side the local
//! stack's `aws:rmq` bridge and the tests use.

mod memory;
mod rabbitmq;

pub use memory::MemoryBus;
pub use rabbitmq::RabbitBus;

use crate::{dependency_span, otel};
use std::collections::BTreeMap;

/// The longest routing key AMQP can carry (a short string).
pub const MAX_ROUTING_KEY_BYTES: usize = 255;

/// The AMQP header (and CloudEvents extension) that carries W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The broker refused the message (negative publisher confirm).
    #[error("broker did not confirm the message")]
    Nacked,
    /// Published `mandatory` and no queue is bound for its routing key: the broker
    /// returned it. A failure, so that the event stays in the outbox instead of vanishing.
    #[error("no queue is bound for routing key '{0}'")]
    Unroutable(String),
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    #[error("broker error: {0}")]
    Other(String),
}

/// The names of one deployment's exchanges and queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Durable topic exchange all Settle events go to; routing key = event type.
    pub exchange: String,
    /// Durable queue the notifier consumes (bound with `#`: every event).
    pub queue: String,
    /// Fanout exchange messages rejected from `queue` are dead-lettered to.
    pub dead_letter_exchange: String,
    /// Durable queue holding dead letters for operators.
    pub dead_letter_queue: String,
}

impl Topology {
    /// `settle.events`, `settle.notify`, `settle.events.dlx`, `settle.notify.dlq` for the
    /// default names.
    pub fn new(exchange: &str, queue: &str) -> Self {
        Topology {
            exchange: exchange.to_string(),
            queue: queue.to_string(),
            dead_letter_exchange: format!("{exchange}.dlx"),
            dead_letter_queue: format!("{queue}.dlq"),
        }
    }
}

/// A message to publish: persistent, with a stable id so that a duplicate publish (after
/// a lost confirm) carries the same id and consumers can drop it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingMessage {
    pub routing_key: String,
    pub message_id: String,
    pub content_type: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

/// A message received from a queue, with what the `aws:rmq` event needs.
#[derive(Debug)]
pub struct Delivery {
    pub exchange: String,
    pub routing_key: String,
    pub message_id: Option<String>,
    pub content_type: Option<String>,
    pub delivery_mode: Option<u8>,
    pub timestamp: Option<u64>,
    pub headers: BTreeMap<String, String>,
    pub redelivered: bool,
    pub body: Vec<u8>,
    acker: Acker,
}

#[derive(Debug)]
enum Acker {
    Memory(memory::MemoryAcker),
    RabbitMq(lapin::Acker),
}

impl Delivery {
    /// Done with the message: the broker forgets it.
    pub async fn ack(self) -> Result<(), BusError> {
        match self.acker {
            Acker::Memory(a) => {
                a.ack();
                Ok(())
            }
            Acker::RabbitMq(a) => bounded(a.ack(Default::default())).await,
        }
    }

    /// Rejects the message. `requeue = false` sends it to the dead-letter exchange.
    pub async fn reject(self, requeue: bool) -> Result<(), BusError> {
        match self.acker {
            Acker::Memory(a) => {
                a.reject(requeue);
                Ok(())
            }
            Acker::RabbitMq(a) => {
                let options = lapin::options::BasicNackOptions { multiple: false, requeue };
                bounded(a.nack(options)).await
            }
        }
    }
}

/// How long an ack or reject may take to leave. On a connection the broker dropped
/// (`rabbitmqctl stop_app`) one was seen never to complete, holding its consumer, and the
/// fault suite's tap with it, past the broker's return.
const ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn bounded<T>(answer: impl std::future::Future<Output = lapin::Result<T>>) -> Result<(), BusError> {
    match tokio::time::timeout(ACK_TIMEOUT, answer).await {
        Ok(result) => result.map(|_| ()).map_err(rabbitmq::classify),
        Err(_) => Err(BusError::Unavailable(format!("the broker took no ack within {ACK_TIMEOUT:?}"))),
    }
}

/// A stream of deliveries from one queue.
pub enum Subscription {
    Memory(memory::MemorySubscription),
    RabbitMq(Box<rabbitmq::RabbitSubscription>),
}

impl Subscription {
    /// The next delivery; `None` once the subscription is closed (broker gone).
    pub async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        match self {
            Subscription::Memory(s) => s.next().await.map(Ok),
            Subscription::RabbitMq(s) => s.next().await,
        }
    }
}

#[derive(Clone)]
pub enum EventBus {
    Memory(MemoryBus),
    RabbitMq(RabbitBus),
}

impl EventBus {
    /// Declares the topology; idempotent, so every cold start may run it.
    pub async fn declare(&self, topology: &Topology) -> Result<(), BusError> {
        match self {
            EventBus::Memory(m) => {
                m.declare(topology);
                Ok(())
            }
            EventBus::RabbitMq(r) => r.declare(topology).await,
        }
    }

    /// Declares `queue`, bound to every event on `exchange` and removed by the broker after
    /// `idle` unused: an observer's copy of the event stream (load tests, debugging) that
    /// cannot pile up messages once its observer is gone. Consume it with `subscribe`.
    pub async fn declare_tap(&self, exchange: &str, queue: &str, idle: std::time::Duration) -> Result<(), BusError> {
        match self {
            EventBus::Memory(m) => m.declare_tap(exchange, queue),
            EventBus::RabbitMq(r) => r.declare_tap(exchange, queue, idle).await,
        }
    }

    /// Publishes one persistent message to `exchange` and waits for the broker's confirm.
    /// A message without a `traceparent` header gets the publish span's, so that its
    /// consumer continues the trace.
    pub async fn publish(&self, exchange: &str, message: &OutgoingMessage) -> Result<(), BusError> {
        // AMQP carries a routing key as a short string: the broker would close the channel.
        if message.routing_key.len() > MAX_ROUTING_KEY_BYTES {
            return Err(BusError::Other(format!(
                "routing key is {} bytes, over AMQP's {MAX_ROUTING_KEY_BYTES}",
                message.routing_key.len()
            )));
        }
        let span = dependency_span!(producer: "rabbitmq", "publish", exchange,
            messaging.rabbitmq.destination.routing_key = %message.routing_key,
            messaging.message.id = %message.message_id);
        let traced_message;
        let message = match span.in_scope(otel::traceparent) {
            Some(context) if !message.headers.contains_key(TRACEPARENT) => {
                let mut with_context = message.clone();
                with_context.headers.insert(TRACEPARENT.to_string(), context);
                traced_message = with_context;
                &traced_message
            }
            _ => message,
        };
        match self {
            EventBus::Memory(m) => {
                let _entered = span.enter();
                m.publish(exchange, message)
            }
            EventBus::RabbitMq(r) => otel::traced(span, r.publish(exchange, message)).await,
        }
    }

    /// Consumes `queue` with at most `prefetch` unacknowledged deliveries in flight.
    pub async fn subscribe(&self, queue: &str, prefetch: u16) -> Result<Subscription, BusError> {
        match self {
            EventBus::Memory(m) => m.subscribe(queue).map(Subscription::Memory),
            EventBus::RabbitMq(r) => r.subscribe(queue, prefetch).await.map(|s| Subscription::RabbitMq(Box::new(s))),
        }
    }

    pub async fn ping(&self) -> Result<(), BusError> {
        match self {
            EventBus::Memory(_) => Ok(()),
            EventBus::RabbitMq(r) => r.ping().await,
        }
    }
}

/// AMQP topic matching: words separated by `.`, `*` matches one word, `#` zero or more.
pub fn topic_matches(pattern: &str, routing_key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match (p.first(), k.first()) {
            (None, None) => true,
            (Some(&"#"), _) => go(&p[1..], k) || (!k.is_empty() && go(p, &k[1..])),
            (Some(&"*"), Some(_)) => go(&p[1..], &k[1..]),
            (Some(pw), Some(kw)) if pw == kw => go(&p[1..], &k[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = if routing_key.is_empty() { Vec::new() } else { routing_key.split('.').collect() };
    go(&p, &k)
}

#[cfg(test)]
mod tests {
    use super::topic_matches;

    #[test]
    fn topic_patterns_match_like_rabbitmq() {
        assert!(topic_matches("#", "payment.succeeded"));
        assert!(topic_matches("#", ""));
        assert!(topic_matches("payment.*", "payment.failed"));
        assert!(!topic_matches("payment.*", "payment.failed.late"));
        assert!(topic_matches("payment.#", "payment"));
        assert!(topic_matches("*.succeeded", "refund.succeeded"));
        assert!(!topic_matches("refund.*", "payment.succeeded"));
    }
}
