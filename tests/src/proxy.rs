//! Fakes for faults that real parts cannot produce on demand.
//!
//! - [`FaultProxy`]: an HTTP reverse proxy in front of a real `camwire-server` that can break
//!   or hold `POST /logout`. A real server cannot be made to accept a connection and never
//!   respond, to respond with 500 or garbage to one route only, or to hold one request until
//!   a test lets it go. Every other request is passed through to the real server unchanged.
//! - [`SilentServer`]: a TCP listener that accepts connections and never responds, for a
//!   server URL that never replies.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::watch;
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
    /// Hold the request until [`FaultProxy::release_logout`], then pass it to the real server.
    Hold,
}

struct Shared {
    upstream: String,
    fault: Mutex<LogoutFault>,
    logout_requests: watch::Sender<u32>,
    /// Incremented by every [`FaultProxy::release_logout`]; held requests wait for a change.
    releases: watch::Sender<u64>,
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
            logout_requests: watch::channel(0).0,
            releases: watch::channel(0).0,
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

    /// Passes every held `POST /logout` on to the real server and stops holding new ones.
    pub fn release_logout(&self) {
        self.set_logout_fault(LogoutFault::None);
        self.shared.releases.send_modify(|count| *count += 1);
    }

    /// Returns how many `POST /logout` requests reached the proxy.
    pub fn logout_requests(&self) -> u32 {
        *self.shared.logout_requests.borrow()
    }

    /// Waits until at least `count` `POST /logout` requests have reached the proxy.
    pub async fn wait_for_logout_requests(&self, count: u32, timeout: Duration) -> Result<()> {
        let mut requests = self.shared.logout_requests.subscribe();
        let reached = tokio::time::timeout(timeout, requests.wait_for(|seen| *seen >= count)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => bail!(
                "the proxy saw {} POST /logout requests within {timeout:?}, expected {count}",
                self.logout_requests()
            ),
        }
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
        // Subscribe before the count changes, so that a release right after cannot be missed.
        let mut releases = shared.releases.subscribe();
        shared.logout_requests.send_modify(|count| *count += 1);
        let fault = *lock(&shared.fault);
        match fault {
            LogoutFault::None => {}
            LogoutFault::Hold => {
                let _ = releases.changed().await;
            }
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

/// A fake server that accepts TCP connections and never sends a byte, as a hung server or a
/// firewall that drops replies would look to a client. It stops when dropped.
pub struct SilentServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl SilentServer {
    pub async fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("failed to bind the silent server")?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            // Accepted connections are kept open, unread, until the server is dropped.
            let mut connections = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.push(stream);
            }
        });
        Ok(Self { addr, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
