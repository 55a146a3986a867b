//! The ingest of one settlement file: the object body streamed (gunzipped on the fly)
//! through the `csv` crate on a blocking thread, rows validated and reconciled in
//! batches against the payments in MongoDB, results and aggregates written so that a
//! rerun converges on one clean run, rejects reported as CSV next to the file, and the
//! outcome published as CloudEvents.
//!
//! Idempotency: a ledger keyed by bucket + key + ETag makes a redelivered event a no-op
//! and an overwritten object a new run; every write is keyed by (ledger, line), so a run
//! that crashed halfway and runs again ends in the state of one clean run.

use crate::row::{check_header, parse_row, Reject, RowType, SettlementRow};
use serde::Serialize;
use serde_json::{json, Value};
use settle_shared::domain::event::{CloudEvent, CLOUDEVENTS_JSON};
use settle_shared::ports::documents::{Document, StoreError};
use settle_shared::ports::events::OutgoingMessage;
use settle_shared::ports::objects::ObjectMeta;
use settle_shared::Backends;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

pub const LEDGER: &str = "settlement_files";
pub const RESULTS: &str = "settlement_results";
pub const KEYS: &str = "settlement_keys";
pub use settle_shared::settlements::{summary_cache_key, AGGREGATES};
pub const PAYMENTS: &str = "payments";
pub const REJECTS_PREFIX: &str = "settlements/rejects/";

/// Rows reconciled and written per round trip.
const BATCH: usize = 500;

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

/// What one run found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct IngestSummary {
    /// `ingested`, `rejected` (the whole file), or `already_ingested` (a redelivery).
    pub status: String,
    pub rows: u64,
    pub rejects: u64,
    pub outcomes: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejects_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("dependency unavailable: {0}")]
    Unavailable(String),
}

impl From<StoreError> for PipelineError {
    fn from(e: StoreError) -> Self {
        PipelineError::Unavailable(e.to_string())
    }
}

/// What the parsing thread sends.
enum Parsed {
    Row(Box<SettlementRow>, u64),
    Reject(Reject),
    /// The file cannot be read as a settlement file at all.
    Fatal(String),
}

/// Sums per merchant, currency and day.
#[derive(Debug, Default, Clone, Serialize)]
struct Aggregate {
    count: u64,
    by_type: BTreeMap<String, (u64, i64)>,
    by_outcome: BTreeMap<String, u64>,
}

fn short_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

fn doc(value: Value) -> Document {
    value.as_object().cloned().unwrap_or_default()
}

/// Bytes read and rows parsed so far, for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes: AtomicU64,
    pub rows: AtomicU64,
}

/// Counts what passes through, for [`Progress`].
struct Counting<R> {
    inner: R,
    progress: Option<Arc<Progress>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(p) = &self.progress {
            p.bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(n)
    }
}

/// Ingests `key` (already known to exist with `meta`).
pub async fn ingest_object(backends: &Backends, key: &str, meta: &ObjectMeta) -> Result<IngestSummary, PipelineError> {
    ingest_object_with(backends, key, meta, None).await
}

