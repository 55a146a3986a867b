//! Refunds: partial and multiple, never more in total than was captured. The limit is
//! enforced by the database: the refund is inserted in one transaction with a
//! conditional update of the payment's version and refunded total, so of two racing
//! refunds only one can commit against a given state.

use crate::error::ApiError;
use crate::guard::Caller;
use crate::idempotency::IdempotencyKey;
use crate::input::parse_payment_id;
use crate::input::Input;
use crate::outbox;
use crate::request_ids::origin;
use crate::state::AppState;
use crate::store::{
    cache_payment, created_by, from_doc, idempotency_hash, load, now_ms, to_doc, PaymentRecord, RefundRecord, PAYMENTS,
    REFUNDS,
};
use crate::views::view_json;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use settle_shared::domain::ids::RefundId;
use settle_shared::domain::payment::{refund, FailureCode, RefundError, RefundStatus};
use settle_shared::metrics::{Measure, Unit};
use settle_shared::ports::documents::{Cond, Order, Query, StoreError, Write};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRefund {
    /// Defaults to everything still refundable.
    #[serde(default)]
    amount: Option<i64>,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RefundView {
    pub id: String,
    pub object: &'static str,
    pub payment: String,
    pub amount: i64,
    pub currency: String,
    pub status: RefundStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_code: Option<FailureCode>,
    pub created: i64,
}

pub fn view(r: &RefundRecord) -> RefundView {
    RefundView {
        id: r.id.clone(),
        object: "refund",
        payment: r.payment_id.clone(),
        amount: r.amount,
        currency: r.currency.clone(),
        status: r.status,
        reason: r.reason.clone(),
        failure_code: r.failure_code,
        created: r.created / 1000,
    }
}

pub fn refund_event_data(r: &RefundRecord) -> serde_json::Value {
    serde_json::to_value(view(r)).unwrap_or_default()
}

pub async fn create_refund(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Extension(IdempotencyKey(key)): Extension<IdempotencyKey>,
    input: Input,
) -> Result<Response, ApiError> {
    let (state, caller, headers) = (&state, &caller, &headers);
    let merchant = caller.merchant()?.to_string();
    let payment_id = parse_payment_id(&id)?;
    let req: CreateRefund = input.parse()?;
    if let Some(amount) = req.amount {
        if amount < 1 {
            return Err(ApiError::field("amount", "must be a positive number of minor units"));
        }
    }
    if let Some(r) = &req.reason {
        if r.chars().count() > 500 || r.chars().any(char::is_control) {
            return Err(ApiError::field("reason", "at most 500 printable characters"));
        }
    }
    let hash = idempotency_hash(&merchant, &key);
    let origin = origin(headers, Some(key));
    for attempt in 0..50u32 {
        let payment: PaymentRecord = load(state, PAYMENTS, payment_id.as_str())
            .await?
            .filter(|p: &PaymentRecord| p.merchant_id == merchant)
            .ok_or(ApiError::NotFound("payment"))?;
        let remaining = payment.amount_captured - payment.amount_refunded;
        let amount = req.amount.unwrap_or(remaining);
        let status =
            refund(payment.status, payment.amount_captured, payment.amount_refunded, amount.max(1), payment.profile)
                .map_err(|e| match e {
                    RefundError::NotRefundable { current } => ApiError::InvalidState { detail: e.to_string(), current },
                    RefundError::ExceedsCaptured { remaining } => ApiError::RefundExceedsCaptured { remaining },
                })?;
        let now = now_ms();
        let record = RefundRecord {
            id: RefundId::generate().to_string(),
            payment_id: payment.id.clone(),
            merchant_id: payment.merchant_id.clone(),
            amount,
            currency: payment.currency.clone(),
            status,
            reason: req.reason.clone(),
            failure_code: None,
            created: now,
            updated: now,
            idempotency_hash: Some(hash.clone()),
        };
        let mut next = payment.clone();
        next.amount_refunded += amount;
        next.version += 1;
        next.updated = now;
        let events: Vec<_> = (status == RefundStatus::Succeeded)
            .then(|| {
                let mut data = refund_event_data(&record);
                data["payment_data"] = view_json(&next);
                outbox::event("refund.succeeded", &record.merchant_id, &record.id, next.version, data, &origin)
            })
            .into_iter()
            .collect();
        let update =
            serde_json::json!({"amount_refunded": next.amount_refunded, "version": next.version, "updated": now});
        let mut writes = vec![
            Write::Insert { collection: REFUNDS.into(), doc: to_doc(&record)? },
            Write::Update {
                collection: PAYMENTS.into(),
                id: payment.id.clone(),
                // The database's guard: only against the state this decision was made on.
                conds: vec![Cond::eq("version", payment.version), Cond::eq("amount_refunded", payment.amount_refunded)],
                set: update.as_object().cloned().unwrap_or_default(),
            },
        ];
        writes.extend(events.iter().map(outbox::write));
        match state.backends.documents.transaction(writes).await {
            Ok(()) => {
                state.outbox.publish_committed(state, &events).await;
                cache_payment(state, &next).await;
                let amount = Measure { name: "RefundAmount", value: record.amount as f64, unit: Unit::None };
                crate::metrics::record(
                    &[("Currency", &record.currency)],
                    &[Measure::count("Refunds", 1), amount],
                    &[("payment_id", serde_json::json!(payment.id)), ("refund_id", serde_json::json!(record.id))],
                );
                let location = format!("/v1/payments/{}/refunds/{}", payment.id, record.id);
                return Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(view(&record))).into_response());
            }
            Err(StoreError::Duplicate { .. }) => {
                // An earlier execution with this key committed (its answer was lost):
                // that refund is the answer, not a second one.
                let existing: RefundRecord = created_by(state, REFUNDS, &merchant, &hash)
                    .await?
                    .ok_or(ApiError::Conflict("a request with this Idempotency-Key is finishing; retry"))?;
                let location = format!("/v1/payments/{}/refunds/{}", existing.payment_id, existing.id);
                return Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(view(&existing))).into_response());
            }
            Err(StoreError::Conflict(_)) => {
                tokio::time::sleep(std::time::Duration::from_millis(u64::from(attempt % 8) * 3)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Unavailable("MongoDB (too much contention on this payment)"))
}

