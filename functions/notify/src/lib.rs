//! Settle's notifier: receives Settle events from Amazon MQ for RabbitMQ (the `aws:rmq`
//! Lambda event, or the local stack's bridge which builds the same shape) and handles each
//! message on its own, so one bad message never fails the others.

use aws_lambda_events::event::rabbitmq::{RabbitMqEvent, RabbitMqMessage};
use base64::Engine;
use serde::Serialize;
use settle_shared::domain::event::CloudEvent;
use settle_shared::Backends;

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum MessageOutcome {
    /// A well-formed Settle event, accepted for delivery.
    Accepted { event_id: String, event_type: String, merchant_id: Option<String> },
    /// Not a Settle event (bad base64, not CloudEvents JSON): never retried, reported
    /// with its reason so it can be dead-lettered.
    Malformed { reason: String },
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

/// The notifier with its dependencies, built once per cold start.
#[derive(Clone)]
pub struct Notifier {
    backends: Backends,
}

impl Notifier {
    pub fn new(backends: Backends) -> Self {
        Notifier { backends }
    }

    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// Handles one `aws:rmq` event: every message of every queue, each on its own.
    /// Amazon MQ has no partial batch response, so this only fails for a fault that
    /// would hit every message; per-message problems are outcomes, not errors.
    pub async fn handle_batch(&self, event: RabbitMqEvent) -> Result<BatchReport, lambda_runtime::Error> {
        let mut report = BatchReport::default();
        for (queue, messages) in event.messages_by_queue {
            for message in &messages {
                let outcome = handle_message(message);
                match &outcome {
                    MessageOutcome::Accepted { event_id, event_type, .. } => {
                        tracing::info!(%queue, %event_id, %event_type, "event accepted");
                    }
                    MessageOutcome::Malformed { reason } => {
                        tracing::warn!(%queue, %reason, "malformed message");
                    }
                }
                report.outcomes.push((queue.clone(), outcome));
            }
        }
        Ok(report)
    }
}

/// Decodes one message: base64 body (as Amazon MQ delivers it) holding a CloudEvent.
pub fn handle_message(message: &RabbitMqMessage) -> MessageOutcome {
    let Some(data) = message.data.as_deref() else {
        return MessageOutcome::Malformed { reason: "message has no data".into() };
    };
    let body = match base64::engine::general_purpose::STANDARD.decode(data) {
        Ok(body) => body,
        Err(e) => return MessageOutcome::Malformed { reason: format!("data is not base64: {e}") },
    };
    match CloudEvent::from_json(&body) {
        Ok(event) => {
            MessageOutcome::Accepted { event_id: event.id, event_type: event.event_type, merchant_id: event.merchantid }
        }
        Err(e) => MessageOutcome::Malformed { reason: e.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_from_fixture(data: &str) -> RabbitMqEvent {
        let mut event: RabbitMqEvent =
            serde_json::from_str(include_str!("../../../events/notify/rmq-payment-succeeded.json")).unwrap();
        for messages in event.messages_by_queue.values_mut() {
            messages.push({
                let mut m = messages[0].clone();
                m.data = Some(data.to_string());
                m
            });
        }
        event
    }

    #[tokio::test]
    async fn good_and_bad_messages_get_their_own_outcome() {
        let notifier = Notifier::new(Backends::memory(&test_config()));
        let report = notifier.handle_batch(event_from_fixture("%%% not base64")).await.unwrap();
        assert_eq!(report.outcomes.len(), 2);
        assert!(
            matches!(&report.outcomes[0].1, MessageOutcome::Accepted { event_type, .. } if event_type == "payment.succeeded")
        );
        assert!(matches!(&report.outcomes[1].1, MessageOutcome::Malformed { reason } if reason.contains("base64")));

        let not_an_event = base64::engine::general_purpose::STANDARD.encode(b"{\"hello\":1}");
        let report = notifier.handle_batch(event_from_fixture(&not_an_event)).await.unwrap();
        assert_eq!(report.accepted(), 1);
        assert!(
            matches!(&report.outcomes[1].1, MessageOutcome::Malformed { reason } if reason.contains("CloudEvents"))
        );
    }

    fn test_config() -> settle_shared::Config {
        let env = |_: &str| None;
        settle_shared::Config::load(
            &settle_shared::config::Sources { env: &env, secrets: None },
            settle_shared::config::Backend::Memory,
        )
        .unwrap()
    }
}
