//! The lease sweeper, with a short lease and a fast sweep. Handshakes are injected
//! through `MemoryBackend`, a test back end, as a live WireGuard endpoint would report them.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;

use camwire_api::{CleanupStatus, Role};
use camwire_server::backend::{MemoryBackend, PeerBackend};
use camwire_server::config::BackendChoice;
use camwire_server::db::Db;
use camwire_server::metrics::sample_value;
use camwire_tunnel::PublicKey;

use crate::common::{Database, TestServer, create_user, expect_error, new_public_key, wait_until};
use crate::process::{self, ServerProcess};

/// Upper bound for the sweeper to act: many sweep intervals, so that a loaded machine
/// does not fail the test.
const SWEEP_DEADLINE: Duration = Duration::from_secs(20);

async fn leased_server(database: Database, backend: &Arc<MemoryBackend>) -> TestServer {
    let backend: Arc<dyn PeerBackend> = backend.clone();

    TestServer::start_with(database, move |config| {
        config.pool = "10.13.0.0/29".parse().expect("CIDR");
        config.lease_time = Duration::from_secs(2);
        config.sweep_interval = Duration::from_millis(200);
        config.backend = BackendChoice::Provided(backend);
    })
    .await
}

fn key(text: &str) -> PublicKey {
    PublicKey::from_base64(text).expect("valid key")
}

on_both_databases!(idle_peer_loses_address_and_active_keeps_it);

