//! One typed `Config`, read once per cold start from the environment and, for secret
//! values, from an AWS Secrets Manager JSON secret named by `SETTLE_SECRET_ID` (cached
//! with a TTL). A missing or malformed value fails start-up with one line naming it.
//!
//! Modules: `vars` (every variable's name), `settings` (the typed sections and their
//! parsers), `sources` (environment and secret values), `secrets` (Secrets Manager, cached
//! and refreshed), `loopback` (a configuration on this machine's services).

mod loopback;
mod secrets;
mod settings;
mod sources;
pub mod vars;

pub use loopback::{loopback_config, LOOPBACK_SERVICES};
pub use secrets::{fetch_merged_secrets, from_process_env, CachedSecrets, SecretRefresher};
pub use settings::{parse_rate, parse_schedule, RateLimits, WebhookSettings};
pub use sources::Sources;

use crate::net::{parse_cidrs, Cidr};
use crate::ports::kv::Gcra;
use crate::redact::Secret;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Which implementation of every port to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// In-memory models: zero infrastructure (local stack default, unit tests).
    Memory,
    /// MongoDB, Redis, RabbitMQ and the AWS APIs.
    Real,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {name} is required but not set")]
    Missing { name: &'static str },
    #[error("configuration: {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("configuration: secret {id}: {reason}")]
    Secret { id: String, reason: String },
}

/// Settings that may hold credentials. Each is looked up first in the JSON secret (when
/// `SETTLE_SECRET_ID` is set), then in the environment variable of the same name.
pub const SECRET_KEYS: &[&str] = &[
    vars::MONGODB_URI,
    vars::REDIS_URL,
    vars::AMQP_URL,
    vars::JWT_KEY,
    vars::WEBHOOK_MASTER_KEY,
    vars::GATEWAY_WEBHOOK_SECRET,
    vars::CARD_FINGERPRINT_KEY,
];

/// The function a configuration is loaded for: [`Config::require`] checks what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Payment,
    Notify,
    CsvIngest,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub backend: Backend,
    /// The Lambda function name (`AWS_LAMBDA_FUNCTION_NAME`), or the binary's name locally.
    pub function_name: String,
    pub mongodb_uri: Option<Secret>,
    pub mongodb_database: String,
    pub redis_url: Option<Secret>,
    pub amqp_url: Option<Secret>,
    pub events_exchange: String,
    pub notify_queue: String,
    pub bucket: String,
    pub retry_queue_url: Option<String>,
    pub extra_ca_file: Option<PathBuf>,
    pub dependency_timeout: Duration,
    pub http_addr: SocketAddr,
    pub secret_id: Option<String>,
    pub secrets_ttl: Duration,
    /// Re-reads the secrets of `SETTLE_SECRET_ID` after `secrets_ttl` (set by
    /// [`from_process_env`] when that names any).
    pub secrets_refresher: Option<Arc<SecretRefresher>>,
    pub jwt_key: Option<Secret>,
    pub webhook_master_key: Option<Secret>,
    pub gateway_webhook_secret: Option<Secret>,
    pub card_fingerprint_key: Option<Secret>,
    /// `RS256`, `ES256` or `HS256`; unset means no JWT settings (the local stack then uses
    /// its development key pair; a Lambda refuses to start).
    pub jwt_algorithm: Option<String>,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub jwt_max_lifetime: Duration,
    /// Client addresses allowed on admin routes.
    pub admin_cidrs: Vec<Cidr>,
    pub rate_limits: RateLimits,
    /// Prefix of every key Settle writes to Redis, so deployments can share one.
    pub redis_prefix: String,
    pub webhooks: WebhookSettings,
}

