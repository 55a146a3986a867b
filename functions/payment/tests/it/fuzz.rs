//! Hostile bodies, generated: arbitrary JSON (with the real field names, operator-shaped
//! keys and card numbers among them) and arbitrary bytes, sent to every POST route. No
//! answer is a 5xx, every error is problem+json, and no answer echoes a card number.

use crate::helpers::*;
use axum::body::Body;
use axum::http::{Method, Request};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

const CARD: &str = "4242424242424242";

const ROUTES: &[&str] = &[
    "/v1/tokens",
    "/v1/payments",
    "/v1/payments/{id}/confirm",
    "/v1/payments/{id}/capture",
    "/v1/payments/{id}/cancel",
    "/v1/payments/{id}/refunds",
    "/v1/webhook_endpoints",
    "/v1/gateway/webhooks",
    "/v1/admin/revocations",
];

fn field_name() -> impl Strategy<Value = String> {
    let known = [
        "amount",
        "currency",
        "token",
        "number",
        "exp_month",
        "exp_year",
        "cvc",
        "holder_name",
        "confirm",
        "capture_method",
        "metadata",
        "description",
        "amount_to_capture",
        "reason",
        "url",
        "event_types",
        "$gt",
        "$where",
        "__proto__",
        "jti",
        "sub",
    ];
    prop_oneof![3 => prop::sample::select(known.to_vec()).prop_map(str::to_string), 1 => ".{0,12}"]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        prop::sample::select(vec![CARD, "USD", "usd", "XXX", "-1", "1e400", "12.50", "manual", "automatic"])
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(field_name(), inner, 0..7).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid body for `route`, which the strategies below then break one field at a time.
fn template(route: &str, card: &str) -> Value {
    match route {
        "/v1/tokens" => json!({"number": CARD, "exp_month": 12, "exp_year": 2031, "cvc": "123", "holder_name": "A B"}),
        "/v1/payments" => json!({"amount": 1500, "currency": "USD", "token": card, "confirm": true,
            "capture_method": "manual", "description": "fuzz", "metadata": {"k": "v"}}),
        "/v1/payments/{id}/capture" => json!({"amount_to_capture": 100}),
        "/v1/payments/{id}/refunds" => json!({"amount": 100, "reason": "requested_by_customer"}),
        "/v1/webhook_endpoints" => json!({"url": "https://example.com/hook", "event_types": ["payment.succeeded"]}),
        _ => json!({}),
    }
}

/// Near-valid bodies (one field replaced, dropped, or an unknown one added), arbitrary
/// objects with the real field names, arbitrary JSON, and arbitrary bytes.
fn body(route: &'static str, card: String) -> impl Strategy<Value = Vec<u8>> {
    let base = template(route, &card);
    let keys: Vec<String> = base.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    let near_valid = (
        prop::sample::select(keys.clone().into_iter().chain([String::new()]).collect::<Vec<_>>()),
        0..3u8,
        field_name(),
        json_value(),
    )
        .prop_map(move |(key, how, extra, value)| {
            let mut body = base.clone();
            let object = body.as_object_mut().unwrap();
            match how {
                0 if !key.is_empty() => {
                    object.insert(key, value);
                }
                1 => {
                    object.remove(&key);
                }
                _ => {
                    object.insert(extra, value);
                }
            }
            body.to_string().into_bytes()
        });
    prop_oneof![
        4 => near_valid,
        2 => prop::collection::btree_map(field_name(), json_value(), 0..7)
            .prop_map(|m| Value::Object(m.into_iter().collect()).to_string().into_bytes()),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

#[test]
fn generated_hostile_bodies_never_get_a_5xx() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let unlimited = "1000000/60s".to_string();
    // Held throughout: a test that stops the broker must not do so under this one.
    let _broker = runtime.block_on(BROKER.read());
    let app = runtime.block_on(async {
        TestApp::with(&[
            ("SETTLE_RATE_LIMIT_MERCHANT", unlimited.clone()),
            ("SETTLE_RATE_LIMIT_IP", unlimited.clone()),
            ("SETTLE_RATE_LIMIT_TOKENS", unlimited.clone()),
            ("SETTLE_RATE_LIMIT_REFUNDS", unlimited.clone()),
        ])
        .await
    });
    let (merchant, _) = merchant();
    let token = sign(&claims(&merchant, Some(&merchant), &["merchant", "admin"]));
    let payment = runtime.block_on(app.pay(&token, CARD, 5000, "manual")).id();
    assert!(!payment.is_empty());

    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<u16, u32>::new());
    let mut runner = TestRunner::new(Config { cases: 400, failure_persistence: None, ..Config::default() });
    let card_token = runtime.block_on(app.card_token(&token, CARD));
    let strategy = prop::sample::select(ROUTES.to_vec())
        .prop_flat_map(move |route| (Just(route), body(route, card_token.clone()), prop::bool::weighted(0.9)));
    let outcome = runner.run(&strategy, |(route, body, declared_json)| {
        let path = route.replace("{id}", &payment);
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(&path)
            .header("authorization", format!("Bearer {token}"))
            .header("idempotency-key", uuid::Uuid::new_v4().to_string());
        if declared_json {
            request = request.header("content-type", "application/json");
        }
        let reply = runtime.block_on(app.call(request.body(Body::from(body.clone())).unwrap()));
        let shown = format!("{path} {:?} -> {} {}", String::from_utf8_lossy(&body), reply.status, reply.text);
        *statuses.lock().unwrap().entry(reply.status.as_u16()).or_default() += 1;
        prop_assert!(reply.status.as_u16() < 500, "{}", shown);
        // Only the gateway's route authenticates by signature, which these bodies lack.
        prop_assert!(reply.status != 401 || route == "/v1/gateway/webhooks", "{}", shown);
        if reply.status.is_client_error() {
            let content_type = reply.headers.get("content-type").map(|v| v.to_str().unwrap_or_default().to_string());
            prop_assert_eq!(content_type.as_deref(), Some("application/problem+json"), "{}", shown);
            prop_assert_eq!(&reply.json["status"], &json!(reply.status.as_u16()), "{}", shown);
        }
        prop_assert!(!reply.text.contains(CARD), "{}", shown);
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    // Not vacuous: the bodies got past authentication into the handlers, and some of them
    // were valid enough to succeed.
    let statuses = statuses.into_inner().unwrap();
    eprintln!("fuzz: statuses {statuses:?}");
    assert!(statuses.keys().any(|s| *s == 400), "{statuses:?}");
    assert!(statuses.keys().any(|s| (200..300).contains(s)), "{statuses:?}");
}
