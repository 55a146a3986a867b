//! Metrics in CloudWatch Embedded Metric Format: one JSON line on stdout per record, which
//! CloudWatch Logs turns into metrics, with no API call and nothing to wait for.
//!
//! On by default inside Lambda (`AWS_LAMBDA_FUNCTION_NAME` set), off elsewhere so that a
//! local terminal is not flooded; `SETTLE_METRICS=emf|off` overrides. Namespace
//! `SETTLE_METRICS_NAMESPACE` (default `Settle`); every record has the dimension `Function`.

use serde_json::{json, Map, Value};
use std::sync::{Mutex, OnceLock};

/// The CloudWatch units Settle uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
    Seconds,
    /// Money in minor units has no CloudWatch unit of its own.
    None,
    CountPerSecond,
    BytesPerSecond,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Seconds => "Seconds",
            Unit::None => "None",
            Unit::CountPerSecond => "Count/Second",
            Unit::BytesPerSecond => "Bytes/Second",
        }
    }
}

/// One measurement: name, value and unit.
#[derive(Debug, Clone, Copy)]
pub struct Measure<'a> {
    pub name: &'a str,
    pub value: f64,
    pub unit: Unit,
}

impl<'a> Measure<'a> {
    pub fn count(name: &'a str, value: u64) -> Self {
        Measure { name, value: value as f64, unit: Unit::Count }
    }
}

/// Where lines go: stdout, or a test's collector.
type Sink = Box<dyn Fn(&str) + Send + Sync>;

struct Settings {
    enabled: bool,
    namespace: String,
}

fn settings() -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let in_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
        let enabled = match std::env::var("SETTLE_METRICS").ok().as_deref() {
            Some("emf") => true,
            Some("off") => false,
            _ => in_lambda,
        };
        let namespace = std::env::var("SETTLE_METRICS_NAMESPACE").unwrap_or_else(|_| "Settle".to_string());
        Settings { enabled, namespace }
    })
}

fn sink() -> &'static Mutex<Option<Sink>> {
    static SINK: OnceLock<Mutex<Option<Sink>>> = OnceLock::new();
    SINK.get_or_init(|| Mutex::new(None))
}

/// Sends every record to `collect` instead of stdout, whatever the settings (tests).
pub fn capture_with(collect: impl Fn(&str) + Send + Sync + 'static) {
    *sink().lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(collect));
}

/// The EMF document of one record. `dimensions` become metric dimensions (with
/// `Function`); `properties` are searchable fields on the log line only (ids, keys).
pub fn document(
    namespace: &str,
    function: &str,
    dimensions: &[(&str, &str)],
    measures: &[Measure<'_>],
    properties: &[(&str, Value)],
    timestamp_ms: i64,
) -> Value {
    let mut root = Map::new();
    let mut dimension_names = vec![Value::from("Function")];
    root.insert("Function".into(), Value::from(function));
    for (name, value) in dimensions {
        dimension_names.push(Value::from(*name));
        root.insert((*name).into(), Value::from(*value));
    }
    let definitions: Vec<Value> = measures.iter().map(|m| json!({ "Name": m.name, "Unit": m.unit.as_str() })).collect();
    for m in measures {
        // Non-finite values would make the line invalid JSON for CloudWatch: dropped as 0.
        root.insert(m.name.into(), Value::from(if m.value.is_finite() { m.value } else { 0.0 }));
    }
    for (name, value) in properties {
        root.entry(*name).or_insert_with(|| value.clone());
    }
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [dimension_names],
                "Metrics": definitions,
            }],
        }),
    );
    Value::Object(root)
}

