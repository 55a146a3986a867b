//! `settle load`: drives the Payment API with a realistic mix (card tokens, payments with
//! each capture method, 3-D Secure flows, captures, refunds, reads and lists, idempotent
//! retries of the same request, and a share of bad requests), prints a live progress line
//! and a table of throughput, latency percentiles and status counts, then checks what the
//! run did: every Idempotency-Key made one payment, every state change was published
//! exactly once, no refund total passed its capture, every event reached the webhook.
//! Any violation fails the command with the offending ids.

use hdrhistogram::Histogram;
use rand::Rng;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use settle_shared::ports::events::{EventBus, RabbitBus};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Test cards of the simulated gateway (see the table in docs/api.md).
const CARD_OK: &str = "4242424242424242";
const CARD_3DS: &str = "4000002760003184";
const CARD_DECLINED: &str = "4000000000000002";

/// Event types a payment or refund can cause, which the load's webhook endpoint takes.
const DELIVERED_TYPES: &[&str] = &[
    "payment.succeeded",
    "payment.failed",
    "payment.requires_action",
    "payment.canceled",
    "payment.captured",
    "refund.succeeded",
];

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Base URL of the Payment API.
    pub url: String,
    pub token: String,
    pub concurrency: usize,
    pub duration: Duration,
    /// Scenarios started per second across all workers; `None` runs flat out.
    pub rate: Option<u32>,
    /// RabbitMQ to count events on (a tap on `exchange`); `None` skips the event checks.
    pub amqp_url: Option<String>,
    pub exchange: String,
    /// Register a webhook endpoint served by this process and check deliveries (the
    /// notifier must reach 127.0.0.1: the local stack).
    pub webhooks: bool,
    /// How long to wait after the load for events and webhooks to drain.
    pub drain: Duration,
}

/// One scenario's kind, with its weight in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Scenario {
    AutomaticPayment,
    ManualCapture,
    ThreeDs,
    Declined,
    Cancel,
    Refunds,
    IdempotentRetries,
    Reads,
    BadRequests,
}

const MIX: &[(Scenario, u32)] = &[
    (Scenario::AutomaticPayment, 25),
    (Scenario::ManualCapture, 15),
    (Scenario::ThreeDs, 8),
    (Scenario::Declined, 5),
    (Scenario::Cancel, 5),
    (Scenario::Refunds, 15),
    (Scenario::IdempotentRetries, 10),
    (Scenario::Reads, 12),
    (Scenario::BadRequests, 5),
];

/// What every worker records.
#[derive(Default)]
struct Record {
    latencies: BTreeMap<&'static str, Histogram<u64>>,
    statuses: BTreeMap<&'static str, BTreeMap<u16, u64>>,
    requests: u64,
    /// Idempotency-Key → payment ids answered for it (must be one).
    payments_by_key: HashMap<String, HashSet<String>>,
    /// Payments paid with the 3-D Secure card (their first event is requires_action).
    three_ds: HashSet<String>,
    /// Server errors and other answers no healthy system gives, with what caused them.
    violations: Vec<String>,
}

struct Shared {
    client: Client,
    options: LoadOptions,
    record: Mutex<Record>,
    /// Payments that succeeded, for refund and read scenarios.
    settled: Mutex<Vec<String>>,
}

struct Answer {
    status: StatusCode,
    json: Value,
}

impl Shared {
    async fn call(
        &self,
        route: &'static str,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let url = if path.starts_with("http") { path.to_string() } else { format!("{}{path}", self.options.url) };
        let mut request = self.client.request(method, url).bearer_auth(&self.options.token);
        if let Some(k) = key {
            request = request.header("idempotency-key", k);
        }
        if let Some(b) = body {
            request = request.json(b);
        }
        let start = Instant::now();
        let result = request.send().await;
        let micros = start.elapsed().as_micros() as u64;
        let mut backoff = None;
        let (status, json) = match result {
            Ok(response) => {
                let status = response.status();
                if status == StatusCode::TOO_MANY_REQUESTS {
                    let after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
                    backoff = Some(Duration::from_secs(after.unwrap_or(1u64).min(5)));
                }
                (status, response.json::<Value>().await.unwrap_or(Value::Null))
            }
            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, json!({"transport_error": e.to_string()})),
        };
        {
            let mut record = self.record.lock().unwrap();
            record.requests += 1;
            record
                .latencies
                .entry(route)
                .or_insert_with(|| Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"))
                .saturating_record(micros.max(1));
            *record.statuses.entry(route).or_default().entry(status.as_u16()).or_default() += 1;
            if status.is_server_error() {
                record.violations.push(format!("{route} {path}: {status} {json}"));
            }
        }
        // Rate limited: the API protecting itself, not a fault. Wait as told, like a client.
        if let Some(wait) = backoff {
            tokio::time::sleep(wait).await;
        }
        Answer { status, json }
    }

