//! Webhook endpoints, managed by their merchant (or an admin): create (the signing secret
//! is shown once), list, read, update, disable, delete, rotate the secret (the old one
//! keeps signing for 24 hours), and look at, resend or recover deliveries. Delivery
//! itself is the notifier's; resends go through the same retry queue it consumes.

use crate::error::ApiError;
use crate::guard::{require_admin, Caller};
use crate::input::{int_param, query_params, Input};
use crate::state::AppState;
use crate::store::{from_doc, now_ms, to_doc};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::json;
use settle_shared::auth::Role;
use settle_shared::domain::event::EVENT_TYPES;
use settle_shared::domain::ids::{EndpointId, EventId, MerchantId};
use settle_shared::ports::documents::{Cond, Op, Order, Query};
use settle_shared::webhook_signature::generate_secret;
use settle_shared::webhooks::{
    check_url, delivery_id, DeliveryStatus, EndpointRecord, RetryMessage, StoredSecret, ATTEMPTS, DELIVERIES,
    ENDPOINTS, ROTATION_OVERLAP_SECS,
};
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    url: String,
    #[serde(default)]
    event_types: Vec<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
    /// Admins only: the merchant the endpoint belongs to.
    #[serde(default)]
    merchant_id: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    event_types: Option<Vec<String>>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resend {
    event_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recover {
    /// Unix seconds: deliveries created since then that did not get through.
    #[serde(deserialize_with = "crate::input::lenient_int")]
    since: i64,
}

#[derive(Debug, Serialize)]
pub struct EndpointView {
    pub id: String,
    pub object: &'static str,
    pub merchant_id: String,
    pub url: String,
    pub event_types: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    pub created: i64,
    /// Only in the responses that create a secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

fn view(e: &EndpointRecord, secret: Option<String>) -> EndpointView {
    EndpointView {
        id: e.id.clone(),
        object: "webhook_endpoint",
        merchant_id: e.merchant_id.clone(),
        url: e.url.clone(),
        event_types: e.event_types.clone(),
        description: e.description.clone(),
        enabled: e.enabled,
        disabled_reason: e.disabled_reason.clone(),
        created: e.created / 1000,
        secret,
    }
}

/// Merchants manage their own endpoints; admins (from an allowed address) any.
fn manager_scope(state: &AppState, caller: &Caller) -> Result<Option<MerchantId>, ApiError> {
    if caller.principal.has(Role::Admin) {
        require_admin(state, caller)?;
        return Ok(None);
    }
    caller.merchant().cloned().map(Some)
}

async fn load_managed(state: &AppState, caller: &Caller, id: &str) -> Result<EndpointRecord, ApiError> {
    let scope = manager_scope(state, caller)?;
    let id = EndpointId::parse(id).map_err(|_| ApiError::NotFound("webhook endpoint"))?;
    let record: EndpointRecord =
        crate::store::load(state, ENDPOINTS, id.as_str()).await?.ok_or(ApiError::NotFound("webhook endpoint"))?;
    match scope {
        Some(m) if m.as_str() != record.merchant_id => Err(ApiError::NotFound("webhook endpoint")),
        _ => Ok(record),
    }
}

async fn checked_url(state: &AppState, url: &str) -> Result<String, ApiError> {
    let policy = settle_shared::webhooks::UrlPolicy { allow_private: state.config.webhooks.allow_private };
    check_url(url, policy).await.map(|u| u.to_string()).map_err(|e| ApiError::field("url", e.to_string()))
}

fn checked_types(types: &[String]) -> Result<Vec<String>, ApiError> {
    if types.len() > EVENT_TYPES.len() {
        return Err(ApiError::field("event_types", "too many entries"));
    }
    for t in types {
        if !EVENT_TYPES.contains(&t.as_str()) {
            return Err(ApiError::field(
                "event_types",
                format!("unknown event type; known: {}", EVENT_TYPES.join(", ")),
            ));
        }
    }
    let mut types = types.to_vec();
    types.sort();
    types.dedup();
    Ok(types)
}

fn checked_description(d: Option<String>) -> Result<Option<String>, ApiError> {
    match d {
        Some(d) if d.chars().count() > 500 || d.chars().any(char::is_control) => {
            Err(ApiError::field("description", "at most 500 printable characters"))
        }
        other => Ok(other),
    }
}

pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    input: Input,
) -> Result<Response, ApiError> {
    let (state, caller) = (&state, &caller);
    let req: CreateEndpoint = input.parse()?;
    let merchant = match (manager_scope(state, caller)?, req.merchant_id) {
        (Some(own), None) => own.to_string(),
        // A merchant may name itself; naming another merchant needs the admin role.
        (Some(own), Some(m)) if m == own.as_str() => own.to_string(),
        (Some(_), Some(_)) => return Err(ApiError::Forbidden(Role::Admin)),
        (None, Some(m)) => {
            MerchantId::parse(&m).map_err(|e| ApiError::field("merchant_id", e.to_string()))?.to_string()
        }
        (None, None) => return Err(ApiError::field("merchant_id", "is required for admins")),
    };
    let url = checked_url(state, &req.url).await?;
    let secret = generate_secret();
    let now = now_ms();
    let record = EndpointRecord {
        id: EndpointId::generate().to_string(),
        merchant_id: merchant,
        url,
        event_types: checked_types(&req.event_types)?,
        description: checked_description(req.description)?,
        enabled: req.enabled,
        disabled_reason: None,
        secrets: vec![StoredSecret { sealed: state.secret_box.seal(&secret), created: now, expires_at: None }],
        failing_since: None,
        created: now,
        updated: now,
    };
    state.backends.documents.insert(ENDPOINTS, to_doc(&record)?).await?;
    Ok((StatusCode::CREATED, Json(view(&record, Some(secret)))).into_response())
}

pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = query_params(raw.as_deref(), &["merchant_id"])?;
    let mut query = Query::new().sort("created", Order::Desc).limit(100);
    match (manager_scope(&state, &caller)?, params.get("merchant_id")) {
        (Some(own), _) => query = query.filter(Cond::eq("merchant_id", own.as_str())),
        (None, Some(m)) => {
            let m = MerchantId::parse(m).map_err(|e| ApiError::field("merchant_id", e.to_string()))?;
            query = query.filter(Cond::eq("merchant_id", m.as_str()));
        }
        (None, None) => {}
    }
    let data = state
        .backends
        .documents
        .find(ENDPOINTS, &query)
        .await?
        .into_iter()
        .map(|d| from_doc::<EndpointRecord>(d).map(|e| view(&e, None)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(crate::store::List::new(data, false)).into_response())
}

pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = load_managed(&state, &caller, &id).await?;
    Ok(Json(view(&record, None)).into_response())
}

