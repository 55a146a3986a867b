//! Settle's notifier: turns Settle events from Amazon MQ for RabbitMQ (the `aws:rmq`
//! Lambda event, or the local stack's bridge which builds the same shape) into signed
//! Standard Webhooks deliveries to merchants' endpoints, retried through an SQS queue
//! (the same function consumes it), dead-lettered when the schedule is spent. Each
//! message and each delivery is handled on its own: one bad message or one hanging
//! endpoint never fails or delays the others.

pub mod deliver;
pub mod retry_schedule;
pub mod topology;

use aws_lambda_events::event::rabbitmq::{RabbitMqEvent, RabbitMqMessage};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use base64::Engine;
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::json;
use settle_shared::config::WebhookSettings;
use settle_shared::domain::event::{CloudEvent, CLOUDEVENTS_JSON};
use settle_shared::otel::{self, TraceContext};
use settle_shared::ports::delay_queue::DelayQueue;
use settle_shared::ports::documents::{Cond, Document, Query, StoreError};
use settle_shared::ports::events::{OutgoingMessage, TRACEPARENT};
use settle_shared::webhook_signature::signature_header;
use settle_shared::webhooks::{
    check_url, delivery_id, EndpointRecord, RetryMessage, SecretBox, UrlPolicy, ATTEMPTS, DEAD_LETTERS, DELIVERIES,
    ENDPOINTS,
};
use settle_shared::{Backends, Config};
use std::time::Duration;
use tracing::field::Empty;
use tracing::Instrument;

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum MessageOutcome {
    /// A Settle event, fanned out to the merchant's matching endpoints.
    Accepted { event_id: String, event_type: String, merchant_id: Option<String>, deliveries: Vec<DeliveryOutcome> },
    /// Not a Settle event: dead-lettered with its reason, never retried.
    Malformed { reason: String },
    /// Its handling failed (a store error): the message was put on the retry queue and is
    /// handled again from there, while the rest of its batch stands.
    Held { reason: String },
}

/// What became of one delivery attempt (or why none was made).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DeliveryOutcome {
    Delivered {
        endpoint_id: String,
        attempt: u32,
        status: u16,
    },
    /// Failed; the next attempt is on the retry queue.
    Retrying {
        endpoint_id: String,
        attempt: u32,
        next_in_ms: u64,
    },
    /// The schedule is spent: dead-lettered.
    Dead {
        endpoint_id: String,
        attempt: u32,
    },
    /// 410 Gone, or failing for too long: the endpoint was disabled.
    Disabled {
        endpoint_id: String,
        attempt: u32,
    },
    /// Already made (a duplicate broker delivery), or the endpoint is gone or disabled.
    Skipped {
        endpoint_id: String,
        reason: String,
    },
}

/// The outcome of every message of one invocation, in event order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct BatchReport {
    pub outcomes: Vec<(String, MessageOutcome)>,
}

impl BatchReport {
    pub fn accepted(&self) -> usize {
        self.outcomes.iter().filter(|(_, o)| matches!(o, MessageOutcome::Accepted { .. })).count()
    }
}

/// A fault that would hit every message (a store is down): the invocation fails so that
/// the event source delivers the batch again.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("dependency unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for NotifyError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => NotifyError::Unavailable(format!("MongoDB: {m}")),
            other => NotifyError::Internal(other.to_string()),
        }
    }
}

impl From<NotifyError> for lambda_runtime::Diagnostic {
    fn from(e: NotifyError) -> Self {
        let error_type = match e {
            NotifyError::Unavailable(_) => "Settle.DependencyUnavailable",
            NotifyError::Internal(_) => "Settle.Internal",
        };
        lambda_runtime::Diagnostic { error_type: error_type.into(), error_message: e.to_string() }
    }
}

/// A delivery: one event for one endpoint, with the event's body kept for retries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryRecord {
    #[serde(rename = "_id")]
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub endpoint_id: String,
    pub merchant_id: String,
    pub body: String,
    /// pending | delivered | retrying | dead | gone | skipped
    pub status: String,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_at: Option<i64>,
    pub created: i64,
    pub updated: i64,
    /// The ids of the request that caused the event, to find its deliveries by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn doc(value: serde_json::Value) -> Document {
    value.as_object().cloned().unwrap_or_default()
}

