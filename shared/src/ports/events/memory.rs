//! In-memory event bus: topic exchanges, queues, dead-lettering and failing confirms,
//! modelled on RabbitMQ's behaviour for the subset Settle uses.

use super::{topic_matches, Acker, BusError, Delivery, OutgoingMessage, Topology};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

#[derive(Default)]
struct State {
    /// exchange name → (binding pattern, queue); `None` pattern for a fanout exchange.
    exchanges: HashMap<String, Vec<(Option<String>, String)>>,
    queues: HashMap<String, Queue>,
    /// How many of the next publishes the "broker" will nack.
    nacks_pending: usize,
}

#[derive(Default)]
struct Queue {
    messages: VecDeque<Stored>,
    dead_letter_exchange: Option<String>,
    notify: Arc<Notify>,
}

#[derive(Clone)]
struct Stored {
    exchange: String,
    message: OutgoingMessage,
    redelivered: bool,
}

#[derive(Clone, Default)]
pub struct MemoryBus {
    state: Arc<Mutex<State>>,
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the next `n` publishes fail their confirm, as a broker under memory alarm
    /// would, so the outbox's retry path can be tested without a broker.
    pub fn fail_next_confirms(&self, n: usize) {
        self.lock().nacks_pending = n;
    }

    /// Number of messages waiting in `queue`.
    pub fn depth(&self, queue: &str) -> usize {
        self.lock().queues.get(queue).map_or(0, |q| q.messages.len())
    }

    pub(super) fn declare(&self, t: &Topology) {
        let mut state = self.lock();
        let bind = |state: &mut State, exchange: &str, pattern: Option<&str>, queue: &str| {
            let bindings = state.exchanges.entry(exchange.to_string()).or_default();
            let binding = (pattern.map(str::to_string), queue.to_string());
            if !bindings.contains(&binding) {
                bindings.push(binding);
            }
        };
        state.queues.entry(t.dead_letter_queue.clone()).or_default();
        bind(&mut state, &t.dead_letter_exchange, None, &t.dead_letter_queue);
        state.queues.entry(t.queue.clone()).or_default().dead_letter_exchange = Some(t.dead_letter_exchange.clone());
        bind(&mut state, &t.exchange, Some("#"), &t.queue);
    }

    pub(super) fn declare_tap(&self, exchange: &str, queue: &str) -> Result<(), BusError> {
        let mut state = self.lock();
        if !state.exchanges.contains_key(exchange) {
            return Err(BusError::Other(format!("no exchange '{exchange}'")));
        }
        state.queues.entry(queue.to_string()).or_default();
        state.exchanges.entry(exchange.to_string()).or_default().push((Some("#".to_string()), queue.to_string()));
        Ok(())
    }

    pub(super) fn publish(&self, exchange: &str, message: &OutgoingMessage) -> Result<(), BusError> {
        let mut state = self.lock();
        if !state.exchanges.contains_key(exchange) {
            // RabbitMQ closes the channel with 404 NOT_FOUND for an undeclared exchange.
            return Err(BusError::Other(format!("no exchange '{exchange}'")));
        }
        if state.nacks_pending > 0 {
            state.nacks_pending -= 1;
            return Err(BusError::Nacked);
        }
        let stored = Stored { exchange: exchange.to_string(), message: message.clone(), redelivered: false };
        if route(&mut state, exchange, stored) == 0 {
            return Err(BusError::Unroutable(message.routing_key.clone()));
        }
        Ok(())
    }

    pub(super) fn subscribe(&self, queue: &str) -> Result<MemorySubscription, BusError> {
        let notify = match self.lock().queues.get(queue) {
            Some(q) => q.notify.clone(),
            None => return Err(BusError::Other(format!("no queue '{queue}'"))),
        };
        Ok(MemorySubscription { bus: self.clone(), queue: queue.to_string(), notify })
    }
}

