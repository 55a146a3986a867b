//! Logging: JSON lines when `AWS_LAMBDA_LOG_FORMAT=JSON` (what CloudWatch's JSON log
//! format expects), plain text otherwise; level from `RUST_LOG`, else
//! `AWS_LAMBDA_LOG_LEVEL`, else `info`. Every line inside an invocation carries the
//! invocation span's fields: function, request id, cold start, correlation id.

use std::sync::atomic::{AtomicBool, Ordering};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

static COLD: AtomicBool = AtomicBool::new(true);

/// Installs the global subscriber once; later calls are no-ops (tests call it freely).
pub fn init() {
    // `Targets` (`info`, `warn,settle_payment=debug`) rather than `EnvFilter`: the same
    // directives without span-field matching, and without a regex engine in every zip.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().map(|l| l.to_lowercase()))
        .and_then(|spec| spec.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    // CloudWatch adds its own timestamp; ANSI codes would garble it.
    let builder = tracing_subscriber::fmt().with_target(false).with_ansi(false);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .finish()
            .with(filter)
            .try_init()
    } else {
        builder.finish().with(filter).try_init()
    };
    // Err only means a subscriber is already installed.
    drop(result);
}

/// `true` for the first invocation of this process, `false` afterwards.
pub fn take_cold_start() -> bool {
    COLD.swap(false, Ordering::SeqCst)
}

/// The span every invocation runs in. `request_id` is Lambda's (or a generated one
/// locally); `correlation_id` follows a request across functions.
pub fn invocation_span(function: &str, request_id: &str, correlation_id: &str, cold_start: bool) -> tracing::Span {
    tracing::info_span!(
        "invocation",
        function = %function,
        request_id = %request_id,
        cold_start = cold_start,
        correlation_id = %correlation_id,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn cold_start_is_reported_once() {
        // Other tests in this binary may have taken it already; after one take it is false.
        super::take_cold_start();
        assert!(!super::take_cold_start());
    }
}
