//! The `tracing` layer: gives each span an OpenTelemetry id, parent, kind, attributes and
//! status while it is open, and hands it to the exporter when it closes.

use super::export::Exporter;
use super::TraceContext;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// OTLP's span kinds (the numbers are the protocol's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Internal = 1,
    Server = 2,
    Client = 3,
    Producer = 4,
    Consumer = 5,
}

impl SpanKind {
    fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "internal" => SpanKind::Internal,
            "server" => SpanKind::Server,
            "client" => SpanKind::Client,
            "producer" => SpanKind::Producer,
            "consumer" => SpanKind::Consumer,
            _ => return None,
        })
    }
}

/// An attribute value, as OTLP types them.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Bool(bool),
    Double(f64),
}

impl From<&str> for AttrValue {
    fn from(v: &str) -> Self {
        AttrValue::Str(v.to_string())
    }
}

impl From<String> for AttrValue {
    fn from(v: String) -> Self {
        AttrValue::Str(v)
    }
}

impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        AttrValue::Int(v)
    }
}

impl From<u16> for AttrValue {
    fn from(v: u16) -> Self {
        AttrValue::Int(i64::from(v))
    }
}

impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        AttrValue::Bool(v)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Status {
    Unset,
    Ok,
    Error(String),
}

/// An open span's OpenTelemetry side, kept in the registry's extensions.
#[derive(Debug, Clone)]
pub(crate) struct SpanState {
    pub context: TraceContext,
    pub parent_span_id: Option<u64>,
    pub name: Cow<'static, str>,
    pub kind: SpanKind,
    pub start_unix_nano: u64,
    pub attributes: Vec<(Cow<'static, str>, AttrValue)>,
    pub status: Status,
}

/// A closed span, waiting for the next flush.
#[derive(Debug, Clone)]
pub struct FinishedSpan {
    pub(crate) state: SpanState,
    pub(crate) end_unix_nano: u64,
}

pub(crate) fn now_unix_nano() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)).unwrap_or(0)
}

fn nonzero_random<T: Default + PartialEq>(mut draw: impl FnMut() -> T) -> T {
    loop {
        let v = draw();
        if v != T::default() {
            return v;
        }
    }
}

pub(crate) fn new_span_id() -> u64 {
    nonzero_random(rand::random::<u64>)
}

pub(crate) fn new_trace_id() -> u128 {
    nonzero_random(rand::random::<u128>)
}

impl SpanState {
    pub(crate) fn set_parent(&mut self, parent: TraceContext) {
        self.context.trace_id = parent.trace_id;
        self.context.sampled = parent.sampled;
        self.parent_span_id = Some(parent.span_id);
    }

    /// Adds or replaces an attribute; the `otel.*` names set the span's own properties,
    /// as `tracing-opentelemetry` reads them.
    pub(crate) fn put(&mut self, key: &'static str, value: AttrValue) {
        let text = |v: &AttrValue| match v {
            AttrValue::Str(s) => s.clone(),
            other => format!("{other:?}"),
        };
        match key {
            "otel.name" => self.name = Cow::Owned(text(&value)),
            "otel.kind" => self.kind = SpanKind::parse(&text(&value)).unwrap_or(self.kind),
            "otel.status_code" => match text(&value).to_ascii_lowercase().as_str() {
                "error" if !matches!(self.status, Status::Error(_)) => self.status = Status::Error(String::new()),
                "ok" => self.status = Status::Ok,
                _ => {}
            },
            "otel.status_message" => self.status = Status::Error(text(&value)),
            _ => match self.attributes.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = value,
                None => self.attributes.push((Cow::Borrowed(key), value)),
            },
        }
    }
}

struct Visitor<'a>(&'a mut SpanState);

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.put(field.name(), AttrValue::Str(value.to_string()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.put(field.name(), AttrValue::Int(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.put(field.name(), AttrValue::Int(i64::try_from(value).unwrap_or(i64::MAX)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.put(field.name(), AttrValue::Bool(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.put(field.name(), AttrValue::Double(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.status = Status::Error(value.to_string());
        self.0.put(field.name(), AttrValue::Str(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.put(field.name(), AttrValue::Str(format!("{value:?}")));
    }
}

/// The layer `telemetry::init` installs when an OTLP endpoint is configured.
pub struct OtlpLayer {
    exporter: Arc<Exporter>,
}

impl OtlpLayer {
    pub fn new(exporter: Arc<Exporter>) -> Self {
        OtlpLayer { exporter }
    }
}

impl<S> Layer<S> for OtlpLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let parent = span.parent().and_then(|p| p.extensions().get::<SpanState>().map(|s| s.context));
        // A dependency call outside any invocation (a local poller, cold-start set-up) would
        // be a one-span trace of its own, every second: noise, not exported.
        let orphan_call = parent.is_none() && attrs.metadata().target() == super::DEPENDENCY_TARGET;
        let context = TraceContext {
            trace_id: parent.map_or_else(new_trace_id, |p| p.trace_id),
            span_id: new_span_id(),
            sampled: parent.is_none_or(|p| p.sampled) && !orphan_call,
        };
        let mut state = SpanState {
            context,
            parent_span_id: parent.map(|p| p.span_id),
            name: Cow::Borrowed(attrs.metadata().name()),
            kind: SpanKind::Internal,
            start_unix_nano: now_unix_nano(),
            attributes: Vec::new(),
            status: Status::Unset,
        };
        attrs.record(&mut Visitor(&mut state));
        span.extensions_mut().insert(state);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(state) = span.extensions_mut().get_mut::<SpanState>() {
                values.record(&mut Visitor(state));
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(state) = span.extensions_mut().remove::<SpanState>() else { return };
        if state.context.sampled {
            self.exporter.push(FinishedSpan { state, end_unix_nano: now_unix_nano() });
        }
    }
}