/// Writes one record (see [`document`]) when metrics are on or captured.
pub fn emit(function: &str, dimensions: &[(&str, &str)], measures: &[Measure<'_>], properties: &[(&str, Value)]) {
    let captured = sink().lock().unwrap_or_else(|p| p.into_inner());
    let settings = settings();
    if captured.is_none() && !settings.enabled {
        return;
    }
    let line = document(
        &settings.namespace,
        function,
        dimensions,
        measures,
        properties,
        chrono::Utc::now().timestamp_millis(),
    )
    .to_string();
    match captured.as_ref() {
        Some(collect) => collect(&line),
        None => {
            use std::io::Write;
            // One write per line, so that concurrent records never interleave.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
        }
    }
}

/// `ColdStart` = 1 on the first invocation of a process, nothing afterwards.
pub fn cold_start(function: &str, cold: bool) {
    if cold {
        emit(function, &[], &[Measure::count("ColdStart", 1)], &[]);
    }
}

/// Collects every record from now on (see [`capture_with`]); for tests, which pick
/// their own records out by a property such as a payment id.
pub fn capture() -> std::sync::Arc<Mutex<Vec<String>>> {
    static LINES: OnceLock<std::sync::Arc<Mutex<Vec<String>>>> = OnceLock::new();
    let lines = LINES.get_or_init(|| {
        let lines = std::sync::Arc::new(Mutex::new(Vec::new()));
        let collected = lines.clone();
        capture_with(move |line| collected.lock().unwrap_or_else(|p| p.into_inner()).push(line.to_string()));
        lines
    });
    lines.clone()
}

/// Parses one line as CloudWatch does: a JSON object whose `_aws` directive has an integer
/// `Timestamp` and at least one `CloudWatchMetrics` entry, whose every dimension is a
/// string member of the object and every metric a number member (the EMF specification's
/// rules). Returns the object, or what is wrong.
pub fn parse_emf(line: &str) -> Result<Map<String, Value>, String> {
    let Value::Object(root) = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))? else {
        return Err("not a JSON object".into());
    };
    let aws = root.get("_aws").ok_or("no _aws member")?;
    aws["Timestamp"].as_i64().ok_or("_aws.Timestamp is not an integer")?;
    let directives = aws["CloudWatchMetrics"].as_array().filter(|d| !d.is_empty()).ok_or("no CloudWatchMetrics")?;
    for directive in directives {
        directive["Namespace"].as_str().filter(|n| !n.is_empty()).ok_or("no Namespace")?;
        let sets = directive["Dimensions"].as_array().ok_or("Dimensions is not an array")?;
        for name in sets.iter().flat_map(|set| set.as_array().into_iter().flatten()) {
            let name = name.as_str().ok_or("a dimension name is not a string")?;
            root.get(name).and_then(Value::as_str).ok_or(format!("dimension {name} is not a string member"))?;
        }
        let metrics = directive["Metrics"].as_array().filter(|m| !m.is_empty()).ok_or("no Metrics")?;
        for metric in metrics {
            let name = metric["Name"].as_str().ok_or("a metric has no Name")?;
            root.get(name).and_then(Value::as_f64).ok_or(format!("metric {name} is not a number member"))?;
        }
    }
    Ok(root)
}

/// The records captured so far that carry `property` = `value`, parsed by [`parse_emf`].
pub fn captured_with(lines: &Mutex<Vec<String>>, property: &str, value: &str) -> Vec<Map<String, Value>> {
    let lines = lines.lock().unwrap_or_else(|p| p.into_inner());
    lines
        .iter()
        .map(|line| parse_emf(line).unwrap_or_else(|e| panic!("invalid EMF line {line}: {e}")))
        .filter(|record| record.get(property).and_then(Value::as_str) == Some(value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_a_valid_emf_document() {
        let doc = document(
            "Settle",
            "payment",
            &[("Outcome", "succeeded")],
            &[Measure::count("Payments", 1), Measure { name: "Amount", value: f64::NAN, unit: Unit::None }],
            &[("payment_id", json!("pay_1")), ("Function", json!("overridden?"))],
            1_700_000_000_000,
        );
        let aws = &doc["_aws"];
        assert_eq!(aws["Timestamp"], 1_700_000_000_000i64);
        let directive = &aws["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "Settle");
        assert_eq!(directive["Dimensions"], json!([["Function", "Outcome"]]));
        assert_eq!(
            directive["Metrics"],
            json!([{"Name": "Payments", "Unit": "Count"}, {"Name": "Amount", "Unit": "None"}])
        );
        // Every dimension and metric named in the directive is a member of the root.
        assert_eq!((doc["Function"].as_str(), doc["Outcome"].as_str()), (Some("payment"), Some("succeeded")));
        assert_eq!((doc["Payments"].as_f64(), doc["Amount"].as_f64()), (Some(1.0), Some(0.0)));
        assert_eq!(doc["payment_id"], "pay_1", "properties ride along");
        assert!(parse_emf(&doc.to_string()).is_ok());
    }

    #[test]
    fn lines_that_cloudwatch_would_refuse_are_told_apart() {
        let good = document("Settle", "notify", &[], &[Measure::count("Deliveries", 1)], &[], 1).to_string();
        assert!(parse_emf(&good).is_ok());
        for (bad, why) in [
            ("not json", "not JSON"),
            ("{}", "no _aws"),
            (
                r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"S","Dimensions":[["Function"]],"Metrics":[{"Name":"X"}]}]},"X":1}"#,
                "dimension Function",
            ),
            (
                r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"S","Dimensions":[],"Metrics":[{"Name":"X"}]}]},"X":"1"}"#,
                "metric X",
            ),
        ] {
            let error = parse_emf(bad).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }
}
