//! Following an event tap (see `EventBus::declare_tap`): every event the exchange carries,
//! handed to a callback, with each message acknowledged after it. The load test and the
//! fault suite count events through it.

use serde_json::Value;
use settle_shared::ports::events::EventBus;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Consumes `queue` until the task is aborted, subscribing again after a broker outage.
/// `on_event` gets each event's JSON and whether the broker marked it redelivered (its
/// earlier ack was lost), which a counter of publishes must not take for a second one.
pub fn follow(bus: EventBus, queue: String, on_event: impl FnMut(&Value, bool) + Send + 'static) -> JoinHandle<()> {
    let on_event = Arc::new(Mutex::new(on_event));
    tokio::spawn(async move {
        loop {
            // Each subscription in a task of its own: should the client panic as the broker
            // goes away, the tap subscribes again instead of going quiet, and says so.
            let (bus, name, on_event) = (bus.clone(), queue.clone(), on_event.clone());
            let consumed = tokio::spawn(async move {
                if let Ok(mut sub) = bus.subscribe(&name, 500).await {
                    while let Some(Ok(delivery)) = sub.next().await {
                        let event: Value = serde_json::from_slice(&delivery.body).unwrap_or_default();
                        (on_event.lock().unwrap_or_else(PoisonError::into_inner))(&event, delivery.redelivered);
                        let _ = delivery.ack().await;
                    }
                }
            });
            if let Err(e) = consumed.await {
                eprintln!("tap: the consumer of {queue} panicked ({e}); subscribing again");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}
