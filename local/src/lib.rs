//! The local stack: runs Settle's three functions on this machine, fed by the same event
//! shapes AWS gives them: the Payment API router on HTTP, the notifier from a RabbitMQ
//! consumer that builds `aws:rmq` events, csv-ingest from S3 `ObjectCreated` events.

pub mod dev_keys;
pub mod load;
pub mod rmq_bridge;
pub mod s3_feed;
pub mod sample_events;
pub mod stack;
pub mod tap;
pub mod tools;

pub use stack::{LocalStack, Observation, StackOptions};
