//! The system suite: the client core (`camwire-client`) against a real `camwire-server`
//! process with a real SQLite file, over real HTTP on loopback. No window is involved;
//! the WebDriver suite drives the same paths through the app.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use camwire_api::Password;
use camwire_client::{
    ApiOptions, CredentialStore, Controller, JsonFileStore, Phase, ServerOutcome, SignOutOutcome,
    SignOutReport,
};
use camwire_e2e::db;
use camwire_e2e::proxy::{FaultProxy, LogoutFault};
use camwire_e2e::server::{ServerOptions, ServerProcess};

/// A device: a controller over its own credential file.
struct Device {
    controller: Controller,
    store: Arc<JsonFileStore>,
}

impl Device {
    fn new(dir: &std::path::Path, name: &str) -> Self {
        let store = Arc::new(JsonFileStore::new(dir.join(format!("{name}-credentials.json"))));
        let controller = Controller::new(store.clone(), ApiOptions::default());
        Self { controller, store }
    }

    async fn sign_in(&self, url: &str, user: &str, password: &str) -> Ipv4Addr {
        let snapshot = self
            .controller
            .sign_in(url, user, Password::new(password))
            .await
            .unwrap_or_else(|error| panic!("{user} failed to sign in: {error}"));
        let profile = snapshot.profile.expect("a signed-in snapshot has a profile");
        profile.wireguard.address.addr()
    }

    async fn sign_out(&self) -> SignOutReport {
        match self.controller.sign_out().await {
            SignOutOutcome::Completed(report) => report,
            SignOutOutcome::AlreadySignedOut => panic!("there was no session to sign out"),
        }
    }

    fn stored_session(&self) -> bool {
        self.store.load().expect("store readable").is_some()
    }
}

async fn status_of_me(url: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{url}/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("server answers")
        .status()
        .as_u16()
}

fn token_in(store: &JsonFileStore) -> String {
    let credentials = store.load().expect("store readable").expect("signed in");
    credentials.access_token.expose().to_owned()
}

#[tokio::test]
async fn sign_out_frees_address_for_next_user() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), ServerOptions::default()).await.expect("server starts");
    let url = server.url();
    let alice = Device::new(dir.path(), "alice");
    let bob = Device::new(dir.path(), "bob");

    let first = alice.sign_in(&url, "alice", server.password("alice")).await;
    let allocated = db::addresses_of(&server.database_url(), "alice").await.expect("db readable");
    let alice_token = token_in(&alice.store);

    assert_eq!(first, Ipv4Addr::new(10, 13, 0, 2));
    assert_eq!(allocated, vec![first]);
    assert!(std::fs::read_to_string(server.wg_config_path()).expect("config").contains("10.13.0.2/32"));

    let report = alice.sign_out().await;

    let ServerOutcome::Confirmed { session_invalidated, wireguard } = &report.server else {
        panic!("expected a confirmed sign-out, got {report:?}");
    };
    assert_eq!(*session_invalidated, Some(true));
    let cleanup = wireguard.as_ref().expect("cleanup reported");
    assert_eq!(cleanup.released_address, Some(first));
    assert!(cleanup.peer_removed);
    assert!(report.store_cleared());
    assert!(!alice.stored_session());
    assert!(db::addresses_of(&server.database_url(), "alice").await.expect("db").is_empty());
    assert!(!std::fs::read_to_string(server.wg_config_path()).expect("config").contains("10.13.0.2/32"));
    assert_eq!(status_of_me(&url, &alice_token).await, 401);
    let log = std::fs::read_to_string(server.log_path()).expect("server log");
    assert!(log.contains("10.13.0.2"), "the server log names the released address");
    assert!(!log.contains(&alice_token), "the server log contains alice's token");

    let bobs = bob.sign_in(&url, "bob", server.password("bob")).await;
    assert_eq!(bobs, first, "bob gets the address alice freed");

    let again = alice.sign_in(&url, "alice", server.password("alice")).await;
    assert_eq!(again, Ipv4Addr::new(10, 13, 0, 3));
}

#[tokio::test]
async fn sign_in_again_uses_new_key_and_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), ServerOptions::default()).await.expect("server starts");
    let alice = Device::new(dir.path(), "alice");

    alice.sign_in(&server.url(), "alice", server.password("alice")).await;
    let first = alice.store.load().expect("store").expect("session");
    let first_key = db::peers(&server.database_url()).await.expect("db")[0].public_key.clone();
    alice.sign_out().await;
    alice.sign_in(&server.url(), "alice", server.password("alice")).await;
    let second = alice.store.load().expect("store").expect("session");
    let second_key = db::peers(&server.database_url()).await.expect("db")[0].public_key.clone();

    assert_ne!(first.access_token.expose(), second.access_token.expose());
    assert_ne!(first_key, second_key);
    assert_eq!(db::session_count(&server.database_url(), "alice").await.expect("db"), 1);
}

