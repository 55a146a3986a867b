//! One delivery attempt: a signed POST of the event to the endpoint, over a shared
//! connection pool whose resolver refuses private addresses (so a DNS answer that changes
//! after the URL check cannot reach the internal network).

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use settle_shared::webhooks::{is_public, UrlPolicy};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const USER_AGENT: &str = concat!("Settle-Webhooks/", env!("CARGO_PKG_VERSION"), " (+https://settle.dev/webhooks)");
/// How much of a response body is kept in the attempt log.
pub const EXCERPT_BYTES: usize = 1024;

struct GuardedResolver {
    policy: UrlPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> =
                found.into_iter().filter(|a| policy.allow_private || is_public(a.ip())).collect();
            if allowed.is_empty() {
                return Err("host resolves only to forbidden addresses".into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// The HTTP client, built once per cold start: connections are reused across
/// invocations.
pub fn client(policy: UrlPolicy, timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        // A redirect could lead anywhere, including inside the network: not followed.
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(GuardedResolver { policy }))
        .pool_idle_timeout(Duration::from_secs(90))
        // A proxy would resolve names itself, past the guarded resolver.
        .no_proxy()
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptResult {
    pub status: Option<u16>,
    pub duration: Duration,
    pub excerpt: String,
    pub error: Option<String>,
    pub retry_after: Option<Duration>,
}

impl AttemptResult {
    pub fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    pub fn gone(&self) -> bool {
        self.status == Some(410)
    }
}

pub async fn post(
    client: &reqwest::Client,
    url: &str,
    webhook_id: &str,
    timestamp: i64,
    signature: &str,
    body: &[u8],
) -> AttemptResult {
    let start = Instant::now();
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", webhook_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body.to_vec())
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(crate::retry_schedule::parse_retry_after);
            // Only the excerpt is read: a hostile receiver may answer with gigabytes.
            let mut response = response;
            let mut kept: Vec<u8> = Vec::new();
            while kept.len() < EXCERPT_BYTES {
                match response.chunk().await {
                    Ok(Some(chunk)) => kept.extend_from_slice(&chunk[..chunk.len().min(EXCERPT_BYTES - kept.len())]),
                    Ok(None) | Err(_) => break,
                }
            }
            let excerpt = String::from_utf8_lossy(&kept).into_owned();
            AttemptResult { status: Some(status), duration: start.elapsed(), excerpt, error: None, retry_after }
        }
        Err(e) => {
            let kind = if e.is_timeout() {
                "timeout"
            } else if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            AttemptResult {
                status: None,
                duration: start.elapsed(),
                excerpt: String::new(),
                error: Some(kind.to_string()),
                retry_after: None,
            }
        }
    }
}
