//! What the notifier tests share: a recording HTTP receiver and a notifier on the real
//! local services with its own database, queue and merchant.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};
use settle_notify::{DeliveryOutcome, MessageOutcome, Notifier};
use settle_shared::domain::event::CloudEvent;
use settle_shared::ports::delay_queue::{DelayQueue, SqsQueue};
use settle_shared::redact::Secret;
use settle_shared::webhooks::{EndpointRecord, SecretBox, StoredSecret, ENDPOINTS};
use settle_shared::Backends;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) const MASTER: &str = "notify-test-webhook-master-key-0123456789";

use settle_shared::config::Backend;
pub(crate) use settle_test_support::unique;

/// A receiver: `/ok`, `/fail` (500), `/gone` (410), `/hang` (sleeps past the timeout),
/// `/flaky/{n}` (500 for the first n requests, then 200). Every request is recorded.
#[derive(Clone, Default)]
pub(crate) struct Receiver {
    pub(crate) seen: Arc<Mutex<Vec<Received>>>,
    pub(crate) counts: Arc<Mutex<HashMap<String, u32>>>,
}

#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub(crate) path: String,
    pub(crate) at: Instant,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

pub(crate) async fn receive(
    State(r): State<Receiver>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    r.seen.lock().unwrap().push(Received { path: path.clone(), at: Instant::now(), headers, body: body.to_vec() });
    let count = {
        let mut counts = r.counts.lock().unwrap();
        let c = counts.entry(path.clone()).or_default();
        *c += 1;
        *c
    };
    match path.as_str() {
        "ok" => StatusCode::OK,
        "fail" => StatusCode::INTERNAL_SERVER_ERROR,
        "gone" => StatusCode::GONE,
        "hang" => {
            tokio::time::sleep(Duration::from_secs(10)).await;
            StatusCode::OK
        }
        p if p.starts_with("flaky") => {
            let n: u32 = p.trim_start_matches("flaky").parse().unwrap_or(1);
            if count <= n {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::NO_CONTENT
            }
        }
        _ => StatusCode::NOT_FOUND,
    }
}

impl Receiver {
    pub(crate) async fn start() -> (Receiver, SocketAddr) {
        let receiver = Receiver::default();
        let app = Router::new().route("/{path}", post(receive)).with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, addr)
    }

    pub(crate) fn at(&self, path: &str) -> Vec<Received> {
        self.seen.lock().unwrap().iter().filter(|r| r.path == path).cloned().collect()
    }
}

pub(crate) struct Harness {
    pub(crate) notifier: Notifier,
    pub(crate) config: settle_shared::Config,
    pub(crate) backends: Backends,
    pub(crate) sealer: SecretBox,
    pub(crate) queue: DelayQueue,
    pub(crate) merchant: String,
}

impl Harness {
    pub(crate) async fn new() -> Harness {
        let h = Harness::undeclared().await;
        h.backends.bus.declare(&h.backends.topology).await.unwrap();
        h
    }

    /// A harness whose exchange and queues do not exist yet.
    pub(crate) async fn undeclared() -> Harness {
        let sdk = settle_shared::aws::load_sdk_config(None).await;
        let queue = SqsQueue::ensure(&sdk, &unique("it-retries")).await.expect("SQS emulator (scripts/services)");
        let config = settle_test_support::config(
            "notify",
            Backend::Real,
            &[
                ("SETTLE_RETRY_QUEUE_URL", queue.url().to_string()),
                ("SETTLE_WEBHOOK_MASTER_KEY", MASTER.to_string()),
                ("SETTLE_WEBHOOK_ALLOW_PRIVATE", "true".into()),
                ("SETTLE_WEBHOOK_RETRY_SCHEDULE", "1s,1s,1s".into()),
                ("SETTLE_WEBHOOK_TIMEOUT_MS", "1500".into()),
            ],
        );
        let backends = Backends::connect(&config).await.unwrap();
        // The notifier itself has no bucket; a workspace build links S3 into its backends,
        // whose health check then asks for the configured one.
        backends.objects.ensure_bucket().await.expect("S3 emulator (scripts/services)");
        let problems = backends.health().await.problems();
        assert!(problems.is_empty(), "services unreachable: {problems:?} (start them with scripts/services)");
        backends.documents.ensure_indexes(&settle_shared::webhooks::indexes()).await.unwrap();
        let notifier = Notifier::new(&config, backends.clone()).unwrap();
        Harness {
            notifier,
            config,
            sealer: SecretBox::new(&Secret::new(MASTER)),
            queue: backends.retry_queue.clone().unwrap(),
            backends,
            merchant: format!("m_{}", &uuid::Uuid::new_v4().simple().to_string()[..10]),
        }
    }

