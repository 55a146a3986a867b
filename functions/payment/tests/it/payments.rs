//! Payments through their states: every test card, capture, cancel, 3-D Secure, the
//! cache and the list.

use crate::helpers::*;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;

#[tokio::test]
async fn every_test_card_ends_where_the_table_says() {
    let _broker = BROKER.read().await;
    let app = TestApp::new().await;
    let (_, t) = merchant();
    let table = [
        ("4242424242424242", "succeeded", None),
        ("4000000000000002", "failed", Some("card_declined")),
        ("4000000000009995", "failed", Some("insufficient_funds")),
        ("4000000000000119", "requires_confirmation", Some("processing_error")),
        ("4000002760003184", "requires_action", None),
        ("4000008400001629", "requires_action", None),
        ("4000000000005126", "succeeded", None),
    ];
    for (card, status, error) in table {
        let r = app.pay(&t, card, 2000, "automatic").await;
        assert_eq!(r.status, StatusCode::CREATED, "{card}: {}", r.text);
        assert_eq!(r.json["status"], status, "{card}: {}", r.text);
        assert_eq!(r.json["last_payment_error"]["code"].as_str(), error, "{card}");
        if card == "4000000000000119" {
            assert_eq!(r.json["last_payment_error"]["retryable"], true);
        }
        if status == "requires_action" {
            assert!(r.json["next_action"]["redirect_to_url"]["url"].as_str().unwrap().contains("/3ds?challenge="));
        }
        if status == "succeeded" {
            assert_eq!(r.json["amount_captured"], 2000);
        }
    }
}

