//! Servers on loopback for the client's tests.
//!
//! The HTTP servers are fakes, used because the faults they produce (a reply of 500 or
//! garbage, a connection that never gets a reply, a pool that is exhausted on demand) cannot
//! be produced on demand by the real server. The WireGuard side of [`FakeCamwire`] is real: a
//! camwire-tunnel `Hub` on loopback whose port 80 forwards to a real HTTP listener.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the support module"
)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use camwire_api::{AccessToken, Role, User, WireguardConfig};
use camwire_client::{ApiClient, ApiOptions, Credentials, Profile, ServerUrl};
use camwire_tunnel::{Forward, Hub, HubConfig, PrivateKey, PublicKey};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// The password that the fake Camwire server accepts for every user.
pub const PASSWORD: &str = "correct horse battery staple";

/// The hub's address inside the tunnel, as the real server's default pool has it.
pub const HUB_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 1);

/// WireGuard endpoint of configs that no hub serves: loopback port 9 (discard), so that the
/// handshakes of tunnels started from them reach no WireGuard listener of another test.
pub const UNSERVED_ENDPOINT: &str = "127.0.0.1:9";

/// Sends the client's logs to the test output (shown for failing tests).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("camwire_client=debug,camwire_tunnel=info")
        .with_test_writer()
        .try_init();
}

/// Options with the default bounds, as the app uses them.
pub fn options() -> ApiOptions {
    ApiOptions::default()
}

pub fn api(url: &str) -> ApiClient {
    ApiClient::new(
        ServerUrl::parse(url).expect("test server URL is valid"),
        options(),
    )
    .expect("client starts")
}

/// Credentials as a sign-in against `url` would have saved them, with a fresh device key.
pub fn credentials(url: &str, token: &str) -> Credentials {
    Credentials {
        server_url: ServerUrl::parse(url).expect("test server URL is valid"),
        access_token: AccessToken::new(token),
        token_expires_at: "2030-01-01T00:00:00Z".parse().expect("valid date"),
        private_key: PrivateKey::generate(),
        profile: Profile {
            user: user("alice"),
            wireguard: wireguard_config(2),
        },
    }
}

pub fn user(username: &str) -> User {
    User {
        id: format!("id-{username}"),
        username: username.to_owned(),
        display_name: format!("{username} (display)"),
        email: format!("{username}@example.com"),
        role: Role::User,
    }
}

/// Returns a WireGuard config for `10.13.0.{host}` whose endpoint no hub serves.
pub fn wireguard_config(host: u8) -> WireguardConfig {
    hub_config(
        host,
        "0fDuLGSYob+8di4t6fr8jydBUwxlaoh5q3si97h4t0E=",
        UNSERVED_ENDPOINT,
    )
}

fn hub_config(host: u8, server_public_key: &str, endpoint: &str) -> WireguardConfig {
    serde_json::from_value(json!({
        "address": format!("10.13.0.{host}/32"),
        "server_address": HUB_ADDRESS.to_string(),
        "server_public_key": server_public_key,
        "endpoint": endpoint,
        "allowed_ips": ["10.13.0.0/16"],
        "persistent_keepalive": 25,
        "expires_at": "2030-01-01T00:00:00Z",
    }))
    .expect("test WireGuard config parses")
}

/// URL of a loopback port that was bound and closed again, so connecting is refused.
pub async fn stopped_server_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let address = listener.local_addr().expect("local address");
    drop(listener);
    format!("http://{address}")
}

