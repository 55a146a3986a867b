//! Secrets Manager values: fetched at start-up (merged from every id in `SETTLE_SECRET_ID`),
//! cached with a TTL, and re-read by a refresher so that a rotation needs no redeploy.

use super::{vars, Backend, Config, ConfigError, Function, Sources};
use crate::ports::secrets::{SecretValues, SecretsError, SecretsSource};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

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

/// Loads the configuration of a function from the process environment, fetching the
/// Secrets Manager secrets first when `SETTLE_SECRET_ID` names any: a comma-separated list
/// of ids or ARNs whose JSON objects are merged, later ones winning (a deployment keeps its
/// generated keys, the MongoDB URI and the operator's values in separate secrets). Then
/// checks that `function` has every value it needs ([`Config::require`]).
pub async fn from_process_env(default_backend: Backend, function: Function) -> Result<Config, ConfigError> {
    let env = |name: &str| std::env::var(name).ok();
    let secret_id = env(vars::SECRET_ID);
    let ids = secret_ids(secret_id.as_deref());
    let secret_values = if ids.is_empty() {
        None
    } else {
        let sdk = crate::aws::load_sdk_config(None).await;
        let source = SecretsSource::SecretsManager(aws_sdk_secretsmanager::Client::new(&sdk));
        let no_secrets = Sources { env: &env, secrets: None };
        let ttl = Duration::from_secs(no_secrets.parse(vars::SECRETS_TTL_SECS, 300)?);
        let values = fetch_merged_secrets(&source, &ids, ttl).await?;
        Some((values, SecretRefresher::new(source, &ids, ttl)))
    };
    let mut config =
        Config::load(&Sources { env: &env, secrets: secret_values.as_ref().map(|(v, _)| v) }, default_backend)?;
    config.secrets_refresher = secret_values.map(|(_, refresher)| Arc::new(refresher));
    config.require(function)?;
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

    #[test]
    fn secret_ids_are_a_comma_separated_list() {
        assert_eq!(secret_ids(None), Vec::<&str>::new());
        assert_eq!(secret_ids(Some(" ")), Vec::<&str>::new());
        assert_eq!(secret_ids(Some("arn:a, b ,,c")), ["arn:a", "b", "c"]);
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
