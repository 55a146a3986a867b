//! Reading an `aws:rmq` message: its base64 body holding a CloudEvent, and its AMQP
//! headers as Amazon MQ encodes them.

use aws_lambda_events::event::rabbitmq::RabbitMqMessage;
use base64::Engine;
use serde::{Deserialize, Serialize};
use settle_shared::domain::event::CloudEvent;

/// A broker message on the retry queue (see [`Notifier::handle_batch`]).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct HeldMessage {
    pub queue: String,
    pub held_message: RabbitMqMessage,
}

/// A string header of an `aws:rmq` message: Amazon MQ sends AMQP string headers as
/// `{"bytes": [...]}`; a plain JSON string is accepted too.
pub fn amqp_header(message: &RabbitMqMessage, name: &str) -> Option<String> {
    match message.basic_properties.headers.get(name)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => {
            let bytes: Option<Vec<u8>> =
                o.get("bytes")?.as_array()?.iter().map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok())).collect();
            String::from_utf8(bytes?).ok()
        }
        _ => None,
    }
}

/// Decodes one message: base64 body (as Amazon MQ delivers it) holding a CloudEvent.
pub fn decode(message: &RabbitMqMessage) -> Result<CloudEvent, String> {
    let data = message.data.as_deref().ok_or("message has no data")?;
    let body =
        base64::engine::general_purpose::STANDARD.decode(data).map_err(|e| format!("data is not base64: {e}"))?;
    CloudEvent::from_json(&body).map_err(|e| e.to_string())
}