    /// A GET for the checks after the load: retried while rate limited (each 429 already
    /// waited its Retry-After), so a throttled check cannot pass for a failed one.
    async fn fetch(&self, route: &'static str, path: &str) -> Answer {
        let mut answer = self.call(route, Method::GET, path, None, None).await;
        for _ in 0..20 {
            if answer.status != StatusCode::TOO_MANY_REQUESTS {
                break;
            }
            answer = self.call(route, Method::GET, path, None, None).await;
        }
        answer
    }

    fn violation(&self, what: String) {
        self.record.lock().unwrap().violations.push(what);
    }

    async fn card(&self, number: &str) -> Option<String> {
        let key = uuid::Uuid::new_v4().to_string();
        let body = json!({"number": number, "exp_month": 12, "exp_year": 2031, "cvc": "123"});
        let a = self.call("POST /v1/tokens", Method::POST, "/v1/tokens", Some(&key), Some(&body)).await;
        a.json["id"].as_str().map(str::to_string)
    }

    /// Creates (and confirms) a payment; records which key made which payment.
    async fn pay(&self, number: &str, capture: &str, amount: i64) -> Option<Value> {
        let card = self.card(number).await?;
        let key = uuid::Uuid::new_v4().to_string();
        let body = json!({"amount": amount, "currency": "USD", "token": card, "capture_method": capture,
            "confirm": true, "metadata": {"load_key": key}});
        let a = self.call("POST /v1/payments", Method::POST, "/v1/payments", Some(&key), Some(&body)).await;
        let id = a.json["id"].as_str()?.to_string();
        let mut record = self.record.lock().unwrap();
        record.payments_by_key.entry(key).or_default().insert(id.clone());
        if number == CARD_3DS {
            record.three_ds.insert(id);
        }
        Some(a.json)
    }

    fn remember(&self, payment: &Value) {
        if payment["status"] == "succeeded" {
            if let Some(id) = payment["id"].as_str() {
                let mut settled = self.settled.lock().unwrap();
                settled.push(id.to_string());
                if settled.len() > 2000 {
                    settled.remove(0);
                }
            }
        }
    }

    fn some_settled(&self) -> Option<String> {
        let settled = self.settled.lock().unwrap();
        if settled.is_empty() {
            return None;
        }
        Some(settled[rand::rng().random_range(0..settled.len())].clone())
    }

