//! The delivery record: one event for one endpoint, stored in `webhook_deliveries`, and
//! what its state says about the next attempt.

use crate::outcome::NotifyError;
use serde::{Deserialize, Serialize};
use settle_shared::ports::documents::Document;
use settle_shared::webhooks::DeliveryStatus;
use std::time::Duration;

/// A delivery: one event for one endpoint, with the event's body kept for retries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryRecord {
    #[serde(rename = "_id")]
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub endpoint_id: String,
    pub merchant_id: String,
    pub body: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_at: Option<i64>,
    pub created: i64,
    pub updated: i64,
    /// The ids of the request that caused the event, to find its deliveries by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// How long after its due time a scheduled retry that never came counts as lost.
const RETRY_GRACE_MS: i64 = 60_000;
/// How much longer than the attempt timeout an attempt may take to be recorded.
const RECORDING_GRACE_MS: i64 = 30_000;

impl DeliveryRecord {
    /// Whether a delivery found again (a broker redelivery of its event) was left
    /// half-way, e.g. by a crash between recording it and attempting it, and must be
    /// carried on. `Pending` is also the state of an attempt in flight right now (a
    /// duplicate in the same batch): only one older than any attempt can take has stalled.
    pub fn stalled(&self, now: i64, attempt_timeout: Duration) -> bool {
        let attempt_bound = attempt_timeout.as_millis() as i64 + RECORDING_GRACE_MS;
        match self.status {
            DeliveryStatus::Pending => self.updated + attempt_bound < now,
            DeliveryStatus::Retrying => self.next_retry_at.is_none_or(|t| t + RETRY_GRACE_MS < now),
            _ => false,
        }
    }

    /// Whether attempt `attempt` was already made (the retry message is a duplicate). An
    /// operator's resend is always made.
    pub fn already_attempted(&self, attempt: u32, resend: bool) -> bool {
        let finished = matches!(self.status, DeliveryStatus::Delivered | DeliveryStatus::Dead);
        !resend && (finished || self.attempts >= attempt)
    }
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(crate) fn doc(value: serde_json::Value) -> Document {
    value.as_object().cloned().unwrap_or_default()
}

pub(crate) fn to_doc<T: Serialize>(value: &T) -> Document {
    doc(serde_json::to_value(value).unwrap_or_default())
}

pub(crate) fn from_doc<T: for<'de> Deserialize<'de>>(d: Document) -> Result<T, NotifyError> {
    serde_json::from_value(serde_json::Value::Object(d))
        .map_err(|e| NotifyError::Internal(format!("stored record unreadable: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: DeliveryStatus, attempts: u32, updated: i64, next_retry_at: Option<i64>) -> DeliveryRecord {
        DeliveryRecord {
            id: "dlv".into(),
            event_id: "evt".into(),
            event_type: "payment.succeeded".into(),
            endpoint_id: "we".into(),
            merchant_id: "m".into(),
            body: "{}".into(),
            status,
            attempts,
            next_retry_at,
            created: 0,
            updated,
            request_id: None,
            correlation_id: None,
            idempotency_key: None,
        }
    }

    #[test]
    fn only_a_delivery_left_half_way_has_stalled() {
        let timeout = Duration::from_secs(10);
        let now = 1_000_000;
        // In flight for less than the attempt timeout and its grace: another worker's.
        assert!(!record(DeliveryStatus::Pending, 0, now - 39_000, None).stalled(now, timeout));
        assert!(record(DeliveryStatus::Pending, 0, now - 41_000, None).stalled(now, timeout));
        // A retry that is due within the grace is on its way; one long past due was lost.
        assert!(!record(DeliveryStatus::Retrying, 1, 0, Some(now - 59_000)).stalled(now, timeout));
        assert!(record(DeliveryStatus::Retrying, 1, 0, Some(now - 61_000)).stalled(now, timeout));
        assert!(record(DeliveryStatus::Retrying, 1, 0, None).stalled(now, timeout));
        for settled in [DeliveryStatus::Delivered, DeliveryStatus::Dead, DeliveryStatus::Gone, DeliveryStatus::Skipped]
        {
            assert!(!record(settled, 1, 0, None).stalled(now, timeout), "{settled:?}");
        }
    }

    #[test]
    fn a_duplicate_retry_message_is_not_attempted_twice() {
        let retrying = record(DeliveryStatus::Retrying, 2, 0, Some(0));
        assert!(retrying.already_attempted(2, false));
        assert!(!retrying.already_attempted(3, false));
        assert!(record(DeliveryStatus::Delivered, 1, 0, None).already_attempted(5, false));
        assert!(record(DeliveryStatus::Dead, 4, 0, None).already_attempted(5, false));
        // An operator's resend of a delivered or dead delivery is made.
        assert!(!record(DeliveryStatus::Delivered, 1, 0, None).already_attempted(2, true));
    }
}