impl Config {
    /// Builds the configuration from `sources`, with `default_backend` when
    /// `SETTLE_BACKEND` is unset (Lambdas: real; the local stack: memory).
    pub fn load(sources: &Sources<'_>, default_backend: Backend) -> Result<Config, ConfigError> {
        let backend = match sources.env(vars::BACKEND).as_deref() {
            None => default_backend,
            Some("memory") => Backend::Memory,
            Some("real") => Backend::Real,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: vars::BACKEND,
                    reason: format!("expected 'memory' or 'real', got '{other}'"),
                })
            }
        };
        let mongodb_uri = sources.secret(vars::MONGODB_URI);
        let redis_url = sources.secret(vars::REDIS_URL);
        let amqp_url = sources.secret(vars::AMQP_URL);
        if backend == Backend::Real {
            for (name, value) in
                [(vars::MONGODB_URI, &mongodb_uri), (vars::REDIS_URL, &redis_url), (vars::AMQP_URL, &amqp_url)]
            {
                if value.is_none() {
                    return Err(ConfigError::Missing { name });
                }
            }
        }
        check_scheme(vars::MONGODB_URI, &mongodb_uri, &["mongodb://", "mongodb+srv://"])?;
        check_scheme(vars::REDIS_URL, &redis_url, &["redis://", "rediss://"])?;
        check_scheme(vars::AMQP_URL, &amqp_url, &["amqp://", "amqps://"])?;

        let extra_ca_file = sources.env(vars::EXTRA_CA_FILE).map(PathBuf::from);
        if let Some(path) = &extra_ca_file {
            if !path.is_file() {
                return Err(ConfigError::Invalid {
                    name: vars::EXTRA_CA_FILE,
                    reason: format!("{} is not a readable file", path.display()),
                });
            }
        }
        let timeout_ms: u64 = sources.parse(vars::DEPENDENCY_TIMEOUT_MS, 3000)?;
        if !(50..=60_000).contains(&timeout_ms) {
            return Err(ConfigError::Invalid {
                name: vars::DEPENDENCY_TIMEOUT_MS,
                reason: "must be between 50 and 60000".into(),
            });
        }
        let name_setting = |name: &'static str, default: &str| -> Result<String, ConfigError> {
            let value = sources.env(name).unwrap_or_else(|| default.to_string());
            let ok = value.len() <= 255 && value.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:/".contains(&b));
            if ok {
                Ok(value)
            } else {
                Err(ConfigError::Invalid { name, reason: "use letters, digits and . - _ : / only".into() })
            }
        };
        Ok(Config {
            backend,
            function_name: sources.env(vars::AWS_LAMBDA_FUNCTION_NAME).unwrap_or_else(|| {
                std::env::args().next().unwrap_or_default().rsplit('/').next().unwrap_or("settle").to_string()
            }),
            mongodb_uri,
            mongodb_database: name_setting(vars::MONGODB_DATABASE, "settle")?,
            redis_url,
            amqp_url,
            events_exchange: name_setting(vars::EVENTS_EXCHANGE, "settle.events")?,
            notify_queue: name_setting(vars::NOTIFY_QUEUE, "settle.notify")?,
            bucket: name_setting(vars::BUCKET, "settle-settlements")?,
            retry_queue_url: sources.env(vars::RETRY_QUEUE_URL),
            extra_ca_file,
            dependency_timeout: Duration::from_millis(timeout_ms),
            http_addr: sources.parse(vars::HTTP_ADDR, SocketAddr::from(([127, 0, 0, 1], 3000)))?,
            secret_id: sources.env(vars::SECRET_ID),
            secrets_refresher: None,
            secrets_ttl: Duration::from_secs(sources.parse(vars::SECRETS_TTL_SECS, 300)?),
            jwt_key: sources.secret(vars::JWT_KEY),
            webhook_master_key: sources.secret(vars::WEBHOOK_MASTER_KEY),
            gateway_webhook_secret: sources.secret(vars::GATEWAY_WEBHOOK_SECRET),
            card_fingerprint_key: sources.secret(vars::CARD_FINGERPRINT_KEY),
            jwt_algorithm: sources.env(vars::JWT_ALGORITHM),
            jwt_issuer: sources.env(vars::JWT_ISSUER).unwrap_or_else(|| "settle".into()),
            jwt_audience: sources.env(vars::JWT_AUDIENCE).unwrap_or_else(|| "settle-api".into()),
            jwt_max_lifetime: Duration::from_secs(sources.parse(vars::JWT_MAX_LIFETIME_SECS, 86_400)?),
            // Unset: loopback, for the local stack. Set but empty (the template's default):
            // no one, so the admin routes answer 403 until the operator names a range.
            admin_cidrs: parse_cidrs(&(sources.env)(vars::ADMIN_CIDRS).unwrap_or_else(|| "127.0.0.0/8,::1/128".into()))
                .map_err(|reason| ConfigError::Invalid { name: vars::ADMIN_CIDRS, reason })?,
            rate_limits: RateLimits {
                merchant: rate(sources, vars::RATE_LIMIT_MERCHANT, "600/60s")?,
                ip: rate(sources, vars::RATE_LIMIT_IP, "1200/60s")?,
                tokens: rate(sources, vars::RATE_LIMIT_TOKENS, "60/60s")?,
                refunds: rate(sources, vars::RATE_LIMIT_REFUNDS, "120/60s")?,
            },
            redis_prefix: name_setting(vars::REDIS_PREFIX, "settle:")?,
            webhooks: WebhookSettings {
                allow_private: sources.parse(vars::WEBHOOK_ALLOW_PRIVATE, false)?,
                retry_schedule: parse_schedule(
                    &sources.env(vars::WEBHOOK_RETRY_SCHEDULE).unwrap_or_else(|| "5s,5m,30m,2h,5h,10h,10h".into()),
                )
                .map_err(|reason| ConfigError::Invalid { name: vars::WEBHOOK_RETRY_SCHEDULE, reason })?,
                timeout: Duration::from_millis(sources.parse(vars::WEBHOOK_TIMEOUT_MS, 15_000)?),
                disable_after: Duration::from_secs(sources.parse(vars::WEBHOOK_DISABLE_AFTER_SECS, 5 * 86_400)?),
                dlq_url: sources.env(vars::WEBHOOK_DLQ_URL),
            },
        })
    }

    /// Fails naming the first value `function` needs that is not set: checked when the
    /// configuration is loaded, before any connection is made.
    pub fn require(&self, function: Function) -> Result<(), ConfigError> {
        let needed: Vec<(&'static str, bool)> = match function {
            Function::Payment => vec![
                (vars::JWT_ALGORITHM, self.jwt_algorithm.is_some()),
                (vars::JWT_KEY, self.jwt_key.is_some()),
                (vars::CARD_FINGERPRINT_KEY, self.card_fingerprint_key.is_some()),
                (vars::GATEWAY_WEBHOOK_SECRET, self.gateway_webhook_secret.is_some()),
                (vars::WEBHOOK_MASTER_KEY, self.webhook_master_key.is_some()),
            ],
            Function::Notify => vec![
                (vars::WEBHOOK_MASTER_KEY, self.webhook_master_key.is_some()),
                // The memory backend has a retry queue of its own.
                (vars::RETRY_QUEUE_URL, self.retry_queue_url.is_some() || self.backend == Backend::Memory),
            ],
            Function::CsvIngest => vec![],
        };
        match needed.into_iter().find(|(_, set)| !set) {
            Some((name, _)) => Err(ConfigError::Missing { name }),
            None => Ok(()),
        }
    }

    /// Every secret value this configuration holds, for scrubbing error text.
    pub fn secrets(&self) -> Vec<&Secret> {
        [
            &self.mongodb_uri,
            &self.redis_url,
            &self.amqp_url,
            &self.jwt_key,
            &self.webhook_master_key,
            &self.gateway_webhook_secret,
            &self.card_fingerprint_key,
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

fn rate(sources: &Sources<'_>, name: &'static str, default: &str) -> Result<Gcra, ConfigError> {
    parse_rate(&sources.env(name).unwrap_or_else(|| default.to_string()))
        .map_err(|reason| ConfigError::Invalid { name, reason })
}

fn check_scheme(name: &'static str, value: &Option<Secret>, schemes: &[&str]) -> Result<(), ConfigError> {
    match value {
        Some(v) if !schemes.iter().any(|s| v.expose().starts_with(s)) => Err(ConfigError::Invalid {
            name,
            // Never echo the value: it may carry a password.
            reason: format!("must start with {}", schemes.join(" or ")),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::secrets::SecretValues;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)], secrets: Option<&SecretValues>, backend: Backend) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let env = move |name: &str| map.get(name).cloned();
        Config::load(&Sources { env: &env, secrets }, backend)
    }

    const REAL: &[(&str, &str)] = &[
        ("SETTLE_MONGODB_URI", "mongodb://127.0.0.1:27017"),
        ("SETTLE_REDIS_URL", "redis://127.0.0.1:6379"),
        ("SETTLE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
    ];

    #[test]
    fn memory_backend_needs_nothing() {
        let c = load(&[], None, Backend::Memory).unwrap();
        assert_eq!(c.backend, Backend::Memory);
        assert_eq!(c.events_exchange, "settle.events");
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:3000");
    }

    #[test]
    fn real_backend_names_the_missing_variable() {
        let err = load(&REAL[..2], None, Backend::Real).unwrap_err();
        assert_eq!(err, ConfigError::Missing { name: "SETTLE_AMQP_URL" });
        assert_eq!(err.to_string(), "configuration: SETTLE_AMQP_URL is required but not set");
    }

    #[test]
    fn malformed_values_are_named_without_echoing_secrets() {
        let mut vars = REAL.to_vec();
        vars[1] = ("SETTLE_REDIS_URL", "http://:s3cr3t@host");
        let err = load(&vars, None, Backend::Real).unwrap_err().to_string();
        assert!(err.contains("SETTLE_REDIS_URL") && !err.contains("s3cr3t"), "{err}");
        let err = load(&[("SETTLE_HTTP_ADDR", "nope")], None, Backend::Memory).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { name: "SETTLE_HTTP_ADDR", .. }));
        let err = load(&[("SETTLE_BACKEND", "mongo")], None, Backend::Memory).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { name: "SETTLE_BACKEND", .. }));
    }

    #[test]
    fn secret_values_win_over_the_environment() {
        let secrets: SecretValues = [("SETTLE_JWT_KEY".to_string(), "from-secret".to_string())].into_iter().collect();
        let mut vars = REAL.to_vec();
        vars.push(("SETTLE_JWT_KEY", "from-env"));
        let c = load(&vars, Some(&secrets), Backend::Real).unwrap();
        assert_eq!(c.jwt_key.unwrap().expose(), "from-secret");
        assert!(!format!("{:?}", load(REAL, None, Backend::Real).unwrap()).contains("guest:guest"));
    }

    #[test]
    fn rate_limits_parse_and_name_their_variable() {
        let c = load(&[("SETTLE_RATE_LIMIT_TOKENS", "10/1m")], None, Backend::Memory).unwrap();
        assert_eq!(c.rate_limits.tokens, Gcra { limit: 10, period: Duration::from_secs(60), burst: 10 });
        assert_eq!(c.rate_limits.merchant.limit, 600);
        let err = load(&[("SETTLE_RATE_LIMIT_IP", "fast")], None, Backend::Memory).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { name: "SETTLE_RATE_LIMIT_IP", .. }));
        let err = load(&[("SETTLE_ADMIN_CIDRS", "10.0.0.0/99")], None, Backend::Memory).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { name: "SETTLE_ADMIN_CIDRS", .. }));
    }

    #[test]
    fn each_function_names_the_value_it_lacks() {
        let memory = load(&[], None, Backend::Memory).unwrap();
        let err = memory.require(Function::Payment).unwrap_err();
        assert_eq!(err.to_string(), "configuration: SETTLE_JWT_ALGORITHM is required but not set");
        let err = memory.require(Function::Notify).unwrap_err();
        assert_eq!(err, ConfigError::Missing { name: "SETTLE_WEBHOOK_MASTER_KEY" });
        assert_eq!(memory.require(Function::CsvIngest), Ok(()));
        let mut notify = REAL.to_vec();
        notify.push(("SETTLE_WEBHOOK_MASTER_KEY", "a-master-key-of-at-least-32-characters"));
        let real = load(&notify, None, Backend::Real).unwrap();
        assert_eq!(real.require(Function::Notify), Err(ConfigError::Missing { name: "SETTLE_RETRY_QUEUE_URL" }));
        notify.push(("SETTLE_RETRY_QUEUE_URL", "http://127.0.0.1:4566/000000000000/retries"));
        assert_eq!(load(&notify, None, Backend::Real).unwrap().require(Function::Notify), Ok(()));
    }
}
