//! Trace context formats, the layer's parent links, the settings and the export body.

use super::layer::{FinishedSpan, Status};
use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn traceparent_round_trips_and_invalid_ones_start_a_new_trace() {
    let c = TraceContext::from_traceparent(TP).unwrap();
    assert_eq!(c.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
    assert_eq!(c.span_id, 0x00f067aa0ba902b7);
    assert!(c.sampled);
    assert_eq!(c.traceparent(), TP);
    let unsampled = TraceContext::from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
    assert!(!unsampled.sampled);
    // A later version may append fields; its first four are read.
    assert!(TraceContext::from_traceparent(&format!("01{}-extra", &TP[2..])).is_some());
    for bad in [
        "",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01",
    ] {
        assert_eq!(TraceContext::from_traceparent(bad), None, "{bad}");
    }
}

#[test]
fn xray_headers_map_onto_w3c_ids_and_only_sampled_ones_are_joined() {
    let header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
    let c = TraceContext::from_xray(header).unwrap();
    assert_eq!(format!("{:032x}", c.trace_id), "5759e988bd862e3fe1be46a994272793");
    assert_eq!(format!("{:016x}", c.span_id), "53995c3f42cd8ad8");
    assert!(c.sampled);
    assert_eq!(TraceContext::from_xray("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"), None);
    assert_eq!(TraceContext::from_xray("Root=2-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8"), None);
    assert_eq!(TraceContext::from_xray("nonsense"), None);

    // The caller's traceparent wins; an unsampled X-Ray header starts a new trace.
    assert_eq!(invocation_parent(Some(TP), Some(header)), TraceContext::from_traceparent(TP));
    assert_eq!(invocation_parent(Some("garbage"), Some(header)), Some(c));
    let unsampled = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0";
    assert_eq!(invocation_parent(None, Some(unsampled)), None);
}

fn settings(vars: &[(&str, &str)]) -> Result<Option<OtlpSettings>, String> {
    let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    OtlpSettings::from_env(&move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
}

#[test]
fn settings_follow_the_otel_environment_variables() {
    assert_eq!(settings(&[]).unwrap(), None);
    assert_eq!(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).unwrap(), None);
    let on = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")];
    let s = settings(&on).unwrap().unwrap();
    assert_eq!(s.endpoint.as_str(), "http://collector:4318/v1/traces");
    assert_eq!(s.resource[0], ("service.name".to_string(), "settle".to_string()));
    let s = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otlp.example.com/base/")]).unwrap().unwrap();
    assert_eq!(s.endpoint.as_str(), "https://otlp.example.com/base/v1/traces");
    let s = settings(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4318/custom"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=abc%20def, x-team=payments"),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,service.name=from-resource"),
        ("AWS_LAMBDA_FUNCTION_NAME", "settle-payment"),
        ("AWS_REGION", "eu-west-1"),
    ])
    .unwrap()
    .unwrap();
    assert_eq!(s.endpoint.as_str(), "http://collector:4318/custom");
    let headers: Vec<(&str, &str)> = s.headers.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
    assert_eq!(headers, [("x-api-key", "abc def"), ("x-team", "payments")]);
    assert!(!format!("{s:?}").contains("abc def"), "header values never print");
    let resource: std::collections::HashMap<_, _> = s.resource.iter().cloned().collect();
    assert_eq!(resource["service.name"], "from-resource");
    assert_eq!(resource["deployment.environment"], "prod");
    assert_eq!(resource["faas.name"], "settle-payment");
    assert_eq!(resource["cloud.region"], "eu-west-1");
    // Off switches win over an endpoint.
    assert_eq!(settings(&[on[0], ("OTEL_SDK_DISABLED", "true")]).unwrap(), None);
    assert_eq!(settings(&[on[0], ("OTEL_TRACES_EXPORTER", "none")]).unwrap(), None);
    // Errors name the variable and never echo a header's value.
    let grpc = settings(&[on[0], ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap_err();
    assert!(grpc.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{grpc}");
    let injected = settings(&[on[0], ("OTEL_EXPORTER_OTLP_HEADERS", "x-key=secret%0d%0aEvil: 1")]).unwrap_err();
    assert!(injected.contains("OTEL_EXPORTER_OTLP_HEADERS") && !injected.contains("secret"), "{injected}");
    assert!(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector")]).is_err());
    assert!(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url")]).is_err());
}

/// A subscriber with only the trace layer, as `telemetry::init` filters it.
fn subscriber(exporter: &std::sync::Arc<Exporter>) -> impl tracing::Subscriber + Send + Sync {
    let layer =
        OtlpLayer::new(exporter.clone()).with_filter(filter_fn(|m| m.is_span() && m.target().starts_with("settle")));
    tracing_subscriber::registry().with(layer)
}

fn exporter(endpoint: &str) -> std::sync::Arc<Exporter> {
    Exporter::new(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)]).unwrap().unwrap())
}

fn by_name<'a>(spans: &'a [FinishedSpan], name: &str) -> &'a FinishedSpan {
    spans.iter().find(|s| s.state.name == name).unwrap_or_else(|| panic!("no span {name}"))
}

