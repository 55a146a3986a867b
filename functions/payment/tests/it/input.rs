//! Hostile and malformed input: always a problem document naming the field, never a 5xx.

use crate::helpers::*;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;

#[tokio::test]
async fn bad_bodies_get_problem_documents_naming_the_field() {
    let _broker = BROKER.read().await;
    let app = TestApp::new().await;
    let (_, t) = merchant();
    let tok = app.card_token(&t, "4242424242424242").await;
    let cases = [
        (json!({"amount": 100, "currency": "USD", "token": tok, "surprise": 1}), "surprise"),
        (json!({"amount": 0, "currency": "USD", "token": tok}), "amount"),
        (json!({"amount": 10.5, "currency": "USD", "token": tok}), "amount"),
        (json!({"amount": "100", "currency": "USD", "token": tok}), "amount"),
        (json!({"amount": 100, "currency": "XYZ", "token": tok}), "currency"),
        (json!({"amount": 100, "currency": "USD", "token": {"$gt": ""}}), "token"),
        (json!({"amount": 100, "currency": "USD", "token": "tok_00000000000000000000000000000000"}), "token"),
        (json!({"amount": 100, "currency": "USD"}), "token"),
        (json!({"amount": 100, "currency": "USD", "token": tok, "capture_method": "later"}), "capture_method"),
        (json!({"amount": 100, "currency": "USD", "token": tok, "metadata": {"a.b": "x"}}), "metadata"),
        (json!({"amount": 100, "currency": "USD", "token": tok, "metadata": {"k": 5}}), "metadata.k"),
        (
            json!({"amount": 100, "currency": "USD", "token": tok,
                "metadata": (0..21).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}),
            "metadata",
        ),
        (json!({"amount": 9_007_199_254_740_993_i64, "currency": "USD", "token": tok}), "amount"),
    ];
    for (body, field) in cases {
        let r = app.post("/v1/payments", &t, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
        assert_eq!(r.headers["content-type"], "application/problem+json");
        assert_eq!(r.json["field"], field, "{body}: {}", r.text);
    }

    let key = || uuid::Uuid::new_v4().to_string();
    let raw = |ct: &str, body: Body| {
        Request::post("/v1/payments")
            .header("authorization", format!("Bearer {t}"))
            .header("idempotency-key", key())
            .header("content-type", ct)
            .body(body)
            .unwrap()
    };
    assert_eq!(app.call(raw("text/plain", Body::from("{}"))).await.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(app.call(raw("application/json", Body::from("{\"amount\":"))).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        app.call(raw("application/json", Body::from(vec![b' '; 70 * 1024]))).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(app.call(raw("application/json", Body::from(vec![0xff, 0xfe]))).await.status, StatusCode::BAD_REQUEST);

    // Arrays are not objects, even where every field has a default.
    let paid = app.pay(&t, "4242424242424242", 1000, "automatic").await.id();
    for body in [json!([]), json!([500]), json!("refund")] {
        let r = app.post(&format!("/v1/payments/{paid}/refunds"), &t, body.clone()).await;
        assert_eq!((r.status, r.json["field"].as_str()), (StatusCode::BAD_REQUEST, Some("body")), "{body}: {}", r.text);
    }
    // Overflowing numbers in headers and bodies are errors, not panics.
    let overflow = Request::post("/v1/gateway/webhooks")
        .header("content-type", "application/json")
        .header("settle-gateway-timestamp", i64::MIN.to_string())
        .header("settle-gateway-signature", "v1=00")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(app.call(overflow).await.status, StatusCode::UNAUTHORIZED);
    let admin = sign(&claims("root", None, &["admin"]));
    for expires_at in [i64::MIN, i64::MAX, 0] {
        let r = app.post("/v1/admin/revocations", &admin, json!({"jti": "j", "expires_at": expires_at})).await;
        assert_eq!((r.status, r.json["field"].as_str()), (StatusCode::BAD_REQUEST, Some("expires_at")), "{expires_at}");
    }

    // Ids are parsed, never passed through.
    for path in ["/v1/payments/pay_%7B%22%24gt%22%3A%22%22%7D", "/v1/payments/x", "/v1/payments/../../etc"] {
        let r = app.get(path, &t).await;
        assert!(r.status == StatusCode::NOT_FOUND, "{path}: {}", r.status);
    }
    let r = app.get("/v1/payments?limit=1000", &t).await;
    assert_eq!((r.status, r.json["field"].as_str()), (StatusCode::BAD_REQUEST, Some("limit")));
    let r = app.get("/v1/payments?status[$ne]=x", &t).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn card_numbers_never_come_back() {
    let _broker = BROKER.read().await;
    let app = TestApp::new().await;
    let (_, t) = merchant();
    let cases = [
        (json!({"number": "4242424242424241", "exp_month": 12, "exp_year": 2030, "cvc": "123"}), "number"),
        (json!({"number": 4242424242424242_u64, "exp_month": 12, "exp_year": 2030, "cvc": "123"}), "number"),
        (json!({"number": "4242424242424242", "exp_month": 13, "exp_year": 2030, "cvc": "123"}), "exp_month"),
        (json!({"number": "4242424242424242", "exp_month": 1, "exp_year": 2020, "cvc": "123"}), "exp_year"),
        (json!({"number": "4242424242424242", "exp_month": 1, "exp_year": 2030, "cvc": "12"}), "cvc"),
        (json!({"number": "378282246310005", "exp_month": 1, "exp_year": 2030, "cvc": "123"}), "cvc"),
    ];
    for (body, field) in cases {
        let r = app.post("/v1/tokens", &t, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.json["field"], field);
        assert!(!r.text.contains("424242424242") && !r.text.contains("37828224631"), "echoed: {}", r.text);
    }
    let ok = app.post("/v1/tokens", &t, json!({"number": "4242 4242 4242 4242", "exp_month": 12, "exp_year": 2030, "cvc": "123", "holder_name": "Ada"})).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text);
    assert_eq!((ok.json["brand"].as_str(), ok.json["last4"].as_str()), (Some("visa"), Some("4242")));
    assert!(!ok.text.contains("424242424242") && !ok.text.contains("\"123\""));
    // Same card, same fingerprint; nothing of the number in the database.
    let again = app.card_token(&t, "4242424242424242").await;
    let stored = app.state.backends.documents.get("tokens", &again).await.unwrap().unwrap();
    assert_eq!(stored["card"]["fingerprint"], ok.json["fingerprint"]);
    let dump = serde_json::to_string(&stored).unwrap();
    assert!(!dump.contains("424242424242") && !dump.contains("cvc"), "{dump}");
}