fn to_doc<T: Serialize>(value: &T) -> Document {
    doc(serde_json::to_value(value).unwrap_or_default())
}

fn from_doc<T: for<'de> Deserialize<'de>>(d: Document) -> Result<T, NotifyError> {
    serde_json::from_value(serde_json::Value::Object(d))
        .map_err(|e| NotifyError::Internal(format!("stored record unreadable: {e}")))
}

/// The notifier with its dependencies, built once per cold start.
#[derive(Clone)]
pub struct Notifier {
    backends: Backends,
    http: reqwest::Client,
    sealer: SecretBox,
    settings: WebhookSettings,
    policy: UrlPolicy,
    retry_queue: DelayQueue,
    dead_letter_queue: Option<DelayQueue>,
    /// Set once this instance has declared the outbox index the relay walks.
    outbox_indexed: std::sync::Arc<tokio::sync::OnceCell<()>>,
}

impl Notifier {
    /// Needs `SETTLE_WEBHOOK_MASTER_KEY` and a retry queue (`SETTLE_RETRY_QUEUE_URL`).
    pub fn new(config: &Config, backends: Backends) -> anyhow::Result<Self> {
        let master = config
            .webhook_master_key
            .clone()
            .ok_or_else(|| anyhow::anyhow!("configuration: SETTLE_WEBHOOK_MASTER_KEY is required but not set"))?;
        let retry_queue = backends
            .retry_queue
            .clone()
            .ok_or_else(|| anyhow::anyhow!("configuration: SETTLE_RETRY_QUEUE_URL is required but not set"))?;
        let dead_letter_queue = match (&config.webhooks.dlq_url, &backends.sdk) {
            (Some(url), Some(sdk)) => Some(DelayQueue::Sqs(settle_shared::ports::delay_queue::SqsQueue::new(sdk, url))),
            _ => None,
        };
        let policy = UrlPolicy { allow_private: config.webhooks.allow_private };
        Ok(Notifier {
            http: deliver::client(policy, config.webhooks.timeout)?,
            sealer: SecretBox::new(&master),
            settings: config.webhooks.clone(),
            policy,
            retry_queue,
            dead_letter_queue,
            backends,
            outbox_indexed: Default::default(),
        })
    }

    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// One pass of the outbox relay (the notifier hosts it on an EventBridge schedule).
    pub async fn relay_outbox(&self) -> Result<settle_shared::outbox::RelayReport, NotifyError> {
        let b = &self.backends;
        // The index the relay walks, once per instance (the Payment API declares it too,
        // but the schedule may run first in a new deployment).
        let indexes = settle_shared::outbox::indexes();
        self.outbox_indexed.get_or_try_init(|| b.documents.ensure_indexes(&indexes)).await?;
        Ok(settle_shared::outbox::relay(&b.documents, &b.bus, &b.topology.exchange, FUNCTION).await?)
    }

    /// Handles one `aws:rmq` event: every message of every queue, each on its own.
    /// Amazon MQ has no partial batch response: a message whose handling fails (a store
    /// error) is put on the retry queue and handled again from there, so that it fails
    /// alone. Only when that too fails does the invocation fail, and the broker delivers
    /// the batch again (its other messages' deliveries are not sent twice: one delivery
    /// per event and endpoint).
    pub async fn handle_batch(&self, event: RabbitMqEvent) -> Result<BatchReport, NotifyError> {
        let mut report = BatchReport::default();
        for (queue, messages) in event.messages_by_queue {
            let handled = join_all(messages.iter().map(|m| self.handle_message(&queue, m))).await;
            for (message, outcome) in messages.iter().zip(handled) {
                let outcome = match outcome {
                    Ok(outcome) => outcome,
                    Err(e) => self.hold(&queue, message, e).await?,
                };
                report.outcomes.push((queue.clone(), outcome));
            }
        }
        Ok(report)
    }

