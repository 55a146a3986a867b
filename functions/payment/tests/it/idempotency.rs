//! Idempotency keys: required, replayed byte for byte, refused on reuse, one execution
//! under a storm of concurrent requests.

use crate::helpers::*;
use axum::http::{Method, StatusCode};
use serde_json::json;
use std::sync::Arc;

#[tokio::test]
async fn keys_are_required_replayed_and_not_reusable() {
    let _broker = BROKER.read().await;
    let app = TestApp::new().await;
    let (_, t) = merchant();
    let tok = app.card_token(&t, "4242424242424242").await;
    let body = json!({"amount": 1200, "currency": "EUR", "token": tok, "confirm": true});

    let missing = app.send(Method::POST, "/v1/payments", &t, None, Some(body.clone())).await;
    assert_eq!((missing.status, missing.json["field"].as_str()), (StatusCode::BAD_REQUEST, Some("Idempotency-Key")));

    let first = app.send(Method::POST, "/v1/payments", &t, Some("order-1"), Some(body.clone())).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(!first.headers.contains_key("idempotent-replayed"));
    let replay = app.send(Method::POST, "/v1/payments", &t, Some("order-1"), Some(body.clone())).await;
    assert_eq!(replay.status, StatusCode::CREATED);
    assert_eq!(replay.text, first.text, "the replay must be byte-identical");
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(replay.headers["location"], first.headers["location"]);

    let mut other = body.clone();
    other["amount"] = json!(1300);
    let reused = app.send(Method::POST, "/v1/payments", &t, Some("order-1"), Some(other)).await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reused.json["type"], "https://settle.dev/problems/idempotency_key_reused");
    // Another path with the same key is another request too.
    let elsewhere = app.send(Method::POST, "/v1/tokens", &t, Some("order-1"), Some(json!({}))).await;
    assert_eq!(elsewhere.status, StatusCode::UNPROCESSABLE_ENTITY);
    // Errors are replayed as well (not 5xx).
    let bad = json!({"amount": -1, "currency": "EUR", "token": tok});
    let e1 = app.send(Method::POST, "/v1/payments", &t, Some("order-2"), Some(bad.clone())).await;
    let e2 = app.send(Method::POST, "/v1/payments", &t, Some("order-2"), Some(bad)).await;
    assert_eq!((e1.status, e2.status), (StatusCode::BAD_REQUEST, StatusCode::BAD_REQUEST));
    assert_eq!(e2.headers["idempotent-replayed"], "true");
    // Keys are scoped per merchant: another merchant's "order-1" is its own.
    let (_, t2) = merchant();
    let tok2 = app.card_token(&t2, "4242424242424242").await;
    let theirs = app
        .send(
            Method::POST,
            "/v1/payments",
            &t2,
            Some("order-1"),
            Some(json!({"amount": 1, "currency": "EUR", "token": tok2})),
        )
        .await;
    assert_eq!(theirs.status, StatusCode::CREATED);
}

/// 50 identical requests at once: one payment, one event, 50 identical bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storm_on_one_key_executes_once() {
    let _broker = BROKER.read().await;
    let app = Arc::new(TestApp::new().await);
    let mut events = app.events().await;
    let (m, t) = merchant();
    let tok = app.card_token(&t, "4242424242424242").await;
    let body = json!({"amount": 4321, "currency": "USD", "token": tok, "confirm": true});
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (app, t, body) = (app.clone(), t.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            app.send(Method::POST, "/v1/payments", &t, Some("storm-1"), Some(body)).await
        }));
    }
    let mut bodies = std::collections::HashSet::new();
    for task in tasks {
        let r = task.await.unwrap();
        assert!(r.status == StatusCode::CREATED || r.status == StatusCode::CONFLICT, "{}: {}", r.status, r.text);
        if r.status == StatusCode::CREATED {
            bodies.insert(r.text);
        } else {
            assert_eq!(r.json["type"], "https://settle.dev/problems/idempotency_key_in_use");
            assert!(r.headers.contains_key("retry-after"));
        }
    }
    assert_eq!(bodies.len(), 1, "every successful reply is the same payment");
    let query = settle_shared::ports::documents::Query::new()
        .filter(settle_shared::ports::documents::Cond::eq("merchant_id", m.as_str()));
    assert_eq!(app.state.backends.documents.find("payments", &query).await.unwrap().len(), 1);
    let first = next_event(&mut events, 10).await.expect("one event");
    assert_eq!(first["type"], "payment.succeeded");
    assert_eq!(first["idempotencykey"], "storm-1");
    assert!(next_event(&mut events, 2).await.is_none(), "a second event was published");
}

/// Key order in the body does not make another request; and if the replay record is lost
/// (Redis flushed, a timed-out commit that went through), the store still refuses a
/// second payment for the same key and answers with the first.
#[tokio::test]
async fn the_same_key_never_creates_twice_even_without_its_record() {
    use sha2::{Digest, Sha256};
    let _broker = BROKER.read().await;
    let app = TestApp::new().await;
    let (m, t) = merchant();
    let tok = app.card_token(&t, "4242424242424242").await;
    let first = app
        .send(
            Method::POST,
            "/v1/payments",
            &t,
            Some("order-9"),
            Some(json!({"amount": 700, "currency": "USD", "token": tok})),
        )
        .await;
    let reordered = app
        .send(
            Method::POST,
            "/v1/payments",
            &t,
            Some("order-9"),
            Some(json!({"token": tok, "currency": "USD", "amount": 700})),
        )
        .await;
    assert_eq!(reordered.headers["idempotent-replayed"], "true", "{}", reordered.text);
    assert_eq!(reordered.text, first.text);

    let record =
        format!("{}idem:{}", app.state.config.redis_prefix, hex::encode(Sha256::digest(format!("{m}\0order-9"))));
    assert!(app.state.backends.kv.delete(&record).await.unwrap(), "the replay record was where expected");
    let again = app
        .send(
            Method::POST,
            "/v1/payments",
            &t,
            Some("order-9"),
            Some(json!({"amount": 700, "currency": "USD", "token": tok})),
        )
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.json["id"], first.json["id"], "no second payment");
    let query = settle_shared::ports::documents::Query::new()
        .filter(settle_shared::ports::documents::Cond::eq("merchant_id", m.as_str()));
    assert_eq!(app.state.backends.documents.find("payments", &query).await.unwrap().len(), 1);
}
