//! Settle's Payment API: one axum `Router`, served by `lambda_http` behind API Gateway
//! (HTTP API, payload v2) and by `axum::serve` in the local stack.

// The OpenAPI document is one large `json!` literal.
#![recursion_limit = "512"]

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use settle_shared::auth::{JwtVerifier, KeyError, Revocations};
use settle_shared::health::Status;
use settle_shared::problem::Problem;
use settle_shared::redact::Secret;
use settle_shared::{otel, telemetry, Backends, Config};
use std::sync::Arc;
use tracing::Instrument;

pub mod admin;
pub mod error;
pub mod gateway_webhooks;
pub mod guard;
pub mod idempotency;
pub mod input;
pub mod openapi;
pub mod outbox;
pub mod panics;
pub mod payments;
pub mod refunds;
pub mod settlements;
pub mod store;
pub mod tokens;
pub mod webhook_endpoints;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
/// W3C Trace Context: a caller's trace continues in the API's spans.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

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
        let algorithm = config.jwt_algorithm.clone().ok_or_else(|| missing("SETTLE_JWT_ALGORITHM"))?;
        let key = config.jwt_key.clone().ok_or_else(|| missing("SETTLE_JWT_KEY"))?;
        let verifier =
            JwtVerifier::new(&algorithm, &key, &config.jwt_issuer, &config.jwt_audience, config.jwt_max_lifetime)?;
        let revocations = Revocations::new(backends.kv.clone(), &config.redis_prefix, config.jwt_max_lifetime);
        let fingerprint_key =
            config.card_fingerprint_key.clone().ok_or_else(|| missing("SETTLE_CARD_FINGERPRINT_KEY"))?;
        let gateway_secret =
            config.gateway_webhook_secret.clone().ok_or_else(|| missing("SETTLE_GATEWAY_WEBHOOK_SECRET"))?;
        let master = config.webhook_master_key.clone().ok_or_else(|| missing("SETTLE_WEBHOOK_MASTER_KEY"))?;
        for (name, secret) in [
            ("SETTLE_CARD_FINGERPRINT_KEY", &fingerprint_key),
            ("SETTLE_GATEWAY_WEBHOOK_SECRET", &gateway_secret),
            ("SETTLE_WEBHOOK_MASTER_KEY", &master),
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
        if let (Some(key), Some(algorithm)) = (values.get("SETTLE_JWT_KEY"), &config.jwt_algorithm) {
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
        if let Some(secret) = values.get("SETTLE_GATEWAY_WEBHOOK_SECRET").map(|v| v.trim()) {
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

/// The whole API. The same value goes to `lambda_http::run` and to `axum::serve`.
///
/// One router, built at every cold start. The guard is a `route_layer` placed after the
/// authenticated routes and before the public ones: it wraps only the routes added before
/// it. (A separate authenticated router merged into this one had every one of its paths
/// inserted twice: about a tenth of the payment API's start-up instructions, in callgrind.)
/// Matching does not depend on the order: `/v1/payments/{id}/3ds` still wins over
/// `/v1/payments/{id}/{action}` because a static segment beats a parameter.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/tokens", post(tokens::create_token))
        .route("/v1/payments", post(payments::create_payment).get(payments::list_payments))
        .route("/v1/payments/{id}", get(payments::get_payment))
        .route("/v1/payments/{id}/refunds", post(refunds::create_refund).get(refunds::list_refunds))
        .route("/v1/payments/{id}/refunds/{refund_id}", get(refunds::get_refund))
        .route("/v1/payments/{id}/{action}", post(payments::payment_action))
        .route("/v1/admin/revocations", post(admin::revoke))
        .route("/v1/webhook_endpoints", post(webhook_endpoints::create).get(webhook_endpoints::list))
        .route(
            "/v1/webhook_endpoints/{id}",
            get(webhook_endpoints::get).patch(webhook_endpoints::update).delete(webhook_endpoints::delete),
        )
        .route("/v1/webhook_endpoints/{id}/rotate_secret", post(webhook_endpoints::rotate_secret))
        .route("/v1/webhook_endpoints/{id}/attempts", get(webhook_endpoints::endpoint_attempts))
        .route("/v1/webhook_endpoints/{id}/resend", post(webhook_endpoints::resend))
        .route("/v1/webhook_endpoints/{id}/recover", post(webhook_endpoints::recover))
        .route("/v1/events/{event_id}/attempts", get(webhook_endpoints::event_attempts))
        .route("/v1/settlements/summary", get(settlements::summary))
        .route_layer(middleware::from_fn_with_state(state.clone(), guard::guard))
        // Public from here on: the guard above does not wrap them.
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi::serve))
        .route("/v1/payments/{id}/3ds", get(payments::challenge_page))
        .route("/v1/payments/{id}/3ds/{answer}", post(payments::challenge_answer))
        .route("/v1/gateway/webhooks", post(gateway_webhooks::receive))
        // Every route above, public or not, counts against its client address's limit.
        .route_layer(middleware::from_fn_with_state(state.clone(), guard::limit_per_ip))
        .fallback(|| async { Problem::not_found() })
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() })
        // Inside the request's span, so a panic's 500 carries the request's ids.
        .layer(middleware::from_fn(panics::catch_panics))
        .layer(middleware::from_fn_with_state(state.clone(), trace_request))
        .with_state(state)
}

/// 200 when every dependency answers, 503 otherwise. Everyone gets the status; admins
/// (see [`guard::is_admin`]) also get each dependency with its reason (scrubbed of
/// secrets before it gets here), which tells an outsider too much about the deployment.
async fn healthz(State(state): State<AppState>, request: Request) -> Response {
    let (headers, ip) = (request.headers().clone(), guard::client_ip(&request));
    let report = state.health().await;
    let status = if report.status == Status::Ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    if guard::is_admin(&state, &headers, ip).await {
        (status, Json(report)).into_response()
    } else {
        (status, Json(serde_json::json!({"status": report.status}))).into_response()
    }
}

