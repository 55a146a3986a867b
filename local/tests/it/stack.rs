//! The local stack on both backends: HTTP → router, RabbitMQ → `aws:rmq` → notifier,
//! S3 put → S3 event → csv-ingest.

use settle_csv_ingest::ObjectOutcome;
use settle_local::{LocalStack, Observation, StackOptions};
use settle_notify::MessageOutcome;
use settle_shared::config::Backend;
use settle_shared::domain::event::{CloudEvent, CLOUDEVENTS_JSON};
use settle_shared::ports::events::OutgoingMessage;
use settle_shared::Config;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;

pub use settle_test_support::unique;

/// A configuration on loopback services (the environment's URLs win over the defaults),
/// with names no other test uses, then `overrides`.
pub fn config(backend: Backend, overrides: &[(&str, String)]) -> Config {
    settle_test_support::config("stack", backend, overrides)
}

fn options() -> StackOptions {
    StackOptions { watch_dir: None, s3_events_queue: unique("it-s3-events"), retry_queue: unique("it-retries") }
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

/// Waits for the first observation `pick` accepts.
async fn observe<T>(
    rx: &mut broadcast::Receiver<Observation>,
    secs: u64,
    pick: impl Fn(&Observation) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let next = tokio::time::timeout_at(deadline, rx.recv()).await.expect("handler was not invoked in time");
        if let Some(found) = pick(&next.expect("observation channel open")) {
            return found;
        }
    }
}

/// Publishes a CloudEvent to the exchange and waits for the notifier to receive it as
/// an `aws:rmq` event from the notify queue.
async fn event_reaches_notify(stack: &LocalStack) {
    let mut rx = stack.observe();
    let mut event = CloudEvent::new("payment.succeeded", "/settle/payment", serde_json::json!({"amount": 2000}));
    event.merchantid = Some("m_123".into());
    let message = OutgoingMessage {
        routing_key: event.event_type.clone(),
        message_id: event.id.clone(),
        content_type: CLOUDEVENTS_JSON.into(),
        headers: BTreeMap::from([(
            "traceparent".into(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        )]),
        body: event.to_json(),
    };
    stack.backends.bus.publish(&stack.backends.topology.exchange, &message).await.unwrap();
    let queue_key = format!("{}::/", stack.backends.topology.queue);
    let (rmq, outcome) = observe(&mut rx, 20, |o| match o {
        Observation::Notify { event: rmq, report } => report
            .outcomes
            .iter()
            .find(|(_, out)| matches!(out, MessageOutcome::Accepted { event_id, .. } if *event_id == event.id))
            .map(|(_, out)| (rmq.clone(), out.clone())),
        _ => None,
    })
    .await;
    // The aws:rmq shape: source, queue::vhost key, base64 data, properties, byte headers.
    assert_eq!(rmq.event_source.as_deref(), Some("aws:rmq"));
    let messages = &rmq.messages_by_queue[&queue_key];
    let props = &messages[0].basic_properties;
    assert_eq!(props.message_id.as_deref(), Some(event.id.as_str()));
    assert_eq!(props.delivery_mode, 2);
    assert_eq!(props.content_type.as_deref(), Some(CLOUDEVENTS_JSON));
    assert!(props.headers["traceparent"]["bytes"].is_array());
    assert_eq!(
        outcome,
        MessageOutcome::Accepted {
            event_id: event.id.clone(),
            event_type: "payment.succeeded".into(),
            merchant_id: Some("m_123".into()),
            // No endpoints are registered for this merchant.
            deliveries: Vec::new(),
        }
    );
}

/// Puts a settlement file into the bucket and waits for csv-ingest to receive the S3
/// event for it, with the key decoded.
async fn object_reaches_csv_ingest(stack: &LocalStack) {
    let mut rx = stack.observe();
    let key = format!("settlements/incoming/{} gateway.csv", unique("day"));
    let body = b"settlement_id,payment_id\n".to_vec();
    let meta = stack.backends.objects.put(&key, body, "text/csv").await.unwrap();
    let (s3, outcome) = observe(&mut rx, 30, |o| match o {
        Observation::Ingest { event, report } => report
            .outcomes
            .iter()
            .find(|out| matches!(out, ObjectOutcome::Received { key: k, .. } if *k == key))
            .map(|out| (event.clone(), out.clone())),
        _ => None,
    })
    .await;
    assert_eq!(s3.records[0].event_name.as_deref().map(|n| n.starts_with("ObjectCreated:")), Some(true));
    assert_ne!(s3.records[0].s3.object.key.as_deref(), Some(key.as_str()), "keys arrive URL-encoded");
    assert!(matches!(outcome, ObjectOutcome::Received { size: 25, ref etag, .. } if *etag == meta.etag), "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_stack_wires_every_trigger_to_its_handler() {
    let watch = std::env::temp_dir().join(unique("settle-watch"));
    let mut opts = options();
    opts.watch_dir = Some(watch.clone());
    let stack = LocalStack::start(config(Backend::Memory, &[]), opts).await.unwrap();

    let (status, body) = http_get(stack.http_addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    event_reaches_notify(&stack).await;
    object_reaches_csv_ingest(&stack).await;

    // A file dropped in the watched folder is ingested too.
    let mut rx = stack.observe();
    std::fs::write(watch.join("dropped.csv"), b"settlement_id\n").unwrap();
    observe(&mut rx, 10, |o| match o {
        Observation::Ingest { report, .. } => report
            .outcomes
            .iter()
            .find(|out| matches!(out, ObjectOutcome::Received { key, .. } if key == "settlements/incoming/dropped.csv"))
            .map(|_| ()),
        _ => None,
    })
    .await;
    std::fs::remove_dir_all(&watch).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn real_stack_wires_every_trigger_to_its_handler() {
    let stack = LocalStack::start(config(Backend::Real, &[]), options())
        .await
        .unwrap_or_else(|e| panic!("local stack on the real services: {e:#} (start them with scripts/services)"));
    let (status, body) = http_get(stack.http_addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    event_reaches_notify(&stack).await;
    object_reaches_csv_ingest(&stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_service_stops_the_start_with_one_line_naming_it() {
    let dead_redis = [("SETTLE_REDIS_URL", "redis://:hunter2secret@127.0.0.1:1".to_string())];
    let Err(e) = LocalStack::start(config(Backend::Real, &dead_redis), options()).await else {
        panic!("start must fail with Redis unreachable");
    };
    let message = format!("{e:#}");
    assert!(message.contains("redis unreachable"), "{message}");
    assert!(!message.contains("hunter2secret"), "secrets must not leak: {message}");
    assert!(!message.contains('\n'), "one line: {message}");
}
