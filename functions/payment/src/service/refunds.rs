//! Refunds: partial and multiple, never more in total than was captured. The limit is
//! enforced by the database: the refund is inserted in one transaction with a
//! conditional update of the payment's version and refunded total, so of two racing
//! refunds only one can commit against a given state.

use super::{race_pause, RACE_RETRIES};
use crate::error::ApiError;
use crate::outbox::{self, Origin};
use crate::state::AppState;
use crate::store::{idempotency_hash, now_ms, PaymentRecord, RefundRecord};
use crate::views::refund_event_data;
use crate::views::view_json;
use settle_shared::domain::ids::{MerchantId, PaymentId, RefundId};
use settle_shared::domain::payment::{refund, RefundError, RefundStatus};
use settle_shared::metrics::{Measure, Unit};
use settle_shared::ports::documents::StoreError;

/// A refund to make, as the edge has parsed and checked it.
#[derive(Debug)]
pub struct NewRefund {
    pub merchant: MerchantId,
    pub payment: PaymentId,
    /// Minor units, positive; `None`: everything still refundable.
    pub amount: Option<i64>,
    pub reason: Option<String>,
    pub idempotency_key: String,
}

/// Refunds the payment, or answers the refund an earlier execution with the same
/// Idempotency-Key committed: never a second refund.
pub async fn create(state: &AppState, new: NewRefund, origin: &Origin) -> Result<RefundRecord, ApiError> {
    let merchant = new.merchant.as_str();
    let hash = idempotency_hash(merchant, &new.idempotency_key);
    for attempt in 0..RACE_RETRIES {
        let payment = state.payments().get(new.payment.as_str()).await?.filter(|p| p.merchant_id == merchant);
        let payment = payment.ok_or(ApiError::NotFound("payment"))?;
        let (record, next) = decide(&payment, &new, &hash)?;
        let events: Vec<_> = (record.status == RefundStatus::Succeeded)
            .then(|| {
                let mut data = refund_event_data(&record);
                data["payment_data"] = view_json(&next);
                outbox::event("refund.succeeded", &record.merchant_id, &record.id, next.version, data, origin)
            })
            .into_iter()
            .collect();
        match state.refunds().insert(&record, &payment, &next, &events).await {
            Ok(()) => {
                record_metrics(&record);
                return Ok(record);
            }
            Err(StoreError::Duplicate { .. }) => {
                return state
                    .refunds()
                    .created_with_key(merchant, &hash)
                    .await?
                    .ok_or(ApiError::Conflict("a request with this Idempotency-Key is finishing; retry"));
            }
            Err(StoreError::Conflict(_)) => tokio::time::sleep(race_pause(attempt)).await,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Unavailable("MongoDB (too much contention on this payment)"))
}

/// The refund and the payment after it, decided on the payment as read.
fn decide(payment: &PaymentRecord, new: &NewRefund, hash: &str) -> Result<(RefundRecord, PaymentRecord), ApiError> {
    let amount = new.amount.unwrap_or(payment.amount_captured - payment.amount_refunded);
    let (captured, refunded) = (payment.amount_captured, payment.amount_refunded);
    let status = refund(payment.status, captured, refunded, amount.max(1), payment.profile).map_err(|e| match e {
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
        reason: new.reason.clone(),
        failure_code: None,
        created: now,
        updated: now,
        idempotency_hash: Some(hash.to_string()),
    };
    let mut next = payment.clone();
    next.amount_refunded += amount;
    next.version += 1;
    next.updated = now;
    Ok((record, next))
}

fn record_metrics(record: &RefundRecord) {
    let amount = Measure { name: "RefundAmount", value: record.amount as f64, unit: Unit::None };
    crate::metrics::record(
        &[("Currency", &record.currency)],
        &[Measure::count("Refunds", 1), amount],
        &[("payment_id", serde_json::json!(record.payment_id)), ("refund_id", serde_json::json!(record.id))],
    );
}
