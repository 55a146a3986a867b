//! The outbox relay: publishes events that were committed with their change but not
//! published right after it (broker down, the request's publish failed, the function was
//! frozen). It runs on a schedule in AWS (the notifier's EventBridge trigger), in the
//! local stack's loop, and inside the Payment API's requests as a fast path.
//!
//! One event the broker refuses (a negative confirm, a `mandatory` publish no queue
//! takes) never blocks the events behind it: it is retried on later passes and, after
//! [`MAX_PUBLISH_ATTEMPTS`] refusals, parked with its reason, counted in the
//! `OutboxParked` metric and left for an operator. A broker that cannot be reached at all
//! stops the pass instead: that is an outage, not a refusal, and costs no event an attempt.

use crate::domain::event::CLOUDEVENTS_JSON;
use crate::metrics::{emit, Measure};
use crate::ports::documents::{Cond, Document, DocumentStore, IndexSpec, Op, Order, Query, StoreError};
use crate::ports::events::{BusError, EventBus, OutgoingMessage, TRACEPARENT};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// The outbox collection: one record per event, written in the transaction of its change.
pub const OUTBOX: &str = "outbox";
/// The relay leaves events younger than this to the request that wrote them.
pub const RELAY_GRACE: Duration = Duration::from_secs(5);
/// How many refusals park an event (five scheduled passes: about five minutes in AWS).
pub const MAX_PUBLISH_ATTEMPTS: i64 = 5;
/// At most this many events per pass, oldest first; the next pass takes the rest.
const PASS_LIMIT: u32 = 200;

/// Record states: `pending` until published (or parked), then `published` or `parked`.
pub const PENDING: &str = "pending";
pub const PUBLISHED: &str = "published";
pub const PARKED: &str = "parked";

/// The index the relay's query walks.
pub fn indexes() -> Vec<IndexSpec> {
    vec![IndexSpec::new(OUTBOX, &["status", "created"])]
}

/// What one relay pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RelayReport {
    /// Pending events old enough for the relay that this pass looked at.
    pub due: usize,
    pub published: usize,
    /// Refused this pass and left pending for the next (fewer than the maximum attempts).
    pub refused: usize,
    /// Refused for the last time this pass: now `parked`.
    pub parked: usize,
    /// Set when the broker could not be reached: the pass stopped there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

impl RelayReport {
    /// One line for a log or an invocation's answer.
    pub fn summary(&self) -> String {
        if self.due == 0 {
            return "outbox relay: nothing pending".into();
        }
        let mut line = format!(
            "outbox relay: {} due, {} published, {} refused, {} parked",
            self.due, self.published, self.refused, self.parked
        );
        if let Some(why) = &self.stopped {
            line.push_str(&format!("; stopped: {why}"));
        }
        line
    }
}

/// The AMQP message of an outbox event: its CloudEvent body, and as headers the ids it
/// carries (request id, correlation id, Idempotency-Key, traceparent), those it has.
pub fn message(id: &str, routing_key: &str, body: Vec<u8>, ids: [Option<&str>; 4]) -> OutgoingMessage {
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

/// Marks a published event; `false` when it was no longer pending (another relay won).
pub async fn mark_published(documents: &DocumentStore, id: &str) -> Result<bool, StoreError> {
    let set = json!({"status": PUBLISHED, "published_at": now_ms()});
    documents.update(OUTBOX, id, vec![Cond::eq("status", PENDING)], object(set)).await
}

/// One pass: publishes the pending events older than [`RELAY_GRACE`], oldest first.
/// `function` names the caller in the `OutboxParked` metric.
pub async fn relay(
    documents: &DocumentStore,
    bus: &EventBus,
    exchange: &str,
    function: &str,
) -> Result<RelayReport, StoreError> {
    let cutoff = now_ms() - RELAY_GRACE.as_millis() as i64;
    let query = Query::new()
        .filter(Cond::eq("status", PENDING))
        .filter(Cond::new("created", Op::Lte, cutoff))
        .sort("created", Order::Asc)
        .limit(PASS_LIMIT);
    let pending = documents.find(OUTBOX, &query).await?;
    let mut report = RelayReport { due: pending.len(), ..RelayReport::default() };
    let mut parked_ids = Vec::new();
    for doc in pending {
        let Some((id, message)) = stored_message(&doc) else {
            // Not an event this code wrote: parking it keeps it from being read every pass.
            let id = text(&doc, "_id").unwrap_or_default();
            park(documents, &id, 0, "the outbox record has no routing key or body").await?;
            report.parked += 1;
            parked_ids.push(id);
            continue;
        };
        match bus.publish(exchange, &message).await {
            Ok(()) => {
                if let Err(e) = mark_published(documents, &id).await {
                    // Published but not marked: the next pass publishes it again, same id.
                    tracing::warn!(error = %e, event = %id, "event published but outbox not updated");
                }
                report.published += 1;
            }
            Err(BusError::Unavailable(why)) => {
                report.stopped = Some(format!("broker unavailable: {why}"));
                break;
            }
            Err(refusal) => {
                let attempts = doc.get("publish_attempts").and_then(|v| v.as_i64()).unwrap_or(0) + 1;
                let reason = refusal.to_string();
                if attempts >= MAX_PUBLISH_ATTEMPTS {
                    park(documents, &id, attempts, &reason).await?;
                    tracing::error!(event = %id, attempts, %reason, "outbox event parked after repeated refusals");
                    report.parked += 1;
                    parked_ids.push(id);
                } else {
                    let set = json!({"publish_attempts": attempts, "last_error": reason});
                    documents.update(OUTBOX, &id, vec![Cond::eq("status", PENDING)], object(set)).await?;
                    tracing::warn!(event = %id, attempts, %reason, "broker refused an outbox event; retried next pass");
                    report.refused += 1;
                }
            }
        }
    }
    if report.parked > 0 {
        emit(
            function,
            &[],
            &[Measure::count("OutboxParked", report.parked as u64)],
            &[("event_ids", json!(parked_ids))],
        );
    }
    if report.published > 0 || report.parked > 0 || report.stopped.is_some() {
        tracing::info!(due = report.due, published = report.published, parked = report.parked, "{}", report.summary());
    }
    Ok(report)
}

/// The stored body, byte for byte (a re-published event is the same event), with the ids
/// it was written with.
fn stored_message(doc: &Document) -> Option<(String, OutgoingMessage)> {
    let (id, routing_key, body) = (text(doc, "_id")?, text(doc, "routing_key")?, text(doc, "body")?);
    let stored = ["request_id", "correlation_id", "idempotency_key", "traceparent"].map(|k| text(doc, k));
    let message = message(&id, &routing_key, body.into_bytes(), stored.each_ref().map(Option::as_deref));
    Some((id, message))
}

async fn park(documents: &DocumentStore, id: &str, attempts: i64, reason: &str) -> Result<(), StoreError> {
    let set = json!({"status": PARKED, "publish_attempts": attempts, "parked_reason": reason, "parked_at": now_ms()});
    documents.update(OUTBOX, id, vec![Cond::eq("status", PENDING)], object(set)).await.map(|_| ())
}

fn text(doc: &Document, key: &str) -> Option<String> {
    doc.get(key).and_then(|v| v.as_str()).map(str::to_string)
}

fn object(value: serde_json::Value) -> Document {
    value.as_object().cloned().unwrap_or_default()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
