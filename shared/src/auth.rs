//! Authentication: bearer JWTs verified with a pinned algorithm and key, and session
//! revocation in the key-value store (one token by `jti`, or everything a subject or a
//! role was issued before an instant), checked in one round trip. Revocation fails
//! closed: if the store cannot answer, the request is refused.

use crate::domain::ids::MerchantId;
use crate::ports::kv::{KeyValueStore, KvError};
use crate::redact::Secret;
use jsonwebtoken::{decode, errors::ErrorKind, Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Moves money and reads its own merchant's data.
    Merchant,
    /// Reads across merchants; cannot move money.
    Support,
    /// Manages webhook endpoints, revocations and settings.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Merchant => "merchant",
            Role::Support => "support",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        [Role::Merchant, Role::Support, Role::Admin].into_iter().find(|r| r.as_str() == text)
    }
}

/// The claims Settle requires. Missing `sub`, `jti`, `iat`, `exp`, `iss` or `aud`
/// makes the token invalid.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_id: Option<String>,
    /// A JSON array of role names, or one space-separated string (as OAuth `scope` is).
    #[serde(default, deserialize_with = "roles_list")]
    pub roles: Vec<String>,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub iss: String,
    pub aud: serde_json::Value,
}

fn roles_list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Roles {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Roles::deserialize(deserializer)? {
        Roles::List(list) => list,
        Roles::Text(text) => text.split_whitespace().map(str::to_string).collect(),
    })
}

/// Who is calling, once the token is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub merchant_id: Option<MerchantId>,
    pub roles: Vec<Role>,
    pub jti: String,
    pub issued_at: i64,
    pub expires_at: i64,
}

impl Principal {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    /// The reason is safe to show: it never quotes the token.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    #[error("token has been revoked")]
    Revoked,
    #[error("cannot check token revocation: {0}")]
    Unavailable(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {name} is invalid: {reason}")]
pub struct KeyError {
    pub name: &'static str,
    pub reason: String,
}

/// Verifies tokens with one pinned algorithm and key.
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    max_lifetime: Duration,
}

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY: Duration = Duration::from_secs(30);

impl JwtVerifier {
    /// `algorithm` is `RS256`, `ES256` or `HS256`; `key` a PEM public key, or the shared
    /// secret for HS256.
    pub fn new(
        algorithm: &str,
        key: &Secret,
        issuer: &str,
        audience: &str,
        max_lifetime: Duration,
    ) -> Result<JwtVerifier, KeyError> {
        let invalid = |reason: String| KeyError { name: "SETTLE_JWT_KEY", reason };
        let (alg, key) = match algorithm {
            "RS256" => (Algorithm::RS256, DecodingKey::from_rsa_pem(key.expose().as_bytes())),
            "ES256" => (Algorithm::ES256, DecodingKey::from_ec_pem(key.expose().as_bytes())),
            "HS256" => {
                if key.expose().len() < 32 {
                    return Err(invalid("an HS256 secret must be at least 32 bytes".into()));
                }
                (Algorithm::HS256, Ok(DecodingKey::from_secret(key.expose().as_bytes())))
            }
            other => {
                return Err(KeyError {
                    name: "SETTLE_JWT_ALGORITHM",
                    reason: format!("expected RS256, ES256 or HS256, got '{other}'"),
                })
            }
        };
        let key = key.map_err(|e| invalid(format!("not a {algorithm} PEM public key ({:?})", e.kind())))?;
        // Exactly one algorithm: a token signed with any other (`none`, or HS256 with the
        // public key as secret) is refused before its signature is looked at.
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        Ok(JwtVerifier { key, validation, max_lifetime })
    }

    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if token.len() > 8192 {
            return Err(AuthError::Invalid("token too large"));
        }
        let data = decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
            AuthError::Invalid(match e.kind() {
                ErrorKind::ExpiredSignature => "token has expired",
                ErrorKind::ImmatureSignature => "token is not valid yet (nbf)",
                ErrorKind::InvalidIssuer => "wrong issuer",
                ErrorKind::InvalidAudience => "wrong audience",
                ErrorKind::InvalidSignature => "bad signature",
                ErrorKind::InvalidAlgorithm => "algorithm not accepted",
                ErrorKind::MissingRequiredClaim(_) => "a required claim is missing",
                ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => "claims are malformed",
                _ => "malformed token",
            })
        })?;
        let claims = data.claims;
        let now = chrono::Utc::now().timestamp();
        let leeway = LEEWAY.as_secs() as i64;
        if claims.iat < 0 || claims.iat > now.saturating_add(leeway) {
            return Err(AuthError::Invalid("token issued in the future (iat)"));
        }
        if claims.exp.saturating_sub(claims.iat) > self.max_lifetime.as_secs() as i64 {
            return Err(AuthError::Invalid("token lifetime exceeds the maximum"));
        }
        if claims.jti.is_empty() || claims.jti.len() > 128 || claims.sub.is_empty() || claims.sub.len() > 256 {
            return Err(AuthError::Invalid("sub and jti must be 1 to 128 characters"));
        }
        let roles: Vec<Role> = claims.roles.iter().filter_map(|r| Role::parse(r)).collect();
        let merchant_id = match claims.merchant_id.as_deref() {
            None => None,
            Some(m) => Some(MerchantId::parse(m).map_err(|_| AuthError::Invalid("merchant_id is malformed"))?),
        };
        if roles.contains(&Role::Merchant) && merchant_id.is_none() {
            return Err(AuthError::Invalid("a merchant token needs a merchant_id claim"));
        }
        Ok(Principal {
            subject: claims.sub,
            merchant_id,
            roles,
            jti: claims.jti,
            issued_at: claims.iat,
            expires_at: claims.exp,
        })
    }
}

