//! Logging: JSON lines when `AWS_LAMBDA_LOG_FORMAT=JSON` (what CloudWatch's JSON log
//! format expects), plain text otherwise; level from `RUST_LOG`, else
//! `AWS_LAMBDA_LOG_LEVEL`, else `info`. Every line inside an invocation carries the
//! invocation span's fields: function, request id, cold start, correlation id. Traces
//! go to an OTLP endpoint when one is configured (`otel`).

use crate::otel::{self, Exporter, OtlpLayer, OtlpSettings};
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_subscriber::filter::{filter_fn, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

static COLD: AtomicBool = AtomicBool::new(true);

/// Installs the global subscriber once, from the process environment; later calls are
/// no-ops (tests call it freely).
pub fn init() {
    init_from(&|name| std::env::var(name).ok());
}

/// [`init`] with the variables read through `env`: logs, and OpenTelemetry traces when
/// an OTLP endpoint is configured (see `otel`).
pub fn init_from(env: &dyn Fn(&str) -> Option<String>) {
    let filter = log_filter(env);
    let json = env("AWS_LAMBDA_LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json"));
    // CloudWatch adds its own timestamp; ANSI codes would garble it.
    let logs = tracing_subscriber::fmt::layer().with_target(false).with_ansi(false);
    let logs = if json {
        logs.json().flatten_event(true).with_current_span(true).with_span_list(false).with_filter(filter).boxed()
    } else {
        logs.with_filter(filter).boxed()
    };
    let (settings, otlp_error) = match OtlpSettings::from_env(env) {
        Ok(settings) => (settings, None),
        Err(e) => (None, Some(e)),
    };
    let exporter = settings.map(Exporter::new);
    // Only Settle's own spans: the runtime's and the drivers' would be roots of their own.
    let traces = exporter
        .clone()
        .map(|e| OtlpLayer::new(e).with_filter(filter_fn(|m| m.is_span() && m.target().starts_with("settle"))));
    // Err only means a subscriber is already installed.
    if tracing_subscriber::registry().with(logs).with(traces).try_init().is_ok() {
        if let Some(exporter) = exporter {
            otel::install(exporter);
        }
    }
    if let Some(e) = otlp_error {
        tracing::warn!(error = %e, "OpenTelemetry export is off: its configuration is invalid");
    }
}

/// What log lines are written. `Targets` (`info`, `warn,settle_payment=debug`) rather
/// than `EnvFilter`: the same directives without span-field matching, and without a regex
/// engine in every zip.
fn log_filter(env: &dyn Fn(&str) -> Option<String>) -> Targets {
    env("RUST_LOG")
        .or_else(|| env("AWS_LAMBDA_LOG_LEVEL").map(|l| l.to_lowercase()))
        .and_then(|spec| spec.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO))
        // Dependency spans are for traces; log lines keep the invocation span as context.
        .with_target(otel::DEPENDENCY_TARGET, LevelFilter::OFF)
}

/// `true` for the first invocation of this process, `false` afterwards; the first also
/// counts the function's `ColdStart` metric.
pub fn cold_start(function: &str) -> bool {
    let cold = COLD.swap(false, Ordering::SeqCst);
    crate::metrics::cold_start(function, cold);
    cold
}

/// The span every invocation runs in. `request_id` is Lambda's (or a generated one
/// locally); `correlation_id` follows a request across functions; `idempotency_key` is
/// recorded when the request has one.
pub fn invocation_span(function: &str, request_id: &str, correlation_id: &str, cold_start: bool) -> tracing::Span {
    tracing::info_span!(
        "invocation",
        function = %function,
        request_id = %request_id,
        cold_start = cold_start,
        correlation_id = %correlation_id,
        idempotency_key = tracing::field::Empty,
    )
}

/// Runs one invocation of an event-triggered function (notify, csv-ingest): counts a cold
/// start, runs `work` in the invocation span, as a child of X-Ray's trace when X-Ray
/// samples it, and exports the invocation's spans before Lambda may freeze the process.
pub async fn invocation<T>(
    function: &str,
    request_id: &str,
    xray_trace_id: Option<&str>,
    work: impl std::future::Future<Output = T>,
) -> T {
    use tracing::Instrument;
    let span = invocation_span(function, request_id, request_id, cold_start(function));
    if otel::enabled() {
        if let Some(parent) = otel::invocation_parent(None, xray_trace_id) {
            otel::set_parent(&span, parent);
        }
        otel::describe(&span, format!("{function} invoke"), otel::SpanKind::Consumer);
    }
    let output = work.instrument(span).await;
    otel::flush().await;
    output
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;

    #[test]
    fn without_an_exporter_dependency_spans_are_off_and_their_arguments_never_evaluated() {
        // Even at the most verbose log level a user can ask for.
        let env = |name: &str| (name == "RUST_LOG").then(|| "trace".to_string());
        let logs = tracing_subscriber::fmt::layer().with_writer(std::io::sink).with_filter(super::log_filter(&env));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(logs), || {
            let mut evaluated = false;
            let span = crate::dependency_span!("mongodb", "find", {
                evaluated = true;
                "payments"
            });
            assert!(span.is_disabled());
            assert!(!evaluated, "a disabled span's fields are not computed");
            assert_eq!(crate::otel::traceparent(), None);
            // The invocation span, which log lines carry, is on.
            assert!(!super::invocation_span("payment", "r", "c", false).is_disabled());
        });
    }

    #[test]
    fn cold_start_is_reported_once() {
        // Other tests in this binary may have taken it already; after one take it is false.
        super::cold_start("test");
        assert!(!super::cold_start("test"));
    }
}
