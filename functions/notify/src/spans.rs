//! The spans the notifier works in: one per event, carrying the ids of the request that
//! caused it and continuing its trace, and one per retry attempt.

use crate::delivery::DeliveryRecord;
use settle_shared::domain::event::CloudEvent;
use settle_shared::otel::{self, TraceContext};
use settle_shared::webhooks::RetryMessage;
use tracing::field::Empty;

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
pub(crate) fn retry_span(message: &RetryMessage) -> tracing::Span {
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
    pub(crate) fn record_ids(&self, span: &tracing::Span) {
        record_ids(span, [&self.request_id, &self.correlation_id, &self.idempotency_key]);
    }
}