    async fn run(&self, scenario: Scenario) {
        let amount = rand::rng().random_range(100..50_000);
        match scenario {
            Scenario::AutomaticPayment => {
                if let Some(p) = self.pay(CARD_OK, "automatic", amount).await {
                    self.expect(p["status"] == "succeeded", &p, "automatic payment with 4242 must succeed");
                    self.remember(&p);
                }
            }
            Scenario::ManualCapture => {
                let Some(p) = self.pay(CARD_OK, "manual", amount).await else { return };
                let id = p["id"].as_str().unwrap_or_default();
                let capture = rand::rng().random_range(1..=amount);
                let path = format!("/v1/payments/{id}/capture");
                let key = uuid::Uuid::new_v4().to_string();
                let body = json!({"amount_to_capture": capture});
                let a = self.call("POST /v1/payments/{id}/capture", Method::POST, &path, Some(&key), Some(&body)).await;
                self.expect(a.json["amount_captured"] == capture, &a.json, "capture must take the asked amount");
                self.remember(&a.json);
            }
            Scenario::ThreeDs => {
                let Some(p) = self.pay(CARD_3DS, "automatic", amount).await else { return };
                let Some(url) = p["next_action"]["redirect_to_url"]["url"].as_str() else {
                    return self.violation(format!("3-D Secure payment without a challenge: {p}"));
                };
                let approve = rand::rng().random_bool(0.8);
                let answer = url.replacen("/3ds?", if approve { "/3ds/approve?" } else { "/3ds/reject?" }, 1);
                self.call("POST /v1/payments/{id}/3ds/{answer}", Method::POST, &answer, None, None).await;
                let path = format!("/v1/payments/{}", p["id"].as_str().unwrap_or_default());
                let after = self.call("GET /v1/payments/{id}", Method::GET, &path, None, None).await;
                let expected = if approve { "succeeded" } else { "failed" };
                self.expect(after.json["status"] == expected, &after.json, "3-D Secure answer must decide the payment");
                self.remember(&after.json);
            }
            Scenario::Declined => {
                if let Some(p) = self.pay(CARD_DECLINED, "automatic", amount).await {
                    self.expect(p["status"] == "failed", &p, "the declined card must fail");
                }
            }
            Scenario::Cancel => {
                let Some(p) = self.pay(CARD_OK, "manual", amount).await else { return };
                let path = format!("/v1/payments/{}/cancel", p["id"].as_str().unwrap_or_default());
                let key = uuid::Uuid::new_v4().to_string();
                let a = self.call("POST /v1/payments/{id}/cancel", Method::POST, &path, Some(&key), None).await;
                self.expect(a.json["status"] == "canceled", &a.json, "an uncaptured payment must cancel");
            }
            Scenario::Refunds => {
                let Some(id) = self.some_settled() else { return };
                // Random amounts, some beyond what is left: the API must refuse those.
                let refund = rand::rng().random_range(1..30_000);
                let path = format!("/v1/payments/{id}/refunds");
                let key = uuid::Uuid::new_v4().to_string();
                let body = json!({"amount": refund});
                let a = self.call("POST /v1/payments/{id}/refunds", Method::POST, &path, Some(&key), Some(&body)).await;
                let ok = a.status == StatusCode::CREATED || a.status.is_client_error();
                self.expect(ok, &a.json, "a refund is made or refused, nothing else");
            }
            Scenario::IdempotentRetries => {
                // The same create sent three times at once with one key: one payment.
                let Some(card) = self.card(CARD_OK).await else { return };
                let key = uuid::Uuid::new_v4().to_string();
                let body = json!({"amount": amount, "currency": "USD", "token": card, "confirm": true,
                    "metadata": {"load_key": key}});
                let send =
                    || self.call("POST /v1/payments (retry)", Method::POST, "/v1/payments", Some(&key), Some(&body));
                let answers = futures_util::future::join_all([send(), send(), send()]).await;
                let ids: HashSet<String> =
                    answers.iter().filter_map(|a| a.json["id"].as_str().map(str::to_string)).collect();
                let mut record = self.record.lock().unwrap();
                record.payments_by_key.entry(key).or_default().extend(ids);
                drop(record);
                if let Some(first) = answers.iter().find(|a| a.status == StatusCode::CREATED) {
                    self.remember(&first.json);
                }
            }
            Scenario::Reads => {
                if let Some(id) = self.some_settled() {
                    let path = format!("/v1/payments/{id}");
                    let a = self.call("GET /v1/payments/{id}", Method::GET, &path, None, None).await;
                    self.expect(a.status == StatusCode::OK, &a.json, "a payment reads back");
                }
                let a = self.call("GET /v1/payments", Method::GET, "/v1/payments?limit=20", None, None).await;
                self.expect(a.status == StatusCode::OK, &a.json, "the list answers");
            }
            Scenario::BadRequests => {
                let key = uuid::Uuid::new_v4().to_string();
                let bodies = [
                    json!({"amount": "12.50", "currency": "USD", "token": "tok_x"}),
                    json!({"amount": 100, "currency": "XXX", "token": "tok_x"}),
                    json!({"amount": -5, "currency": "USD", "token": "tok_x"}),
                    json!({"amount": 100, "currency": "USD", "token": {"$gt": ""}}),
                ];
                let body = &bodies[rand::rng().random_range(0..bodies.len())];
                let a =
                    self.call("POST /v1/payments (bad)", Method::POST, "/v1/payments", Some(&key), Some(body)).await;
                self.expect(a.status.is_client_error(), &a.json, "a bad request gets a 4xx");
            }
        }
    }

