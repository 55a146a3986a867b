//! The exporter: the OTLP settings from the standard `OTEL_*` variables, the spans waiting
//! for a flush, their OTLP/HTTP JSON encoding, and one POST per flush (HTTP/1.1, TLS on
//! Mozilla's roots for `https` endpoints).

use super::layer::{AttrValue, FinishedSpan, Status};
use crate::redact::Secret;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Spans kept between flushes; past it, spans are dropped and counted (a long ingest must
/// not grow without bound if the collector is away).
const MAX_BUFFERED: usize = 8192;
/// A long invocation (a large settlement file) flushes in the background from this many.
const FLUSH_AT: usize = 1024;
/// One export may take this long; then its spans are dropped, the invocation goes on.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where and how to export, from the OpenTelemetry SDK's environment variables.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSettings {
    pub endpoint: url::Url,
    /// `OTEL_EXPORTER_OTLP_HEADERS`: often a vendor's API key, so never printed.
    pub headers: Vec<(String, Secret)>,
    pub resource: Vec<(String, String)>,
}

impl OtlpSettings {
    /// `Ok(None)` when tracing is off: no endpoint, `OTEL_SDK_DISABLED=true` or
    /// `OTEL_TRACES_EXPORTER=none`. Errors name the variable, never a header's value.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let var = |name: &str| env(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
        {
            return Ok(None);
        }
        let (name, mut endpoint) = match (var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), var("OTEL_EXPORTER_OTLP_ENDPOINT"))
        {
            (Some(url), _) => {
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", parse_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &url)?)
            }
            (None, Some(base)) => {
                let mut url = parse_url("OTEL_EXPORTER_OTLP_ENDPOINT", &base)?;
                // The signal's path goes under the base URL's path, as the SDKs do it.
                let path = format!("{}/v1/traces", url.path().trim_end_matches('/'));
                url.set_path(&path);
                ("OTEL_EXPORTER_OTLP_ENDPOINT", url)
            }
            (None, None) => return Ok(None),
        };
        if endpoint.host_str().is_none() {
            return Err(format!("{name} has no host"));
        }
        endpoint.set_fragment(None);
        let protocol = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"));
        if protocol.as_deref() == Some("grpc") {
            return Err("OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported: Settle sends OTLP/HTTP JSON; \
                        use the collector's HTTP port (4318)"
                .into());
        }
        let headers_var = if var("OTEL_EXPORTER_OTLP_TRACES_HEADERS").is_some() {
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS"
        } else {
            "OTEL_EXPORTER_OTLP_HEADERS"
        };
        let headers = key_values(headers_var, var(headers_var).as_deref().unwrap_or(""))?;
        for (key, value) in &headers {
            let token =
                !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token || value.bytes().any(|b| b.is_ascii_control()) {
                return Err(format!("{headers_var} has an invalid header (name {key:?})"));
            }
        }
        let headers = headers.into_iter().map(|(k, v)| (k, Secret::new(v))).collect();
        let mut resource =
            key_values("OTEL_RESOURCE_ATTRIBUTES", var("OTEL_RESOURCE_ATTRIBUTES").as_deref().unwrap_or(""))?;
        let lambda_name = var("AWS_LAMBDA_FUNCTION_NAME");
        let service = var("OTEL_SERVICE_NAME")
            .or_else(|| resource.iter().find(|(k, _)| k == "service.name").map(|(_, v)| v.clone()))
            .or(lambda_name.clone())
            .unwrap_or_else(|| "settle".into());
        resource.retain(|(k, _)| k != "service.name");
        resource.insert(0, ("service.name".into(), service));
        resource.push(("telemetry.sdk.name".into(), "settle".into()));
        resource.push(("telemetry.sdk.language".into(), "rust".into()));
        if let Some(function) = lambda_name {
            resource.push(("cloud.provider".into(), "aws".into()));
            resource.push(("faas.name".into(), function));
            if let Some(region) = var("AWS_REGION") {
                resource.push(("cloud.region".into(), region));
            }
        }
        Ok(Some(OtlpSettings { endpoint, headers, resource }))
    }
}

fn parse_url(name: &str, value: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(value).map_err(|e| format!("{name} is not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(format!("{name} must be an http or https URL, not {other}")),
    }
}

/// `key=value,key2=value2`, values percent-decoded (the OpenTelemetry format of
/// `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_RESOURCE_ATTRIBUTES`).
fn key_values(name: &str, list: &str) -> Result<Vec<(String, String)>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (k, v) = item.split_once('=').ok_or_else(|| format!("{name}: an entry has no `=`"))?;
            let v = percent_encoding::percent_decode_str(v.trim())
                .decode_utf8()
                .map_err(|_| format!("{name}: a value is not UTF-8 once decoded"))?;
            Ok((k.trim().to_string(), v.into_owned()))
        })
        .collect()
}

/// Collects finished spans and sends them to the collector.
pub struct Exporter {
    settings: OtlpSettings,
    spans: Mutex<Vec<FinishedSpan>>,
    dropped: AtomicU64,
    flushing_in_background: AtomicBool,
    tls: OnceLock<Arc<rustls::ClientConfig>>,
}

impl Exporter {
    pub fn new(settings: OtlpSettings) -> Arc<Self> {
        Arc::new(Exporter {
            settings,
            spans: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
            flushing_in_background: AtomicBool::new(false),
            tls: OnceLock::new(),
        })
    }

    pub fn settings(&self) -> &OtlpSettings {
        &self.settings
    }

