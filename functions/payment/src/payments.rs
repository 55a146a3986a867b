//! Payments, as Stripe's PaymentIntent: create, read, list, confirm, capture, cancel (the
//! 3-D Secure page is `threeds`). Every change is a conditional update on the payment's
//! version, in one transaction with its outbox event; a lost race re-reads and decides
//! again.

use crate::error::ApiError;
use crate::guard::Caller;
use crate::idempotency::IdempotencyKey;
use crate::input::{base_url, int_param, parse_payment_id, query_params, Input};
use crate::outbox::{self, Origin};
use crate::request_ids::origin;
use crate::state::AppState;
use crate::store::{
    self, cache_payment, cached_payment, load, now_ms, to_doc, PaymentRecord, TokenRecord, PAYMENTS, TOKENS,
};
use crate::views::{view, view_json, PaymentView};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use settle_shared::domain::ids::PaymentId;
use settle_shared::domain::money::{Amount, Currency};
use settle_shared::domain::payment::{transition, Action, CaptureMethod, PaymentFacts, PaymentStatus, TransitionError};
use settle_shared::ports::documents::{Cond, Op, Order, Query, StoreError, Write};
use std::collections::BTreeMap;
use subtle::ConstantTimeEq;

pub const MAX_METADATA: usize = 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    amount: i64,
    currency: String,
    token: String,
    #[serde(default)]
    capture_method: CaptureMethod,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    /// Confirm at once (Stripe's `confirm=true`); otherwise the payment waits in
    /// `requires_confirmation` for `POST /v1/payments/{id}/confirm`.
    #[serde(default)]
    confirm: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CapturePayment {
    /// Defaults to the whole authorised amount.
    #[serde(default)]
    amount_to_capture: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EmptyBody {}

fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if metadata.len() > MAX_METADATA {
        return Err(ApiError::field("metadata", format!("at most {MAX_METADATA} keys")));
    }
    for (k, v) in metadata {
        let key_ok =
            (1..=40).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !key_ok {
            return Err(ApiError::field("metadata", "keys are 1 to 40 letters, digits, '_' or '-'"));
        }
        if v.chars().count() > 500 || v.chars().any(char::is_control) {
            return Err(ApiError::field(format!("metadata.{k}"), "at most 500 printable characters"));
        }
    }
    Ok(())
}

pub async fn create_payment(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Extension(IdempotencyKey(key)): Extension<IdempotencyKey>,
    input: Input,
) -> Result<Response, ApiError> {
    let (state, caller, headers) = (&state, &caller, &headers);
    let merchant = caller.merchant()?.to_string();
    let req: CreatePayment = input.parse()?;
    let amount = Amount::new(req.amount).map_err(|e| ApiError::field("amount", e.to_string()))?;
    let currency: Currency = req
        .currency
        .parse()
        .map_err(|e: settle_shared::domain::money::MoneyError| ApiError::field("currency", e.to_string()))?;
    if let Some(d) = &req.description {
        if d.chars().count() > 1000 || d.chars().any(char::is_control) {
            return Err(ApiError::field("description", "at most 1000 printable characters"));
        }
    }
    check_metadata(&req.metadata)?;
    let token_id =
        settle_shared::domain::ids::TokenId::parse(&req.token).map_err(|e| ApiError::field("token", e.to_string()))?;
    let token: TokenRecord = load(state, TOKENS, token_id.as_str())
        .await?
        .filter(|t: &TokenRecord| t.merchant_id == merchant)
        .ok_or_else(|| ApiError::field("token", "no such token"))?;
    let now = now_ms();
    let mut record = PaymentRecord {
        id: PaymentId::generate().to_string(),
        merchant_id: merchant,
        amount: amount.minor_units(),
        currency: currency.code().to_string(),
        capture_method: req.capture_method,
        status: PaymentStatus::RequiresConfirmation,
        description: req.description,
        metadata: req.metadata,
        token_id: token.id,
        card: token.card,
        profile: token.profile,
        amount_captured: 0,
        amount_refunded: 0,
        failure_code: None,
        challenge: None,
        challenge_base: None,
        created: now,
        updated: now,
        version: 1,
        idempotency_hash: Some(store::idempotency_hash(&merchant_id_of(caller)?, &key)),
    };
    let origin = origin(headers, Some(key));
    let mut events = Vec::new();
    if req.confirm {
        let facts = facts(&record);
        let t = transition(&facts, Action::Confirm).map_err(state_error(record.status))?;
        apply(&mut record, &t, &base_url(headers));
        if let Some(event_type) = t.event {
            events.push(outbox::event(
                event_type,
                &record.merchant_id,
                &record.id,
                record.version,
                view_json(&record),
                &origin,
            ));
        }
    }
    let mut writes = vec![Write::Insert { collection: PAYMENTS.into(), doc: to_doc(&record)? }];
    writes.extend(events.iter().map(outbox::write));
    match insert_retrying_conflicts(state, writes).await {
        Ok(()) => {}
        Err(StoreError::Duplicate { .. }) => {
            // An earlier execution with this key committed (its answer was lost):
            // that payment is the answer, not a second one.
            let hash = record.idempotency_hash.clone().unwrap_or_default();
            let existing: PaymentRecord = store::created_by(state, PAYMENTS, &record.merchant_id, &hash)
                .await?
                .ok_or(ApiError::Conflict("a request with this Idempotency-Key is finishing; retry"))?;
            let location = format!("/v1/payments/{}", existing.id);
            return Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(view(&existing))).into_response());
        }
        Err(e) => return Err(e.into()),
    }
    state.outbox.publish_committed(state, &events).await;
    cache_payment(state, &record).await;
    crate::metrics::count(
        "Payments",
        &[("Outcome", record.status.as_str()), ("Currency", &record.currency)],
        &[("payment_id", serde_json::json!(record.id))],
    );
    let location = format!("/v1/payments/{}", record.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(view(&record))).into_response())
}

