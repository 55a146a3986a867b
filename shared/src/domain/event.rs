//! The CloudEvents 1.0 envelope every Settle event travels in (structured JSON mode).
//! Spec: <https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/spec.md>

use super::ids::EventId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Every event type Settle publishes (routing key = type); webhook endpoints filter on them.
pub const EVENT_TYPES: &[&str] = &[
    "payment.succeeded",
    "payment.failed",
    "payment.requires_action",
    "payment.canceled",
    "payment.captured",
    "refund.succeeded",
    "refund.failed",
    "settlement.ingested",
    "settlement.mismatch",
    "endpoint.disabled",
];

/// The CloudEvents media type for structured-mode JSON.
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

/// One Settle event. The routing key on the exchange is `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub time: DateTime<Utc>,
    #[serde(default = "default_content_type")]
    pub datacontenttype: String,
    /// Extension attribute: the merchant the event belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchantid: Option<String>,
    /// Extension attribute: the correlation id of the request that caused the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlationid: Option<String>,
    /// Extension attribute: the `Idempotency-Key` of the request that caused the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotencykey: Option<String>,
    /// Extension attribute: the request id of the request that caused the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requestid: Option<String>,
    /// Extension attribute (CloudEvents Distributed Tracing): the W3C trace context of the
    /// span that caused the event, so that its consumers continue that trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Extension attribute: the event's position among its subject's events (1, 2, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<i64>,
    pub data: serde_json::Value,
}

fn default_content_type() -> String {
    "application/json".to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("not a CloudEvents JSON object: {0}")]
    NotJson(String),
    #[error("unsupported specversion {0:?} (expected \"1.0\")")]
    UnsupportedVersion(String),
    #[error("attribute `{0}` must not be empty")]
    EmptyAttribute(&'static str),
}

impl CloudEvent {
    pub fn new(event_type: &str, source: &str, data: serde_json::Value) -> Self {
        CloudEvent {
            specversion: "1.0".to_string(),
            id: EventId::generate().to_string(),
            source: source.to_string(),
            event_type: event_type.to_string(),
            subject: None,
            time: Utc::now(),
            datacontenttype: default_content_type(),
            merchantid: None,
            correlationid: None,
            idempotencykey: None,
            requestid: None,
            traceparent: None,
            sequence: None,
            data,
        }
    }

    /// Parses and checks the required attributes, so that a malformed message is
    /// recognised as such (and dead-lettered) rather than half-processed.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EventError> {
        let event: CloudEvent = serde_json::from_slice(bytes).map_err(|e| EventError::NotJson(e.to_string()))?;
        if event.specversion != "1.0" {
            return Err(EventError::UnsupportedVersion(event.specversion));
        }
        for (name, value) in [("id", &event.id), ("source", &event.source), ("type", &event.event_type)] {
            if value.trim().is_empty() {
                return Err(EventError::EmptyAttribute(name));
            }
        }
        Ok(event)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serialising a struct of strings, a timestamp and a Value cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_checks_required_attributes() {
        let mut event = CloudEvent::new("payment.succeeded", "/settle/payment", serde_json::json!({"amount": 100}));
        event.merchantid = Some("m_1".into());
        let parsed = CloudEvent::from_json(&event.to_json()).unwrap();
        assert_eq!(parsed, event);
        assert!(event.id.starts_with("evt_"));

        let wrong_version =
            br#"{"specversion":"0.3","id":"1","source":"s","type":"t","time":"2026-01-01T00:00:00Z","data":{}}"#;
        assert_eq!(CloudEvent::from_json(wrong_version), Err(EventError::UnsupportedVersion("0.3".into())));
        let empty_type =
            br#"{"specversion":"1.0","id":"1","source":"s","type":" ","time":"2026-01-01T00:00:00Z","data":{}}"#;
        assert_eq!(CloudEvent::from_json(empty_type), Err(EventError::EmptyAttribute("type")));
        assert!(matches!(CloudEvent::from_json(b"not json"), Err(EventError::NotJson(_))));
    }
}