#[test]
fn spans_continue_a_remote_parent_and_children_link_to_their_parent() {
    let exporter = exporter("http://127.0.0.1:1");
    tracing::subscriber::with_default(subscriber(&exporter), || {
        let remote = TraceContext::from_traceparent(TP).unwrap();
        let invocation = tracing::info_span!(target: "settle_test", "invocation", request_id = "r-1");
        set_parent(&invocation, remote);
        describe(&invocation, "POST /v1/payments", SpanKind::Server);
        set_attribute(&invocation, "http.response.status_code", 201u16);
        invocation.in_scope(|| {
            let call = crate::dependency_span!("mongodb", "insert", "payments");
            let inner = call.in_scope(current).unwrap();
            assert_eq!(inner.trace_id, remote.trace_id);
            assert_eq!(call.in_scope(traceparent).unwrap(), inner.traceparent());
            set_error(&call, "duplicate key");
        });
        // Another crate's spans are not exported, nor a dependency call outside any span.
        drop(tracing::info_span!(target: "hyper", "connection"));
        drop(crate::dependency_span!("sqs", "ReceiveMessage", "poller"));
    });
    let spans = exporter.take();
    assert_eq!(spans.len(), 2, "{spans:?}");
    let server = by_name(&spans, "POST /v1/payments");
    let call = by_name(&spans, "mongodb insert payments");
    assert_eq!(server.state.context.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
    assert_eq!(server.state.parent_span_id, Some(0x00f067aa0ba902b7));
    assert_eq!(server.state.kind, SpanKind::Server);
    assert_eq!(call.state.context.trace_id, server.state.context.trace_id);
    assert_eq!(call.state.parent_span_id, Some(server.state.context.span_id));
    assert_eq!(call.state.kind, SpanKind::Client);
    assert_eq!(call.state.status, Status::Error("duplicate key".into()));
    let attribute =
        |s: &FinishedSpan, k: &str| s.state.attributes.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    assert_eq!(attribute(server, "request_id"), Some(AttrValue::Str("r-1".into())));
    assert_eq!(attribute(server, "http.response.status_code"), Some(AttrValue::Int(201)));
    assert_eq!(attribute(call, "peer.service"), Some(AttrValue::Str("mongodb".into())));
    assert!(call.end_unix_nano >= call.state.start_unix_nano);
}

#[test]
fn an_unsampled_parent_is_propagated_but_not_exported() {
    let exporter = exporter("http://127.0.0.1:1");
    tracing::subscriber::with_default(subscriber(&exporter), || {
        let span = tracing::info_span!(target: "settle_test", "invocation");
        let parent = TraceContext::from_traceparent(&TP.replace("-01", "-00")).unwrap();
        set_parent(&span, parent);
        let inner = span.in_scope(current).unwrap();
        assert_eq!((inner.trace_id, inner.sampled), (parent.trace_id, false));
    });
    assert!(exporter.take().is_empty());
    // Without the layer there is no context to propagate.
    assert_eq!(tracing::info_span!(target: "settle_test", "x").in_scope(traceparent), None);
}

/// One HTTP request: its head and its body.
async fn receive_one(listener: tokio::net::TcpListener, status: &str) -> (String, serde_json::Value) {
    let (mut socket, _) = listener.accept().await.unwrap();
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = socket.read(&mut chunk).await.unwrap();
        data.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&data).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap();
            if body.len() >= length {
                socket.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes()).await.unwrap();
                return (head.to_string(), serde_json::from_str(body).unwrap());
            }
        }
        assert!(n > 0, "connection closed before the whole request");
    }
}

