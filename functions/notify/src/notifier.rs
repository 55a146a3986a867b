//! The notifier and what it does with an `aws:rmq` batch: each message decoded, its event
//! fanned out to the merchant's endpoints, and a message whose handling fails held on the
//! retry queue so that it fails alone.

use crate::delivery::{doc, from_doc, now_ms, to_doc, DeliveryRecord};
use crate::message::{amqp_header, decode, HeldMessage};
use crate::outcome::{BatchReport, DeliveryOutcome, MessageOutcome, NotifyError};
use crate::spans::event_span;
use crate::{deliver, FUNCTION};
use aws_lambda_events::event::rabbitmq::{RabbitMqEvent, RabbitMqMessage};
use futures_util::future::join_all;
use serde_json::json;
use settle_shared::config::{vars, ConfigError, WebhookSettings};
use settle_shared::domain::event::CloudEvent;
use settle_shared::ports::delay_queue::{DelayQueue, SqsQueue};
use settle_shared::ports::documents::{Cond, Query, StoreError};
use settle_shared::ports::events::TRACEPARENT;
use settle_shared::webhooks::{delivery_id, DeliveryStatus, EndpointRecord, SecretBox, UrlPolicy};
use settle_shared::webhooks::{DEAD_LETTERS, DELIVERIES, ENDPOINTS};
use settle_shared::{Backends, Config};
use std::time::Duration;
use tracing::Instrument;

/// How long a held message waits on the retry queue when the schedule has no retries.
pub const HOLD_FOR: Duration = Duration::from_secs(30);

/// The notifier with its dependencies, built once per cold start.
#[derive(Clone)]
pub struct Notifier {
    pub(crate) backends: Backends,
    pub(crate) http: reqwest::Client,
    pub(crate) sealer: SecretBox,
    pub(crate) settings: WebhookSettings,
    pub(crate) policy: UrlPolicy,
    pub(crate) retry_queue: DelayQueue,
    pub(crate) dead_letter_queue: Option<DelayQueue>,
    /// Set once this instance has declared the outbox index the relay walks.
    outbox_indexed: std::sync::Arc<tokio::sync::OnceCell<()>>,
}

impl Notifier {
    /// Needs `SETTLE_WEBHOOK_MASTER_KEY` and a retry queue (`SETTLE_RETRY_QUEUE_URL`).
    pub fn new(config: &Config, backends: Backends) -> anyhow::Result<Self> {
        let missing = |name| ConfigError::Missing { name };
        let master = config.webhook_master_key.clone().ok_or_else(|| missing(vars::WEBHOOK_MASTER_KEY))?;
        let retry_queue = backends.retry_queue.clone().ok_or_else(|| missing(vars::RETRY_QUEUE_URL))?;
        let dead_letter_queue = match (&config.webhooks.dlq_url, &backends.sdk) {
            (Some(url), Some(sdk)) => Some(DelayQueue::Sqs(SqsQueue::new(sdk, url))),
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
        let mut deliveries = Vec::new();
        if let Some(merchant) = &event.merchantid {
            let endpoints = self.endpoints_for(merchant, &event.event_type).await?;
            let body = String::from_utf8_lossy(&event.to_json()).into_owned();
            let started = join_all(endpoints.iter().map(|e| self.start(&event, &body, e))).await;
            deliveries = started.into_iter().collect::<Result<Vec<_>, _>>()?;
            tracing::info!(event_id = %event.id, event_type = %event.event_type, endpoints = deliveries.len(), "event fanned out");
        }
        Ok(MessageOutcome::Accepted {
            event_id: event.id,
            event_type: event.event_type,
            merchant_id: event.merchantid,
            deliveries,
        })
    }

    /// The merchant's enabled endpoints that take this event type.
    async fn endpoints_for(&self, merchant: &str, event_type: &str) -> Result<Vec<EndpointRecord>, NotifyError> {
        let query = Query::new().filter(Cond::eq("merchant_id", merchant)).filter(Cond::eq("enabled", true)).limit(100);
        let found = self.backends.documents.find(ENDPOINTS, &query).await?;
        Ok(found
            .into_iter()
            .filter_map(|d| from_doc::<EndpointRecord>(d).ok())
            .filter(|e| e.wants(event_type))
            .collect())
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
            status: DeliveryStatus::Pending,
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
                // Seen before (a broker redelivery): carried on only if it stalled.
                let existing: DeliveryRecord = match self.backends.documents.get(DELIVERIES, &record.id).await? {
                    Some(d) => from_doc(d)?,
                    None => return Ok(DeliveryOutcome::skipped(&endpoint.id, "delivery vanished")),
                };
                if existing.stalled(now, self.settings.timeout) {
                    self.attempt_with(&existing, endpoint.clone(), existing.attempts + 1, false).await
                } else {
                    Ok(DeliveryOutcome::skipped(&endpoint.id, "already delivered or in progress"))
                }
            }
            Err(e) => Err(e.into()),
        }
    }
}
