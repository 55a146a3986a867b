//! One typed `Config`, read once per cold start from the environment and, for secret
//! values, from an AWS Secrets Manager JSON secret named by `SETTLE_SECRET_ID` (cached
//! with a TTL). A missing or malformed value fails start-up with one line naming it.

use crate::net::{parse_cidrs, Cidr};
use crate::ports::kv::Gcra;
use crate::ports::secrets::{SecretValues, SecretsError, SecretsSource};
use crate::redact::Secret;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

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
    "SETTLE_MONGODB_URI",
    "SETTLE_REDIS_URL",
    "SETTLE_AMQP_URL",
    "SETTLE_JWT_KEY",
    "SETTLE_WEBHOOK_MASTER_KEY",
    "SETTLE_GATEWAY_WEBHOOK_SECRET",
    "SETTLE_CARD_FINGERPRINT_KEY",
];

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

/// How the notifier delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Local development only: allow http and loopback/private receivers.
    pub allow_private: bool,
    /// Waits before attempts 2, 3, …; its length is the number of retries.
    pub retry_schedule: Vec<Duration>,
    /// Bound on one delivery attempt.
    pub timeout: Duration,
    /// An endpoint that has failed everything for this long is disabled.
    pub disable_after: Duration,
    /// Optional SQS queue for operators' copies of dead deliveries.
    pub dlq_url: Option<String>,
}

/// `5s,5m,30m,2h` → durations.
pub fn parse_schedule(text: &str) -> Result<Vec<Duration>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (digits, unit) = item.split_at(item.find(|c: char| !c.is_ascii_digit()).unwrap_or(item.len()));
            let n: u64 = digits.parse().map_err(|_| format!("'{item}' is not a duration like 5s, 5m or 2h"))?;
            let secs = match unit {
                "ms" => return Ok(Duration::from_millis(n)),
                "s" | "" => n,
                "m" => n * 60,
                "h" => n * 3600,
                _ => return Err(format!("'{item}' is not a duration like 5s, 5m or 2h")),
            };
            Ok(Duration::from_secs(secs))
        })
        .collect()
}

/// GCRA limits per caller class. Each is `N/PERIOD` (`600/60s`, `10/1s`, `100/1m`):
/// N requests per period, in bursts of up to N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub merchant: Gcra,
    pub ip: Gcra,
    pub tokens: Gcra,
    pub refunds: Gcra,
}

/// Parses `N/PERIOD` with PERIOD in seconds (`60s`, `1s`) or minutes (`1m`).
pub fn parse_rate(text: &str) -> Result<Gcra, String> {
    let bad = || format!("'{text}' is not N/PERIOD (e.g. 600/60s)");
    let (n, period) = text.trim().split_once('/').ok_or_else(bad)?;
    let limit: u32 = n.trim().parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
    let period = period.trim();
    let (digits, unit) = period.split_at(period.find(|c: char| !c.is_ascii_digit()).unwrap_or(period.len()));
    let count: u64 = digits.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
    let seconds = match unit {
        "s" | "" => count,
        "m" => count * 60,
        "h" => count * 3600,
        _ => return Err(bad()),
    };
    Ok(Gcra { limit, period: Duration::from_secs(seconds), burst: limit })
}

/// Where configuration values come from: a lookup function (the process environment in
/// production, a map in tests) plus the fetched secret values, if any.
pub struct Sources<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub secrets: Option<&'a SecretValues>,
}

impl Sources<'_> {
    fn env(&self, name: &str) -> Option<String> {
        (self.env)(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
    }

    fn secret(&self, name: &'static str) -> Option<Secret> {
        self.secrets
            .and_then(|s| s.get(name))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .or_else(|| self.env(name))
            .map(Secret::new)
    }

    fn parse<T: std::str::FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.env(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e: T::Err| ConfigError::Invalid { name, reason: e.to_string() }),
        }
    }
}