/// Delivers `stored` to every queue bound for its routing key; returns how many took it
/// (none: the publish is unroutable, as RabbitMQ reports a `mandatory` publish).
fn route(state: &mut State, exchange: &str, stored: Stored) -> usize {
    let targets: Vec<String> = state
        .exchanges
        .get(exchange)
        .into_iter()
        .flatten()
        .filter(|(pattern, _)| pattern.as_deref().is_none_or(|p| topic_matches(p, &stored.message.routing_key)))
        .map(|(_, q)| q.clone())
        .collect();
    let mut taken = 0;
    for name in targets {
        if let Some(q) = state.queues.get_mut(&name) {
            q.messages.push_back(stored.clone());
            q.notify.notify_one();
            taken += 1;
        }
    }
    taken
}

pub struct MemorySubscription {
    bus: MemoryBus,
    queue: String,
    notify: Arc<Notify>,
}

impl MemorySubscription {
    pub(super) async fn next(&mut self) -> Option<Delivery> {
        loop {
            let popped = self.bus.lock().queues.get_mut(&self.queue).and_then(|q| q.messages.pop_front());
            if let Some(stored) = popped {
                let acker =
                    MemoryAcker { bus: self.bus.clone(), queue: self.queue.clone(), message: Some(stored.clone()) };
                let m = stored.message;
                return Some(Delivery {
                    exchange: stored.exchange,
                    routing_key: m.routing_key,
                    message_id: Some(m.message_id),
                    content_type: Some(m.content_type),
                    delivery_mode: Some(2),
                    timestamp: None,
                    headers: m.headers,
                    redelivered: stored.redelivered,
                    body: m.body,
                    acker: Acker::Memory(acker),
                });
            }
            self.notify.notified().await;
        }
    }
}

/// The broker's side of one unacknowledged delivery. Dropped without an ack or a
/// reject (the consumer crashed, the task was cancelled), the message goes back to the
/// head of its queue marked redelivered, as RabbitMQ does when a channel closes.
pub(super) struct MemoryAcker {
    bus: MemoryBus,
    queue: String,
    /// `None` once settled.
    message: Option<Stored>,
}

impl std::fmt::Debug for MemoryAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryAcker").field("queue", &self.queue).finish()
    }
}

impl MemoryAcker {
    pub(super) fn ack(mut self) {
        self.message = None;
    }

    pub(super) fn reject(mut self, requeue: bool) {
        let Some(stored) = self.message.take() else { return };
        self.settle(stored, requeue);
    }

    fn settle(&self, mut stored: Stored, requeue: bool) {
        let mut state = self.bus.lock();
        let Some(queue) = state.queues.get_mut(&self.queue) else { return };
        if requeue {
            stored.redelivered = true;
            queue.messages.push_front(stored);
            queue.notify.notify_one();
        } else if let Some(dlx) = queue.dead_letter_exchange.clone() {
            stored.redelivered = false;
            route(&mut state, &dlx, stored);
        }
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        if let Some(stored) = self.message.take() {
            self.settle(stored, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(routing_key: &str) -> OutgoingMessage {
        OutgoingMessage {
            routing_key: routing_key.into(),
            message_id: "evt_1".into(),
            content_type: "application/cloudevents+json".into(),
            headers: Default::default(),
            body: b"{}".to_vec(),
        }
    }

    #[test]
    fn a_publish_no_queue_takes_is_unroutable_as_with_mandatory() {
        let bus = MemoryBus::new();
        // An exchange with no queue bound (as RabbitMQ has one declared by someone else).
        bus.lock().exchanges.insert("bare".into(), Vec::new());
        let refused = bus.publish("bare", &message("payment.succeeded"));
        assert!(matches!(&refused, Err(BusError::Unroutable(key)) if key == "payment.succeeded"), "{refused:?}");
        bus.declare(&Topology::new("bare", "q"));
        bus.publish("bare", &message("payment.succeeded")).unwrap();
    }
}
