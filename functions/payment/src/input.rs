//! Strict request input: JSON bodies (content type checked, size bounded, unknown fields
//! refused, the faulty field named), query strings and path ids. Error details never
//! quote the offending value: it may be a card number.

use crate::error::ApiError;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use settle_shared::domain::ids::PaymentId;
use std::collections::BTreeMap;

/// Largest accepted request body. Settle's requests are small; a larger body is an error
/// or an attack.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A request body, read (and bounded) but not yet parsed: handlers parse it inside their
/// idempotency scope, so that even a malformed body answers consistently for one key.
pub struct Input {
    pub raw: Bytes,
    is_json: bool,
}

impl<S: Send + Sync> FromRequest<S> for Input {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let is_json = content_type.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json");
        let raw = axum::body::to_bytes(request.into_body(), BODY_LIMIT)
            .await
            .map_err(|_| ApiError::PayloadTooLarge { limit: BODY_LIMIT })?;
        Ok(Input { raw, is_json })
    }
}

impl Input {
    /// The body as `T`. An empty body is an empty object (`POST …/confirm` needs no
    /// parameters), whatever its content type; anything else must be declared JSON.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        if self.raw.is_empty() {
            return parse_json(b"{}");
        }
        if !self.is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        parse_json(&self.raw)
    }
}

/// Deserialises `raw`, naming the field at fault.
pub fn parse_json<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    // Every body is an object. serde would otherwise read a JSON array positionally into
    // a struct (`[500]` as `{"amount": 500}`), past `deny_unknown_fields`.
    match raw.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(_) => return Err(ApiError::field("body", "must be a JSON object")),
        None => return Err(ApiError::MalformedJson("empty document".into())),
    }
    let mut deserializer = serde_json::Deserializer::from_slice(raw);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => field_error(&path, &inner.to_string()),
            _ => ApiError::MalformedJson(format!("line {} column {}", inner.line(), inner.column())),
        }
    })?;
    deserializer.end().map_err(|e| ApiError::MalformedJson(format!("trailing characters at column {}", e.column())))?;
    Ok(value)
}

/// Turns serde's message into (field, detail) without quoting input values.
fn field_error(path: &str, message: &str) -> ApiError {
    let message = message.split(" at line ").next().unwrap_or(message);
    let within = |name: &str| if path == "." || path.is_empty() { name.to_string() } else { format!("{path}.{name}") };
    if let Some(name) = backticked(message, "unknown field `") {
        // The path already ends at the unknown key.
        let field = if path == name || path.ends_with(&format!(".{name}")) { path.to_string() } else { within(&name) };
        return ApiError::field(field, "unknown field");
    }
    if let Some(name) = backticked(message, "missing field `") {
        return ApiError::field(within(&name), "is required");
    }
    let field = if path == "." || path.is_empty() { "body".to_string() } else { path.to_string() };
    // "invalid type: integer `4242…`, expected a string" → "invalid type: expected a string".
    let detail = match (message.split_once(':'), message.split_once("expected")) {
        (Some((kind, _)), Some((_, expected))) => format!("{kind}: expected{expected}"),
        _ => strip_backticks(message),
    };
    ApiError::field(field, detail)
}

fn backticked(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    Some(rest.split('`').next()?.to_string())
}

fn strip_backticks(message: &str) -> String {
    let mut out = String::new();
    for (i, part) in message.split('`').enumerate() {
        out.push_str(if i % 2 == 1 { "…" } else { part });
    }
    out
}

/// For times and counts (never money): an integer, also when written with a zero
/// fraction (`4102444800.0`), which JSON Schema counts as an integer.
pub fn lenient_int<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    use serde::de::Error;
    let n = serde_json::Number::deserialize(deserializer)?;
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        _ => Err(D::Error::custom("expected an integer")),
    }
}

/// [`lenient_int`] for optional fields.
pub fn lenient_opt_int<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    #[derive(serde::Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "lenient_int")] i64);
    Option::<Wrapped>::deserialize(deserializer).map(|w| w.map(|Wrapped(i)| i))
}

