//! Authentication, roles, revocation and the admin allowlist.

use crate::helpers::*;
use axum::http::{Method, StatusCode};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

#[tokio::test]
async fn tokens_are_verified_strictly() {
    let _broker = BROKER.read().await;
    let app = TestApp::new().await;
    let (m, good) = merchant();
    assert_eq!(app.get("/v1/payments", &good).await.status, StatusCode::OK);
    // Roles as one space-separated string, as some identity providers issue them.
    let mut spaced = claims(&m, Some(&m), &[]);
    spaced["roles"] = json!("merchant support");
    assert_eq!(app.get("/v1/payments", &sign(&spaced)).await.status, StatusCode::OK);

    // No token: 401 with a Bearer challenge and a problem document.
    let r = app.call(axum::http::Request::get("/v1/payments").body(axum::body::Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    assert_eq!(r.headers["content-type"], "application/problem+json");

    let now = chrono::Utc::now().timestamp();
    let mut forged = Vec::new();
    // Signed with another key.
    forged.push(
        encode(
            &Header::new(Algorithm::HS256),
            &claims(&m, Some(&m), &["merchant"]),
            &EncodingKey::from_secret(b"not-the-secret-not-the-secret-0000"),
        )
        .unwrap(),
    );
    // Expired, not yet valid, wrong issuer, wrong audience, future iat, missing jti.
    for (field, value) in [
        ("exp", json!(now - 3600)),
        ("nbf", json!(now + 3600)),
        ("iss", json!("evil")),
        ("aud", json!("other")),
        ("iat", json!(now + 3600)),
    ] {
        let mut c = claims(&m, Some(&m), &["merchant"]);
        c[field] = value;
        forged.push(sign(&c));
    }
    let mut no_jti = claims(&m, Some(&m), &["merchant"]);
    no_jti.as_object_mut().unwrap().remove("jti");
    forged.push(sign(&no_jti));
    // A lifetime beyond the maximum.
    let mut long = claims(&m, Some(&m), &["merchant"]);
    long["exp"] = json!(now + 30 * 86_400);
    forged.push(sign(&long));
    // alg=none: header and claims of a real token, no signature.
    let parts: Vec<&str> = good.split('.').collect();
    forged.push(format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]));
    // Garbage.
    forged.push("not.a.jwt".into());
    for token in forged {
        let r = app.get("/v1/payments", &token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "accepted a bad token: {}", r.text);
        assert!(r.headers.contains_key("www-authenticate"));
    }
}

/// The guard wraps exactly the authenticated routes: each of them, for every method it
/// serves, answers a request without a token with the Bearer challenge, and no public
/// route does. (The router layers the guard between the two groups of routes; a route
/// added on the wrong side of it would be open, or closed to its callers.)
#[tokio::test]
async fn the_guard_covers_every_authenticated_route_and_no_public_one() {
    let _broker = BROKER.read().await;
    let app = TestApp::new().await;
    let authenticated = [
        (Method::POST, "/v1/tokens"),
        (Method::POST, "/v1/payments"),
        (Method::GET, "/v1/payments"),
        (Method::GET, "/v1/payments/pay_x"),
        (Method::POST, "/v1/payments/pay_x/refunds"),
        (Method::GET, "/v1/payments/pay_x/refunds"),
        (Method::GET, "/v1/payments/pay_x/refunds/re_x"),
        (Method::POST, "/v1/payments/pay_x/capture"),
        (Method::POST, "/v1/admin/revocations"),
        (Method::POST, "/v1/webhook_endpoints"),
        (Method::GET, "/v1/webhook_endpoints"),
        (Method::GET, "/v1/webhook_endpoints/we_x"),
        (Method::PATCH, "/v1/webhook_endpoints/we_x"),
        (Method::DELETE, "/v1/webhook_endpoints/we_x"),
        (Method::POST, "/v1/webhook_endpoints/we_x/rotate_secret"),
        (Method::GET, "/v1/webhook_endpoints/we_x/attempts"),
        (Method::POST, "/v1/webhook_endpoints/we_x/resend"),
        (Method::POST, "/v1/webhook_endpoints/we_x/recover"),
        (Method::GET, "/v1/events/evt_x/attempts"),
        (Method::GET, "/v1/settlements/summary"),
    ];
    let public = [
        (Method::GET, "/healthz"),
        (Method::GET, "/openapi.json"),
        (Method::GET, "/v1/payments/pay_x/3ds"),
        (Method::POST, "/v1/payments/pay_x/3ds/approve"),
        (Method::POST, "/v1/gateway/webhooks"),
        (Method::GET, "/no/such/route"),
    ];
    let without_token = |method: &Method, path: &str| {
        axum::http::Request::builder()
            .method(method.clone())
            .uri(path)
            .header("content-type", "application/json")
            .body(axum::body::Body::from("{}"))
            .unwrap()
    };
    for (method, path) in &authenticated {
        let r = app.call(without_token(method, path)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {path} answered without a token: {}", r.text);
        assert!(r.headers.get("www-authenticate").is_some_and(|v| v.to_str().unwrap().starts_with("Bearer")));
    }
    for (method, path) in &public {
        let r = app.call(without_token(method, path)).await;
        assert!(!r.headers.contains_key("www-authenticate"), "{method} {path} asked for a token: {}", r.text);
        assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path} is not routed: {}", r.text);
    }
}

