//! Lambda entry point of the Payment API: wires config and clients, then serves the router.

use settle_payment::{router, AppState};
use settle_shared::config::{self, Backend};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    settle_shared::telemetry::init();
    let config = config::from_process_env(Backend::Real).await?;
    let backends = settle_shared::Backends::connect(&config).await?;
    let state = AppState::new(config, backends)?;
    if let Err(e) = state.prepare().await {
        // Requests answer 503 until MongoDB is back, events wait in the outbox; the next cold start retries.
        tracing::warn!(error = %e, "indexes or exchange not declared at cold start");
    }
    lambda_http::run(router(state)).await
}
