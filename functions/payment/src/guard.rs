//! The gate in front of every `/v1` route: per-IP rate limit, bearer-token
//! authentication with revocation (fail closed), per-merchant rate limits (stricter on
//! card tokens and refunds), and `RateLimit` headers on the way out.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use settle_shared::auth::{AuthError, Principal, Role};
use settle_shared::domain::ids::MerchantId;
use settle_shared::ports::kv::{Gcra, Throttle};
use std::net::{IpAddr, SocketAddr};

pub const RATE_LIMIT: HeaderName = HeaderName::from_static("ratelimit");
pub const RATE_LIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub ip: Option<IpAddr>,
}

impl Caller {
    /// The merchant whose money this caller may move: needs the merchant role.
    pub fn merchant(&self) -> Result<&MerchantId, ApiError> {
        if !self.principal.has(Role::Merchant) {
            return Err(ApiError::Forbidden(Role::Merchant));
        }
        self.principal.merchant_id.as_ref().ok_or(ApiError::Forbidden(Role::Merchant))
    }

    /// Which merchant's data this caller may read: `None` means every merchant
    /// (support and admin); a merchant sees only its own.
    pub fn read_scope(&self) -> Result<Option<&MerchantId>, ApiError> {
        if self.principal.has(Role::Support) || self.principal.has(Role::Admin) {
            return Ok(None);
        }
        self.merchant().map(Some)
    }

    /// Whether the caller may read data of `merchant_id`. Another merchant's data is
    /// reported as absent (404), never as forbidden, so ids cannot be probed.
    pub fn can_read(&self, merchant_id: &str) -> Result<bool, ApiError> {
        Ok(match self.read_scope()? {
            None => true,
            Some(own) => own.as_str() == merchant_id,
        })
    }

    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.principal.has(role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(role))
        }
    }
}

/// The client address: API Gateway's `requestContext.http.sourceIp` in Lambda (not a
/// header, which a client could forge), the socket peer locally.
pub fn client_ip(request: &Request) -> Option<IpAddr> {
    if let Some(lambda_http::request::RequestContext::ApiGatewayV2(ctx)) =
        request.extensions().get::<lambda_http::request::RequestContext>()
    {
        return ctx.http.source_ip.as_deref().and_then(|ip| ip.parse().ok());
    }
    let extensions = request.extensions();
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        // Tests stand in for the socket with axum's MockConnectInfo.
        .or_else(|| extensions.get::<axum::extract::connect_info::MockConnectInfo<SocketAddr>>().map(|c| c.0.ip()))
}

/// Which stricter bucket, if any, a request also counts against.
fn special_class(method: &Method, path: &str) -> Option<&'static str> {
    if method != Method::POST {
        return None;
    }
    if path == "/v1/tokens" {
        Some("tokens")
    } else if path.starts_with("/v1/payments/") && path.ends_with("/refunds") {
        Some("refunds")
    } else {
        None
    }
}

pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    match admit(&state, &mut request).await {
        Ok(limits) => {
            let mut response = next.run(request).await;
            if let Some((name, limit, throttle)) = limits {
                add_rate_limit_headers(response.headers_mut(), name, &limit, &throttle);
            }
            state.outbox.relay_if_due(&state).await;
            response
        }
        Err(e) => e.into_response(),
    }
}

/// The per-client-address limit (`SETTLE_RATE_LIMIT_IP`), on every route, public ones
/// included (`/healthz`, the 3-D Secure page, gateway webhooks, the OpenAPI document):
/// before anything else is looked at, so an unauthenticated flood costs one Redis call
/// per request. Fails open, as every rate limit does.
pub async fn limit_per_ip(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(ip) = client_ip(&request) {
        if let Err(e) = throttle(&state, "ip", &ip.to_string(), &state.config.rate_limits.ip).await {
            return e.into_response();
        }
    }
    next.run(request).await
}

/// Whether `request` comes from an admin (a verified token with the admin role, not
/// revoked, from an address in `SETTLE_ADMIN_CIDRS`), for a public route that shows admins
/// more (`/healthz`'s dependency details). Unlike the guard, an unreachable revocation
/// store does not refuse: the details are what an operator needs during that very outage,
/// and they hold no secret.
pub async fn is_admin(state: &AppState, headers: &axum::http::HeaderMap, ip: Option<IpAddr>) -> bool {
    let Ok(token) = bearer_in(headers) else { return false };
    let Ok(principal) = state.auth.verifier().verify(token) else { return false };
    if matches!(state.auth.revocations.check(&principal).await, Err(AuthError::Revoked)) {
        return false;
    }
    require_admin(state, &Caller { principal, ip }).is_ok()
}

