//! Every sample event in `events/` runs through its function's release binary under AWS's
//! Lambda Runtime Interface Emulator (the real runtime contract, no Docker), on the real
//! services, and has its documented effect: the API Gateway response as it leaves the
//! runtime, a signed webhook at a receiver registered for the sample's merchant, the
//! retried delivery the SQS sample names, the outbox event the schedule relays, the broker
//! topology the CloudFormation request declares, the settlement file the S3 sample names.
//! Build the binaries with `scripts/lambda-binaries`; `scripts/test` does.

use crate::stack::{config, unique};
use aws_lambda_events::event::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::event::rabbitmq::RabbitMqEvent;
use aws_lambda_events::event::s3::S3Event;
use aws_lambda_events::event::sqs::SqsEvent;
use serde_json::{json, Value};
use settle_local::emulator::{invocation_error, invoke_env, Emulator};
use settle_shared::config::Backend;
use settle_shared::webhooks::{EndpointRecord, SecretBox, StoredSecret, ENDPOINTS};
use settle_shared::Backends;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub(crate) fn samples(function: &str) -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../events").join(function);
    let mut files: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no sample events in {}", dir.display());
    files
}

pub(crate) fn sample(function: &str, name: &str) -> (PathBuf, String) {
    samples(function).into_iter().find(|(p, _)| p.ends_with(name)).unwrap_or_else(|| panic!("no sample {name}"))
}