/// [`ingest_object`], reporting progress.
pub async fn ingest_object_with(
    backends: &Backends,
    key: &str,
    meta: &ObjectMeta,
    progress: Option<Arc<Progress>>,
) -> Result<IngestSummary, PipelineError> {
    let bucket = backends.objects.bucket().to_string();
    let ledger_id = short_hash(&[&bucket, key, &meta.etag]);
    let docs = &backends.documents;
    let started = chrono::Utc::now().timestamp_millis();
    let entry = json!({"_id": ledger_id, "bucket": bucket, "key": key, "etag": meta.etag, "status": "running", "started": started});
    match docs.insert(LEDGER, doc(entry)).await {
        Ok(()) => {}
        Err(StoreError::Duplicate { .. }) => {
            let existing = docs.get(LEDGER, &ledger_id).await?.unwrap_or_default();
            if existing.get("status").and_then(Value::as_str) != Some("running") {
                let mut summary: IngestSummary =
                    serde_json::from_value(existing.get("summary").cloned().unwrap_or_default())
                        .map(|s: SummaryDoc| s.into())
                        .unwrap_or_default();
                summary.status = "already_ingested".into();
                return Ok(summary);
            }
            // "running": an earlier run died part-way. Run again; every write converges.
        }
        Err(e) => return Err(e.into()),
    }

    let Some(reader) = backends.objects.get(key).await.map_err(|e| PipelineError::Unavailable(e.to_string()))? else {
        return Ok(IngestSummary {
            status: "rejected".into(),
            reason: Some("object vanished".into()),
            ..Default::default()
        });
    };
    let gzipped = key.ends_with(".gz");
    let (tx, mut rx) = mpsc::channel::<Parsed>(2048);
    let body = Counting { inner: tokio_util::io::SyncIoBridge::new(reader.body), progress: progress.clone() };
    let parser = tokio::task::spawn_blocking(move || parse_stream(body, gzipped, tx, progress));

    let mut summary = IngestSummary { status: "ingested".into(), ..Default::default() };
    let mut rejects = csv::Writer::from_writer(Vec::new());
    write_reject_header(&mut rejects);
    let mut aggregates: HashMap<(String, String, String), Aggregate> = HashMap::new();
    let mut mismatches: Vec<(u64, SettlementRow, Outcome)> = Vec::new();
    let mut batch: Vec<(SettlementRow, u64)> = Vec::with_capacity(BATCH);
    while let Some(item) = rx.recv().await {
        match item {
            Parsed::Row(row, line) => {
                batch.push((*row, line));
                if batch.len() >= BATCH {
                    flush(backends, &ledger_id, &mut batch, &mut summary, &mut aggregates, &mut mismatches).await?;
                }
            }
            Parsed::Reject(r) => {
                summary.rejects += 1;
                write_reject(&mut rejects, &r);
            }
            Parsed::Fatal(reason) => {
                summary.status = "rejected".into();
                write_reject(&mut rejects, &Reject { record: 0, line: 1, column: None, reason: reason.clone() });
                summary.reason = Some(reason);
            }
        }
    }
    flush(backends, &ledger_id, &mut batch, &mut summary, &mut aggregates, &mut mismatches).await?;
    // A panic in the parser is a bug, not a file problem: report it as one.
    parser.await.map_err(|e| PipelineError::Unavailable(format!("parser failed: {e}")))?;

    if summary.rejects > 0 || summary.status == "rejected" {
        let name = key.rsplit('/').next().unwrap_or(key);
        let report_key = format!("{REJECTS_PREFIX}{name}.rejects.csv");
        let bytes = rejects.into_inner().unwrap_or_default();
        backends
            .objects
            .put(&report_key, bytes, "text/csv")
            .await
            .map_err(|e| PipelineError::Unavailable(e.to_string()))?;
        summary.rejects_key = Some(report_key);
    }

    // Aggregates: one document per (file, merchant, currency, day), deterministic, so a
    // rerun writes the same ones; the summary route adds files up.
    let aggregate_docs: Vec<Document> = aggregates
        .iter()
        .map(|((merchant, currency, date), a)| {
            doc(json!({"_id": short_hash(&[&ledger_id, merchant, currency, date]), "ledger": ledger_id,
                "merchant_id": merchant, "currency": currency, "date": date,
                "count": a.count, "by_type": a.by_type, "by_outcome": a.by_outcome}))
        })
        .collect();
    docs.insert_many_new(AGGREGATES, aggregate_docs).await?;
    for (merchant, _, date) in aggregates.keys() {
        // The cached summary is stale now; failing to drop it only delays freshness by its TTL.
        backends.kv.delete(&summary_cache_key(&backends.redis_prefix, merchant, date)).await.ok();
    }

    publish_ingested(backends, &ledger_id, &bucket, key, &summary).await;
    let done = json!({"status": if summary.status == "rejected" { "rejected" } else { "done" },
        "finished": chrono::Utc::now().timestamp_millis(), "summary": SummaryDoc::from(&summary)});
    docs.update(LEDGER, &ledger_id, vec![], doc(done)).await?;
    Ok(summary)
}

/// The stored form of a summary (field names stable for the ledger).
#[derive(Debug, Default, Serialize, serde::Deserialize)]
struct SummaryDoc {
    status: String,
    rows: u64,
    rejects: u64,
    outcomes: BTreeMap<String, u64>,
    rejects_key: Option<String>,
    reason: Option<String>,
}

