//! Lambda entry point of the Payment API: wires config and clients, then serves the router.

use settle_payment::{router, AppState};
use settle_shared::config::{self, Backend};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    settle_shared::telemetry::init();
    let config = config::from_process_env(Backend::Real).await?;
    let backends = settle_shared::Backends::connect(&config).await?;
    lambda_http::run(router(AppState::new(config, backends))).await
}
