//! The summary table: throughput, latency percentiles and status counts per route, what
//! the checks covered, and the violations found.

use super::client::Shared;
use super::LoadOptions;
use std::time::Duration;

/// What the summary reports besides the per-route table.
#[derive(Clone, Copy)]
pub(super) struct Counts {
    pub(super) load_requests: u64,
    pub(super) payments: usize,
    pub(super) events: usize,
    /// Repeat deliveries of an event id already seen (at-least-once publishing).
    pub(super) copies: usize,
    pub(super) deliveries: usize,
}

/// The summary as printed at the end of a run.
pub(super) fn table(
    shared: &Shared,
    elapsed: Duration,
    counts: &Counts,
    options: &LoadOptions,
    violations: &[String],
) -> String {
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