pub async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    input: Input,
) -> Result<Response, ApiError> {
    let req: UpdateEndpoint = input.parse()?;
    let mut record = load_managed(&state, &caller, &id).await?;
    let seen = record.updated;
    let mut set = serde_json::Map::new();
    if let Some(url) = req.url {
        record.url = checked_url(&state, &url).await?;
        set.insert("url".into(), json!(record.url));
    }
    if let Some(types) = req.event_types {
        record.event_types = checked_types(&types)?;
        set.insert("event_types".into(), json!(record.event_types));
    }
    if req.description.is_some() {
        record.description = checked_description(req.description)?;
        set.insert("description".into(), json!(record.description));
    }
    if let Some(enabled) = req.enabled {
        record.enabled = enabled;
        if enabled {
            // Re-enabled by its owner: the failure history starts over.
            record.disabled_reason = None;
            record.failing_since = None;
        } else {
            record.disabled_reason = Some("disabled by its owner".into());
        }
        set.insert("enabled".into(), json!(record.enabled));
        set.insert("disabled_reason".into(), json!(record.disabled_reason));
        set.insert("failing_since".into(), json!(record.failing_since));
    }
    // Only the fields asked for, and only over the version read: a concurrent rotation
    // or the notifier disabling the endpoint is never silently undone.
    record.updated = now_ms().max(seen + 1);
    set.insert("updated".into(), json!(record.updated));
    let applied = state.backends.documents.update(ENDPOINTS, &record.id, vec![Cond::eq("updated", seen)], set).await?;
    if !applied {
        return Err(ApiError::Conflict("the endpoint changed or was deleted meanwhile; read it again"));
    }
    Ok(Json(view(&record, None)).into_response())
}

pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = load_managed(&state, &caller, &id).await?;
    state
        .backends
        .documents
        .transaction(vec![settle_shared::ports::documents::Write::Delete {
            collection: ENDPOINTS.into(),
            id: record.id,
        }])
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A new secret; the previous ones keep signing for 24 hours.
pub async fn rotate_secret(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    input: Input,
) -> Result<Response, ApiError> {
    let (state, caller) = (&state, &caller);
    input.parse::<crate::payments::EmptyBody>()?;
    let mut record = load_managed(state, caller, &id).await?;
    let now = now_ms();
    let secret = generate_secret();
    for old in record.secrets.iter_mut() {
        let cutoff = now + ROTATION_OVERLAP_SECS * 1000;
        old.expires_at = Some(old.expires_at.map_or(cutoff, |t| t.min(cutoff)));
    }
    record.secrets.retain(|s| s.expires_at.is_none_or(|t| t > now));
    record.secrets.insert(0, StoredSecret { sealed: state.secret_box.seal(&secret), created: now, expires_at: None });
    let seen = record.updated;
    let set = json!({"secrets": record.secrets, "updated": now.max(seen + 1)});
    let applied = state
        .backends
        .documents
        .update(ENDPOINTS, &record.id, vec![Cond::eq("updated", seen)], set.as_object().cloned().unwrap_or_default())
        .await?;
    if !applied {
        return Err(ApiError::Conflict("the endpoint changed or was deleted meanwhile; rotate again"));
    }
    Ok(Json(view(&record, Some(secret))).into_response())
}

