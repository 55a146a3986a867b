//! The webhook checks: an endpoint served by this process and registered for the event
//! types payments cause, and afterwards every event delivered, signed, and published.

use super::client::Shared;
use super::delivered_types;
use super::events::Seen;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;

/// A webhook delivery as the receiver saw it.
#[derive(Debug, Clone)]
struct Delivered {
    id: String,
    signature_ok: bool,
}

/// The webhook receiver: the deliveries it took, and the task serving it.
pub(super) struct Receiver {
    delivered: Arc<Mutex<Vec<Delivered>>>,
    pub(super) task: JoinHandle<std::io::Result<()>>,
}

/// Serves a webhook endpoint on a free local port and registers it with the API, which
/// answers the secret its signatures are checked with.
pub(super) async fn start_receiver(shared: &Shared) -> anyhow::Result<Receiver> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    let key = uuid::Uuid::new_v4().to_string();
    let body = json!({"url": hook, "event_types": delivered_types(), "description": "settle load"});
    let created =
        shared.call("POST /v1/webhook_endpoints", Method::POST, "/v1/webhook_endpoints", Some(&key), Some(&body)).await;
    let secret = created.json["secret"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("webhook endpoint not created: {} {}", created.status, created.json))?
        .to_string();
    let delivered: Arc<Mutex<Vec<Delivered>>> = Arc::default();
    let app = hook_route(delivered.clone(), secret);
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(Receiver { delivered, task })
}

/// `POST /hook`: records each delivery, its event id and whether its signature held.
fn hook_route(delivered: Arc<Mutex<Vec<Delivered>>>, secret: String) -> axum::Router {
    axum::Router::new().route(
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
    )
}

impl Receiver {
    /// The event ids delivered so far.
    pub(super) fn delivered_ids(&self) -> HashSet<String> {
        self.delivered.lock().unwrap().iter().map(|d| d.id.clone()).collect()
    }

    /// Every delivery signed, every published event of the load (`ids`) of a type the
    /// endpoint takes delivered, and no delivery of an event never published; answers how
    /// many deliveries there were.
    pub(super) fn check_deliveries(&self, seen: &[Seen], ids: &HashSet<String>, violations: &mut Vec<String>) -> usize {
        let delivered = self.delivered.lock().unwrap().clone();
        let by_id: HashSet<&String> = delivered.iter().map(|d| &d.id).collect();
        for d in delivered.iter().filter(|d| !d.signature_ok) {
            violations.push(format!("webhook {} failed its signature check", d.id));
        }
        let taken = delivered_types();
        for s in seen.iter().filter(|s| taken.contains(&s.event_type.as_str()) && ids.contains(&s.id)) {
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
        delivered.len()
    }
}
