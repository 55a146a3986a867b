//! The local stack: runs Settle's three functions on this machine, fed by the same event
//! shapes AWS gives them: the Payment API router on HTTP, the notifier from a RabbitMQ
//! consumer that builds `aws:rmq` events, csv-ingest from S3 `ObjectCreated` events.

pub mod dev_keys;
pub mod emulator;
pub mod load;
pub mod rmq_bridge;
pub mod s3_feed;
pub mod sample_events;
pub mod stack;
pub mod tap;
pub mod tools;

pub use stack::{LocalStack, Observation, StackOptions};

/// Runs one invocation of an event-triggered function as Lambda would: a request id of
/// its own, the cold-start metric, the invocation span, its spans exported at the end.
pub async fn invocation<T>(function: &str, work: impl std::future::Future<Output = T>) -> T {
    let request_id = uuid::Uuid::new_v4().to_string();
    settle_shared::telemetry::invocation(function, &request_id, None, work).await
}
