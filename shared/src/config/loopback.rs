//! A configuration on this machine's services, for tests, benchmarks and the local tools.

use super::{vars, Backend, Config, ConfigError, Sources};

/// The addresses `scripts/services` starts the real services on.
pub const LOOPBACK_SERVICES: &[(&str, &str)] = &[
    (vars::MONGODB_URI, "mongodb://127.0.0.1:27017/?directConnection=true"),
    (vars::REDIS_URL, "redis://127.0.0.1:6379"),
    (vars::AMQP_URL, "amqp://guest:guest@127.0.0.1:5672/%2f"),
];

/// A real-backend configuration for tests, benchmarks and the local tools: the service
/// URLs from the environment, else [`LOOPBACK_SERVICES`]; then `overrides`; nothing else
/// from the environment, so a test's names cannot leak into another's.
pub fn loopback_config(overrides: &[(&str, String)]) -> Result<Config, ConfigError> {
    let mut vars: std::collections::HashMap<String, String> = LOOPBACK_SERVICES
        .iter()
        .map(|(name, default)| (name.to_string(), std::env::var(name).unwrap_or_else(|_| default.to_string())))
        .collect();
    for (name, value) in overrides {
        vars.insert(name.to_string(), value.clone());
    }
    let env = move |name: &str| vars.get(name).cloned();
    Config::load(&Sources { env: &env, secrets: None }, Backend::Real)
}