async fn idle_peer_loses_address_and_active_keeps_it(database: Database) {
    let backend = Arc::new(MemoryBackend::new());
    let server = leased_server(database, &backend).await;
    let password = server.add_user("alice").await;
    let stopped = server.login("alice", &password).await;
    let active = server.login("alice", &password).await;
    let stopped_key = new_public_key();
    let active_key = new_public_key();
    server.register(&stopped, &stopped_key).await;
    let active_config = server.register(&active, &active_key).await;
    assert!(backend.contains(&key(&stopped_key)));

    // The active client handshakes every 300 ms; the stopped one never does.
    let heartbeat = {
        let backend = Arc::clone(&backend);
        let active_key = key(&active_key);
        tokio::spawn(async move {
            loop {
                backend.set_last_handshake(active_key, SystemTime::now());
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };

    let reclaimed = wait_until(SWEEP_DEADLINE, || async {
        !backend.contains(&key(&stopped_key))
    })
    .await;
    // Another full lease with sweeps, so that a wrong reclaim of the active peer shows.
    tokio::time::sleep(Duration::from_secs(3)).await;
    heartbeat.abort();

    assert!(reclaimed, "the idle peer was not reclaimed");
    let peers = server.db().list_peers().await.expect("peers");
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].public_key.to_base64(), active_key);
    assert_eq!(peers[0].address, active_config.address.addr());
    assert!(
        peers[0].last_handshake_at.is_some(),
        "the sweeper stored the handshake"
    );
    assert!(backend.contains(&key(&active_key)));
    let free = server
        .db()
        .list_free_addresses()
        .await
        .expect("free addresses");
    assert_eq!(free.first(), Some(&Ipv4Addr::new(10, 13, 0, 2)));

    // The idle client's session stays; it has to register a key again.
    let config = server.get("/wireguard/config", &stopped).await;
    expect_error(config, StatusCode::NOT_FOUND, "not_configured").await;
    let metrics = server.metrics().await;
    assert_eq!(
        sample_value(&metrics, "camwire_releases_total{cause=\"lease_expiry\"}"),
        Some(1)
    );
}

on_both_databases!(expired_session_is_reclaimed_and_deleted);

async fn expired_session_is_reclaimed_and_deleted(database: Database) {
    let backend = Arc::new(MemoryBackend::new());
    let server = leased_server(database, &backend).await;
    let password = server.add_user("alice").await;
    let token = server.login("alice", &password).await;
    let idle_session = server.login("alice", &password).await;
    let key_text = new_public_key();
    server.register(&token, &key_text).await;
    backend.set_last_handshake(
        key(&key_text),
        SystemTime::now() + Duration::from_secs(3_600),
    );
    sqlx::query("UPDATE sessions SET expires_at = $1")
        .bind(camwire_server::db::unix_now() - 1)
        .execute(server.db().pool())
        .await
        .expect("expiry is set");

    let swept = wait_until(SWEEP_DEADLINE, || async {
        server.counts().await.sessions == 0
    })
    .await;

    assert!(
        swept,
        "expired sessions were not deleted: {:?}",
        server.counts().await
    );
    assert_eq!(server.counts().await.peers, 0);
    assert!(!backend.contains(&key(&key_text)));
    let me = server.get("/me", &idle_session).await;
    expect_error(me, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let metrics = server.metrics().await;
    assert_eq!(
        sample_value(&metrics, "camwire_releases_total{cause=\"session_expiry\"}"),
        Some(1)
    );
}

on_both_databases!(sweeper_retries_failed_removal);

async fn sweeper_retries_failed_removal(database: Database) {
    let server = TestServer::start_with(database, |config| {
        config.sweep_interval = Duration::from_millis(200);
        // Long, so that the sweeper and not the resynchronization completes the removal.
        config.resync_interval = Duration::from_secs(3_600);
    })
    .await;
    let password = server.add_user("alice").await;
    let token = server.login("alice", &password).await;
    let key_text = new_public_key();
    server.register(&token, &key_text).await;
    let blocker = server.dir.path().join(".wg0.conf.tmp");
    std::fs::create_dir(&blocker).expect("blocking directory");

    let logout = server.logout(&token).await;
    let failed_status = logout.wireguard.map(|cleanup| cleanup.status);
    let pending_after_logout = server.counts().await.pending_removals;
    let still_in_file = server.wg_config_text().contains(&key_text);
    std::fs::remove_dir(&blocker).expect("unblock");

    let retried = wait_until(SWEEP_DEADLINE, || async {
        server.counts().await.pending_removals == 0
    })
    .await;

    assert_eq!(failed_status, Some(CleanupStatus::Failed));
    assert_eq!(pending_after_logout, 1);
    assert!(still_in_file);
    assert!(retried, "the pending removal was not retried");
    assert!(!server.wg_config_text().contains(&key_text));
}

#[tokio::test]
async fn failed_sweep_retry_logs_the_cause() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let database = format!("sqlite://{}", dir.path().join("camwire.db").display());
    let db = Db::connect(&database).await.expect("database opens");
    let password = create_user(&db, "alice", Role::User).await;
    db.close().await;
    let wg_config = dir.path().join("wg0.conf");
    let arguments = ["--sweep-interval", "1", "--resync-interval", "3600"];
    let server = ServerProcess::spawn(&database, &wg_config, &arguments).await;
    let http = reqwest::Client::new();
    let token = process::login(&http, &server.url, "alice", &password)
        .await
        .expect("signed in");
    process::register(&http, &server.url, &token, &new_public_key())
        .await
        .expect("registered");
    // A directory in place of the config file's temporary file fails every write.
    std::fs::create_dir(dir.path().join(".wg0.conf.tmp")).expect("blocking directory");

    process::logout(&http, &server.url, &token)
        .await
        .expect("signed out");
    let logged = wait_until(SWEEP_DEADLINE, || async {
        server.log().contains("sweep action failed")
    })
    .await;

    assert!(logged, "no failed sweep action in:\n{}", server.log());
    let log = server.log();
    let line = log
        .lines()
        .find(|line| line.contains("sweep action failed"))
        .expect("the line exists");
    assert!(line.contains("action=\"retry_removal\""), "{line}");
    assert!(
        line.contains("failed to write the WireGuard config"),
        "{line}"
    );
    assert!(!line.contains("internal server error"), "{line}");
}
