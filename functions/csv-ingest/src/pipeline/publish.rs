//! The run's CloudEvents: one `settlement.mismatch` per row that did not match, and one
//! `settlement.ingested` per file, under ids a rerun derives again.

use super::{short_hash, IngestSummary, Outcome, PipelineError};
use crate::row::SettlementRow;
use serde_json::json;
use settle_shared::domain::event::{CloudEvent, CLOUDEVENTS_JSON};
use settle_shared::ports::events::OutgoingMessage;
use settle_shared::Backends;

/// Mismatch events in flight at once (each waits for its publisher confirm).
const PUBLISH_CONCURRENCY: usize = 32;

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
pub(super) async fn publish_mismatches(
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
pub(super) async fn publish_ingested(
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
