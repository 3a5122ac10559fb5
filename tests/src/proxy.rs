//! A fault proxy: an HTTP reverse proxy in front of a real `camwire-server` that can
//! break `POST /logout` on demand.
//!
//! This is a fake, on purpose: a real server cannot be made to accept a connection and
//! never respond, or to respond with 500 or garbage to one route only. Every other request is
//! passed through to the real server unchanged.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What the proxy does with `POST /logout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutFault {
    /// Pass it to the real server.
    None,
    /// Accept the request and never send a response.
    BlackHole,
    /// Respond with this status and an error body, without forwarding the request.
    Status(u16),
    /// Respond 200 with a body that is not JSON, without forwarding the request.
    Garbage,
}

struct Shared {
    upstream: String,
    fault: Mutex<LogoutFault>,
    logout_requests: Mutex<u32>,
    http: reqwest::Client,
}

/// A running fault proxy; it stops when dropped.
pub struct FaultProxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port in front of `upstream` (such as `http://127.0.0.1:8080`).
    pub async fn start(upstream: &str) -> Result<Self> {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            fault: Mutex::new(LogoutFault::None),
            logout_requests: Mutex::new(0),
            http: reqwest::Client::new(),
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("failed to bind the fault proxy")?;
        let addr = listener.local_addr()?;
        let router = Router::new().fallback(forward).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });

        Ok(Self { shared, addr, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_logout_fault(&self, fault: LogoutFault) {
        *lock(&self.shared.fault) = fault;
    }

    /// Returns how many `POST /logout` requests reached the proxy.
    pub fn logout_requests(&self) -> u32 {
        *lock(&self.shared.logout_requests)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let is_logout = request.method() == Method::POST && request.uri().path() == "/logout";
    if is_logout {
        *lock(&shared.logout_requests) += 1;
        let fault = *lock(&shared.fault);
        match fault {
            LogoutFault::None => {}
            LogoutFault::BlackHole => std::future::pending::<()>().await,
            LogoutFault::Status(code) => {
                let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let body = r#"{"error":"internal_error","message":"injected by the fault proxy"}"#;
                return (status, [("content-type", "application/json")], body).into_response();
            }
            LogoutFault::Garbage => {
                return (StatusCode::OK, [("content-type", "application/json")], "<html>not json").into_response();
            }
        }
    }

    match pass_through(&shared, request).await {
        Ok(response) => response,
        Err(error) => (StatusCode::BAD_GATEWAY, format!("fault proxy: {error:#}")).into_response(),
    }
}

async fn pass_through(shared: &Shared, request: Request) -> Result<Response> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map(|value| value.as_str()).unwrap_or("/");
    let body: Bytes = axum::body::to_bytes(body, 16 * 1024 * 1024).await?;

    let mut upstream = shared
        .http
        .request(parts.method.clone(), format!("{}{path}", shared.upstream))
        .body(body);
    for (name, value) in &parts.headers {
        if !is_hop_by_hop(name) {
            upstream = upstream.header(name, value);
        }
    }
    let reply = upstream.send().await?;

    let mut response = Response::builder().status(reply.status());
    for (name, value) in reply.headers() {
        if !is_hop_by_hop(name) {
            response = response.header(name, value);
        }
    }
    let bytes = reply.bytes().await?;
    Ok(response.body(Body::from(bytes))?)
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host" | "connection" | "keep-alive" | "transfer-encoding" | "content-length" | "upgrade"
    )
}