/// A query string as a map, refusing repeated and unknown parameters.
pub fn query_params(raw: Option<&str>, allowed: &[&str]) -> Result<BTreeMap<String, String>, ApiError> {
    let mut params = BTreeMap::new();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode =
            |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8().map(|c| c.into_owned());
        let key = decode(key).map_err(|_| ApiError::field("query", "not valid UTF-8"))?;
        let value = decode(value).map_err(|_| ApiError::field(key.clone(), "not valid UTF-8"))?;
        if !allowed.contains(&key.as_str()) {
            return Err(ApiError::field(key, "unknown query parameter"));
        }
        if params.insert(key.clone(), value).is_some() {
            return Err(ApiError::field(key, "given more than once"));
        }
    }
    Ok(params)
}

/// Parses an integer query parameter within `range`.
pub fn int_param(
    params: &BTreeMap<String, String>,
    name: &str,
    range: std::ops::RangeInclusive<i64>,
) -> Result<Option<i64>, ApiError> {
    match params.get(name) {
        None => Ok(None),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(ApiError::field(name, format!("must be an integer from {} to {}", range.start(), range.end()))),
        },
    }
}

/// The scheme and host the client called, for links back to this API.
pub fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)))
        .unwrap_or("localhost");
    let proto = match headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()) {
        Some("https") => "https",
        Some("http") => "http",
        _ if host.starts_with("127.0.0.1") || host.starts_with("localhost") => "http",
        _ => "https",
    };
    format!("{proto}://{host}")
}

/// A payment id from the path; one that cannot be a payment's is not found.
pub fn parse_payment_id(id: &str) -> Result<PaymentId, ApiError> {
    PaymentId::parse(id).map_err(|_| ApiError::NotFound("payment"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Card {
        number: String,
        exp_month: u32,
    }

    fn error(raw: &str) -> (String, String) {
        match parse_json::<Card>(raw.as_bytes()).unwrap_err() {
            ApiError::Validation { field, detail } => (field, detail),
            other => (String::from("<other>"), other.to_string()),
        }
    }

    #[test]
    fn errors_name_the_field_and_never_echo_values() {
        let (field, detail) = error(r#"{"number": 4242424242424242, "exp_month": 1}"#);
        assert_eq!(field, "number");
        assert!(!detail.contains("4242"), "{detail}");
        assert_eq!(error(r#"{"number": "x", "exp_month": 1, "cvc": "123"}"#).0, "cvc");
        assert_eq!(error(r#"{"exp_month": 1}"#), ("number".to_string(), "is required".to_string()));
        assert_eq!(error(r#"{"number": "x", "exp_month": -1}"#).0, "exp_month");
        assert!(matches!(parse_json::<Card>(b"{"), Err(ApiError::MalformedJson(_))));
        assert!(matches!(parse_json::<Card>(br#"{"number":"x","exp_month":1} x"#), Err(ApiError::MalformedJson(_))));
        assert_eq!(error(r#""just a string""#).0, "body");
        assert_eq!(error(r#"["x", 1]"#), ("body".to_string(), "must be a JSON object".to_string()));
    }

    #[test]
    fn times_accept_integral_floats_only() {
        #[derive(Debug, serde::Deserialize)]
        struct Since {
            #[serde(deserialize_with = "lenient_int")]
            since: i64,
        }
        assert_eq!(parse_json::<Since>(br#"{"since": 4102444800.0}"#).unwrap().since, 4_102_444_800);
        assert_eq!(parse_json::<Since>(br#"{"since": 17}"#).unwrap().since, 17);
        assert!(parse_json::<Since>(br#"{"since": 1.5}"#).is_err());
        assert!(parse_json::<Since>(br#"{"since": 1e300}"#).is_err());
        assert!(parse_json::<Since>(br#"{"since": "17"}"#).is_err());
    }

    #[test]
    fn query_strings_are_strict() {
        let q = query_params(Some("limit=10&status=succeeded"), &["limit", "status"]).unwrap();
        assert_eq!(int_param(&q, "limit", 1..=100).unwrap(), Some(10));
        assert!(query_params(Some("limit=1&limit=2"), &["limit"]).is_err());
        assert!(query_params(Some("evil=1"), &["limit"]).is_err());
        let q = query_params(Some("limit=0"), &["limit"]).unwrap();
        assert!(int_param(&q, "limit", 1..=100).is_err());
    }
}
