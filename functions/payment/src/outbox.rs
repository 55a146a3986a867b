//! The transactional outbox: events are written in the same MongoDB transaction as the
//! change they describe, published with broker confirms right after the commit, and
//! re-published by a relay if that failed (broker down). Publishing is at least once;
//! a repeated publish carries the same event id.

use crate::state::AppState;
use crate::store::now_ms;
use serde_json::json;
use settle_shared::domain::event::CloudEvent;
use settle_shared::otel;
use settle_shared::outbox::{mark_published, message, relay, RelayReport, OUTBOX, PENDING};
use settle_shared::ports::documents::Write;
use settle_shared::ports::events::OutgoingMessage;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
        "status": PENDING,
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
                if let Err(e) = mark_published(&state.backends.documents, id).await {
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

    /// One relay pass ([`settle_shared::outbox::relay`]); a pass already running in this
    /// instance makes this one a no-op.
    pub async fn relay(&self, state: &AppState) -> anyhow::Result<RelayReport> {
        let Ok(_guard) = self.relaying.try_lock() else { return Ok(RelayReport::default()) };
        self.last_relay_ms.store(now_ms(), Ordering::Relaxed);
        let backends = &state.backends;
        let report =
            relay(&backends.documents, &backends.bus, &backends.topology.exchange, crate::metrics::METRICS_FUNCTION)
                .await?;
        if report.published > 0 {
            *self.paused_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        Ok(report)
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
