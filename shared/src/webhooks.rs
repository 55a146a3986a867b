//! Merchant webhook endpoints, shared by the Payment API (which manages them) and the
//! notifier (which delivers to them): the stored records, signing secrets sealed at rest
//! with the master key, the SSRF guard on URLs, and the retry message both put on the
//! retry queue.

use crate::redact::Secret;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::digest;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const ENDPOINTS: &str = "webhook_endpoints";
pub const DELIVERIES: &str = "webhook_deliveries";
pub const ATTEMPTS: &str = "webhook_attempts";
pub const DEAD_LETTERS: &str = "webhook_dead_letters";

/// Every index the endpoint, delivery and attempt queries need.
pub fn indexes() -> Vec<crate::ports::documents::IndexSpec> {
    use crate::ports::documents::IndexSpec;
    vec![
        IndexSpec::new(ENDPOINTS, &["merchant_id", "enabled"]),
        IndexSpec::new(ENDPOINTS, &["created"]),
        IndexSpec::new(DELIVERIES, &["endpoint_id", "created"]),
        IndexSpec::new(ATTEMPTS, &["endpoint_id", "at"]),
        IndexSpec::new(ATTEMPTS, &["event_id", "at"]),
    ]
}

/// Where a delivery stands, as stored in `webhook_deliveries.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Recorded; its attempt is in flight, or was cut short before it could be recorded.
    Pending,
    Delivered,
    /// Failed; the next attempt is on the retry queue.
    Retrying,
    /// Dead-lettered: the schedule is spent, or the endpoint failed for too long.
    Dead,
    /// The endpoint answered 410 Gone and was disabled.
    Gone,
    /// Not attempted: the endpoint was deleted or disabled.
    Skipped,
}

impl DeliveryStatus {
    /// The stored spelling, for queries on the status.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Retrying => "retrying",
            DeliveryStatus::Dead => "dead",
            DeliveryStatus::Gone => "gone",
            DeliveryStatus::Skipped => "skipped",
        }
    }
}

/// How long a rotated-out secret keeps signing.
pub const ROTATION_OVERLAP_SECS: i64 = 24 * 3600;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSecret {
    /// The `whsec_…` secret, sealed with the master key.
    pub sealed: String,
    pub created: i64,
    /// Unix milliseconds after which this (rotated-out) secret no longer signs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointRecord {
    #[serde(rename = "_id")]
    pub id: String,
    pub merchant_id: String,
    pub url: String,
    /// The event types delivered; empty means all.
    #[serde(default)]
    pub event_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Newest first.
    pub secrets: Vec<StoredSecret>,
    /// Unix milliseconds of the first failure since the last success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<i64>,
    pub created: i64,
    pub updated: i64,
}

impl EndpointRecord {
    pub fn wants(&self, event_type: &str) -> bool {
        self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type)
    }
}

/// What goes on the retry queue: which delivery to attempt, which attempt, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryMessage {
    pub delivery_id: String,
    pub attempt: u32,
    /// Unix milliseconds; earlier receipts are put back with the remaining delay.
    pub due_at: i64,
    /// A manual resend (does not count against the retry schedule).
    #[serde(default)]
    pub resend: bool,
    /// W3C trace context of the span that scheduled the attempt: the attempt continues
    /// the event's trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// The delivery id of (event, endpoint): one delivery per pair, whatever the duplicates.
pub fn delivery_id(event_id: &str, endpoint_id: &str) -> String {
    format!("{event_id}:{endpoint_id}")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("sealed secret is malformed or was sealed with another master key")]
    Open,
}

/// Seals endpoint secrets with AES-256-GCM under a key derived from
/// `SETTLE_WEBHOOK_MASTER_KEY`, so that the database never holds them in clear.
#[derive(Clone)]
pub struct SecretBox {
    key: [u8; 32],
}

impl SecretBox {
    /// The key is SHA-256 of a label and the master key. aws-lc computes it rather than the
    /// `sha2` crate: both functions build their box at every cold start, and `sha2` would
    /// first probe the CPU's features itself (on x86_64 VMs each `cpuid` is a VM exit),
    /// which aws-lc has already done when the process started.
    pub fn new(master_key: &Secret) -> Self {
        let mut h = digest::Context::new(&digest::SHA256);
        h.update(b"settle/webhook-secrets/v1\0");
        h.update(master_key.expose().as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(h.finish().as_ref());
        SecretBox { key }
    }

    fn cipher(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.key).unwrap_or_else(|_| unreachable!("32-byte key")))
    }

    pub fn seal(&self, plaintext: &str) -> String {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let mut buffer = plaintext.as_bytes().to_vec();
        self.cipher()
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce_bytes), Aad::empty(), &mut buffer)
            .unwrap_or_else(|_| unreachable!("sealing a short buffer cannot fail"));
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buffer);
        STANDARD.encode(out)
    }

    pub fn open(&self, sealed: &str) -> Result<Secret, SealError> {
        let raw = STANDARD.decode(sealed).map_err(|_| SealError::Open)?;
        if raw.len() < NONCE_LEN + 16 {
            return Err(SealError::Open);
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut buffer = ciphertext.to_vec();
        let plain = self.cipher().open_in_place(nonce, Aad::empty(), &mut buffer).map_err(|_| SealError::Open)?;
        String::from_utf8(plain.to_vec()).map(Secret::new).map_err(|_| SealError::Open)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("not a valid absolute URL")]
    Invalid,
    #[error("only https URLs are accepted")]
    NotHttps,
    #[error("URLs may not carry credentials")]
    Credentials,
    #[error("host does not resolve")]
    Unresolvable,
    #[error("host resolves to a loopback, private, link-local or metadata address")]
    Forbidden,
}