/// Parses `text` as `T` and checks that serialising and parsing again changes nothing.
fn parse_round_trip<T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug>(
    path: &Path,
    text: &str,
) -> T {
    let parsed: T = serde_json::from_str(text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let again: T = serde_json::from_value(serde_json::to_value(&parsed).unwrap()).unwrap();
    assert_eq!(again, parsed, "{} does not round-trip", path.display());
    parsed
}

/// One test's world: its own database, exchange, queue and retry queue, the backends to
/// arrange and inspect it, and the environment its emulated functions get.
pub(crate) struct World {
    pub(crate) backends: Backends,
    env: Vec<(String, String)>,
}

impl World {
    async fn new(extra: &[(&str, String)]) -> World {
        World::on(invoke_env(), extra).await
    }

    /// The world on `base`, the environment its functions would have anyway, with its own
    /// names put in.
    pub(crate) async fn on(base: Vec<(String, String)>, extra: &[(&str, String)]) -> World {
        let sdk = settle_shared::aws::load_sdk_config(None).await;
        let retries = settle_shared::ports::delay_queue::SqsQueue::ensure(&sdk, &unique("it-retries")).await.unwrap();
        let mut names = vec![
            ("SETTLE_MONGODB_DATABASE", unique("lambda")),
            // Idempotency records live in Redis: a shared prefix would replay an earlier
            // run's answers (the samples' keys are fixed) from another database.
            ("SETTLE_REDIS_PREFIX", format!("{}:", unique("lambda"))),
            ("SETTLE_EVENTS_EXCHANGE", unique("it.events")),
            ("SETTLE_NOTIFY_QUEUE", unique("it.notify")),
            ("SETTLE_RETRY_QUEUE_URL", retries.url().to_string()),
            // The samples name the default bucket, so that they also work with `settle invoke`.
            ("SETTLE_BUCKET", "settle-settlements".to_string()),
        ];
        names.extend(extra.iter().cloned());
        let backends = Backends::connect(&config(Backend::Real, &names)).await.unwrap();
        backends.objects.ensure_bucket().await.expect("S3 emulator (scripts/services)");
        let problems = backends.health().await.problems();
        assert!(problems.is_empty(), "services unreachable: {problems:?} (start them with scripts/services)");
        let mut env = base;
        for (name, value) in names {
            env.retain(|(known, _)| known != name);
            env.push((name.to_string(), value));
        }
        World { backends, env }
    }

    pub(crate) async fn start(&self, function: &str) -> Emulator {
        Emulator::start(function, &self.env).await.unwrap_or_else(|e| panic!("{e:#}"))
    }
}

/// Invokes and fails the test, with the function's last log lines, on a Lambda error.
pub(crate) async fn invoke(emulator: &Emulator, event: &Value) -> Value {
    let answer = emulator.invoke(event).await.unwrap_or_else(|e| panic!("{e:#}"));
    if let Some(error) = invocation_error(&answer) {
        panic!("{} failed: {error}\n{}", emulator.function, emulator.log_tail());
    }
    answer
}

/// The API Gateway (payload v2) response as it left the runtime, with its JSON body.
pub(crate) fn api_response(path: &Path, answer: Value) -> (ApiGatewayV2httpResponse, Value) {
    let response: ApiGatewayV2httpResponse = serde_json::from_value(answer.clone())
        .unwrap_or_else(|e| panic!("{}: not an API Gateway response: {e}: {answer}", path.display()));
    assert!(!response.is_base64_encoded, "{}: a JSON body is sent as text: {answer}", path.display());
    for name in ["content-type", "x-request-id", "x-correlation-id"] {
        assert!(response.headers.contains_key(name), "{}: no {name} header: {answer}", path.display());
    }
    // Payload v2 has one value per header (repeated ones joined with commas) and cookies
    // of their own: nothing may be left in a multi-value map API Gateway ignores.
    assert!(response.multi_value_headers.is_empty(), "{}: {answer}", path.display());
    let body = match &response.body {
        Some(aws_lambda_events::encodings::Body::Text(text)) => serde_json::from_str(text).unwrap_or(Value::Null),
        other => panic!("{}: body {other:?}", path.display()),
    };
    (response, body)
}

/// The payment samples in the order a client would send them: each later one names what
/// an earlier one created. Every file in `events/payment` must be listed here.
const PAYMENT_SEQUENCE: &[&str] = &[
    "apigw-v2-get-healthz.json",
    "apigw-v2-create-token.json",
    "apigw-v2-create-payment.json",
    "apigw-v2-get-payment.json",
    "apigw-v2-refund-payment.json",
    "apigw-v2-bad-request.json",
];

pub(crate) fn dev_token(merchant: &str, roles: &[&str]) -> String {
    let mut config = config(Backend::Real, &[]);
    settle_local::dev_keys::apply(&mut config);
    let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    settle_local::dev_keys::mint(&config, merchant, Some(merchant), &roles, 600).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_samples_under_the_lambda_runtime() {
    let world = World::new(&[]).await;
    // As in AWS once BrokerTopology ran: else the first publishes may race the binary's
    // own first-invocation declare, fail, and leave the events to the relay.
    world.backends.bus.declare(&world.backends.topology).await.unwrap();
    let payment = world.start("payment").await;
    let token = dev_token("m_123", &["merchant"]);
    let files = samples("payment");
    let names: Vec<String> = files.iter().map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    let mut listed: Vec<&str> = PAYMENT_SEQUENCE.to_vec();
    listed.sort_unstable();
    assert_eq!(names, listed, "every payment sample runs, in a stated order");

    let (mut card, mut payment_id) = (String::new(), String::new());
    for name in PAYMENT_SEQUENCE {
        let (path, text) = files.iter().find(|(p, _)| p.ends_with(name)).unwrap();
        let values =
            [("SETTLE_TOKEN", token.as_str()), ("CARD_TOKEN", card.as_str()), ("PAYMENT_ID", payment_id.as_str())];
        let text = settle_local::sample_events::fill(text, &values).unwrap();
        let _: ApiGatewayV2httpRequest = parse_round_trip(path, &text);
        let answer = invoke(&payment, &serde_json::from_str(&text).unwrap()).await;
        let (response, json) = api_response(path, answer.clone());
        let status = response.status_code;
        let content_type = response.headers["content-type"].to_str().unwrap().to_string();
        let shown = format!("{}: {answer}", path.display());
        match *name {
            "apigw-v2-bad-request.json" => {
                assert!(matches!(status, 400 | 422), "{shown}");
                assert_eq!(content_type, "application/problem+json", "{shown}");
                assert_eq!(json["field"], "amount", "{shown}");
            }
            "apigw-v2-create-token.json" => {
                assert_eq!(status, 201, "{shown}");
                card = json["id"].as_str().unwrap().to_string();
            }
            "apigw-v2-create-payment.json" => {
                assert_eq!((status, json["status"].as_str()), (201, Some("succeeded")), "{shown}");
                payment_id = json["id"].as_str().unwrap().to_string();
            }
            "apigw-v2-refund-payment.json" => {
                assert_eq!((status, json["amount"].as_i64()), (201, Some(500)), "{shown}");
            }
            "apigw-v2-get-payment.json" => {
                assert_eq!((status, json["id"].as_str()), (200, Some(payment_id.as_str())), "{shown}");
            }
            "apigw-v2-get-healthz.json" => {
                assert_eq!(status, 200, "{shown}");
                assert_eq!(response.headers["x-correlation-id"], "corr-healthz-1", "{shown}");
            }
            _ => unreachable!(),
        }
    }
    // The payment's events went through the outbox into the exchange (published after the
    // commit, by the binary itself).
    let stored = world.backends.documents.find(settle_shared::outbox::OUTBOX, &Default::default()).await.unwrap();
    assert!(stored.iter().any(|e| e["status"] == "published" && e["routing_key"] == "payment.succeeded"), "{stored:?}");
    payment.stop().await;
}

/// An admin request as API Gateway sends it: the client's address is `sourceIp`, whatever
/// a header claims.
fn admin_request(token: &str, source_ip: &str) -> Value {
    let (_, text) = sample("payment", "apigw-v2-get-healthz.json");
    let mut request: Value = serde_json::from_str(&text).unwrap();
    request["rawPath"] = json!("/v1/admin/revocations");
    request["requestContext"]["http"]["path"] = json!("/v1/admin/revocations");
    request["requestContext"]["http"]["method"] = json!("POST");
    request["requestContext"]["http"]["sourceIp"] = json!(source_ip);
    request["headers"]["authorization"] = json!(format!("Bearer {token}"));
    request["headers"]["content-type"] = json!("application/json");
    // A spoofed header: never the address the check uses.
    request["headers"]["x-forwarded-for"] = json!("127.0.0.1");
    request["body"] = json!(json!({"subject": unique("nobody")}).to_string());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_follow_the_admin_ranges_by_api_gateway_source_ip() {
    let token = dev_token("m_admin", &["admin"]);
    let path = Path::new("admin request");
    // Empty (the template's default): closed to everyone, saying why.
    let closed = World::new(&[("SETTLE_ADMIN_CIDRS", String::new())]).await;
    let payment = closed.start("payment").await;
    let (response, body) = api_response(path, invoke(&payment, &admin_request(&token, "127.0.0.1")).await);
    assert_eq!(response.status_code, 403, "{body}");
    assert!(body["type"].as_str().unwrap().ends_with("/admin_closed"), "{body}");
    assert!(body["detail"].as_str().unwrap().contains("SETTLE_ADMIN_CIDRS"), "{body}");
    payment.stop().await;
    // A range: its clients pass, others do not, whatever X-Forwarded-For says.
    let open = World::new(&[("SETTLE_ADMIN_CIDRS", "203.0.113.0/24".into())]).await;
    let payment = open.start("payment").await;
    let (response, body) = api_response(path, invoke(&payment, &admin_request(&token, "203.0.113.9")).await);
    assert!((200..300).contains(&response.status_code), "{body}");
    let (response, body) = api_response(path, invoke(&payment, &admin_request(&token, "198.51.100.7")).await);
    assert_eq!(response.status_code, 403, "{body}");
    assert!(body["type"].as_str().unwrap().ends_with("/address_not_allowed"), "{body}");
    payment.stop().await;
}

/// What a receiver was sent: each request's headers and body.
type Received = Arc<Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>>;

/// A webhook receiver: `/flaky` answers 500 to its first request and 200 after; every
/// request is kept.
async fn receiver() -> (Received, String) {
    let seen: Received = Arc::default();
    let kept = seen.clone();
    let app = axum::Router::new().route(
        "/flaky",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let mut seen = kept.lock().unwrap();
                seen.push((headers, body.to_vec()));
                if seen.len() == 1 {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (seen, format!("http://{addr}/flaky"))
}

/// Registers the endpoint the SQS sample's delivery id names, for `merchant`.
async fn register_endpoint(backends: &Backends, id: &str, merchant: &str, url: &str, secret: &str) {
    let sealer = SecretBox::new(&settle_shared::redact::Secret::new(settle_local::dev_keys::DEV_WEBHOOK_MASTER_KEY));
    let now = chrono::Utc::now().timestamp_millis();
    let record = EndpointRecord {
        id: id.to_string(),
        merchant_id: merchant.to_string(),
        url: url.to_string(),
        event_types: Vec::new(),
        description: None,
        enabled: true,
        disabled_reason: None,
        secrets: vec![StoredSecret { sealed: sealer.seal(secret), created: now, expires_at: None }],
        failing_since: None,
        created: now,
        updated: now,
    };
    let doc = serde_json::to_value(&record).unwrap().as_object().cloned().unwrap();
    backends.documents.insert(ENDPOINTS, doc).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_samples_under_the_lambda_runtime() {
    let world = World::new(&[]).await;
    world.backends.bus.declare(&world.backends.topology).await.unwrap();
    let notify = world.start("notify").await;
    let (path, text) = sample("notify", "rmq-payment-succeeded.json");
    let rmq: RabbitMqEvent = parse_round_trip(&path, &text);
    let event: Value = {
        let data = rmq.messages_by_queue.values().next().unwrap()[0].data.clone().unwrap();
        serde_json::from_slice(&base64::Engine::decode(&base64::engine::general_purpose::STANDARD, data).unwrap())
            .unwrap()
    };
    let (_, retry_text) = sample("notify", "sqs-webhook-retry.json");
    let retry: SqsEvent = parse_round_trip(&path, &retry_text);
    let retried: Value = serde_json::from_str(retry.records[0].body.as_deref().unwrap()).unwrap();
    let delivery_id = retried["delivery_id"].as_str().unwrap();
    let (event_id, endpoint_id) = delivery_id.split_once(':').unwrap();
    assert_eq!(event_id, event["id"], "the SQS sample retries the delivery the aws:rmq sample starts");
    let (seen, url) = receiver().await;
    let secret = settle_shared::webhook_signature::generate_secret();
    register_endpoint(&world.backends, endpoint_id, event["merchantid"].as_str().unwrap(), &url, &secret).await;

    // aws:rmq: the first attempt reaches the receiver, signed; it answers 500.
    let answer = invoke(&notify, &serde_json::from_str(&text).unwrap()).await;
    let deliveries = &answer["outcomes"][0][1]["deliveries"];
    assert_eq!(deliveries[0]["state"], "retrying", "{answer}");
    // SQS: the retry the sample names is attempted, and delivered.
    let answer = invoke(&notify, &serde_json::from_str(&retry_text).unwrap()).await;
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    let stored = world.backends.documents.get(settle_shared::webhooks::DELIVERIES, delivery_id).await.unwrap().unwrap();
    assert_eq!(stored["status"], "delivered", "{stored:?}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one failed attempt, then the retry");
    for (headers, body) in &seen {
        let header = |name: &str| headers[name].to_str().unwrap().to_string();
        assert_eq!(header("webhook-id"), event_id);
        let timestamp: i64 = header("webhook-timestamp").parse().unwrap();
        let now = chrono::Utc::now().timestamp();
        settle_shared::webhook_signature::verify(
            &secret,
            &header("webhook-signature"),
            event_id,
            timestamp,
            body,
            now,
            300,
        )
        .expect("the signature verifies with the endpoint's secret");
    }

    // EventBridge schedule: the outbox relay publishes what is pending.
    let mut queue = world.backends.bus.subscribe(&world.backends.topology.queue, 10).await.unwrap();
    let pending = unique("evt");
    let created = chrono::Utc::now().timestamp_millis() - 60_000;
    let record = json!({"_id": pending, "status": "pending", "routing_key": "payment.succeeded",
        "body": json!({"id": pending}).to_string(), "created": created});
    world.backends.documents.insert(settle_shared::outbox::OUTBOX, record.as_object().cloned().unwrap()).await.unwrap();
    let (path, text) = sample("notify", "eventbridge-relay-outbox.json");
    let schedule: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (schedule["source"].as_str(), schedule["detail-type"].as_str()),
        (Some("aws.events"), Some("Scheduled Event")),
        "{}",
        path.display()
    );
    let answer = invoke(&notify, &schedule).await;
    assert_eq!((answer["due"].as_u64(), answer["published"].as_u64()), (Some(1), Some(1)), "{answer}");
    let relayed =
        tokio::time::timeout(std::time::Duration::from_secs(5), queue.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(relayed.message_id.as_deref(), Some(pending.as_str()));

    // CloudFormation: the custom resource declares this world's topology and answers the
    // (stand-in) pre-signed URL.
    let (path, text) = sample("notify", "cfn-broker-topology-create.json");
    let mut request: Value = serde_json::from_str(&text).unwrap();
    let answers = Arc::new(Mutex::new(Vec::new()));
    request["ResponseURL"] = json!(settle_local::emulator::response_url_stand_in(answers.clone()).await.unwrap());
    request["ResourceProperties"]["Exchange"] = json!(world.backends.topology.exchange);
    request["ResourceProperties"]["Queue"] = json!(world.backends.topology.queue);
    let answer = invoke(&notify, &request).await;
    assert_eq!(answer["status"], "SUCCESS", "{}: {answer}", path.display());
    let sent = answers.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        (sent[0]["Status"].as_str(), sent[0]["RequestId"].as_str()),
        (Some("SUCCESS"), request["RequestId"].as_str())
    );

    // Every notify sample was run above.
    let run = [
        "cfn-broker-topology-create.json",
        "eventbridge-relay-outbox.json",
        "rmq-payment-succeeded.json",
        "sqs-webhook-retry.json",
    ];
    let names: Vec<String> =
        samples("notify").iter().map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, run);
    notify.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_ingest_samples_under_the_lambda_runtime() {
    let world = World::new(&[]).await;
    world.backends.bus.declare(&world.backends.topology).await.unwrap();
    let ingest = world.start("csv-ingest").await;
    for (path, text) in samples("csv-ingest") {
        let event: S3Event = parse_round_trip(&path, &text);
        let key = settle_csv_ingest::object_key(&event.records[0]);
        // The object the sample names exists before the invocation: one settlement row for
        // a payment Settle does not know.
        let header = settle_csv_ingest::row::HEADER.join(",");
        let file =
            format!("{header}\n{},pay_zzz,gw-1,m_123,charge,10.00,USD,0.30,9.70,2026-11-27T06:00:00Z\n", unique("s"));
        world.backends.objects.put(&key, file.into_bytes(), "text/csv").await.unwrap();
        let answer = invoke(&ingest, &serde_json::from_str(&text).unwrap()).await;
        let shown = format!("{}: {answer}", path.display());
        let outcome = &answer["outcomes"][0];
        assert_eq!(outcome["key"], key.as_str(), "{shown}");
        assert!(answer.to_string().contains("unknown_payment"), "{shown}");
    }
    ingest.stop().await;
}

/// `settle invoke` as a user runs it: the sample as it is, the default names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_invoke_runs_a_sample_and_answers_cloudformation_locally() {
    let (_, healthz) = sample("payment", "apigw-v2-get-healthz.json");
    let printed = settle_local::emulator::invoke_sample("payment", &healthz).await.unwrap_or_else(|e| panic!("{e:#}"));
    let answer: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(answer["statusCode"], 200, "{printed}");
    let (_, create) = sample("notify", "cfn-broker-topology-create.json");
    let printed = settle_local::emulator::invoke_sample("notify", &create).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        printed.contains("CloudFormation would receive") && printed.contains("\"Status\": \"SUCCESS\""),
        "{printed}"
    );
    let unknown = settle_local::emulator::invoke_sample("billing", &healthz).await.unwrap_err().to_string();
    assert!(unknown.contains("unknown function 'billing'"), "{unknown}");
}