#[tokio::test]
async fn manual_capture_is_partial_once_and_illegal_moves_are_409() {
    let _broker = BROKER.read().await;
    let app = TestApp::new().await;
    let (_, t) = merchant();
    let p = app.pay(&t, "4242424242424242", 5000, "manual").await;
    assert_eq!(p.json["status"], "requires_capture");
    let id = p.id();
    let too_much = app.post(&format!("/v1/payments/{id}/capture"), &t, json!({"amount_to_capture": 5001})).await;
    assert_eq!(
        (too_much.status, too_much.json["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("amount_to_capture"))
    );
    let captured = app.post(&format!("/v1/payments/{id}/capture"), &t, json!({"amount_to_capture": 3000})).await;
    assert_eq!(captured.status, StatusCode::OK, "{}", captured.text);
    assert_eq!(
        (captured.json["status"].as_str(), captured.json["amount_captured"].as_i64()),
        (Some("succeeded"), Some(3000))
    );
    for verb in ["capture", "cancel", "confirm"] {
        let r = app.post(&format!("/v1/payments/{id}/{verb}"), &t, json!({})).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{verb}: {}", r.text);
        assert_eq!(r.json["current_state"], "succeeded");
    }
    // Cancel before capture, then nothing more.
    let held = app.pay(&t, "4242424242424242", 700, "manual").await.id();
    let canceled = app.post(&format!("/v1/payments/{held}/cancel"), &t, json!({})).await;
    assert_eq!(canceled.json["status"], "canceled");
    assert_eq!(
        app.post(&format!("/v1/payments/{held}/capture"), &t, json!({})).await.json["current_state"],
        "canceled"
    );
    // A two-step payment: created, then confirmed with an empty body.
    let tok = app.card_token(&t, "4242424242424242").await;
    let created = app.post("/v1/payments", &t, json!({"amount": 100, "currency": "JPY", "token": tok})).await;
    assert_eq!(created.json["status"], "requires_confirmation");
    let key = uuid::Uuid::new_v4().to_string();
    let confirmed = app
        .send(axum::http::Method::POST, &format!("/v1/payments/{}/confirm", created.id()), &t, Some(&key), None)
        .await;
    assert_eq!(confirmed.json["status"], "succeeded", "{}", confirmed.text);
}

async fn browser(app: &TestApp, method: &str, url: &str) -> Reply {
    let path = url.split_once("://").map_or(url, |(_, rest)| &rest[rest.find('/').unwrap_or(0)..]);
    let request =
        Request::builder().method(method).uri(path).header("content-type", "application/x-www-form-urlencoded");
    app.call(request.body(Body::empty()).unwrap()).await
}

#[tokio::test]
async fn three_d_secure_approve_and_reject_lead_to_different_outcomes() {
    let _broker = BROKER.read().await;
    let app = TestApp::new().await;
    let (_, t) = merchant();
    for (card, answer, status, code) in [
        ("4000002760003184", "approve", "succeeded", None),
        ("4000002760003184", "reject", "failed", Some("authentication_failed")),
        ("4000008400001629", "approve", "failed", Some("card_declined")),
    ] {
        let p = app.pay(&t, card, 1500, "automatic").await;
        let url = p.json["next_action"]["redirect_to_url"]["url"].as_str().unwrap().to_string();
        let page = browser(&app, "GET", &url).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.headers["content-type"].to_str().unwrap().starts_with("text/html"));
        assert!(page.text.contains(">Approve</button>") && page.text.contains(">Reject</button>"));
        // Follow the form the button submits.
        let marker = format!("/3ds/{answer}?challenge=");
        let start = page.text.find(&marker).unwrap();
        let action_start = page.text[..start].rfind('"').unwrap() + 1;
        let action_end = start + page.text[start..].find('"').unwrap();
        let done = browser(&app, "POST", &page.text[action_start..action_end]).await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.text);
        assert!(done.text.contains(&format!("data-status=\"{status}\"")), "{}", done.text);
        let after = app.get(&format!("/v1/payments/{}", p.id()), &t).await;
        assert_eq!(after.json["status"], status);
        assert_eq!(after.json["last_payment_error"]["code"].as_str(), code);
        // The challenge is spent.
        assert_eq!(browser(&app, "GET", &url).await.status, StatusCode::NOT_FOUND);
    }
    // A wrong secret opens nothing.
    let p = app.pay(&t, "4000002760003184", 1500, "automatic").await;
    let r = browser(&app, "POST", &format!("/v1/payments/{}/3ds/approve?challenge=00", p.id())).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn reads_after_a_change_are_never_stale() {
    let _broker = BROKER.read().await;
    let app = TestApp::new().await;
    let (_, t) = merchant();
    let p = app.pay(&t, "4242424242424242", 900, "manual").await;
    let path = format!("/v1/payments/{}", p.id());
    assert_eq!(app.get(&path, &t).await.json["status"], "requires_capture"); // now cached
    app.post(&format!("{path}/capture"), &t, json!({})).await;
    assert_eq!(app.get(&path, &t).await.json["status"], "succeeded");
    app.post(&format!("{path}/refunds"), &t, json!({"amount": 100})).await;
    assert_eq!(app.get(&path, &t).await.json["amount_refunded"], 100);
}

#[tokio::test]
async fn lists_page_newest_first_with_filters() {
    let _broker = BROKER.read().await;
    let app = TestApp::new().await;
    let (_, t) = merchant();
    let (_, other) = merchant();
    let mut ids = Vec::new();
    for card in ["4242424242424242", "4000000000000002", "4242424242424242", "4242424242424242", "4000000000000002"] {
        ids.push(app.pay(&t, card, 100, "automatic").await.id());
    }
    app.pay(&other, "4242424242424242", 100, "automatic").await;
    ids.reverse();
    let first = app.get("/v1/payments?limit=2", &t).await;
    let page: Vec<String> =
        first.json["data"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(page, ids[..2]);
    assert_eq!(first.json["has_more"], true);
    let next = app.get(&format!("/v1/payments?limit=10&starting_after={}", ids[1]), &t).await;
    let rest: Vec<String> =
        next.json["data"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(rest, ids[2..]);
    assert_eq!(next.json["has_more"], false);
    let failed = app.get("/v1/payments?status=failed", &t).await;
    assert_eq!(failed.json["data"].as_array().unwrap().len(), 2);
    let now = chrono::Utc::now().timestamp();
    let window = app.get(&format!("/v1/payments?created_gte={}&created_lte={}", now - 60, now + 60), &t).await;
    assert_eq!(window.json["data"].as_array().unwrap().len(), 5);
    let future = app.get(&format!("/v1/payments?created_gte={}", now + 3600), &t).await;
    assert!(future.json["data"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn mongodb_down_answers_503_with_retry_after() {
    let _broker = BROKER.read().await;
    let app = TestApp::with(&[("SETTLE_MONGODB_URI", "mongodb://127.0.0.1:1/?directConnection=true".into())]).await;
    let (_, t) = merchant();
    let r = app
        .post("/v1/tokens", &t, json!({"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}))
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.headers["content-type"], "application/problem+json");
    assert!(r.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn card_tokens_are_rate_limited_more_strictly() {
    let _broker = BROKER.read().await;
    let app = TestApp::with(&[("SETTLE_RATE_LIMIT_TOKENS", "3/60s".into())]).await;
    let (_, t) = merchant();
    let card = json!({"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"});
    for remaining in [2, 1, 0] {
        let r = app.post("/v1/tokens", &t, card.clone()).await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.headers["ratelimit-policy"], "\"tokens\";q=3;w=60");
        assert!(r.headers["ratelimit"].to_str().unwrap().starts_with(&format!("\"tokens\";r={remaining};")));
    }
    let limited = app.post("/v1/tokens", &t, card.clone()).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers["content-type"], "application/problem+json");
    let retry: u64 = limited.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    assert!(limited.headers.contains_key("ratelimit"));
    // Other routes still have the merchant's general budget.
    assert_eq!(app.get("/v1/payments", &t).await.status, StatusCode::OK);
    // Another merchant has its own.
    let (_, t2) = merchant();
    assert_eq!(app.post("/v1/tokens", &t2, card).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn the_openapi_document_is_served() {
    let _broker = BROKER.read().await;
    let app = TestApp::new().await;
    let r = app.call(Request::get("/openapi.json").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["openapi"], "3.1.0");
    for path in
        ["/v1/tokens", "/v1/payments", "/v1/payments/{id}/refunds", "/v1/gateway/webhooks", "/v1/admin/revocations"]
    {
        assert!(r.json["paths"][path].is_object(), "{path} undocumented");
    }
}