/// Commits a new payment's transaction, again after a write conflict. A brand-new payment
/// conflicts only with another transaction holding its Idempotency-Key's index entry: an
/// earlier try with the same key whose client gave up (a timeout) while the server still
/// ran it. That one commits (the retry then meets the duplicate and answers with it) or is
/// aborted (the retry commits) within moments; until then the answer is a 503 to retry.
async fn insert_retrying_conflicts(state: &AppState, writes: Vec<Write>) -> Result<(), StoreError> {
    let mut wait = std::time::Duration::from_millis(20);
    for _ in 0..6 {
        match state.backends.documents.transaction(writes.clone()).await {
            Err(StoreError::Conflict(_)) => tokio::time::sleep(wait).await,
            other => return other,
        }
        wait *= 2;
    }
    state.backends.documents.transaction(writes).await
}

fn merchant_id_of(caller: &Caller) -> Result<String, ApiError> {
    caller.merchant().map(|m| m.to_string())
}

fn facts(p: &PaymentRecord) -> PaymentFacts {
    PaymentFacts { status: p.status, capture_method: p.capture_method, amount: p.amount, profile: p.profile }
}

fn state_error(current: PaymentStatus) -> impl Fn(TransitionError) -> ApiError {
    move |e| match e {
        TransitionError::Illegal { .. } => ApiError::InvalidState { detail: e.to_string(), current },
        TransitionError::CaptureAmount { .. } => ApiError::field("amount_to_capture", e.to_string()),
    }
}

/// Applies a transition to the record (not yet stored).
fn apply(p: &mut PaymentRecord, t: &settle_shared::domain::payment::Transition, base: &str) {
    p.status = t.status;
    p.failure_code = t.failure;
    if let Some(captured) = t.captured {
        p.amount_captured = captured;
    }
    if t.status == PaymentStatus::RequiresAction {
        p.challenge = Some(hex::encode(rand::random::<[u8; 16]>()));
        p.challenge_base = Some(base.to_string());
    } else {
        p.challenge = None;
        p.challenge_base = None;
    }
    p.version += 1;
    p.updated = now_ms();
}

