//! Sums per merchant, currency and day: the running totals that keep every stored sum
//! exact, and the aggregate documents the summary route adds up.

use super::{doc, short_hash, summary_cache_key, Outcome, PipelineError, AGGREGATES};
use crate::row::{RowType, SettlementRow};
use serde::Serialize;
use serde_json::json;
use settle_shared::domain::money::Currency;
use settle_shared::ports::documents::Document;
use settle_shared::Backends;
use std::collections::{BTreeMap, HashMap};

/// Running amount totals per merchant, currency, UTC day and row type: the sums the
/// aggregates store. One that would pass `i64` (about 9,200 rows at the largest amount a
/// row may carry) rejects its row instead of wrapping round: a stored total is exact or
/// absent, never wrong.
#[derive(Default)]
pub(super) struct DayTotals(HashMap<(String, Currency, i64, RowType), i64>);

impl DayTotals {
    pub(super) fn add(&mut self, row: &SettlementRow) -> Result<(), String> {
        let day = row.settled_at().timestamp().div_euclid(86_400);
        let key = (row.merchant_id().to_string(), row.currency, day, row.row_type);
        let total = self.0.entry(key).or_default();
        match total.checked_add(row.amount) {
            Some(sum) => {
                *total = sum;
                Ok(())
            }
            None => Err(format!(
                "amount: the day's {} total for this merchant in {} would pass the largest sum Settle stores",
                row.row_type.as_str(),
                row.currency.code()
            )),
        }
    }
}

/// Sums per merchant, currency and day.
#[derive(Debug, Default, Clone, Serialize)]
pub(super) struct Aggregate {
    count: u64,
    by_type: BTreeMap<String, (u64, i64)>,
    by_outcome: BTreeMap<String, u64>,
}

impl Aggregate {
    /// Counts in a row that reconciled as `outcome`.
    pub(super) fn add(&mut self, row: &SettlementRow, outcome: Outcome) {
        self.count += 1;
        let t = self.by_type.entry(row.row_type.as_str().to_string()).or_default();
        t.0 += 1;
        t.1 += row.amount;
        *self.by_outcome.entry(outcome.as_str().to_string()).or_default() += 1;
    }
}

/// A run's aggregates by merchant, currency and date (`YYYY-MM-DD`).
pub(super) type Aggregates = HashMap<(String, String, String), Aggregate>;

/// Writes one document per (file, merchant, currency, day), deterministic, so a rerun
/// writes the same ones; the summary route adds files up.
pub(super) async fn store(backends: &Backends, ledger_id: &str, aggregates: &Aggregates) -> Result<(), PipelineError> {
    let aggregate_docs: Vec<Document> = aggregates
        .iter()
        .map(|((merchant, currency, date), a)| {
            doc(json!({"_id": short_hash(&[ledger_id, merchant, currency, date]), "ledger": ledger_id,
                "merchant_id": merchant, "currency": currency, "date": date,
                "count": a.count, "by_type": a.by_type, "by_outcome": a.by_outcome}))
        })
        .collect();
    backends.documents.insert_many_new(AGGREGATES, aggregate_docs).await?;
    for (merchant, _, date) in aggregates.keys() {
        // The cached summary is stale now; failing to drop it only delays freshness by its TTL.
        backends.kv.delete(&summary_cache_key(&backends.redis_prefix, merchant, date)).await.ok();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::parse_row;

    fn row(merchant: &str, amount: &str, at: &str) -> SettlementRow {
        let mut record = csv::ByteRecord::new();
        for field in ["s1", "pay_1", "gw_1", merchant, "charge", amount, "USD", "0", amount, at] {
            record.push_field(field.as_bytes());
        }
        parse_row(&record, 1).unwrap()
    }

    #[test]
    fn a_day_total_that_would_pass_i64_rejects_its_row_instead_of_wrapping() {
        let mut totals = DayTotals::default();
        let largest = row("m_1", "10000000000000.00", "2026-11-27T06:00:00Z");
        assert_eq!(largest.amount, settle_shared::domain::money::Amount::MAX);
        for _ in 0..i64::MAX / largest.amount {
            totals.add(&largest).unwrap();
        }
        let refused = totals.add(&largest).unwrap_err();
        assert!(refused.starts_with("amount: the day's charge total"), "{refused}");
        assert!(totals.add(&largest).is_err(), "the total stays where it was");
        // Another day, another merchant, or an amount that brings the total down still adds.
        totals.add(&row("m_1", "10000000000000.00", "2026-11-28T00:00:00Z")).unwrap();
        totals.add(&row("m_2", "10000000000000.00", "2026-11-27T23:59:59Z")).unwrap();
        totals.add(&row("m_1", "-1.00", "2026-11-27T12:00:00+01:00")).unwrap();
    }
}