impl Config {
    /// Builds the configuration from `sources`, with `default_backend` when
    /// `SETTLE_BACKEND` is unset (Lambdas: real; the local stack: memory).
    pub fn load(sources: &Sources<'_>, default_backend: Backend) -> Result<Config, ConfigError> {
        let backend = match sources.env("SETTLE_BACKEND").as_deref() {
            None => default_backend,
            Some("memory") => Backend::Memory,
            Some("real") => Backend::Real,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "SETTLE_BACKEND",
                    reason: format!("expected 'memory' or 'real', got '{other}'"),
                })
            }
        };
        let mongodb_uri = sources.secret("SETTLE_MONGODB_URI");
        let redis_url = sources.secret("SETTLE_REDIS_URL");
        let amqp_url = sources.secret("SETTLE_AMQP_URL");
        if backend == Backend::Real {
            for (name, value) in
                [("SETTLE_MONGODB_URI", &mongodb_uri), ("SETTLE_REDIS_URL", &redis_url), ("SETTLE_AMQP_URL", &amqp_url)]
            {
                if value.is_none() {
                    return Err(ConfigError::Missing { name });
                }
            }
        }
        check_scheme("SETTLE_MONGODB_URI", &mongodb_uri, &["mongodb://", "mongodb+srv://"])?;
        check_scheme("SETTLE_REDIS_URL", &redis_url, &["redis://", "rediss://"])?;
        check_scheme("SETTLE_AMQP_URL", &amqp_url, &["amqp://", "amqps://"])?;

        let extra_ca_file = sources.env("SETTLE_EXTRA_CA_FILE").map(PathBuf::from);
        if let Some(path) = &extra_ca_file {
            if !path.is_file() {
                return Err(ConfigError::Invalid {
                    name: "SETTLE_EXTRA_CA_FILE",
                    reason: format!("{} is not a readable file", path.display()),
                });
            }
        }
        let timeout_ms: u64 = sources.parse("SETTLE_DEPENDENCY_TIMEOUT_MS", 3000)?;
        if !(50..=60_000).contains(&timeout_ms) {
            return Err(ConfigError::Invalid {
                name: "SETTLE_DEPENDENCY_TIMEOUT_MS",
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
            function_name: sources.env("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|| {
                std::env::args().next().unwrap_or_default().rsplit('/').next().unwrap_or("settle").to_string()
            }),
            mongodb_uri,
            mongodb_database: name_setting("SETTLE_MONGODB_DATABASE", "settle")?,
            redis_url,
            amqp_url,
            events_exchange: name_setting("SETTLE_EVENTS_EXCHANGE", "settle.events")?,
            notify_queue: name_setting("SETTLE_NOTIFY_QUEUE", "settle.notify")?,
            bucket: name_setting("SETTLE_BUCKET", "settle-settlements")?,
            retry_queue_url: sources.env("SETTLE_RETRY_QUEUE_URL"),
            extra_ca_file,
            dependency_timeout: Duration::from_millis(timeout_ms),
            http_addr: sources.parse("SETTLE_HTTP_ADDR", SocketAddr::from(([127, 0, 0, 1], 3000)))?,
            secret_id: sources.env("SETTLE_SECRET_ID"),
            secrets_refresher: None,
            secrets_ttl: Duration::from_secs(sources.parse("SETTLE_SECRETS_TTL_SECS", 300)?),
            jwt_key: sources.secret("SETTLE_JWT_KEY"),
            webhook_master_key: sources.secret("SETTLE_WEBHOOK_MASTER_KEY"),
            gateway_webhook_secret: sources.secret("SETTLE_GATEWAY_WEBHOOK_SECRET"),
            card_fingerprint_key: sources.secret("SETTLE_CARD_FINGERPRINT_KEY"),
            jwt_algorithm: sources.env("SETTLE_JWT_ALGORITHM"),
            jwt_issuer: sources.env("SETTLE_JWT_ISSUER").unwrap_or_else(|| "settle".into()),
            jwt_audience: sources.env("SETTLE_JWT_AUDIENCE").unwrap_or_else(|| "settle-api".into()),
            jwt_max_lifetime: Duration::from_secs(sources.parse("SETTLE_JWT_MAX_LIFETIME_SECS", 86_400)?),
            // Unset: loopback, for the local stack. Set but empty (the template's default):
            // no one, so the admin routes answer 403 until the operator names a range.
            admin_cidrs: parse_cidrs(
                &(sources.env)("SETTLE_ADMIN_CIDRS").unwrap_or_else(|| "127.0.0.0/8,::1/128".into()),
            )
            .map_err(|reason| ConfigError::Invalid { name: "SETTLE_ADMIN_CIDRS", reason })?,
            rate_limits: RateLimits {
                merchant: rate(sources, "SETTLE_RATE_LIMIT_MERCHANT", "600/60s")?,
                ip: rate(sources, "SETTLE_RATE_LIMIT_IP", "1200/60s")?,
                tokens: rate(sources, "SETTLE_RATE_LIMIT_TOKENS", "60/60s")?,
                refunds: rate(sources, "SETTLE_RATE_LIMIT_REFUNDS", "120/60s")?,
            },
            redis_prefix: name_setting("SETTLE_REDIS_PREFIX", "settle:")?,
            webhooks: WebhookSettings {
                allow_private: sources.parse("SETTLE_WEBHOOK_ALLOW_PRIVATE", false)?,
                retry_schedule: parse_schedule(
                    &sources.env("SETTLE_WEBHOOK_RETRY_SCHEDULE").unwrap_or_else(|| "5s,5m,30m,2h,5h,10h,10h".into()),
                )
                .map_err(|reason| ConfigError::Invalid { name: "SETTLE_WEBHOOK_RETRY_SCHEDULE", reason })?,
                timeout: Duration::from_millis(sources.parse("SETTLE_WEBHOOK_TIMEOUT_MS", 15_000)?),
                disable_after: Duration::from_secs(sources.parse("SETTLE_WEBHOOK_DISABLE_AFTER_SECS", 5 * 86_400)?),
                dlq_url: sources.env("SETTLE_WEBHOOK_DLQ_URL"),
            },
        })
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

