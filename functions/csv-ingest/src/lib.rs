//! Settle's settlement-file ingest: takes S3 `ObjectCreated` events for settlement files
//! (`settlements/incoming/*.csv` or `.csv.gz`) and handles each object on its own.

pub mod generate;
pub mod pipeline;
pub mod row;

use aws_lambda_events::event::s3::{S3Event, S3EventRecord};
use percent_encoding::percent_decode_str;
use serde::Serialize;
use settle_shared::ports::objects::ObjectError;
use settle_shared::Backends;

/// Where gateways drop settlement files.
pub const INCOMING_PREFIX: &str = "settlements/incoming/";
/// The file kinds ingested: plain CSV, and gzip-compressed CSV.
pub const SUFFIXES: &[&str] = &[".csv", ".csv.gz"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ObjectOutcome {
    /// A settlement file, present in the bucket, and what its ingest found.
    Received { bucket: String, key: String, size: u64, etag: String, summary: pipeline::IngestSummary },
    /// Not a settlement file (wrong prefix or suffix, or not an ObjectCreated event).
    Ignored { key: String, reason: String },
    /// The event named an object that is gone (deleted or overwritten since).
    Missing { key: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct IngestReport {
    pub outcomes: Vec<ObjectOutcome>,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Worth a retry: S3 (or another dependency) did not answer.
    #[error("dependency unavailable: {0}")]
    Unavailable(String),
}

/// Tells Lambda what failed; the error type names a retryable fault.
impl From<IngestError> for lambda_runtime::Diagnostic {
    fn from(e: IngestError) -> Self {
        let error_type = match e {
            IngestError::Unavailable(_) => "Settle.DependencyUnavailable",
        };
        lambda_runtime::Diagnostic { error_type: error_type.into(), error_message: e.to_string() }
    }
}

impl From<ObjectError> for IngestError {
    fn from(e: ObjectError) -> Self {
        IngestError::Unavailable(e.to_string())
    }
}

#[derive(Clone)]
pub struct Ingestor {
    backends: Backends,
}

impl Ingestor {
    pub fn new(backends: Backends) -> Self {
        Ingestor { backends }
    }

    /// Cold-start set-up, idempotent: the indexes the pipeline queries by, and the
    /// exchange its events go to (Amazon MQ starts empty).
    pub async fn prepare(&self) -> Result<(), IngestError> {
        let backends = &self.backends;
        let unavailable = |e: &dyn std::fmt::Display| IngestError::Unavailable(e.to_string());
        backends.documents.ensure_indexes(&settle_shared::settlements::indexes()).await.map_err(|e| unavailable(&e))?;
        backends.bus.declare(&backends.topology).await.map_err(|e| unavailable(&e))
    }

    /// Handles every record of one S3 event. An unreachable object store fails the whole
    /// invocation, so that Lambda's retry for asynchronous invocations runs it again.
    pub async fn handle_s3_event(&self, event: S3Event) -> Result<IngestReport, IngestError> {
        let mut report = IngestReport::default();
        for record in &event.records {
            let outcome = self.ingest_record(record).await?;
            tracing::info!(?outcome, "settlement object");
            report.outcomes.push(outcome);
        }
        Ok(report)
    }

    async fn ingest_record(&self, record: &S3EventRecord) -> Result<ObjectOutcome, IngestError> {
        let key = object_key(record);
        if let Some(reason) = not_a_settlement_file(record, &key) {
            return Ok(ObjectOutcome::Ignored { key, reason });
        }
        let bucket = record.s3.bucket.name.clone().unwrap_or_else(|| self.backends.objects.bucket().to_string());
        if bucket != self.backends.objects.bucket() {
            return Ok(ObjectOutcome::Ignored { key, reason: format!("bucket {bucket} is not the configured one") });
        }
        let Some(meta) = self.backends.objects.head(&key).await? else { return Ok(ObjectOutcome::Missing { key }) };
        let started = std::time::Instant::now();
        let summary = pipeline::ingest_object(&self.backends, &key, &meta)
            .await
            .map_err(|e| IngestError::Unavailable(e.to_string()))?;
        record_ingest(&summary, &key, meta.size, started.elapsed());
        Ok(ObjectOutcome::Received { bucket, key, size: meta.size, etag: meta.etag, summary })
    }
}

/// The function's name in metrics and invocation spans (stable across deployments).
pub const FUNCTION: &str = "csv-ingest";

/// EMF: `SettlementRows` by `Outcome` (matched, amount_mismatch, …), `Rejects`, and the
/// run's throughput (`IngestRowsPerSecond`, `IngestBytesPerSecond`). A redelivery that
/// found the file already ingested counts nothing again.
fn record_ingest(summary: &pipeline::IngestSummary, key: &str, size: u64, took: std::time::Duration) {
    use settle_shared::metrics::{emit, Measure, Unit};
    if summary.status == "already_ingested" {
        return;
    }
    let file = [("key", serde_json::json!(key))];
    for (outcome, rows) in &summary.outcomes {
        emit(FUNCTION, &[("Outcome", outcome)], &[Measure::count("SettlementRows", *rows)], &file);
    }
    let seconds = took.as_secs_f64().max(1e-3);
    emit(
        FUNCTION,
        &[],
        &[
            Measure::count("Rejects", summary.rejects),
            Measure::count("RejectedFiles", u64::from(summary.status == "rejected")),
            Measure { name: "IngestRowsPerSecond", value: summary.rows as f64 / seconds, unit: Unit::CountPerSecond },
            Measure { name: "IngestBytesPerSecond", value: size as f64 / seconds, unit: Unit::BytesPerSecond },
        ],
        &file,
    );
}

/// The object key, decoded: S3 events carry keys form-URL-encoded (`+` for a space,
/// `%2F`-style escapes), e.g. `settlements/incoming/day%201.csv`.
pub fn object_key(record: &S3EventRecord) -> String {
    let raw = record.s3.object.key.as_deref().unwrap_or_default().replace('+', " ");
    percent_decode_str(&raw).decode_utf8_lossy().into_owned()
}

fn not_a_settlement_file(record: &S3EventRecord, key: &str) -> Option<String> {
    let event_name = record.event_name.as_deref().unwrap_or_default();
    if !event_name.starts_with("ObjectCreated:") {
        return Some(format!("event {event_name:?} is not ObjectCreated"));
    }
    if !key.starts_with(INCOMING_PREFIX) {
        return Some(format!("key is not under {INCOMING_PREFIX}"));
    }
    if !SUFFIXES.iter().any(|s| key.ends_with(s)) {
        return Some("key does not end with .csv or .csv.gz".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use settle_shared::config::{Backend, Sources};

    fn fixture() -> S3Event {
        serde_json::from_str(include_str!("../../../events/csv-ingest/s3-put-settlement.json")).unwrap()
    }

    #[test]
    fn keys_are_url_decoded() {
        let event = fixture();
        assert_eq!(object_key(&event.records[0]), "settlements/incoming/gateway 2026-11-27.csv");
    }

    #[tokio::test]
    async fn only_settlement_files_are_taken() {
        let env = |_: &str| None;
        let config = settle_shared::Config::load(&Sources { env: &env, secrets: None }, Backend::Memory).unwrap();
        let backends = Backends::memory(&config);
        let ingestor = Ingestor::new(backends.clone());
        ingestor.prepare().await.unwrap();

        let mut event = fixture();
        event.records[0].s3.bucket.name = Some(config.bucket.clone());
        let report = ingestor.handle_s3_event(event.clone()).await.unwrap();
        assert_eq!(
            report.outcomes,
            vec![ObjectOutcome::Missing { key: "settlements/incoming/gateway 2026-11-27.csv".into() }]
        );

        let meta = backends
            .objects
            .put("settlements/incoming/gateway 2026-11-27.csv", b"settlement_id\n".to_vec(), "text/csv")
            .await
            .unwrap();
        let report = ingestor.handle_s3_event(event.clone()).await.unwrap();
        assert!(matches!(&report.outcomes[0], ObjectOutcome::Received { size: 14, etag, .. } if *etag == meta.etag));

        event.records[0].s3.object.key = Some("settlements/incoming/notes.txt".into());
        let report = ingestor.handle_s3_event(event.clone()).await.unwrap();
        assert!(matches!(&report.outcomes[0], ObjectOutcome::Ignored { reason, .. } if reason.contains(".csv")));

        event.records[0].s3.object.key = Some("elsewhere/a.csv".into());
        let report = ingestor.handle_s3_event(event).await.unwrap();
        assert!(
            matches!(&report.outcomes[0], ObjectOutcome::Ignored { reason, .. } if reason.contains(INCOMING_PREFIX))
        );
    }
}