/// Fake that accepts connections and never replies (a black-holed server).
pub struct SilentServer {
    pub url: String,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl SilentServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);

        let task = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                open.push(stream);
            }
        });
        Self {
            url,
            accepted,
            task,
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Fake that reads a request and sends the same raw HTTP reply to every connection, such as a
/// 500 page or a body that is not JSON.
pub struct RawReplyServer {
    pub url: String,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RawReplyServer {
    pub async fn start(reply: Vec<u8>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        let reply = Arc::new(reply);

        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let reply = Arc::clone(&reply);
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let head = read_request_head(&mut stream).await;
                    seen.lock().expect("lock").push(head);
                    let _ = stream.write_all(&reply).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self {
            url,
            requests,
            task,
        }
    }

    /// Starts a fake replying with `status` and `body` as `Content-Type: application/json`.
    pub async fn json(status: u16, body: &str) -> Self {
        Self::start(http_reply(status, body)).await
    }

    /// Returns the request lines received, such as `POST /logout HTTP/1.1`.
    pub fn request_lines(&self) -> Vec<String> {
        self.requests
            .lock()
            .expect("lock")
            .iter()
            .map(|head| head.lines().next().unwrap_or_default().to_owned())
            .collect()
    }

    /// Returns the request heads received, headers included.
    pub fn request_heads(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }
}

impl Drop for RawReplyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn http_reply(status: u16, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} Status\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn read_request_head(stream: &mut tokio::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => head.extend_from_slice(&buffer[..read]),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// How the fake Camwire server misbehaves; the default behaves like the real server.
#[derive(Debug, Clone, Default)]
pub struct Behavior {
    /// `POST /wireguard/config` replies 503 `address_pool_exhausted`.
    pub pool_exhausted: bool,
    /// `GET /me` replies with this status and an error body.
    pub me_status: Option<u16>,
    /// `POST /logout` waits this long before replying.
    pub logout_delay: Duration,
    /// WireGuard configs name this endpoint in place of the hub's.
    pub endpoint: Option<String>,
    /// `GET /healthz` through the tunnel replies with this status and an error body.
    pub health_status: Option<u16>,
    /// Changes every WireGuard config the fake sends, such as into one without a usable
    /// endpoint.
    pub config_patch: Option<fn(&mut WireguardConfig)>,
    /// Changes the user that `POST /login` returns.
    pub login_user_patch: Option<fn(&mut User)>,
    /// Changes the user that `GET /me` returns, such as into another user.
    pub me_user_patch: Option<fn(&mut User)>,
}

/// Calls the fake Camwire server received, per route.
#[derive(Debug, Default)]
pub struct Counters {
    pub login: AtomicUsize,
    pub register_key: AtomicUsize,
    pub get_config: AtomicUsize,
    pub me: AtomicUsize,
    pub logout: AtomicUsize,
    /// `GET /healthz` requests that reached the HTTP listener behind the hub.
    pub health: AtomicUsize,
}

impl Counters {
    pub fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }
}

struct Allocation {
    public_key: String,
    host: u8,
}

struct FakeState {
    /// The real WireGuard hub: peers are added at `POST /wireguard/config` and removed at
    /// `POST /logout`.
    hub: Hub,
    behavior: Mutex<Behavior>,
    counters: Counters,
    /// Live tokens and the allocation of each.
    sessions: Mutex<HashMap<String, Option<Allocation>>>,
    issued: AtomicUsize,
    /// Every public key registered, in order.
    registered_keys: Mutex<Vec<String>>,
    /// Route names in the order their handling finished, such as `logout` or `login`.
    events: Mutex<Vec<&'static str>>,
}

/// Fake Camwire server with the contract's routes, counters and injectable faults, and a
/// real WireGuard hub.
///
/// It keeps its sessions in memory and allocates the lowest free address from `10.13.0.2`,
/// without the real server's database or leases. The hub's port 80 forwards to an HTTP
/// listener on loopback that serves `GET /healthz`.
pub struct FakeCamwire {
    pub url: String,
    pub address: SocketAddr,
    state: Arc<FakeState>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeCamwire {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    /// Starts on a given address, such as the port of an earlier, stopped server.
    pub async fn start_on(address: &str) -> Self {
        let listener = TcpListener::bind(address).await.expect("bind loopback");
        let address = listener.local_addr().expect("local address");
        let health_listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let health_address = health_listener.local_addr().expect("local address");
        let hub = Hub::bind(HubConfig::new(
            "127.0.0.1:0".parse().expect("valid address"),
            PrivateKey::generate(),
            HUB_ADDRESS,
            "10.13.0.0/16".parse().expect("valid network"),
            vec![Forward {
                port: camwire_client::HEALTH_PORT,
                target: health_address,
            }],
        ))
        .await
        .expect("hub binds on loopback");
        let state = Arc::new(FakeState {
            hub,
            behavior: Mutex::default(),
            counters: Counters::default(),
            sessions: Mutex::default(),
            issued: AtomicUsize::new(0),
            registered_keys: Mutex::default(),
            events: Mutex::default(),
        });

        let router = axum::Router::new()
            .route("/login", post(login))
            .route("/me", get(me))
            .route("/wireguard/config", post(register_key).get(get_config))
            .route("/logout", post(logout))
            .with_state(Arc::clone(&state));
        let health_router = axum::Router::new()
            .route("/healthz", get(health))
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let api = axum::serve(listener, router);
            let health = axum::serve(health_listener, health_router);
            let _ = tokio::join!(api, health);
        });

        Self {
            url: format!("http://{address}"),
            address,
            state,
            task,
        }
    }

    pub fn hub(&self) -> &Hub {
        &self.state.hub
    }

    /// Returns credentials of a live session for `token` with a new device key, registered
    /// with the hub at `10.13.0.{host}`, as a sign-in would have saved them.
    pub fn credentials(&self, token: &str, host: u8) -> Credentials {
        let private_key = PrivateKey::generate();
        self.insert_session(token, Some((private_key.public_key().to_base64(), host)));

        Credentials {
            server_url: ServerUrl::parse(&self.url).expect("test server URL is valid"),
            access_token: AccessToken::new(token),
            token_expires_at: "2030-01-01T00:00:00Z".parse().expect("valid date"),
            private_key,
            profile: Profile {
                user: user("alice"),
                wireguard: self.state.wireguard_config(host),
            },
        }
    }

    pub fn set_behavior(&self, behavior: Behavior) {
        *self.state.behavior.lock().expect("lock") = behavior;
    }

    pub fn counters(&self) -> &Counters {
        &self.state.counters
    }

    pub fn registered_keys(&self) -> Vec<String> {
        self.state.registered_keys.lock().expect("lock").clone()
    }

    pub fn events(&self) -> Vec<&'static str> {
        self.state.events.lock().expect("lock").clone()
    }

    pub fn live_sessions(&self) -> usize {
        self.state.sessions.lock().expect("lock").len()
    }

    /// Adds a live session for `token` with an allocation at `10.13.0.{host}` (a hub peer
    /// too), or none.
    pub fn insert_session(&self, token: &str, allocation: Option<(String, u8)>) {
        if let Some((public_key, host)) = &allocation {
            let key = PublicKey::from_base64(public_key).expect("valid public key");
            self.state
                .hub
                .add_peer(key, Ipv4Addr::new(10, 13, 0, *host))
                .expect("hub adds the peer");
        }
        let allocation = allocation.map(|(public_key, host)| Allocation { public_key, host });
        self.state
            .sessions
            .lock()
            .expect("lock")
            .insert(token.to_owned(), allocation);
    }
}

