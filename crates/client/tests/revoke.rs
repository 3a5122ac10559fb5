//! A session that the server ends while the app runs: an admin revoke noticed by failed health
//! probes or by the periodic session check, and a server that goes away.
//!
//! The server is the real `camwire-server`, started in this process on loopback ports with its
//! own SQLite file and its embedded WireGuard hub.

mod support;

use std::time::{Duration, Instant};

use camwire_api::{AdminPeerList, AdminRevokeResponse, Password};
use camwire_client::{
    ApiOptions, Controller, ControllerOptions, CredentialStore as _, Phase, ServerProbe,
    ServerStatus, Snapshot, TunnelPhase, TunnelSettings,
};
use camwire_server::{RunningServer, ServerConfig};
use support::MemoryStoreHandle;
use tempfile::TempDir;

/// Bound on every wait of these tests; generous, for a loaded machine.
const BOUND: Duration = Duration::from_secs(30);

/// A long interval, so that a test relies on one trigger of the session check only.
const NEVER: Duration = Duration::from_secs(3600);

struct RealServer {
    server: Option<RunningServer>,
    url: String,
    _dir: TempDir,
}

impl RealServer {
    async fn start() -> Self {
        support::init_logging();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = ServerConfig::new(format!(
            "sqlite://{}",
            dir.path().join("camwire.db").display()
        ));
        config.listen = "127.0.0.1:0".parse().expect("valid address");
        config.wg_listen = "127.0.0.1:0".parse().expect("valid address");
        config.wg_config_path = dir.path().join("wg0.conf");
        config.demo = true;

        let server = camwire_server::start(config)
            .await
            .expect("camwire-server starts on loopback");
        let url = server.url();
        Self {
            server: Some(server),
            url,
            _dir: dir,
        }
    }

    fn running(&self) -> &RunningServer {
        self.server.as_ref().expect("the server runs")
    }

    fn password(&self, username: &str) -> Password {
        self.running()
            .demo_users()
            .iter()
            .find(|user| user.username == username)
            .and_then(|user| user.password.clone())
            .expect("the demo user was created with a password on this start")
    }

    /// Revokes every peer of `username` through `DELETE /admin/peers/{id}`, signed in as the
    /// demo admin, and returns the revoked addresses.
    async fn revoke_peers_of(&self, username: &str) -> Vec<String> {
        let http = reqwest::Client::new();
        let login: serde_json::Value = http
            .post(format!("{}/login", self.url))
            .json(&serde_json::json!({
                "username": "admin",
                "password": self.password("admin").expose(),
            }))
            .send()
            .await
            .expect("POST /login as admin")
            .json()
            .await
            .expect("login reply is JSON");
        let token = login["access_token"].as_str().expect("admin token");

        let peers: AdminPeerList = http
            .get(format!("{}/admin/peers", self.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET /admin/peers")
            .json()
            .await
            .expect("peer list");
        let mut revoked = Vec::new();
        for peer in peers.peers.iter().filter(|peer| peer.username == username) {
            let reply: AdminRevokeResponse = http
                .delete(format!("{}/admin/peers/{}", self.url, peer.id))
                .bearer_auth(token)
                .send()
                .await
                .expect("DELETE /admin/peers/{id}")
                .json()
                .await
                .expect("revoke reply");
            assert!(reply.session_revoked, "the revoke ended the session");
            revoked.push(peer.address.to_string());
        }
        revoked
    }

    async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("the server stops");
        }
    }
}

/// Options with fast health probes and the given session check triggers.
fn options(failed_probes_before_session_check: u32, interval: Duration) -> ControllerOptions {
    ControllerOptions {
        api: ApiOptions::default(),
        tunnel: TunnelSettings {
            probe_interval: Duration::from_millis(200),
            probe_timeout: Duration::from_millis(500),
            ..TunnelSettings::default()
        },
        session_check_interval: interval,
        failed_probes_before_session_check,
    }
}

