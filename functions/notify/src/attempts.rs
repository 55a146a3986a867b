//! Delivery attempts: sign and post, let the policy decide (`policy::decide`), then carry
//! out its decision on the delivery, the endpoint and the retry queue, and log the attempt.

use crate::deliver::{self, AttemptResult};
use crate::delivery::{doc, from_doc, now_ms, DeliveryRecord};
use crate::message::HeldMessage;
use crate::outcome::{DeliveryOutcome, NotifyError};
use crate::policy::{self, Attempted, Decision, Streak, Verdict};
use crate::spans::retry_span;
use crate::{retry_schedule, Notifier, FUNCTION};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use serde_json::json;
use settle_shared::domain::event::{CloudEvent, CLOUDEVENTS_JSON};
use settle_shared::otel;
use settle_shared::ports::documents::Cond;
use settle_shared::ports::events::OutgoingMessage;
use settle_shared::webhook_signature::signature_header;
use settle_shared::webhooks::{check_url, DeliveryStatus, EndpointRecord, RetryMessage};
use settle_shared::webhooks::{ATTEMPTS, DEAD_LETTERS, DELIVERIES, ENDPOINTS};
use std::time::Duration;
use tracing::Instrument;

impl Notifier {
    /// Makes attempt `attempt` of a delivery and decides what follows.
    pub async fn attempt(&self, delivery_id: &str, attempt: u32, resend: bool) -> Result<DeliveryOutcome, NotifyError> {
        let docs = &self.backends.documents;
        let Some(d) = docs.get(DELIVERIES, delivery_id).await? else {
            return Ok(DeliveryOutcome::skipped("", "no such delivery"));
        };
        let delivery: DeliveryRecord = from_doc(d)?;
        delivery.record_ids(&tracing::Span::current());
        if delivery.already_attempted(attempt, resend) {
            // A duplicate of a retry message already acted on.
            return Ok(DeliveryOutcome::skipped(&delivery.endpoint_id, "attempt already made"));
        }
        let Some(e) = docs.get(ENDPOINTS, &delivery.endpoint_id).await? else {
            self.set_delivery(&delivery, DeliveryStatus::Skipped, attempt, None).await?;
            return Ok(DeliveryOutcome::skipped(&delivery.endpoint_id, "endpoint deleted"));
        };
        self.attempt_with(&delivery, from_doc(e)?, attempt, resend).await
    }

    pub(crate) async fn attempt_with(
        &self,
        delivery: &DeliveryRecord,
        endpoint: EndpointRecord,
        attempt: u32,
        resend: bool,
    ) -> Result<DeliveryOutcome, NotifyError> {
        if !endpoint.enabled {
            self.set_delivery(delivery, DeliveryStatus::Skipped, attempt, None).await?;
            return Ok(DeliveryOutcome::skipped(&delivery.endpoint_id, "endpoint disabled"));
        }
        let now = now_ms();
        let result = self.sign_and_post(delivery, &endpoint, now).await;
        let attempted = Attempted { number: attempt, resend, result: &result };
        let decision = policy::decide(&attempted, &endpoint, now, &self.settings, retry_schedule::jitter());
        let (outcome, next_retry_at) = self.carry_out(decision, delivery, &endpoint, &attempted, now).await?;
        let log = json!({
            "_id": uuid::Uuid::new_v4().to_string(),
            "delivery_id": delivery.id, "endpoint_id": delivery.endpoint_id, "event_id": delivery.event_id,
            "merchant_id": delivery.merchant_id, "attempt": attempt, "resend": resend, "at": now,
            "request_id": delivery.request_id, "correlation_id": delivery.correlation_id,
            "idempotency_key": delivery.idempotency_key,
            "status_code": result.status, "duration_ms": result.duration.as_millis() as i64,
            "response_excerpt": result.excerpt, "error": result.error, "next_retry_at": next_retry_at,
        });
        self.backends.documents.insert(ATTEMPTS, doc(log)).await?;
        record_delivery(&outcome, result.duration, &delivery.event_id);
        Ok(outcome)
    }

