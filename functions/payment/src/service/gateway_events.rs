//! The gateway's asynchronous results: a pending refund that settled or failed later.
//! Each gateway event is applied once: its id is recorded in the same transaction as the
//! refund's and the payment's change and their event.

use super::{race_pause, RACE_RETRIES};
use crate::error::ApiError;
use crate::outbox::{self, Origin};
use crate::state::AppState;
use crate::store::now_ms;
use crate::views::refund_event_data;
use crate::views::view_json;
use settle_shared::domain::ids::RefundId;
use settle_shared::domain::payment::{FailureCode, RefundStatus};
use settle_shared::ports::documents::StoreError;

/// A refund's result, as the gateway reported it.
#[derive(Debug)]
pub struct RefundResult {
    /// The gateway's event id: one result per id.
    pub event_id: String,
    /// The gateway's event type, kept with the id.
    pub kind: String,
    pub refund: RefundId,
    /// `Succeeded` or `Failed`.
    pub outcome: RefundStatus,
}

/// Whether the event was new or already applied.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    Applied,
    Duplicate,
}

/// Applies a refund's result: a failed refund's amount is refundable again, and either
/// way `refund.succeeded` or `refund.failed` is published.
pub async fn apply_refund_result(
    state: &AppState,
    result: &RefundResult,
    origin: &Origin,
) -> Result<Received, ApiError> {
    for attempt in 0..RACE_RETRIES {
        if state.refunds().gateway_event_seen(&result.event_id).await? {
            return Ok(Received::Duplicate);
        }
        let refund = state.refunds().get(result.refund.as_str()).await?;
        let refund = refund.ok_or_else(|| ApiError::field("data.refund", "no such refund"))?;
        let payment = state.payments().get(&refund.payment_id).await?.ok_or(ApiError::NotFound("payment"))?;
        if refund.status != RefundStatus::Pending {
            let detail = format!("refund is already {:?}", refund.status).to_lowercase();
            return Err(ApiError::InvalidState { detail, current: payment.status });
        }
        let now = now_ms();
        let mut next_refund = refund.clone();
        next_refund.status = result.outcome;
        next_refund.updated = now;
        let mut next_payment = payment.clone();
        next_payment.version += 1;
        next_payment.updated = now;
        if result.outcome == RefundStatus::Failed {
            next_refund.failure_code = Some(FailureCode::RefundFailed);
            // The money was never returned: it is refundable again.
            next_payment.amount_refunded -= refund.amount;
        }
        let event_type = if result.outcome == RefundStatus::Failed { "refund.failed" } else { "refund.succeeded" };
        let mut data = refund_event_data(&next_refund);
        data["payment_data"] = view_json(&next_payment);
        let merchant = &refund.merchant_id;
        let events = [outbox::event(event_type, merchant, &refund.id, next_payment.version, data, origin)];
        let settled = state.refunds().settle(result, &next_refund, &payment, &next_payment, &events).await;
        match settled {
            Ok(()) => return Ok(Received::Applied),
            // Another delivery of the same event, or a change to the payment, came first.
            Err(StoreError::Conflict(_)) | Err(StoreError::Duplicate { .. }) => {
                tokio::time::sleep(race_pause(attempt)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Unavailable("MongoDB (too much contention on this refund)"))
}