    /// Puts a message whose handling failed on the retry queue, due after the schedule's
    /// first wait (`SETTLE_WEBHOOK_RETRY_SCHEDULE`).
    async fn hold(
        &self,
        queue: &str,
        message: &RabbitMqMessage,
        error: NotifyError,
    ) -> Result<MessageOutcome, NotifyError> {
        tracing::warn!(%queue, error = %error, "message failed; held on the retry queue, the rest of the batch stands");
        let held = HeldMessage { held_message: message.clone(), queue: queue.to_string() };
        let body = serde_json::to_string(&held).map_err(|e| NotifyError::Internal(e.to_string()))?;
        self.retry_queue
            .send(&body, self.settings.retry_schedule.first().copied().unwrap_or(HOLD_FOR))
            .await
            .map_err(|e| NotifyError::Unavailable(format!("{error}; and the retry queue: {e}")))?;
        Ok(MessageOutcome::Held { reason: error.to_string() })
    }

    /// Handles one message in the event's span (see [`event_span`]).
    pub async fn handle_message(&self, queue: &str, message: &RabbitMqMessage) -> Result<MessageOutcome, NotifyError> {
        let event = match decode(message) {
            Ok(event) => event,
            Err(reason) => {
                tracing::warn!(%queue, %reason, "malformed message dead-lettered");
                let excerpt: String = message.data.as_deref().unwrap_or_default().chars().take(512).collect();
                let letter = json!({"_id": uuid::Uuid::new_v4().to_string(), "kind": "malformed_message", "reason": reason,
                    "queue": queue, "data_excerpt": excerpt, "at": now_ms()});
                self.backends.documents.insert(DEAD_LETTERS, doc(letter)).await?;
                return Ok(MessageOutcome::Malformed { reason });
            }
        };
        let span = event_span(&event, amqp_header(message, TRACEPARENT).as_deref());
        self.fan_out(event).instrument(span).await
    }

    /// Starts one delivery per matching endpoint of the event's merchant.
    async fn fan_out(&self, event: CloudEvent) -> Result<MessageOutcome, NotifyError> {
        let Some(merchant) = event.merchantid.clone() else {
            return Ok(MessageOutcome::Accepted {
                event_id: event.id,
                event_type: event.event_type,
                merchant_id: None,
                deliveries: Vec::new(),
            });
        };
        let query = Query::new()
            .filter(Cond::eq("merchant_id", merchant.as_str()))
            .filter(Cond::eq("enabled", true))
            .limit(100);
        let endpoints: Vec<EndpointRecord> = self
            .backends
            .documents
            .find(ENDPOINTS, &query)
            .await?
            .into_iter()
            .filter_map(|d| from_doc::<EndpointRecord>(d).ok())
            .filter(|e| e.wants(&event.event_type))
            .collect();
        let body = String::from_utf8_lossy(&event.to_json()).into_owned();
        let deliveries = join_all(endpoints.iter().map(|e| self.start(&event, &body, e))).await;
        let deliveries = deliveries.into_iter().collect::<Result<Vec<_>, _>>()?;
        tracing::info!(event_id = %event.id, event_type = %event.event_type, endpoints = deliveries.len(), "event fanned out");
        Ok(MessageOutcome::Accepted {
            event_id: event.id,
            event_type: event.event_type,
            merchant_id: Some(merchant),
            deliveries,
        })
    }

