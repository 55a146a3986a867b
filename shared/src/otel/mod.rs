//! OpenTelemetry traces: Settle's `tracing` spans exported as OTLP spans, and the W3C
//! `traceparent` that carries a trace from the payment API through RabbitMQ and the retry
//! queue into the notifier. On only when an OTLP endpoint is configured
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`); otherwise no layer is installed and nothing is recorded.
//!
//! Not the OpenTelemetry SDK: its OTLP exporter brings an HTTP or gRPC client stack of its
//! own into every zip (csv-ingest is within 300 kB of the 5 MB goal) and into every
//! cold start, and a Lambda function must flush at the end of each invocation anyway,
//! before the instance is frozen. What is here is what Settle needs: span ids and parents,
//! attributes, status, and OTLP/HTTP JSON, which every OTLP receiver (the ADOT collector
//! layer, Jaeger, the OpenTelemetry Collector) accepts.

mod export;
mod layer;

pub use export::{Exporter, OtlpSettings};
pub use layer::{AttrValue, OtlpLayer, SpanKind};

use std::sync::{Arc, OnceLock};
use tracing::Span;
use tracing_subscriber::registry::LookupSpan;

/// Spans of calls to a dependency (MongoDB, Redis, RabbitMQ, S3, SQS, webhook receivers)
/// use this target: exported, but never shown in log lines, which keep the invocation's
/// span (and its request and correlation ids) as their context.
pub const DEPENDENCY_TARGET: &str = "settle::dependency";

/// The exporter of this process, once `telemetry::init` has installed one.
static EXPORTER: OnceLock<Arc<Exporter>> = OnceLock::new();

/// The position of one span in one trace, as W3C Trace Context and X-Ray carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

fn lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl TraceContext {
    /// Parses a W3C `traceparent` header (`00-{32 hex}-{16 hex}-{2 hex}`; a later
    /// version's first four fields). `None` for anything invalid, as the spec requires:
    /// the receiver then starts a new trace.
    pub fn from_traceparent(value: &str) -> Option<Self> {
        let v = value.trim_matches([' ', '\t']);
        let b = v.as_bytes();
        if !v.is_ascii() || b.len() < 55 || (b.len() > 55 && b[55] != b'-') {
            return None;
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let (version, trace, span, flags) = (&v[0..2], &v[3..35], &v[36..52], &v[53..55]);
        if ![version, trace, span, flags].into_iter().all(lower_hex) || version == "ff" {
            return None;
        }
        if version == "00" && b.len() != 55 {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(TraceContext { trace_id, span_id, sampled: flags & 1 == 1 })
    }

    /// This context as a version-00 `traceparent`.
    pub fn traceparent(&self) -> String {
        format!("00-{:032x}-{:016x}-{}", self.trace_id, self.span_id, if self.sampled { "01" } else { "00" })
    }

    /// Parses X-Ray's trace header, `Root=1-{8 hex}-{24 hex};Parent={16 hex};Sampled=1`:
    /// the X-Ray trace id is a W3C trace id split in two. Without a `Parent` there is
    /// nothing to attach to.
    pub fn from_xray(header: &str) -> Option<Self> {
        let (mut root, mut parent, mut sampled) = (None, None, false);
        for part in header.split(';') {
            match part.trim().split_once('=') {
                Some(("Root", v)) => root = Some(v),
                Some(("Parent", v)) => parent = Some(v),
                Some(("Sampled", v)) => sampled = v == "1",
                _ => {}
            }
        }
        let mut fields = root?.split('-');
        let (Some("1"), Some(time), Some(random), None) = (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return None;
        };
        let parent = parent?;
        let ok = time.len() == 8 && random.len() == 24 && parent.len() == 16;
        if !ok || ![time, random, parent].into_iter().all(lower_hex) {
            return None;
        }
        let trace_id = u128::from_str_radix(&format!("{time}{random}"), 16).ok()?;
        let span_id = u64::from_str_radix(parent, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(TraceContext { trace_id, span_id, sampled })
    }
}

/// The parent an invocation continues: the caller's `traceparent` first, else X-Ray's
/// trace header (Lambda's context, else `_X_AMZN_TRACE_ID`) when X-Ray samples this
/// request, so that the spans join the X-Ray trace. `None` starts a new trace.
pub fn invocation_parent(traceparent: Option<&str>, xray: Option<&str>) -> Option<TraceContext> {
    if let Some(parent) = traceparent.and_then(TraceContext::from_traceparent) {
        return Some(parent);
    }
    let env = std::env::var("_X_AMZN_TRACE_ID").ok();
    xray.or(env.as_deref()).and_then(TraceContext::from_xray).filter(|c| c.sampled)
}

/// Whether spans are being exported.
pub fn enabled() -> bool {
    EXPORTER.get().is_some()
}

pub(crate) fn install(exporter: Arc<Exporter>) -> bool {
    EXPORTER.set(exporter).is_ok()
}

/// Runs `f` on the OpenTelemetry state of `span`; `None` when tracing is off or the span
/// is disabled.
fn with_state<R>(span: &Span, f: impl FnOnce(&mut layer::SpanState) -> R) -> Option<R> {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let data = registry.span(id)?;
        let mut extensions = data.extensions_mut();
        extensions.get_mut::<layer::SpanState>().map(f)
    })
    .flatten()
}

/// The context of the current span (the innermost one that is exported).
pub fn current() -> Option<TraceContext> {
    let span = Span::current();
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let data = registry.span(id)?;
        data.scope().find_map(|s| s.extensions().get::<layer::SpanState>().map(|state| state.context))
    })
    .flatten()
}

/// The current span as a `traceparent` to put on an outgoing message; `None` when
/// tracing is off.
pub fn traceparent() -> Option<String> {
    current().map(|c| c.traceparent())
}

/// Makes `span` a child of a span in another process (the message's producer, the API's
/// caller). Call it before the span is entered: spans already opened inside keep the
/// trace they started with.
pub fn set_parent(span: &Span, parent: TraceContext) {
    with_state(span, |state| state.set_parent(parent));
}

/// Names `span` for OpenTelemetry (`POST /v1/payments`, `process payment.succeeded`) and
/// says what it is, without adding either to the log lines that run inside it.
pub fn describe(span: &Span, name: impl Into<String>, kind: SpanKind) {
    with_state(span, |state| {
        state.name = name.into().into();
        state.kind = kind;
    });
}

/// Adds an attribute to `span`'s OpenTelemetry span only (not to its log lines).
pub fn set_attribute(span: &Span, key: &'static str, value: impl Into<AttrValue>) {
    with_state(span, |state| state.put(key, value.into()));
}

/// Marks `span` as failed, with a reason (scrubbed like any log line).
pub fn set_error(span: &Span, message: impl std::fmt::Display) {
    with_state(span, |state| state.status = layer::Status::Error(message.to_string()));
}

/// Sends the spans finished so far to the collector. Each function calls it at the end of
/// an invocation: once it has answered, Lambda may freeze the instance for good. Failures
/// are logged, never returned: tracing must not fail a payment. No-op when tracing is off.
pub async fn flush() {
    if let Some(exporter) = EXPORTER.get() {
        exporter.flush().await;
    }
}

/// Runs `call` inside `span` and marks the span failed if `call` fails: the wrapper every
/// dependency call goes through.
pub async fn traced<T, E: std::fmt::Display>(
    span: Span,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    use tracing::Instrument;
    let result = call.instrument(span.clone()).await;
    if let Err(e) = &result {
        set_error(&span, e);
    }
    result
}

/// A client span for one call to a dependency: `system` names it (`mongodb`, `redis`,
/// `rabbitmq`, `s3`, `sqs`), `operation` and `target` say what was done to what; more
/// fields may follow. `dependency_span!(producer: ...)` for a message sent. Disabled (and
/// free: no argument is evaluated) when tracing is off.
#[macro_export]
macro_rules! dependency_span {
    (producer: $($rest:tt)+) => { $crate::dependency_span!(@kind "producer", $($rest)+) };
    (@kind $kind:literal, $system:expr, $operation:expr, $target:expr $(, $($field:tt)+)?) => {
        tracing::info_span!(
            target: "settle::dependency",
            "dependency",
            otel.name = %format_args!("{} {} {}", $system, $operation, $target),
            otel.kind = $kind,
            peer.service = $system,
            dependency.operation = $operation,
            dependency.target = %$target,
            $($($field)+)?
        )
    };
    ($system:expr, $operation:expr, $target:expr $(, $($field:tt)+)?) => {
        $crate::dependency_span!(@kind "client", $system, $operation, $target $(, $($field)+)?)
    };
}

#[cfg(test)]
mod tests;
