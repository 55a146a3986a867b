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

/// Verifies tokens with one pinned algorithm and one or more keys: during a rotation of
/// the issuer's key, `SETTLE_JWT_KEY` holds both, so no valid token is refused.
#[derive(Clone)]
pub struct JwtVerifier {
    /// `(kid, key)`; a key given alone (not in a JSON object) has no kid.
    keys: Vec<(Option<String>, DecodingKey)>,
    validation: Validation,
    max_lifetime: Duration,
}

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// More keys than this in `SETTLE_JWT_KEY` is a mistake (a token without a kid is tried
/// against each).
pub const MAX_JWT_KEYS: usize = 8;

impl JwtVerifier {
    /// `algorithm` is `RS256`, `ES256` or `HS256`. `key` is a PEM public key (the shared
    /// secret for HS256), or a JSON object of such keys by key id (`{"2026-11": "-----BEGIN
    /// PUBLIC KEY-----…", "2026-12": …}`): a token's `kid` header picks its key, and a token
    /// without one is accepted by any of them.
    pub fn new(
        algorithm: &str,
        key: &Secret,
        issuer: &str,
        audience: &str,
        max_lifetime: Duration,
    ) -> Result<JwtVerifier, KeyError> {
        let invalid = |reason: String| KeyError { name: crate::config::vars::JWT_KEY, reason };
        let alg = match algorithm {
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            "HS256" => Algorithm::HS256,
            other => {
                return Err(KeyError {
                    name: crate::config::vars::JWT_ALGORITHM,
                    reason: format!("expected RS256, ES256 or HS256, got '{other}'"),
                })
            }
        };
        let text = key.expose().trim();
        let named: Vec<(Option<String>, String)> = if text.starts_with('{') {
            let map: std::collections::BTreeMap<String, String> = serde_json::from_str(text)
                .map_err(|_| invalid("a JSON object of keys must map each key id to a key (a string)".into()))?;
            map.into_iter().map(|(kid, key)| (Some(kid), key)).collect()
        } else {
            vec![(None, text.to_string())]
        };
        if named.is_empty() || named.len() > MAX_JWT_KEYS {
            return Err(invalid(format!("must hold 1 to {MAX_JWT_KEYS} keys, holds {}", named.len())));
        }
        let mut keys = Vec::with_capacity(named.len());
        for (kid, pem) in named {
            // Named by its kid, never quoted: the value may be a shared secret.
            let which = kid.as_deref().map(|k| format!("key '{k}'")).unwrap_or_else(|| "the key".into());
            let decoding = match alg {
                Algorithm::RS256 => DecodingKey::from_rsa_pem(pem.as_bytes()),
                Algorithm::ES256 => DecodingKey::from_ec_pem(pem.as_bytes()),
                _ if pem.len() < 32 => {
                    return Err(invalid(format!("{which}: an HS256 secret must be at least 32 bytes")))
                }
                _ => Ok(DecodingKey::from_secret(pem.as_bytes())),
            };
            let decoding = decoding
                .map_err(|e| invalid(format!("{which} is not a {algorithm} PEM public key ({:?})", e.kind())))?;
            keys.push((kid, decoding));
        }
        // Exactly one algorithm: a token signed with any other (`none`, or HS256 with the
        // public key as secret) is refused before its signature is looked at.
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        Ok(JwtVerifier { keys, validation, max_lifetime })
    }

    /// The key ids this verifier accepts (`None` for a key given alone).
    pub fn key_ids(&self) -> Vec<Option<&str>> {
        self.keys.iter().map(|(kid, _)| kid.as_deref()).collect()
    }

    /// The keys to try for `token`: the one its `kid` names, else every key (a kid this
    /// verifier does not know is refused when every key has a kid).
    fn candidates(&self, token: &str) -> Result<Vec<&DecodingKey>, AuthError> {
        let kid = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid("malformed token"))?.kid;
        let named = kid.as_deref().and_then(|kid| self.keys.iter().find(|(k, _)| k.as_deref() == Some(kid)));
        match (kid, named) {
            (Some(_), Some((_, key))) => Ok(vec![key]),
            (Some(_), None) if self.keys.iter().all(|(k, _)| k.is_some()) => {
                Err(AuthError::Invalid("unknown key id (kid)"))
            }
            _ => Ok(self.keys.iter().map(|(_, key)| key).collect()),
        }
    }

    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if token.len() > 8192 {
            return Err(AuthError::Invalid("token too large"));
        }
        let mut decoded = Err(jsonwebtoken::errors::ErrorKind::InvalidSignature.into());
        for key in self.candidates(token)? {
            decoded = decode::<Claims>(token, key, &self.validation);
            // Another key can only help a signature this one did not make.
            if !matches!(&decoded, Err(e) if *e.kind() == ErrorKind::InvalidSignature) {
                break;
            }
        }
        let data = decoded.map_err(|e: jsonwebtoken::errors::Error| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const OLD: &str = "rotation-test-old-key-0123456789abcdef";
    const NEW: &str = "rotation-test-new-key-0123456789abcdef";

    fn verifier(key: &str) -> JwtVerifier {
        JwtVerifier::new("HS256", &Secret::new(key), "settle", "settle-api", Duration::from_secs(3600)).unwrap()
    }

    fn token(secret: &str, kid: Option<&str>) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({"sub": "s", "jti": "j", "iat": now, "exp": now + 60, "iss": "settle",
            "aud": "settle-api", "roles": ["support"]});
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.map(str::to_string);
        encode(&header, &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    }

    #[test]
    fn during_a_rotation_both_keys_verify_and_a_kid_picks_its_key() {
        let both = verifier(&serde_json::json!({"old": OLD, "new": NEW}).to_string());
        assert_eq!(both.key_ids(), [Some("new"), Some("old")]);
        for (secret, kid) in [(OLD, Some("old")), (NEW, Some("new")), (OLD, None), (NEW, None)] {
            assert!(both.verify(&token(secret, kid)).is_ok(), "{kid:?}");
        }
        // A kid names one key: the other key's signature under it is refused.
        assert_eq!(both.verify(&token(OLD, Some("new"))), Err(AuthError::Invalid("bad signature")));
        assert_eq!(both.verify(&token(OLD, Some("gone"))), Err(AuthError::Invalid("unknown key id (kid)")));
        // Once the old key is removed, its tokens are refused.
        let rotated = verifier(&serde_json::json!({"new": NEW}).to_string());
        assert_eq!(rotated.verify(&token(OLD, None)), Err(AuthError::Invalid("bad signature")));
        assert!(rotated.verify(&token(NEW, Some("new"))).is_ok());
    }

    #[test]
    fn a_single_key_accepts_any_kid_and_bad_key_sets_are_named_without_their_values() {
        let single = verifier(OLD);
        assert!(single.verify(&token(OLD, Some("whatever"))).is_ok());
        let too_short =
            JwtVerifier::new("HS256", &Secret::new(r#"{"a":"short-secret"}"#), "i", "a", Duration::from_secs(60));
        let message = too_short.err().unwrap().to_string();
        assert!(message.contains("key 'a'") && !message.contains("short-secret"), "{message}");
        let not_strings = JwtVerifier::new("HS256", &Secret::new(r#"{"a": 1}"#), "i", "a", Duration::from_secs(60));
        assert!(not_strings.is_err());
        let empty = JwtVerifier::new("HS256", &Secret::new("{}"), "i", "a", Duration::from_secs(60));
        assert!(empty.err().unwrap().to_string().contains("1 to 8 keys"));
    }
}
