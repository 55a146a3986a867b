//! Admin routes (admin role, and a client address inside `SETTLE_ADMIN_CIDRS`):
//! session revocation.

use crate::error::ApiError;
use crate::guard::{require_admin, Caller};
use crate::input::Input;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use settle_shared::auth::Role;

/// Exactly one of: a token (`jti` and its `exp`), a `subject`, or a `role`. For subject
/// and role, every token issued before `before` (unix seconds, default now) is revoked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revoke {
    #[serde(default)]
    jti: Option<String>,
    #[serde(default, deserialize_with = "crate::input::lenient_opt_int")]
    expires_at: Option<i64>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    role: Option<Role>,
    #[serde(default, deserialize_with = "crate::input::lenient_opt_int")]
    before: Option<i64>,
}

pub async fn revoke(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    input: Input,
) -> Result<Response, ApiError> {
    require_admin(&state, &caller)?;
    let r: Revoke = input.parse()?;
    let now = chrono::Utc::now().timestamp();
    let before = r.before.unwrap_or(now + 1);
    let revocations = &state.auth.revocations;
    let store_error = |e: settle_shared::ports::kv::KvError| {
        tracing::warn!(error = %e, "revocation store unavailable");
        ApiError::Unavailable("the revocation store (Redis)")
    };
    let text_ok = |s: &str| (1..=256).contains(&s.len()) && !s.chars().any(char::is_control);
    match (r.jti, r.subject, r.role) {
        (Some(jti), None, None) => {
            if !text_ok(&jti) {
                return Err(ApiError::field("jti", "1 to 256 printable characters"));
            }
            let longest = now + state.config.jwt_max_lifetime.as_secs() as i64 + 60;
            let expires_at = r.expires_at.unwrap_or(longest);
            if !(now..=longest).contains(&expires_at) {
                return Err(ApiError::field("expires_at", "must be between now and now + the longest token lifetime"));
            }
            revocations.revoke_token(&jti, expires_at).await.map_err(store_error)?;
        }
        (None, Some(subject), None) => {
            if !text_ok(&subject) {
                return Err(ApiError::field("subject", "1 to 256 printable characters"));
            }
            revocations.revoke_subject_before(&subject, before).await.map_err(store_error)?;
        }
        (None, None, Some(role)) => revocations.revoke_role_before(role, before).await.map_err(store_error)?,
        _ => return Err(ApiError::field("body", "give exactly one of jti, subject or role")),
    }
    Ok((StatusCode::CREATED, Json(serde_json::json!({"revoked": true, "before": before}))).into_response())
}
