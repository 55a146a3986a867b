//! `GET /openapi.json`: the OpenAPI 3.1 description of this API, built from the same
//! constants the handlers use (limits, header names, states, test cards), so that what
//! it says matches what the code accepts. Every error is a problem document (`default`).

use crate::idempotency::IDEMPOTENCY_KEY;
use crate::input::BODY_LIMIT;
use crate::payments::MAX_METADATA;
use axum::Json;
use serde_json::{json, Value};
use settle_shared::domain::payment::PaymentStatus;

fn problem_response() -> Value {
    json!({"description": "An RFC 9457 problem document", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
}

fn ok(status: &str, schema: &str, description: &str) -> Value {
    json!({
        status: {"description": description, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}},
        "default": problem_response(),
    })
}

fn body(schema: &str, required: bool) -> Value {
    json!({"required": required, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn idempotency_key() -> Value {
    json!({"$ref": "#/components/parameters/IdempotencyKey"})
}

fn path_param(name: &str, pattern: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "pattern": pattern}})
}

const PAY_ID: &str = "^pay_[0-9a-f]{32}$";
const RE_ID: &str = "^re_[0-9a-f]{32}$";

const WE_ID: &str = "^we_[0-9a-f]{32}$";

/// The webhook-endpoint routes and their schemas.
fn add_webhook_endpoints(doc: &mut Value) {
    let secured = json!([{"bearer": []}]);
    let id = path_param("id", WE_ID);
    let list_of = |schema: &str| {
        json!({"type": "object", "required": ["object", "data", "has_more"], "properties": {
        "object": {"const": "list"}, "data": {"type": "array", "items": {"$ref": format!("#/components/schemas/{schema}")}}, "has_more": {"type": "boolean"}}})
    };
    let paths = json!({
        "/v1/webhook_endpoints": {
            "post": {"operationId": "createWebhookEndpoint", "security": secured, "parameters": [idempotency_key()],
                "requestBody": body("WebhookEndpointCreate", true), "responses": ok("201", "WebhookEndpoint", "The endpoint, with its secret (shown once)")},
            "get": {"operationId": "listWebhookEndpoints", "security": secured,
                "parameters": [{"name": "merchant_id", "in": "query", "description": "Admins only", "schema": {"type": "string"}}],
                "responses": ok("200", "WebhookEndpointList", "The endpoints")}},
        "/v1/webhook_endpoints/{id}": {
            "get": {"operationId": "getWebhookEndpoint", "security": secured, "parameters": [id.clone()], "responses": ok("200", "WebhookEndpoint", "The endpoint")},
            "patch": {"operationId": "updateWebhookEndpoint", "security": secured, "parameters": [id.clone()],
                "requestBody": body("WebhookEndpointUpdate", false), "responses": ok("200", "WebhookEndpoint", "The endpoint")},
            "delete": {"operationId": "deleteWebhookEndpoint", "security": secured, "parameters": [id.clone()],
                "responses": {"204": {"description": "Deleted"}, "default": problem_response()}}},
        "/v1/webhook_endpoints/{id}/rotate_secret": {"post": {"operationId": "rotateWebhookSecret", "security": secured,
            "parameters": [id.clone(), idempotency_key()], "requestBody": body("Empty", false),
            "responses": ok("200", "WebhookEndpoint", "The endpoint, with its new secret")}},
        "/v1/webhook_endpoints/{id}/attempts": {"get": {"operationId": "listEndpointAttempts", "security": secured,
            "parameters": [id.clone(), {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}}],
            "responses": ok("200", "AttemptList", "Attempts, newest first")}},
        "/v1/webhook_endpoints/{id}/resend": {"post": {"operationId": "resendEvent", "security": secured, "parameters": [id.clone()],
            "requestBody": body("Resend", true), "responses": ok("202", "Resent", "Queued")}},
        "/v1/webhook_endpoints/{id}/recover": {"post": {"operationId": "recoverEndpoint", "security": secured, "parameters": [id],
            "requestBody": body("Recover", true), "responses": ok("202", "Resent", "Queued")}},
        "/v1/settlements/summary": {"get": {"operationId": "settlementSummary", "security": secured,
            "parameters": [
                {"name": "date", "in": "query", "required": true, "schema": {"type": "string", "format": "date"}},
                {"name": "merchant_id", "in": "query", "description": "Required for support and admin", "schema": {"type": "string", "pattern": "^m_[A-Za-z0-9_-]{1,64}$"}}],
            "responses": {"200": {"description": "Counts and sums per currency, type and outcome", "content": {"application/json": {"schema": {
                "type": "object", "required": ["object", "merchant_id", "date", "currencies"], "properties": {
                    "object": {"const": "settlement_summary"}, "merchant_id": {"type": "string"}, "date": {"type": "string"},
                    "currencies": {"type": "object"}}}}}}, "default": problem_response()}}},
        "/v1/events/{event_id}/attempts": {"get": {"operationId": "listEventAttempts", "security": secured,
            "parameters": [path_param("event_id", "^evt_[0-9a-f]{32}$"), {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}}],
            "responses": ok("200", "AttemptList", "Attempts, newest first")}},
    });
    let event_types: Vec<&str> = settle_shared::domain::event::EVENT_TYPES.to_vec();
    let schemas = json!({
        "WebhookEndpointCreate": {"type": "object", "additionalProperties": false, "required": ["url"], "properties": {
            "url": {"type": "string", "format": "uri", "pattern": "^https://", "maxLength": 2048, "description": "https; no private or metadata addresses"},
            "event_types": {"type": "array", "items": {"type": "string", "enum": event_types}},
            "description": {"type": ["string", "null"], "maxLength": 500},
            "enabled": {"type": "boolean", "default": true},
            "merchant_id": {"type": ["string", "null"], "description": "Admins only"}}},
        "WebhookEndpointUpdate": {"type": "object", "additionalProperties": false, "properties": {
            "url": {"type": ["string", "null"], "format": "uri", "pattern": "^https://", "maxLength": 2048},
            "event_types": {"type": ["array", "null"], "items": {"type": "string", "enum": event_types}},
            "description": {"type": ["string", "null"], "maxLength": 500},
            "enabled": {"type": ["boolean", "null"]}}},
        "WebhookEndpoint": {"type": "object", "required": ["id", "object", "merchant_id", "url", "event_types", "enabled", "created"], "properties": {
            "id": {"type": "string"}, "object": {"const": "webhook_endpoint"}, "merchant_id": {"type": "string"}, "url": {"type": "string"},
            "event_types": {"type": "array", "items": {"type": "string"}}, "description": {"type": "string"}, "enabled": {"type": "boolean"},
            "disabled_reason": {"type": "string"}, "created": {"type": "integer"},
            "secret": {"type": "string", "description": "whsec_…; only when created or rotated"}}},
        "WebhookEndpointList": list_of("WebhookEndpoint"),
        "Attempt": {"type": "object", "properties": {"id": {"type": "string"}, "endpoint_id": {"type": "string"}, "event_id": {"type": "string"},
            "attempt": {"type": "integer"}, "at": {"type": "integer"}, "status_code": {"type": ["integer", "null"]},
            "duration_ms": {"type": "integer"}, "response_excerpt": {"type": "string"}, "error": {"type": ["string", "null"]},
            "next_retry_at": {"type": ["integer", "null"]}}},
        "AttemptList": list_of("Attempt"),
        "Resend": {"type": "object", "additionalProperties": false, "required": ["event_id"], "properties": {
            "event_id": {"type": "string", "pattern": "^evt_[0-9a-f]{32}$"}}},
        "Recover": {"type": "object", "additionalProperties": false, "required": ["since"], "properties": {
            "since": {"type": "integer", "minimum": 0, "maximum": 4_102_444_800_i64}}},
        "Resent": {"type": "object", "required": ["resent", "event_ids"], "properties": {
            "resent": {"type": "integer"}, "event_ids": {"type": "array", "items": {"type": "string"}}}},
    });
    for (k, v) in paths.as_object().into_iter().flatten() {
        doc["paths"][k] = v.clone();
    }
    for (k, v) in schemas.as_object().into_iter().flatten() {
        doc["components"]["schemas"][k] = v.clone();
    }
}

