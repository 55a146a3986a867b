//! Reconciliation: each batch of rows checked against the payments they name and against
//! duplicates, its results and outcomes written, its mismatches published.

use super::aggregate::Aggregates;
use super::publish::publish_mismatches;
use super::{doc, short_hash, IngestSummary, PipelineError, KEYS, PAYMENTS, RESULTS};
use crate::row::{RowType, SettlementRow};
use serde::Serialize;
use serde_json::{json, Value};
use settle_shared::ports::documents::{Document, StoreError};
use settle_shared::Backends;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Matched,
    AmountMismatch,
    CurrencyMismatch,
    UnknownPayment,
    Duplicate,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Matched => "matched",
            Outcome::AmountMismatch => "amount_mismatch",
            Outcome::CurrencyMismatch => "currency_mismatch",
            Outcome::UnknownPayment => "unknown_payment",
            Outcome::Duplicate => "duplicate",
        }
    }
}

/// Reconciles and writes one batch.
pub(super) async fn flush(
    backends: &Backends,
    ledger_id: &str,
    batch: &mut Vec<(SettlementRow, u64)>,
    summary: &mut IngestSummary,
    aggregates: &mut Aggregates,
    mismatches: &mut Vec<(u64, SettlementRow, Outcome)>,
) -> Result<(), PipelineError> {
    if batch.is_empty() {
        return Ok(());
    }
    let payments = payments_named(backends, batch).await?;
    // Duplicates: a natural key (payment, type, gateway reference) claimed by another line.
    let natural = |r: &SettlementRow| short_hash(&[r.payment_id(), r.row_type.as_str(), r.gateway_reference()]);
    let key_ids: Vec<String> = batch.iter().map(|(r, _)| natural(r)).collect();
    let mut owners = key_owners(backends, &key_ids).await?;
    let mut key_docs = Vec::new();
    let mut result_docs = Vec::new();
    for ((row, line), key_id) in batch.drain(..).zip(key_ids) {
        let me = format!("{ledger_id}:{line}");
        let outcome = match owners.get(&key_id) {
            Some(owner) if *owner != me => Outcome::Duplicate,
            _ => {
                owners.insert(key_id.clone(), me.clone());
                key_docs.push(doc(json!({"_id": key_id, "owner": me})));
                reconcile(&row, payments.get(row.payment_id()))
            }
        };
        summary.rows += 1;
        *summary.outcomes.entry(outcome.as_str().to_string()).or_default() += 1;
        let date = row.settled_at().format("%Y-%m-%d").to_string();
        aggregates
            .entry((row.merchant_id().to_string(), row.currency.code().to_string(), date.clone()))
            .or_default()
            .add(&row, outcome);
        result_docs.push(result_doc(ledger_id, &me, line, &row, date, outcome));
        if !matches!(outcome, Outcome::Matched) {
            mismatches.push((line, row, outcome));
        }
    }
    let docs = &backends.documents;
    docs.insert_many_new(KEYS, key_docs).await?;
    docs.insert_many_new(RESULTS, result_docs).await?;
    // Published per batch, so memory stays flat however many rows mismatch.
    publish_mismatches(backends, ledger_id, mismatches).await?;
    mismatches.clear();
    Ok(())
}

/// The payments a batch names, by id.
async fn payments_named(
    backends: &Backends,
    batch: &[(SettlementRow, u64)],
) -> Result<HashMap<String, Document>, StoreError> {
    let mut payment_ids: Vec<String> = batch.iter().map(|(r, _)| r.payment_id().to_string()).collect();
    payment_ids.sort_unstable();
    payment_ids.dedup();
    Ok(get_many_chunked(backends, PAYMENTS, &payment_ids)
        .await?
        .into_iter()
        .filter_map(|d| Some((d.get("_id")?.as_str()?.to_string(), d)))
        .collect())
}

/// Which line (`ledger:line`) already claimed each of these natural keys.
async fn key_owners(backends: &Backends, key_ids: &[String]) -> Result<HashMap<String, String>, StoreError> {
    Ok(get_many_chunked(backends, KEYS, key_ids)
        .await?
        .into_iter()
        .filter_map(|d| Some((d.get("_id")?.as_str()?.to_string(), d.get("owner")?.as_str()?.to_string())))
        .collect())
}

/// The stored result of one row: the row, where it was, and its outcome.
fn result_doc(ledger_id: &str, id: &str, line: u64, row: &SettlementRow, date: String, outcome: Outcome) -> Document {
    doc(json!({"_id": id, "ledger": ledger_id, "line": line,
        "settlement_id": row.settlement_id(), "payment_id": row.payment_id(),
        "gateway_reference": row.gateway_reference(), "merchant_id": row.merchant_id(), "type": row.row_type,
        "amount": row.amount, "currency": row.currency.code(), "fee": row.fee, "net": row.net,
        "settled_at": row.settled_at().to_rfc3339(), "date": date, "outcome": outcome}))
}

/// Ids per lookup: a long `$in` list costs more than its share on some servers (on the
/// local MongoDB emulator 500 ids took 200 ms, 5 lookups of 100 took 60), so a batch's
/// lookups go out in chunks, concurrently.
const LOOKUP_CHUNK: usize = 100;

async fn get_many_chunked(backends: &Backends, collection: &str, ids: &[String]) -> Result<Vec<Document>, StoreError> {
    let lookups: Vec<_> = ids.chunks(LOOKUP_CHUNK).map(|c| backends.documents.get_many(collection, c)).collect();
    let found = futures_util::future::try_join_all(lookups).await?;
    Ok(found.into_iter().flatten().collect())
}

/// One row against the payment it names.
pub fn reconcile(row: &SettlementRow, payment: Option<&Document>) -> Outcome {
    let Some(p) = payment else { return Outcome::UnknownPayment };
    if p.get("currency").and_then(Value::as_str) != Some(row.currency.code()) {
        return Outcome::CurrencyMismatch;
    }
    let int = |k: &str| p.get(k).and_then(Value::as_i64).unwrap_or(0);
    let ok = match row.row_type {
        RowType::Charge => row.amount == int("amount_captured"),
        RowType::Refund => row.amount.abs() <= int("amount_refunded") && row.amount != 0,
        RowType::Chargeback => row.amount.abs() <= int("amount_captured"),
        RowType::Fee => true,
    };
    if ok {
        Outcome::Matched
    } else {
        Outcome::AmountMismatch
    }
}