#[tokio::test]
async fn es256_tokens_from_a_standard_library_are_accepted() {
    let _broker = BROKER.read().await;
    let key = rcgen::KeyPair::generate().unwrap();
    let app =
        TestApp::with(&[("SETTLE_JWT_ALGORITHM", "ES256".into()), ("SETTLE_JWT_KEY", key.public_key_pem())]).await;
    let (m, _) = merchant();
    let token = encode(
        &Header::new(Algorithm::ES256),
        &claims(&m, Some(&m), &["merchant"]),
        &EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(app.get("/v1/payments", &token).await.status, StatusCode::OK);
    // The HS256 confusion attack: the public key used as an HMAC secret.
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &claims(&m, Some(&m), &["merchant"]),
        &EncodingKey::from_secret(key.public_key_pem().as_bytes()),
    )
    .unwrap();
    assert_eq!(app.get("/v1/payments", &confused).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn roles_decide_who_reads_and_who_moves_money() {
    let _broker = BROKER.read().await;
    let app = TestApp::new().await;
    let (_, alice) = merchant();
    let (_, bob) = merchant();
    let payment = app.pay(&alice, "4242424242424242", 1000, "automatic").await;
    let path = format!("/v1/payments/{}", payment.id());

    // Another merchant: 404, not 403, so ids cannot be probed.
    assert_eq!(app.get(&path, &bob).await.status, StatusCode::NOT_FOUND);
    // Support reads across merchants but cannot move money.
    let support = sign(&claims("agent-7", None, &["support"]));
    assert_eq!(app.get(&path, &support).await.status, StatusCode::OK);
    let r = app.post("/v1/payments", &support, json!({"amount": 1, "currency": "USD", "token": "tok_x"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json["required_role"], "merchant");
    // A merchant is not an admin.
    let r = app.post("/v1/admin/revocations", &alice, json!({"subject": "x"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json["required_role"], "admin");
}

#[tokio::test]
async fn revoked_sessions_are_refused() {
    let _broker = BROKER.read().await;
    let app = TestApp::new().await;
    let admin = sign(&claims("root", None, &["admin"]));
    let (m, _) = merchant();
    let c = claims(&m, Some(&m), &["merchant"]);
    let token = sign(&c);
    assert_eq!(app.get("/v1/payments", &token).await.status, StatusCode::OK);

    // One token, by jti.
    let r = app.post("/v1/admin/revocations", &admin, json!({"jti": c["jti"], "expires_at": c["exp"]})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let refused = app.get("/v1/payments", &token).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(refused.text.contains("revoked"));
    // Another token of the same subject still works, until the subject is revoked.
    let other = merchant_token(&m);
    assert_eq!(app.get("/v1/payments", &other).await.status, StatusCode::OK);
    app.post("/v1/admin/revocations", &admin, json!({"subject": m})).await;
    assert_eq!(app.get("/v1/payments", &other).await.status, StatusCode::UNAUTHORIZED);
    // Everything a role was issued before now.
    let agent = sign(&claims("agent-1", None, &["support"]));
    assert_eq!(app.get("/v1/payments", &agent).await.status, StatusCode::OK);
    app.post("/v1/admin/revocations", &admin, json!({"role": "support"})).await;
    assert_eq!(app.get("/v1/payments", &agent).await.status, StatusCode::UNAUTHORIZED);
    // Tokens issued after the cut-off are fine (iat is in seconds: step past it).
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(app.get("/v1/payments", &sign(&claims("agent-2", None, &["support"]))).await.status, StatusCode::OK);
}

#[tokio::test]
async fn admin_routes_check_the_client_address() {
    let _broker = BROKER.read().await;
    let app = TestApp::with(&[("SETTLE_ADMIN_CIDRS", "10.0.0.0/8".into())]).await;
    let admin = sign(&claims("root", None, &["admin"]));
    // The test client is 127.0.0.1, outside 10.0.0.0/8; a forged header changes nothing.
    let key = uuid::Uuid::new_v4().to_string();
    let mut req = axum::http::Request::post("/v1/admin/revocations")
        .header("authorization", format!("Bearer {admin}"))
        .header("content-type", "application/json")
        .header("x-forwarded-for", "10.1.2.3")
        .header("idempotency-key", key);
    req = req.header("x-real-ip", "10.1.2.3");
    let r = app.call(req.body(axum::body::Body::from(r#"{"subject":"x"}"#)).unwrap()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json["type"], "https://settle.dev/problems/address_not_allowed");
}

#[tokio::test]
async fn revocation_fails_closed_and_rate_limits_fail_open_without_redis() {
    let _broker = BROKER.read().await;
    let app = TestApp::with(&[("SETTLE_REDIS_URL", "redis://127.0.0.1:1".into())]).await;
    let (_, token) = merchant();
    let r = app.get("/v1/payments", &token).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.headers["content-type"], "application/problem+json");
    assert!(r.headers.contains_key("retry-after"));
    let _ = Method::GET;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_details_are_for_admins_answers_are_cached_and_public_routes_are_limited_per_ip() {
    let app = TestApp::with(&[("SETTLE_RATE_LIMIT_IP", "8/60s".into())]).await;
    let admin = sign(&claims("ops", None, &["admin"]));
    let (_, merchant) = merchant();
    // Everyone gets the status; an admin from an admin range gets each dependency.
    let public = app.get("/healthz", &merchant).await;
    assert_eq!((public.status, public.json.clone()), (StatusCode::OK, json!({"status": "ok"})));
    let detailed = app.get("/healthz", &admin).await;
    let names: Vec<&str> =
        detailed.json["dependencies"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert!(names.starts_with(&["mongodb", "redis", "rabbitmq"]), "{}", detailed.json);
    // A burst is answered from one check (both calls above included).
    for _ in 0..4 {
        assert_eq!(app.get("/healthz", &merchant).await.status, StatusCode::OK);
    }
    assert_eq!(app.state.health_checks(), 1, "six calls within the cache's 2 s, one round of pings");
    // The per-address limit covers public routes: 8 per minute, 6 used.
    assert_eq!(app.get("/openapi.json", "").await.status, StatusCode::OK);
    assert_eq!(app.get("/healthz", "").await.status, StatusCode::OK);
    let limited = app.get("/healthz", "").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS, "{}", limited.json);
    let limited = app.post("/v1/gateway/webhooks", "", json!({})).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS, "{}", limited.json);
}
