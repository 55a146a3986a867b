//! Secrets rotate without a redeploy: the JWT key set and the gateway secret are re-read
//! from Secrets Manager (the emulator) after `SETTLE_SECRETS_TTL_SECS`, at most once per
//! TTL; during a key rotation both keys verify, and the old one stops once removed.

use crate::helpers::*;
use axum::http::StatusCode;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use settle_shared::config::{fetch_merged_secrets, SecretRefresher};
use settle_shared::ports::secrets::SecretsSource;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NEW_KEY: &str = "rotation-integration-new-hs256-key-0123456789";

fn token_signed_with(secret: &str, kid: Option<&str>, merchant: &str) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_string);
    let claims = claims(merchant, Some(merchant), &["merchant"]);
    encode(&header, &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

fn secret_string(jwt_key: String) -> String {
    json!({"SETTLE_JWT_KEY": jwt_key, "SETTLE_GATEWAY_WEBHOOK_SECRET": GATEWAY_SECRET}).to_string()
}

/// Calls until `token` gets `want`, for at most `within`; returns how long it took.
async fn until(app: &TestApp, token: &str, want: StatusCode, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let status = app.get("/v1/payments", token).await.status;
        if status == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "still {status} after {within:?}, expected {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_jwt_key_is_taken_up_within_one_ttl_and_the_old_one_until_removed() {
    // Arrange: the app starts from a secret holding today's key, re-read every second.
    let sdk = settle_shared::aws::load_sdk_config(None).await;
    let client = aws_sdk_secretsmanager::Client::new(&sdk);
    let name = unique("settle/it/rotation");
    let created = client.create_secret().name(&name).secret_string(secret_string(SECRET.into())).send().await;
    created.expect("Secrets Manager emulator (scripts/services)");
    let ttl = Duration::from_secs(1);
    let source = SecretsSource::SecretsManager(client.clone());
    let values = fetch_merged_secrets(&source, &[&name], ttl).await.unwrap();
    let mut config = config(&[]);
    config.jwt_key = values.get("SETTLE_JWT_KEY").map(|k| settle_shared::redact::Secret::new(k.as_str()));
    let refresher = Arc::new(SecretRefresher::new(source, &[&name], ttl));
    config.secrets_refresher = Some(refresher.clone());
    let app = TestApp::from_config(config, false).await;
    let (m, _) = merchant();
    let old = token_signed_with(SECRET, None, &m);
    let new = token_signed_with(NEW_KEY, Some("2026-12"), &m);
    assert_eq!(app.get("/v1/payments", &old).await.status, StatusCode::OK);
    assert_eq!(app.get("/v1/payments", &new).await.status, StatusCode::UNAUTHORIZED);
    let start = Instant::now();

    // Act: the issuer rotates; for a while the secret holds both keys, by kid.
    let both = json!({"2026-11": SECRET, "2026-12": NEW_KEY}).to_string();
    client.put_secret_value().secret_id(&name).secret_string(secret_string(both)).send().await.unwrap();

    // Assert: within one TTL (plus the re-read itself) the new key is accepted; the old
    // one still is.
    let took = until(&app, &new, StatusCode::OK, ttl + Duration::from_secs(2)).await;
    assert!(took <= ttl + Duration::from_millis(500), "the new key took {took:?}");
    assert_eq!(app.get("/v1/payments", &old).await.status, StatusCode::OK, "the old key is valid until removed");

    // The old key removed: its tokens are refused within one TTL; the new key stays.
    let only_new = json!({"2026-12": NEW_KEY}).to_string();
    client.put_secret_value().secret_id(&name).secret_string(secret_string(only_new)).send().await.unwrap();
    let took = until(&app, &old, StatusCode::UNAUTHORIZED, ttl + Duration::from_secs(2)).await;
    assert!(took <= ttl + Duration::from_millis(500), "the old key was refused after {took:?}");
    assert_eq!(app.get("/v1/payments", &new).await.status, StatusCode::OK);

    // At most one re-read per TTL, however many requests came.
    let windows = start.elapsed().as_secs_f64() / ttl.as_secs_f64();
    assert!(
        (refresher.fetches() as f64) <= windows.ceil() + 1.0,
        "{} re-reads in {windows:.1} TTLs",
        refresher.fetches()
    );
    assert!(refresher.fetches() >= 2, "both changes were re-read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_rotated_key_is_refused_and_the_keys_in_force_stay() {
    let app = TestApp::new().await;
    let (m, t) = merchant();
    let values = [("SETTLE_JWT_KEY".to_string(), "too-short".to_string())].into_iter().collect();
    app.state.refresh_secrets(&values);
    assert_eq!(app.get("/v1/payments", &t).await.status, StatusCode::OK, "{m}: the old key still verifies");
}
