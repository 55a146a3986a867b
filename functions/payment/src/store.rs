//! Persistence of tokens, payments and refunds through the document-store port, and the
//! read-through cache of payments in the key-value port. Amounts are integers in minor
//! units; money changes are transactions together with their outbox events.

use crate::error::ApiError;
use crate::state::AppState;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use settle_shared::domain::card::{Brand, GatewayProfile};
use settle_shared::domain::payment::{CaptureMethod, FailureCode, PaymentStatus, RefundStatus};
use settle_shared::ports::documents::{Document, IndexSpec};
use std::collections::BTreeMap;
use std::time::Duration;

pub const TOKENS: &str = "tokens";
pub const PAYMENTS: &str = "payments";
pub const REFUNDS: &str = "refunds";
pub use settle_shared::outbox::OUTBOX;
pub const GATEWAY_EVENTS: &str = "gateway_events";

/// How long a payment stays in the cache. Every change overwrites the entry, so this only
/// bounds memory use (and staleness if Redis missed a write while it was down).
pub const CACHE_TTL: Duration = Duration::from_secs(300);

/// Every index a query of the Payment API needs; declared at cold start.
pub fn indexes() -> Vec<IndexSpec> {
    vec![
        IndexSpec::new(PAYMENTS, &["merchant_id", "created"]),
        IndexSpec::new(PAYMENTS, &["merchant_id", "status"]),
        IndexSpec::new(PAYMENTS, &["created"]),
        IndexSpec::new(REFUNDS, &["payment_id"]),
        IndexSpec::new(PAYMENTS, &["merchant_id", "idempotency_hash"]).unique(),
        IndexSpec::new(REFUNDS, &["merchant_id", "idempotency_hash"]).unique(),
    ]
    .into_iter()
    .chain(settle_shared::outbox::indexes())
    .chain(settle_shared::webhooks::indexes())
    .chain(settle_shared::settlements::indexes())
    .collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardSummary {
    pub brand: Brand,
    pub last4: String,
    pub exp_month: u32,
    pub exp_year: u32,
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    #[serde(rename = "_id")]
    pub id: String,
    pub merchant_id: String,
    pub card: CardSummary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_name: Option<String>,
    pub profile: GatewayProfile,
    pub created: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentRecord {
    #[serde(rename = "_id")]
    pub id: String,
    pub merchant_id: String,
    pub amount: i64,
    pub currency: String,
    pub capture_method: CaptureMethod,
    pub status: PaymentStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    pub token_id: String,
    pub card: CardSummary,
    pub profile: GatewayProfile,
    pub amount_captured: i64,
    /// Refunded or being refunded (pending refunds count: the money is committed).
    pub amount_refunded: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_code: Option<FailureCode>,
    /// The 3-D Secure challenge secret and the base URL it was issued under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge_base: Option<String>,
    /// Unix milliseconds.
    pub created: i64,
    pub updated: i64,
    /// Bumped by every change; guards concurrent updates and numbers the events.
    pub version: i64,
    /// The creating request's Idempotency-Key, hashed with its merchant: unique, so that
    /// even a retry after a lost idempotency record can never create a second payment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_hash: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundRecord {
    #[serde(rename = "_id")]
    pub id: String,
    pub payment_id: String,
    pub merchant_id: String,
    pub amount: i64,
    pub currency: String,
    pub status: RefundStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_code: Option<FailureCode>,
    pub created: i64,
    pub updated: i64,
    /// As on payments: one refund per merchant and Idempotency-Key, enforced by the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_hash: Option<String>,
}

/// The stored form of (merchant, Idempotency-Key).
pub fn idempotency_hash(merchant_id: &str, key: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(format!("{merchant_id}\0{key}").as_bytes()))
}

/// The record created by an earlier execution of the same (merchant, key), if any.
pub async fn created_by<T: DeserializeOwned>(
    state: &AppState,
    collection: &str,
    merchant_id: &str,
    hash: &str,
) -> Result<Option<T>, ApiError> {
    use settle_shared::ports::documents::{Cond, Query};
    let query =
        Query::new().filter(Cond::eq("merchant_id", merchant_id)).filter(Cond::eq("idempotency_hash", hash)).limit(1);
    match state.backends.documents.find(collection, &query).await?.pop() {
        Some(doc) => Ok(Some(from_doc(doc)?)),
        None => Ok(None),
    }
}

/// A page of objects, as every list route answers.
#[derive(Debug, Serialize)]
pub struct List<T> {
    pub object: &'static str,
    pub data: Vec<T>,
    pub has_more: bool,
}

impl<T> List<T> {
    pub fn new(data: Vec<T>, has_more: bool) -> Self {
        List { object: "list", data, has_more }
    }
}

pub fn to_doc<T: Serialize>(record: &T) -> Result<Document, ApiError> {
    match serde_json::to_value(record).map_err(|e| ApiError::Internal(e.into()))? {
        serde_json::Value::Object(map) => Ok(map),
        _ => Err(ApiError::Internal(anyhow::anyhow!("record is not an object"))),
    }
}

pub fn from_doc<T: DeserializeOwned>(doc: Document) -> Result<T, ApiError> {
    serde_json::from_value(serde_json::Value::Object(doc))
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored record unreadable: {e}")))
}

pub async fn load<T: DeserializeOwned>(state: &AppState, collection: &str, id: &str) -> Result<Option<T>, ApiError> {
    match state.backends.documents.get(collection, id).await? {
        Some(doc) => Ok(Some(from_doc(doc)?)),
        None => Ok(None),
    }
}

fn cache_key(state: &AppState, id: &str) -> String {
    format!("{}payment:{id}", state.config.redis_prefix)
}

/// A payment, from the cache when it is there, else from MongoDB (then cached). The
/// cache fails open: with Redis down, reads go to MongoDB.
pub async fn cached_payment(state: &AppState, id: &str) -> Result<Option<PaymentRecord>, ApiError> {
    match state.backends.kv.get_versioned(&cache_key(state, id)).await {
        Ok(Some((_, bytes))) => {
            if let Ok(record) = serde_json::from_slice::<PaymentRecord>(&bytes) {
                return Ok(Some(record));
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "payment cache unavailable; reading MongoDB"),
    }
    let record: Option<PaymentRecord> = load(state, PAYMENTS, id).await?;
    if let Some(r) = &record {
        cache_payment(state, r).await;
    }
    Ok(record)
}

/// Writes `record` into the cache unless a newer version is already there, so a slow
/// reader can never put back a copy older than the latest change.
pub async fn cache_payment(state: &AppState, record: &PaymentRecord) {
    let Ok(bytes) = serde_json::to_vec(record) else { return };
    if let Err(e) =
        state.backends.kv.set_versioned(&cache_key(state, &record.id), record.version, &bytes, CACHE_TTL).await
    {
        tracing::warn!(error = %e, payment = %record.id, "could not refresh the payment cache");
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
