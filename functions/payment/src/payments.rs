//! Payments, as Stripe's PaymentIntent: the routes that create, read, list, confirm,
//! capture and cancel them (the 3-D Secure page is `threeds`). Bodies become commands
//! here; what a change does is `service::payments`.

use crate::error::ApiError;
use crate::guard::Caller;
use crate::idempotency::IdempotencyKey;
use crate::input::{base_url, int_param, parse_payment_id, query_params, Input};
use crate::repo::PaymentFilter;
use crate::request_ids::RequestIds;
use crate::service::payments::{self as service, Actor, NewPayment};
use crate::state::AppState;
use crate::store::{self, PaymentRecord};
use crate::views::{view, PaymentView};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use settle_shared::domain::ids::{MerchantId, PaymentId, TokenId};
use settle_shared::domain::money::{Amount, Currency, MoneyError};
use settle_shared::domain::payment::{Action, CaptureMethod, PaymentStatus};
use std::collections::BTreeMap;

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

impl CreatePayment {
    /// The command, every field checked and named when it is refused.
    fn into_command(self, merchant: &MerchantId, idempotency_key: String) -> Result<NewPayment, ApiError> {
        let amount = Amount::new(self.amount).map_err(|e| ApiError::field("amount", e.to_string()))?;
        let currency: Currency =
            self.currency.parse().map_err(|e: MoneyError| ApiError::field("currency", e.to_string()))?;
        if let Some(d) = &self.description {
            if d.chars().count() > 1000 || d.chars().any(char::is_control) {
                return Err(ApiError::field("description", "at most 1000 printable characters"));
            }
        }
        check_metadata(&self.metadata)?;
        let token = TokenId::parse(&self.token).map_err(|e| ApiError::field("token", e.to_string()))?;
        Ok(NewPayment {
            merchant: merchant.clone(),
            amount,
            currency,
            token,
            capture_method: self.capture_method,
            description: self.description,
            metadata: self.metadata,
            confirm: self.confirm,
            idempotency_key,
        })
    }
}

/// `POST /v1/payments`.
pub async fn create_payment(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    ids: RequestIds,
    Extension(IdempotencyKey(key)): Extension<IdempotencyKey>,
    input: Input,
) -> Result<Response, ApiError> {
    let merchant = caller.merchant()?;
    let command = input.parse::<CreatePayment>()?.into_command(merchant, key.clone())?;
    let record = service::create(&state, command, &ids.origin(Some(key)), &base_url(&headers)).await?;
    Ok(created(&record))
}

/// 201 with the payment and its `Location`.
fn created(record: &PaymentRecord) -> Response {
    let location = format!("/v1/payments/{}", record.id);
    (StatusCode::CREATED, [(header::LOCATION, location)], Json(view(record))).into_response()
}

/// `POST /v1/payments/{id}/{confirm|capture|cancel}`.
pub async fn payment_action(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, verb)): Path<(String, String)>,
    headers: HeaderMap,
    ids: RequestIds,
    Extension(IdempotencyKey(key)): Extension<IdempotencyKey>,
    input: Input,
) -> Result<Response, ApiError> {
    let merchant = caller.merchant()?;
    let id = parse_payment_id(&id)?;
    let action = requested_action(&verb, &input)?;
    let (origin, base) = (ids.origin(Some(key)), base_url(&headers));
    let record = service::act(&state, id.as_str(), Actor::Merchant(merchant.as_str()), action, &origin, &base).await?;
    Ok(Json(view(&record)).into_response())
}

/// The action a verb and its body ask for, decided on the payment as read: a capture
/// defaults to what was authorised.
fn requested_action(verb: &str, input: &Input) -> Result<impl Fn(&PaymentRecord) -> Action, ApiError> {
    let (verb, capture) = match verb {
        "confirm" | "cancel" => {
            input.parse::<EmptyBody>()?;
            (if verb == "confirm" { Action::Confirm } else { Action::Cancel }, None)
        }
        "capture" => (Action::Capture { amount: 0 }, input.parse::<CapturePayment>()?.amount_to_capture),
        _ => return Err(ApiError::NotFound("action")),
    };
    Ok(move |current: &PaymentRecord| match verb {
        Action::Capture { .. } => Action::Capture { amount: capture.unwrap_or(current.amount) },
        other => other,
    })
}

pub async fn get_payment(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_payment_id(&id)?;
    let record = state.payments().read(id.as_str()).await?.ok_or(ApiError::NotFound("payment"))?;
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
    let Some(filter) = payment_filter(&caller, raw.as_deref())? else {
        // A merchant asking for another merchant's payments sees none.
        return Ok(Json(store::List::<PaymentView>::new(Vec::new(), false)).into_response());
    };
    let (page, has_more) = state.payments().list(&filter).await?;
    Ok(Json(store::List::new(page.iter().map(view).collect(), has_more)).into_response())
}

/// The list's filter from its query; `None` when it can only be empty.
fn payment_filter(caller: &Caller, raw: Option<&str>) -> Result<Option<PaymentFilter>, ApiError> {
    let params =
        query_params(raw, &["limit", "starting_after", "status", "created_gte", "created_lte", "merchant_id"])?;
    let status = params
        .get("status")
        .map(|s| PaymentStatus::parse(s).ok_or_else(|| ApiError::field("status", "not a payment status")))
        .transpose()?;
    let starting_after = params
        .get("starting_after")
        .map(|after| PaymentId::parse(after).map_err(|e| ApiError::field("starting_after", e.to_string())))
        .transpose()?;
    let seconds = 0..=4_102_444_800; // up to 2100-01-01
    let created_from = int_param(&params, "created_gte", seconds.clone())?.map(|s| s * 1000);
    let created_to = int_param(&params, "created_lte", seconds)?.map(|s| s * 1000 + 999);
    let wanted = params
        .get("merchant_id")
        .map(|m| MerchantId::parse(m).map_err(|e| ApiError::field("merchant_id", e.to_string())))
        .transpose()?;
    let merchant = match (caller.read_scope()?, wanted) {
        (Some(own), Some(m)) if &m != own => return Ok(None),
        (Some(own), _) => Some(own.clone()),
        (None, wanted) => wanted,
    };
    let limit = int_param(&params, "limit", 1..=100)?.unwrap_or(10) as u32;
    Ok(Some(PaymentFilter { merchant, status, starting_after, created_from, created_to, limit }))
}
