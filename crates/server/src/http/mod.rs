//! The HTTP API: routes, body limit, time limit, request spans and JSON errors for
//! every failure.

mod admin;
mod extract;
mod handlers;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, Response};
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, delete, get, post};
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::error::Error;
use crate::state::AppState;

/// Largest request body, in bytes; larger bodies get 413 `payload_too_large`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The OpenAPI 3 document of the API, served at `GET /openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../../openapi.json");

/// Every route of the API: method, path and handler. The router is built from this
/// list alone, so [`route_table`] is exactly what the router serves.
fn routes() -> Vec<(Method, &'static str, MethodRouter<AppState>)> {
    vec![
        (Method::POST, "/login", post(handlers::login)),
        (Method::GET, "/me", get(handlers::me)),
        (
            Method::POST,
            "/wireguard/config",
            post(handlers::register_key),
        ),
        (Method::GET, "/wireguard/config", get(handlers::get_config)),
        (
            Method::DELETE,
            "/wireguard/config",
            delete(handlers::delete_config),
        ),
        (Method::POST, "/logout", post(handlers::logout)),
        (Method::GET, "/healthz", get(handlers::healthz)),
        (Method::GET, "/metrics", get(handlers::metrics)),
        (Method::GET, "/openapi.json", get(handlers::openapi)),
        (Method::GET, "/admin/peers", get(admin::list_peers)),
        (
            Method::DELETE,
            "/admin/peers/{id}",
            delete(admin::revoke_peer),
        ),
        (Method::GET, "/admin/pool", get(admin::pool)),
    ]
}

/// Lists the method and path of every route, with paths in the router's `{name}` syntax.
pub fn route_table() -> Vec<(Method, &'static str)> {
    routes()
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect()
}

/// Builds the API's router over `state`.
///
/// Unknown paths get 404 and wrong methods 405, both with the JSON error body. A request
/// that takes longer than the state's request timeout gets 503 `request_timeout`. Each
/// request runs in an INFO span with its method, path, status and latency; headers are
/// never recorded, so tokens stay out of the logs.
pub fn router(state: AppState) -> Router {
    let mut by_path: BTreeMap<&'static str, MethodRouter<AppState>> = BTreeMap::new();
    for (_method, path, method_router) in routes() {
        let merged = match by_path.remove(path) {
            Some(existing) => existing.merge(method_router),
            None => method_router,
        };
        by_path.insert(path, merged);
    }

    let mut router = Router::new();
    for (path, method_router) in by_path {
        router = router.route(path, method_router);
    }

    router
        .fallback(handlers::route_not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), time_limit))
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

/// Runs the request with the state's time limit. When it elapses the handler's future
/// is dropped, which rolls back its open database transaction.
///
/// A back-end call cut off that way may have changed the back end already, so a
/// timeout also requests a resynchronization of the back end with the database.
async fn time_limit(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> axum::response::Response {
    let limit = state.request_timeout();

    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_elapsed) => {
            tracing::warn!(limit_seconds = limit.as_secs(), "request timed out");
            state.replica().request_resync();
            Error::RequestTimeout { limit }.into_response()
        }
    }
}

fn make_request_span(request: &Request<Body>) -> Span {
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = ?request.uri().path(),
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