    /// Records the delivery (once per event and endpoint, whatever the duplicates) and
    /// makes the first attempt.
    async fn start(
        &self,
        event: &CloudEvent,
        body: &str,
        endpoint: &EndpointRecord,
    ) -> Result<DeliveryOutcome, NotifyError> {
        let now = now_ms();
        let record = DeliveryRecord {
            id: delivery_id(&event.id, &endpoint.id),
            event_id: event.id.clone(),
            event_type: event.event_type.clone(),
            endpoint_id: endpoint.id.clone(),
            merchant_id: endpoint.merchant_id.clone(),
            body: body.to_string(),
            status: "pending".into(),
            attempts: 0,
            next_retry_at: None,
            created: now,
            updated: now,
            request_id: event.requestid.clone(),
            correlation_id: event.correlationid.clone(),
            idempotency_key: event.idempotencykey.clone(),
        };
        match self.backends.documents.insert(DELIVERIES, to_doc(&record)).await {
            // Both records are in hand: no need to read them back.
            Ok(()) => self.attempt_with(&record, endpoint.clone(), 1, false).await,
            Err(StoreError::Duplicate { .. }) => {
                // Seen before (a broker redelivery). Carry on only if that first try never
                // got as far as an attempt or a scheduled retry, e.g. it crashed in between.
                let skipped =
                    |reason: &str| DeliveryOutcome::Skipped { endpoint_id: endpoint.id.clone(), reason: reason.into() };
                let existing: DeliveryRecord = match self.backends.documents.get(DELIVERIES, &record.id).await? {
                    Some(d) => from_doc(d)?,
                    None => return Ok(skipped("delivery vanished")),
                };
                // "pending" is also the state of an attempt in flight right now (a duplicate in
                // the same batch): only one older than any attempt can take has stalled.
                let attempt_bound = self.settings.timeout.as_millis() as i64 + 30_000;
                let stalled = match existing.status.as_str() {
                    "pending" => existing.updated + attempt_bound < now,
                    "retrying" => existing.next_retry_at.is_none_or(|t| t + 60_000 < now),
                    _ => false,
                };
                if stalled {
                    self.attempt_with(&existing, endpoint.clone(), existing.attempts + 1, false).await
                } else {
                    Ok(skipped("already delivered or in progress"))
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Makes attempt `attempt` of a delivery and decides what follows.
    pub async fn attempt(&self, delivery_id: &str, attempt: u32, resend: bool) -> Result<DeliveryOutcome, NotifyError> {
        let docs = &self.backends.documents;
        let Some(d) = docs.get(DELIVERIES, delivery_id).await? else {
            return Ok(DeliveryOutcome::Skipped { endpoint_id: String::new(), reason: "no such delivery".into() });
        };
        let delivery: DeliveryRecord = from_doc(d)?;
        delivery.record_ids(&tracing::Span::current());
        let skipped = |reason: &str| DeliveryOutcome::Skipped {
            endpoint_id: delivery.endpoint_id.clone(),
            reason: reason.into(),
        };
        if !resend && (delivery.status == "delivered" || delivery.status == "dead" || delivery.attempts >= attempt) {
            // A duplicate of a retry message already acted on.
            return Ok(skipped("attempt already made"));
        }
        let Some(e) = docs.get(ENDPOINTS, &delivery.endpoint_id).await? else {
            self.set_delivery(&delivery, "skipped", attempt, None).await?;
            return Ok(skipped("endpoint deleted"));
        };
        self.attempt_with(&delivery, from_doc(e)?, attempt, resend).await
    }

    async fn attempt_with(
        &self,
        delivery: &DeliveryRecord,
        endpoint: EndpointRecord,
        attempt: u32,
        resend: bool,
    ) -> Result<DeliveryOutcome, NotifyError> {
        let docs = &self.backends.documents;
        let skipped = |reason: &str| DeliveryOutcome::Skipped {
            endpoint_id: delivery.endpoint_id.clone(),
            reason: reason.into(),
        };
        if !endpoint.enabled {
            self.set_delivery(delivery, "skipped", attempt, None).await?;
            return Ok(skipped("endpoint disabled"));
        }

        let now = now_ms();
        let result = match check_url(&endpoint.url, self.policy).await {
            Err(e) => deliver::AttemptResult {
                status: None,
                duration: Duration::ZERO,
                excerpt: String::new(),
                error: Some(format!("URL refused: {e}")),
                retry_after: None,
            },
            Ok(_) => {
                let secrets: Vec<_> = endpoint
                    .secrets
                    .iter()
                    .filter(|s| s.expires_at.is_none_or(|t| t > now))
                    .filter_map(|s| self.sealer.open(&s.sealed).ok())
                    .collect();
                let exposed: Vec<&str> = secrets.iter().map(|s| s.expose()).collect();
                let timestamp = now / 1000;
                match signature_header(&exposed, &delivery.event_id, timestamp, delivery.body.as_bytes()) {
                    Ok(signature) => {
                        deliver::post(
                            &self.http,
                            &endpoint.url,
                            &delivery.event_id,
                            timestamp,
                            &signature,
                            delivery.body.as_bytes(),
                        )
                        .await
                    }
                    Err(e) => deliver::AttemptResult {
                        status: None,
                        duration: Duration::ZERO,
                        excerpt: String::new(),
                        error: Some(format!("signing failed: {e}")),
                        retry_after: None,
                    },
                }
            }
        };

        let endpoint_id = endpoint.id.clone();
        let (outcome, next_retry_at) = if result.delivered() {
            if endpoint.failing_since.is_some() {
                let set = doc(json!({"failing_since": null, "updated": now}));
                docs.update(ENDPOINTS, &endpoint.id, vec![], set).await?;
            }
            self.set_delivery(delivery, "delivered", attempt, None).await?;
            (DeliveryOutcome::Delivered { endpoint_id, attempt, status: result.status.unwrap_or(200) }, None)
        } else if result.gone() {
            self.disable(&endpoint, "the endpoint answered 410 Gone").await?;
            self.set_delivery(delivery, "gone", attempt, None).await?;
            (DeliveryOutcome::Disabled { endpoint_id, attempt }, None)
        } else {
            let failing_since = endpoint.failing_since.unwrap_or(now);
            if endpoint.failing_since.is_none() {
                docs.update(ENDPOINTS, &endpoint.id, vec![], doc(json!({"failing_since": now, "updated": now})))
                    .await?;
            }
            let failing_for = Duration::from_millis(u64::try_from(now - failing_since).unwrap_or(0));
            if failing_for >= self.settings.disable_after {
                self.disable(&endpoint, "every delivery failed for the configured period").await?;
                self.dead_letter(delivery, attempt, &result).await?;
                (DeliveryOutcome::Disabled { endpoint_id, attempt }, None)
            } else {
                match retry_schedule::next_delay(&self.settings.retry_schedule, attempt + 1, result.retry_after) {
                    Some(delay) if !resend => {
                        let due_at = now + delay.as_millis() as i64;
                        self.schedule(&delivery.id, attempt + 1, due_at).await?;
                        self.set_delivery(delivery, "retrying", attempt, Some(due_at)).await?;
                        (
                            DeliveryOutcome::Retrying { endpoint_id, attempt, next_in_ms: delay.as_millis() as u64 },
                            Some(due_at),
                        )
                    }
                    _ => {
                        self.dead_letter(delivery, attempt, &result).await?;
                        (DeliveryOutcome::Dead { endpoint_id, attempt }, None)
                    }
                }
            }
        };
        let log = json!({
            "_id": uuid::Uuid::new_v4().to_string(),
            "delivery_id": delivery.id, "endpoint_id": delivery.endpoint_id, "event_id": delivery.event_id,
            "merchant_id": delivery.merchant_id, "attempt": attempt, "resend": resend, "at": now,
            "request_id": delivery.request_id, "correlation_id": delivery.correlation_id,
            "idempotency_key": delivery.idempotency_key,
            "status_code": result.status, "duration_ms": result.duration.as_millis() as i64,
            "response_excerpt": result.excerpt, "error": result.error, "next_retry_at": next_retry_at,
        });
        docs.insert(ATTEMPTS, doc(log)).await?;
        record_delivery(&outcome, result.duration, &delivery.event_id);
        Ok(outcome)
    }

    async fn set_delivery(
        &self,
        d: &DeliveryRecord,
        status: &str,
        attempts: u32,
        next_retry_at: Option<i64>,
    ) -> Result<(), NotifyError> {
        let set =
            doc(json!({"status": status, "attempts": attempts, "next_retry_at": next_retry_at, "updated": now_ms()}));
        self.backends.documents.update(DELIVERIES, &d.id, vec![], set).await?;
        Ok(())
    }

    /// Puts the next attempt on the retry queue; SQS delays at most 15 minutes, so a
    /// longer wait is re-enqueued on receipt until it is due.
    async fn schedule(&self, delivery_id: &str, attempt: u32, due_at: i64) -> Result<(), NotifyError> {
        let message = RetryMessage {
            delivery_id: delivery_id.to_string(),
            attempt,
            due_at,
            resend: false,
            traceparent: otel::traceparent(),
        };
        let body = serde_json::to_string(&message).map_err(|e| NotifyError::Internal(e.to_string()))?;
        let delay = Duration::from_millis(u64::try_from(due_at - now_ms()).unwrap_or(0));
        self.retry_queue.send(&body, delay).await.map_err(|e| NotifyError::Unavailable(format!("retry queue: {e}")))?;
        Ok(())
    }

    async fn dead_letter(
        &self,
        d: &DeliveryRecord,
        attempt: u32,
        result: &deliver::AttemptResult,
    ) -> Result<(), NotifyError> {
        self.set_delivery(d, "dead", attempt, None).await?;
        let letter = json!({"_id": uuid::Uuid::new_v4().to_string(), "kind": "delivery", "delivery_id": d.id,
            "endpoint_id": d.endpoint_id, "event_id": d.event_id, "merchant_id": d.merchant_id, "attempts": attempt,
            "last_status": result.status, "last_error": result.error, "at": now_ms()});
        self.backends.documents.insert(DEAD_LETTERS, doc(letter.clone())).await?;
        if let Some(dlq) = &self.dead_letter_queue {
            if let Err(e) = dlq.send(&letter.to_string(), Duration::ZERO).await {
                tracing::warn!(error = %e, "could not copy the dead letter to the SQS DLQ");
            }
        }
        Ok(())
    }

    /// Disables an endpoint and tells the merchant with an `endpoint.disabled` event.
    async fn disable(&self, endpoint: &EndpointRecord, reason: &str) -> Result<(), NotifyError> {
        let set = doc(json!({"enabled": false, "disabled_reason": reason, "updated": now_ms()}));
        self.backends.documents.update(ENDPOINTS, &endpoint.id, vec![Cond::eq("enabled", true)], set).await?;
        let mut event = CloudEvent::new(
            "endpoint.disabled",
            "/settle/notify",
            json!({"endpoint_id": endpoint.id, "url": endpoint.url, "reason": reason}),
        );
        event.subject = Some(endpoint.id.clone());
        event.merchantid = Some(endpoint.merchant_id.clone());
        event.traceparent = otel::traceparent();
        let message = OutgoingMessage {
            routing_key: event.event_type.clone(),
            message_id: event.id.clone(),
            content_type: CLOUDEVENTS_JSON.into(),
            headers: Default::default(),
            body: event.to_json(),
        };
        if let Err(e) = self.backends.bus.publish(&self.backends.topology.exchange, &message).await {
            tracing::warn!(error = %e, endpoint = %endpoint.id, "endpoint disabled; its event could not be published");
        }
        tracing::warn!(endpoint = %endpoint.id, %reason, "webhook endpoint disabled");
        Ok(())
    }

    /// Handles the retry queue's SQS event; failed items are reported for redelivery.
    pub async fn handle_retries(&self, event: SqsEvent) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        for record in event.records {
            let id = record.message_id.clone().unwrap_or_default();
            let body = record.body.as_deref().unwrap_or("");
            if let Ok(held) = serde_json::from_str::<HeldMessage>(body) {
                // A broker message held after a failure: handled again; failing again, it
                // stays on the queue (and reaches its dead-letter queue after five receives).
                if let Err(e) = self.handle_message(&held.queue, &held.held_message).await {
                    tracing::warn!(error = %e, message_id = %id, "held message failed again");
                    let mut failure = BatchItemFailure::default();
                    failure.item_identifier = id;
                    response.batch_item_failures.push(failure);
                }
                continue;
            }
            let ok = match serde_json::from_str::<RetryMessage>(body) {
                Err(e) => {
                    // Never retried: it would fail the same way every time.
                    tracing::warn!(error = %e, message_id = %id, "unreadable retry message dropped");
                    true
                }
                Ok(m) => {
                    let span = retry_span(&m);
                    let handled = self.handle_retry(&m).instrument(span.clone()).await;
                    span.in_scope(|| handled.map_err(|e| tracing::warn!(error = %e, "retry failed")).is_ok())
                }
            };
            if !ok {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
        }
        response
    }

    pub async fn handle_retry(&self, message: &RetryMessage) -> Result<Option<DeliveryOutcome>, NotifyError> {
        let remaining = message.due_at - now_ms();
        if remaining <= 0 {
            // How late past its due time the retry queue handed this attempt over.
            let lag = Duration::from_millis(remaining.unsigned_abs());
            settle_shared::metrics::emit(
                FUNCTION,
                &[],
                &[settle_shared::metrics::Measure {
                    name: "RetryQueueLag",
                    value: lag.as_secs_f64() * 1000.0,
                    unit: settle_shared::metrics::Unit::Milliseconds,
                }],
                &[("delivery_id", json!(message.delivery_id))],
            );
        }
        if remaining > 1000 {
            // Not due yet (waits longer than SQS's 15-minute maximum): back on the queue.
            self.schedule(&message.delivery_id, message.attempt, message.due_at).await?;
            return Ok(None);
        }
        self.attempt(&message.delivery_id, message.attempt, message.resend).await.map(Some)
    }
}

/// EMF: `Deliveries` by `Outcome`, the attempt number it took (`DeliveryAttempt`) and how
/// long the receiver took (`DeliveryDuration`).
fn record_delivery(outcome: &DeliveryOutcome, duration: Duration, event_id: &str) {
    use settle_shared::metrics::{emit, Measure, Unit};
    let (name, attempt) = match outcome {
        DeliveryOutcome::Delivered { attempt, .. } => ("delivered", *attempt),
        DeliveryOutcome::Retrying { attempt, .. } => ("retrying", *attempt),
        DeliveryOutcome::Dead { attempt, .. } => ("dead", *attempt),
        DeliveryOutcome::Disabled { attempt, .. } => ("disabled", *attempt),
        DeliveryOutcome::Skipped { .. } => return,
    };
    emit(
        FUNCTION,
        &[("Outcome", name)],
        &[
            Measure::count("Deliveries", 1),
            Measure { name: "DeliveryAttempt", value: f64::from(attempt), unit: Unit::Count },
            Measure { name: "DeliveryDuration", value: duration.as_secs_f64() * 1000.0, unit: Unit::Milliseconds },
        ],
        &[("event_id", json!(event_id))],
    );
}

/// The function's name in metrics and invocation spans (stable across deployments).
pub const FUNCTION: &str = "notify";

/// How long a held message waits on the retry queue when the schedule has no retries.
pub const HOLD_FOR: Duration = Duration::from_secs(30);

/// A broker message on the retry queue (see [`Notifier::handle_batch`]).
#[derive(Debug, Serialize, Deserialize)]
struct HeldMessage {
    queue: String,
    held_message: RabbitMqMessage,
}

/// One invocation: the `aws:rmq` event from Amazon MQ, the retry queue's SQS event
/// (answered with a partial batch response), the EventBridge schedule that runs the
/// outbox relay, or the CloudFormation custom resource that declares the broker topology.
pub async fn dispatch(notifier: &Notifier, payload: serde_json::Value) -> Result<serde_json::Value, NotifyError> {
    let bad = |e: serde_json::Error| NotifyError::Internal(format!("unrecognised event: {e}"));
    if topology::is_custom_resource(&payload) {
        let backends = &notifier.backends;
        let timeout = notifier.settings.timeout;
        return match topology::handle(&backends.bus, &backends.topology, payload, timeout).await {
            Ok(answer) => serde_json::to_value(answer).map_err(bad),
            Err(e) => Err(NotifyError::Internal(e.to_string())),
        };
    }
    if payload.get("source").and_then(|v| v.as_str()) == Some("aws.events") {
        let detail_type = payload.get("detail-type").and_then(|v| v.as_str()).unwrap_or_default();
        if detail_type != "Scheduled Event" {
            return Err(NotifyError::Internal(format!(
                "unrecognised EventBridge event '{detail_type}': only the scheduled outbox relay is handled"
            )));
        }
        let report = notifier.relay_outbox().await?;
        let mut answer = serde_json::to_value(&report).map_err(bad)?;
        answer["summary"] = json!(report.summary());
        return Ok(answer);
    }
    if payload.get("rmqMessagesByQueue").is_some() {
        let event: RabbitMqEvent = serde_json::from_value(payload).map_err(bad)?;
        let report = notifier.handle_batch(event).await?;
        return serde_json::to_value(report).map_err(bad);
    }
    let from_sqs = payload["Records"][0]["eventSource"].as_str() == Some("aws:sqs");
    if from_sqs {
        let event: SqsEvent = serde_json::from_value(payload).map_err(bad)?;
        return serde_json::to_value(notifier.handle_retries(event).await).map_err(bad);
    }
    Err(NotifyError::Internal(
        "unrecognised event: not aws:rmq, aws:sqs, a scheduled EventBridge event or a CloudFormation request".into(),
    ))
}

/// The span one event is handled in. It carries the ids of the request that caused the
/// event, so that every log line about it is found by them; with tracing on, it continues
/// the trace of the span that published it (the AMQP header, else the CloudEvents
/// extension, which survives a message re-published by hand).
pub fn event_span(event: &CloudEvent, header_traceparent: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!(
        "event",
        event_id = %event.id,
        event_type = %event.event_type,
        request_id = Empty,
        correlation_id = Empty,
        idempotency_key = Empty,
    );
    record_ids(&span, [&event.requestid, &event.correlationid, &event.idempotencykey]);
    if otel::enabled() {
        let parent = [header_traceparent, event.traceparent.as_deref()]
            .into_iter()
            .flatten()
            .find_map(TraceContext::from_traceparent);
        if let Some(parent) = parent {
            otel::set_parent(&span, parent);
        }
        otel::describe(&span, format!("process {}", event.event_type), otel::SpanKind::Consumer);
    }
    span
}

/// The span of one retry attempt: a child of the span that scheduled it.
fn retry_span(message: &RetryMessage) -> tracing::Span {
    let span = tracing::info_span!(
        "retry",
        delivery_id = %message.delivery_id,
        attempt = message.attempt,
        request_id = Empty,
        correlation_id = Empty,
        idempotency_key = Empty,
    );
    if otel::enabled() {
        if let Some(parent) = message.traceparent.as_deref().and_then(TraceContext::from_traceparent) {
            otel::set_parent(&span, parent);
        }
        otel::describe(&span, "webhook retry", otel::SpanKind::Consumer);
    }
    span
}

/// Records the request's ids on a span declared with them (empty).
fn record_ids(span: &tracing::Span, [request_id, correlation_id, idempotency_key]: [&Option<String>; 3]) {
    for (field, value) in
        [("request_id", request_id), ("correlation_id", correlation_id), ("idempotency_key", idempotency_key)]
    {
        if let Some(value) = value {
            span.record(field, value.as_str());
        }
    }
}

impl DeliveryRecord {
    /// Puts the delivery's request ids on the retry span it is attempted in.
    fn record_ids(&self, span: &tracing::Span) {
        record_ids(span, [&self.request_id, &self.correlation_id, &self.idempotency_key]);
    }
}

/// A string header of an `aws:rmq` message: Amazon MQ sends AMQP string headers as
/// `{"bytes": [...]}`; a plain JSON string is accepted too.
pub fn amqp_header(message: &RabbitMqMessage, name: &str) -> Option<String> {
    match message.basic_properties.headers.get(name)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => {
            let bytes: Option<Vec<u8>> =
                o.get("bytes")?.as_array()?.iter().map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok())).collect();
            String::from_utf8(bytes?).ok()
        }
        _ => None,
    }
}

/// Decodes one message: base64 body (as Amazon MQ delivers it) holding a CloudEvent.
pub fn decode(message: &RabbitMqMessage) -> Result<CloudEvent, String> {
    let data = message.data.as_deref().ok_or("message has no data")?;
    let body =
        base64::engine::general_purpose::STANDARD.decode(data).map_err(|e| format!("data is not base64: {e}"))?;
    CloudEvent::from_json(&body).map_err(|e| e.to_string())
}
