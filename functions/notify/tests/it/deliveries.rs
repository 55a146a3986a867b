//! One delivery and what follows it: signatures over every live secret, the retry
//! schedule, dead letters, 410 Gone, and a hanging receiver that delays no one.

use crate::harness::*;
use serde_json::Value;
use settle_notify::DeliveryOutcome;
use settle_shared::webhook_signature::{generate_secret, verify};
use settle_shared::webhooks::{ATTEMPTS, DEAD_LETTERS, DELIVERIES, ENDPOINTS};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_are_signed_and_verify_with_every_live_secret() {
    let h = Harness::new().await;
    let (receiver, addr) = Receiver::start().await;
    let (old, new, expired) = (generate_secret(), generate_secret(), generate_secret());
    let tomorrow = chrono::Utc::now().timestamp_millis() + 86_400_000;
    h.endpoint(format!("http://{addr}/ok"), &[(&new, None), (&old, Some(tomorrow)), (&expired, Some(1))]).await;
    let (event, rmq) = h.event("payment.succeeded");
    let report = h.notifier.handle_batch(rmq).await.unwrap();
    assert!(matches!(deliveries(&report)[0], DeliveryOutcome::Delivered { status: 200, attempt: 1, .. }));

    let got = &receiver.at("ok")[0];
    let header = |n: &str| got.headers[n].to_str().unwrap().to_string();
    assert_eq!(header("webhook-id"), event.id);
    assert!(header("user-agent").starts_with("Settle-Webhooks/"));
    // The body is the CloudEvent, unchanged.
    assert_eq!(got.body, event.to_json());
    let ts: i64 = header("webhook-timestamp").parse().unwrap();
    let signature = header("webhook-signature");
    assert_eq!(signature.split(' ').count(), 2, "the new and the rotated-out secret sign; the expired one not");
    let now = chrono::Utc::now().timestamp();
    for secret in [&new, &old] {
        verify(secret, &signature, &event.id, ts, &got.body, now, 300)
            .expect("a Standard Webhooks verifier accepts it");
    }
    assert!(verify(&expired, &signature, &event.id, ts, &got.body, now, 300).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failures_retry_on_the_schedule_then_dead_letter() {
    let metrics = settle_shared::metrics::capture();
    let h = Harness::new().await;
    let (receiver, addr) = Receiver::start().await;
    let secret = generate_secret();
    let flaky = h.endpoint(format!("http://{addr}/flaky2"), &[(&secret, None)]).await;
    let failing = h.endpoint(format!("http://{addr}/fail"), &[(&secret, None)]).await;
    let (event, rmq) = h.event("payment.failed");
    let report = h.notifier.handle_batch(rmq).await.unwrap();
    assert!(deliveries(&report).iter().all(|d| matches!(d, DeliveryOutcome::Retrying { attempt: 1, .. })));

    let r = receiver.clone();
    h.drain_retries(40, move || r.at("flaky2").len() >= 3 && r.at("fail").len() >= 4).await;
    let flaky_hits = receiver.at("flaky2");
    assert_eq!(flaky_hits.len(), 3, "two failures, then delivered");
    for pair in flaky_hits.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(850), "retried after only {gap:?}");
        assert_eq!(pair[0].headers["webhook-id"], pair[1].headers["webhook-id"], "webhook-id is stable across retries");
    }
    assert_eq!(receiver.at("fail").len(), 4, "1 attempt + 3 retries");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = |endpoint: &str| {
        let id = settle_shared::webhooks::delivery_id(&event.id, endpoint);
        let docs = h.backends.documents.clone();
        async move { docs.get(DELIVERIES, &id).await.unwrap().unwrap()["status"].as_str().unwrap().to_string() }
    };
    assert_eq!(status(&flaky).await, "delivered");
    assert_eq!(status(&failing).await, "dead");
    let q = settle_shared::ports::documents::Query::new()
        .filter(settle_shared::ports::documents::Cond::eq("endpoint_id", failing.as_str()));
    let attempts = h.backends.documents.find(ATTEMPTS, &q).await.unwrap();
    assert_eq!(attempts.len(), 4);
    assert!(attempts.iter().all(|a| a["status_code"] == 500 && a["duration_ms"].is_i64()));
    let letters = h.backends.documents.find(DEAD_LETTERS, &q).await.unwrap();
    assert_eq!(letters.len(), 1);
    // EMF: one Deliveries record per attempt, by outcome, with its attempt number.
    let mut recorded: Vec<(String, f64)> = settle_shared::metrics::captured_with(&metrics, "event_id", &event.id)
        .iter()
        .map(|r| (r["Outcome"].as_str().unwrap().to_string(), r["DeliveryAttempt"].as_f64().unwrap()))
        .collect();
    recorded.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let expected = [("dead", 4.0), ("delivered", 3.0), ("retrying", 1.0), ("retrying", 1.0), ("retrying", 2.0)]
        .into_iter()
        .chain([("retrying", 2.0), ("retrying", 3.0)])
        .map(|(o, a)| (o.to_string(), a))
        .collect::<Vec<_>>();
    assert_eq!(recorded, expected);

    // Resend after the receiver recovers: same webhook-id, delivered.
    let message = settle_shared::webhooks::RetryMessage {
        delivery_id: settle_shared::webhooks::delivery_id(&event.id, &flaky),
        attempt: 4,
        due_at: 0,
        resend: true,
        traceparent: None,
    };
    let outcome = h.notifier.handle_retry(&message).await.unwrap().unwrap();
    assert!(matches!(outcome, DeliveryOutcome::Delivered { .. }), "{outcome:?}");
    let lags = settle_shared::metrics::captured_with(&metrics, "delivery_id", &message.delivery_id);
    assert!(!lags.is_empty() && lags.iter().all(|r| r["RetryQueueLag"].as_f64().is_some_and(|ms| ms >= 0.0)));
    assert_eq!(receiver.at("flaky2").last().unwrap().headers["webhook-id"].to_str().unwrap(), event.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gone_disables_and_a_hanging_receiver_delays_no_one() {
    let h = Harness::new().await;
    let mut events = h.backends.bus.subscribe(&h.backends.topology.queue, 10).await.unwrap();
    let (receiver, addr) = Receiver::start().await;
    // A receiver that accepts the connection and closes it without a word.
    let closing = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closing_addr = closing.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = closing.accept().await {
            drop(socket);
        }
    });
    let secret = generate_secret();
    let gone = h.endpoint(format!("http://{addr}/gone"), &[(&secret, None)]).await;
    h.endpoint(format!("http://{addr}/hang"), &[(&secret, None)]).await;
    let closed = h.endpoint(format!("http://{closing_addr}/closes"), &[(&secret, None)]).await;
    h.endpoint(format!("http://{addr}/ok"), &[(&secret, None)]).await;
    let (_, rmq) = h.event("refund.succeeded");
    let start = Instant::now();
    let report = h.notifier.handle_batch(rmq).await.unwrap();
    let ok_at = receiver.at("ok")[0].at - start;
    assert!(ok_at < Duration::from_millis(1000), "the healthy endpoint waited {ok_at:?} behind the hanging one");
    let outcomes = deliveries(&report);
    assert!(outcomes.iter().any(|d| matches!(d, DeliveryOutcome::Disabled { .. })));
    assert!(
        outcomes.iter().any(|d| matches!(d, DeliveryOutcome::Retrying { .. })),
        "the hang timed out and is retried"
    );
    let retrying = outcomes.iter().filter(|d| matches!(d, DeliveryOutcome::Retrying { .. })).count();
    assert_eq!(retrying, 2, "the hang and the closed connection are retried: {outcomes:?}");
    let stored = h.backends.documents.get(ENDPOINTS, &gone).await.unwrap().unwrap();
    assert_eq!(stored["enabled"], false);
    let still = h.backends.documents.get(ENDPOINTS, &closed).await.unwrap().unwrap();
    assert_eq!(still["enabled"], true, "a closed connection is a failure to retry, not a reason to disable");
    // The merchant hears of it.
    let delivery = tokio::time::timeout(Duration::from_secs(5), events.next()).await.unwrap().unwrap().unwrap();
    let disabled: Value = serde_json::from_slice(&delivery.body).unwrap();
    assert_eq!(disabled["type"], "endpoint.disabled");
    assert_eq!(disabled["data"]["endpoint_id"], gone.as_str());
    // Disabled endpoints get nothing more.
    let (_, again) = h.event("refund.succeeded");
    h.notifier.handle_batch(again).await.unwrap();
    assert_eq!(receiver.at("gone").len(), 1);
}
