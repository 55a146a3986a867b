//! RFC 9457 problem details (`application/problem+json`): the one shape every HTTP error
//! of Settle takes, so clients can rely on `type`, `title`, `status`, `detail` and,
//! where one field is at fault, `field`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Base of the `type` URIs: each problem kind has a stable, documented name.
pub const TYPE_BASE: &str = "https://settle.dev/problems/";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request field at fault, as a JSON pointer-ish path (`amount`, `metadata.key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Problem-specific members (RFC 9457 §3.2 extensions), e.g. `current_state`.
    #[serde(flatten, default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extensions: serde_json::Map<String, serde_json::Value>,
    /// Headers that belong with the problem (`Retry-After`, `WWW-Authenticate`).
    #[serde(skip)]
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl Problem {
    /// `kind` is a short snake_case name (`validation_error`); it becomes the `type` URI.
    pub fn new(status: StatusCode, kind: &str, title: &str) -> Self {
        Problem {
            problem_type: format!("{TYPE_BASE}{kind}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail: None,
            field: None,
            extensions: serde_json::Map::new(),
            headers: Vec::new(),
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn with_extension(mut self, key: &str, value: serde_json::Value) -> Self {
        self.extensions.insert(key.to_string(), value);
        self
    }

    pub fn with_header(mut self, name: header::HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    /// The short kind (`validation_error`) this problem was built with.
    pub fn kind(&self) -> &str {
        self.problem_type.strip_prefix(TYPE_BASE).unwrap_or(&self.problem_type)
    }

    pub fn not_found() -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not_found", "Not Found").with_detail("no resource at this path")
    }

    pub fn method_not_allowed() -> Self {
        Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "Method Not Allowed")
    }

    /// A dependency is down: the client may retry after `retry_after_secs`.
    pub fn unavailable(dependency: &str, retry_after_secs: u32) -> Self {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", "Service Unavailable")
            .with_detail(format!("{dependency} is unavailable; retry later"))
            .with_header(header::RETRY_AFTER, &retry_after_secs.to_string())
    }

    /// An unexpected failure. The body stays opaque; the cause is logged by the caller.
    pub fn internal() -> Self {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "Internal Server Error")
            .with_detail("an unexpected error occurred; it has been logged")
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_as_rfc9457_with_field_and_extensions() {
        let p = Problem::new(StatusCode::BAD_REQUEST, "validation_error", "Invalid request")
            .with_detail("amount must be positive")
            .with_field("amount")
            .with_extension("current_state", serde_json::json!("succeeded"));
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["type"], "https://settle.dev/problems/validation_error");
        assert_eq!(v["status"], 400);
        assert_eq!(v["field"], "amount");
        assert_eq!(v["current_state"], "succeeded");
        assert_eq!(p.kind(), "validation_error");
    }

    #[test]
    fn response_has_problem_content_type_and_headers() {
        let r = Problem::unavailable("MongoDB", 5).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
    }
}
