//! The whole path on the real services: a payment through the API, its event through the
//! outbox and RabbitMQ, the `aws:rmq` bridge, the notifier, a merchant's receiver that
//! fails until it is fixed, the retry queue, and a recover through the API.

use crate::stack::{config, unique};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{json, Value};
use settle_local::{LocalStack, StackOptions};
use settle_shared::config::Backend;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the receiver got: headers, body, and the status it answered.
type Seen = (HeaderMap, Vec<u8>, u16);

#[derive(Clone, Default)]
struct Receiver {
    healthy: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_reaches_the_merchant_signed_after_a_recover() {
    // Arrange: a receiver that fails until it is made healthy.
    let receiver = Receiver::default();
    let r = receiver.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let r = r.clone();
            async move {
                let status =
                    if r.healthy.load(Ordering::SeqCst) { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                r.seen.lock().unwrap().push((headers, body.to_vec(), status.as_u16()));
                status
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut cfg = config(
        Backend::Real,
        &[("SETTLE_WEBHOOK_RETRY_SCHEDULE", "1s".into()), ("SETTLE_WEBHOOK_TIMEOUT_MS", "2000".into())],
    );
    cfg.webhooks.allow_private = true;
    let issuer = cfg.jwt_issuer.clone();
    let stack = LocalStack::start(
        cfg.clone(),
        StackOptions { watch_dir: None, s3_events_queue: unique("it-s3"), retry_queue: unique("it-retries") },
    )
    .await
    .unwrap();
    let base = format!("http://{}", stack.http_addr);
    let token = settle_local::dev_keys::mint(&cfg, "m_hooks", Some("m_hooks"), &["merchant".to_string()], 600).unwrap();
    assert_eq!(issuer, cfg.jwt_issuer);
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(&token)
            .header("idempotency-key", uuid::Uuid::new_v4().to_string())
            .json(&body)
            .send()
    };

    let endpoint: Value = post("/v1/webhook_endpoints", json!({"url": hook, "event_types": ["payment.succeeded"]}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = endpoint["secret"].as_str().expect("secret shown at creation").to_string();
    let card: Value =
        post("/v1/tokens", json!({"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let payment: Value =
        post("/v1/payments", json!({"amount": 2500, "currency": "EUR", "token": card["id"], "confirm": true}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(payment["status"], "succeeded");

    // Act 1: the event is delivered, refused, retried once, and dead-lettered.
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.seen.lock().unwrap().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(receiver.seen.lock().unwrap().len(), 2, "first attempt and one retry");
    // The receiver answers before the notifier records the attempt: wait for the record.
    let attempts = loop {
        let attempts: Value = http
            .get(format!("{base}/v1/webhook_endpoints/{}/attempts", endpoint["id"].as_str().unwrap()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if attempts["data"].as_array().unwrap().len() >= 2 || Instant::now() > deadline {
            break attempts;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(attempts["data"].as_array().unwrap().len(), 2);
    assert_eq!(attempts["data"][0]["status_code"], 503);

    // Act 2: the merchant fixes the receiver and recovers.
    receiver.healthy.store(true, Ordering::SeqCst);
    let recovered: Value =
        post(&format!("/v1/webhook_endpoints/{}/recover", endpoint["id"].as_str().unwrap()), json!({"since": 0}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(recovered["resent"], 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.seen.lock().unwrap().len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Assert: delivered, signed, the payment's CloudEvent, with the same webhook-id.
    let seen = receiver.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    let (headers, body, status) = &seen[2];
    assert_eq!(*status, 200);
    let text = |h: &HeaderMap, n: &str| h[n].to_str().unwrap().to_string();
    assert_eq!(text(headers, "webhook-id"), text(&seen[0].0, "webhook-id"));
    let event: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(event["type"], "payment.succeeded");
    assert_eq!(event["data"]["id"], payment["id"]);
    assert_eq!(event["id"], text(headers, "webhook-id").as_str());
    let ts: i64 = text(headers, "webhook-timestamp").parse().unwrap();
    settle_shared::webhook_signature::verify(
        &secret,
        &text(headers, "webhook-signature"),
        &text(headers, "webhook-id"),
        ts,
        body,
        chrono::Utc::now().timestamp(),
        300,
    )
    .expect("signature verifies with the secret shown at creation");
}
