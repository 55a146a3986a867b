//! Following an event tap (see `EventBus::declare_tap`): every event the exchange carries,
//! handed to a callback, with each message acknowledged after it. The load test and the
//! fault suite count events through it.

use serde_json::Value;
use settle_shared::ports::events::EventBus;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Consumes `queue` until the task is aborted, subscribing again after a broker outage.
/// `on_event` gets each event's JSON and whether the broker marked it redelivered (its
/// earlier ack was lost), which a counter of publishes must not take for a second one.
pub fn follow(bus: EventBus, queue: String, mut on_event: impl FnMut(&Value, bool) + Send + 'static) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Ok(mut sub) = bus.subscribe(&queue, 500).await {
                while let Some(Ok(delivery)) = sub.next().await {
                    let event: Value = serde_json::from_slice(&delivery.body).unwrap_or_default();
                    on_event(&event, delivery.redelivered);
                    let _ = delivery.ack().await;
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}