/// The document.
pub fn document() -> Value {
    let mut doc = base_document();
    add_webhook_endpoints(&mut doc);
    doc
}

fn base_document() -> Value {
    let statuses: Vec<&str> = PaymentStatus::ALL.iter().map(|s| s.as_str()).collect();
    let currencies: Vec<&str> = settle_shared::domain::money::supported_currencies().collect();
    // Cards expiring before this year are refused.
    let this_year = chrono::Datelike::year(&chrono::Utc::now()) as u32;
    let secured = json!([{"bearer": []}]);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Settle Payment API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Payments, refunds and card tokens with Stripe-like semantics. Errors are RFC 9457 problem documents.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": {"operationId": "health", "security": [], "summary": "Dependency health (answered from a check at most 2 s old)",
                "responses": {
                    "200": {"description": "All dependencies answer", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}},
                    "503": {"description": "A dependency does not answer", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}},
                    "default": problem_response()}}},
            "/openapi.json": {"get": {"operationId": "openapi", "security": [], "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}, "default": problem_response()}}},
            "/v1/tokens": {"post": {"operationId": "createToken", "security": secured, "summary": "Tokenise a card",
                "parameters": [idempotency_key()], "requestBody": body("TokenCreate", true), "responses": ok("201", "Token", "The token")}},
            "/v1/payments": {
                "post": {"operationId": "createPayment", "security": secured, "summary": "Create (and optionally confirm) a payment",
                    "parameters": [idempotency_key()], "requestBody": body("PaymentCreate", true), "responses": ok("201", "Payment", "The payment")},
                "get": {"operationId": "listPayments", "security": secured, "summary": "List payments, newest first",
                    "parameters": [
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}},
                        {"name": "starting_after", "in": "query", "schema": {"type": "string", "pattern": PAY_ID}},
                        {"name": "status", "in": "query", "schema": {"type": "string", "enum": statuses}},
                        {"name": "created_gte", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 4_102_444_800_i64}},
                        {"name": "created_lte", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 4_102_444_800_i64}},
                        {"name": "merchant_id", "in": "query", "description": "Support and admin only", "schema": {"type": "string", "pattern": "^m_[A-Za-z0-9_-]{1,64}$"}}],
                    "responses": ok("200", "PaymentList", "A page of payments")}},
            "/v1/payments/{id}": {"get": {"operationId": "getPayment", "security": secured, "parameters": [path_param("id", PAY_ID)],
                "responses": ok("200", "Payment", "The payment")}},
            "/v1/payments/{id}/confirm": {"post": {"operationId": "confirmPayment", "security": secured,
                "parameters": [path_param("id", PAY_ID), idempotency_key()], "requestBody": body("Empty", false), "responses": ok("200", "Payment", "The payment")}},
            "/v1/payments/{id}/capture": {"post": {"operationId": "capturePayment", "security": secured,
                "parameters": [path_param("id", PAY_ID), idempotency_key()], "requestBody": body("Capture", false), "responses": ok("200", "Payment", "The payment")}},
            "/v1/payments/{id}/cancel": {"post": {"operationId": "cancelPayment", "security": secured,
                "parameters": [path_param("id", PAY_ID), idempotency_key()], "requestBody": body("Empty", false), "responses": ok("200", "Payment", "The payment")}},
            "/v1/payments/{id}/refunds": {
                "post": {"operationId": "createRefund", "security": secured, "parameters": [path_param("id", PAY_ID), idempotency_key()],
                    "requestBody": body("RefundCreate", false), "responses": ok("201", "Refund", "The refund")},
                "get": {"operationId": "listRefunds", "security": secured, "parameters": [path_param("id", PAY_ID)],
                    "responses": ok("200", "RefundList", "The payment's refunds")}},
            "/v1/payments/{id}/refunds/{refund_id}": {"get": {"operationId": "getRefund", "security": secured,
                "parameters": [path_param("id", PAY_ID), path_param("refund_id", RE_ID)], "responses": ok("200", "Refund", "The refund")}},
            "/v1/payments/{id}/3ds": {"get": {"operationId": "challengePage", "security": [], "summary": "3-D Secure challenge page (HTML)",
                "parameters": [path_param("id", PAY_ID), {"name": "challenge", "in": "query", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The page", "content": {"text/html": {"schema": {"type": "string"}}}}, "default": problem_response()}}},
            "/v1/payments/{id}/3ds/approve": {"post": {"operationId": "approveChallenge", "security": [],
                "parameters": [path_param("id", PAY_ID), {"name": "challenge", "in": "query", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "Outcome page", "content": {"text/html": {"schema": {"type": "string"}}}}, "default": problem_response()}}},
            "/v1/payments/{id}/3ds/reject": {"post": {"operationId": "rejectChallenge", "security": [],
                "parameters": [path_param("id", PAY_ID), {"name": "challenge", "in": "query", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "Outcome page", "content": {"text/html": {"schema": {"type": "string"}}}}, "default": problem_response()}}},
            "/v1/gateway/webhooks": {"post": {"operationId": "gatewayWebhook", "security": [],
                "summary": "Gateway results, signed: Settle-Gateway-Signature: v1=hex(HMAC-SHA256(secret, timestamp.raw_body))",
                "parameters": [
                    {"name": "Settle-Gateway-Timestamp", "in": "header", "required": true, "schema": {"type": "string"}},
                    {"name": "Settle-Gateway-Signature", "in": "header", "required": true, "schema": {"type": "string"}}],
                "requestBody": body("GatewayEvent", true),
                "responses": {"200": {"description": "Received", "content": {"application/json": {"schema": {"type": "object",
                    "properties": {"received": {"type": "boolean"}, "duplicate": {"type": "boolean"}}, "required": ["received", "duplicate"]}}}},
                    "default": problem_response()}}},
            "/v1/admin/revocations": {"post": {"operationId": "revoke", "security": secured, "summary": "Revoke sessions (admin, allowlisted addresses)",
                "requestBody": body("Revocation", true),
                "responses": ok("201", "Revoked", "Revoked")}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "parameters": {"IdempotencyKey": {"name": IDEMPOTENCY_KEY.as_str(), "in": "header", "required": true,
                "description": "Required on POSTs that move money or create objects; replays the first response for 24 h",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"}}},
            "schemas": {
                "Problem": {"type": "object", "required": ["type", "title", "status"], "properties": {
                    "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                    "detail": {"type": "string"}, "field": {"type": "string"}}},
                "Health": {"type": "object", "required": ["status"], "description": "backend and dependencies only for an admin token from an admin range", "properties": {
                    "status": {"type": "string", "enum": ["ok", "unreachable"]}, "backend": {"type": "string"},
                    "dependencies": {"type": "array", "items": {"type": "object", "required": ["name", "status"], "properties": {
                        "name": {"type": "string"}, "status": {"type": "string", "enum": ["ok", "unreachable"]}, "reason": {"type": "string"}}}}}},
                "Empty": {"type": "object", "additionalProperties": false, "maxProperties": 0},
                "TokenCreate": {"type": "object", "additionalProperties": false, "required": ["number", "exp_month", "exp_year", "cvc"], "properties": {
                    "number": {"type": "string", "pattern": "^[0-9][0-9 -]{10,30}[0-9]$", "description": "12–19 digits, spaces or dashes allowed; Luhn-checked, a known brand"},
                    "exp_month": {"type": "integer", "minimum": 1, "maximum": 12},
                    "exp_year": {"type": "integer", "minimum": this_year, "maximum": 2100},
                    "cvc": {"type": "string", "pattern": "^[0-9]{3,4}$"},
                    "holder_name": {"type": ["string", "null"], "maxLength": 200}}},
                "Token": {"type": "object", "required": ["id", "object", "brand", "last4", "exp_month", "exp_year", "fingerprint", "created"], "properties": {
                    "id": {"type": "string"}, "object": {"const": "token"}, "brand": {"type": "string"}, "last4": {"type": "string"},
                    "exp_month": {"type": "integer"}, "exp_year": {"type": "integer"}, "fingerprint": {"type": "string"},
                    "holder_name": {"type": "string"}, "created": {"type": "integer"}}},
                "PaymentCreate": {"type": "object", "additionalProperties": false, "required": ["amount", "currency", "token"], "properties": {
                    "amount": {"type": "integer", "minimum": 1, "maximum": 1_000_000_000_000_000_i64, "description": "Minor units"},
                    "currency": {"type": "string", "enum": currencies},
                    "token": {"type": "string", "pattern": "^tok_[0-9a-f]{32}$"},
                    "capture_method": {"type": "string", "enum": ["automatic", "manual"], "default": "automatic"},
                    "description": {"type": ["string", "null"], "maxLength": 1000},
                    "metadata": {"type": "object", "maxProperties": MAX_METADATA, "propertyNames": {"pattern": "^[A-Za-z0-9_-]{1,40}$"},
                        "additionalProperties": {"type": "string", "maxLength": 500}},
                    "confirm": {"type": "boolean", "default": false}}},
                "Capture": {"type": "object", "additionalProperties": false, "properties": {
                    "amount_to_capture": {"type": ["integer", "null"], "minimum": 1}}},
                "Payment": {"type": "object", "required": ["id", "object", "merchant_id", "amount", "currency", "capture_method", "status",
                    "metadata", "token", "card", "amount_captured", "amount_refunded", "created"], "properties": {
                    "id": {"type": "string"}, "object": {"const": "payment"}, "merchant_id": {"type": "string"},
                    "amount": {"type": "integer"}, "currency": {"type": "string"},
                    "capture_method": {"type": "string", "enum": ["automatic", "manual"]},
                    "status": {"type": "string", "enum": statuses},
                    "description": {"type": "string"}, "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                    "token": {"type": "string"},
                    "card": {"type": "object", "required": ["brand", "last4", "exp_month", "exp_year"], "properties": {
                        "brand": {"type": "string"}, "last4": {"type": "string"}, "exp_month": {"type": "integer"}, "exp_year": {"type": "integer"}}},
                    "amount_captured": {"type": "integer"}, "amount_refunded": {"type": "integer"},
                    "last_payment_error": {"type": "object", "required": ["code", "retryable"], "properties": {
                        "code": {"type": "string"}, "retryable": {"type": "boolean"}}},
                    "next_action": {"type": "object", "required": ["type", "redirect_to_url"], "properties": {
                        "type": {"const": "redirect_to_url"},
                        "redirect_to_url": {"type": "object", "required": ["url"], "properties": {"url": {"type": "string"}}}}},
                    "created": {"type": "integer"}}},
                "PaymentList": {"type": "object", "required": ["object", "data", "has_more"], "properties": {
                    "object": {"const": "list"}, "data": {"type": "array", "items": {"$ref": "#/components/schemas/Payment"}}, "has_more": {"type": "boolean"}}},
                "RefundCreate": {"type": "object", "additionalProperties": false, "properties": {
                    "amount": {"type": ["integer", "null"], "minimum": 1}, "reason": {"type": ["string", "null"], "maxLength": 500}}},
                "Refund": {"type": "object", "required": ["id", "object", "payment", "amount", "currency", "status", "created"], "properties": {
                    "id": {"type": "string"}, "object": {"const": "refund"}, "payment": {"type": "string"}, "amount": {"type": "integer"},
                    "currency": {"type": "string"}, "status": {"type": "string", "enum": ["pending", "succeeded", "failed"]},
                    "reason": {"type": "string"}, "failure_code": {"type": "string"}, "created": {"type": "integer"}}},
                "RefundList": {"type": "object", "required": ["object", "data", "has_more"], "properties": {
                    "object": {"const": "list"}, "data": {"type": "array", "items": {"$ref": "#/components/schemas/Refund"}}, "has_more": {"type": "boolean"}}},
                "GatewayEvent": {"type": "object", "additionalProperties": false, "required": ["id", "type", "data"], "properties": {
                    "id": {"type": "string", "minLength": 1, "maxLength": 128}, "type": {"type": "string", "enum": ["refund.failed", "refund.succeeded"]},
                    "data": {"type": "object", "additionalProperties": false, "required": ["refund"], "properties": {"refund": {"type": "string", "pattern": RE_ID}}}}},
                "Revocation": {"type": "object", "additionalProperties": false, "description": "Exactly one of jti, subject or role", "properties": {
                    "jti": {"type": ["string", "null"], "maxLength": 256}, "expires_at": {"type": ["integer", "null"], "description": "Unix seconds, between now and now + the longest token lifetime"},
                    "subject": {"type": ["string", "null"], "maxLength": 256},
                    "role": {"type": ["string", "null"], "enum": ["merchant", "support", "admin", null]},
                    "before": {"type": ["integer", "null"]}}},
                "Revoked": {"type": "object", "required": ["revoked", "before"], "properties": {"revoked": {"type": "boolean"}, "before": {"type": "integer"}}},
            },
        },
        "x-body-limit-bytes": BODY_LIMIT,
    })
}

pub async fn serve() -> Json<Value> {
    Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_documents_its_errors_and_references_resolve() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let text = doc.to_string();
        for reference in text.split("\"$ref\":\"").skip(1).map(|r| r.split('"').next().unwrap()) {
            let path: Vec<&str> = reference.trim_start_matches("#/").split('/').collect();
            let mut node = &doc;
            for p in &path {
                node = &node[*p];
            }
            assert!(!node.is_null(), "dangling $ref {reference}");
        }
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                assert!(op["responses"]["default"].is_object(), "{method} {path} documents no problem response");
                assert!(op["operationId"].is_string(), "{method} {path}");
            }
        }
    }
}
