//! Idempotency keys, as Stripe defines them: a POST that moves money or creates an
//! object needs an `Idempotency-Key`; a repeat with the same key and request gets the
//! stored response byte for byte (plus `Idempotent-Replayed: true`) without touching
//! MongoDB or RabbitMQ; the same key with another request is refused; concurrent
//! requests with one key execute once. Records live 24 hours in Redis. Idempotency fails
//! closed: without Redis such a POST is refused (503), since it could not be de-duplicated.
//! All of it is the middleware [`idempotent`], put on those routes by the router; the
//! handlers behind it only read the key, from the [`IdempotencyKey`] extension.

use crate::error::ApiError;
use crate::guard::Caller;
use crate::input::BODY_LIMIT;
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::future::Future;
use std::time::{Duration, Instant};

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// How long a response is kept for replay.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How long a request may hold its key; a lock left by a crashed invocation expires.
pub const LOCK_TTL: Duration = Duration::from_secs(30);
/// How long a concurrent request waits for the first one to finish before it is told
/// to retry (`409 idempotency_key_in_use`).
const WAIT_FOR_OWNER: Duration = Duration::from_secs(3);

#[derive(Serialize, Deserialize)]
struct Stored {
    fingerprint: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

/// Headers worth replaying; the rest (request id, rate-limit state) describe the replay.
const REPLAYED_HEADERS: &[&str] = &["content-type", "location", "retry-after"];

/// The validated `Idempotency-Key` of a request (1 to 255 printable ASCII characters).
pub fn key_of(headers: &HeaderMap) -> Result<String, ApiError> {
    let value = headers.get(&IDEMPOTENCY_KEY).ok_or(ApiError::IdempotencyKeyMissing)?;
    let key = value.to_str().map_err(|_| ApiError::IdempotencyKeyInvalid)?;
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(ApiError::IdempotencyKeyInvalid);
    }
    Ok(key.to_string())
}

/// JSON with every object's keys sorted, so that key order does not matter.
fn canonical(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let sorted: std::collections::BTreeMap<String, serde_json::Value> =
                map.into_iter().map(|(k, v)| (k, canonical(v))).collect();
            serde_json::Value::Object(sorted.into_iter().collect())
        }
        serde_json::Value::Array(items) => serde_json::Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}

/// What makes two requests "the same": method, path and body (JSON compared by value, so
/// key order and white space do not matter). Keyed: a body may hold a card number, and a
/// plain hash of one is brute-forced in seconds.
fn fingerprint(key: &[u8], method: &Method, path: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let canonical = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json::to_string(&canonical(v)).ok())
        .map(String::into_bytes)
        .unwrap_or_else(|| body.to_vec());
    let mut h = Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    h.update(method.as_str().as_bytes());
    h.update(&[0]);
    h.update(path.as_bytes());
    h.update(&[0]);
    h.update(&canonical);
    hex::encode(h.finalize().into_bytes())
}

/// The request's validated `Idempotency-Key`, for the handlers that record it (on events,
/// on refunds). Put there by [`idempotent`].
#[derive(Clone, Debug)]
pub struct IdempotencyKey(pub String);

/// Middleware on the routes that need a key (the POSTs that move money or create an
/// object): the handler behind it runs at most once per (merchant or subject, key), and
/// never sees the rest. The body is read here, bounded as `Input` bounds it, so that it is
/// part of what makes two requests the same.
pub async fn idempotent(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return ApiError::PayloadTooLarge { limit: BODY_LIMIT }.into_response();
    };
    // The path as the handlers' extractors decode it, which is what earlier records hold.
    let path = percent_encoding::percent_decode_str(parts.uri.path()).decode_utf8_lossy().into_owned();
    let request = Idempotent { method: parts.method.clone(), path, body: body.clone() };
    let headers = parts.headers.clone();
    let result = run(&state, &caller, &headers, &request, |key| async move {
        parts.extensions.insert(IdempotencyKey(key));
        Ok(next.run(Request::from_parts(parts, Body::from(body))).await)
    })
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// What makes two requests with one key the same request.
struct Idempotent {
    method: Method,
    path: String,
    body: Bytes,
}

/// Where a request stands with its key, decided from what Redis holds: the explicit
/// state machine of one idempotent request.
enum NextAction {
    /// A response is stored: answer it again (if the request is the same).
    ReturnSavedResponse(Vec<u8>),
    /// This request holds the key's lock (`owner`): execute, then save the response.
    StartProcessing { owner: String },
}

