//! Settle's Payment API: one axum `Router`, served by `lambda_http` behind API Gateway
//! (HTTP API, payload v2) and by `axum::serve` in the local stack.

// The OpenAPI document is one large `json!` literal.
#![recursion_limit = "512"]

use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use request_ids::trace_request;
use settle_shared::health::Status;
use settle_shared::problem::Problem;

pub mod admin;
pub mod error;
pub mod gateway_webhooks;
pub mod guard;
pub mod idempotency;
pub mod input;
pub mod metrics;
pub mod openapi;
pub mod outbox;
pub mod panics;
pub mod payments;
pub mod refunds;
pub mod repo;
pub mod request_ids;
pub mod service;
pub mod settlements;
pub mod state;
pub mod store;
pub mod threeds;
pub mod tokens;
pub mod views;
pub mod webhook_endpoints;

pub use request_ids::{CORRELATION_ID, REQUEST_ID, TRACEPARENT};
pub use state::{AppParts, AppState, Auth, HEALTH_CACHE};

/// The whole API. The same value goes to `lambda_http::run` and to `axum::serve`.
///
/// One router, built at every cold start. The guard is a `route_layer` placed after the
/// authenticated routes and before the public ones: it wraps only the routes added before
/// it. (A separate authenticated router merged into this one had every one of its paths
/// inserted twice: about a tenth of the payment API's start-up instructions, in callgrind.)
/// Matching does not depend on the order: `/v1/payments/{id}/3ds` still wins over
/// `/v1/payments/{id}/{action}` because a static segment beats a parameter.
pub fn router(state: AppState) -> Router {
    // The POSTs that move money or create an object run at most once per key.
    let idempotent = middleware::from_fn_with_state(state.clone(), idempotency::idempotent);
    Router::new()
        .route("/v1/tokens", post(tokens::create_token.layer(idempotent.clone())))
        .route("/v1/payments", post(payments::create_payment.layer(idempotent.clone())).get(payments::list_payments))
        .route("/v1/payments/{id}", get(payments::get_payment))
        .route(
            "/v1/payments/{id}/refunds",
            post(refunds::create_refund.layer(idempotent.clone())).get(refunds::list_refunds),
        )
        .route("/v1/payments/{id}/refunds/{refund_id}", get(refunds::get_refund))
        .route("/v1/payments/{id}/{action}", post(payments::payment_action.layer(idempotent.clone())))
        .route("/v1/admin/revocations", post(admin::revoke))
        .route(
            "/v1/webhook_endpoints",
            post(webhook_endpoints::create.layer(idempotent.clone())).get(webhook_endpoints::list),
        )
        .route(
            "/v1/webhook_endpoints/{id}",
            get(webhook_endpoints::get).patch(webhook_endpoints::update).delete(webhook_endpoints::delete),
        )
        .route("/v1/webhook_endpoints/{id}/rotate_secret", post(webhook_endpoints::rotate_secret.layer(idempotent)))
        .route("/v1/webhook_endpoints/{id}/attempts", get(webhook_endpoints::endpoint_attempts))
        .route("/v1/webhook_endpoints/{id}/resend", post(webhook_endpoints::resend))
        .route("/v1/webhook_endpoints/{id}/recover", post(webhook_endpoints::recover))
        .route("/v1/events/{event_id}/attempts", get(webhook_endpoints::event_attempts))
        .route("/v1/settlements/summary", get(settlements::summary))
        .route_layer(middleware::from_fn_with_state(state.clone(), guard::guard))
        // Public from here on: the guard above does not wrap them.
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi::serve))
        .route("/v1/payments/{id}/3ds", get(threeds::challenge_page))
        .route("/v1/payments/{id}/3ds/{answer}", post(threeds::challenge_answer))
        .route("/v1/gateway/webhooks", post(gateway_webhooks::receive))
        // Every route above, public or not, counts against its client address's limit.
        .route_layer(middleware::from_fn_with_state(state.clone(), guard::limit_per_ip))
        .fallback(|| async { Problem::not_found() })
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() })
        // Inside the request's span, so a panic's 500 carries the request's ids.
        .layer(middleware::from_fn(panics::catch_panics))
        .layer(middleware::from_fn_with_state(state.clone(), trace_request))
        .with_state(state)
}

/// 200 when every dependency answers, 503 otherwise. Everyone gets the status; admins
/// (see [`guard::is_admin`]) also get each dependency with its reason (scrubbed of
/// secrets before it gets here), which tells an outsider too much about the deployment.
async fn healthz(State(state): State<AppState>, request: Request) -> Response {
    let (headers, ip) = (request.headers().clone(), guard::client_ip(&request));
    let report = state.health().await;
    let status = if report.status == Status::Ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    if guard::is_admin(&state, &headers, ip).await {
        (status, Json(report)).into_response()
    } else {
        (status, Json(serde_json::json!({"status": report.status}))).into_response()
    }
}
