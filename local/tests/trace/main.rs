//! One payment, one trace: with an OTLP endpoint configured, the payment API's spans, the
//! notifier's (fed through RabbitMQ by the local stack's `aws:rmq` bridge) and the retry's
//! (through SQS) reach a collector stand-in as one connected trace, which continues the
//! client's `traceparent`. The request's ids are on the outbox record, the AMQP message,
//! the delivery record and the webhook's CloudEvent. Its own test binary: the tracing
//! subscriber is global to a process.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use settle_local::{LocalStack, Observation, StackOptions};
use settle_shared::config::Backend;
use settle_shared::otel::TraceContext;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use settle_test_support::unique;

/// A webhook request the receiver got: headers and body.
type Received = (HeaderMap, Vec<u8>);

/// Every OTLP export request the collector stand-in received.
type Exports = Arc<Mutex<Vec<Value>>>;

/// Starts an OTLP/HTTP JSON receiver on a free port; returns its base URL.
async fn collector(exports: Exports) -> String {
    let app = Router::new()
        .route(
            "/v1/traces",
            post(|State(exports): State<Exports>, Json(body): Json<Value>| async move {
                exports.lock().unwrap().push(body);
                Json(json!({}))
            }),
        )
        .with_state(exports);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// The spans of one trace received so far, by span id.
fn spans_of(exports: &Exports, trace_id: &str) -> HashMap<String, Value> {
    let mut spans = HashMap::new();
    for export in exports.lock().unwrap().iter() {
        for resource in export["resourceSpans"].as_array().into_iter().flatten() {
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    if span["traceId"] == trace_id {
                        spans.insert(span["spanId"].as_str().unwrap().to_string(), span.clone());
                    }
                }
            }
        }
    }
    spans
}

fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"].as_array()?.iter().find(|a| a["key"] == key).map(|a| &a["value"])
}

fn named<'a>(spans: &'a HashMap<String, Value>, name: &str) -> Vec<&'a Value> {
    spans.values().filter(|s| s["name"].as_str().unwrap_or_default().starts_with(name)).collect()
}