impl Drop for FakeCamwire {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeState {
    /// Returns the config of `10.13.0.{host}` on this fake's hub, or on the endpoint of the
    /// behavior.
    fn wireguard_config(&self, host: u8) -> WireguardConfig {
        let behavior = self.behavior.lock().expect("lock").clone();
        let endpoint = behavior
            .endpoint
            .unwrap_or_else(|| self.hub.local_addr().to_string());

        let mut config = hub_config(host, &self.hub.public_key().to_base64(), &endpoint);
        if let Some(patch) = behavior.config_patch {
            patch(&mut config);
        }
        config
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": code, "message": message}))).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(str::to_owned)
}

/// Returns the caller's token when it belongs to a live session.
fn authorized(state: &FakeState, headers: &HeaderMap) -> Option<String> {
    let token = bearer(headers)?;
    state
        .sessions
        .lock()
        .expect("lock")
        .contains_key(&token)
        .then_some(token)
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Invalid or expired token.",
    )
}

async fn login(State(state): State<Arc<FakeState>>, Json(body): Json<Value>) -> Response {
    state.counters.login.fetch_add(1, Ordering::SeqCst);
    let username = body["username"].as_str().unwrap_or_default().to_owned();
    if body["password"].as_str() != Some(PASSWORD) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "Invalid user name or password.",
        );
    }

    let number = state.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let token = format!("token-{number}-of-{username}");
    state
        .sessions
        .lock()
        .expect("lock")
        .insert(token.clone(), None);
    state.events.lock().expect("lock").push("login");

    let mut user = user(&username);
    if let Some(patch) = state.behavior.lock().expect("lock").login_user_patch {
        patch(&mut user);
    }
    Json(json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_at": "2030-01-01T00:00:00Z",
        "user": user,
    }))
    .into_response()
}

async fn register_key(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    state.counters.register_key.fetch_add(1, Ordering::SeqCst);
    let Some(token) = authorized(&state, &headers) else {
        return unauthorized();
    };
    if state.behavior.lock().expect("lock").pool_exhausted {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "address_pool_exhausted",
            "No free address in the pool.",
        );
    }
    let public_key = body["public_key"].as_str().unwrap_or_default().to_owned();
    let Ok(key) = PublicKey::from_base64(&public_key) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_public_key",
            "Invalid public key.",
        );
    };

    let mut sessions = state.sessions.lock().expect("lock");
    let used: Vec<u8> = sessions
        .values()
        .flatten()
        .map(|allocation| allocation.host)
        .collect();
    let host = (2u8..=254)
        .find(|host| !used.contains(host))
        .expect("fake pool has room");
    if state
        .hub
        .add_peer(key, Ipv4Addr::new(10, 13, 0, host))
        .is_err()
    {
        return error(
            StatusCode::CONFLICT,
            "public_key_in_use",
            "This public key belongs to another device.",
        );
    }
    sessions.insert(
        token,
        Some(Allocation {
            public_key: public_key.clone(),
            host,
        }),
    );
    state.registered_keys.lock().expect("lock").push(public_key);
    state.events.lock().expect("lock").push("register_key");

    drop(sessions);
    (StatusCode::CREATED, Json(state.wireguard_config(host))).into_response()
}