    /// The same notifier on an in-memory document store (to inject store failures).
    pub(crate) fn on_memory_documents(&self) -> (Harness, settle_shared::ports::documents::MemoryDocuments) {
        let memory = settle_shared::ports::documents::MemoryDocuments::new();
        let mut backends = self.backends.clone();
        backends.documents = settle_shared::ports::documents::DocumentStore::Memory(memory.clone());
        let harness = Harness {
            notifier: Notifier::new(&self.config, backends.clone()).unwrap(),
            config: self.config.clone(),
            backends,
            sealer: SecretBox::new(&Secret::new(MASTER)),
            queue: self.queue.clone(),
            merchant: self.merchant.clone(),
        };
        (harness, memory)
    }

    /// Registers an endpoint directly in the store (the Payment API's routes do the same).
    pub(crate) async fn endpoint(&self, url: String, secrets: &[(&str, Option<i64>)]) -> String {
        let now = chrono::Utc::now().timestamp_millis();
        let record = EndpointRecord {
            id: settle_shared::domain::ids::EndpointId::generate().to_string(),
            merchant_id: self.merchant.clone(),
            url,
            event_types: Vec::new(),
            description: None,
            enabled: true,
            disabled_reason: None,
            secrets: secrets
                .iter()
                .map(|(s, exp)| StoredSecret { sealed: self.sealer.seal(s), created: now, expires_at: *exp })
                .collect(),
            failing_since: None,
            created: now,
            updated: now,
        };
        let doc = serde_json::to_value(&record).unwrap().as_object().cloned().unwrap();
        self.backends.documents.insert(ENDPOINTS, doc).await.unwrap();
        record.id
    }

    pub(crate) fn event(&self, event_type: &str) -> (CloudEvent, aws_lambda_events::event::rabbitmq::RabbitMqEvent) {
        let mut event = CloudEvent::new(event_type, "/settle/payment", json!({"id": "pay_x", "amount": 100}));
        event.merchantid = Some(self.merchant.clone());
        let rmq = rmq_event(&[base64::engine::general_purpose::STANDARD.encode(event.to_json())]);
        (event, rmq)
    }

    /// Plays the SQS event source: feeds due retry messages to the notifier until `done`.
    pub(crate) async fn drain_retries(&self, secs: u64, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline && !done() {
            let messages = self.queue.receive(10, Duration::from_secs(1)).await.unwrap();
            for m in messages {
                let message = serde_json::from_str(&m.body).unwrap();
                self.notifier.handle_retry(&message).await.unwrap();
                self.queue.delete(&m.receipt).await.unwrap();
            }
        }
    }
}

pub(crate) fn rmq_event(datas: &[String]) -> aws_lambda_events::event::rabbitmq::RabbitMqEvent {
    let messages: Vec<Value> = datas
        .iter()
        .map(|d| {
            json!({"basicProperties": {"contentType": "application/cloudevents+json", "headers": {}, "deliveryMode": 2,
            "priority": 0, "bodySize": d.len()}, "redelivered": false, "data": d})
        })
        .collect();
    serde_json::from_value(json!({"eventSource": "aws:rmq", "rmqMessagesByQueue": {"settle.notify::/": messages}}))
        .unwrap()
}

pub(crate) fn deliveries(report: &settle_notify::BatchReport) -> Vec<DeliveryOutcome> {
    match &report.outcomes[0].1 {
        MessageOutcome::Accepted { deliveries, .. } => deliveries.clone(),
        other => panic!("{other:?}"),
    }
}

/// Plays the SQS event source for `secs`: every message on the retry queue goes through
/// `dispatch` as the SQS event Lambda would send; handled ones are deleted.
pub(crate) async fn feed_retry_queue(h: &Harness, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        for m in h.queue.receive(10, Duration::from_secs(1)).await.unwrap() {
            let event = json!({"Records": [{"messageId": "m-1", "eventSource": "aws:sqs", "body": m.body}]});
            let answer = settle_notify::dispatch(&h.notifier, event).await.unwrap();
            assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
            h.queue.delete(&m.receipt).await.unwrap();
        }
    }
}
