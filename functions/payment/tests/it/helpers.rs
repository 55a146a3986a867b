//! A test app on the real services, a JWT minting helper, and request shortcuts.

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use settle_payment::{router, AppState};
use settle_shared::ports::events::Subscription;
use settle_shared::{Backends, Config};
use std::net::SocketAddr;
use std::sync::LazyLock;
use tower::ServiceExt;

pub const SECRET: &str = "integration-test-hs256-secret-0123456789";
pub const GATEWAY_SECRET: &str = "integration-test-gateway-secret-0123456789";
pub const ISSUER: &str = "settle-test";
pub const AUDIENCE: &str = "settle-api-test";

/// Tests that stop the broker take this for writing; every other test holds it for
/// reading, so nobody else needs RabbitMQ while it is down.
pub static BROKER: LazyLock<tokio::sync::RwLock<()>> = LazyLock::new(|| tokio::sync::RwLock::new(()));

pub use settle_test_support::unique;

pub struct TestApp {
    pub router: Router,
    pub state: AppState,
}

pub fn config(overrides: &[(&str, String)]) -> Config {
    let mut vars: Vec<(&str, String)> = vec![
        ("SETTLE_JWT_ALGORITHM", "HS256".into()),
        ("SETTLE_JWT_KEY", SECRET.into()),
        ("SETTLE_JWT_ISSUER", ISSUER.into()),
        ("SETTLE_JWT_AUDIENCE", AUDIENCE.into()),
        ("SETTLE_CARD_FINGERPRINT_KEY", "integration-test-fingerprint-key-0123456789".into()),
        ("SETTLE_GATEWAY_WEBHOOK_SECRET", GATEWAY_SECRET.into()),
        ("SETTLE_WEBHOOK_MASTER_KEY", "integration-test-webhook-master-key-0123456789".into()),
        ("SETTLE_ADMIN_CIDRS", "127.0.0.0/8".into()),
        ("SETTLE_DEPENDENCY_TIMEOUT_MS", "1500".into()),
    ];
    vars.extend(overrides.iter().cloned());
    settle_test_support::config("pay", settle_shared::config::Backend::Real, &vars)
}

impl TestApp {
    pub async fn new() -> TestApp {
        TestApp::with(&[]).await
    }

    pub async fn with(overrides: &[(&str, String)]) -> TestApp {
        let expected_down =
            overrides.iter().any(|(k, v)| k.ends_with("_URL") || k.ends_with("_URI") && v.contains(":1/"));
        TestApp::from_config(config(overrides), expected_down).await
    }

    pub async fn from_config(config: Config, expected_down: bool) -> TestApp {
        let backends = Backends::connect(&config).await.unwrap();
        // A workspace build links S3 into the backends (csv-ingest's feature), whose health
        // check then asks for the configured bucket; the Payment API itself has none.
        if !expected_down {
            backends.objects.ensure_bucket().await.expect("S3 emulator (scripts/services)");
        }
        let problems = backends.health().await.problems();
        if !problems.is_empty() && !expected_down {
            panic!("services unreachable: {problems:?} (start them with scripts/services)");
        }
        if !expected_down {
            backends.bus.declare(&backends.topology).await.unwrap();
        }
        let state = AppState::new(config, backends).unwrap();
        if !expected_down {
            state.prepare().await.unwrap();
        }
        let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        TestApp { router: router(state.clone()).layer(MockConnectInfo(client)), state }
    }

    /// A consumer of every event this app publishes.
    pub async fn events(&self) -> Subscription {
        self.state.backends.bus.subscribe(&self.state.backends.topology.queue, 100).await.unwrap()
    }

    pub async fn call(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        idem: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut builder =
            Request::builder().method(method).uri(path).header("authorization", format!("Bearer {token}"));
        if let Some(k) = idem {
            builder = builder.header("idempotency-key", k);
        }
        let body = match body {
            Some(b) => {
                builder = builder.header("content-type", "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        self.call(builder.body(body).unwrap()).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.send(Method::GET, path, token, None, None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        let key = uuid::Uuid::new_v4().to_string();
        self.send(Method::POST, path, token, Some(&key), Some(body)).await
    }

    pub async fn card_token(&self, token: &str, number: &str) -> String {
        let r = self
            .post("/v1/tokens", token, json!({"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json["id"].as_str().unwrap().to_string()
    }

    /// A confirmed payment of `amount` with the given test card.
    pub async fn pay(&self, token: &str, card: &str, amount: i64, capture_method: &str) -> Reply {
        let tok = self.card_token(token, card).await;
        self.post(
            "/v1/payments",
            token,
            json!({"amount": amount, "currency": "USD", "token": tok, "capture_method": capture_method, "confirm": true}),
        )
        .await
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
    pub text: String,
}

impl Reply {
    pub fn id(&self) -> String {
        self.json["id"].as_str().unwrap_or_default().to_string()
    }
}

/// Claims as a client's identity provider would issue them.
pub fn claims(sub: &str, merchant: Option<&str>, roles: &[&str]) -> Value {
    let now = chrono::Utc::now().timestamp();
    let mut c = json!({
        "sub": sub, "roles": roles, "jti": uuid::Uuid::new_v4().to_string(),
        "iat": now, "nbf": now, "exp": now + 600, "iss": ISSUER, "aud": AUDIENCE,
    });
    if let Some(m) = merchant {
        c["merchant_id"] = json!(m);
    }
    c
}

pub fn sign(claims: &Value) -> String {
    encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

pub fn merchant_token(merchant: &str) -> String {
    sign(&claims(merchant, Some(merchant), &["merchant"]))
}

pub fn merchant() -> (String, String) {
    let m = format!("m_{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let t = merchant_token(&m);
    (m, t)
}

/// Waits for the next event on `sub`, parsed.
pub async fn next_event(sub: &mut Subscription, secs: u64) -> Option<Value> {
    let delivery = tokio::time::timeout(std::time::Duration::from_secs(secs), sub.next()).await.ok()??.ok()?;
    let value = serde_json::from_slice(&delivery.body).ok();
    delivery.ack().await.ok();
    value
}
