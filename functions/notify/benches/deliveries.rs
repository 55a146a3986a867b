//! Deliveries per second against a receiver with a fixed 50 ms latency, next to the ideal
//! of concurrency / latency. Concurrency is the messages of one `aws:rmq` batch (10, the
//! template's BatchSize) times the batches handled at once (Lambda instances).
//! Run: `bash scripts/services && cargo bench -p settle-notify --bench deliveries`.
//! Asserts that every delivery arrived and verified, so a broken path cannot post a
//! fast number.

use axum::routing::post;
use axum::Router;
use base64::Engine;
use serde_json::json;
use settle_notify::{DeliveryOutcome, MessageOutcome, Notifier};
use settle_shared::domain::event::CloudEvent;
use settle_shared::ports::delay_queue::SqsQueue;
use settle_shared::redact::Secret;
use settle_shared::webhooks::{EndpointRecord, SecretBox, StoredSecret, ENDPOINTS};
use settle_shared::Backends;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LATENCY: Duration = Duration::from_millis(50);
const BATCH: usize = 10;
const MASTER: &str = "bench-webhook-master-key-bench-webhook-ma";

#[tokio::main]
async fn main() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap| {
            let counter = counter.clone();
            async move {
                tokio::time::sleep(LATENCY).await;
                if headers.contains_key("webhook-signature") {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let suffix = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let sdk = settle_shared::aws::load_sdk_config(None).await;
    let queue =
        SqsQueue::ensure(&sdk, &format!("bench-retries-{suffix}")).await.expect("SQS emulator (scripts/services)");
    let config = settle_shared::config::loopback_config(&[
        ("SETTLE_MONGODB_DATABASE", format!("bench-notify-{suffix}")),
        ("SETTLE_EVENTS_EXCHANGE", format!("bench.events.{suffix}")),
        ("SETTLE_NOTIFY_QUEUE", format!("bench.notify.{suffix}")),
        ("SETTLE_RETRY_QUEUE_URL", queue.url().to_string()),
        ("SETTLE_WEBHOOK_MASTER_KEY", MASTER.into()),
        ("SETTLE_WEBHOOK_ALLOW_PRIVATE", "true".into()),
    ])
    .unwrap();
    let backends = Backends::connect(&config).await.unwrap();
    backends.bus.declare(&backends.topology).await.unwrap();
    backends.documents.ensure_indexes(&settle_shared::webhooks::indexes()).await.unwrap();
    let notifier = Notifier::new(&config, backends.clone()).unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let endpoint = EndpointRecord {
        id: settle_shared::domain::ids::EndpointId::generate().to_string(),
        merchant_id: "m_bench".into(),
        url: format!("http://{addr}/hook"),
        event_types: Vec::new(),
        description: None,
        enabled: true,
        disabled_reason: None,
        secrets: vec![StoredSecret {
            sealed: SecretBox::new(&Secret::new(MASTER)).seal(&settle_shared::webhook_signature::generate_secret()),
            created: now,
            expires_at: None,
        }],
        failing_since: None,
        created: now,
        updated: now,
    };
    backends
        .documents
        .insert(ENDPOINTS, serde_json::to_value(&endpoint).unwrap().as_object().cloned().unwrap())
        .await
        .unwrap();

    let batch = || {
        let messages: Vec<serde_json::Value> = (0..BATCH)
            .map(|_| {
                let mut e = CloudEvent::new("payment.succeeded", "/settle/payment", json!({"amount": 100}));
                e.merchantid = Some("m_bench".into());
                let data = base64::engine::general_purpose::STANDARD.encode(e.to_json());
                json!({"basicProperties": {"headers": {}, "deliveryMode": 2, "priority": 0, "bodySize": data.len()},
                       "redelivered": false, "data": data})
            })
            .collect();
        serde_json::from_value(json!({"eventSource": "aws:rmq", "rmqMessagesByQueue": {"settle.notify::/": messages}}))
            .unwrap()
    };
    // Warm-up: connection pools, indexes.
    notifier.handle_batch(batch()).await.unwrap();

    println!("\n{:<28} {:>12} {:>14} {:>12}", "concurrency", "deliveries", "per second", "ideal");
    for parallel_batches in [1usize, 4] {
        let rounds = 50 / parallel_batches;
        let before = hits.load(Ordering::Relaxed);
        let start = Instant::now();
        for _ in 0..rounds {
            let runs = (0..parallel_batches).map(|_| notifier.handle_batch(batch()));
            for report in futures_util::future::join_all(runs).await {
                for (_, outcome) in report.unwrap().outcomes {
                    let MessageOutcome::Accepted { deliveries, .. } = outcome else { panic!("malformed") };
                    assert!(
                        matches!(deliveries[..], [DeliveryOutcome::Delivered { status: 200, .. }]),
                        "{deliveries:?}"
                    );
                }
            }
        }
        let elapsed = start.elapsed();
        let delivered = hits.load(Ordering::Relaxed) - before;
        let expected = rounds * parallel_batches * BATCH;
        assert_eq!(delivered, expected, "every delivery must reach the receiver, signed");
        let concurrency = parallel_batches * BATCH;
        let ideal = concurrency as f64 / LATENCY.as_secs_f64();
        println!(
            "{:<28} {:>12} {:>14.1} {:>12.1}",
            format!("{concurrency} ({parallel_batches} x {BATCH}-message batch)"),
            delivered,
            delivered as f64 / elapsed.as_secs_f64(),
            ideal
        );
    }
    if let settle_shared::ports::documents::DocumentStore::Mongo(m) = &backends.documents {
        m.drop_database().await.ok();
    }
}
