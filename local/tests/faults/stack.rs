//! The local stack the faults are injected under, and what the tests read back from it:
//! the events on the broker, the outbox, the payments.

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use settle_local::{LocalStack, StackOptions};
use settle_payment::store::{OUTBOX, PAYMENTS};
use settle_shared::config::Backend;
use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use settle_test_support::unique;

pub(crate) struct Stack {
    pub(crate) stack: LocalStack,
    pub(crate) base: String,
    pub(crate) client: Client,
    pub(crate) token: String,
    pub(crate) admin_token: String,
}

pub(crate) async fn stack() -> Stack {
    stack_timing_out_after("1000").await
}

/// The stack with `SETTLE_DEPENDENCY_TIMEOUT_MS` = `timeout_ms`.
pub(crate) async fn stack_timing_out_after(timeout_ms: &str) -> Stack {
    let vars = [
        ("SETTLE_DEPENDENCY_TIMEOUT_MS", timeout_ms.to_string()),
        ("SETTLE_RATE_LIMIT_MERCHANT", "1000000/60s".to_string()),
        ("SETTLE_RATE_LIMIT_IP", "1000000/60s".to_string()),
        ("SETTLE_RATE_LIMIT_TOKENS", "1000000/60s".to_string()),
        ("SETTLE_RATE_LIMIT_REFUNDS", "1000000/60s".to_string()),
    ];
    let mut config = settle_test_support::config("faults", Backend::Real, &vars);
    config.webhooks.allow_private = true;
    let options =
        StackOptions { watch_dir: None, s3_events_queue: unique("faults-s3"), retry_queue: unique("faults-retries") };
    let stack = LocalStack::start(config.clone(), options)
        .await
        .unwrap_or_else(|e| panic!("local stack on the real services: {e:#} (start them with scripts/services)"));
    let mut dev = config;
    settle_local::dev_keys::apply(&mut dev);
    let merchant = format!("m_{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let token = settle_local::dev_keys::mint(&dev, &merchant, Some(&merchant), &["merchant".into()], 3600).unwrap();
    // An operator's, from loopback: `/healthz` shows it which dependency is down.
    let admin_token = settle_local::dev_keys::mint(&dev, "ops", None, &["admin".into()], 3600).unwrap();
    let base = format!("http://{}", stack.http_addr);
    let client = Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    Stack { stack, base, client, token, admin_token }
}

pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) json: Value,
    pub(crate) retry_after: bool,
    pub(crate) problem: bool,
}

impl Stack {
    pub(crate) async fn post(&self, path: &str, key: &str, body: Value) -> Reply {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        Self::reply(r).await
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        let r = self.client.get(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await.unwrap();
        Self::reply(r).await
    }

    pub(crate) async fn reply(r: reqwest::Response) -> Reply {
        let status = r.status();
        let retry_after = r.headers().contains_key("retry-after");
        let problem = r.headers().get("content-type").is_some_and(|v| v == "application/problem+json");
        Reply { status, json: r.json().await.unwrap_or(Value::Null), retry_after, problem }
    }

    pub(crate) async fn card(&self) -> String {
        let body = json!({"number": "4242424242424242", "exp_month": 12, "exp_year": 2031, "cvc": "123"});
        let r = self.post("/v1/tokens", &uuid::Uuid::new_v4().to_string(), body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
        r.json["id"].as_str().unwrap().to_string()
    }
}

/// What the tap saw: (event id, type, subject, redelivered).
type Seen = Arc<std::sync::Mutex<Vec<(String, String, String, bool)>>>;

/// Every event on the stack's exchange, by id, through a durable tap of its own.
pub(crate) async fn tap(stack: &Stack) -> (Seen, String) {
    let queue = unique("faults.tap");
    let bus = stack.stack.backends.bus.clone();
    // Durable (it outlives the broker restart) and dropped by the broker once idle.
    bus.declare_tap(&stack.stack.backends.topology.exchange, &queue, Duration::from_secs(600)).await.unwrap();
    let seen: Seen = Arc::default();
    let out = seen.clone();
    settle_local::tap::follow(bus, queue.clone(), move |e, redelivered| {
        let field = |k: &str| e[k].as_str().unwrap_or_default().to_string();
        out.lock().unwrap().push((field("id"), field("type"), field("subject"), redelivered));
    });
    (seen, queue)
}

/// The `payment.succeeded` event ids the tap saw, by payment, for the payments in `ids`.
pub(crate) fn succeeded_events(
    seen: &[(String, String, String, bool)],
    ids: &HashSet<String>,
) -> HashMap<String, HashSet<String>> {
    let mut per_payment: HashMap<String, HashSet<String>> = HashMap::new();
    for (id, kind, subject, _) in seen {
        if kind == "payment.succeeded" && ids.contains(subject) {
            per_payment.entry(subject.clone()).or_default().insert(id.clone());
        }
    }
    per_payment
}

/// Waits until the tap has seen a `payment.succeeded` event for every payment in `ids`,
/// or `within` has passed.
pub(crate) async fn await_succeeded(seen: &Seen, ids: &HashSet<String>, within: Duration) {
    let deadline = Instant::now() + within;
    while succeeded_events(&seen.lock().unwrap(), ids).len() < ids.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The broker's own count of a queue: messages ready, unacknowledged, and consumers.
pub(crate) fn queue_depth(queue: &str) -> String {
    let out = Command::new("rabbitmqctl")
        .args(["-q", "list_queues", "name", "messages_ready", "messages_unacknowledged", "consumers"])
        .output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    text.lines().find(|l| l.starts_with(queue)).unwrap_or("(not listed)").to_string()
}

pub(crate) fn epoch_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// The outbox records (status, times) of the events about `subjects`, up to five: whether
/// a missing event is still pending (the relay did not get to it) or was marked published
/// (the broker confirmed it, and the tap never saw it) is what a failure needs to say.
pub(crate) async fn outbox_of(s: &Stack, subjects: &[&String]) -> Vec<Value> {
    let all = settle_shared::ports::documents::Query::new().limit(100_000);
    let records = match s.stack.backends.documents.find(OUTBOX, &all).await {
        Ok(records) => records,
        Err(e) => return vec![json!(format!("outbox unreadable: {e}"))],
    };
    let mut found: Vec<Value> = records
        .into_iter()
        .filter_map(|r| {
            let body: Value = serde_json::from_str(r.get("body")?.as_str()?).ok()?;
            let subject = body["subject"].as_str()?.to_string();
            subjects.iter().any(|s| **s == subject).then(|| {
                json!({"subject": subject, "type": body["type"], "status": r.get("status"),
                       "created": r.get("created"), "published_at": r.get("published_at")})
            })
        })
        .take(5)
        .collect();
    if found.is_empty() {
        // No outbox record at all: say whether the payments themselves exist.
        for subject in subjects.iter().take(5) {
            let payment = s.stack.backends.documents.get(PAYMENTS, subject).await;
            found.push(json!({"subject": subject, "outbox": null, "payment": format!("{payment:?}")}));
        }
    }
    found
}