async fn signed_in_alice(
    server: &RealServer,
    options: ControllerOptions,
) -> (Controller, MemoryStoreHandle) {
    let store = MemoryStoreHandle::new();
    let controller = Controller::with_options(store.clone_arc(), options);
    controller.resume().await;
    let snapshot = controller
        .sign_in(&server.url, "alice", server.password("alice"))
        .await
        .expect("alice signs in");
    assert_eq!(snapshot.server_status, ServerStatus::Confirmed);
    (controller, store)
}

async fn wait_for(
    controller: &Controller,
    what: &str,
    condition: impl Fn(&Snapshot) -> bool,
) -> Snapshot {
    let deadline = Instant::now() + BOUND;
    loop {
        let snapshot = controller.snapshot();
        if condition(&snapshot) {
            return snapshot;
        }
        assert!(
            Instant::now() < deadline,
            "the controller did not reach {what} within {BOUND:?}; last state: {snapshot:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_connected_and_answering(controller: &Controller) {
    wait_for(controller, "a connected, answering tunnel", |snapshot| {
        snapshot.tunnel.phase == TunnelPhase::Connected
            && matches!(snapshot.tunnel.server, ServerProbe::Answering { .. })
    })
    .await;
}

/// Checks the state of a session that the server ended: sign-in view, notice, empty store,
/// stopped tunnel.
fn assert_ended_by_server(snapshot: &Snapshot, store: &MemoryStoreHandle) {
    assert_eq!(snapshot.phase, Phase::SignedOut);
    assert_eq!(snapshot.profile, None);
    assert_eq!(snapshot.tunnel.phase, TunnelPhase::Stopped);
    let notice = snapshot.notice.as_ref().expect("a notice says why");
    assert_eq!(notice.kind, "session_expired");
    assert!(
        notice.message.contains("revoked"),
        "notice: {}",
        notice.message
    );
    assert_eq!(store.store().entry(), None);
    assert!(matches!(store.store().load(), Ok(None)));
}

#[tokio::test]
async fn revoke_noticed_by_failed_probes() {
    let server = RealServer::start().await;
    let (controller, store) = signed_in_alice(&server, options(3, NEVER)).await;
    wait_connected_and_answering(&controller).await;

    let revoked = server.revoke_peers_of("alice").await;
    let snapshot = wait_for(&controller, "the sign-in view", |snapshot| {
        snapshot.phase == Phase::SignedOut
    })
    .await;

    assert_eq!(revoked, ["10.13.0.2"]);
    assert_ended_by_server(&snapshot, &store);
}

#[tokio::test]
async fn revoke_noticed_while_disconnected() {
    let server = RealServer::start().await;
    let (controller, store) =
        signed_in_alice(&server, options(u32::MAX, Duration::from_millis(300))).await;
    wait_connected_and_answering(&controller).await;
    controller.disconnect().await.expect("had a session");

    let revoked = server.revoke_peers_of("alice").await;
    let snapshot = wait_for(&controller, "the sign-in view", |snapshot| {
        snapshot.phase == Phase::SignedOut
    })
    .await;

    assert_eq!(revoked, ["10.13.0.2"]);
    assert_ended_by_server(&snapshot, &store);
}

#[tokio::test]
async fn stopped_server_keeps_session() {
    let mut server = RealServer::start().await;
    let (controller, store) =
        signed_in_alice(&server, options(u32::MAX, Duration::from_millis(300))).await;
    let profile = controller.snapshot().profile;

    server.stop().await;
    let snapshot = wait_for(&controller, "an unreachable server", |snapshot| {
        matches!(snapshot.server_status, ServerStatus::Unreachable { .. })
    })
    .await;

    assert_eq!(snapshot.phase, Phase::SignedIn);
    assert_eq!(snapshot.profile, profile);
    assert_eq!(snapshot.notice, None);
    assert!(store.store().entry().is_some(), "the session stays saved");
}