#[tokio::test]
async fn flush_posts_otlp_json_with_the_configured_headers() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let received = tokio::spawn(receive_one(listener, "200 OK"));
    let exporter = Exporter::new(
        settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://{address}")),
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20t0ken"),
            ("OTEL_SERVICE_NAME", "settle-test"),
        ])
        .unwrap()
        .unwrap(),
    );
    {
        let _guard = tracing::subscriber::set_default(subscriber(&exporter));
        let span = tracing::info_span!(target: "settle_test", "invocation", cold_start = true, attempt = 3u64);
        set_parent(&span, TraceContext::from_traceparent(TP).unwrap());
        set_error(&span, "receiver answered 503");
    }
    exporter.flush().await;
    let (head, body) = received.await.unwrap();
    assert!(head.starts_with("POST /v1/traces HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nauthorization: Bearer t0ken"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
    let resource = &body["resourceSpans"][0];
    assert_eq!(
        resource["resource"]["attributes"][0],
        serde_json::json!({"key": "service.name", "value": {"stringValue": "settle-test"}})
    );
    let span = &resource["scopeSpans"][0]["spans"][0];
    assert_eq!(span["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(span["parentSpanId"], "00f067aa0ba902b7");
    assert_eq!(span["spanId"].as_str().unwrap().len(), 16);
    assert_eq!(span["name"], "invocation");
    assert_eq!(span["kind"], 1);
    assert_eq!(span["status"], serde_json::json!({"code": 2, "message": "receiver answered 503"}));
    assert!(span["startTimeUnixNano"].as_str().unwrap().parse::<u64>().unwrap() > 0);
    let attributes = span["attributes"].as_array().unwrap();
    assert!(attributes.contains(&serde_json::json!({"key": "cold_start", "value": {"boolValue": true}})));
    assert!(attributes.contains(&serde_json::json!({"key": "attempt", "value": {"intValue": "3"}})));
    // Sent spans leave the buffer.
    assert!(exporter.take().is_empty());
}

#[tokio::test]
async fn a_failing_collector_costs_the_spans_not_the_caller() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let received = tokio::spawn(receive_one(listener, "503 Service Unavailable"));
    let refused = exporter(&format!("http://{address}"));
    {
        let _guard = tracing::subscriber::set_default(subscriber(&refused));
        drop(tracing::info_span!(target: "settle_test", "invocation"));
    }
    refused.flush().await;
    received.await.unwrap();
    assert!(refused.take().is_empty());
    // Nobody listening: the flush returns (refused), it does not hang or panic.
    let closed = exporter(&format!("http://{address}"));
    {
        let _guard = tracing::subscriber::set_default(subscriber(&closed));
        drop(tracing::info_span!(target: "settle_test", "invocation"));
    }
    tokio::time::timeout(std::time::Duration::from_secs(5), closed.flush()).await.unwrap();
}

#[test]
fn status_fields_set_the_span_status() {
    let exporter = exporter("http://127.0.0.1:1");
    tracing::subscriber::with_default(subscriber(&exporter), || {
        let span = tracing::info_span!(target: "settle_test", "call", otel.status_code = tracing::field::Empty);
        span.record("otel.status_code", "error");
    });
    assert_eq!(exporter.take()[0].state.status, Status::Error(String::new()));
}
