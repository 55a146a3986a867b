//! Events: CloudEvents on the exchange for every state change, through the outbox, and
//! none lost while the broker is down.

use crate::helpers::*;
use axum::http::StatusCode;
use serde_json::json;
use std::process::Command;

#[tokio::test]
async fn state_changes_publish_cloudevents_in_order() {
    let _broker = BROKER.read().await;
    let app = TestApp::new().await;
    let mut events = app.events().await;
    let (m, t) = merchant();
    let id = app.pay(&t, "4242424242424242", 5000, "manual").await.id();
    app.post(&format!("/v1/payments/{id}/capture"), &t, json!({"amount_to_capture": 4000})).await;
    app.post(&format!("/v1/payments/{id}/refunds"), &t, json!({"amount": 1000})).await;
    let declined = app.pay(&t, "4000000000000002", 100, "automatic").await.id();
    let held = app.pay(&t, "4242424242424242", 100, "manual").await.id();
    app.post(&format!("/v1/payments/{held}/cancel"), &t, json!({})).await;
    app.pay(&t, "4000002760003184", 100, "automatic").await;

    let mut seen = Vec::new();
    while let Some(e) = next_event(&mut events, 5).await {
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["merchantid"], m.as_str());
        assert!(e["id"].as_str().unwrap().starts_with("evt_"));
        assert!(e["idempotencykey"].is_string());
        seen.push((
            e["type"].as_str().unwrap().to_string(),
            e["subject"].as_str().unwrap().to_string(),
            e["sequence"].as_i64().unwrap(),
        ));
        if seen.len() == 5 {
            break;
        }
    }
    let types: Vec<&str> = seen.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(
        types,
        ["payment.captured", "refund.succeeded", "payment.failed", "payment.canceled", "payment.requires_action"]
    );
    assert_eq!(seen[0].1, id);
    assert_eq!(seen[2].1, declined);
    // The refund event carries the payment's sequence after the capture.
    assert!(seen[1].2 > seen[0].2);
}

fn rabbitmqctl(args: &[&str]) {
    let status = Command::new("rabbitmqctl").args(args).status().expect("rabbitmqctl on PATH");
    assert!(status.success(), "rabbitmqctl {args:?} failed");
}

/// The broker stops during a burst of payments: every request still succeeds, and once
/// it is back the relay publishes every event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_written_while_the_broker_is_down_are_delivered_after() {
    let _broker = BROKER.write().await;
    let app = TestApp::new().await;
    let (_, t) = merchant();
    let tok = app.card_token(&t, "4242424242424242").await;
    rabbitmqctl(&["stop_app"]);
    let mut ids = Vec::new();
    for i in 0..20 {
        let r = app
            .post("/v1/payments", &t, json!({"amount": 100 + i, "currency": "USD", "token": tok, "confirm": true}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "request {i} with the broker down: {}", r.text);
        ids.push(r.id());
    }
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);
    let mut events = None;
    for _ in 0..50 {
        match app.state.backends.bus.subscribe(&app.state.backends.topology.queue, 100).await {
            Ok(s) => {
                events = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
    let mut events = events.expect("broker back");
    // Past the relay's grace period, drain the outbox.
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let published = app.state.outbox.relay(&app.state).await.unwrap().published;
    assert_eq!(published, 20);
    assert_eq!(app.state.outbox.relay(&app.state).await.unwrap().published, 0, "nothing left to publish");
    let mut subjects = Vec::new();
    while let Some(e) = next_event(&mut events, 3).await {
        subjects.push(e["subject"].as_str().unwrap().to_string());
    }
    subjects.sort();
    ids.sort();
    assert_eq!(subjects, ids, "each payment's event exactly once");
}
