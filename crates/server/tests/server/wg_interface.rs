//! The wg-config back end applied to a live interface with `wg`.
//!
//! This machine cannot create WireGuard interfaces (the kernel module is missing), so
//! these tests run the server against a fake `wg`: a shell script that records its
//! arguments. The argument lists themselves are unit-tested in `backend::wg_tool`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Client, StatusCode};

use camwire_api::{AdminPeerList, Role};
use camwire_server::config::BackendChoice;
use camwire_server::db::Db;

use crate::common::{
    Database, TestServer, create_user, expect_error, expect_json, new_public_key, wait_until,
};
use crate::process::{ServerProcess, login, logout, register};

const INTERFACE: &str = "wg-test0";

/// A FAKE `wg` for tests: there is no WireGuard behind it. It appends its arguments to
/// `fake-wg.calls` beside itself, keeps the file given to `syncconf` as
/// `fake-wg.synced`, prints `fake-wg.handshakes` for `show INTERFACE latest-handshakes`,
/// and waits while `fake-wg.slow` exists.
const FAKE_WG: &str = r#"#!/bin/sh
# FAKE wg for camwire-server tests; see tests/server/wg_interface.rs.
dir=$(dirname "$0")
echo "$*" >> "$dir/fake-wg.calls"
while [ -e "$dir/fake-wg.slow" ]; do sleep 0.1; done
case "$1" in
  syncconf) cp "$3" "$dir/fake-wg.synced" ;;
  show) cat "$dir/fake-wg.handshakes" 2>/dev/null || true ;;
esac
"#;

