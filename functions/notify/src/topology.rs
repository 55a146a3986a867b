//! The broker topology as a CloudFormation custom resource (`Custom::BrokerTopology`):
//! at deploy time the notifier declares the events exchange, its queue, the dead-letter
//! exchange and queue and their bindings, so that they exist before the Amazon MQ event
//! source (which depends on this resource) starts consuming, and before the first event.
//!
//! Every request is answered: SUCCESS or FAILED with a one-line reason, PUT to the
//! pre-signed `ResponseURL` as the CloudFormation custom resource contract requires
//! (<https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/crpg-ref-responses.html>).
//! Only a response that cannot be delivered fails the invocation, so that Lambda retries it.

use serde::Deserialize;
use serde_json::{json, Value};
use settle_shared::ports::events::{EventBus, Topology};
use std::time::Duration;

/// What a `Custom::BrokerTopology` request carries (all CloudFormation sends that we use).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CustomResourceRequest {
    pub request_type: String,
    #[serde(rename = "ResponseURL")]
    pub response_url: String,
    pub stack_id: String,
    pub request_id: String,
    pub logical_resource_id: String,
    #[serde(default)]
    pub physical_resource_id: Option<String>,
    #[serde(default)]
    pub resource_properties: Value,
}

/// What was answered: the status and reason sent to CloudFormation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CustomResourceAnswer {
    pub status: &'static str,
    pub reason: String,
    pub physical_resource_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CustomResourceError {
    /// Not a custom resource request we can answer (no response URL or ids).
    #[error("malformed CloudFormation request: {0}")]
    Malformed(String),
    /// The answer could not be delivered; Lambda's retry tries again.
    #[error("could not send the answer to CloudFormation: {0}")]
    Undelivered(String),
}

/// True for a payload that looks like a CloudFormation custom resource request.
pub fn is_custom_resource(payload: &Value) -> bool {
    payload.get("RequestType").is_some() && payload.get("ResponseURL").is_some()
}

/// Handles one request: declares the topology on Create and Update, keeps it on Delete,
/// and sends the answer. `configured` is the topology this deployment's functions use:
/// the resource's properties must name the same exchange and queue.
pub async fn handle(
    bus: &EventBus,
    configured: &Topology,
    payload: Value,
    timeout: Duration,
) -> Result<CustomResourceAnswer, CustomResourceError> {
    let request: CustomResourceRequest =
        serde_json::from_value(payload).map_err(|e| CustomResourceError::Malformed(e.to_string()))?;
    let answer = match tokio::time::timeout(timeout, decide(bus, configured, &request)).await {
        Ok(answer) => answer,
        Err(_) => failed(&request, format!("the broker did not answer within {timeout:?}")),
    };
    if answer.status == "FAILED" {
        tracing::error!(request_type = %request.request_type, reason = %answer.reason, "broker topology FAILED");
    } else {
        tracing::info!(request_type = %request.request_type, reason = %answer.reason, "broker topology SUCCESS");
    }
    respond(&request, &answer, timeout).await?;
    Ok(answer)
}

async fn decide(bus: &EventBus, configured: &Topology, request: &CustomResourceRequest) -> CustomResourceAnswer {
    let topology = match requested_topology(&request.resource_properties) {
        Ok(t) => t,
        Err(reason) => return failed(request, reason),
    };
    let physical_resource_id = format!("settle-topology:{}:{}", topology.exchange, topology.queue);
    match request.request_type.as_str() {
        "Create" | "Update" => {
            if topology.exchange != configured.exchange || topology.queue != configured.queue {
                let reason = format!(
                    "the resource names exchange '{}' and queue '{}' but the functions use '{}' and '{}' \
                     (SETTLE_EVENTS_EXCHANGE, SETTLE_NOTIFY_QUEUE)",
                    topology.exchange, topology.queue, configured.exchange, configured.queue
                );
                return failed(request, reason);
            }
            match bus.declare(&topology).await {
                Ok(()) => CustomResourceAnswer {
                    status: "SUCCESS",
                    reason: format!(
                        "declared exchange {} (topic), queue {} (bound with #), dead letters {} -> {}",
                        topology.exchange, topology.queue, topology.dead_letter_exchange, topology.dead_letter_queue
                    ),
                    physical_resource_id,
                },
                Err(e) => failed(request, format!("declaring the topology failed: {e}")),
            }
        }
        // The queues may hold events not yet delivered to merchants: deleting them with the
        // stack would lose them. They are kept; an operator deletes them on the broker.
        "Delete" => CustomResourceAnswer {
            status: "SUCCESS",
            reason: "kept the exchanges and queues: they may hold undelivered events".into(),
            physical_resource_id: request.physical_resource_id.clone().unwrap_or(physical_resource_id),
        },
        other => failed(request, format!("unknown RequestType '{other}' (expected Create, Update or Delete)")),
    }
}

/// The exchange and queue named in the resource's properties, checked as AMQP names.
fn requested_topology(properties: &Value) -> Result<Topology, String> {
    let name = |key: &str| -> Result<String, String> {
        let value = properties.get(key).and_then(Value::as_str).unwrap_or_default();
        let valid = !value.is_empty()
            && value.len() <= 255
            && !value.starts_with("amq.")
            && value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
        if valid {
            Ok(value.to_string())
        } else {
            Err(format!(
                "ResourceProperties.{key} must be an AMQP name (1 to 255 of A-Z a-z 0-9 - _ . :, not amq.*), got {value:?}"
            ))
        }
    };
    Ok(Topology::new(&name("Exchange")?, &name("Queue")?))
}

fn failed(request: &CustomResourceRequest, reason: String) -> CustomResourceAnswer {
    CustomResourceAnswer {
        status: "FAILED",
        reason,
        // A failed Create still needs an id; CloudFormation sends it back with the Delete
        // of the rollback, which then has nothing to do.
        physical_resource_id: request
            .physical_resource_id
            .clone()
            .unwrap_or_else(|| format!("settle-topology-failed:{}", request.request_id)),
    }
}

/// PUTs the answer to the pre-signed URL (no content type: the URL's signature has none).
async fn respond(
    request: &CustomResourceRequest,
    answer: &CustomResourceAnswer,
    timeout: Duration,
) -> Result<(), CustomResourceError> {
    let body = json!({
        "Status": answer.status,
        "Reason": answer.reason,
        "PhysicalResourceId": answer.physical_resource_id,
        "StackId": request.stack_id,
        "RequestId": request.request_id,
        "LogicalResourceId": request.logical_resource_id,
        "NoEcho": false,
        "Data": {},
    });
    let undelivered = |e: String| CustomResourceError::Undelivered(e);
    // Built here, not at cold start: a deploy-time request is rare.
    let builder = match crate::deliver::webhook_tls() {
        Some(tls) => reqwest::Client::builder().tls_backend_preconfigured(tls),
        None => reqwest::Client::builder(),
    };
    let client = builder
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| undelivered(e.to_string()))?;
    let response = client
        .put(&request.response_url)
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| undelivered(e.without_url().to_string()))?;
    if !response.status().is_success() {
        return Err(undelivered(format!("the response URL answered {}", response.status())));
    }
    Ok(())
}
