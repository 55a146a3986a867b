//! One delivery attempt: a signed POST of the event to the endpoint, over a shared
//! connection pool whose resolver refuses private addresses (so a DNS answer that changes
//! after the URL check cannot reach the internal network).

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use settle_shared::webhooks::{is_public, UrlPolicy};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

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

/// TLS for webhook endpoints: Mozilla's root set, compiled in (webpki-roots). The platform
/// verifier reqwest uses by default reads every certificate file of the system at client
/// construction, which was most of the notifier's cold start; merchants' endpoints are
/// public HTTPS servers, which Mozilla's roots are the reference for.
pub(crate) fn webhook_tls() -> Option<rustls::ClientConfig> {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions().ok()?;
    Some(config.with_root_certificates(roots).with_no_client_auth())
}

/// The HTTP client, built once per cold start: connections are reused across
/// invocations. An error fails the cold start: no client without the guarded resolver.
pub fn client(policy: UrlPolicy, timeout: Duration) -> reqwest::Result<reqwest::Client> {
    let builder = match webhook_tls() {
        Some(tls) => reqwest::Client::builder().tls_backend_preconfigured(tls),
        None => {
            tracing::warn!("webhook TLS falls back to the platform's roots: aws-lc offered no TLS version");
            reqwest::Client::builder()
        }
    };
    builder
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

    /// An attempt that was never sent, for `error`.
    pub fn refused(error: String) -> Self {
        AttemptResult {
            status: None,
            duration: Duration::ZERO,
            excerpt: String::new(),
            error: Some(error),
            retry_after: None,
        }
    }
}

/// One signed POST, in a client span naming the receiver's host.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    webhook_id: &str,
    timestamp: i64,
    signature: &str,
    body: &[u8],
) -> AttemptResult {
    let host = reqwest::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default();
    // The host only: a receiver's path or query may hold a token of the merchant's.
    let span =
        settle_shared::dependency_span!("webhook", "POST", host, http.response.status_code = tracing::field::Empty,);
    let request = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", webhook_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body.to_vec());
    let result = send(request).instrument(span.clone()).await;
    match (&result.status, &result.error) {
        (Some(status), _) => {
            span.record("http.response.status_code", status);
            if *status >= 400 {
                settle_shared::otel::set_error(&span, format!("the endpoint answered {status}"));
            }
        }
        (None, Some(error)) => settle_shared::otel::set_error(&span, error),
        (None, None) => {}
    }
    result
}

/// Sends the request and keeps what the attempt log needs of the answer.
async fn send(request: reqwest::RequestBuilder) -> AttemptResult {
    let start = Instant::now();
    let sent = request.send().await;
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
            AttemptResult { duration: start.elapsed(), ..AttemptResult::refused(kind.to_string()) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webhook_client_takes_the_compiled_in_roots() {
        let tls = webhook_tls().expect("aws-lc offers TLS 1.2 and 1.3");
        assert!(webpki_roots::TLS_SERVER_ROOTS.len() > 100);
        // reqwest refuses a preconfigured TLS value it does not recognise (another rustls
        // version, say): building must succeed with this one, or no client is made.
        let built = reqwest::Client::builder().tls_backend_preconfigured(tls).build();
        assert!(built.is_ok(), "{built:?}");
        let mismatched = reqwest::Client::builder().tls_backend_preconfigured("not a TLS config").build();
        assert!(mismatched.is_err(), "an unknown TLS value must fail, not fall back silently");
        assert!(client(UrlPolicy { allow_private: false }, Duration::from_secs(1)).is_ok());
    }
}