/// Writes the fake as `dir/name`, executable, and returns its path.
fn install_fake_wg(dir: &Path, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;

    std::fs::create_dir_all(dir).expect("fake directory");
    let path = dir.join(name);
    std::fs::write(&path, FAKE_WG).expect("fake wg is written");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("fake-wg.calls"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn syncconf_count(calls: &[String]) -> usize {
    let prefix = format!("syncconf {INTERFACE} ");
    calls
        .iter()
        .filter(|call| call.starts_with(&prefix))
        .count()
}

async fn server_with_fake_wg(
    fake_dir: &Path,
    adjust: impl FnOnce(&mut camwire_server::ServerConfig),
) -> TestServer {
    let program = install_fake_wg(fake_dir, "fake-wg");

    TestServer::start_with(Database::Sqlite, move |config| {
        config.backend = BackendChoice::WgConfig;
        config.wg_interface = Some(INTERFACE.to_owned());
        config.wg_program = program;
        adjust(config);
    })
    .await
}

#[tokio::test]
async fn additions_sync_and_removal_touches_one_peer() {
    let fake = tempfile::tempdir().expect("temporary directory");
    let server = server_with_fake_wg(fake.path(), |_| {}).await;
    let after_start = calls(fake.path());
    let password = server.add_user("alice").await;
    let leaving = server.login("alice", &password).await;
    let staying = server.login("alice", &password).await;
    let leaving_key = new_public_key();
    let staying_key = new_public_key();
    server.register(&leaving, &leaving_key).await;
    server.register(&staying, &staying_key).await;
    let after_adds = calls(fake.path());
    let synced = std::fs::read_to_string(fake.path().join("fake-wg.synced")).expect("synced file");

    server.logout(&leaving).await;

    let after_logout = calls(fake.path());
    assert_eq!(syncconf_count(&after_start), 1, "{after_start:?}");
    assert_eq!(syncconf_count(&after_adds), 3, "{after_adds:?}");
    assert!(
        synced.contains(&leaving_key) && synced.contains(&staying_key),
        "{synced}"
    );
    assert!(synced.contains("PrivateKey = "), "{synced}");
    assert!(
        !synced.contains("Address"),
        "wg rejects the wg-quick Address line:\n{synced}"
    );
    assert_eq!(
        after_logout[after_adds.len()..],
        [format!("set {INTERFACE} peer {leaving_key} remove")],
        "a removal runs `wg set ... remove` only, leaving the other peers alone"
    );
    assert!(server.wg_config_text().contains(&staying_key));
    assert!(!server.wg_config_text().contains(&leaving_key));
    let leftovers: Vec<_> = std::fs::read_dir(server.dir.path())
        .expect("directory")
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".camwire-syncconf-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "stripped configs are deleted: {leftovers:?}"
    );
}

#[tokio::test]
async fn handshakes_come_from_wg_show() {
    let fake = tempfile::tempdir().expect("temporary directory");
    let server = server_with_fake_wg(fake.path(), |_| {}).await;
    let admin = server.admin_token().await;
    let password = server.add_user("alice").await;
    let token = server.login("alice", &password).await;
    let key = new_public_key();
    server.register(&token, &key).await;
    let handshake = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        - 5;
    std::fs::write(
        fake.path().join("fake-wg.handshakes"),
        format!("{key}\t{handshake}\n"),
    )
    .expect("handshakes file");

    let list: AdminPeerList =
        expect_json(server.get("/admin/peers", &admin).await, StatusCode::OK).await;

    let peer = &list.peers[0];
    assert_eq!(
        peer.last_handshake.map(|time| time.timestamp()),
        Some(handshake as i64)
    );
    // Idle time counts from the later of the allocation and the last handshake.
    let lease = server.config.lease_time.as_secs() as i64;
    let idle_since = peer.created_at.timestamp().max(handshake as i64);
    assert_eq!(
        peer.idle_expires_at.map(|time| time.timestamp()),
        Some(idle_since + lease)
    );
    assert!(
        calls(fake.path()).contains(&format!("show {INTERFACE} latest-handshakes")),
        "{:?}",
        calls(fake.path())
    );
}

#[tokio::test]
async fn slow_wg_gets_503_and_rolls_back() {
    let fake = tempfile::tempdir().expect("temporary directory");
    // The fake waits as long as its marker exists, so any limit makes the first request
    // time out. The limit is not shorter, so that the last registration, which runs the
    // fake for real, fits in it on a loaded machine.
    let server = server_with_fake_wg(fake.path(), |config| {
        config.request_timeout = Duration::from_secs(3);
    })
    .await;
    let password = server.add_user("alice").await;
    let token = server.login("alice", &password).await;
    let before = server.counts().await;
    let key = new_public_key();
    std::fs::write(fake.path().join("fake-wg.slow"), "").expect("slow marker");

    let response = server.register_response(&token, &key).await;

    expect_error(response, StatusCode::SERVICE_UNAVAILABLE, "request_timeout").await;
    assert_eq!(
        server.counts().await,
        before,
        "the allocation was rolled back"
    );
    std::fs::remove_file(fake.path().join("fake-wg.slow")).expect("fast again");
    // The cut-off addition reached the file; the resynchronization that the timeout
    // requested takes it out again.
    let cleaned = wait_until(Duration::from_secs(10), || async {
        !server.wg_config_text().contains(&key)
    })
    .await;
    assert!(cleaned, "{}", server.wg_config_text());
    let again = server.register(&token, &new_public_key()).await;
    assert_eq!(again.address.to_string(), "10.13.0.2/32");
}

#[tokio::test]
async fn binary_finds_wg_on_path() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let fake_bin = dir.path().join("fake-wg-bin");
    install_fake_wg(&fake_bin, "wg");
    let database = format!("sqlite://{}", dir.path().join("camwire.db").display());
    let db = Db::connect(&database).await.expect("database opens");
    let password = create_user(&db, "alice", Role::User).await;
    db.close().await;
    let path = format!(
        "{}:{}",
        fake_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let server = ServerProcess::spawn_with_env(
        &database,
        &dir.path().join("wg0.conf"),
        &["--peer-backend", "wg-config", "--wg-interface", INTERFACE],
        &[("PATH", path)],
    )
    .await;
    let http = Client::new();

    let token = login(&http, &server.url, "alice", &password)
        .await
        .expect("signs in");
    let key = new_public_key();
    register(&http, &server.url, &token, &key)
        .await
        .expect("registers");
    logout(&http, &server.url, &token).await.expect("signs out");

    let calls = calls(&fake_bin);
    assert!(syncconf_count(&calls) >= 2, "{calls:?}");
    assert_eq!(
        calls.last(),
        Some(&format!("set {INTERFACE} peer {key} remove")),
        "{calls:?}"
    );
}