/// Looks the key up, then takes its lock, waiting up to [`WAIT_FOR_OWNER`] for another
/// request holding it to finish and leave its response.
async fn next_action(
    kv: &settle_shared::ports::kv::KeyValueStore,
    record_key: &str,
    lock_key: &str,
) -> Result<NextAction, ApiError> {
    let unavailable = |e: settle_shared::ports::kv::KvError| {
        tracing::warn!(error = %e, "idempotency store unavailable; failing closed");
        ApiError::Unavailable("the idempotency store (Redis)")
    };
    if let Some(stored) = kv.get(record_key).await.map_err(unavailable)? {
        return Ok(NextAction::ReturnSavedResponse(stored));
    }
    let owner = uuid::Uuid::new_v4().to_string();
    let deadline = Instant::now() + WAIT_FOR_OWNER;
    while !kv.set_if_absent(lock_key, owner.as_bytes(), LOCK_TTL).await.map_err(unavailable)? {
        // Someone else holds the key: wait for their response to replay it.
        tokio::time::sleep(Duration::from_millis(25)).await;
        if let Some(stored) = kv.get(record_key).await.map_err(unavailable)? {
            return Ok(NextAction::ReturnSavedResponse(stored));
        }
        if Instant::now() >= deadline {
            return Err(ApiError::IdempotencyKeyInUse);
        }
    }
    // Between our first look and taking the lock, the previous owner may have finished.
    if let Some(stored) = kv.get(record_key).await.map_err(unavailable)? {
        kv.delete_if_equals(lock_key, owner.as_bytes()).await.ok();
        return Ok(NextAction::ReturnSavedResponse(stored));
    }
    Ok(NextAction::StartProcessing { owner })
}

/// Runs `execute` at most once per (merchant or subject, key).
async fn run<F, Fut>(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    request: &Idempotent,
    execute: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<Response, ApiError>>,
{
    let key = key_of(headers)?;
    let scope = caller
        .principal
        .merchant_id
        .as_ref()
        .map_or_else(|| format!("sub:{}", caller.principal.subject), |m| m.to_string());
    let hashed = hex::encode(Sha256::digest(format!("{scope}\0{key}").as_bytes()));
    let record_key = format!("{}idem:{hashed}", state.config.redis_prefix);
    let lock_key = format!("{}idem-lock:{hashed}", state.config.redis_prefix);
    let fp = fingerprint(state.fingerprint_key.expose().as_bytes(), &request.method, &request.path, &request.body);
    let kv = &state.backends.kv;
    let owner = match next_action(kv, &record_key, &lock_key).await? {
        NextAction::ReturnSavedResponse(stored) => return replay(state, &stored, &fp, &key),
        NextAction::StartProcessing { owner } => owner,
    };

    let response = match execute(key).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.map_err(|e| ApiError::Internal(e.into()))?;
    // 5xx are not stored: the request may be retried with the same key.
    if !parts.status.is_server_error() {
        let stored = Stored {
            fingerprint: fp,
            status: parts.status.as_u16(),
            headers: parts
                .headers
                .iter()
                .filter(|(n, _)| REPLAYED_HEADERS.contains(&n.as_str()))
                .filter_map(|(n, v)| Some((n.to_string(), v.to_str().ok()?.to_string())))
                .collect(),
            // Sealed: a response may carry a webhook signing secret.
            body: state.secret_box.seal(&base64::engine::general_purpose::STANDARD.encode(&bytes)),
        };
        let encoded = serde_json::to_vec(&stored).map_err(|e| ApiError::Internal(e.into()))?;
        if let Err(e) = kv.set(&record_key, &encoded, Some(RETENTION)).await {
            // The change is committed; only the replay record is missing. Keep the lock
            // until it expires so that a quick retry waits rather than executes again.
            tracing::error!(error = %e, "idempotency record not stored");
            return Ok(Response::from_parts(parts, Body::from(bytes)));
        }
    }
    kv.delete_if_equals(&lock_key, owner.as_bytes()).await.ok();
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

fn replay(state: &AppState, stored: &[u8], fingerprint: &str, key: &str) -> Result<Response, ApiError> {
    let stored: Stored = serde_json::from_slice(stored).map_err(|e| ApiError::Internal(e.into()))?;
    if stored.fingerprint != fingerprint {
        return Err(ApiError::IdempotencyKeyReused);
    }
    crate::metrics::count("IdempotentReplays", &[], &[("idempotency_key", serde_json::json!(key))]);
    let opened = state.secret_box.open(&stored.body).map_err(|e| ApiError::Internal(e.into()))?;
    let body =
        base64::engine::general_purpose::STANDARD.decode(opened.expose()).map_err(|e| ApiError::Internal(e.into()))?;
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    for (name, value) in &stored.headers {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name.as_str()), HeaderValue::from_str(value)) {
            response.headers_mut().insert(n, v);
        }
    }
    response.headers_mut().insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    if !response.headers().contains_key(header::CONTENT_TYPE) {
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    Ok(response)
}
