//! The effects of the load, checked through the API: every Idempotency-Key made one
//! payment, the merchant has no payment the load was not told of, and each payment's
//! refunds add up and stay within its capture. Also what each payment's history must have
//! published, for the event checks.

use super::client::Shared;
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// What the load's payments are, and what they must have published.
pub(super) struct Effects {
    /// Every payment an answer named.
    pub(super) payment_ids: Vec<String>,
    /// How many events of each (payment, event type) their final states call for.
    pub(super) expected: HashMap<(String, String), u32>,
    /// The payment each refund belongs to.
    pub(super) refund_owner: HashMap<String, String>,
}

/// Checks the payments the load made, adding what is wrong to `violations`.
pub(super) async fn check_payments(shared: &Shared, violations: &mut Vec<String>) -> Effects {
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
    check_listed_payments(shared, &payment_ids, violations).await;
    let mut effects = Effects { payment_ids: Vec::new(), expected: HashMap::new(), refund_owner: HashMap::new() };
    for id in &payment_ids {
        effects.check_payment(shared, id, &payments_by_key, three_ds.contains(id), violations).await;
    }
    effects.payment_ids = payment_ids;
    effects
}

/// Every payment the merchant has, listed: one the client never heard of (made for a key
/// whose answer was lost, or twice for one key) shows up here.
async fn check_listed_payments(shared: &Shared, payment_ids: &[String], violations: &mut Vec<String>) {
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
}

impl Effects {
    /// One payment's final state and refunds, through the API: checked, and what they must
    /// have published added to [`Effects::expected`].
    async fn check_payment(
        &mut self,
        shared: &Shared,
        id: &str,
        payments_by_key: &HashMap<String, HashSet<String>>,
        three_ds: bool,
        violations: &mut Vec<String>,
    ) {
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
        self.check_refunds(shared, id, refunded, violations).await;
        let status = p.json["status"].as_str().unwrap_or_default();
        let manual = p.json["capture_method"] == "manual";
        for t in payment_event_types(status, manual, three_ds) {
            *self.expected.entry((id.to_string(), t.into())).or_default() += 1;
        }
    }

    /// A payment's refunds add up to what it says was refunded; each refund's owner, and
    /// a `refund.succeeded` expected per refund that succeeded.
    async fn check_refunds(&mut self, shared: &Shared, id: &str, refunded: i64, violations: &mut Vec<String>) {
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
                self.refund_owner.insert(rid.to_string(), id.to_string());
                if r["status"] == "succeeded" {
                    *self.expected.entry((id.to_string(), "refund.succeeded".into())).or_default() += 1;
                }
            }
        }
    }
}

/// The payment events a payment in `status` has caused.
fn payment_event_types(status: &str, manual: bool, three_ds: bool) -> Vec<&'static str> {
    let mut types = Vec::new();
    if three_ds {
        types.push("payment.requires_action");
    }
    match status {
        "succeeded" if manual => types.push("payment.captured"),
        "succeeded" => types.push("payment.succeeded"),
        "failed" => types.push("payment.failed"),
        "canceled" => types.push("payment.canceled"),
        _ => {}
    }
    types
}
