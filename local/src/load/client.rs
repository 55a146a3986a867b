//! The load's client of the Payment API: every call timed and its status counted per
//! route, server errors recorded as violations, rate limits waited out.

use super::LoadOptions;
use hdrhistogram::Histogram;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What every worker records.
#[derive(Default)]
pub(super) struct Record {
    pub(super) latencies: BTreeMap<&'static str, Histogram<u64>>,
    pub(super) statuses: BTreeMap<&'static str, BTreeMap<u16, u64>>,
    pub(super) requests: u64,
    /// Idempotency-Key → payment ids answered for it (must be one).
    pub(super) payments_by_key: HashMap<String, HashSet<String>>,
    /// Payments paid with the 3-D Secure card (their first event is requires_action).
    pub(super) three_ds: HashSet<String>,
    /// Server errors and other answers no healthy system gives, with what caused them.
    pub(super) violations: Vec<String>,
}

impl Record {
    /// Counts one answer under its route: its latency, its status, and a server error as a
    /// violation.
    fn count(&mut self, route: &'static str, path: &str, micros: u64, status: StatusCode, json: &Value) {
        self.requests += 1;
        self.latencies
            .entry(route)
            .or_insert_with(|| Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"))
            .saturating_record(micros.max(1));
        *self.statuses.entry(route).or_default().entry(status.as_u16()).or_default() += 1;
        if status.is_server_error() {
            self.violations.push(format!("{route} {path}: {status} {json}"));
        }
    }
}

/// What the workers and the checks share.
pub(super) struct Shared {
    pub(super) client: Client,
    pub(super) options: LoadOptions,
    pub(super) record: Mutex<Record>,
    /// Payments that succeeded, for refund and read scenarios.
    pub(super) settled: Mutex<Vec<String>>,
}

/// An API answer: its status and JSON body (`Null` when the body was not JSON).
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) json: Value,
}

impl Shared {
    /// One request, timed and counted under `route`; `path` is under the API's URL unless
    /// it is a whole URL itself.
    pub(super) async fn call(
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
        self.record.lock().unwrap().count(route, path, micros, status, &json);
        // Rate limited: the API protecting itself, not a fault. Wait as told, like a client.
        if let Some(wait) = backoff {
            tokio::time::sleep(wait).await;
        }
        Answer { status, json }
    }

    /// A GET for the checks after the load: retried while rate limited (each 429 already
    /// waited its Retry-After), so a throttled check cannot pass for a failed one.
    pub(super) async fn fetch(&self, route: &'static str, path: &str) -> Answer {
        let mut answer = self.call(route, Method::GET, path, None, None).await;
        for _ in 0..20 {
            if answer.status != StatusCode::TOO_MANY_REQUESTS {
                break;
            }
            answer = self.call(route, Method::GET, path, None, None).await;
        }
        answer
    }

    pub(super) fn violation(&self, what: String) {
        self.record.lock().unwrap().violations.push(what);
    }
}
