//! Webhook endpoint management: the secret shown once, sealed at rest, rotation, the SSRF
//! guard at creation, owner-only access, resend and recover through the retry queue.

use crate::helpers::*;
use axum::http::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn endpoints_are_managed_by_their_merchant_with_secrets_shown_once() {
    let _broker = BROKER.read().await;
    let app = TestApp::with(&[("SETTLE_WEBHOOK_ALLOW_PRIVATE", "true".into())]).await;
    let (_, t) = merchant();
    let (_, other) = merchant();
    let created = app
        .post(
            "/v1/webhook_endpoints",
            &t,
            json!({"url": "http://127.0.0.1:9/hook", "event_types": ["payment.succeeded", "refund.failed"]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let secret = created.json["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    let id = created.id();
    assert!(id.starts_with("we_"));
    // Sealed at rest: the database never holds the secret.
    let stored = app.state.backends.documents.get("webhook_endpoints", &id).await.unwrap().unwrap();
    assert!(!serde_json::to_string(&stored).unwrap().contains(&secret[6..]));
    // Never shown again.
    let read = app.get(&format!("/v1/webhook_endpoints/{id}"), &t).await;
    assert_eq!(read.status, StatusCode::OK);
    assert!(read.json.get("secret").is_none());
    assert_eq!(app.get("/v1/webhook_endpoints", &t).await.json["data"].as_array().unwrap().len(), 1);
    // Another merchant sees nothing of it.
    assert_eq!(app.get(&format!("/v1/webhook_endpoints/{id}"), &other).await.status, StatusCode::NOT_FOUND);
    assert!(app.get("/v1/webhook_endpoints", &other).await.json["data"].as_array().unwrap().is_empty());

    let key = uuid::Uuid::new_v4().to_string();
    let patched = app
        .send(
            Method::PATCH,
            &format!("/v1/webhook_endpoints/{id}"),
            &t,
            Some(&key),
            Some(json!({"enabled": false, "event_types": []})),
        )
        .await;
    assert_eq!(
        (patched.json["enabled"].as_bool(), patched.json["event_types"].as_array().map(Vec::len)),
        (Some(false), Some(0))
    );

    let rotated = app.post(&format!("/v1/webhook_endpoints/{id}/rotate_secret"), &t, json!({})).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text);
    assert_ne!(rotated.json["secret"], secret.as_str());
    let stored = app.state.backends.documents.get("webhook_endpoints", &id).await.unwrap().unwrap();
    let secrets = stored["secrets"].as_array().unwrap();
    assert_eq!(secrets.len(), 2);
    assert!(
        secrets[0]["expires_at"].is_null() && secrets[1]["expires_at"].is_i64(),
        "the old secret signs for 24 h more"
    );

    // Nothing to resend yet; recover finds nothing.
    let resend = app
        .post(
            &format!("/v1/webhook_endpoints/{id}/resend"),
            &t,
            json!({"event_id": "evt_0123456789abcdef0123456789abcdef"}),
        )
        .await;
    assert_eq!(resend.status, StatusCode::NOT_FOUND);
    let recover = app.post(&format!("/v1/webhook_endpoints/{id}/recover"), &t, json!({"since": 0})).await;
    assert_eq!((recover.status, recover.json["resent"].as_i64()), (StatusCode::ACCEPTED, Some(0)));

    let key = uuid::Uuid::new_v4().to_string();
    let deleted = app.send(Method::DELETE, &format!("/v1/webhook_endpoints/{id}"), &t, Some(&key), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&format!("/v1/webhook_endpoints/{id}"), &t).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn endpoint_urls_are_guarded_against_ssrf() {
    let _broker = BROKER.read().await;
    let app = TestApp::new().await;
    let (_, t) = merchant();
    for url in [
        "http://example.com/hook",
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/hook",
        "https://10.0.0.8/hook",
        "https://user:pass@example.com/hook",
        "ftp://example.com/",
        "not a url",
    ] {
        let r = app.post("/v1/webhook_endpoints", &t, json!({"url": url})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{url} accepted: {}", r.text);
        assert_eq!(r.json["field"], "url");
    }
    let r = app
        .post("/v1/webhook_endpoints", &t, json!({"url": "https://8.8.8.8/hook", "event_types": ["payment.exploded"]}))
        .await;
    assert_eq!((r.status, r.json["field"].as_str()), (StatusCode::BAD_REQUEST, Some("event_types")));
    // Support reads payments but does not manage endpoints.
    let support = sign(&claims("agent", None, &["support"]));
    let r = app.post("/v1/webhook_endpoints", &support, json!({"url": "https://8.8.8.8/hook"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}
