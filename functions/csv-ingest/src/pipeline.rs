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
use settle_shared::domain::money::Currency;
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
/// Parsed items handed from the parsing thread in one message (a channel send per row
/// cost more than validating it), and how many such chunks may wait: memory stays flat.
const CHUNK: usize = 256;
const CHUNKS_IN_FLIGHT: usize = 8;
/// Mismatch events in flight at once (each waits for its publisher confirm).
const PUBLISH_CONCURRENCY: usize = 32;

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

/// What the parsing thread sends (in chunks of up to [`CHUNK`]).
enum Parsed {
    /// A valid row, its record number and the line it starts on.
    Row(SettlementRow, u64, u64),
    Reject(Reject),
    /// The file cannot be read as a settlement file at all.
    Fatal(String),
    /// Reading the body failed (the connection to S3, not the file): retry the run.
    Unreadable(String),
}

/// Running amount totals per merchant, currency, UTC day and row type: the sums the
/// aggregates store. One that would pass `i64` (about 9,200 rows at the largest amount a
/// row may carry) rejects its row instead of wrapping round: a stored total is exact or
/// absent, never wrong.
#[derive(Default)]
struct DayTotals(HashMap<(String, Currency, i64, RowType), i64>);

impl DayTotals {
    fn add(&mut self, row: &SettlementRow) -> Result<(), String> {
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
    let (tx, mut rx) = mpsc::channel::<Vec<Parsed>>(CHUNKS_IN_FLIGHT);
    let body = Counting { inner: tokio_util::io::SyncIoBridge::new(reader.body), progress: progress.clone() };
    let parser = tokio::task::spawn_blocking(move || parse_stream(body, gzipped, tx, progress));

    let mut summary = IngestSummary { status: "ingested".into(), ..Default::default() };
    let mut rejects = RejectsReport::create()?;
    let mut aggregates: HashMap<(String, String, String), Aggregate> = HashMap::new();
    let mut mismatches: Vec<(u64, SettlementRow, Outcome)> = Vec::new();
    let mut batch: Vec<(SettlementRow, u64)> = Vec::with_capacity(BATCH);
    let mut totals = DayTotals::default();
    while let Some(chunk) = rx.recv().await {
        for item in chunk {
            match item {
                Parsed::Row(row, record, line) => {
                    if let Err(reason) = totals.add(&row) {
                        summary.rejects += 1;
                        rejects.write(&Reject { record, line, column: Some(6), reason })?;
                        continue;
                    }
                    batch.push((row, line));
                    if batch.len() >= BATCH {
                        flush(backends, &ledger_id, &mut batch, &mut summary, &mut aggregates, &mut mismatches).await?;
                    }
                }
                Parsed::Reject(r) => {
                    summary.rejects += 1;
                    rejects.write(&r)?;
                }
                Parsed::Unreadable(reason) => return Err(PipelineError::Unavailable(reason)),
                Parsed::Fatal(reason) => {
                    summary.status = "rejected".into();
                    rejects.write(&Reject { record: 0, line: 1, column: None, reason: reason.clone() })?;
                    summary.reason = Some(reason);
                }
            }
        }
    }
    flush(backends, &ledger_id, &mut batch, &mut summary, &mut aggregates, &mut mismatches).await?;
    // A panic in the parser is a bug, not a file problem: report it as one.
    parser.await.map_err(|e| PipelineError::Unavailable(format!("parser failed: {e}")))?;

    if summary.rejects > 0 || summary.status == "rejected" {
        let name = key.rsplit('/').next().unwrap_or(key);
        let report_key = format!("{REJECTS_PREFIX}{name}.rejects.csv");
        let path = rejects.finish()?;
        backends
            .objects
            .put_file(&report_key, &path.0, "text/csv")
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

    // Unpublished events fail the run (the ledger stays "running"), so the retry
    // republishes them under the same ids instead of losing them.
    publish_ingested(backends, &ledger_id, &bucket, key, &summary).await?;
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
fn parse_stream(body: impl Read, gzipped: bool, tx: mpsc::Sender<Vec<Parsed>>, progress: Option<Arc<Progress>>) {
    let input: Box<dyn Read> = if gzipped { Box::new(flate2::read::MultiGzDecoder::new(body)) } else { Box::new(body) };
    let mut chunk = Vec::with_capacity(CHUNK);
    let send = |chunk: &mut Vec<Parsed>, rows: u64| {
        if let Some(p) = &progress {
            p.rows.fetch_add(rows, Ordering::Relaxed);
        }
        // An error means the consumer gave up (a store failed): stop reading.
        tx.blocking_send(std::mem::replace(chunk, Vec::with_capacity(CHUNK))).is_ok()
    };
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(input);
    let mut record = csv::ByteRecord::new();
    let mut number: u64 = 0;
    let mut unsent_rows: u64 = 0;
    loop {
        let fatal = match reader.read_byte_record(&mut record) {
            Ok(true) if number == 0 => check_header(&record).err(),
            Ok(true) => {
                chunk.push(match parse_row(&record, number) {
                    Ok(row) => Parsed::Row(row, number, record.position().map_or(number, |p| p.line())),
                    Err(reject) => Parsed::Reject(reject),
                });
                None
            }
            Ok(false) if number == 0 => Some("empty file: no header".to_string()),
            Ok(false) => {
                send(&mut chunk, unsent_rows);
                return;
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                if let csv::ErrorKind::Io(io) = e.kind() {
                    // Corrupt or truncated gzip is the file's fault; anything else (a reset
                    // connection, a timeout) is the stream's, and the run is retried.
                    use std::io::ErrorKind::{InvalidData, InvalidInput, UnexpectedEof};
                    if !matches!(io.kind(), InvalidInput | InvalidData | UnexpectedEof) {
                        chunk.push(Parsed::Unreadable(format!("object body unreadable at line {line}: {io}")));
                        send(&mut chunk, unsent_rows);
                        return;
                    }
                    Some(format!("unreadable at line {line}: {io}"))
                } else {
                    Some(format!("unreadable at line {line}"))
                }
            }
        };
        if let Some(reason) = fatal {
            chunk.push(Parsed::Fatal(reason));
            send(&mut chunk, unsent_rows);
            return;
        }
        number += 1;
        unsent_rows += 1;
        if chunk.len() >= CHUNK {
            if !send(&mut chunk, unsent_rows) {
                return;
            }
            unsent_rows = 0;
        }
    }
}

/// The rejects report, written to a temporary file as rows are rejected and uploaded
/// from it: a file where every row is bad must not grow memory with it.
struct RejectsReport {
    writer: csv::Writer<std::io::BufWriter<std::fs::File>>,
    path: TempPath,
}

/// Removes its file when dropped, whatever path the run took.
struct TempPath(std::path::PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl RejectsReport {
    fn create() -> Result<Self, PipelineError> {
        let name = format!("settle-rejects-{:016x}.csv", rand::random::<u64>());
        let path = TempPath(std::env::temp_dir().join(name));
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path.0).map_err(Self::failed)?;
        let mut writer = csv::Writer::from_writer(std::io::BufWriter::new(file));
        writer.write_record(["record", "line", "column", "reason"]).map_err(Self::failed)?;
        Ok(RejectsReport { writer, path })
    }

    fn write(&mut self, r: &Reject) -> Result<(), PipelineError> {
        let column = r.column.map(|c| c.to_string()).unwrap_or_default();
        let record = [r.record.to_string(), r.line.to_string(), column, r.reason.clone()];
        self.writer.write_record(&record).map_err(Self::failed)
    }

    /// Flushes the report and hands over its file (removed when the guard drops).
    fn finish(mut self) -> Result<TempPath, PipelineError> {
        self.writer.flush().map_err(Self::failed)?;
        Ok(self.path)
    }

    fn failed(e: impl std::fmt::Display) -> PipelineError {
        PipelineError::Unavailable(format!("rejects report (temporary file): {e}"))
    }
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
    let mut payment_ids: Vec<String> = batch.iter().map(|(r, _)| r.payment_id().to_string()).collect();
    payment_ids.sort_unstable();
    payment_ids.dedup();
    let payments: HashMap<String, Document> = get_many_chunked(backends, PAYMENTS, &payment_ids)
        .await?
        .into_iter()
        .filter_map(|d| Some((d.get("_id")?.as_str()?.to_string(), d)))
        .collect();
    // Duplicates: a natural key (payment, type, gateway reference) claimed by another line.
    let natural = |r: &SettlementRow| short_hash(&[r.payment_id(), r.row_type.as_str(), r.gateway_reference()]);
    let key_ids: Vec<String> = batch.iter().map(|(r, _)| natural(r)).collect();
    let mut owners: HashMap<String, String> = get_many_chunked(backends, KEYS, &key_ids)
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
                reconcile(&row, payments.get(row.payment_id()))
            }
        };
        summary.rows += 1;
        *summary.outcomes.entry(outcome.as_str().to_string()).or_default() += 1;
        let date = row.settled_at().format("%Y-%m-%d").to_string();
        let agg = aggregates
            .entry((row.merchant_id().to_string(), row.currency.code().to_string(), date.clone()))
            .or_default();
        agg.count += 1;
        let t = agg.by_type.entry(row.row_type.as_str().to_string()).or_default();
        t.0 += 1;
        t.1 += row.amount;
        *agg.by_outcome.entry(outcome.as_str().to_string()).or_default() += 1;
        result_docs.push(doc(json!({"_id": me, "ledger": ledger_id, "line": line,
            "settlement_id": row.settlement_id(), "payment_id": row.payment_id(),
            "gateway_reference": row.gateway_reference(), "merchant_id": row.merchant_id(), "type": row.row_type,
            "amount": row.amount, "currency": row.currency.code(), "fee": row.fee, "net": row.net,
            "settled_at": row.settled_at().to_rfc3339(), "date": date, "outcome": outcome})));
        if !matches!(outcome, Outcome::Matched) {
            mismatches.push((line, row, outcome));
        }
    }
    docs.insert_many_new(KEYS, key_docs).await?;
    docs.insert_many_new(RESULTS, result_docs).await?;
    // Published per batch, so memory stays flat however many rows mismatch.
    publish_mismatches(backends, ledger_id, mismatches).await?;
    mismatches.clear();
    Ok(())
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

fn event_id(parts: &[&str]) -> String {
    format!("evt_{}", short_hash(parts))
}

async fn send(backends: &Backends, mut e: CloudEvent) -> Result<(), PipelineError> {
    // Consumers continue the ingest's trace (CloudEvents distributed tracing).
    e.traceparent = settle_shared::otel::traceparent();
    let message = OutgoingMessage {
        routing_key: e.event_type.clone(),
        message_id: e.id.clone(),
        content_type: CLOUDEVENTS_JSON.into(),
        headers: Default::default(),
        body: e.to_json(),
    };
    backends.bus.publish(&backends.topology.exchange, &message).await.map_err(|err| {
        tracing::warn!(error = %err, event = %e.id, "settlement event not published");
        PipelineError::Unavailable(format!("event bus: {err}"))
    })
}

/// One `settlement.mismatch` per row that did not match, with ids derived from the file
/// and line: a rerun publishes the same ids, so consumers can drop repeats. Up to
/// [`PUBLISH_CONCURRENCY`] wait for their confirms at once.
async fn publish_mismatches(
    backends: &Backends,
    ledger_id: &str,
    mismatches: &[(u64, SettlementRow, Outcome)],
) -> Result<(), PipelineError> {
    use futures_util::stream::{self, StreamExt, TryStreamExt};
    // Futures collected first: a stream over a borrowing closure trips the compiler's
    // higher-ranked `Send` inference when the ingest runs in a spawned task.
    let sends: Vec<_> = mismatches
        .iter()
        .map(|(line, row, outcome)| {
            let mut e = CloudEvent::new(
                "settlement.mismatch",
                "/settle/csv-ingest",
                json!({"line": line, "outcome": outcome, "row": row}),
            );
            e.id = event_id(&[ledger_id, &line.to_string()]);
            e.subject = Some(row.payment_id().to_string());
            e.merchantid = Some(row.merchant_id().to_string());
            send(backends, e)
        })
        .collect();
    stream::iter(sends).buffer_unordered(PUBLISH_CONCURRENCY).try_collect().await
}

/// `settlement.ingested`, once the whole file is through.
async fn publish_ingested(
    backends: &Backends,
    ledger_id: &str,
    bucket: &str,
    key: &str,
    summary: &IngestSummary,
) -> Result<(), PipelineError> {
    let mut e = CloudEvent::new(
        "settlement.ingested",
        "/settle/csv-ingest",
        json!({"bucket": bucket, "key": key, "summary": summary}),
    );
    e.id = event_id(&[ledger_id, "ingested"]);
    e.subject = Some(key.to_string());
    send(backends, e).await
}

#[cfg(test)]
mod tests {
    use super::*;

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
