//! `settle load`: drives the Payment API with a realistic mix (card tokens, payments with
//! each capture method, 3-D Secure flows, captures, refunds, reads and lists, idempotent
//! retries of the same request, and a share of bad requests), prints a live progress line
//! and a table of throughput, latency percentiles and status counts, then checks what the
//! run did: every Idempotency-Key made one payment, every state change was published
//! exactly once, no refund total passed its capture, every event reached the webhook.
//! Any violation fails the command with the offending ids.

mod checks;
mod client;
mod events;
mod report;
mod scenarios;
mod webhooks;
mod workers;

use client::Shared;
use reqwest::Client;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Event types a payment or refund of the load can cause: what its webhook endpoint takes.
/// (A refund the gateway fails later is not part of the load's mix.)
fn delivered_types() -> Vec<&'static str> {
    let caused = |t: &&str| t.starts_with("payment.") || *t == "refund.succeeded";
    settle_shared::domain::event::EVENT_TYPES.iter().copied().filter(caused).collect()
}

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

/// The outcome of a run, for the final table and the exit code.
pub struct LoadReport {
    pub violations: Vec<String>,
    pub text: String,
}

/// Runs the load and the checks. Errors are set-up failures (unreachable API or broker);
/// violations are in the report.
pub async fn run(options: LoadOptions) -> anyhow::Result<LoadReport> {
    let shared = connect(&options).await?;
    // Before the first request, so that the tap sees every event the load causes.
    let tap = events::start_tap(&options).await?;
    let receiver = if options.webhooks { Some(webhooks::start_receiver(&shared).await?) } else { None };
    let (elapsed, load_requests) = workers::drive_load(&shared).await?;

    let mut violations = shared.record.lock().unwrap().violations.clone();
    let effects = checks::check_payments(&shared, &mut violations).await;
    let events = match &tap {
        Some(tap) => events::check_events(tap, receiver.as_ref(), options.drain, &effects, &mut violations).await,
        None => events::EventCounts::default(),
    };
    if let Some(tap) = tap {
        tap.task.abort();
    }
    if let Some(receiver) = receiver {
        receiver.task.abort();
    }

    let counts = report::Counts {
        load_requests,
        payments: effects.payment_ids.len(),
        events: events.events,
        copies: events.copies,
        deliveries: events.deliveries,
    };
    let text = report::table(&shared, elapsed, &counts, &options, &violations);
    Ok(LoadReport { violations, text })
}

/// The client the workers share, once the API answers its health check.
async fn connect(options: &LoadOptions) -> anyhow::Result<Arc<Shared>> {
    let client =
        Client::builder().timeout(Duration::from_secs(30)).pool_max_idle_per_host(options.concurrency).build()?;
    let health = client.get(format!("{}/healthz", options.url)).send().await;
    anyhow::ensure!(health.is_ok(), "the API at {} does not answer", options.url);
    Ok(Arc::new(Shared { client, options: options.clone(), record: Mutex::default(), settled: Mutex::default() }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_load_takes_the_payment_and_refund_events_and_no_others() {
        let types = super::delivered_types();
        for t in ["payment.succeeded", "payment.failed", "payment.requires_action", "payment.captured"] {
            assert!(types.contains(&t), "{t}");
        }
        assert!(types.contains(&"refund.succeeded"));
        assert!(!types.iter().any(|t| t.starts_with("settlement.") || *t == "endpoint.disabled"), "{types:?}");
    }
}
