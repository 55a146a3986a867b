//! Refunds in MongoDB (`refunds`), each inserted in one transaction with the payment's
//! refunded total.

use crate::error::ApiError;
use crate::outbox;
use crate::service::gateway_events::RefundResult;
use crate::state::AppState;
use crate::store::{self, from_doc, load, to_doc, PaymentRecord, RefundRecord, GATEWAY_EVENTS, PAYMENTS, REFUNDS};
use settle_shared::domain::event::CloudEvent;
use settle_shared::ports::documents::{Cond, Order, Query, StoreError, Write};

pub struct Refunds<'a> {
    pub(super) state: &'a AppState,
}

impl Refunds<'_> {
    pub async fn get(&self, id: &str) -> Result<Option<RefundRecord>, ApiError> {
        load(self.state, REFUNDS, id).await
    }

    /// A payment's refunds, oldest first.
    pub async fn of_payment(&self, payment_id: &str) -> Result<Vec<RefundRecord>, ApiError> {
        let query = Query::new().filter(Cond::eq("payment_id", payment_id)).sort("created", Order::Asc).limit(1000);
        let docs = self.state.backends.documents.find(REFUNDS, &query).await?;
        docs.into_iter().map(from_doc).collect()
    }

    /// The refund an earlier request with this merchant's Idempotency-Key created.
    pub async fn created_with_key(&self, merchant: &str, key_hash: &str) -> Result<Option<RefundRecord>, ApiError> {
        store::created_by(self.state, REFUNDS, merchant, key_hash).await
    }

    /// Inserts `refund` and moves the payment from `before` to `after` (its refunded total
    /// and version) in one transaction with the events, then publishes them. The update
    /// holds only against the state the refund was decided on: of two racing refunds one
    /// commits, the other gets a `Conflict` and decides again.
    pub async fn insert(
        &self,
        refund: &RefundRecord,
        before: &PaymentRecord,
        after: &PaymentRecord,
        events: &[CloudEvent],
    ) -> Result<(), StoreError> {
        let refund_doc = to_doc(refund).map_err(|e| StoreError::Other(e.to_string()))?;
        let update = serde_json::json!({
            "amount_refunded": after.amount_refunded, "version": after.version, "updated": after.updated,
        });
        let mut writes = vec![
            Write::Insert { collection: REFUNDS.into(), doc: refund_doc },
            Write::Update {
                collection: PAYMENTS.into(),
                id: before.id.clone(),
                conds: vec![Cond::eq("version", before.version), Cond::eq("amount_refunded", before.amount_refunded)],
                set: update.as_object().cloned().unwrap_or_default(),
            },
        ];
        writes.extend(events.iter().map(outbox::write));
        self.state.backends.documents.transaction(writes).await?;
        self.state.outbox.publish_committed(self.state, events).await;
        self.state.payments().cache(after).await;
        Ok(())
    }

    /// Whether the gateway event with this id was applied.
    pub async fn gateway_event_seen(&self, event_id: &str) -> Result<bool, ApiError> {
        Ok(self.state.backends.documents.get(GATEWAY_EVENTS, event_id).await?.is_some())
    }

    /// Records the gateway event and moves the pending refund to `refund` and the
    /// payment from `before` to `after`, in one transaction with the events, then
    /// publishes them. A `Duplicate` means the event was applied meanwhile; a `Conflict`,
    /// that the refund or the payment changed.
    pub async fn settle(
        &self,
        result: &RefundResult,
        refund: &RefundRecord,
        before: &PaymentRecord,
        after: &PaymentRecord,
        events: &[CloudEvent],
    ) -> Result<(), StoreError> {
        let received = serde_json::json!({"_id": result.event_id, "type": result.kind, "refund": refund.id, "received": refund.updated});
        let refund_set = serde_json::json!({"status": refund.status, "failure_code": refund.failure_code, "updated": refund.updated});
        let payment_set = serde_json::json!({
            "amount_refunded": after.amount_refunded, "version": after.version, "updated": after.updated
        });
        let object = |v: serde_json::Value| v.as_object().cloned().unwrap_or_default();
        let mut writes = vec![
            Write::Insert { collection: GATEWAY_EVENTS.into(), doc: object(received) },
            Write::Update {
                collection: REFUNDS.into(),
                id: refund.id.clone(),
                conds: vec![Cond::eq("status", "pending")],
                set: object(refund_set),
            },
            Write::Update {
                collection: PAYMENTS.into(),
                id: before.id.clone(),
                conds: vec![Cond::eq("version", before.version)],
                set: object(payment_set),
            },
        ];
        writes.extend(events.iter().map(outbox::write));
        self.state.backends.documents.transaction(writes).await?;
        self.state.outbox.publish_committed(self.state, events).await;
        self.state.payments().cache(after).await;
        Ok(())
    }
}