    /// Records a violation unless `ok`. A transport failure was already recorded as a 503;
    /// a 429 is the API protecting itself (the table counts them).
    fn expect(&self, ok: bool, answer: &Value, what: &str) {
        if !ok && answer.get("transport_error").is_none() && answer["status"] != 429 {
            self.violation(format!("{what}: {answer}"));
        }
    }
}

fn pick(rng: &mut impl Rng) -> Scenario {
    let total: u32 = MIX.iter().map(|(_, w)| w).sum();
    let mut roll = rng.random_range(0..total);
    for (scenario, weight) in MIX {
        if roll < *weight {
            return *scenario;
        }
        roll -= weight;
    }
    Scenario::Reads
}

/// An event as the tap saw it.
#[derive(Debug, Clone)]
struct Seen {
    id: String,
    event_type: String,
    subject: String,
    sequence: Option<i64>,
    payment: Option<String>,
}

/// A webhook delivery as the receiver saw it.
#[derive(Debug, Clone)]
struct Delivered {
    id: String,
    signature_ok: bool,
}

/// The outcome of a run, for the final table and the exit code.
pub struct LoadReport {
    pub violations: Vec<String>,
    pub text: String,
}

/// Runs the load and the checks. Errors are set-up failures (unreachable API or broker);
/// violations are in the report.
pub async fn run(options: LoadOptions) -> anyhow::Result<LoadReport> {
    let client =
        Client::builder().timeout(Duration::from_secs(30)).pool_max_idle_per_host(options.concurrency).build()?;
    let health = client.get(format!("{}/healthz", options.url)).send().await;
    anyhow::ensure!(health.is_ok(), "the API at {} does not answer", options.url);
    let shared =
        Arc::new(Shared { client, options: options.clone(), record: Mutex::default(), settled: Mutex::default() });

    // The event tap, before the first request.
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let tap_task = match &options.amqp_url {
        Some(url) => {
            let bus = EventBus::RabbitMq(RabbitBus::new(url, None, Duration::from_secs(5)));
            let queue = format!("settle.load.tap.{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            bus.declare_tap(&options.exchange, &queue, Duration::from_secs(600))
                .await
                .map_err(|e| anyhow::anyhow!("event tap on {}: {e}", options.exchange))?;
            let seen = seen.clone();
            // A message redelivered because its ack was lost is the tap's duplicate, not
            // the publisher's: it is dropped here.
            let mut taken = HashSet::new();
            Some(crate::tap::follow(bus, queue, move |e, redelivered| {
                let text = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                if !(redelivered && taken.contains(&text("id"))) {
                    taken.insert(text("id"));
                    seen.lock().unwrap().push(Seen {
                        id: text("id"),
                        event_type: text("type"),
                        subject: text("subject"),
                        sequence: e["sequence"].as_i64(),
                        payment: e["data"]["payment_id"].as_str().map(str::to_string),
                    });
                }
            }))
        }
        None => None,
    };

    // The webhook receiver and its endpoint.
    let delivered: Arc<Mutex<Vec<Delivered>>> = Arc::default();
    let mut receiver_task = None;
    if options.webhooks {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let hook = format!("http://{}/hook", listener.local_addr()?);
        let key = uuid::Uuid::new_v4().to_string();
        let body = json!({"url": hook, "event_types": DELIVERED_TYPES, "description": "settle load"});
        let created = shared
            .call("POST /v1/webhook_endpoints", Method::POST, "/v1/webhook_endpoints", Some(&key), Some(&body))
            .await;
        let secret = created.json["secret"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("webhook endpoint not created: {} {}", created.status, created.json))?
            .to_string();
        let delivered = delivered.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (delivered, secret) = (delivered.clone(), secret.clone());
                async move {
                    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                    let (id, timestamp) = (header("webhook-id"), header("webhook-timestamp").parse().unwrap_or(0));
                    let now = chrono::Utc::now().timestamp();
                    let signature_ok = settle_shared::webhook_signature::verify(
                        &secret,
                        &header("webhook-signature"),
                        &id,
                        timestamp,
                        &body,
                        now,
                        300,
                    )
                    .is_ok();
                    let event: Value = serde_json::from_slice(&body).unwrap_or_default();
                    let id = event["id"].as_str().map_or(id, str::to_string);
                    delivered.lock().unwrap().push(Delivered { id, signature_ok });
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        receiver_task = Some(tokio::spawn(async move { axum::serve(listener, app).await }));
    }

    // The load.
    let started = Instant::now();
    let deadline = started + options.duration;
    let permits = Arc::new(tokio::sync::Semaphore::new(0));
    let pacer = options.rate.map(|rate| {
        let permits = permits.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
            loop {
                tick.tick().await;
                permits.add_permits(1);
            }
        })
    });
    let mut workers = Vec::new();
    for _ in 0..options.concurrency {
        let (shared, permits, paced) = (shared.clone(), permits.clone(), options.rate.is_some());
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                if paced {
                    match tokio::time::timeout_at(deadline.into(), permits.acquire()).await {
                        Ok(Ok(p)) => p.forget(),
                        _ => break,
                    }
                }
                let scenario = pick(&mut rand::rng());
                shared.run(scenario).await;
            }
        }));
    }
    let progress = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let r = shared.record.lock().unwrap();
                let errors: u64 =
                    r.statuses.values().flat_map(|s| s.iter()).filter(|(c, _)| **c >= 500).map(|(_, n)| n).sum();
                eprint!(
                    "\r{:>5.0} s  {:>8} requests  {:>6} req/s  {:>4} 5xx  {:>4} violations   ",
                    started.elapsed().as_secs_f64(),
                    r.requests,
                    r.requests - last,
                    errors,
                    r.violations.len()
                );
                last = r.requests;
            }
        })
    };
    for w in workers {
        w.await?;
    }
    let elapsed = started.elapsed();
    let load_requests = shared.record.lock().unwrap().requests;
    progress.abort();
    if let Some(p) = pacer {
        p.abort();
    }
    eprintln!();

    // The effects.
    let mut violations = shared.record.lock().unwrap().violations.clone();
    let (payments_by_key, three_ds) = {
        let r = shared.record.lock().unwrap();
        (r.payments_by_key.clone(), r.three_ds.clone())
    };
    for (key, ids) in &payments_by_key {
        if ids.len() > 1 {
            violations.push(format!("Idempotency-Key {key} made {} payments: {ids:?}", ids.len()));
        }
    }
    let payment_ids: Vec<String> =
        payments_by_key.values().flatten().cloned().collect::<HashSet<_>>().into_iter().collect();
    // Every payment the merchant has, listed: one the client never heard of (made for a key
    // whose answer was lost, or twice for one key) shows up here.
    let known: HashSet<&String> = payment_ids.iter().collect();
    let mut listed_keys: HashMap<String, Vec<String>> = HashMap::new();
    let mut after: Option<String> = None;
    loop {
        let cursor = after.as_ref().map(|a| format!("&starting_after={a}")).unwrap_or_default();
        let path = format!("/v1/payments?limit=100{cursor}");
        let page = shared.fetch("GET /v1/payments (check)", &path).await;
        let data = page.json["data"].as_array().cloned().unwrap_or_default();
        for p in &data {
            let id = p["id"].as_str().unwrap_or_default().to_string();
            if !known.contains(&id) {
                violations.push(format!("{id}: a payment no answer named"));
            }
            let key = p["metadata"]["load_key"].as_str().unwrap_or_default().to_string();
            listed_keys.entry(key).or_default().push(id);
        }
        after = data.last().and_then(|p| p["id"].as_str()).map(str::to_string);
        if page.json["has_more"] != true || after.is_none() {
            break;
        }
    }
    for (key, ids) in listed_keys.iter().filter(|(_, ids)| ids.len() > 1) {
        violations.push(format!("Idempotency-Key {key} has {} payments: {ids:?}", ids.len()));
    }
    // Final states, and the refunds of each payment, through the API.
    let mut expected: HashMap<(String, String), u32> = HashMap::new();
    let mut refund_owner: HashMap<String, String> = HashMap::new();
    for id in &payment_ids {
        let p = shared.fetch("GET /v1/payments/{id} (check)", &format!("/v1/payments/{id}")).await;
        let key = p.json["metadata"]["load_key"].as_str().unwrap_or_default();
        if !payments_by_key.get(key).is_some_and(|ids| ids.contains(id)) {
            violations.push(format!("{id}: its load_key {key:?} did not answer with it"));
        }
        let (captured, refunded) =
            (p.json["amount_captured"].as_i64().unwrap_or(0), p.json["amount_refunded"].as_i64().unwrap_or(0));
        if refunded > captured {
            violations.push(format!("{id}: refunded {refunded} > captured {captured}"));
        }
        let refunds = shared
            .fetch("GET /v1/payments/{id}/refunds (check)", &format!("/v1/payments/{id}/refunds?limit=100"))
            .await;
        let listed: Vec<&Value> = refunds.json["data"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
        let sum: i64 = listed.iter().filter(|r| r["status"] == "succeeded").filter_map(|r| r["amount"].as_i64()).sum();
        if sum != refunded {
            violations.push(format!("{id}: refunds add up to {sum}, the payment says {refunded}"));
        }
        for r in &listed {
            if let Some(rid) = r["id"].as_str() {
                refund_owner.insert(rid.to_string(), id.clone());
                if r["status"] == "succeeded" {
                    *expected.entry((id.clone(), "refund.succeeded".into())).or_default() += 1;
                }
            }
        }
        let status = p.json["status"].as_str().unwrap_or_default();
        let manual = p.json["capture_method"] == "manual";
        let mut types = Vec::new();
        if three_ds.contains(id) {
            types.push("payment.requires_action");
        }
        match status {
            "succeeded" if manual => types.push("payment.captured"),
            "succeeded" => types.push("payment.succeeded"),
            "failed" => types.push("payment.failed"),
            "canceled" => types.push("payment.canceled"),
            _ => {}
        }
        for t in types {
            *expected.entry((id.clone(), t.into())).or_default() += 1;
        }
    }

    let mut event_count = 0;
    let mut delivery_count = 0;
    let mut same_id_copies = 0;
    if tap_task.is_some() {
        // Wait until the tap has every expected event (the outbox relay may still be
        // catching up), or the drain time is over.
        // Only this run's events count: the exchange may carry other merchants' too.
        let want: u32 = expected.values().sum();
        let ours: HashSet<&String> = payment_ids.iter().collect();
        let owner = |s: &Seen| -> Option<String> {
            let payment = if s.event_type.starts_with("refund.") {
                s.payment.clone().or_else(|| refund_owner.get(&s.subject).cloned())
            } else {
                Some(s.subject.clone())
            };
            payment.filter(|p| ours.contains(p))
        };
        let until = Instant::now() + options.drain;
        loop {
            let our_ids: HashSet<String> =
                seen.lock().unwrap().iter().filter(|s| owner(s).is_some()).map(|s| s.id.clone()).collect();
            let delivered_ok = !options.webhooks || {
                let delivered: HashSet<String> = delivered.lock().unwrap().iter().map(|d| d.id.clone()).collect();
                our_ids.is_subset(&delivered)
            };
            if (our_ids.len() as u32 >= want && delivered_ok) || Instant::now() > until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // A little longer, so that a late duplicate is seen too.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let seen = seen.lock().unwrap().clone();
        let mut got: HashMap<(String, String), u32> = HashMap::new();
        let mut ids = HashSet::new();
        let mut sequences = HashSet::new();
        for s in &seen {
            let Some(payment) = owner(s) else { continue };
            // The outbox publishes at least once: a copy under the same id (a confirm lost,
            // then the relay) is the same event, dropped by id downstream. Counted, not a
            // violation; one state change under two ids is.
            if !ids.insert(s.id.clone()) {
                same_id_copies += 1;
                continue;
            }
            event_count += 1;
            if let Some(seq) = s.sequence {
                if !sequences.insert((payment.clone(), s.subject.clone(), seq)) {
                    violations.push(format!("{payment}: two events with sequence {seq} ({})", s.event_type));
                }
            }
            *got.entry((payment, s.event_type.clone())).or_default() += 1;
        }
        for (k, n) in &expected {
            let g = got.get(k).copied().unwrap_or(0);
            if g != *n {
                violations.push(format!("{}: {} published {g} times, expected {n}", k.0, k.1));
            }
        }
        for (k, g) in &got {
            if !expected.contains_key(k) {
                violations.push(format!("{}: {} published {g} times, expected none", k.0, k.1));
            }
        }
        if options.webhooks {
            let delivered = delivered.lock().unwrap().clone();
            delivery_count = delivered.len();
            let by_id: HashSet<&String> = delivered.iter().map(|d| &d.id).collect();
            for d in delivered.iter().filter(|d| !d.signature_ok) {
                violations.push(format!("webhook {} failed its signature check", d.id));
            }
            for s in seen.iter().filter(|s| DELIVERED_TYPES.contains(&s.event_type.as_str()) && ids.contains(&s.id)) {
                if !by_id.contains(&s.id) {
                    violations.push(format!("event {} ({}) never reached the webhook", s.id, s.event_type));
                }
            }
            let published: HashSet<&String> = seen.iter().map(|s| &s.id).collect();
            for d in &delivered {
                if !published.contains(&d.id) {
                    violations.push(format!("webhook {} delivered an event never published", d.id));
                }
            }
        }
    }
    if let Some(t) = tap_task {
        t.abort();
    }
    if let Some(t) = receiver_task {
        t.abort();
    }

    let counts = Counts {
        load_requests,
        payments: payment_ids.len(),
        events: event_count,
        copies: same_id_copies,
        deliveries: delivery_count,
    };
    let text = table(&shared, elapsed, &counts, &options, &violations);
    Ok(LoadReport { violations, text })
}

/// What the summary reports besides the per-route table.
#[derive(Clone, Copy)]
struct Counts {
    load_requests: u64,
    payments: usize,
    events: usize,
    /// Repeat deliveries of an event id already seen (at-least-once publishing).
    copies: usize,
    deliveries: usize,
}

fn table(shared: &Shared, elapsed: Duration, counts: &Counts, options: &LoadOptions, violations: &[String]) -> String {
    let r = shared.record.lock().unwrap();
    let secs = elapsed.as_secs_f64();
    let Counts { load_requests, payments, events, copies, deliveries } = *counts;
    let mut out = format!(
        "\n{} requests in {:.1} s: {:.1} req/s, concurrency {}{} (then {} to check the effects)\n\n",
        load_requests,
        secs,
        load_requests as f64 / secs,
        options.concurrency,
        options.rate.map(|n| format!(", {n} scenarios/s")).unwrap_or_default(),
        r.requests - load_requests
    );
    out += &format!(
        "{:<40} {:>7} {:>9} {:>9} {:>9} {:>9}  statuses\n",
        "route", "count", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for (route, h) in &r.latencies {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let statuses: Vec<String> = r.statuses[route].iter().map(|(c, n)| format!("{c}×{n}")).collect();
        out += &format!(
            "{:<40} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  {}\n",
            route,
            h.len(),
            ms(0.5),
            ms(0.9),
            ms(0.99),
            h.max() as f64 / 1000.0,
            statuses.join(" ")
        );
    }
    let checks = match (options.amqp_url.is_some(), options.webhooks) {
        (true, true) => format!(
            "{payments} payments, {events} events on the exchange ({copies} repeated under the same id), \
             {deliveries} webhook deliveries checked"
        ),
        (true, false) => format!(
            "{payments} payments, {events} events on the exchange ({copies} repeated under the same id) checked \
             (webhooks not checked)"
        ),
        _ => format!("{payments} payments checked (events and webhooks not checked)"),
    };
    out += &format!("\n{checks}\nviolations: {}\n", violations.len());
    for v in violations.iter().take(50) {
        out += &format!("  {v}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_load_subscribes_only_to_event_types_settle_publishes() {
        let published = settle_shared::domain::event::EVENT_TYPES;
        for t in super::DELIVERED_TYPES {
            assert!(published.contains(t), "{t} is not an event type Settle publishes");
        }
    }
}