/// Checks the request; returns the tightest merchant limit seen, for the headers.
async fn admit(state: &AppState, request: &mut Request) -> Result<Option<(&'static str, Gcra, Throttle)>, ApiError> {
    let limits = &state.config.rate_limits;
    let ip = client_ip(request);
    let token = bearer(request)?;
    state.refresh_secrets_if_due();
    let principal = state.auth.verifier().verify(token).map_err(ApiError::Unauthenticated)?;
    state.auth.revocations.check(&principal).await.map_err(ApiError::Unauthenticated)?;

    let who = principal.merchant_id.as_ref().map_or_else(|| format!("sub:{}", principal.subject), |m| m.to_string());
    let mut shown =
        throttle(state, "merchant", &who, &limits.merchant).await?.map(|t| ("merchant", limits.merchant, t));
    if let Some(class) = special_class(request.method(), request.uri().path()) {
        let limit = if class == "tokens" { limits.tokens } else { limits.refunds };
        if let Some(t) = throttle(state, class, &who, &limit).await? {
            shown = Some((class, limit, t));
        }
    }
    request.extensions_mut().insert(Caller { principal, ip });
    Ok(shown)
}

fn bearer(request: &Request) -> Result<&str, ApiError> {
    bearer_in(request.headers())
}

fn bearer_in(headers: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    let value = headers.get(header::AUTHORIZATION).ok_or(ApiError::Unauthenticated(AuthError::Missing))?;
    let value = value.to_str().map_err(|_| ApiError::Unauthenticated(AuthError::Invalid("malformed header")))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => Ok(token.trim()),
        _ => Err(ApiError::Unauthenticated(AuthError::Invalid("expected 'Authorization: Bearer <token>'"))),
    }
}

/// One GCRA check. Rate limiting fails open: with Redis down the request goes through
/// (and says so in the log), because refusing all traffic would be worse than briefly
/// not limiting it.
async fn throttle(
    state: &AppState,
    class: &'static str,
    who: &str,
    limit: &Gcra,
) -> Result<Option<Throttle>, ApiError> {
    let key = format!("{}rl:{class}:{who}", state.config.redis_prefix);
    match state.backends.kv.throttle(&key, limit).await {
        Ok(t) if t.allowed => Ok(Some(t)),
        Ok(t) => {
            crate::metrics::count("RateLimited", &[("Class", class)], &[("limited", serde_json::json!(who))]);
            let mut headers = axum::http::HeaderMap::new();
            add_rate_limit_headers(&mut headers, class, limit, &t);
            let headers = headers.iter().filter_map(|(n, v)| Some((n.clone(), v.to_str().ok()?.to_string()))).collect();
            Err(ApiError::RateLimited { retry_after_secs: t.retry_after.as_secs_f64().ceil().max(1.0) as u64, headers })
        }
        Err(e) => {
            tracing::warn!(error = %e, class, "rate limiter unavailable; failing open");
            Ok(None)
        }
    }
}

/// `RateLimit-Policy` and `RateLimit` as structured fields
/// (draft-ietf-httpapi-ratelimit-headers): quota, window, remaining, reset.
fn add_rate_limit_headers(headers: &mut axum::http::HeaderMap, name: &str, limit: &Gcra, t: &Throttle) {
    let policy = format!("\"{name}\";q={};w={}", limit.limit, limit.period.as_secs().max(1));
    let current = format!("\"{name}\";r={};t={}", t.remaining, t.reset_after.as_secs_f64().ceil() as u64);
    for (header, value) in [(RATE_LIMIT_POLICY, policy), (RATE_LIMIT, current)] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(header, v);
        }
    }
}

/// Admin routes also need the client address inside `SETTLE_ADMIN_CIDRS`.
pub fn require_admin(state: &AppState, caller: &Caller) -> Result<(), ApiError> {
    caller.require(Role::Admin)?;
    if state.config.admin_cidrs.is_empty() {
        return Err(ApiError::AdminClosed);
    }
    let allowed = caller.ip.is_some_and(|ip| state.config.admin_cidrs.iter().any(|c| c.contains(ip)));
    if allowed {
        Ok(())
    } else {
        Err(ApiError::AddressNotAllowed)
    }
}
