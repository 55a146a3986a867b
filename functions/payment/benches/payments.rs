//! POST /v1/payments through the router against the real services, next to the I/O
//! primitives it is made of, each measured alone; and an idempotent replay next to one
//! Redis GET. Run: `bash scripts/services && cargo bench -p settle-payment --bench payments`.
//! It asserts what it measured (every request 201, every replay flagged), so a broken
//! path cannot post a fast number.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use settle_payment::{router, AppState};
use settle_shared::ports::documents::Write;
use settle_shared::ports::events::OutgoingMessage;
use settle_shared::Backends;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tower::ServiceExt;

const N: usize = 300;
const SECRET: &str = "bench-hs256-secret-bench-hs256-secret-00";

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[idx]
}

fn row(name: &str, samples: &mut [Duration]) -> (Duration, Duration) {
    let (p50, p99) = (percentile(samples, 0.50), percentile(samples, 0.99));
    println!(
        "{name:<44} {:>9.3} ms {:>9.3} ms   (n={})",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        samples.len()
    );
    (p50, p99)
}

async fn time<F, Fut>(n: usize, mut f: F) -> Vec<Duration>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        f(i).await;
        samples.push(start.elapsed());
    }
    samples
}

#[tokio::main]
async fn main() {
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let config = settle_shared::config::loopback_config(&[
        ("SETTLE_MONGODB_DATABASE", format!("bench-{suffix}")),
        ("SETTLE_EVENTS_EXCHANGE", format!("bench.events.{suffix}")),
        ("SETTLE_NOTIFY_QUEUE", format!("bench.notify.{suffix}")),
        ("SETTLE_REDIS_PREFIX", format!("bench-{suffix}:")),
        ("SETTLE_JWT_ALGORITHM", "HS256".into()),
        ("SETTLE_JWT_KEY", SECRET.into()),
        ("SETTLE_CARD_FINGERPRINT_KEY", "bench-fingerprint-key-bench-fingerprint".into()),
        ("SETTLE_GATEWAY_WEBHOOK_SECRET", "bench-gateway-secret-bench-gateway-secre".into()),
        ("SETTLE_WEBHOOK_MASTER_KEY", "bench-webhook-master-key-bench-webhook-ma".into()),
        ("SETTLE_RATE_LIMIT_MERCHANT", "1000000/1s".into()),
        ("SETTLE_RATE_LIMIT_TOKENS", "1000000/1s".into()),
    ])
    .unwrap();
    let backends = Backends::connect(&config).await.unwrap();
    let problems = backends.health().await.problems();
    assert!(problems.is_empty(), "services down: {problems:?} (run scripts/services)");
    backends.bus.declare(&backends.topology).await.unwrap();
    let state = AppState::new(config.clone(), backends.clone()).unwrap();
    state.prepare().await.unwrap();
    let app = router(state.clone())
        .layer(axum::extract::connect_info::MockConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 9))));

    let now = chrono::Utc::now().timestamp();
    let claims = json!({"sub": "m_bench", "merchant_id": "m_bench", "roles": ["merchant"], "jti": "bench",
        "iat": now, "exp": now + 3600, "iss": config.jwt_issuer, "aud": config.jwt_audience});
    let token = encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap();
    let post = |path: &str, key: String, body: serde_json::Value| {
        Request::post(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let card = json!({"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"});
    let r = app.clone().oneshot(post("/v1/tokens", "tok-1".into(), card)).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let tok: serde_json::Value = serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let tok = tok["id"].as_str().unwrap().to_string();
    let payment = |i: usize| json!({"amount": 1000 + i, "currency": "USD", "token": tok, "confirm": true});

    // Warm-up: connections, caches, indexes.
    for i in 0..20 {
        let r = app.clone().oneshot(post("/v1/payments", format!("warm-{i}"), payment(i))).await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }

    println!("\n{:<44} {:>12} {:>12}", "operation", "p50", "p99");
    let created = AtomicUsize::new(0);
    let mut full = time(N, |i| {
        let req = post("/v1/payments", format!("pay-{i}"), payment(i));
        let app = app.clone();
        let created = &created;
        async move {
            let r = app.oneshot(req).await.unwrap();
            if r.status() == StatusCode::CREATED {
                created.fetch_add(1, Ordering::Relaxed);
            }
            r.into_body().collect().await.unwrap();
        }
    })
    .await;
    assert_eq!(created.load(Ordering::Relaxed), N, "every measured POST /v1/payments must be a 201");
    let (full_p50, _) = row("POST /v1/payments (confirm, via router)", &mut full);

    let mut jwt = time(N, |_| {
        let r = state.auth.verifier().verify(&token);
        assert!(r.is_ok());
        async {}
    })
    .await;
    let (jwt_p50, _) = row("  JWT verify (HS256)", &mut jwt);
    let kv = &backends.kv;
    let suffix = &suffix;
    let mut redis_get = time(N, |i| async move {
        kv.get(&format!("bench-{suffix}:x{i}")).await.unwrap();
    })
    .await;
    let (redis_p50, _) = row("  Redis round trip (GET)", &mut redis_get);
    let docs = &backends.documents;
    let mut txn = time(N, |i| async move {
        let a = json!({"_id": format!("a{i}"), "n": i}).as_object().cloned().unwrap();
        let b = json!({"_id": format!("b{i}"), "n": i}).as_object().cloned().unwrap();
        docs.transaction(vec![
            Write::Insert { collection: "bench_a".into(), doc: a },
            Write::Insert { collection: "bench_b".into(), doc: b },
        ])
        .await
        .unwrap();
    })
    .await;
    let (txn_p50, _) = row("  MongoDB transaction (2 inserts)", &mut txn);
    let mut get = time(N, |i| async move {
        assert!(docs.get("bench_a", &format!("a{i}")).await.unwrap().is_some());
    })
    .await;
    let (get_p50, _) = row("  MongoDB find by _id", &mut get);
    let bus = &backends.bus;
    let exchange = backends.topology.exchange.clone();
    let exchange = &exchange;
    let mut publish = time(N, |i| async move {
        let m = OutgoingMessage {
            routing_key: "bench".into(),
            message_id: format!("m{i}"),
            content_type: "application/json".into(),
            headers: Default::default(),
            body: vec![b'x'; 900],
        };
        bus.publish(exchange, &m).await.unwrap();
    })
    .await;
    let (pub_p50, _) = row("  RabbitMQ publish with confirm", &mut publish);
    // One payment = verify + ~4 Redis round trips (rate limit, revocation, idempotency
    // get/lock/store/release: 6) + token read + transaction + publish + outbox mark.
    let primitives = jwt_p50 + redis_p50 * 7 + get_p50 + txn_p50 * 2 + pub_p50;
    println!(
        "{:<44} {:>9.3} ms",
        "  sum of primitives (1 verify, 7 Redis, 1 find, 2 writes, 1 publish)",
        primitives.as_secs_f64() * 1e3
    );

    let replayed = AtomicUsize::new(0);
    let mut replay = time(N, |i| {
        let req = post("/v1/payments", format!("pay-{i}"), payment(i));
        let app = app.clone();
        let replayed = &replayed;
        async move {
            let r = app.oneshot(req).await.unwrap();
            if r.status() == StatusCode::CREATED && r.headers().get("idempotent-replayed").is_some() {
                replayed.fetch_add(1, Ordering::Relaxed);
            }
            r.into_body().collect().await.unwrap();
        }
    })
    .await;
    assert_eq!(replayed.load(Ordering::Relaxed), N, "every replay must be a flagged 201");
    row("idempotent replay (via router)", &mut replay);
    println!(
        "\nPOST /v1/payments p50 is {:.1}x the sum of its primitives' p50",
        full_p50.as_secs_f64() / primitives.as_secs_f64()
    );
    let published = state.outbox.relay(&state).await.unwrap().published;
    println!("outbox relay found {published} unpublished events after the run");
    if let settle_shared::ports::documents::DocumentStore::Mongo(m) = &backends.documents {
        m.drop_database().await.ok();
    }
}
