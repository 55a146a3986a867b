//! The notifier against a real local HTTP receiver, MongoDB, RabbitMQ and the SQS
//! emulator: signatures, rotation, retries on a compressed schedule, 410, isolation from
//! a hanging receiver, dead letters, duplicates, resends.

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
use settle_shared::webhook_signature::{generate_secret, verify};
use settle_shared::webhooks::{EndpointRecord, SecretBox, StoredSecret, ATTEMPTS, DEAD_LETTERS, DELIVERIES, ENDPOINTS};
use settle_shared::Backends;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MASTER: &str = "notify-test-webhook-master-key-0123456789";

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A receiver: `/ok`, `/fail` (500), `/gone` (410), `/hang` (sleeps past the timeout),
/// `/flaky/{n}` (500 for the first n requests, then 200). Every request is recorded.
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<Received>>>,
    counts: Arc<Mutex<HashMap<String, u32>>>,
}

#[derive(Clone, Debug)]
struct Received {
    path: String,
    at: Instant,
    headers: HeaderMap,
    body: Vec<u8>,
}

async fn receive(
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
    async fn start() -> (Receiver, SocketAddr) {
        let receiver = Receiver::default();
        let app = Router::new().route("/{path}", post(receive)).with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, addr)
    }

    fn at(&self, path: &str) -> Vec<Received> {
        self.seen.lock().unwrap().iter().filter(|r| r.path == path).cloned().collect()
    }
}

struct Harness {
    notifier: Notifier,
    config: settle_shared::Config,
    backends: Backends,
    sealer: SecretBox,
    queue: DelayQueue,
    merchant: String,
}

impl Harness {
    async fn new() -> Harness {
        let h = Harness::undeclared().await;
        h.backends.bus.declare(&h.backends.topology).await.unwrap();
        h
    }