impl From<&IngestSummary> for SummaryDoc {
    fn from(s: &IngestSummary) -> Self {
        SummaryDoc {
            status: s.status.clone(),
            rows: s.rows,
            rejects: s.rejects,
            outcomes: s.outcomes.clone(),
            rejects_key: s.rejects_key.clone(),
            reason: s.reason.clone(),
        }
    }
}

impl From<SummaryDoc> for IngestSummary {
    fn from(s: SummaryDoc) -> Self {
        IngestSummary {
            status: s.status,
            rows: s.rows,
            rejects: s.rejects,
            outcomes: s.outcomes,
            rejects_key: s.rejects_key,
            reason: s.reason,
        }
    }
}

/// Runs on a blocking thread: bytes → (gunzip) → CSV records → rows or rejects.
fn parse_stream(body: impl Read, gzipped: bool, tx: mpsc::Sender<Parsed>, progress: Option<Arc<Progress>>) {
    let input: Box<dyn Read> = if gzipped { Box::new(flate2::read::MultiGzDecoder::new(body)) } else { Box::new(body) };
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(input);
    let mut record = csv::ByteRecord::new();
    let mut number: u64 = 0;
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => {
                if number == 0 {
                    let _ = tx.blocking_send(Parsed::Fatal("empty file: no header".into()));
                }
                return;
            }
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                let reason = match e.kind() {
                    csv::ErrorKind::Io(io) => format!("unreadable at line {line}: {io}"),
                    _ => format!("unreadable at line {line}"),
                };
                let _ = tx.blocking_send(Parsed::Fatal(reason));
                return;
            }
        }
        let item = if number == 0 {
            match check_header(&record) {
                Ok(()) => None,
                Err(reason) => {
                    let _ = tx.blocking_send(Parsed::Fatal(reason));
                    return;
                }
            }
        } else {
            Some(match parse_row(&record, number) {
                Ok(row) => Parsed::Row(Box::new(row), record.position().map_or(number, |p| p.line())),
                Err(reject) => Parsed::Reject(reject),
            })
        };
        number += 1;
        if let Some(p) = &progress {
            p.rows.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(item) = item {
            if tx.blocking_send(item).is_err() {
                return; // the consumer gave up (a store failed)
            }
        }
    }
}

fn write_reject_header(w: &mut csv::Writer<Vec<u8>>) {
    let _ = w.write_record(["record", "line", "column", "reason"]);
}

fn write_reject(w: &mut csv::Writer<Vec<u8>>, r: &Reject) {
    let column = r.column.map(|c| c.to_string()).unwrap_or_default();
    let _ = w.write_record([r.record.to_string(), r.line.to_string(), column, r.reason.clone()]);
}

