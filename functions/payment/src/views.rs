//! What the API answers about a payment or a refund: their JSON views, built from the
//! stored records.

use crate::store::{PaymentRecord, RefundRecord};
use serde::Serialize;
use settle_shared::domain::payment::{CaptureMethod, FailureCode, PaymentStatus, RefundStatus};
use std::collections::BTreeMap;

#[derive(Debug, Serialize)]
pub struct PaymentError {
    pub code: FailureCode,
    pub retryable: bool,
}

#[derive(Debug, Serialize)]
pub struct NextAction {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub redirect_to_url: RedirectToUrl,
}

#[derive(Debug, Serialize)]
pub struct RedirectToUrl {
    pub url: String,
}

#[derive(Debug, Serialize)]
pub struct CardView {
    pub brand: settle_shared::domain::card::Brand,
    pub last4: String,
    pub exp_month: u32,
    pub exp_year: u32,
}

#[derive(Debug, Serialize)]
pub struct PaymentView {
    pub id: String,
    pub object: &'static str,
    pub merchant_id: String,
    pub amount: i64,
    pub currency: String,
    pub capture_method: CaptureMethod,
    pub status: PaymentStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub token: String,
    pub card: CardView,
    pub amount_captured: i64,
    pub amount_refunded: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_payment_error: Option<PaymentError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_action: Option<NextAction>,
    /// Unix seconds.
    pub created: i64,
}

pub fn view(p: &PaymentRecord) -> PaymentView {
    let next_action = match (p.status, &p.challenge, &p.challenge_base) {
        (PaymentStatus::RequiresAction, Some(secret), Some(base)) => Some(NextAction {
            kind: "redirect_to_url",
            redirect_to_url: RedirectToUrl { url: format!("{base}/v1/payments/{}/3ds?challenge={secret}", p.id) },
        }),
        _ => None,
    };
    PaymentView {
        id: p.id.clone(),
        object: "payment",
        merchant_id: p.merchant_id.clone(),
        amount: p.amount,
        currency: p.currency.clone(),
        capture_method: p.capture_method,
        status: p.status,
        description: p.description.clone(),
        metadata: p.metadata.clone(),
        token: p.token_id.clone(),
        card: CardView {
            brand: p.card.brand,
            last4: p.card.last4.clone(),
            exp_month: p.card.exp_month,
            exp_year: p.card.exp_year,
        },
        amount_captured: p.amount_captured,
        amount_refunded: p.amount_refunded,
        last_payment_error: p.failure_code.map(|code| PaymentError { code, retryable: code.retryable() }),
        next_action,
        created: p.created / 1000,
    }
}

pub fn view_json(p: &PaymentRecord) -> serde_json::Value {
    serde_json::to_value(view(p)).unwrap_or_default()
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

/// A refund as the API shows it.
pub fn refund_view(r: &RefundRecord) -> RefundView {
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

/// A refund's view as event data.
pub fn refund_event_data(r: &RefundRecord) -> serde_json::Value {
    serde_json::to_value(refund_view(r)).unwrap_or_default()
}
