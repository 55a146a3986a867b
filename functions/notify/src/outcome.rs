//! What the notifier reports: the outcome of each message and delivery of an invocation,
//! and the faults that fail an invocation as a whole.

use serde::Serialize;
use settle_shared::ports::documents::StoreError;

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum MessageOutcome {
    /// A Settle event, fanned out to the merchant's matching endpoints.
    Accepted { event_id: String, event_type: String, merchant_id: Option<String>, deliveries: Vec<DeliveryOutcome> },
    /// Not a Settle event: dead-lettered with its reason, never retried.
    Malformed { reason: String },
    /// Its handling failed (a store error): the message was put on the retry queue and is
    /// handled again from there, while the rest of its batch stands.
    Held { reason: String },
}

/// What became of one delivery attempt (or why none was made).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DeliveryOutcome {
    Delivered {
        endpoint_id: String,
        attempt: u32,
        status: u16,
    },
    /// Failed; the next attempt is on the retry queue.
    Retrying {
        endpoint_id: String,
        attempt: u32,
        next_in_ms: u64,
    },
    /// The schedule is spent: dead-lettered.
    Dead {
        endpoint_id: String,
        attempt: u32,
    },
    /// 410 Gone, or failing for too long: the endpoint was disabled.
    Disabled {
        endpoint_id: String,
        attempt: u32,
    },
    /// Already made (a duplicate broker delivery), or the endpoint is gone or disabled.
    Skipped {
        endpoint_id: String,
        reason: String,
    },
}

impl DeliveryOutcome {
    pub(crate) fn skipped(endpoint_id: &str, reason: &str) -> Self {
        DeliveryOutcome::Skipped { endpoint_id: endpoint_id.to_string(), reason: reason.to_string() }
    }
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

/// A fault that would hit every message (a store is down): the invocation fails so that
/// the event source delivers the batch again.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("dependency unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for NotifyError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => NotifyError::Unavailable(format!("MongoDB: {m}")),
            other => NotifyError::Internal(other.to_string()),
        }
    }
}

impl From<NotifyError> for lambda_runtime::Diagnostic {
    fn from(e: NotifyError) -> Self {
        let error_type = match e {
            NotifyError::Unavailable(_) => "Settle.DependencyUnavailable",
            NotifyError::Internal(_) => "Settle.Internal",
        };
        lambda_runtime::Diagnostic { error_type: error_type.into(), error_message: e.to_string() }
    }
}
