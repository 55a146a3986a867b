//! The invocations besides a broker batch: the relay schedule and the BrokerTopology
//! custom resource, answered whatever happens.

use crate::harness::*;
use axum::http::StatusCode;
use axum::Router;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
