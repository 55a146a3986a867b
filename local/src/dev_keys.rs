//! The local stack's development credentials, used only when no JWT settings are given:
//! an ES256 key pair (so `settle token` can mint tokens the local API accepts) and
//! fixed local secrets. They are public by being in this repository: a Lambda never
//! falls back to them (it refuses to start without `SETTLE_JWT_KEY`).

use settle_shared::redact::Secret;
use settle_shared::Config;

pub const DEV_PRIVATE_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgev/eKeuVGWOGJEBt
krpSs7CYa09k0BxNVTUR6F7Hj96hRANCAAR2EtG2kZ2s+wl6rJ+TRQuP2U8ssmQa
3pwDRTGaFdnb11YtXjXS/k4I6uzNqHP4xNDd97lPmCLdhJK60qScoLz2
-----END PRIVATE KEY-----
";

pub const DEV_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEdhLRtpGdrPsJeqyfk0ULj9lPLLJk
Gt6cA0UxmhXZ29dWLV410v5OCOrszahz+MTQ3fe5T5gi3YSSutKknKC89g==
-----END PUBLIC KEY-----
";

/// The local stack's gateway webhook secret when none is configured.
pub const DEV_GATEWAY_WEBHOOK_SECRET: &str = "settle-local-gateway-webhook-secret-0001";
pub const DEV_FINGERPRINT_KEY: &str = "settle-local-card-fingerprint-key-000001";
pub const DEV_WEBHOOK_MASTER_KEY: &str = "settle-local-webhook-master-key-00000001";

/// Fills in development credentials for what is not configured; returns a line per
/// default used, for the banner.
pub fn apply(config: &mut Config) -> Vec<String> {
    let mut used = Vec::new();
    if config.jwt_algorithm.is_none() && config.jwt_key.is_none() {
        config.jwt_algorithm = Some("ES256".into());
        config.jwt_key = Some(Secret::new(DEV_PUBLIC_KEY));
        used.push("JWT: development ES256 key pair (mint tokens with `settle token`)".to_string());
    }
    if config.card_fingerprint_key.is_none() {
        config.card_fingerprint_key = Some(Secret::new(DEV_FINGERPRINT_KEY));
        used.push("card fingerprints: development key".to_string());
    }
    if config.webhook_master_key.is_none() {
        config.webhook_master_key = Some(Secret::new(DEV_WEBHOOK_MASTER_KEY));
        used.push("webhook secrets: sealed with a development master key".to_string());
    }
    if config.gateway_webhook_secret.is_none() {
        config.gateway_webhook_secret = Some(Secret::new(DEV_GATEWAY_WEBHOOK_SECRET));
        used.push(format!("gateway webhooks: development secret {DEV_GATEWAY_WEBHOOK_SECRET}"));
    }
    used
}

/// A token for the development key, as `settle token` prints it.
pub fn mint(
    config: &Config,
    subject: &str,
    merchant_id: Option<&str>,
    roles: &[String],
    ttl_secs: i64,
) -> anyhow::Result<String> {
    let now = chrono::Utc::now().timestamp();
    let claims = settle_shared::auth::Claims {
        sub: subject.to_string(),
        merchant_id: merchant_id.map(str::to_string),
        roles: roles.to_vec(),
        jti: uuid::Uuid::new_v4().to_string(),
        iat: now,
        exp: now + ttl_secs,
        nbf: Some(now),
        iss: config.jwt_issuer.clone(),
        aud: serde_json::json!(config.jwt_audience),
    };
    let key = jsonwebtoken::EncodingKey::from_ec_pem(DEV_PRIVATE_KEY.as_bytes())?;
    Ok(jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256), &claims, &key)?)
}
