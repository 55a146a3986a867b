//! Secrets port (AWS Secrets Manager): fetches one JSON secret by name. Caching with a
//! TTL lives in [`crate::config::CachedSecrets`], above the port.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("secret {0} not found")]
    NotFound(String),
    #[error("secret {id} is not a JSON object of strings: {reason}")]
    Malformed { id: String, reason: String },
    #[error("secrets store unavailable: {0}")]
    Unavailable(String),
    #[error("secrets store error: {0}")]
    Other(String),
}

pub type SecretValues = BTreeMap<String, String>;

#[derive(Clone)]
pub enum SecretsSource {
    Memory(MemorySecrets),
    SecretsManager(aws_sdk_secretsmanager::Client),
}

/// Secrets held in memory, with a fetch counter so tests can see the cache work.
#[derive(Clone, Default)]
pub struct MemorySecrets {
    secrets: Arc<Mutex<HashMap<String, String>>>,
    fetches: Arc<std::sync::atomic::AtomicUsize>,
}

impl MemorySecrets {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&self, id: &str, secret_string: &str) {
        self.secrets.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_string(), secret_string.to_string());
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl SecretsSource {
    /// The secret's `SecretString`, parsed as a flat JSON object of strings.
    pub async fn get_json(&self, id: &str) -> Result<SecretValues, SecretsError> {
        let text = match self {
            SecretsSource::Memory(m) => {
                m.fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                m.secrets
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(id)
                    .cloned()
                    .ok_or_else(|| SecretsError::NotFound(id.to_string()))?
            }
            SecretsSource::SecretsManager(client) => {
                let out = client.get_secret_value().secret_id(id).send().await.map_err(|e| {
                    if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) {
                        return SecretsError::NotFound(id.to_string());
                    }
                    match super::aws_failure(&e) {
                        (true, text) => SecretsError::Unavailable(text),
                        (false, text) => SecretsError::Other(text),
                    }
                })?;
                out.secret_string()
                    .ok_or_else(|| SecretsError::Malformed { id: id.to_string(), reason: "no SecretString".into() })?
                    .to_string()
            }
        };
        // Only the position of the fault: serde's message can quote the offending value.
        serde_json::from_str(&text).map_err(|e| SecretsError::Malformed {
            id: id.to_string(),
            reason: format!("{:?} error at line {} column {}", e.classify(), e.line(), e.column()),
        })
    }

    pub async fn ping(&self) -> Result<(), SecretsError> {
        match self {
            SecretsSource::Memory(_) => Ok(()),
            SecretsSource::SecretsManager(client) => {
                client.list_secrets().max_results(1).send().await.map(|_| ()).map_err(|e| {
                    match super::aws_failure(&e) {
                        (true, text) => SecretsError::Unavailable(text),
                        (false, text) => SecretsError::Other(text),
                    }
                })
            }
        }
    }
}
