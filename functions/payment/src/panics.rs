//! A panic while serving a request answers 500 problem+json and the instance goes on
//! serving the next one: the panic is caught around the handler, logged, and mapped like
//! any internal error (opaque body). This needs the unwinding panic strategy, which the
//! release profile keeps for that reason (see docs/performance.md).

use crate::error::ApiError;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;

pub async fn catch_panics(request: Request, next: Next) -> Response {
    // Unwind safety: the state a handler shares is behind locks that every user recovers
    // from poisoning, and a half-done request writes nothing a transaction did not commit.
    match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with no message".into());
            tracing::error!(panic = %message, "request handler panicked; answered 500");
            ApiError::Internal(anyhow::anyhow!("handler panicked: {message}")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_problem_json_and_the_next_request_is_served() {
        let app = Router::new()
            .route("/boom", get(|| async { panic!("card 4242424242424242 in a panic") as &'static str }))
            .route("/ok", get(|| async { "fine" }))
            .layer(axum::middleware::from_fn(catch_panics));
        let response = app.clone().oneshot(Request::get("/boom").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), 500);
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("4242") && !text.contains("panic"), "the body is opaque: {text}");
        let next = app.oneshot(Request::get("/ok").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(next.status(), 200);
    }
}