    /// A harness whose exchange and queues do not exist yet.
    async fn undeclared() -> Harness {
        let sdk = settle_shared::aws::load_sdk_config(None).await;
        let queue = SqsQueue::ensure(&sdk, &unique("it-retries")).await.expect("SQS emulator (scripts/services)");
        let config = settle_shared::config::loopback_config(&[
            ("SETTLE_MONGODB_DATABASE", unique("notify")),
            ("SETTLE_EVENTS_EXCHANGE", unique("it.events")),
            ("SETTLE_NOTIFY_QUEUE", unique("it.notify")),
            ("SETTLE_RETRY_QUEUE_URL", queue.url().to_string()),
            ("SETTLE_WEBHOOK_MASTER_KEY", MASTER.to_string()),
            ("SETTLE_WEBHOOK_ALLOW_PRIVATE", "true".into()),
            ("SETTLE_WEBHOOK_RETRY_SCHEDULE", "1s,1s,1s".into()),
            ("SETTLE_WEBHOOK_TIMEOUT_MS", "1500".into()),
        ])
        .unwrap();
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
    fn on_memory_documents(&self) -> (Harness, settle_shared::ports::documents::MemoryDocuments) {
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
    async fn endpoint(&self, url: String, secrets: &[(&str, Option<i64>)]) -> String {
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

    fn event(&self, event_type: &str) -> (CloudEvent, aws_lambda_events::event::rabbitmq::RabbitMqEvent) {
        let mut event = CloudEvent::new(event_type, "/settle/payment", json!({"id": "pay_x", "amount": 100}));
        event.merchantid = Some(self.merchant.clone());
        let rmq = rmq_event(&[base64::engine::general_purpose::STANDARD.encode(event.to_json())]);
        (event, rmq)
    }

    /// Plays the SQS event source: feeds due retry messages to the notifier until `done`.
    async fn drain_retries(&self, secs: u64, done: impl Fn() -> bool) {
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

fn rmq_event(datas: &[String]) -> aws_lambda_events::event::rabbitmq::RabbitMqEvent {
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

fn deliveries(report: &settle_notify::BatchReport) -> Vec<DeliveryOutcome> {
    match &report.outcomes[0].1 {
        MessageOutcome::Accepted { deliveries, .. } => deliveries.clone(),
        other => panic!("{other:?}"),
    }
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_messages_are_dead_lettered_and_duplicates_sent_once() {
    let h = Harness::new().await;
    let (receiver, addr) = Receiver::start().await;
    h.endpoint(format!("http://{addr}/ok"), &[(&generate_secret(), None)]).await;
    let (event, _) = h.event("payment.captured");
    let good = base64::engine::general_purpose::STANDARD.encode(event.to_json());
    // One batch: a good event, garbage, the good event again (broker redelivery).
    let report = h.notifier.handle_batch(rmq_event(&[good.clone(), "%%%".into(), good])).await.unwrap();
    assert_eq!(report.outcomes.len(), 3);
    assert!(matches!(&report.outcomes[1].1, MessageOutcome::Malformed { reason } if reason.contains("base64")));
    assert_eq!(receiver.at("ok").len(), 1, "one delivery per (event, endpoint)");
    let q = settle_shared::ports::documents::Query::new()
        .filter(settle_shared::ports::documents::Cond::eq("kind", "malformed_message"));
    let letters = h.backends.documents.find(DEAD_LETTERS, &q).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert!(letters[0]["reason"].as_str().unwrap().contains("base64"));
}

/// Plays the SQS event source for `secs`: every message on the retry queue goes through
/// `dispatch` as the SQS event Lambda would send; handled ones are deleted.
async fn feed_retry_queue(h: &Harness, secs: u64) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_error_on_one_message_fails_that_message_not_the_batch() {
    // Arrange: two events for one endpoint; the store fails the first endpoint lookup.
    let base = Harness::new().await;
    let (h, memory) = base.on_memory_documents();
    let (receiver, addr) = Receiver::start().await;
    h.endpoint(format!("http://{addr}/ok"), &[(&generate_secret(), None)]).await;
    let (first, _) = h.event("payment.succeeded");
    let (second, _) = h.event("payment.refunded");
    let encode = |e: &CloudEvent| base64::engine::general_purpose::STANDARD.encode(e.to_json());
    memory.fail_next_finds(ENDPOINTS, 1);

    // Act
    let report = h.notifier.handle_batch(rmq_event(&[encode(&first), encode(&second)])).await.unwrap();

    // Assert: one message held with its reason, the other delivered; then the held one
    // is delivered from the retry queue, and each event reached the endpoint once.
    let held = report
        .outcomes
        .iter()
        .filter(|(_, o)| matches!(o, MessageOutcome::Held { reason } if reason.contains("injected")))
        .count();
    assert_eq!((held, report.accepted()), (1, 1), "{report:?}");
    assert_eq!(receiver.at("ok").len(), 1);
    feed_retry_queue(&h, 4).await;
    let mut ids: Vec<String> =
        receiver.at("ok").iter().map(|r| r.headers["webhook-id"].to_str().unwrap().to_string()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2, "both events delivered, each once");
    assert_eq!(receiver.at("ok").len(), 2);
}

fn fixture(path: &str) -> Value {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path);
    serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_schedule_runs_the_outbox_relay() {
    use settle_shared::outbox::OUTBOX;
    let h = Harness::new().await;
    let mut events = h.backends.bus.subscribe(&h.backends.topology.queue, 10).await.unwrap();
    let id = unique("evt");
    let created = chrono::Utc::now().timestamp_millis() - 60_000;
    let record = json!({"_id": id, "status": "pending", "routing_key": "payment.succeeded",
        "body": json!({"id": id}).to_string(), "created": created});
    h.backends.documents.insert(OUTBOX, record.as_object().cloned().unwrap()).await.unwrap();
    let schedule = fixture("events/notify/eventbridge-relay-outbox.json");

    let answer = settle_notify::dispatch(&h.notifier, schedule.clone()).await.unwrap();
    assert_eq!(answer["published"], 1, "{answer}");
    let delivery = tokio::time::timeout(Duration::from_secs(5), events.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(delivery.message_id.as_deref(), Some(id.as_str()));
    let again = settle_notify::dispatch(&h.notifier, schedule).await.unwrap();
    assert_eq!(again["summary"], "outbox relay: nothing pending", "{again}");

    // Another EventBridge event is refused in one line and changes nothing.
    let other = json!({"source": "aws.events", "detail-type": "EC2 Instance State-change Notification", "detail": {}});
    let refused = settle_notify::dispatch(&h.notifier, other).await.unwrap_err().to_string();
    assert!(refused.contains("only the scheduled outbox relay") && !refused.contains('\n'), "{refused}");
    let unknown = settle_notify::dispatch(&h.notifier, json!({"hello": "world"})).await.unwrap_err().to_string();
    assert!(unknown.starts_with("unrecognised event") && !unknown.contains('\n'), "{unknown}");
}

/// Stands in for CloudFormation's pre-signed response URL: records each PUT body and
/// answers with `status`.
async fn response_url(status: StatusCode) -> (Arc<Mutex<Vec<Value>>>, String) {
    let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
    let seen = bodies.clone();
    let app = Router::new().route(
        "/cfn-response",
        axum::routing::put(move |body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                status
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (bodies, format!("http://{addr}/cfn-response"))
}

fn cfn_request(h: &Harness, request_type: &str, url: &str, exchange: &str, queue: &str) -> Value {
    let mut request = fixture("events/notify/cfn-broker-topology-create.json");
    request["RequestType"] = json!(request_type);
    request["ResponseURL"] = json!(url);
    request["ResourceProperties"]["Exchange"] = json!(exchange);
    request["ResourceProperties"]["Queue"] = json!(queue);
    if request_type != "Create" {
        let t = &h.backends.topology;
        request["PhysicalResourceId"] = json!(format!("settle-topology:{}:{}", t.exchange, t.queue));
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_custom_resource_declares_the_topology_and_always_answers() {
    let h = Harness::undeclared().await;
    let t = h.backends.topology.clone();
    let (answers, url) = response_url(StatusCode::OK).await;
    let probe = settle_shared::ports::events::OutgoingMessage {
        routing_key: "payment.succeeded".into(),
        message_id: "evt_probe".into(),
        content_type: "application/cloudevents+json".into(),
        headers: Default::default(),
        body: b"{}".to_vec(),
    };
    assert!(h.backends.bus.publish(&t.exchange, &probe).await.is_err(), "nothing declared yet");
    let last = || answers.lock().unwrap().last().cloned().unwrap();

    // Create: declared, and the answer reaches the response URL with CloudFormation's ids.
    let create = cfn_request(&h, "Create", &url, &t.exchange, &t.queue);
    let answer = settle_notify::dispatch(&h.notifier, create.clone()).await.unwrap();
    assert_eq!(answer["status"], "SUCCESS", "{answer}");
    let sent = last();
    assert_eq!(sent["Status"], "SUCCESS");
    for key in ["StackId", "RequestId", "LogicalResourceId"] {
        assert_eq!(sent[key], create[key], "{key}");
    }
    assert_eq!(sent["PhysicalResourceId"], format!("settle-topology:{}:{}", t.exchange, t.queue));
    let mut queue = h.backends.bus.subscribe(&t.queue, 10).await.unwrap();
    h.backends.bus.publish(&t.exchange, &probe).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), queue.next()).await.unwrap().unwrap().unwrap();
    got.reject(false).await.unwrap();
    let mut dead = h.backends.bus.subscribe(&t.dead_letter_queue, 10).await.unwrap();
    let letter = tokio::time::timeout(Duration::from_secs(5), dead.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(letter.message_id.as_deref(), Some("evt_probe"), "the dead-letter route exists too");

    // Update with the same names: declared again (idempotent).
    let update = cfn_request(&h, "Update", &url, &t.exchange, &t.queue);
    assert_eq!(settle_notify::dispatch(&h.notifier, update).await.unwrap()["status"], "SUCCESS");

    // Names that differ from the functions' configuration, or are not AMQP names: FAILED
    // with the reason, answered, nothing declared.
    let other_queue = unique("it.other");
    let mismatch = cfn_request(&h, "Update", &url, &t.exchange, &other_queue);
    settle_notify::dispatch(&h.notifier, mismatch).await.unwrap();
    assert_eq!(last()["Status"], "FAILED");
    assert!(last()["Reason"].as_str().unwrap().contains("SETTLE_NOTIFY_QUEUE"), "{}", last());
    assert!(h.backends.bus.subscribe(&other_queue, 1).await.is_err(), "a refused queue is not declared");
    let invalid = cfn_request(&h, "Create", &url, &t.exchange, "amq.nope");
    settle_notify::dispatch(&h.notifier, invalid).await.unwrap();
    assert_eq!(last()["Status"], "FAILED");
    assert!(last()["Reason"].as_str().unwrap().contains("ResourceProperties.Queue"), "{}", last());
    assert!(last()["PhysicalResourceId"].as_str().is_some_and(|id| !id.is_empty()));
    let mut unknown = cfn_request(&h, "Create", &url, &t.exchange, &t.queue);
    unknown["RequestType"] = json!("Replace");
    settle_notify::dispatch(&h.notifier, unknown).await.unwrap();
    assert!(last()["Reason"].as_str().unwrap().contains("unknown RequestType"), "{}", last());

    // Delete keeps the queues (they may hold undelivered events).
    let delete = cfn_request(&h, "Delete", &url, &t.exchange, &t.queue);
    assert_eq!(settle_notify::dispatch(&h.notifier, delete).await.unwrap()["status"], "SUCCESS");
    assert!(last()["Reason"].as_str().unwrap().contains("kept"));
    h.backends.bus.publish(&t.exchange, &probe).await.unwrap();

    // A request without its ids cannot be answered: the invocation fails in one line.
    let answered = answers.lock().unwrap().len();
    let mut malformed = cfn_request(&h, "Create", &url, &t.exchange, &t.queue);
    malformed.as_object_mut().unwrap().remove("StackId");
    let error = settle_notify::dispatch(&h.notifier, malformed).await.unwrap_err().to_string();
    assert!(error.contains("malformed CloudFormation request") && !error.contains('\n'), "{error}");
    assert_eq!(answers.lock().unwrap().len(), answered, "nothing was sent");

    // A response URL that refuses the answer fails the invocation, so Lambda retries it.
    let (_, refusing) = response_url(StatusCode::FORBIDDEN).await;
    let create = cfn_request(&h, "Create", &refusing, &t.exchange, &t.queue);
    let error = settle_notify::dispatch(&h.notifier, create).await.unwrap_err().to_string();
    assert!(error.contains("403"), "{error}");
}
