//! Settle's notifier: turns Settle events from Amazon MQ for RabbitMQ (the `aws:rmq`
//! Lambda event, or the local stack's bridge which builds the same shape) into signed
//! Standard Webhooks deliveries to merchants' endpoints, retried through an SQS queue
//! (the same function consumes it), dead-lettered when the schedule is spent. Each
//! message and each delivery is handled on its own: one bad message or one hanging
//! endpoint never fails or delays the others.
//!
//! Reading order: [`dispatch`] (what an invocation can be), [`notifier`] (a batch of
//! messages, fanned out), [`attempts`] (one attempt and what follows it) and [`policy`]
//! (the retry and disable decision, pure).

pub mod attempts;
pub mod deliver;
pub mod delivery;
pub mod message;
pub mod notifier;
pub mod outcome;
pub mod policy;
pub mod retry_schedule;
pub mod spans;
pub mod topology;

pub use delivery::DeliveryRecord;
pub use message::{amqp_header, decode};
pub use notifier::{Notifier, HOLD_FOR};
pub use outcome::{BatchReport, DeliveryOutcome, MessageOutcome, NotifyError};
pub use spans::event_span;

use aws_lambda_events::event::rabbitmq::RabbitMqEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use serde_json::json;

/// The function's name in metrics and invocation spans (stable across deployments).
pub const FUNCTION: &str = "notify";

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