/// Signs alice in through a fault proxy, breaks `/logout` with `fault`, signs out, and
/// returns the report, how long the sign-out took, and whether a session stayed stored.
async fn sign_out_through_fault(fault: LogoutFault) -> (SignOutReport, Duration, bool, ServerProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), ServerOptions::default()).await.expect("server starts");
    let proxy = FaultProxy::start(&server.url()).await.expect("proxy starts");
    let alice = Device::new(dir.path(), "alice");
    alice.sign_in(&proxy.url(), "alice", server.password("alice")).await;

    proxy.set_logout_fault(fault);
    let started = Instant::now();
    let report = alice.sign_out().await;
    let elapsed = started.elapsed();

    let stored = alice.stored_session();
    assert_eq!(alice.controller.snapshot().phase, Phase::SignedOut);
    (report, elapsed, stored, server, dir)
}

#[tokio::test]
async fn sign_out_black_holed_within_bound() {
    let (report, elapsed, stored, server, _dir) = sign_out_through_fault(LogoutFault::BlackHole).await;

    assert!(matches!(report.server, ServerOutcome::Unreachable { .. }), "{report:?}");
    assert!(elapsed < Duration::from_secs(8), "sign-out took {elapsed:?}, bound is 5 s");
    assert!(!stored);
    // The server never heard of the logout, so alice's address waits for its lease.
    assert_eq!(db::addresses_of(&server.database_url(), "alice").await.expect("db").len(), 1);
}

#[tokio::test]
async fn sign_out_with_server_error_clears_store() {
    let (report, _, stored, _server, _dir) = sign_out_through_fault(LogoutFault::Status(500)).await;

    assert!(matches!(report.server, ServerOutcome::ServerError { status: Some(500), .. }), "{report:?}");
    assert!(!stored);
}

#[tokio::test]
async fn sign_out_with_garbage_reply_clears_store() {
    let (report, _, stored, _server, _dir) = sign_out_through_fault(LogoutFault::Garbage).await;

    assert!(matches!(report.server, ServerOutcome::ServerError { .. }), "{report:?}");
    assert!(!stored);
}

#[tokio::test]
async fn sign_out_with_server_stopped_clears_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = ServerProcess::start(dir.path(), ServerOptions::default()).await.expect("server starts");
    let alice = Device::new(dir.path(), "alice");
    alice.sign_in(&server.url(), "alice", server.password("alice")).await;

    server.stop().await;
    let started = Instant::now();
    let report = alice.sign_out().await;

    assert!(matches!(report.server, ServerOutcome::Unreachable { .. }), "{report:?}");
    assert!(started.elapsed() < Duration::from_secs(8));
    assert!(!alice.stored_session());
}

#[tokio::test]
async fn sign_out_with_revoked_token_clears_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), ServerOptions::default()).await.expect("server starts");
    let alice = Device::new(dir.path(), "alice");
    alice.sign_in(&server.url(), "alice", server.password("alice")).await;
    let token = token_in(&alice.store);

    // The same token logs out from elsewhere first, as a second client or an admin would.
    let status = reqwest::Client::new()
        .post(format!("{}/logout", server.url()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("server answers")
        .status();
    assert_eq!(status.as_u16(), 200);

    let report = alice.sign_out().await;

    assert_eq!(report.server, ServerOutcome::TokenRejected);
    assert!(!alice.stored_session());
}

#[tokio::test]
async fn server_restart_keeps_session() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = ServerProcess::start(dir.path(), ServerOptions::default()).await.expect("server starts");
    let alice = Device::new(dir.path(), "alice");
    let address = alice.sign_in(&server.url(), "alice", server.password("alice")).await;
    let token = token_in(&alice.store);

    server.restart().await.expect("server restarts");

    assert_eq!(status_of_me(&server.url(), &token).await, 200);
    assert_eq!(db::addresses_of(&server.database_url(), "alice").await.expect("db"), vec![address]);
    let resumed = Device::new(dir.path(), "alice");
    let snapshot = resumed.controller.resume().await;
    assert_eq!(snapshot.phase, Phase::SignedIn);
    assert_eq!(snapshot.profile.expect("profile").wireguard.address.addr(), address);
}
