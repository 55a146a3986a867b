//! Refunds: the routes that make, list and read a payment's refunds. What a refund does
//! (and how the database keeps the total within the captured amount) is
//! `service::refunds`.

use crate::error::ApiError;
use crate::guard::Caller;
use crate::idempotency::IdempotencyKey;
use crate::input::{parse_payment_id, Input};
use crate::request_ids::RequestIds;
use crate::service::refunds::{self as service, NewRefund};
use crate::state::AppState;
use crate::store::PaymentRecord;
use crate::views::refund_view as view;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use settle_shared::domain::ids::{MerchantId, PaymentId, RefundId};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRefund {
    /// Defaults to everything still refundable.
    #[serde(default)]
    amount: Option<i64>,
    #[serde(default)]
    reason: Option<String>,
}

impl CreateRefund {
    /// The command, every field checked and named when it is refused.
    fn into_command(self, merchant: &MerchantId, payment: PaymentId, key: String) -> Result<NewRefund, ApiError> {
        if self.amount.is_some_and(|amount| amount < 1) {
            return Err(ApiError::field("amount", "must be a positive number of minor units"));
        }
        if let Some(r) = &self.reason {
            if r.chars().count() > 500 || r.chars().any(char::is_control) {
                return Err(ApiError::field("reason", "at most 500 printable characters"));
            }
        }
        let merchant = merchant.clone();
        Ok(NewRefund { merchant, payment, amount: self.amount, reason: self.reason, idempotency_key: key })
    }
}

/// `POST /v1/payments/{id}/refunds`.
pub async fn create_refund(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    ids: RequestIds,
    Extension(IdempotencyKey(key)): Extension<IdempotencyKey>,
    input: Input,
) -> Result<Response, ApiError> {
    let merchant = caller.merchant()?;
    let payment = parse_payment_id(&id)?;
    let command = input.parse::<CreateRefund>()?.into_command(merchant, payment, key.clone())?;
    let record = service::create(&state, command, &ids.origin(Some(key))).await?;
    let location = format!("/v1/payments/{}/refunds/{}", record.payment_id, record.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(view(&record))).into_response())
}

async fn readable_payment(state: &AppState, caller: &Caller, id: &str) -> Result<PaymentRecord, ApiError> {
    let payment_id = parse_payment_id(id)?;
    let payment = state.payments().get(payment_id.as_str()).await?.ok_or(ApiError::NotFound("payment"))?;
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
    let refunds = state.refunds().of_payment(&payment.id).await?;
    Ok(Json(crate::store::List::new(refunds.iter().map(view).collect(), false)).into_response())
}

pub async fn get_refund(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, refund_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let payment = readable_payment(&state, &caller, &id).await?;
    let refund_id = RefundId::parse(&refund_id).map_err(|_| ApiError::NotFound("refund"))?;
    let record = state
        .refunds()
        .get(refund_id.as_str())
        .await?
        .filter(|r| r.payment_id == payment.id)
        .ok_or(ApiError::NotFound("refund"))?;
    Ok(Json(view(&record)).into_response())
}
