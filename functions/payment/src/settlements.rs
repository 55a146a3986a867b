//! `GET /v1/settlements/summary?merchant_id=…&date=YYYY-MM-DD`: a merchant's settled
//! totals for a day (counts and sums per currency, type and reconciliation outcome), as
//! csv-ingest aggregated them. Served from Redis, else from MongoDB and then cached; the
//! ingest drops the cached copy whenever it adds to that day.

use crate::error::ApiError;
use crate::guard::Caller;
use crate::input::query_params;
use crate::state::AppState;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Map, Value};
use settle_shared::domain::ids::MerchantId;
use settle_shared::ports::documents::{Cond, Query};
use settle_shared::settlements::{summary_cache_key, AGGREGATES};
use std::time::Duration;

const CACHE_TTL: Duration = Duration::from_secs(300);

pub async fn summary(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = query_params(raw.as_deref(), &["merchant_id", "date"])?;
    let date = params.get("date").ok_or_else(|| ApiError::field("date", "is required (YYYY-MM-DD)"))?;
    chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| ApiError::field("date", "must be YYYY-MM-DD"))?;
    let wanted = params
        .get("merchant_id")
        .map(|m| MerchantId::parse(m).map_err(|e| ApiError::field("merchant_id", e.to_string())))
        .transpose()?;
    let merchant = match (caller.read_scope()?, wanted) {
        (Some(own), Some(m)) if &m != own => return Err(ApiError::NotFound("settlement summary")),
        (Some(own), _) => own.clone(),
        (None, Some(m)) => m,
        (None, None) => return Err(ApiError::field("merchant_id", "is required for support and admin")),
    };
    let key = summary_cache_key(&state.config.redis_prefix, merchant.as_str(), date);
    match state.backends.kv.get(&key).await {
        Ok(Some(bytes)) => {
            if let Ok(cached) = serde_json::from_slice::<Value>(&bytes) {
                return Ok(Json(cached).into_response());
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "summary cache unavailable; reading MongoDB"),
    }
    let query = Query::new()
        .filter(Cond::eq("merchant_id", merchant.as_str()))
        .filter(Cond::eq("date", date.as_str()))
        .limit(10_000);
    let docs = state.backends.documents.find(AGGREGATES, &query).await?;
    let mut currencies: Map<String, Value> = Map::new();
    // Exact or refused: a total past i64 (thousands of files' worth of the largest
    // amounts) is an error naming itself, never a wrapped-round number.
    let mut overflow = false;
    for d in docs {
        let currency = d.get("currency").and_then(Value::as_str).unwrap_or("XXX").to_string();
        let entry = currencies.entry(currency).or_insert_with(|| json!({"count": 0, "by_type": {}, "by_outcome": {}}));
        let mut add = |slot: &mut Value, n: i64| match slot.as_i64().unwrap_or(0).checked_add(n) {
            Some(sum) => *slot = json!(sum),
            None => overflow = true,
        };
        add(&mut entry["count"], d.get("count").and_then(Value::as_i64).unwrap_or(0));
        for (t, pair) in d.get("by_type").and_then(Value::as_object).into_iter().flatten() {
            let slot = &mut entry["by_type"][t];
            if slot.is_null() {
                *slot = json!({"count": 0, "amount": 0});
            }
            add(&mut slot["count"], pair[0].as_i64().unwrap_or(0));
            add(&mut slot["amount"], pair[1].as_i64().unwrap_or(0));
        }
        for (o, n) in d.get("by_outcome").and_then(Value::as_object).into_iter().flatten() {
            add(&mut entry["by_outcome"][o], n.as_i64().unwrap_or(0));
        }
    }
    if overflow {
        return Err(ApiError::Conflict("this day's totals pass the largest sum Settle can report"));
    }
    let body = json!({"object": "settlement_summary", "merchant_id": merchant.as_str(), "date": date, "currencies": currencies});
    if let Ok(bytes) = serde_json::to_vec(&body) {
        state.backends.kv.set(&key, &bytes, Some(CACHE_TTL)).await.ok();
    }
    Ok(Json(body).into_response())
}