/// Whether private destinations are allowed: only for local development and tests
/// (`SETTLE_WEBHOOK_ALLOW_PRIVATE=true`), where receivers listen on loopback over http.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UrlPolicy {
    pub allow_private: bool,
}

/// Checks a webhook URL's shape, then every address its host resolves to.
pub async fn check_url(text: &str, policy: UrlPolicy) -> Result<url::Url, UrlError> {
    let url = check_url_shape(text, policy)?;
    let host = url.host_str().ok_or(UrlError::Invalid)?.trim_matches(['[', ']']).to_string();
    let port = url.port_or_known_default().ok_or(UrlError::Invalid)?;
    let addresses: Vec<IpAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|_| UrlError::Unresolvable)?
        .map(|a| a.ip())
        .collect();
    if addresses.is_empty() {
        return Err(UrlError::Unresolvable);
    }
    if !policy.allow_private && !addresses.iter().all(|ip| is_public(*ip)) {
        return Err(UrlError::Forbidden);
    }
    Ok(url)
}

/// The checks that need no DNS.
pub fn check_url_shape(text: &str, policy: UrlPolicy) -> Result<url::Url, UrlError> {
    if text.len() > 2048 {
        return Err(UrlError::Invalid);
    }
    let url = url::Url::parse(text).map_err(|_| UrlError::Invalid)?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_private => {}
        _ => return Err(UrlError::NotHttps),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::Invalid);
    }
    Ok(url)
}

/// A globally routable unicast address: not loopback, private, link-local (which holds
/// the cloud metadata service, 169.254.169.254), shared, documentation, multicast or
/// unspecified; IPv4-mapped IPv6 is judged as IPv4.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..=127).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let first = s[0];
    // Prefixes that embed an IPv4 address reach it: judge them by it, or refuse them.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[..6] == [0, 0, 0, 0, 0, 0] {
        // NAT64 (64:ff9b::/96) and IPv4-compatible (::/96) addresses.
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return !ip.is_loopback() && !ip.is_unspecified() && is_public_v4(v4);
    }
    if first == 0x2002 || (first == 0x2001 && s[1] == 0) || (first & 0xffc0) == 0xfec0 {
        // 6to4, Teredo and the deprecated site-local range.
        return false;
    }
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local, including AWS's fd00:ec2::254 metadata
        || (first & 0xffc0) == 0xfe80 // link-local
        || first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_status_is_stored_as_its_query_spelling() {
        use DeliveryStatus::*;
        for status in [Pending, Delivered, Retrying, Dead, Gone, Skipped] {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
    }

    #[test]
    fn sealed_secrets_open_only_with_their_master_key() {
        let sealer = SecretBox::new(&Secret::new("master-key-one"));
        let sealed = sealer.seal("whsec_abc");
        assert!(!sealed.contains("whsec"));
        assert_ne!(sealer.seal("whsec_abc"), sealed, "random nonces");
        assert_eq!(sealer.open(&sealed).unwrap().expose(), "whsec_abc");
        assert_eq!(SecretBox::new(&Secret::new("master-key-two")).open(&sealed), Err(SealError::Open));
        assert_eq!(sealer.open("bm9wZQ=="), Err(SealError::Open));
    }

    #[test]
    fn the_sealing_key_derivation_is_unchanged() {
        // Secrets sealed by earlier releases must still open: SHA-256 of the label and the
        // master key (this vector from Python's hashlib).
        let key = SecretBox::new(&Secret::new("master-key-one")).key;
        assert_eq!(hex::encode(key), "4dd44e7e65f3c0d715e5b3e284f1d9aa1ae08f5d47e185541372595aecf35437");
    }

    #[test]
    fn private_and_metadata_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "224.0.0.1",
            "64:ff9b::a00:5",
            "::a00:5",
            "2002:a00:5::1",
            "2001:0:4136:e378::1",
            "fec0::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} considered public");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn urls_are_checked_before_and_after_resolution() {
        let strict = UrlPolicy::default();
        assert_eq!(check_url("http://example.com/hook", strict).await, Err(UrlError::NotHttps));
        assert_eq!(check_url("https://user:pw@example.com/", strict).await, Err(UrlError::Credentials));
        assert_eq!(check_url("https://127.0.0.1/hook", strict).await, Err(UrlError::Forbidden));
        assert_eq!(check_url("https://localhost:8443/hook", strict).await, Err(UrlError::Forbidden));
        assert_eq!(check_url("https://[::1]/hook", strict).await, Err(UrlError::Forbidden));
        assert_eq!(check_url("https://169.254.169.254/latest/meta-data", strict).await, Err(UrlError::Forbidden));
        assert_eq!(check_url("ftp://example.com", strict).await, Err(UrlError::NotHttps));
        assert_eq!(check_url("not a url", strict).await, Err(UrlError::Invalid));
        let local = UrlPolicy { allow_private: true };
        assert!(check_url("http://127.0.0.1:9999/hook", local).await.is_ok());
    }
}
