//! The request and correlation ids every response carries, and the middleware that opens
//! each request's invocation span with them.

use crate::idempotency;
use crate::metrics::METRICS_FUNCTION;
use crate::outbox::Origin;
use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
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
/// name them. The ids are also set on the request, validated, for the handlers that put
/// them on events. With tracing on, the span is the trace's server span (continuing the
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

/// The ids an outbox event records about the request that caused it.
pub fn origin(headers: &HeaderMap, idempotency_key: Option<String>) -> Origin {
    // Both ids were validated and set on the request by the tracing middleware.
    let id = |name| headers.get(name).and_then(|v: &axum::http::HeaderValue| v.to_str().ok()).map(str::to_string);
    Origin { request_id: id(&REQUEST_ID), correlation_id: id(&CORRELATION_ID), idempotency_key }
}