/// Who may act on a payment: its merchant, or the holder of its 3-D Secure challenge.
pub enum Actor<'a> {
    Merchant(&'a str),
    Challenge(&'a str),
}

/// Loads, checks, transitions and stores a payment, retrying on lost races.
pub async fn act(
    state: &AppState,
    id: &str,
    actor: Actor<'_>,
    // Decided on the payment as read (a capture defaults to the authorised amount).
    action: impl Fn(&PaymentRecord) -> Action,
    origin: &Origin,
    base: &str,
) -> Result<PaymentRecord, ApiError> {
    for attempt in 0..50u32 {
        let current: PaymentRecord = load(state, PAYMENTS, id).await?.ok_or(ApiError::NotFound("payment"))?;
        let allowed = match actor {
            Actor::Merchant(m) => current.merchant_id == m,
            Actor::Challenge(secret) => {
                current.challenge.as_deref().is_some_and(|c| bool::from(c.as_bytes().ct_eq(secret.as_bytes())))
            }
        };
        if !allowed {
            return Err(ApiError::NotFound("payment"));
        }
        let t = transition(&facts(&current), action(&current)).map_err(state_error(current.status))?;
        let mut next = current.clone();
        apply(&mut next, &t, base);
        let events: Vec<_> = t
            .event
            .map(|et| outbox::event(et, &next.merchant_id, &next.id, next.version, view_json(&next), origin))
            .into_iter()
            .collect();
        let mut set = to_doc(&next)?;
        set.remove("_id");
        // Fields that are now absent must be cleared, not left behind.
        for field in ["failure_code", "challenge", "challenge_base"] {
            set.entry(field.to_string()).or_insert(serde_json::Value::Null);
        }
        let mut writes = vec![Write::Update {
            collection: PAYMENTS.into(),
            id: next.id.clone(),
            conds: vec![Cond::eq("version", current.version)],
            set,
        }];
        writes.extend(events.iter().map(outbox::write));
        match state.backends.documents.transaction(writes).await {
            Ok(()) => {
                state.outbox.publish_committed(state, &events).await;
                cache_payment(state, &next).await;
                return Ok(next);
            }
            Err(StoreError::Conflict(_)) => {
                tokio::time::sleep(std::time::Duration::from_millis(u64::from(attempt % 8) * 3)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Unavailable("MongoDB (too much contention on this payment)"))
}

/// `POST /v1/payments/{id}/{confirm|capture|cancel}`.
pub async fn payment_action(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, verb)): Path<(String, String)>,
    headers: HeaderMap,
    Extension(IdempotencyKey(key)): Extension<IdempotencyKey>,
    input: Input,
) -> Result<Response, ApiError> {
    let (state, caller, headers) = (&state, &caller, &headers);
    let merchant = caller.merchant()?.to_string();
    let id = parse_payment_id(&id)?;
    // The capture amount defaults to what was authorised, read inside `act`.
    let requested_capture = match verb.as_str() {
        "confirm" | "cancel" => {
            input.parse::<EmptyBody>()?;
            None
        }
        "capture" => input.parse::<CapturePayment>()?.amount_to_capture,
        _ => return Err(ApiError::NotFound("action")),
    };
    let action = |current: &PaymentRecord| match verb.as_str() {
        "confirm" => Action::Confirm,
        "cancel" => Action::Cancel,
        _ => Action::Capture { amount: requested_capture.unwrap_or(current.amount) },
    };
    let record =
        act(state, id.as_str(), Actor::Merchant(&merchant), action, &origin(headers, Some(key)), &base_url(headers))
            .await?;
    Ok(Json(view(&record)).into_response())
}

pub async fn get_payment(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_payment_id(&id)?;
    let record = cached_payment(&state, id.as_str()).await?.ok_or(ApiError::NotFound("payment"))?;
    if !caller.can_read(&record.merchant_id)? {
        return Err(ApiError::NotFound("payment"));
    }
    Ok(Json(view(&record)).into_response())
}

/// `GET /v1/payments`: newest first; `limit` (1–100, default 10), `starting_after` (a
/// payment id: the page after it), `status`, `created_gte` / `created_lte` (unix
/// seconds), and for support `merchant_id`.
pub async fn list_payments(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = query_params(
        raw.as_deref(),
        &["limit", "starting_after", "status", "created_gte", "created_lte", "merchant_id"],
    )?;
    let limit = int_param(&params, "limit", 1..=100)?.unwrap_or(10) as u32;
    let mut query = Query::new().sort("_id", Order::Desc).limit(limit + 1);
    if let Some(s) = params.get("status") {
        let status = PaymentStatus::parse(s).ok_or_else(|| ApiError::field("status", "not a payment status"))?;
        query = query.filter(Cond::eq("status", status.as_str()));
    }
    if let Some(after) = params.get("starting_after") {
        let after = PaymentId::parse(after).map_err(|e| ApiError::field("starting_after", e.to_string()))?;
        query = query.filter(Cond::new("_id", Op::Lt, after.as_str()));
    }
    let seconds = 0..=4_102_444_800; // up to 2100-01-01
    if let Some(gte) = int_param(&params, "created_gte", seconds.clone())? {
        query = query.filter(Cond::new("created", Op::Gte, gte * 1000));
    }
    if let Some(lte) = int_param(&params, "created_lte", seconds)? {
        query = query.filter(Cond::new("created", Op::Lte, lte * 1000 + 999));
    }
    let wanted = params
        .get("merchant_id")
        .map(|m| {
            settle_shared::domain::ids::MerchantId::parse(m).map_err(|e| ApiError::field("merchant_id", e.to_string()))
        })
        .transpose()?;
    match (caller.read_scope()?, wanted) {
        // A merchant asking for another merchant's payments sees none.
        (Some(own), Some(m)) if &m != own => {
            return Ok(Json(store::List::<PaymentView>::new(Vec::new(), false)).into_response());
        }
        (Some(own), _) => query = query.filter(Cond::eq("merchant_id", own.as_str())),
        (None, Some(m)) => query = query.filter(Cond::eq("merchant_id", m.as_str())),
        (None, None) => {}
    }
    let docs = state.backends.documents.find(PAYMENTS, &query).await?;
    let has_more = docs.len() > limit as usize;
    let data = docs
        .into_iter()
        .take(limit as usize)
        .map(|d| store::from_doc::<PaymentRecord>(d).map(|p| view(&p)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(store::List::new(data, has_more)).into_response())
}
