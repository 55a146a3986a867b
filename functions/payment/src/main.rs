//! Lambda entry point of the Payment API: wires config and clients, then serves the router.

use settle_payment::{router, AppState};
use settle_shared::config::{self, Backend, Function};
use settle_shared::first_invocation::FirstInvocation;
use tower::ServiceExt;

// One thread: Lambda gives a process one invocation at a time, and the work is waiting on
// the network (csv-ingest parses on a blocking thread of its own). A multi-threaded
// runtime would start a worker per vCPU at every cold start for nothing.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    settle_shared::telemetry::init();
    let config = config::from_process_env(Backend::Real, Function::Payment).await?;
    let backends = settle_shared::Backends::connect(&config).await?;
    let state = AppState::new(config, backends)?;
    // Declaring indexes and the exchange is idempotent and, but for a brand-new deployment,
    // a no-op: it runs beside the first invocation instead of delaying the cold start.
    // Until the exchange exists events wait in the outbox; the relay publishes them.
    let preparing = state.clone();
    let first = FirstInvocation::new(async move {
        if let Err(e) = preparing.prepare().await {
            tracing::warn!(error = %e, "indexes or exchange not declared at cold start");
        }
    });
    // Around the router, not a router layer: those wrap every route, at every cold start.
    let app = router(state).map_request(move |request: lambda_http::Request| {
        first.start();
        request
    });
    lambda_http::run(app).await
}