/// When the secret was fetched, and its values.
type Fetched = (Instant, Arc<SecretValues>);

/// A JSON secret fetched once and then served from memory until `ttl` has passed, so a
/// rotated secret is picked up without a redeploy and a warm Lambda makes no extra calls.
#[derive(Clone)]
pub struct CachedSecrets {
    source: SecretsSource,
    id: String,
    ttl: Duration,
    cached: Arc<Mutex<Option<Fetched>>>,
}

impl CachedSecrets {
    pub fn new(source: SecretsSource, id: &str, ttl: Duration) -> Self {
        CachedSecrets { source, id: id.to_string(), ttl, cached: Arc::default() }
    }

    pub async fn get(&self) -> Result<Arc<SecretValues>, ConfigError> {
        let mut cached = self.cached.lock().await;
        if let Some((at, values)) = cached.as_ref() {
            if at.elapsed() < self.ttl {
                return Ok(values.clone());
            }
        }
        let values = Arc::new(self.source.get_json(&self.id).await.map_err(|e| ConfigError::Secret {
            id: self.id.clone(),
            reason: match e {
                SecretsError::Malformed { reason, .. } => format!("not a JSON object of strings ({reason})"),
                other => other.to_string(),
            },
        })?);
        *cached = Some((Instant::now(), values.clone()));
        Ok(values)
    }
}

