//! The ingest of one settlement file: the object body streamed (gunzipped on the fly)
//! through the `csv` crate on a blocking thread, rows validated and reconciled in
//! batches against the payments in MongoDB, results and aggregates written so that a
//! rerun converges on one clean run, rejects reported as CSV under `settlements/rejects/`, and the
//! outcome published as CloudEvents.
//!
//! Idempotency: a ledger keyed by bucket + key + ETag makes a redelivered event a no-op
//! and an overwritten object a new run; every write is keyed by (ledger, line), so a run
//! that crashed halfway and runs again ends in the state of one clean run.

mod aggregate;
mod parser;
mod publish;
mod reconcile;
mod report;

pub use parser::Progress;
pub use reconcile::{reconcile, Outcome};

use crate::row::{Reject, SettlementRow};
use aggregate::{Aggregates, DayTotals};
use parser::Parsed;
use publish::publish_ingested;
use reconcile::flush;
use report::RejectsReport;
use serde::Serialize;
use serde_json::{json, Value};
use settle_shared::ports::documents::{Document, StoreError};
use settle_shared::ports::objects::ObjectMeta;
use settle_shared::Backends;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
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
    if let Some(earlier) = claim_ledger(backends, &ledger_id, &bucket, key, meta).await? {
        return Ok(earlier);
    }

    let Some(reader) = backends.objects.get(key).await.map_err(|e| PipelineError::Unavailable(e.to_string()))? else {
        return Ok(IngestSummary {
            status: "rejected".into(),
            reason: Some("object vanished".into()),
            ..Default::default()
        });
    };
    let (rx, parser) = parser::spawn(reader.body, key.ends_with(".gz"), progress);
    let mut rejects = RejectsReport::create()?;
    let mut aggregates = Aggregates::new();
    let mut summary = ingest_rows(backends, &ledger_id, rx, &mut rejects, &mut aggregates).await?;
    // A panic in the parser is a bug, not a file problem: report it as one.
    parser.await.map_err(|e| PipelineError::Unavailable(format!("parser failed: {e}")))?;

    if summary.rejects > 0 || summary.status == "rejected" {
        summary.rejects_key = Some(rejects.upload(backends, key).await?);
    }
    aggregate::store(backends, &ledger_id, &aggregates).await?;
    // Unpublished events fail the run (the ledger stays "running"), so the retry
    // republishes them under the same ids instead of losing them.
    publish_ingested(backends, &ledger_id, &bucket, key, &summary).await?;
    let done = json!({"status": if summary.status == "rejected" { "rejected" } else { "done" },
        "finished": chrono::Utc::now().timestamp_millis(), "summary": SummaryDoc::from(&summary)});
    backends.documents.update(LEDGER, &ledger_id, vec![], doc(done)).await?;
    Ok(summary)
}

/// Enters the run in the ledger. A file the ledger already has done answers with that
/// run's summary (as `already_ingested`) and is not run again.
async fn claim_ledger(
    backends: &Backends,
    ledger_id: &str,
    bucket: &str,
    key: &str,
    meta: &ObjectMeta,
) -> Result<Option<IngestSummary>, PipelineError> {
    let docs = &backends.documents;
    let started = chrono::Utc::now().timestamp_millis();
    let entry = json!({"_id": ledger_id, "bucket": bucket, "key": key, "etag": meta.etag, "status": "running", "started": started});
    match docs.insert(LEDGER, doc(entry)).await {
        Ok(()) => Ok(None),
        Err(StoreError::Duplicate { .. }) => {
            let existing = docs.get(LEDGER, ledger_id).await?.unwrap_or_default();
            if existing.get("status").and_then(Value::as_str) != Some("running") {
                let mut summary: IngestSummary =
                    serde_json::from_value(existing.get("summary").cloned().unwrap_or_default())
                        .map(|s: SummaryDoc| s.into())
                        .unwrap_or_default();
                summary.status = "already_ingested".into();
                return Ok(Some(summary));
            }
            // "running": an earlier run died part-way. Run again; every write converges.
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Takes what the parser sends until it is done: valid rows reconciled and written in
/// batches of [`BATCH`], rejects written to the report.
async fn ingest_rows(
    backends: &Backends,
    ledger_id: &str,
    mut rx: mpsc::Receiver<Vec<Parsed>>,
    rejects: &mut RejectsReport,
    aggregates: &mut Aggregates,
) -> Result<IngestSummary, PipelineError> {
    let mut summary = IngestSummary { status: "ingested".into(), ..Default::default() };
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
                        flush(backends, ledger_id, &mut batch, &mut summary, aggregates, &mut mismatches).await?;
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
    flush(backends, ledger_id, &mut batch, &mut summary, aggregates, &mut mismatches).await?;
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
