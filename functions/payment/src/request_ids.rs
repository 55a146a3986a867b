//! The request and correlation ids every response carries, the middleware that opens
//! each request's invocation span with them, and [`RequestIds`], the one way they reach
//! the handlers (a request extension; the request's headers are left as they came).

use crate::idempotency;
use crate::metrics::METRICS_FUNCTION;
use crate::outbox::Origin;
use crate::state::AppState;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use settle_shared::{otel, telemetry};
use tracing::Instrument;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
/// W3C Trace Context: a caller's trace continues in the API's spans.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Runs the request in an invocation span (function, request id, cold start, correlation
/// id, Idempotency-Key) and returns both ids to the caller, so a client's bug report can
/// name them. The handlers that put them on events get them as [`RequestIds`]. With tracing on, the span is the trace's server span (continuing the
/// caller's `traceparent` or X-Ray's trace) and the request's spans are exported before
/// the response leaves: Lambda may freeze the instance right after.
pub async fn trace_request(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let lambda = request.extensions().get::<lambda_http::Context>();
    let xray_trace_id = lambda.and_then(|c| c.xray_trace_id.clone());
    let request_id = lambda
        .map(|c| c.request_id.clone())
        .or_else(|| header_id(request.headers(), &REQUEST_ID))
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let correlation_id = header_id(request.headers(), &CORRELATION_ID).unwrap_or_else(|| request_id.clone());
    request
        .extensions_mut()
        .insert(RequestIds { request_id: Some(request_id.clone()), correlation_id: Some(correlation_id.clone()) });
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

/// The request's ids as [`trace_request`] accepted them (a caller's own only if short
/// and made of safe characters), for the events the request causes.
#[derive(Debug, Clone, Default)]
pub struct RequestIds {
    pub request_id: Option<String>,
    pub correlation_id: Option<String>,
}

impl RequestIds {
    /// The ids an outbox event records about the request that caused it.
    pub fn origin(&self, idempotency_key: Option<String>) -> Origin {
        Origin { request_id: self.request_id.clone(), correlation_id: self.correlation_id.clone(), idempotency_key }
    }
}

/// Never refused: outside [`trace_request`] (a router built without it, in tests) the
/// ids are absent.
impl<S: Send + Sync> FromRequestParts<S> for RequestIds {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<RequestIds>().cloned().unwrap_or_default())
    }
}
