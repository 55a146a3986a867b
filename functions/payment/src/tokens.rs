//! `POST /v1/tokens`: a card in, a token out. The number and CVC are validated and then
//! dropped: only brand, last four digits, expiry, a keyed fingerprint and the simulated
//! gateway's profile are stored.

use crate::error::ApiError;
use crate::guard::Caller;
use crate::input::Input;
use crate::state::AppState;
use crate::store::{now_ms, to_doc, CardSummary, TokenRecord, TOKENS};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use settle_shared::domain::card::{check_expiry_and_cvc, CardNumber};
use settle_shared::domain::ids::TokenId;
use sha2::Sha256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    number: String,
    exp_month: u32,
    exp_year: u32,
    cvc: String,
    #[serde(default)]
    holder_name: Option<String>,
}

/// Debug never shows the number or the CVC.
impl std::fmt::Debug for CreateToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateToken").field("exp_month", &self.exp_month).field("exp_year", &self.exp_year).finish()
    }
}

#[derive(Debug, Serialize)]
pub struct TokenView {
    pub id: String,
    pub object: &'static str,
    pub brand: settle_shared::domain::card::Brand,
    pub last4: String,
    pub exp_month: u32,
    pub exp_year: u32,
    pub fingerprint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder_name: Option<String>,
    pub created: i64,
}

impl From<&TokenRecord> for TokenView {
    fn from(t: &TokenRecord) -> Self {
        TokenView {
            id: t.id.clone(),
            object: "token",
            brand: t.card.brand,
            last4: t.card.last4.clone(),
            exp_month: t.card.exp_month,
            exp_year: t.card.exp_year,
            fingerprint: t.card.fingerprint.clone(),
            holder_name: t.holder_name.clone(),
            created: t.created / 1000,
        }
    }
}

pub async fn create_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    input: Input,
) -> Result<Response, ApiError> {
    let (state, caller) = (&state, &caller);
    let merchant = caller.merchant()?.to_string();
    let card: CreateToken = input.parse()?;
    let number = CardNumber::parse(&card.number).map_err(|e| ApiError::field(e.field(), e.to_string()))?;
    let today = chrono::Utc::now().date_naive();
    check_expiry_and_cvc(number.brand(), card.exp_month, card.exp_year, &card.cvc, today)
        .map_err(|e| ApiError::field(e.field(), e.to_string()))?;
    let holder_name = match card.holder_name.map(|n| n.trim().to_string()) {
        Some(n) if n.chars().count() > 200 || n.chars().any(char::is_control) => {
            return Err(ApiError::field("holder_name", "at most 200 printable characters"))
        }
        Some(n) if n.is_empty() => None,
        other => other,
    };
    let record = TokenRecord {
        id: TokenId::generate().to_string(),
        merchant_id: merchant,
        card: CardSummary {
            brand: number.brand(),
            last4: number.last4().to_string(),
            exp_month: card.exp_month,
            exp_year: card.exp_year,
            fingerprint: fingerprint(state.fingerprint_key.expose(), &number),
        },
        holder_name,
        profile: number.gateway_profile(),
        created: now_ms(),
    };
    state.backends.documents.insert(TOKENS, to_doc(&record)?).await?;
    Ok((StatusCode::CREATED, Json(TokenView::from(&record))).into_response())
}

/// A keyed hash of the number: equal for the same card, useless without the key.
fn fingerprint(key: &str, number: &CardNumber) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(number.expose_digits().as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}