/// Reconciles and writes one batch.
async fn flush(
    backends: &Backends,
    ledger_id: &str,
    batch: &mut Vec<(SettlementRow, u64)>,
    summary: &mut IngestSummary,
    aggregates: &mut HashMap<(String, String, String), Aggregate>,
    mismatches: &mut Vec<(u64, SettlementRow, Outcome)>,
) -> Result<(), PipelineError> {
    if batch.is_empty() {
        return Ok(());
    }
    let docs = &backends.documents;
    let payment_ids: Vec<String> = batch.iter().map(|(r, _)| r.payment_id.clone()).collect();
    let payments: HashMap<String, Document> = docs
        .get_many(PAYMENTS, &payment_ids)
        .await?
        .into_iter()
        .filter_map(|d| Some((d.get("_id")?.as_str()?.to_string(), d)))
        .collect();
    // Duplicates: a natural key (payment, type, gateway reference) claimed by another line.
    let natural = |r: &SettlementRow| short_hash(&[&r.payment_id, r.row_type.as_str(), &r.gateway_reference]);
    let key_ids: Vec<String> = batch.iter().map(|(r, _)| natural(r)).collect();
    let mut owners: HashMap<String, String> = docs
        .get_many(KEYS, &key_ids)
        .await?
        .into_iter()
        .filter_map(|d| Some((d.get("_id")?.as_str()?.to_string(), d.get("owner")?.as_str()?.to_string())))
        .collect();
    let mut key_docs = Vec::new();
    let mut result_docs = Vec::new();
    for ((row, line), key_id) in batch.drain(..).zip(key_ids) {
        let me = format!("{ledger_id}:{line}");
        let outcome = match owners.get(&key_id) {
            Some(owner) if *owner != me => Outcome::Duplicate,
            _ => {
                owners.insert(key_id.clone(), me.clone());
                key_docs.push(doc(json!({"_id": key_id, "owner": me})));
                reconcile(&row, payments.get(&row.payment_id))
            }
        };
        summary.rows += 1;
        *summary.outcomes.entry(outcome.as_str().to_string()).or_default() += 1;
        let date = row.settled_at.format("%Y-%m-%d").to_string();
        let agg = aggregates.entry((row.merchant_id.clone(), row.currency.clone(), date.clone())).or_default();
        agg.count += 1;
        let t = agg.by_type.entry(row.row_type.as_str().to_string()).or_default();
        t.0 += 1;
        t.1 += row.amount;
        *agg.by_outcome.entry(outcome.as_str().to_string()).or_default() += 1;
        result_docs.push(doc(json!({"_id": me, "ledger": ledger_id, "line": line, "settlement_id": row.settlement_id,
            "payment_id": row.payment_id, "gateway_reference": row.gateway_reference, "merchant_id": row.merchant_id,
            "type": row.row_type, "amount": row.amount, "currency": row.currency, "fee": row.fee, "net": row.net,
            "settled_at": row.settled_at.to_rfc3339(), "date": date, "outcome": outcome})));
        if !matches!(outcome, Outcome::Matched) {
            mismatches.push((line, row, outcome));
        }
    }
    docs.insert_many_new(KEYS, key_docs).await?;
    docs.insert_many_new(RESULTS, result_docs).await?;
    // Published per batch, so memory stays flat however many rows mismatch.
    publish_mismatches(backends, ledger_id, mismatches).await;
    mismatches.clear();
    Ok(())
}

/// One row against the payment it names.
pub fn reconcile(row: &SettlementRow, payment: Option<&Document>) -> Outcome {
    let Some(p) = payment else { return Outcome::UnknownPayment };
    if p.get("currency").and_then(Value::as_str) != Some(row.currency.as_str()) {
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

fn event_id(parts: &[&str]) -> String {
    format!("evt_{}", short_hash(parts))
}

async fn send(backends: &Backends, e: &CloudEvent) {
    let message = OutgoingMessage {
        routing_key: e.event_type.clone(),
        message_id: e.id.clone(),
        content_type: CLOUDEVENTS_JSON.into(),
        headers: Default::default(),
        body: e.to_json(),
    };
    if let Err(err) = backends.bus.publish(&backends.topology.exchange, &message).await {
        tracing::warn!(error = %err, event = %e.id, "settlement event not published");
    }
}

/// One `settlement.mismatch` per row that did not match, with ids derived from the file
/// and line: a rerun publishes the same ids, so consumers can drop repeats. Failures are
/// logged; the results in MongoDB hold every outcome either way.
async fn publish_mismatches(backends: &Backends, ledger_id: &str, mismatches: &[(u64, SettlementRow, Outcome)]) {
    for (line, row, outcome) in mismatches {
        let mut e = CloudEvent::new(
            "settlement.mismatch",
            "/settle/csv-ingest",
            json!({"line": line, "outcome": outcome, "row": row}),
        );
        e.id = event_id(&[ledger_id, &line.to_string()]);
        e.subject = Some(row.payment_id.clone());
        e.merchantid = Some(row.merchant_id.clone());
        send(backends, &e).await;
    }
}

/// `settlement.ingested`, once the whole file is through.
async fn publish_ingested(backends: &Backends, ledger_id: &str, bucket: &str, key: &str, summary: &IngestSummary) {
    let mut e = CloudEvent::new(
        "settlement.ingested",
        "/settle/csv-ingest",
        json!({"bucket": bucket, "key": key, "summary": summary}),
    );
    e.id = event_id(&[ledger_id, "ingested"]);
    e.subject = Some(key.to_string());
    send(backends, &e).await;
}