/// The addresses `scripts/services` starts the real services on.
pub const LOOPBACK_SERVICES: &[(&str, &str)] = &[
    ("SETTLE_MONGODB_URI", "mongodb://127.0.0.1:27017/?directConnection=true"),
    ("SETTLE_REDIS_URL", "redis://127.0.0.1:6379"),
    ("SETTLE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
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

/// Loads the configuration of a function from the process environment, fetching the
/// Secrets Manager secrets first when `SETTLE_SECRET_ID` names any: a comma-separated list
/// of ids or ARNs whose JSON objects are merged, later ones winning (a deployment keeps its
/// generated keys, the MongoDB URI and the operator's values in separate secrets).
pub async fn from_process_env(default_backend: Backend) -> Result<Config, ConfigError> {
    let env = |name: &str| std::env::var(name).ok();
    let secret_id = env("SETTLE_SECRET_ID");
    let ids = secret_ids(secret_id.as_deref());
    let secret_values = if ids.is_empty() {
        None
    } else {
        let sdk = crate::aws::load_sdk_config(None).await;
        let source = SecretsSource::SecretsManager(aws_sdk_secretsmanager::Client::new(&sdk));
        let no_secrets = Sources { env: &env, secrets: None };
        let ttl = Duration::from_secs(no_secrets.parse("SETTLE_SECRETS_TTL_SECS", 300)?);
        let values = fetch_merged_secrets(&source, &ids, ttl).await?;
        Some((values, SecretRefresher::new(source, &ids, ttl)))
    };
    let mut config =
        Config::load(&Sources { env: &env, secrets: secret_values.as_ref().map(|(v, _)| v) }, default_backend)?;
    config.secrets_refresher = secret_values.map(|(_, refresher)| Arc::new(refresher));
    Ok(config)
}

/// Re-reads the merged Secrets Manager secrets a function started with, so that a rotated
/// value is taken up without a redeploy: at most once per TTL per instance (the caller
/// claims the window, then fetches off the request's path).
pub struct SecretRefresher {
    source: SecretsSource,
    ids: Vec<String>,
    ttl: Duration,
    next_due: std::sync::Mutex<Instant>,
    fetches: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for SecretRefresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRefresher").field("ids", &self.ids).field("ttl", &self.ttl).finish()
    }
}

impl SecretRefresher {
    /// The first refresh is due one `ttl` from now (the values were just read).
    pub fn new(source: SecretsSource, ids: &[&str], ttl: Duration) -> Self {
        SecretRefresher {
            source,
            ids: ids.iter().map(|id| id.to_string()).collect(),
            ttl,
            next_due: std::sync::Mutex::new(Instant::now() + ttl),
            fetches: Default::default(),
        }
    }

    /// True at most once per TTL: the caller that gets it re-reads the secrets.
    pub fn claim(&self) -> bool {
        let mut due = self.next_due.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if now < *due {
            return false;
        }
        *due = now + self.ttl;
        true
    }

    /// Fetches and merges the secrets again (each bounded as at start-up).
    pub async fn fetch(&self) -> Result<SecretValues, ConfigError> {
        self.fetches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ids: Vec<&str> = self.ids.iter().map(String::as_str).collect();
        fetch_merged_secrets(&self.source, &ids, Duration::ZERO).await
    }

    /// How many times the secrets were re-read.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Fetches each secret in `ids` and merges their JSON objects, later ids winning. Each
/// fetch is bounded at 10 s: a stalled endpoint must fail the cold start, not hang it
/// until the Lambda timeout.
pub async fn fetch_merged_secrets(
    source: &SecretsSource,
    ids: &[&str],
    ttl: Duration,
) -> Result<SecretValues, ConfigError> {
    let mut merged = SecretValues::new();
    for id in ids {
        let fetch = CachedSecrets::new(source.clone(), id, ttl);
        match tokio::time::timeout(Duration::from_secs(10), fetch.get()).await {
            Ok(values) => merged.extend(values?.iter().map(|(k, v)| (k.clone(), v.clone()))),
            Err(_) => return Err(ConfigError::Secret { id: id.to_string(), reason: "no answer within 10 s".into() }),
        }
    }
    Ok(merged)
}

/// The ids in `SETTLE_SECRET_ID`, in order, blanks dropped.
fn secret_ids(value: Option<&str>) -> Vec<&str> {
    value.unwrap_or_default().split(',').map(str::trim).filter(|id| !id.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn secret_ids_are_a_comma_separated_list() {
        assert_eq!(secret_ids(None), Vec::<&str>::new());
        assert_eq!(secret_ids(Some(" ")), Vec::<&str>::new());
        assert_eq!(secret_ids(Some("arn:a, b ,,c")), ["arn:a", "b", "c"]);
    }

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

    #[tokio::test]
    async fn cached_secrets_fetch_once_per_ttl() {
        use crate::ports::secrets::MemorySecrets;
        let memory = MemorySecrets::new();
        memory.put("settle/dev", r#"{"SETTLE_JWT_KEY":"k"}"#);
        let cache = CachedSecrets::new(SecretsSource::Memory(memory.clone()), "settle/dev", Duration::from_secs(60));
        assert_eq!(cache.get().await.unwrap()["SETTLE_JWT_KEY"], "k");
        cache.get().await.unwrap();
        assert_eq!(memory.fetches(), 1);

        let expired = CachedSecrets::new(SecretsSource::Memory(memory.clone()), "settle/dev", Duration::ZERO);
        expired.get().await.unwrap();
        expired.get().await.unwrap();
        assert_eq!(memory.fetches(), 3);

        memory.put("bad", r#"{"SETTLE_JWT_KEY": 12345678}"#);
        let err = CachedSecrets::new(SecretsSource::Memory(memory), "bad", Duration::ZERO).get().await.unwrap_err();
        assert!(!err.to_string().contains("12345678"), "{err}");
    }
}
