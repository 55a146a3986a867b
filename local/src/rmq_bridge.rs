//! RabbitMQ → notifier bridge: consumes the notify queue and hands each delivery to the
//! notifier as the `aws:rmq` event Amazon MQ's event source mapping would send.

use crate::stack::Observation;
use aws_lambda_events::event::rabbitmq::{RabbitMqBasicProperties, RabbitMqEvent, RabbitMqMessage};
use base64::Engine;
use settle_notify::Notifier;
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
            match notifier.handle_batch(event.clone()).await {
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
