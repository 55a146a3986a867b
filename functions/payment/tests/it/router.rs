//! The router as a whole, on the in-memory backends: health for everyone, problem
//! documents for unknown routes and methods, request and correlation ids on every answer.

use axum::body::Body;
use axum::http::StatusCode;
use axum::http::{HeaderMap, Request};
use axum::Router;
use http_body_util::BodyExt;
use settle_payment::{router, AppState, CORRELATION_ID, REQUEST_ID};
use settle_shared::config::{Backend, Sources};
use settle_shared::{Backends, Config};
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
