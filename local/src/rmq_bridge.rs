//! RabbitMQ → notifier bridge: consumes the notify queue and hands each delivery to the
//! notifier as the `aws:rmq` event Amazon MQ's event source mapping would send.

use crate::stack::Observation;
use aws_lambda_events::event::rabbitmq::{RabbitMqBasicProperties, RabbitMqEvent, RabbitMqMessage};
use aws_lambda_events::event::sqs::SqsEvent;
use base64::Engine;
use settle_notify::Notifier;
use settle_shared::ports::delay_queue::DelayQueue;
use settle_shared::ports::events::Delivery;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::broadcast;

/// The event for one delivery. Amazon MQ keys messages by `queue::vhost` and sends
/// string headers as `{"bytes": [...]}`; bodies are base64.
pub fn to_rmq_event(queue: &str, delivery: &Delivery) -> RabbitMqEvent {
    let mut properties = RabbitMqBasicProperties::<serde_json::Value>::default();
    properties.content_type = delivery.content_type.clone();
    properties.delivery_mode = delivery.delivery_mode.unwrap_or(1);
    properties.message_id = delivery.message_id.clone();
    properties.timestamp = delivery.timestamp.map(|t| {
        chrono::DateTime::from_timestamp(i64::try_from(t).unwrap_or(0), 0)
            .unwrap_or_default()
            .format("%b %-d, %Y, %-I:%M:%S %p")
            .to_string()
    });
    properties.body_size = delivery.body.len() as u64;
    properties.headers =
        delivery.headers.iter().map(|(k, v)| (k.clone(), serde_json::json!({ "bytes": v.as_bytes() }))).collect();
    let mut message = RabbitMqMessage::default();
    message.basic_properties = properties;
    message.data = Some(base64::engine::general_purpose::STANDARD.encode(&delivery.body));
    message.redelivered = delivery.redelivered;
    let mut event = RabbitMqEvent::default();
    event.event_source = Some("aws:rmq".into());
    event.event_source_arn = Some("arn:aws:mq:local:000000000000:broker:settle-local:b-local".into());
    event.messages_by_queue = HashMap::from([(format!("{queue}::/"), vec![message])]);
    event
}

/// Feeds the webhook retry queue to the notifier as the SQS event source mapping would:
/// batches of up to 10, each message deleted once handled, failed ones left to reappear
/// after their visibility timeout.
pub async fn run_retries(notifier: Notifier, queue: DelayQueue) {
    loop {
        let messages = match queue.receive(10, Duration::from_secs(1)).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "retry feed: cannot poll the retry queue; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let records: Vec<serde_json::Value> = messages
            .iter()
            .map(|m| {
                serde_json::json!({
                    "messageId": m.message_id, "receiptHandle": m.receipt, "body": m.body,
                    "attributes": {"ApproximateReceiveCount": m.receive_count.to_string()},
                    "messageAttributes": {}, "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:settle-webhook-retries", "awsRegion": "us-east-1",
                })
            })
            .collect();
        let event: SqsEvent = match serde_json::from_value(serde_json::json!({ "Records": records })) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "retry feed: could not build the SQS event");
                continue;
            }
        };
        let response = crate::invocation(settle_notify::FUNCTION, notifier.handle_retries(event)).await;
        let failed: Vec<String> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
        for m in messages.iter().filter(|m| !failed.contains(&m.message_id)) {
            queue.delete(&m.receipt).await.ok();
        }
    }
}

/// Runs until the subscription ends. A delivery is acked once the notifier has handled
/// it; if the notifier fails the whole invocation (a store is down), the message goes
/// back to the queue after a pause, as the event source mapping would retry it.
pub async fn run(
    notifier: Notifier,
    queue: String,
    observations: broadcast::Sender<Observation>,
) -> anyhow::Result<()> {
    let bus = notifier.backends().bus.clone();
    loop {
        let mut subscription = match bus.subscribe(&queue, 10).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "notify bridge: cannot consume {queue}; retrying in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        while let Some(next) = subscription.next().await {
            let delivery = match next {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "notify bridge: delivery failed");
                    break;
                }
            };
            let event = to_rmq_event(&queue, &delivery);
            match crate::invocation(settle_notify::FUNCTION, notifier.handle_batch(event.clone())).await {
                Ok(report) => {
                    delivery.ack().await.ok();
                    // No receiver just means nobody is watching.
                    let _ = observations.send(Observation::Notify { event, report });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "notifier failed; message requeued");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    delivery.reject(true).await.ok();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
