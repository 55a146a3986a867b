//! Every sample event in `events/` parses into the type its function receives,
//! round-trips through JSON, and runs through its handler on the real services.

use crate::stack::config;
use aws_lambda_events::event::apigw::ApiGatewayV2httpRequest;
use aws_lambda_events::event::rabbitmq::RabbitMqEvent;
use aws_lambda_events::event::s3::S3Event;
use http_body_util::BodyExt;
use settle_csv_ingest::{Ingestor, ObjectOutcome};
use settle_notify::Notifier;
use settle_shared::config::Backend;
use settle_shared::ports::objects::ObjectStore;
use settle_shared::Backends;
use std::path::{Path, PathBuf};
use tower::ServiceExt;

fn samples(function: &str) -> Vec<(PathBuf, String)> {
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

async fn real_backends(bucket: &str) -> Backends {
    let config = config(Backend::Real, &[("SETTLE_BUCKET", bucket.to_string())]);
    let backends = Backends::connect(&config).await.unwrap();
    if let ObjectStore::S3(s3) = &backends.objects {
        s3.ensure_bucket().await.unwrap();
    }
    backends.bus.declare(&backends.topology).await.unwrap();
    backends
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_samples_run_through_the_router_as_lambda_http_would() {
    let backends = real_backends("settle-settlements").await;
    let mut config = config(Backend::Real, &[]);
    settle_local::dev_keys::apply(&mut config);
    let token = settle_local::dev_keys::mint(&config, "m_123", Some("m_123"), &["merchant".into()], 600).unwrap();
    let app = settle_payment::router(settle_payment::AppState::new(config, backends).unwrap());
    let files = samples("payment");
    let names: Vec<String> = files.iter().map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    let mut listed: Vec<&str> = PAYMENT_SEQUENCE.to_vec();
    listed.sort_unstable();
    assert_eq!(names, listed, "every payment sample runs, in a stated order");

    let (mut card, mut payment) = (String::new(), String::new());
    for name in PAYMENT_SEQUENCE {
        let (path, text) = files.iter().find(|(p, _)| p.ends_with(name)).unwrap();
        let values =
            [("SETTLE_TOKEN", token.as_str()), ("CARD_TOKEN", card.as_str()), ("PAYMENT_ID", payment.as_str())];
        let text = settle_local::sample_events::fill(text, &values).unwrap();
        let request: ApiGatewayV2httpRequest = parse_round_trip(path, &text);
        let expected_path = request.raw_path.clone().unwrap_or_default();
        let http_request: http::Request<lambda_http::Body> =
            lambda_http::request::LambdaRequest::ApiGatewayV2(request).into();
        assert_eq!(http_request.uri().path(), expected_path);
        let response = app.clone().oneshot(http_request).await.unwrap();
        let status = response.status();
        let content_type = response.headers().get("content-type").cloned();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let shown = format!("{}: {status} {}", path.display(), String::from_utf8_lossy(&body));
        match *name {
            "apigw-v2-bad-request.json" => {
                assert!(matches!(status.as_u16(), 400 | 422), "{shown}");
                assert_eq!(content_type.unwrap(), "application/problem+json", "{shown}");
                assert_eq!(json["field"], "amount", "{shown}");
            }
            "apigw-v2-create-token.json" => {
                assert_eq!(status, 201, "{shown}");
                card = json["id"].as_str().unwrap().to_string();
            }
            "apigw-v2-create-payment.json" => {
                assert_eq!((status.as_u16(), json["status"].as_str()), (201, Some("succeeded")), "{shown}");
                payment = json["id"].as_str().unwrap().to_string();
            }
            "apigw-v2-refund-payment.json" => {
                assert_eq!((status.as_u16(), json["amount"].as_i64()), (201, Some(500)), "{shown}");
            }
            "apigw-v2-get-payment.json" => {
                assert_eq!((status.as_u16(), json["id"].as_str()), (200, Some(payment.as_str())), "{shown}");
            }
            _ => assert!(status.is_success(), "{shown}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_samples_are_accepted_by_the_notifier() {
    let mut config = config(Backend::Real, &[]);
    settle_local::dev_keys::apply(&mut config);
    let mut backends = real_backends(&crate::stack::unique("it-bucket")).await;
    let sdk = backends.sdk.clone().unwrap();
    let queue =
        settle_shared::ports::delay_queue::SqsQueue::ensure(&sdk, &crate::stack::unique("it-retries")).await.unwrap();
    backends.retry_queue = Some(settle_shared::ports::delay_queue::DelayQueue::Sqs(queue));
    let topology = backends.topology.clone();
    let notifier = Notifier::new(&config, backends).unwrap();
    for (path, text) in samples("notify") {
        let mut payload: serde_json::Value = serde_json::from_str(&text).unwrap();
        if payload.get("ResponseURL").is_some() {
            // CloudFormation's pre-signed URL is not reachable here: a local stand-in.
            payload["ResponseURL"] = serde_json::json!(crate::stack::put_receiver().await);
            payload["ResourceProperties"]["Exchange"] = serde_json::json!(topology.exchange);
            payload["ResourceProperties"]["Queue"] = serde_json::json!(topology.queue);
            let answer = settle_notify::dispatch(&notifier, payload).await.unwrap();
            assert_eq!(answer["status"], "SUCCESS", "{}: {answer}", path.display());
            continue;
        }
        if payload.get("source").is_some_and(|s| s == "aws.events") {
            let answer = settle_notify::dispatch(&notifier, payload).await.unwrap();
            assert!(answer["summary"].as_str().unwrap().starts_with("outbox relay"), "{}: {answer}", path.display());
            continue;
        }
        // One function, two triggers: Amazon MQ and the SQS retry queue.
        let answer = settle_notify::dispatch(&notifier, payload.clone()).await.unwrap();
        if payload.get("rmqMessagesByQueue").is_some() {
            let _: RabbitMqEvent = parse_round_trip(&path, &text);
            let outcomes = answer["outcomes"].as_array().unwrap();
            assert!(!outcomes.is_empty(), "{}", path.display());
            for outcome in outcomes {
                assert_eq!(outcome[1]["outcome"], "accepted", "{}: {outcome}", path.display());
            }
        } else {
            let _: aws_lambda_events::event::sqs::SqsEvent = parse_round_trip(&path, &text);
            // The sample names a delivery this database does not have: handled, not failed.
            assert_eq!(answer["batchItemFailures"], serde_json::json!([]), "{}: {answer}", path.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_ingest_samples_reach_their_object() {
    // The samples name the default bucket, so that they also work with `cargo lambda invoke`.
    let backends = real_backends("settle-settlements").await;
    let ingestor = Ingestor::new(backends.clone());
    for (path, text) in samples("csv-ingest") {
        let event: S3Event = parse_round_trip(&path, &text);
        let key = settle_csv_ingest::object_key(&event.records[0]);
        backends.objects.put(&key, b"settlement_id\n".to_vec(), "text/csv").await.unwrap();
        let report = ingestor.handle_s3_event(event).await.unwrap();
        assert!(
            matches!(&report.outcomes[0], ObjectOutcome::Received { key: k, .. } if *k == key),
            "{}: {:?}",
            path.display(),
            report.outcomes
        );
    }
}