async fn get_config(State(state): State<Arc<FakeState>>, headers: HeaderMap) -> Response {
    state.counters.get_config.fetch_add(1, Ordering::SeqCst);
    let Some(token) = authorized(&state, &headers) else {
        return unauthorized();
    };

    let host = state
        .sessions
        .lock()
        .expect("lock")
        .get(&token)
        .and_then(|allocation| allocation.as_ref().map(|allocation| allocation.host));
    match host {
        Some(host) => Json(state.wireguard_config(host)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_configured",
            "This session has no WireGuard config.",
        ),
    }
}

async fn me(State(state): State<Arc<FakeState>>, headers: HeaderMap) -> Response {
    state.counters.me.fetch_add(1, Ordering::SeqCst);
    let Some(token) = authorized(&state, &headers) else {
        return unauthorized();
    };
    let behavior = state.behavior.lock().expect("lock").clone();
    if let Some(status) = behavior.me_status {
        let status = StatusCode::from_u16(status).expect("valid status");
        return error(status, "internal_error", "Injected failure.");
    }

    // Tokens of sessions that a test inserted have no user name; they belong to alice.
    let username = token
        .split_once("-of-")
        .map_or("alice", |(_, username)| username)
        .to_owned();
    let mut user = user(&username);
    if let Some(patch) = behavior.me_user_patch {
        patch(&mut user);
    }
    Json(user).into_response()
}

async fn logout(State(state): State<Arc<FakeState>>, headers: HeaderMap) -> Response {
    state.counters.logout.fetch_add(1, Ordering::SeqCst);
    let delay = state.behavior.lock().expect("lock").logout_delay;
    tokio::time::sleep(delay).await;

    let Some(token) = authorized(&state, &headers) else {
        return unauthorized();
    };
    let allocation = state
        .sessions
        .lock()
        .expect("lock")
        .remove(&token)
        .flatten();
    let peer_removed = allocation.as_ref().is_some_and(|allocation| {
        let key = PublicKey::from_base64(&allocation.public_key).expect("stored key is valid");
        state.hub.remove_peer(&key)
    });
    state.events.lock().expect("lock").push("logout");

    let wireguard = match allocation {
        Some(allocation) => json!({
            "status": "revoked",
            "released_address": format!("10.13.0.{}", allocation.host),
            "peer_removed": peer_removed,
            "detail": null,
        }),
        None => {
            json!({"status": "not_configured", "released_address": null, "peer_removed": false, "detail": null})
        }
    };
    Json(json!({"message": "Signed out.", "session_invalidated": true, "wireguard": wireguard}))
        .into_response()
}

/// `GET /healthz` of the HTTP listener behind the hub's port 80.
async fn health(State(state): State<Arc<FakeState>>) -> Response {
    state.counters.health.fetch_add(1, Ordering::SeqCst);
    if let Some(status) = state.behavior.lock().expect("lock").health_status {
        let status = StatusCode::from_u16(status).expect("valid status");
        return error(status, "unavailable", "Injected failure.");
    }
    Json(json!({"status": "ok"})).into_response()
}

/// A [`MemoryStore`](camwire_client::MemoryStore) shared between a controller and a test.
#[derive(Clone, Default)]
pub struct MemoryStoreHandle(Arc<camwire_client::MemoryStore>);

impl MemoryStoreHandle {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn clone_arc(&self) -> Arc<dyn camwire_client::CredentialStore> {
        Arc::clone(&self.0) as Arc<dyn camwire_client::CredentialStore>
    }

    pub fn store(&self) -> &camwire_client::MemoryStore {
        &self.0
    }

    /// Returns the saved credentials; fails the test when there are none.
    pub fn load_credentials(&self) -> Credentials {
        use camwire_client::CredentialStore as _;
        self.0
            .load()
            .expect("memory store loads")
            .expect("credentials are saved")
    }
}

/// Log output of the current thread, collected in memory so that a test can read it.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// Collects the logs of the current thread until the returned guard is dropped. A
    /// `#[tokio::test]` runs its spawned tasks on this thread too.
    pub fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let capture = Self::default();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("camwire_client=debug")
            .with_ansi(false)
            .with_writer(capture.clone())
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        (capture, guard)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
