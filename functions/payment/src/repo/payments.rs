//! Payments in MongoDB (`payments`), read through the Redis cache where a read may be.

use crate::error::ApiError;
use crate::outbox;
use crate::state::AppState;
use crate::store::{self, load, to_doc, PaymentRecord, PAYMENTS};
use settle_shared::domain::event::CloudEvent;
use settle_shared::domain::ids::{MerchantId, PaymentId};
use settle_shared::domain::payment::PaymentStatus;
use settle_shared::ports::documents::{Cond, Op, Order, Query, StoreError, Write};
use std::time::Duration;

pub struct Payments<'a> {
    pub(super) state: &'a AppState,
}

/// Which payments a list shows, newest first.
#[derive(Debug, Default)]
pub struct PaymentFilter {
    /// `None`: every merchant's (support and admin).
    pub merchant: Option<MerchantId>,
    pub status: Option<PaymentStatus>,
    /// The page after this payment.
    pub starting_after: Option<PaymentId>,
    /// Unix milliseconds, both ends included.
    pub created_from: Option<i64>,
    pub created_to: Option<i64>,
    pub limit: u32,
}

impl Payments<'_> {
    /// The stored payment (MongoDB, never the cache: every change decides on this).
    pub async fn get(&self, id: &str) -> Result<Option<PaymentRecord>, ApiError> {
        load(self.state, PAYMENTS, id).await
    }

    /// The payment for a read: from the cache when it is there.
    pub async fn read(&self, id: &str) -> Result<Option<PaymentRecord>, ApiError> {
        store::cached_payment(self.state, id).await
    }

    /// The payment an earlier request with this merchant's Idempotency-Key created.
    pub async fn created_with_key(&self, merchant: &str, key_hash: &str) -> Result<Option<PaymentRecord>, ApiError> {
        store::created_by(self.state, PAYMENTS, merchant, key_hash).await
    }

    /// Inserts a new payment with its events in one transaction, then publishes them.
    /// A write conflict can only come from another transaction holding its
    /// Idempotency-Key's index entry (an earlier try whose client gave up while it still
    /// ran): that one commits or aborts within moments, so the insert is tried again a
    /// few times before the conflict is answered.
    pub async fn insert(&self, record: &PaymentRecord, events: &[CloudEvent]) -> Result<(), StoreError> {
        let doc = to_doc(record).map_err(|e| StoreError::Other(e.to_string()))?;
        let mut writes = vec![Write::Insert { collection: PAYMENTS.into(), doc }];
        writes.extend(events.iter().map(outbox::write));
        let documents = &self.state.backends.documents;
        let mut wait = Duration::from_millis(20);
        for _ in 0..6 {
            match documents.transaction(writes.clone()).await {
                Err(StoreError::Conflict(_)) => tokio::time::sleep(wait).await,
                other => return self.committed(other, record, events).await,
            }
            wait *= 2;
        }
        let last = documents.transaction(writes).await;
        self.committed(last, record, events).await
    }

    /// Stores `next` over the payment as it was at `version`, with its events, in one
    /// transaction; a `Conflict` means another change won the race.
    pub async fn replace(&self, version: i64, next: &PaymentRecord, events: &[CloudEvent]) -> Result<(), StoreError> {
        let mut set = to_doc(next).map_err(|e| StoreError::Other(e.to_string()))?;
        set.remove("_id");
        // Fields that are now absent must be cleared, not left behind.
        for field in ["failure_code", "challenge", "challenge_base"] {
            set.entry(field.to_string()).or_insert(serde_json::Value::Null);
        }
        let update = Write::Update {
            collection: PAYMENTS.into(),
            id: next.id.clone(),
            conds: vec![Cond::eq("version", version)],
            set,
        };
        let mut writes = vec![update];
        writes.extend(events.iter().map(outbox::write));
        let result = self.state.backends.documents.transaction(writes).await;
        self.committed(result, next, events).await
    }

    /// After a commit: the events published and the cache refreshed.
    async fn committed(
        &self,
        result: Result<(), StoreError>,
        record: &PaymentRecord,
        events: &[CloudEvent],
    ) -> Result<(), StoreError> {
        if result.is_ok() {
            self.state.outbox.publish_committed(self.state, events).await;
            self.cache(record).await;
        }
        result
    }

    /// Refreshes the cached copy (a newer one already there wins).
    pub async fn cache(&self, record: &PaymentRecord) {
        store::cache_payment(self.state, record).await
    }

    /// One page: at most `filter.limit` payments, and whether more follow.
    pub async fn list(&self, filter: &PaymentFilter) -> Result<(Vec<PaymentRecord>, bool), ApiError> {
        let mut query = Query::new().sort("_id", Order::Desc).limit(filter.limit + 1);
        if let Some(merchant) = &filter.merchant {
            query = query.filter(Cond::eq("merchant_id", merchant.as_str()));
        }
        if let Some(status) = filter.status {
            query = query.filter(Cond::eq("status", status.as_str()));
        }
        if let Some(after) = &filter.starting_after {
            query = query.filter(Cond::new("_id", Op::Lt, after.as_str()));
        }
        if let Some(from) = filter.created_from {
            query = query.filter(Cond::new("created", Op::Gte, from));
        }
        if let Some(to) = filter.created_to {
            query = query.filter(Cond::new("created", Op::Lte, to));
        }
        let docs = self.state.backends.documents.find(PAYMENTS, &query).await?;
        let has_more = docs.len() > filter.limit as usize;
        let page = docs.into_iter().take(filter.limit as usize).map(store::from_doc).collect::<Result<_, _>>()?;
        Ok((page, has_more))
    }
}
