//! Settlement aggregates, shared by csv-ingest (which writes them) and the Payment API
//! (which serves `GET /v1/settlements/summary`): collection, indexes and cache key.

use crate::ports::documents::IndexSpec;

/// One document per (file, merchant, currency, day); a day's summary adds them up.
pub const AGGREGATES: &str = "settlement_aggregates";

pub fn indexes() -> Vec<IndexSpec> {
    vec![IndexSpec::new(AGGREGATES, &["merchant_id", "date"])]
}

/// Where a merchant's summary for a day (`YYYY-MM-DD`) is cached.
pub fn summary_cache_key(prefix: &str, merchant_id: &str, date: &str) -> String {
    format!("{prefix}summary:{merchant_id}:{date}")
}
