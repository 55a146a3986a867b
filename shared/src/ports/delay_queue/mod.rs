//! Delay-queue port (SQS): messages that become visible after a delay (webhook retries),
//! received with a visibility timeout and deleted once handled.

mod memory;
#[cfg(feature = "sqs")]
mod sqs;

pub use memory::MemoryQueue;
#[cfg(feature = "sqs")]
pub use sqs::SqsQueue;

use std::time::Duration;

/// SQS's ceiling for `DelaySeconds`; longer waits re-enqueue until due.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    #[error("queue error: {0}")]
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    pub message_id: String,
    pub body: String,
    /// Handle for [`DelayQueue::delete`]; valid for this receipt only.
    pub receipt: String,
    /// How many times the message has been received, this time included.
    pub receive_count: u32,
}

#[derive(Clone)]
pub enum DelayQueue {
    Memory(MemoryQueue),
    #[cfg(feature = "sqs")]
    Sqs(SqsQueue),
}

impl DelayQueue {
    /// Sends `body`, visible after `delay` (capped at [`MAX_DELAY`]).
    pub async fn send(&self, body: &str, delay: Duration) -> Result<String, QueueError> {
        // Whole seconds, rounded up: SQS counts in seconds and a retry must never fire early.
        let delay = Duration::from_secs(delay.as_secs() + u64::from(delay.subsec_nanos() > 0)).min(MAX_DELAY);
        if body.is_empty() || body.len() > 256 * 1024 {
            return Err(QueueError::Other("message body must be 1 byte to 256 KiB".into()));
        }
        match self {
            DelayQueue::Memory(m) => Ok(m.send(body, delay)),
            #[cfg(feature = "sqs")]
            DelayQueue::Sqs(s) => {
                crate::otel::traced(
                    crate::dependency_span!(producer: "sqs", "SendMessage", s.name()),
                    s.send(body, delay),
                )
                .await
            }
        }
    }

    /// Up to `max` visible messages, waiting at most `wait` for the first one.
    pub async fn receive(&self, max: u32, wait: Duration) -> Result<Vec<QueuedMessage>, QueueError> {
        match self {
            DelayQueue::Memory(m) => Ok(m.receive(max, wait).await),
            #[cfg(feature = "sqs")]
            DelayQueue::Sqs(s) => {
                crate::otel::traced(crate::dependency_span!("sqs", "ReceiveMessage", s.name()), s.receive(max, wait))
                    .await
            }
        }
    }

    pub async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        match self {
            DelayQueue::Memory(m) => {
                m.delete(receipt);
                Ok(())
            }
            #[cfg(feature = "sqs")]
            DelayQueue::Sqs(s) => {
                crate::otel::traced(crate::dependency_span!("sqs", "DeleteMessage", s.name()), s.delete(receipt)).await
            }
        }
    }

    pub async fn ping(&self) -> Result<(), QueueError> {
        match self {
            DelayQueue::Memory(_) => Ok(()),
            #[cfg(feature = "sqs")]
            DelayQueue::Sqs(s) => s.ping().await,
        }
    }
}