    pub(crate) fn push(self: &Arc<Self>, span: FinishedSpan) {
        let buffered = {
            let mut spans = self.spans.lock().unwrap_or_else(|p| p.into_inner());
            if spans.len() >= MAX_BUFFERED {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            spans.push(span);
            spans.len()
        };
        if buffered >= FLUSH_AT && !self.flushing_in_background.swap(true, Ordering::AcqRel) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let exporter = Arc::clone(self);
                runtime.spawn(async move {
                    exporter.flush().await;
                    exporter.flushing_in_background.store(false, Ordering::Release);
                });
            } else {
                self.flushing_in_background.store(false, Ordering::Release);
            }
        }
    }

    /// Takes the spans finished so far out of the buffer.
    pub(crate) fn take(&self) -> Vec<FinishedSpan> {
        std::mem::take(&mut *self.spans.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Sends every span finished so far, in one request.
    pub async fn flush(&self) {
        let spans = self.take();
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(dropped, "trace spans dropped: more finished between two flushes than can be kept");
        }
        if spans.is_empty() {
            return;
        }
        let body = encode(&self.settings.resource, &spans);
        match tokio::time::timeout(EXPORT_TIMEOUT, self.post(&body)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, spans = spans.len(), "trace export failed; spans dropped"),
            Err(_) => tracing::warn!(spans = spans.len(), "trace export timed out; spans dropped"),
        }
    }

    async fn post(&self, body: &[u8]) -> Result<(), String> {
        let url = &self.settings.endpoint;
        let host = url.host_str().unwrap_or_default();
        let tls = url.scheme() == "https";
        let port = url.port_or_known_default().unwrap_or(if tls { 443 } else { 80 });
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let mut head = format!(
            "POST {target} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (name, value) in &self.settings.headers {
            head.push_str(&format!("{name}: {}\r\n", value.expose()));
        }
        head.push_str("\r\n");
        let connect_host = host.trim_start_matches('[').trim_end_matches(']');
        let stream = tokio::net::TcpStream::connect((connect_host, port))
            .await
            .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
        let status = if tls {
            let server_name = rustls::pki_types::ServerName::try_from(connect_host.to_string())
                .map_err(|e| format!("{host} is not a TLS server name: {e}"))?;
            let connector = tokio_rustls::TlsConnector::from(self.tls_config());
            let stream =
                connector.connect(server_name, stream).await.map_err(|e| format!("TLS with {authority}: {e}"))?;
            exchange(stream, head.as_bytes(), body).await?
        } else {
            exchange(stream, head.as_bytes(), body).await?
        };
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(format!("the collector at {authority} answered {status}"))
        }
    }

    /// Built on first use: a cold start that never exports never reads the roots.
    fn tls_config(&self) -> Arc<rustls::ClientConfig> {
        self.tls
            .get_or_init(|| {
                crate::tls::install_crypto_provider();
                let mut roots = rustls::RootCertStore::empty();
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth())
            })
            .clone()
    }
}

/// Writes one request and reads the response's status code.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, head: &[u8], body: &[u8]) -> Result<u16, String> {
    let io = |e: std::io::Error| format!("collector connection: {e}");
    stream.write_all(head).await.map_err(io)?;
    stream.write_all(body).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 256];
    while response.len() < 12 {
        let n = stream.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
    }
    // "HTTP/1.1 200 OK"
    let line = String::from_utf8_lossy(&response);
    line.strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| "the collector's answer is not HTTP".to_string())
}

fn attribute(key: &str, value: &AttrValue) -> Value {
    let value = match value {
        AttrValue::Str(s) => json!({ "stringValue": s }),
        // OTLP/JSON carries 64-bit integers as strings.
        AttrValue::Int(i) => json!({ "intValue": i.to_string() }),
        AttrValue::Bool(b) => json!({ "boolValue": b }),
        AttrValue::Double(d) if d.is_finite() => json!({ "doubleValue": d }),
        AttrValue::Double(d) => json!({ "stringValue": d.to_string() }),
    };
    json!({ "key": key, "value": value })
}

/// The OTLP/HTTP JSON body (`ExportTraceServiceRequest`) for `spans`: ids in hex, times in
/// nanoseconds as strings, as the protocol's JSON mapping says.
pub(crate) fn encode(resource: &[(String, String)], spans: &[FinishedSpan]) -> Vec<u8> {
    let spans: Vec<Value> = spans
        .iter()
        .map(|f| {
            let s = &f.state;
            let mut span = json!({
                "traceId": format!("{:032x}", s.context.trace_id),
                "spanId": format!("{:016x}", s.context.span_id),
                "name": s.name,
                "kind": s.kind as u8,
                "startTimeUnixNano": s.start_unix_nano.to_string(),
                "endTimeUnixNano": f.end_unix_nano.max(s.start_unix_nano).to_string(),
                "attributes": s.attributes.iter().map(|(k, v)| attribute(k, v)).collect::<Vec<_>>(),
            });
            if let Some(parent) = s.parent_span_id {
                span["parentSpanId"] = json!(format!("{parent:016x}"));
            }
            span["status"] = match &s.status {
                Status::Unset => json!({}),
                Status::Ok => json!({ "code": 1 }),
                Status::Error(message) => json!({ "code": 2, "message": message }),
            };
            span
        })
        .collect();
    let resource: Vec<Value> = resource.iter().map(|(k, v)| attribute(k, &AttrValue::Str(v.clone()))).collect();
    let request = json!({
        "resourceSpans": [{
            "resource": { "attributes": resource },
            "scopeSpans": [{ "scope": { "name": "settle", "version": env!("CARGO_PKG_VERSION") }, "spans": spans }],
        }],
    });
    serde_json::to_vec(&request).unwrap_or_default()
}
