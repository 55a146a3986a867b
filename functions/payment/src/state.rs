//! The state every handler shares: configuration, clients, keys and caches, built once
//! per cold start, and the secrets it re-reads without a redeploy.

use crate::{outbox, store};
use settle_shared::auth::{JwtVerifier, KeyError, Revocations};
use settle_shared::config::vars;
use settle_shared::redact::Secret;
use settle_shared::{Backends, Config};
use std::sync::Arc;

/// Token verification and revocation.
pub struct Auth {
    /// Swapped whole when a re-read secret holds a new key set (see [`AppState::refresh_secrets`]).
    verifier: std::sync::RwLock<Arc<JwtVerifier>>,
    pub revocations: Revocations,
}

impl Auth {
    /// The verifier in force now.
    pub fn verifier(&self) -> Arc<JwtVerifier> {
        self.verifier.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Everything a handler needs, built once per cold start and shared by all requests.
/// One `Arc`: axum clones the state for every route, method and layer while the router is
/// built at each cold start, and a clone per field led that profile.
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

/// The parts of [`AppState`], reached through it by `Deref`. Each is behind an `Arc` of its
/// own for the code that keeps one part (a client handle, the config) past the state.
pub struct AppParts {
    pub config: Arc<Config>,
    pub backends: Arc<Backends>,
    pub auth: Arc<Auth>,
    pub outbox: Arc<outbox::Outbox>,
    pub fingerprint_key: Arc<Secret>,
    /// Swapped when a re-read secret holds a new one (see [`AppState::refresh_secrets`]).
    gateway_secret: std::sync::RwLock<Arc<Secret>>,
    /// Seals webhook endpoint secrets (from `SETTLE_WEBHOOK_MASTER_KEY`).
    pub secret_box: settle_shared::webhooks::SecretBox,
    /// The last health check and when it was made (see [`AppState::health`]).
    health_cache: tokio::sync::Mutex<Option<(std::time::Instant, settle_shared::health::HealthReport)>>,
    health_checks: std::sync::atomic::AtomicU64,
}

/// How long `/healthz` answers from its last check.
pub const HEALTH_CACHE: std::time::Duration = std::time::Duration::from_secs(2);

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

impl AppState {
    /// Fails, naming the setting, when the JWT or signing keys are missing or unusable.
    pub fn new(config: Config, backends: Backends) -> Result<Self, KeyError> {
        let missing = |name: &'static str| KeyError { name, reason: "is required but not set".into() };
        let algorithm = config.jwt_algorithm.clone().ok_or_else(|| missing(vars::JWT_ALGORITHM))?;
        let key = config.jwt_key.clone().ok_or_else(|| missing(vars::JWT_KEY))?;
        let verifier =
            JwtVerifier::new(&algorithm, &key, &config.jwt_issuer, &config.jwt_audience, config.jwt_max_lifetime)?;
        let revocations = Revocations::new(backends.kv.clone(), &config.redis_prefix, config.jwt_max_lifetime);
        let fingerprint_key = config.card_fingerprint_key.clone().ok_or_else(|| missing(vars::CARD_FINGERPRINT_KEY))?;
        let gateway_secret =
            config.gateway_webhook_secret.clone().ok_or_else(|| missing(vars::GATEWAY_WEBHOOK_SECRET))?;
        let master = config.webhook_master_key.clone().ok_or_else(|| missing(vars::WEBHOOK_MASTER_KEY))?;
        for (name, secret) in [
            (vars::CARD_FINGERPRINT_KEY, &fingerprint_key),
            (vars::GATEWAY_WEBHOOK_SECRET, &gateway_secret),
            (vars::WEBHOOK_MASTER_KEY, &master),
        ] {
            if secret.expose().len() < 32 {
                return Err(KeyError { name, reason: "must be at least 32 characters".into() });
            }
        }
        Ok(AppState(Arc::new(AppParts {
            config: Arc::new(config),
            backends: Arc::new(backends),
            auth: Arc::new(Auth { verifier: std::sync::RwLock::new(Arc::new(verifier)), revocations }),
            outbox: Arc::new(outbox::Outbox::default()),
            fingerprint_key: Arc::new(fingerprint_key),
            gateway_secret: std::sync::RwLock::new(Arc::new(gateway_secret)),
            secret_box: settle_shared::webhooks::SecretBox::new(&master),
            health_cache: Default::default(),
            health_checks: Default::default(),
        })))
    }

    /// The dependencies' health, checked at most once per [`HEALTH_CACHE`]: a burst of
    /// probes (load balancers, monitors, an attacker) costs one round of pings.
    pub async fn health(&self) -> settle_shared::health::HealthReport {
        let mut cached = self.health_cache.lock().await;
        if let Some((at, report)) = cached.as_ref() {
            if at.elapsed() < HEALTH_CACHE {
                return report.clone();
            }
        }
        self.health_checks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let report = self.backends.health().await;
        *cached = Some((std::time::Instant::now(), report.clone()));
        report
    }

    /// How many times [`AppState::health`] pinged the dependencies (not answered from cache).
    pub fn health_checks(&self) -> u64 {
        self.health_checks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The gateway webhook secret in force now.
    pub fn gateway_secret(&self) -> Arc<Secret> {
        self.gateway_secret.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads the secrets in the background once their TTL has passed (at most once per
    /// `SETTLE_SECRETS_TTL_SECS` in this instance), so that a rotated JWT key set or gateway
    /// secret is taken up without a redeploy. The request that notices goes on with the
    /// values in force; later requests get the new ones.
    pub fn refresh_secrets_if_due(&self) {
        let Some(refresher) = self.config.secrets_refresher.clone() else { return };
        if !refresher.claim() {
            return;
        }
        let state = self.clone();
        tokio::spawn(async move {
            match refresher.fetch().await {
                Ok(values) => state.refresh_secrets(&values),
                Err(e) => tracing::warn!(error = %e, "secrets not re-read; the values in force stay"),
            }
        });
    }

    /// Takes up the rotating values of freshly read secrets: `SETTLE_JWT_KEY` (one key or a
    /// set by kid) and `SETTLE_GATEWAY_WEBHOOK_SECRET`. A value that does not pass the checks
    /// made at start-up is refused, naming it, and the one in force stays.
    pub fn refresh_secrets(&self, values: &settle_shared::ports::secrets::SecretValues) {
        let config = &self.config;
        if let (Some(key), Some(algorithm)) = (values.get(vars::JWT_KEY), &config.jwt_algorithm) {
            let key = Secret::new(key.trim());
            match JwtVerifier::new(algorithm, &key, &config.jwt_issuer, &config.jwt_audience, config.jwt_max_lifetime) {
                Ok(verifier) => {
                    let ids: Vec<&str> = verifier.key_ids().into_iter().map(|k| k.unwrap_or("(no kid)")).collect();
                    tracing::info!(keys = ?ids, "JWT keys re-read");
                    *self.auth.verifier.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(verifier);
                }
                Err(e) => tracing::error!(error = %e, "re-read JWT key refused; the keys in force stay"),
            }
        }
        if let Some(secret) = values.get(vars::GATEWAY_WEBHOOK_SECRET).map(|v| v.trim()) {
            if secret.len() >= 32 {
                *self.gateway_secret.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Secret::new(secret));
            } else {
                tracing::error!("re-read SETTLE_GATEWAY_WEBHOOK_SECRET is under 32 characters; the one in force stays");
            }
        }
    }

    /// Cold-start set-up, idempotent: the indexes every query needs and the exchange
    /// events go to (Amazon MQ starts empty; until it is declared, events wait in the outbox).
    pub async fn prepare(&self) -> Result<(), String> {
        self.backends.documents.ensure_indexes(&store::indexes()).await.map_err(|e| e.to_string())?;
        self.backends.bus.declare(&self.backends.topology).await.map_err(|e| e.to_string())
    }
}
