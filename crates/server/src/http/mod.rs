//! The HTTP API: routes, body limit, request spans and JSON errors for every failure.

mod extract;
mod handlers;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, Response};
use axum::routing::{get, post};
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::state::AppState;

/// Largest request body, in bytes; larger bodies get 413 `payload_too_large`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Builds the API's router over `state`.
///
/// Unknown paths get 404 and wrong methods 405, both with the JSON error body. Each
/// request runs in an INFO span with its method, path, status and latency; headers are
/// never recorded, so tokens stay out of the logs.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/login", post(handlers::login))
        .route("/me", get(handlers::me))
        .route(
            "/wireguard/config",
            post(handlers::register_key)
                .get(handlers::get_config)
                .delete(handlers::delete_config),
        )
        .route("/logout", post(handlers::logout))
        .route("/healthz", get(handlers::healthz))
        .fallback(handlers::route_not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(make_request_span)
                .on_request(())
                .on_response(record_response)
                .on_failure(()),
        )
        .with_state(state)
}

fn make_request_span(request: &Request<Body>) -> Span {
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        status = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
    )
}

fn record_response(response: &Response<Body>, latency: Duration, span: &Span) {
    span.record("status", response.status().as_u16());
    span.record(
        "latency_ms",
        u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
    );

    tracing::info!("request finished");
}
