//! EMF metric lines: what a payment, a refund, a replay and a rate-limited request write,
//! parsed as CloudWatch would.

use crate::helpers::*;
use axum::http::{Method, StatusCode};
use serde_json::json;
use settle_shared::metrics::{capture, captured_with};

#[tokio::test]
async fn payments_refunds_replays_and_limits_are_counted_in_emf() {
    let _broker = BROKER.read().await;
    let lines = capture();
    let app = TestApp::with(&[("SETTLE_RATE_LIMIT_TOKENS", "2/60s".to_string())]).await;
    let (merchant_id, t) = merchant();

    let paid = app.pay(&t, "4242424242424242", 1000, "automatic").await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text);
    let id = paid.id();
    let payments = captured_with(&lines, "payment_id", &id);
    let [payment] = &payments[..] else { panic!("one Payments record for {id}: {payments:?}") };
    assert_eq!(payment["Payments"], 1.0);
    assert_eq!((payment["Outcome"].as_str(), payment["Currency"].as_str()), (Some("succeeded"), Some("USD")));
    let directive = &payment["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Dimensions"], json!([["Function", "Outcome", "Currency"]]));

    let refund = app.post(&format!("/v1/payments/{id}/refunds"), &t, json!({"amount": 250})).await;
    assert_eq!(refund.status, StatusCode::CREATED, "{}", refund.text);
    let refunds = captured_with(&lines, "refund_id", &refund.id());
    let [refunded] = &refunds[..] else { panic!("one Refunds record: {refunds:?}") };
    assert_eq!((refunded["Refunds"].as_f64(), refunded["RefundAmount"].as_f64()), (Some(1.0), Some(250.0)));

    let key = uuid::Uuid::new_v4().to_string();
    let body = json!({"amount": 1, "currency": "USD", "token": app.card_token(&t, "4242424242424242").await});
    for _ in 0..2 {
        let r = app.send(Method::POST, "/v1/payments", &t, Some(&key), Some(body.clone())).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    assert_eq!(captured_with(&lines, "idempotency_key", &key).len(), 1, "the second send is one replay");

    // The token limit is 2 a minute for this merchant; card_token above used one.
    let mut limited = 0;
    for _ in 0..3 {
        let r = app
            .post(
                "/v1/tokens",
                &t,
                json!({"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}),
            )
            .await;
        limited += usize::from(r.status == StatusCode::TOO_MANY_REQUESTS);
    }
    let records = captured_with(&lines, "limited", &merchant_id);
    assert!(limited >= 2, "{limited} requests limited");
    assert_eq!(records.len(), limited);
    assert!(records.iter().all(|r| r["RateLimited"] == 1.0 && r["Class"] == "tokens"));
}