/// Runs the request in an invocation span (function, request id, cold start, correlation
/// id, Idempotency-Key) and returns both ids to the caller, so a client's bug report can
/// name them. The ids are also set on the request, validated, for the handlers that put
/// them on events. With tracing on, the span is the trace's server span (continuing the
/// caller's `traceparent` or X-Ray's trace) and the request's spans are exported before
/// the response leaves: Lambda may freeze the instance right after.
async fn trace_request(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let lambda = request.extensions().get::<lambda_http::Context>();
    let xray_trace_id = lambda.and_then(|c| c.xray_trace_id.clone());
    let request_id = lambda
        .map(|c| c.request_id.clone())
        .or_else(|| header_id(request.headers(), &REQUEST_ID))
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let correlation_id = header_id(request.headers(), &CORRELATION_ID).unwrap_or_else(|| request_id.clone());
    for (name, value) in [(REQUEST_ID, &request_id), (CORRELATION_ID, &correlation_id)] {
        if let Ok(v) = HeaderValue::from_str(value) {
            request.headers_mut().insert(name, v);
        }
    }
    let cold_start = telemetry::cold_start(METRICS_FUNCTION);
    let span = telemetry::invocation_span(&state.config.function_name, &request_id, &correlation_id, cold_start);
    if let Ok(key) = idempotency::key_of(request.headers()) {
        span.record("idempotency_key", key.as_str());
    }
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    if otel::enabled() {
        let traceparent = request.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok());
        if let Some(parent) = otel::invocation_parent(traceparent, xray_trace_id.as_deref()) {
            otel::set_parent(&span, parent);
        }
        // The route template, not the path: ids would make every span name unique.
        let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_string();
        otel::describe(&span, format!("{method} {route}"), otel::SpanKind::Server);
        otel::set_attribute(&span, "http.request.method", method.as_str());
        otel::set_attribute(&span, "http.route", route);
    }
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.in_scope(|| tracing::info!(%method, %path, status = status.as_u16(), "request"));
    otel::set_attribute(&span, "http.response.status_code", status.as_u16());
    if status.is_server_error() {
        otel::set_error(&span, status);
    }
    drop(span);
    otel::flush().await;
    for (name, value) in [(REQUEST_ID, request_id), (CORRELATION_ID, correlation_id)] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, v);
        }
    }
    response
}

/// A caller-supplied id, accepted only if short and made of safe characters (it goes into
/// logs and response headers).
fn header_id(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let value = headers.get(name)?.to_str().ok()?;
    let ok =
        (1..=128).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| value.to_string())
}

/// The `Function` dimension of this function's metrics: stable across deployments, unlike
/// the Lambda function's name, so that the template's dashboard and alarms can name it.
pub(crate) const METRICS_FUNCTION: &str = "payment";

/// One EMF record counting one `metric` (see `settle_shared::metrics`), under this
/// function's name, with `dimensions` and searchable `properties`.
pub(crate) fn count(metric: &str, dimensions: &[(&str, &str)], properties: &[(&str, serde_json::Value)]) {
    record(dimensions, &[settle_shared::metrics::Measure::count(metric, 1)], properties);
}

/// One EMF record of several `measures` under this function's name.
pub(crate) fn record(
    dimensions: &[(&str, &str)],
    measures: &[settle_shared::metrics::Measure],
    properties: &[(&str, serde_json::Value)],
) {
    settle_shared::metrics::emit(METRICS_FUNCTION, dimensions, measures, properties);
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use settle_shared::config::{Backend, Sources};
    use tower::ServiceExt;

    fn app() -> Router {
        let env = |name: &str| match name {
            "SETTLE_JWT_ALGORITHM" => Some("HS256".to_string()),
            "SETTLE_JWT_KEY"
            | "SETTLE_CARD_FINGERPRINT_KEY"
            | "SETTLE_GATEWAY_WEBHOOK_SECRET"
            | "SETTLE_WEBHOOK_MASTER_KEY" => Some("unit-test-secret-unit-test-secret-0123".to_string()),
            _ => None,
        };
        let config = Config::load(&Sources { env: &env, secrets: None }, Backend::Memory).unwrap();
        let backends = Backends::memory(&config);
        router(AppState::new(config, backends).unwrap())
    }

    async fn call(request: Request<Body>) -> (StatusCode, HeaderMap, serde_json::Value) {
        let response = app().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn healthz_shows_everyone_the_status_and_no_details() {
        let (status, headers, body) = call(Request::get("/healthz").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, serde_json::json!({"status": "ok"}));
        assert!(headers.contains_key(&REQUEST_ID));
    }

    #[tokio::test]
    async fn unknown_routes_answer_problem_json_and_ids_are_echoed() {
        let request = Request::get("/nope").header(&CORRELATION_ID, "corr-42").body(Body::empty()).unwrap();
        let (status, headers, body) = call(request).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(headers["content-type"], "application/problem+json");
        assert_eq!(body["status"], 404);
        assert_eq!(headers[&CORRELATION_ID], "corr-42");

        let request =
            Request::delete("/healthz").header(&CORRELATION_ID, "bad id with spaces").body(Body::empty()).unwrap();
        let (status, headers, body) = call(request).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(body["type"], "https://settle.dev/problems/method_not_allowed");
        // An unsafe caller id is replaced by the request id, never echoed.
        assert_eq!(headers[&CORRELATION_ID], headers[&REQUEST_ID]);
    }
}
