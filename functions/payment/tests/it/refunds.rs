//! Refunds: partial and multiple, racing, and the gateway's asynchronous failures.

use crate::helpers::*;
use axum::http::StatusCode;
use base64::Engine;
use serde_json::json;
use settle_payment::gateway_webhooks::sign as gateway_sign;
use std::sync::Arc;

#[tokio::test]
async fn refunds_are_partial_multiple_and_bounded() {
    let _broker = BROKER.read().await;
    let app = TestApp::new().await;
    let (_, t) = merchant();
    let id = app.pay(&t, "4242424242424242", 1000, "automatic").await.id();
    let path = format!("/v1/payments/{id}/refunds");
    let first = app.post(&path, &t, json!({"amount": 300, "reason": "requested_by_customer"})).await;
    assert_eq!(
        (first.status, first.json["status"].as_str()),
        (StatusCode::CREATED, Some("succeeded")),
        "{}",
        first.text
    );
    assert_eq!(app.post(&path, &t, json!({"amount": 600})).await.status, StatusCode::CREATED);
    let over = app.post(&path, &t, json!({"amount": 101})).await;
    assert_eq!(over.status, StatusCode::CONFLICT);
    assert_eq!((over.json["field"].as_str(), over.json["refundable"].as_i64()), (Some("amount"), Some(100)));
    // No amount: the rest.
    let rest = app.post(&path, &t, json!({})).await;
    assert_eq!(rest.json["amount"], 100);
    assert_eq!(app.post(&path, &t, json!({})).await.status, StatusCode::CONFLICT);
    let list = app.get(&path, &t).await;
    assert_eq!(list.json["data"].as_array().unwrap().len(), 3);
    let one = app.get(&format!("{path}/{}", first.id()), &t).await;
    assert_eq!(one.json["amount"], 300);
    // Not refundable before capture.
    let held = app.pay(&t, "4242424242424242", 1000, "manual").await.id();
    let r = app.post(&format!("/v1/payments/{held}/refunds"), &t, json!({"amount": 1})).await;
    assert_eq!((r.status, r.json["current_state"].as_str()), (StatusCode::CONFLICT, Some("requires_capture")));
}

/// 20 concurrent refunds of 30% each: exactly three fit, the total never exceeds the
/// capture, whatever the interleaving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_refunds_never_exceed_the_capture() {
    let _broker = BROKER.read().await;
    let app = Arc::new(TestApp::new().await);
    let (_, t) = merchant();
    let id = app.pay(&t, "4242424242424242", 10_000, "automatic").await.id();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (app, t, id) = (app.clone(), t.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            app.post(&format!("/v1/payments/{id}/refunds"), &t, json!({"amount": 3000})).await.status
        }));
    }
    let mut created = 0;
    for task in tasks {
        let status = task.await.unwrap();
        assert!(status == StatusCode::CREATED || status == StatusCode::CONFLICT, "unexpected {status}");
        created += usize::from(status == StatusCode::CREATED);
    }
    assert_eq!(created, 3);
    let stored = app.state.backends.documents.get("payments", &id).await.unwrap().unwrap();
    assert_eq!(stored["amount_refunded"], 9000);
    let refunds = app.get(&format!("/v1/payments/{id}/refunds"), &t).await;
    let total: i64 = refunds.json["data"].as_array().unwrap().iter().map(|r| r["amount"].as_i64().unwrap()).sum();
    assert_eq!(total, 9000);
}

fn signed_headers(body: &str, timestamp: i64) -> serde_json::Value {
    json!({
        "content-type": "application/json",
        "settle-gateway-timestamp": timestamp.to_string(),
        "settle-gateway-signature": gateway_sign(GATEWAY_SECRET.as_bytes(), timestamp, body.as_bytes()),
    })
}

/// The gateway's webhook as API Gateway delivers it: an HTTP API v2 event whose body is
/// base64-encoded, turned into a request by lambda_http exactly as in Lambda.
fn apigw_request(body: &str, headers: serde_json::Value) -> axum::http::Request<axum::body::Body> {
    let event = json!({
        "version": "2.0", "routeKey": "$default", "rawPath": "/v1/gateway/webhooks", "rawQueryString": "",
        "headers": headers,
        "requestContext": {"accountId": "123456789012", "apiId": "api", "domainName": "api.example.com", "domainPrefix": "api",
            "http": {"method": "POST", "path": "/v1/gateway/webhooks", "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9", "userAgent": "gateway"},
            "requestId": "r1", "routeKey": "$default", "stage": "$default", "time": "27/Nov/2026:12:00:00 +0000", "timeEpoch": 0},
        "body": base64::engine::general_purpose::STANDARD.encode(body),
        "isBase64Encoded": true,
    });
    let parsed: aws_lambda_events::event::apigw::ApiGatewayV2httpRequest = serde_json::from_value(event).unwrap();
    let request: axum::http::Request<lambda_http::Body> =
        lambda_http::request::LambdaRequest::ApiGatewayV2(parsed).into();
    let (parts, body) = request.into_parts();
    axum::http::Request::from_parts(parts, axum::body::Body::from(body.to_vec()))
}

#[tokio::test]
async fn refunds_that_fail_later_are_reported_by_signed_gateway_webhooks() {
    let _broker = BROKER.read().await;
    let app = TestApp::new().await;
    let mut events = app.events().await;
    let (_, t) = merchant();
    let id = app.pay(&t, "4000000000005126", 2500, "automatic").await.id();
    let refund = app.post(&format!("/v1/payments/{id}/refunds"), &t, json!({"amount": 1000})).await;
    assert_eq!(refund.json["status"], "pending");

    let body = json!({"id": unique("gwevt"), "type": "refund.failed", "data": {"refund": refund.id()}}).to_string();
    let now = chrono::Utc::now().timestamp();
    // Wrong secret, stale timestamp, tampered body: all refused.
    let mut bad_sig = signed_headers(&body, now);
    bad_sig["settle-gateway-signature"] = json!(gateway_sign(b"wrong-secret", now, body.as_bytes()));
    assert_eq!(app.call(apigw_request(&body, bad_sig)).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.call(apigw_request(&body, signed_headers(&body, now - 301))).await.status, StatusCode::UNAUTHORIZED);
    let tampered = body.replace("refund.failed", "refund.succeeded");
    assert_eq!(app.call(apigw_request(&tampered, signed_headers(&body, now))).await.status, StatusCode::UNAUTHORIZED);

    // The real one, base64-encoded by API Gateway, then its redelivery.
    let ok = app.call(apigw_request(&body, signed_headers(&body, now))).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(ok.json["duplicate"], false);
    let again = app.call(apigw_request(&body, signed_headers(&body, now))).await;
    assert_eq!(again.json["duplicate"], true);

    let r = app.get(&format!("/v1/payments/{id}/refunds/{}", refund.id()), &t).await;
    assert_eq!((r.json["status"].as_str(), r.json["failure_code"].as_str()), (Some("failed"), Some("refund_failed")));
    // The money was not returned, so it is refundable again.
    assert_eq!(app.get(&format!("/v1/payments/{id}"), &t).await.json["amount_refunded"], 0);
    let mut types = Vec::new();
    while let Some(e) = next_event(&mut events, 5).await {
        types.push(e["type"].as_str().unwrap().to_string());
        if types.contains(&"refund.failed".to_string()) {
            break;
        }
    }
    assert_eq!(types, ["payment.succeeded", "refund.failed"]);
}