    /// Signs the delivery with each of the endpoint's live secrets and posts it, once
    /// its URL passes the guard.
    async fn sign_and_post(&self, delivery: &DeliveryRecord, endpoint: &EndpointRecord, now: i64) -> AttemptResult {
        if let Err(e) = check_url(&endpoint.url, self.policy).await {
            return AttemptResult::refused(format!("URL refused: {e}"));
        }
        let secrets: Vec<_> = endpoint
            .secrets
            .iter()
            .filter(|s| s.expires_at.is_none_or(|t| t > now))
            .filter_map(|s| self.sealer.open(&s.sealed).ok())
            .collect();
        let exposed: Vec<&str> = secrets.iter().map(|s| s.expose()).collect();
        let timestamp = now / 1000;
        let body = delivery.body.as_bytes();
        match signature_header(&exposed, &delivery.event_id, timestamp, body) {
            Ok(signature) => {
                deliver::post(&self.http, &endpoint.url, &delivery.event_id, timestamp, &signature, body).await
            }
            Err(e) => AttemptResult::refused(format!("signing failed: {e}")),
        }
    }

    /// Carries out the policy's decision; answers the outcome and when the next attempt
    /// is due, if there is one.
    async fn carry_out(
        &self,
        decision: Decision,
        delivery: &DeliveryRecord,
        endpoint: &EndpointRecord,
        attempted: &Attempted<'_>,
        now: i64,
    ) -> Result<(DeliveryOutcome, Option<i64>), NotifyError> {
        let failing_since = match decision.streak {
            Streak::Unchanged => None,
            Streak::Starts => Some(json!(now)),
            Streak::Ends => Some(json!(null)),
        };
        if let Some(failing_since) = failing_since {
            let set = doc(json!({"failing_since": failing_since, "updated": now}));
            self.backends.documents.update(ENDPOINTS, &endpoint.id, vec![], set).await?;
        }
        if let Some(reason) = decision.verdict.disables_endpoint() {
            self.disable(endpoint, reason).await?;
        }
        let (endpoint_id, attempt) = (endpoint.id.clone(), attempted.number);
        Ok(match decision.verdict {
            Verdict::Delivered { status } => {
                self.set_delivery(delivery, DeliveryStatus::Delivered, attempt, None).await?;
                (DeliveryOutcome::Delivered { endpoint_id, attempt, status }, None)
            }
            Verdict::Gone => {
                self.set_delivery(delivery, DeliveryStatus::Gone, attempt, None).await?;
                (DeliveryOutcome::Disabled { endpoint_id, attempt }, None)
            }
            Verdict::EndpointFailing => {
                self.dead_letter(delivery, attempt, attempted.result).await?;
                (DeliveryOutcome::Disabled { endpoint_id, attempt }, None)
            }
            Verdict::Retry { delay } => {
                let due_at = now + delay.as_millis() as i64;
                self.schedule(&delivery.id, attempt + 1, due_at).await?;
                self.set_delivery(delivery, DeliveryStatus::Retrying, attempt, Some(due_at)).await?;
                let next_in_ms = delay.as_millis() as u64;
                (DeliveryOutcome::Retrying { endpoint_id, attempt, next_in_ms }, Some(due_at))
            }
            Verdict::Dead => {
                self.dead_letter(delivery, attempt, attempted.result).await?;
                (DeliveryOutcome::Dead { endpoint_id, attempt }, None)
            }
        })
    }

    async fn set_delivery(
        &self,
        d: &DeliveryRecord,
        status: DeliveryStatus,
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

    async fn dead_letter(&self, d: &DeliveryRecord, attempt: u32, result: &AttemptResult) -> Result<(), NotifyError> {
        self.set_delivery(d, DeliveryStatus::Dead, attempt, None).await?;
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
            if !self.handle_retry_record(&id, record.body.as_deref().unwrap_or("")).await {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
        }
        response
    }

    /// Handles one record of the retry queue; false leaves it on the queue.
    async fn handle_retry_record(&self, id: &str, body: &str) -> bool {
        if let Ok(held) = serde_json::from_str::<HeldMessage>(body) {
            // A broker message held after a failure: handled again; failing again, it
            // stays on the queue (and reaches its dead-letter queue after five receives).
            let handled = self.handle_message(&held.queue, &held.held_message).await;
            return handled
                .map_err(|e| tracing::warn!(error = %e, message_id = %id, "held message failed again"))
                .is_ok();
        }
        match serde_json::from_str::<RetryMessage>(body) {
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
        }
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
