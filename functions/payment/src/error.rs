//! The Payment API's one error type, mapped to RFC 9457 problem documents in exactly one
//! place (`IntoResponse`). 5xx bodies stay opaque; their cause is logged.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use settle_shared::auth::{AuthError, Role};
use settle_shared::domain::payment::PaymentStatus;
use settle_shared::ports::documents::StoreError;
use settle_shared::problem::Problem;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request field is wrong; `field` names it (`amount`, `metadata.order`, `card.number`).
    #[error("{field}: {detail}")]
    Validation { field: String, detail: String },
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    Unauthenticated(AuthError),
    #[error("this needs the {0:?} role")]
    Forbidden(Role),
    #[error("admin routes are not open to this client address")]
    AddressNotAllowed,
    #[error("admin routes are closed: SETTLE_ADMIN_CIDRS (the AdminCidrs parameter) names no client range")]
    AdminClosed,
    #[error("no such {0}")]
    NotFound(&'static str),
    /// The action is not allowed in the current state.
    #[error("{detail}")]
    InvalidState { detail: String, current: PaymentStatus },
    /// A concurrent change won; the client re-reads and tries again.
    #[error("{0}")]
    Conflict(&'static str),
    #[error("refund exceeds what remains refundable ({remaining})")]
    RefundExceedsCaptured { remaining: i64 },
    #[error("Idempotency-Key header is required on this request")]
    IdempotencyKeyMissing,
    #[error("Idempotency-Key must be 1 to 255 printable ASCII characters")]
    IdempotencyKeyInvalid,
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still being processed")]
    IdempotencyKeyInUse,
    #[error("rate limit exceeded")]
    RateLimited { retry_after_secs: u64, headers: Vec<(header::HeaderName, String)> },
    #[error("{0} is unavailable")]
    Unavailable(&'static str),
    #[error("signature verification failed: {0}")]
    BadSignature(&'static str),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn field(field: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError::Validation { field: field.into(), detail: detail.into() }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => ApiError::Unavailable("MongoDB"),
            // A conflict a handler did not resolve itself (a concurrent transaction won):
            // nothing is broken and a retry will likely pass, so a 503, never a 500.
            StoreError::Conflict(_) => ApiError::Unavailable("MongoDB (a concurrent write conflicted)"),
            other => ApiError::Internal(anyhow::anyhow!(other)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match &self {
            ApiError::Validation { field, detail } => {
                Problem::new(StatusCode::BAD_REQUEST, "validation_error", "Invalid request")
                    .with_detail(format!("{field}: {detail}"))
                    .with_field(field.clone())
            }
            ApiError::MalformedJson(_) => {
                Problem::new(StatusCode::BAD_REQUEST, "malformed_json", "Malformed JSON").with_detail(self.to_string())
            }
            ApiError::UnsupportedMediaType => {
                Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "Unsupported Media Type")
                    .with_detail(self.to_string())
            }
            ApiError::PayloadTooLarge { .. } => {
                Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "Payload Too Large")
                    .with_detail(self.to_string())
            }
            ApiError::Unauthenticated(e) => {
                let (status, kind, title) = match e {
                    AuthError::Unavailable(_) => {
                        (StatusCode::SERVICE_UNAVAILABLE, "authentication_unavailable", "Authentication Unavailable")
                    }
                    _ => (StatusCode::UNAUTHORIZED, "unauthenticated", "Unauthorized"),
                };
                let detail = match e {
                    // The store's error text stays in the log.
                    AuthError::Unavailable(_) => {
                        "token revocation cannot be checked right now; retry later".to_string()
                    }
                    other => other.to_string(),
                };
                let mut p = Problem::new(status, kind, title).with_detail(detail.clone());
                if status == StatusCode::UNAUTHORIZED {
                    let challenge = match e {
                        AuthError::Missing => r#"Bearer realm="settle""#.to_string(),
                        _ => format!(r#"Bearer realm="settle", error="invalid_token", error_description="{detail}""#),
                    };
                    p = p.with_header(header::WWW_AUTHENTICATE, &challenge);
                } else {
                    p = p.with_header(header::RETRY_AFTER, "1");
                }
                p
            }
            ApiError::Forbidden(role) => Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden")
                .with_detail(format!("this action needs the '{}' role", role.as_str()))
                .with_extension("required_role", serde_json::json!(role.as_str())),
            ApiError::AddressNotAllowed => {
                Problem::new(StatusCode::FORBIDDEN, "address_not_allowed", "Forbidden").with_detail(self.to_string())
            }
            ApiError::AdminClosed => {
                Problem::new(StatusCode::FORBIDDEN, "admin_closed", "Forbidden").with_detail(self.to_string())
            }
            ApiError::NotFound(what) => {
                Problem::new(StatusCode::NOT_FOUND, "not_found", "Not Found").with_detail(format!("no such {what}"))
            }
            ApiError::InvalidState { detail, current } => {
                Problem::new(StatusCode::CONFLICT, "invalid_state", "Invalid State")
                    .with_detail(detail.clone())
                    .with_extension("current_state", serde_json::json!(current.as_str()))
            }
            ApiError::Conflict(detail) => Problem::new(StatusCode::CONFLICT, "conflict", "Conflict")
                .with_detail(*detail)
                .with_header(header::RETRY_AFTER, "1"),
            ApiError::RefundExceedsCaptured { remaining } => {
                Problem::new(StatusCode::CONFLICT, "refund_exceeds_captured", "Refund Too Large")
                    .with_detail(self.to_string())
                    .with_field("amount")
                    .with_extension("refundable", serde_json::json!(remaining))
            }
            ApiError::IdempotencyKeyMissing | ApiError::IdempotencyKeyInvalid => {
                Problem::new(StatusCode::BAD_REQUEST, "idempotency_key_required", "Idempotency-Key Required")
                    .with_detail(self.to_string())
                    .with_field("Idempotency-Key")
            }
            ApiError::IdempotencyKeyReused => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused", "Idempotency-Key Reused")
                    .with_detail(self.to_string())
                    .with_field("Idempotency-Key")
            }
            ApiError::IdempotencyKeyInUse => {
                Problem::new(StatusCode::CONFLICT, "idempotency_key_in_use", "Idempotency-Key In Use")
                    .with_detail(self.to_string())
                    .with_header(header::RETRY_AFTER, "1")
            }
            ApiError::RateLimited { retry_after_secs, headers } => {
                let mut p = Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "Too Many Requests")
                    .with_detail(format!("rate limit exceeded; retry in {retry_after_secs} s"))
                    .with_header(header::RETRY_AFTER, &retry_after_secs.to_string());
                for (name, value) in headers {
                    p = p.with_header(name.clone(), value);
                }
                p
            }
            ApiError::Unavailable(dependency) => Problem::unavailable(dependency, 2),
            ApiError::BadSignature(_) => {
                Problem::new(StatusCode::UNAUTHORIZED, "invalid_signature", "Invalid Signature")
                    .with_detail(self.to_string())
            }
            ApiError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "internal error");
                Problem::internal()
            }
        };
        if let ApiError::Unauthenticated(AuthError::Unavailable(reason)) = &self {
            tracing::warn!(%reason, "revocation check unavailable; failing closed");
        }
        problem.into_response()
    }
}
