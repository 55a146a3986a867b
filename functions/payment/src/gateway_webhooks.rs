//! `POST /v1/gateway/webhooks`: the simulated gateway's asynchronous results (a refund
//! that settled or failed later). Authenticated by HMAC-SHA256 over
//! `<timestamp>.<raw body>` with the shared `SETTLE_GATEWAY_WEBHOOK_SECRET`, the
//! timestamp within ±5 minutes, compared in constant time. The bytes checked are the
//! exact bytes received (lambda_http has already undone API Gateway's base64).
//! Each gateway event id is processed once.

use crate::error::ApiError;
use crate::outbox::Origin;
use crate::request_ids::RequestIds;
use crate::service::gateway_events::{apply_refund_result, Received, RefundResult};
use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use settle_shared::domain::payment::RefundStatus;
use sha2::Sha256;

pub const TIMESTAMP: HeaderName = HeaderName::from_static("settle-gateway-timestamp");
pub const SIGNATURE: HeaderName = HeaderName::from_static("settle-gateway-signature");
/// How far the timestamp may be from now, either way.
pub const TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayEvent {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: GatewayEventData,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayEventData {
    refund: String,
}

/// `v1=<hex>` of HMAC-SHA256(secret, "<timestamp>.<body>"), for the gateway simulator
/// and tests.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks the signature headers against the raw body.
pub fn verify(secret: &[u8], headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), ApiError> {
    let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let timestamp: i64 = text(&TIMESTAMP)
        .ok_or(ApiError::BadSignature("missing Settle-Gateway-Timestamp"))?
        .trim()
        .parse()
        .map_err(|_| ApiError::BadSignature("Settle-Gateway-Timestamp is not a unix time"))?;
    if now.abs_diff(timestamp) > TOLERANCE_SECS.unsigned_abs() {
        return Err(ApiError::BadSignature("timestamp outside the 5-minute tolerance"));
    }
    let header = text(&SIGNATURE).ok_or(ApiError::BadSignature("missing Settle-Gateway-Signature"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    // Several signatures may be sent (secret rotation); any valid one will do.
    let valid = header
        .split([',', ' '])
        .filter_map(|s| s.trim().strip_prefix("v1="))
        .any(|hex_sig| hex::decode(hex_sig).is_ok_and(|sig| mac.clone().verify_slice(&sig).is_ok()));
    if valid {
        Ok(())
    } else {
        Err(ApiError::BadSignature("no valid v1 signature"))
    }
}

pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    ids: RequestIds,
    body: Bytes,
) -> Result<Response, ApiError> {
    if body.len() > crate::input::BODY_LIMIT {
        return Err(ApiError::PayloadTooLarge { limit: crate::input::BODY_LIMIT });
    }
    state.refresh_secrets_if_due();
    verify(state.gateway_secret().expose().as_bytes(), &headers, &body, chrono::Utc::now().timestamp())?;
    let event: GatewayEvent = crate::input::parse_json(&body)?;
    if event.id.is_empty() || event.id.len() > 128 {
        return Err(ApiError::field("id", "1 to 128 characters"));
    }
    let outcome = match event.kind.as_str() {
        "refund.failed" => RefundStatus::Failed,
        "refund.succeeded" => RefundStatus::Succeeded,
        _ => return Err(ApiError::field("type", "expected refund.failed or refund.succeeded")),
    };
    let refund_id = settle_shared::domain::ids::RefundId::parse(&event.data.refund)
        .map_err(|e| ApiError::field("data.refund", e.to_string()))?;
    let origin = Origin { correlation_id: Some(event.id.clone()), ..ids.origin(None) };
    let result = RefundResult { event_id: event.id, kind: event.kind, refund: refund_id, outcome };
    let duplicate = apply_refund_result(&state, &result, &origin).await? == Received::Duplicate;
    Ok(Json(serde_json::json!({"received": true, "duplicate": duplicate})).into_response())
}
