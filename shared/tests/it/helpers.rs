//! Connections to the real services for the contract tests, each test with its own
//! database, key prefix, exchange, bucket or queue so that tests never collide.

use std::time::Duration;

pub const TIMEOUT: Duration = Duration::from_secs(5);

pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
}

pub fn mongodb_uri() -> String {
    env_or("SETTLE_MONGODB_URI", "mongodb://127.0.0.1:27017/?directConnection=true")
}

pub fn redis_url() -> String {
    env_or("SETTLE_REDIS_URL", "redis://127.0.0.1:6379")
}

pub fn amqp_url() -> String {
    env_or("SETTLE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
}

pub use settle_test_support::unique;

/// The AWS SDK configuration for the emulator (the environment, with `.cargo/config.toml`
/// supplying loopback defaults).
pub async fn sdk() -> aws_config::SdkConfig {
    settle_shared::aws::load_sdk_config(None).await
}

/// Fails the test with the service's name and how to start it.
pub fn unreachable(service: &str, error: impl std::fmt::Display) -> ! {
    panic!("{service} is not reachable ({error}); start the services with scripts/services")
}