/// The attempt log matching every condition, newest first.
async fn attempts(state: &AppState, conds: Vec<Cond>, raw: Option<&str>) -> Result<Response, ApiError> {
    let params = query_params(raw, &["limit"])?;
    let limit = int_param(&params, "limit", 1..=100)?.unwrap_or(50) as u32;
    let query = Query { conds, ..Query::new() }.sort("at", Order::Desc).limit(limit);
    let data: Vec<serde_json::Value> = state
        .backends
        .documents
        .find(ATTEMPTS, &query)
        .await?
        .into_iter()
        .map(|mut d| {
            d.remove("_id").map(|id| d.insert("id".into(), id));
            serde_json::Value::Object(d)
        })
        .collect();
    Ok(Json(crate::store::List::new(data, false)).into_response())
}

/// `GET /v1/webhook_endpoints/{id}/attempts`: newest first.
pub async fn endpoint_attempts(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let record = load_managed(&state, &caller, &id).await?;
    attempts(&state, vec![Cond::eq("endpoint_id", record.id.as_str())], raw.as_deref()).await
}

/// `GET /v1/events/{event_id}/attempts`: a merchant sees only its own.
pub async fn event_attempts(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(event_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let event_id = EventId::parse(&event_id).map_err(|_| ApiError::NotFound("event"))?;
    let mut conds = vec![Cond::eq("event_id", event_id.as_str())];
    if let Some(own) = caller.read_scope()? {
        conds.push(Cond::eq("merchant_id", own.as_str()));
    }
    attempts(&state, conds, raw.as_deref()).await
}

async fn enqueue_resend(state: &AppState, delivery: &str, attempts: i64) -> Result<(), ApiError> {
    let queue = state.backends.retry_queue.as_ref().ok_or(ApiError::Unavailable("the webhook retry queue"))?;
    let message = RetryMessage {
        delivery_id: delivery.to_string(),
        attempt: u32::try_from(attempts + 1).unwrap_or(u32::MAX),
        due_at: now_ms(),
        resend: true,
        traceparent: settle_shared::otel::traceparent(),
    };
    let body = serde_json::to_string(&message).map_err(|e| ApiError::Internal(e.into()))?;
    queue.send(&body, Duration::ZERO).await.map_err(|e| {
        tracing::warn!(error = %e, "retry queue unavailable");
        ApiError::Unavailable("the webhook retry queue (SQS)")
    })?;
    Ok(())
}

/// `POST /v1/webhook_endpoints/{id}/resend`: one event again, with its original
/// `webhook-id`.
pub async fn resend(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    input: Input,
) -> Result<Response, ApiError> {
    let req: Resend = input.parse()?;
    let record = load_managed(&state, &caller, &id).await?;
    let event_id = EventId::parse(&req.event_id).map_err(|e| ApiError::field("event_id", e.to_string()))?;
    let did = delivery_id(event_id.as_str(), &record.id);
    let delivery =
        state.backends.documents.get(DELIVERIES, &did).await?.ok_or(ApiError::NotFound("delivery of this event"))?;
    let attempts = delivery.get("attempts").and_then(|a| a.as_i64()).unwrap_or(0);
    enqueue_resend(&state, &did, attempts).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"resent": 1, "event_ids": [event_id.as_str()]}))).into_response())
}

/// `POST /v1/webhook_endpoints/{id}/recover`: every delivery since `since` that did not
/// get through (dead, gone, or still retrying) is sent again.
pub async fn recover(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    input: Input,
) -> Result<Response, ApiError> {
    let req: Recover = input.parse()?;
    if !(0..=4_102_444_800).contains(&req.since) {
        return Err(ApiError::field("since", "unix seconds"));
    }
    let record = load_managed(&state, &caller, &id).await?;
    let query = Query::new()
        .filter(Cond::eq("endpoint_id", record.id.as_str()))
        .filter(Cond::new("created", Op::Gte, req.since * 1000))
        .filter(Cond::new("status", Op::Ne, DeliveryStatus::Delivered.as_str()))
        .sort("created", Order::Asc)
        .limit(1000);
    let failed = state.backends.documents.find(DELIVERIES, &query).await?;
    let mut event_ids = Vec::new();
    for d in &failed {
        let (Some(did), Some(event)) =
            (d.get("_id").and_then(|v| v.as_str()), d.get("event_id").and_then(|v| v.as_str()))
        else {
            continue;
        };
        let attempts = d.get("attempts").and_then(|a| a.as_i64()).unwrap_or(0);
        enqueue_resend(&state, did, attempts).await?;
        event_ids.push(event.to_string());
    }
    Ok((StatusCode::ACCEPTED, Json(json!({"resent": event_ids.len(), "event_ids": event_ids}))).into_response())
}