/// Revocations in the key-value store.
#[derive(Clone)]
pub struct Revocations {
    kv: KeyValueStore,
    prefix: String,
    /// How long a subject or role cut-off is kept: the longest a token may live.
    keep_cutoffs: Duration,
}

impl Revocations {
    pub fn new(kv: KeyValueStore, prefix: &str, max_token_lifetime: Duration) -> Self {
        Revocations { kv, prefix: prefix.to_string(), keep_cutoffs: max_token_lifetime + LEEWAY }
    }

    fn jti_key(&self, jti: &str) -> String {
        format!("{}revoked:jti:{jti}", self.prefix)
    }
    fn subject_key(&self, sub: &str) -> String {
        format!("{}revoked:sub:{sub}", self.prefix)
    }
    fn role_key(&self, role: Role) -> String {
        format!("{}revoked:role:{}", self.prefix, role.as_str())
    }

    /// One MGET: the token's `jti`, its subject's cut-off and each of its roles'.
    pub async fn check(&self, p: &Principal) -> Result<(), AuthError> {
        let mut keys = vec![self.jti_key(&p.jti), self.subject_key(&p.subject)];
        keys.extend(p.roles.iter().map(|r| self.role_key(*r)));
        let values = self.kv.get_many(&keys).await.map_err(|e| AuthError::Unavailable(e.to_string()))?;
        if values[0].is_some() {
            return Err(AuthError::Revoked);
        }
        let issued_before_cutoff = |v: &Option<Vec<u8>>| {
            v.as_deref()
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.parse::<i64>().ok())
                .is_some_and(|cutoff| p.issued_at < cutoff)
        };
        if values[1..].iter().any(issued_before_cutoff) {
            return Err(AuthError::Revoked);
        }
        Ok(())
    }

    /// Revokes one token until it would have expired anyway.
    pub async fn revoke_token(&self, jti: &str, expires_at: i64) -> Result<(), KvError> {
        let ttl = Duration::from_secs(expires_at.saturating_sub(chrono::Utc::now().timestamp()).max(1) as u64) + LEEWAY;
        self.kv.set(&self.jti_key(jti), b"1", Some(ttl)).await
    }

    /// Revokes every token of `subject` issued before `cutoff` (unix seconds).
    pub async fn revoke_subject_before(&self, subject: &str, cutoff: i64) -> Result<(), KvError> {
        self.kv.set(&self.subject_key(subject), cutoff.to_string().as_bytes(), Some(self.keep_cutoffs)).await
    }

    /// Revokes every token carrying `role` issued before `cutoff` (unix seconds).
    pub async fn revoke_role_before(&self, role: Role, cutoff: i64) -> Result<(), KvError> {
        self.kv.set(&self.role_key(role), cutoff.to_string().as_bytes(), Some(self.keep_cutoffs)).await
    }
}