/// Whether `span`'s chain of parents reaches `ancestor`.
fn descends_from(spans: &HashMap<String, Value>, span: &Value, ancestor: &str) -> bool {
    let mut current = span;
    for _ in 0..64 {
        let Some(parent) = current["parentSpanId"].as_str() else { return false };
        if parent == ancestor {
            return true;
        }
        match spans.get(parent) {
            Some(p) => current = p,
            None => return false,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_payment_is_one_connected_trace_from_the_request_to_the_webhook_retry() {
    // Arrange: a collector, tracing pointed at it, a receiver that fails once.
    let exports = Exports::default();
    let endpoint = collector(exports.clone()).await;
    settle_shared::telemetry::init_from(&|name| match name {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(endpoint.clone()),
        "OTEL_SERVICE_NAME" => Some("settle-trace-test".into()),
        "RUST_LOG" => Some("warn".into()),
        _ => None,
    });
    assert!(settle_shared::otel::enabled(), "the test's subscriber must be the process's");

    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let r = received.clone();
    let receiver = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let r = r.clone();
            async move {
                let mut seen = r.lock().unwrap();
                seen.push((headers, body.to_vec()));
                if seen.len() == 1 {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await.unwrap() });

    let vars: Vec<(&str, String)> =
        vec![("SETTLE_WEBHOOK_RETRY_SCHEDULE", "1s".into()), ("SETTLE_WEBHOOK_TIMEOUT_MS", "2000".into())];
    let mut cfg = settle_test_support::config("trace", Backend::Real, &vars);
    cfg.webhooks.allow_private = true;
    let stack = LocalStack::start(
        cfg.clone(),
        StackOptions { watch_dir: None, s3_events_queue: unique("trace-s3"), retry_queue: unique("trace-retries") },
    )
    .await
    .unwrap();
    let mut observations = stack.observe();
    let base = format!("http://{}", stack.http_addr);
    let token = settle_local::dev_keys::mint(&cfg, "m_trace", Some("m_trace"), &["merchant".to_string()], 600).unwrap();
    let http = reqwest::Client::new();
    let call = |path: &str, body: Value, key: &str| {
        http.post(format!("{base}{path}")).bearer_auth(&token).header("idempotency-key", key).json(&body).send()
    };
    let created = call("/v1/webhook_endpoints", json!({"url": hook, "event_types": ["payment.succeeded"]}), "trace-e1");
    assert_eq!(created.await.unwrap().status(), 201);
    let card = call(
        "/v1/tokens",
        json!({"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}),
        "trace-t1",
    );
    let card: Value = card.await.unwrap().json().await.unwrap();

    // Act: the client calls within its own trace.
    let client =
        TraceContext { trace_id: rand::random::<u128>() | 1, span_id: rand::random::<u64>() | 1, sampled: true };
    let trace_id = format!("{:032x}", client.trace_id);
    let idempotency_key = unique("trace-pay");
    let response = http
        .post(format!("{base}/v1/payments"))
        .bearer_auth(&token)
        .header("idempotency-key", &idempotency_key)
        .header("x-correlation-id", "corr-trace-1")
        .header("traceparent", client.traceparent())
        .json(&json!({"amount": 4200, "currency": "EUR", "token": card["id"], "confirm": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_string();
    let payment: Value = response.json().await.unwrap();

    // The webhook fails once, is retried through SQS, and is delivered.
    let deadline = Instant::now() + Duration::from_secs(45);
    let complete = |spans: &HashMap<String, Value>| {
        named(spans, "webhook POST").len() >= 2 && !named(spans, "webhook retry").is_empty()
    };
    let mut spans = spans_of(&exports, &trace_id);
    while !complete(&spans) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        spans = spans_of(&exports, &trace_id);
    }
    let names: Vec<&str> = spans.values().map(|s| s["name"].as_str().unwrap()).collect();
    assert!(complete(&spans), "the trace never got both webhook attempts: {names:?}");

    // Assert: one connected trace, rooted in the client's span.
    let servers = named(&spans, "POST /v1/payments");
    assert_eq!(servers.len(), 1, "{names:?}");
    let server = servers[0];
    assert_eq!(server["kind"], 2);
    assert_eq!(server["parentSpanId"], format!("{:016x}", client.span_id));
    assert_eq!(attribute(server, "http.route"), Some(&json!({"stringValue": "/v1/payments"})));
    assert_eq!(attribute(server, "http.response.status_code"), Some(&json!({"intValue": "201"})));
    assert_eq!(attribute(server, "request_id"), Some(&json!({"stringValue": request_id})));
    let server_id = server["spanId"].as_str().unwrap();
    for span in spans.values().filter(|s| s["spanId"] != server_id) {
        assert!(
            descends_from(&spans, span, server_id),
            "span {} is not connected to the request: {names:?}",
            span["name"]
        );
    }
    // The dependency calls of the request are in it, each a client or producer span.
    for prefix in ["mongodb transaction", "redis ", "rabbitmq publish"] {
        assert!(!named(&spans, prefix).is_empty(), "no {prefix} span in {names:?}");
    }
    assert_eq!(named(&spans, "rabbitmq publish")[0]["kind"], 4);
    // The notifier's span continues it and carries the request's ids.
    let consumer = named(&spans, "process payment.succeeded");
    assert_eq!(consumer.len(), 1, "{names:?}");
    assert_eq!(consumer[0]["kind"], 5);
    assert_eq!(attribute(consumer[0], "request_id"), Some(&json!({"stringValue": request_id})));
    assert_eq!(attribute(consumer[0], "correlation_id"), Some(&json!({"stringValue": "corr-trace-1"})));
    assert_eq!(attribute(consumer[0], "idempotency_key"), Some(&json!({"stringValue": idempotency_key})));
    // Both attempts: the first failed (503), the retry (through SQS) delivered.
    let mut codes: Vec<String> = named(&spans, "webhook POST")
        .iter()
        .map(|s| attribute(s, "http.response.status_code").unwrap()["intValue"].as_str().unwrap().to_string())
        .collect();
    codes.sort();
    assert_eq!(codes, ["200", "503"]);
    let retry = named(&spans, "webhook retry")[0];
    assert!(descends_from(&spans, retry, consumer[0]["spanId"].as_str().unwrap()));
    assert!(!named(&spans, "sqs SendMessage").is_empty(), "{names:?}");
    let failed = named(&spans, "webhook POST").into_iter().find(|s| s["status"]["code"] == 2);
    assert!(failed.is_some(), "the 503 attempt is marked as an error");

    // The request's ids travel with the event: the webhook's CloudEvent, the outbox record
    // and the delivery record.
    let (_, body) = received.lock().unwrap()[0].clone();
    let event: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["data"]["id"], payment["id"]);
    assert_eq!(event["requestid"], request_id.as_str());
    assert_eq!(event["correlationid"], "corr-trace-1");
    assert_eq!(event["idempotencykey"], idempotency_key.as_str());
    let traceparent = TraceContext::from_traceparent(event["traceparent"].as_str().unwrap()).unwrap();
    assert_eq!(traceparent.trace_id, client.trace_id);
    let event_id = event["id"].as_str().unwrap();
    let docs = &stack.backends.documents;
    let outbox = docs.get(settle_payment::store::OUTBOX, event_id).await.unwrap().unwrap();
    for (field, value) in [
        ("request_id", &request_id),
        ("correlation_id", &"corr-trace-1".to_string()),
        ("idempotency_key", &idempotency_key),
    ] {
        assert_eq!(outbox[field], value.as_str(), "outbox {field}");
    }
    let deliveries = docs
        .find(
            settle_shared::webhooks::DELIVERIES,
            &settle_shared::ports::documents::Query::new()
                .filter(settle_shared::ports::documents::Cond::eq("event_id", event_id)),
        )
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0]["request_id"], request_id.as_str());
    assert_eq!(deliveries[0]["correlation_id"], "corr-trace-1");
    assert_eq!(deliveries[0]["idempotency_key"], idempotency_key.as_str());
    // And on the AMQP message the notifier was given, as Amazon MQ gives headers.
    let message = loop {
        let observation = tokio::time::timeout(Duration::from_secs(5), observations.recv()).await.unwrap().unwrap();
        if let Observation::Notify { event, .. } = observation {
            break event.messages_by_queue.into_values().flatten().next().unwrap();
        }
    };
    let header = |name: &str| settle_notify::amqp_header(&message, name);
    assert_eq!(header("request-id").as_deref(), Some(request_id.as_str()));
    assert_eq!(header("correlation-id").as_deref(), Some("corr-trace-1"));
    assert_eq!(header("idempotency-key").as_deref(), Some(idempotency_key.as_str()));
    let amqp_parent = TraceContext::from_traceparent(&header("traceparent").unwrap()).unwrap();
    assert_eq!(amqp_parent.trace_id, client.trace_id);
    let ids: HashSet<&str> = spans.keys().map(String::as_str).collect();
    assert!(ids.len() >= 10, "{names:?}");
}
