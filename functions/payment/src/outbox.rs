//! The transactional outbox: events are written in the same MongoDB transaction as the
//! change they describe, published with broker confirms right after the commit, and
//! re-published by a relay if that failed (broker down). Publishing is at least once;
//! a repeated publish carries the same event id.

use crate::store::{now_ms, OUTBOX};
use crate::AppState;
use serde_json::json;
use settle_shared::domain::event::{CloudEvent, CLOUDEVENTS_JSON};
use settle_shared::otel;
use settle_shared::ports::documents::{Cond, Order, Query, Write};
use settle_shared::ports::events::{OutgoingMessage, TRACEPARENT};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The relay leaves events younger than this to the request that wrote them.
const RELAY_GRACE: Duration = Duration::from_secs(5);
/// How often one instance drains the outbox on its own.
const RELAY_EVERY: Duration = Duration::from_secs(10);
/// After a failed publish, requests stop trying in-line for this long (the relay keeps
/// trying), so that a broker outage does not add its timeout to every request.
const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Outbox {
    paused_until: Mutex<Option<Instant>>,
    last_relay_ms: AtomicI64,
    relaying: tokio::sync::Mutex<()>,
}

/// Where an event came from: the request's id, correlation id and Idempotency-Key travel
/// with it (CloudEvents extensions, AMQP headers, outbox and delivery records).
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub request_id: Option<String>,
    pub correlation_id: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Builds a Settle event about `subject` (a payment or refund id).
pub fn event(
    event_type: &str,
    merchant_id: &str,
    subject: &str,
    sequence: i64,
    data: serde_json::Value,
    origin: &Origin,
) -> CloudEvent {
    let mut e = CloudEvent::new(event_type, "/settle/payment", data);
    e.subject = Some(subject.to_string());
    e.merchantid = Some(merchant_id.to_string());
    e.correlationid = origin.correlation_id.clone();
    e.idempotencykey = origin.idempotency_key.clone();
    e.requestid = origin.request_id.clone();
    // The span that caused the event: its consumers' spans join this trace.
    e.traceparent = otel::traceparent();
    e.sequence = Some(sequence);
    e
}

/// The outbox record of `event`, to add to the transaction of the change.
pub fn write(event: &CloudEvent) -> Write {
    let doc = json!({
        "_id": event.id,
        "status": "pending",
        "routing_key": event.event_type,
        "body": String::from_utf8_lossy(&event.to_json()),
        "request_id": event.requestid,
        "correlation_id": event.correlationid,
        "idempotency_key": event.idempotencykey,
        "traceparent": event.traceparent,
        "created": now_ms(),
    });
    Write::Insert { collection: OUTBOX.into(), doc: doc.as_object().cloned().unwrap_or_default() }
}

impl Outbox {
    /// Publishes just-committed events. Failures are logged, not returned: the change is
    /// committed and its events are safe in the outbox for the relay.
    pub async fn publish_committed(&self, state: &AppState, events: &[CloudEvent]) {
        if events.is_empty() || self.paused() {
            return;
        }
        for e in events {
            let ids = [&e.requestid, &e.correlationid, &e.idempotencykey, &e.traceparent].map(|v| v.as_deref());
            let message = message(&e.id, &e.event_type, e.to_json(), ids);
            if !self.publish_one(state, &e.id, &message).await {
                return;
            }
        }
    }

    fn paused(&self) -> bool {
        self.paused_until.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|t| Instant::now() < t)
    }

    async fn publish_one(&self, state: &AppState, id: &str, message: &OutgoingMessage) -> bool {
        match state.backends.bus.publish(&state.backends.topology.exchange, message).await {
            Ok(()) => {
                let set = json!({"status": "published", "published_at": now_ms()});
                let done = state
                    .backends
                    .documents
                    .update(
                        OUTBOX,
                        id,
                        vec![Cond::eq("status", "pending")],
                        set.as_object().cloned().unwrap_or_default(),
                    )
                    .await;
                if let Err(e) = done {
                    // Published but not marked: the relay will publish it again, same id.
                    tracing::warn!(error = %e, event = id, "event published but outbox not updated");
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, event = id, "publish failed; the outbox relay will retry");
                *self.paused_until.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(Instant::now() + PAUSE_AFTER_FAILURE);
                false
            }
        }
    }

    /// Publishes pending events older than the grace period, oldest first. Returns how
    /// many were published.
    pub async fn relay(&self, state: &AppState) -> anyhow::Result<usize> {
        let Ok(_guard) = self.relaying.try_lock() else { return Ok(0) };
        self.last_relay_ms.store(now_ms(), Ordering::Relaxed);
        let cutoff = now_ms() - RELAY_GRACE.as_millis() as i64;
        let query = Query::new()
            .filter(Cond::eq("status", "pending"))
            .filter(Cond::new("created", settle_shared::ports::documents::Op::Lte, cutoff))
            .sort("created", Order::Asc)
            .limit(200);
        let pending = state.backends.documents.find(OUTBOX, &query).await?;
        let mut published = 0;
        for doc in pending {
            let text = |k: &str| doc.get(k).and_then(|v| v.as_str()).map(str::to_string);
            let (Some(id), Some(routing_key), Some(body)) = (text("_id"), text("routing_key"), text("body")) else {
                continue;
            };
            // The stored body, byte for byte: a re-published event is the same event.
            let stored = ["request_id", "correlation_id", "idempotency_key", "traceparent"].map(text);
            let message = message(&id, &routing_key, body.into_bytes(), stored.each_ref().map(Option::as_deref));
            if !self.publish_one(state, &id, &message).await {
                break;
            }
            published += 1;
        }
        if published > 0 {
            *self.paused_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
            tracing::info!(published, "outbox relay published pending events");
        }
        Ok(published)
    }

    /// Runs the relay if this instance has not run it lately. In the invocation, not in
    /// the background: Lambda freezes an instance once it has answered, so a spawned task
    /// might never run. When nothing is pending it costs one indexed query.
    pub async fn relay_if_due(&self, state: &AppState) {
        let last = self.last_relay_ms.load(Ordering::Relaxed);
        if now_ms() - last < RELAY_EVERY.as_millis() as i64 {
            return;
        }
        self.last_relay_ms.store(now_ms(), Ordering::Relaxed);
        if let Err(e) = self.relay(state).await {
            tracing::warn!(error = %e, "outbox relay failed");
        }
    }
}

/// The AMQP message of an outbox event: its CloudEvent body, and as headers the ids it
/// carries (request id, correlation id, Idempotency-Key, traceparent), those it has.
fn message(id: &str, routing_key: &str, body: Vec<u8>, ids: [Option<&str>; 4]) -> OutgoingMessage {
    const HEADERS: [&str; 4] = ["request-id", "correlation-id", "idempotency-key", TRACEPARENT];
    let headers: BTreeMap<String, String> =
        HEADERS.into_iter().zip(ids).filter_map(|(name, value)| Some((name.to_string(), value?.to_string()))).collect();
    OutgoingMessage {
        routing_key: routing_key.to_string(),
        message_id: id.to_string(),
        content_type: CLOUDEVENTS_JSON.into(),
        headers,
        body,
    }
}
