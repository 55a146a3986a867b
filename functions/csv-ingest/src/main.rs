//! Lambda entry point of csv-ingest: wires config and clients, then serves S3 events.

use aws_lambda_events::event::s3::S3Event;
use lambda_runtime::{service_fn, LambdaEvent};
use settle_csv_ingest::Ingestor;
use settle_shared::config::{self, Backend, Function};
use settle_shared::first_invocation::FirstInvocation;

// One thread: Lambda gives a process one invocation at a time, and the work is waiting on
// the network (csv-ingest parses on a blocking thread of its own). A multi-threaded
// runtime would start a worker per vCPU at every cold start for nothing.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    settle_shared::telemetry::init();
    let config = config::from_process_env(Backend::Real, Function::CsvIngest).await?;
    let backends = settle_shared::Backends::connect(&config).await?;
    let ingestor = Ingestor::new(backends);
    // Idempotent, and a no-op but for a new deployment: beside the first invocation rather
    // than before it. A run whose events the broker refused fails and is retried.
    let preparing = ingestor.clone();
    let first = FirstInvocation::new(async move {
        if let Err(e) = preparing.prepare().await {
            tracing::warn!(error = %e, "indexes or exchange not declared at cold start");
        }
    });
    lambda_runtime::run(service_fn(|event: LambdaEvent<S3Event>| {
        first.start();
        let ingestor = ingestor.clone();
        async move {
            let context = &event.context;
            let work = ingestor.handle_s3_event(event.payload);
            settle_shared::telemetry::invocation(
                settle_csv_ingest::FUNCTION,
                &context.request_id,
                context.xray_trace_id.as_deref(),
                work,
            )
            .await
        }
    }))
    .await
}
