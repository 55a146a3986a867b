//! The scenarios the workers play, weighted into a realistic mix, and what each expects
//! of the API's answers.

use super::client::Shared;
use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::HashSet;

/// Test cards of the simulated gateway (see the table in docs/api.md).
const CARD_OK: &str = "4242424242424242";
const CARD_3DS: &str = "4000002760003184";
const CARD_DECLINED: &str = "4000000000000002";

/// One scenario's kind, with its weight in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Scenario {
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

/// A scenario drawn from the mix by weight.
pub(super) fn pick(rng: &mut impl Rng) -> Scenario {
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

impl Shared {
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

    /// Plays one scenario; answers that break its expectations are recorded as violations.
    pub(super) async fn run_scenario(&self, scenario: Scenario) {
        let amount = rand::rng().random_range(100..50_000);
        match scenario {
            Scenario::AutomaticPayment => self.automatic_payment(amount).await,
            Scenario::ManualCapture => self.manual_capture(amount).await,
            Scenario::ThreeDs => self.three_ds(amount).await,
            Scenario::Declined => self.declined(amount).await,
            Scenario::Cancel => self.cancel(amount).await,
            Scenario::Refunds => self.refund().await,
            Scenario::IdempotentRetries => self.idempotent_retries(amount).await,
            Scenario::Reads => self.reads().await,
            Scenario::BadRequests => self.bad_request().await,
        }
    }

    async fn automatic_payment(&self, amount: i64) {
        if let Some(p) = self.pay(CARD_OK, "automatic", amount).await {
            self.expect(p["status"] == "succeeded", &p, "automatic payment with 4242 must succeed");
            self.remember(&p);
        }
    }

    async fn manual_capture(&self, amount: i64) {
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

    async fn three_ds(&self, amount: i64) {
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

    async fn declined(&self, amount: i64) {
        if let Some(p) = self.pay(CARD_DECLINED, "automatic", amount).await {
            self.expect(p["status"] == "failed", &p, "the declined card must fail");
        }
    }

    async fn cancel(&self, amount: i64) {
        let Some(p) = self.pay(CARD_OK, "manual", amount).await else { return };
        let path = format!("/v1/payments/{}/cancel", p["id"].as_str().unwrap_or_default());
        let key = uuid::Uuid::new_v4().to_string();
        let a = self.call("POST /v1/payments/{id}/cancel", Method::POST, &path, Some(&key), None).await;
        self.expect(a.json["status"] == "canceled", &a.json, "an uncaptured payment must cancel");
    }

    async fn refund(&self) {
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

    /// The same create sent three times at once with one key: one payment.
    async fn idempotent_retries(&self, amount: i64) {
        let Some(card) = self.card(CARD_OK).await else { return };
        let key = uuid::Uuid::new_v4().to_string();
        let body = json!({"amount": amount, "currency": "USD", "token": card, "confirm": true,
            "metadata": {"load_key": key}});
        let send = || self.call("POST /v1/payments (retry)", Method::POST, "/v1/payments", Some(&key), Some(&body));
        let answers = futures_util::future::join_all([send(), send(), send()]).await;
        let ids: HashSet<String> = answers.iter().filter_map(|a| a.json["id"].as_str().map(str::to_string)).collect();
        let mut record = self.record.lock().unwrap();
        record.payments_by_key.entry(key).or_default().extend(ids);
        drop(record);
        if let Some(first) = answers.iter().find(|a| a.status == StatusCode::CREATED) {
            self.remember(&first.json);
        }
    }

    async fn reads(&self) {
        if let Some(id) = self.some_settled() {
            let path = format!("/v1/payments/{id}");
            let a = self.call("GET /v1/payments/{id}", Method::GET, &path, None, None).await;
            self.expect(a.status == StatusCode::OK, &a.json, "a payment reads back");
        }
        let a = self.call("GET /v1/payments", Method::GET, "/v1/payments?limit=20", None, None).await;
        self.expect(a.status == StatusCode::OK, &a.json, "the list answers");
    }

    async fn bad_request(&self) {
        let key = uuid::Uuid::new_v4().to_string();
        let bodies = [
            json!({"amount": "12.50", "currency": "USD", "token": "tok_x"}),
            json!({"amount": 100, "currency": "XXX", "token": "tok_x"}),
            json!({"amount": -5, "currency": "USD", "token": "tok_x"}),
            json!({"amount": 100, "currency": "USD", "token": {"$gt": ""}}),
        ];
        let body = &bodies[rand::rng().random_range(0..bodies.len())];
        let a = self.call("POST /v1/payments (bad)", Method::POST, "/v1/payments", Some(&key), Some(body)).await;
        self.expect(a.status.is_client_error(), &a.json, "a bad request gets a 4xx");
    }

    /// Records a violation unless `ok`. A transport failure was already recorded as a 503;
    /// a 429 is the API protecting itself (the table counts them).
    fn expect(&self, ok: bool, answer: &Value, what: &str) {
        if !ok && answer.get("transport_error").is_none() && answer["status"] != 429 {
            self.violation(format!("{what}: {answer}"));
        }
    }
}