async fn readable_payment(state: &AppState, caller: &Caller, id: &str) -> Result<PaymentRecord, ApiError> {
    let payment_id = parse_payment_id(id)?;
    let payment: PaymentRecord =
        load(state, PAYMENTS, payment_id.as_str()).await?.ok_or(ApiError::NotFound("payment"))?;
    if !caller.can_read(&payment.merchant_id)? {
        return Err(ApiError::NotFound("payment"));
    }
    Ok(payment)
}

pub async fn list_refunds(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let payment = readable_payment(&state, &caller, &id).await?;
    let query =
        Query::new().filter(Cond::eq("payment_id", payment.id.as_str())).sort("created", Order::Asc).limit(1000);
    let data = state
        .backends
        .documents
        .find(REFUNDS, &query)
        .await?
        .into_iter()
        .map(|d| from_doc::<RefundRecord>(d).map(|r| view(&r)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(crate::store::List::new(data, false)).into_response())
}

pub async fn get_refund(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, refund_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let payment = readable_payment(&state, &caller, &id).await?;
    let refund_id = RefundId::parse(&refund_id).map_err(|_| ApiError::NotFound("refund"))?;
    let record: RefundRecord = load(&state, REFUNDS, refund_id.as_str())
        .await?
        .filter(|r: &RefundRecord| r.payment_id == payment.id)
        .ok_or(ApiError::NotFound("refund"))?;
    Ok(Json(view(&record)).into_response())
}
