//! The embedded WireGuard hub with real clients: `camwire_tunnel::Tunnel` over UDP on
//! loopback, real handshakes, and HTTP through the tunnel to the server's VPN address.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use camwire_api::{AdminPeerList, AdminRevokeResponse, CleanupStatus, Role, WireguardConfig};
use camwire_server::metrics::sample_value;
use camwire_tunnel::{Forward, PrivateKey, PublicKey, Tunnel, TunnelOptions, TunnelState};

use crate::common::{Database, TestServer, create_user, expect_json, wait_until};
use crate::process::{ServerProcess, login, register};

/// How long a dial through the tunnel waits for the TCP handshake. Every dial that must
/// fail (after the peer was removed) takes this long, so it is short. A WireGuard and a
/// TCP handshake on loopback take milliseconds.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Upper bound of one HTTP exchange through the tunnel, far above its time on an idle
/// machine so that a loaded machine does not fail the test.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(20);

/// Upper bound for a condition that follows from a server action, such as the hub
/// counting a datagram or the sweeper acting.
const DEADLINE: Duration = Duration::from_secs(20);

/// A signed-in device with its key pair and WireGuard config.
struct Device {
    key: PrivateKey,
    token: String,
    config: WireguardConfig,
}

impl Device {
    async fn sign_in(server: &TestServer, username: &str, password: &str) -> Self {
        let token = server.login(username, password).await;
        let key = PrivateKey::generate();
        let config = server.register(&token, &key.public_key().to_base64()).await;

        Self { key, token, config }
    }

    fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    async fn start_tunnel(&self) -> Tunnel {
        start_tunnel(&self.config, &self.key).await
    }
}

async fn start_tunnel(config: &WireguardConfig, key: &PrivateKey) -> Tunnel {
    let options = TunnelOptions {
        connect_timeout: CONNECT_TIMEOUT,
        ..TunnelOptions::default()
    };

    Tunnel::start(config, key.clone(), options)
        .await
        .expect("tunnel starts")
}

fn api_address(config: &WireguardConfig) -> SocketAddrV4 {
    SocketAddrV4::new(config.server_address, 80)
}

/// Sends `GET path` as HTTP/1.1 over `stream` and reads one response with a
/// Content-Length; returns the status code and the body.
async fn http_get<S>(stream: &mut S, path: &str, keep_alive: bool) -> std::io::Result<(u16, String)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: camwire\r\nConnection: {connection}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;

    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break end + 4;
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..read]);
    };

    let head = String::from_utf8_lossy(&buffer[..header_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("response without a status code"))?;
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())
                .flatten()
        })
        .ok_or_else(|| invalid("response without Content-Length"))?;

    while buffer.len() < header_end + length {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    let body = String::from_utf8_lossy(&buffer[header_end..header_end + length]).into_owned();

    Ok((status, body))
}

/// Dials the server's API through `tunnel` and returns `GET path` as (status, body).
async fn get_through(tunnel: &Tunnel, config: &WireguardConfig, path: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = tunnel
            .dial(api_address(config))
            .await
            .expect("dial through the tunnel");
        http_get(&mut stream, path, false)
            .await
            .expect("HTTP exchange through the tunnel")
    };

    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .expect("HTTP exchange through the tunnel in time")
}

async fn assert_healthz_through(tunnel: &Tunnel, config: &WireguardConfig) {
    let (status, body) = get_through(tunnel, config, "/healthz").await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body, r#"{"status":"ok"}"#);
}

fn hub_has(server: &TestServer, key: &PublicKey) -> bool {
    server
        .hub()
        .peers()
        .iter()
        .any(|peer| peer.public_key == *key)
}

fn file_has(server: &TestServer, key: &PublicKey) -> bool {
    server
        .wg_config_file()
        .peers
        .iter()
        .any(|peer| peer.public_key == *key)
}

/// Checks that `tunnel` no longer reaches the server: a dial times out and its
/// datagrams arrive at the hub as junk.
async fn assert_tunnel_cut(server: &TestServer, tunnel: &Tunnel, config: &WireguardConfig) {
    let junk_before = server.hub().stats().junk_datagrams;

    let dialed = tunnel.dial(api_address(config)).await;

    assert!(dialed.is_err(), "the tunnel still reaches the server");
    assert!(
        server.hub().stats().junk_datagrams > junk_before,
        "the hub did not count the removed peer's datagrams as junk"
    );
}

on_both_databases!(tunnel_reaches_api_until_logout);

async fn tunnel_reaches_api_until_logout(database: Database) {
    let server = TestServer::start(database).await;
    let password = server.add_user("alice").await;
    let device = Device::sign_in(&server, "alice", &password).await;
    let hub = server.hub();
    assert_eq!(device.config.endpoint, hub.local_addr().to_string());
    assert_eq!(
        device.config.server_public_key,
        hub.public_key().to_base64()
    );
    assert_eq!(device.config.server_address, Ipv4Addr::new(10, 13, 0, 1));

    let tunnel = device.start_tunnel().await;
    assert_healthz_through(&tunnel, &device.config).await;

    let peer = hub
        .peers()
        .into_iter()
        .find(|peer| peer.public_key == device.public_key())
        .expect("the hub has the device");
    assert_eq!(peer.address, device.config.address.addr());
    assert!(peer.last_handshake.is_some());
    assert_eq!(tunnel.stats().state, TunnelState::Connected);

    // The admin list and the metrics show the hub's view.
    let admin = server.admin_token().await;
    let list: AdminPeerList =
        expect_json(server.get("/admin/peers", &admin).await, StatusCode::OK).await;
    let handshake = list.peers[0]
        .last_handshake
        .expect("the admin list shows the hub's handshake");
    let age = SystemTime::now()
        .duration_since(SystemTime::from(handshake))
        .unwrap_or_default();
    assert!(age < Duration::from_secs(60), "handshake {age:?} ago");
    let junk = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("UDP socket");
    junk.send_to(b"not a WireGuard message", hub.local_addr())
        .await
        .expect("datagram is sent");
    let counted = wait_until(DEADLINE, || async { hub.stats().junk_datagrams >= 1 }).await;
    assert!(counted, "the hub did not count the junk datagram");
    let metrics = server.metrics().await;
    let value =
        |name: &str| sample_value(&metrics, name).unwrap_or_else(|| panic!("{name}:\n{metrics}"));
    assert_eq!(value("camwire_hub_peers"), 1);
    assert!(value("camwire_hub_handshakes_total") >= 1);
    assert!(value("camwire_hub_junk_datagrams_total") >= 1);
    assert_eq!(value("camwire_hub_rejected_source_packets_total"), 0);
    assert_eq!(value("camwire_hub_cookies_sent_total"), 0);

    let logout = server.logout(&device.token).await;

    let cleanup = logout.wireguard.expect("cleanup is reported");
    assert_eq!(cleanup.status, CleanupStatus::Revoked);
    assert!(cleanup.peer_removed);
    assert!(!hub_has(&server, &device.public_key()));
    assert!(!file_has(&server, &device.public_key()));
    assert_tunnel_cut(&server, &tunnel, &device.config).await;

    // A new tunnel with the old key gets no handshake response.
    let unknown_before = hub.stats().unknown_key_handshakes;
    let fresh = device.start_tunnel().await;
    let rejected = wait_until(DEADLINE, || async {
        hub.stats().unknown_key_handshakes > unknown_before
    })
    .await;
    assert!(rejected, "the hub did not see the old key's handshake");
    let fresh_stats = fresh.stats();
    assert_eq!(fresh_stats.state, TunnelState::Connecting);
    assert_eq!(fresh_stats.last_handshake, None);
    let metrics = server.metrics().await;
    assert!(
        sample_value(&metrics, "camwire_hub_unknown_key_handshakes_total")
            .is_some_and(|count| count > 0),
        "{metrics}"
    );

    fresh.shutdown().await;
    tunnel.shutdown().await;
}

#[tokio::test]
async fn other_device_keeps_its_session() {
    let server = TestServer::start(Database::Sqlite).await;
    let alice_password = server.add_user("alice").await;
    let bob_password = server.add_user("bob").await;
    let leaving = Device::sign_in(&server, "alice", &alice_password).await;
    let staying = Device::sign_in(&server, "bob", &bob_password).await;
    let leaving_tunnel = leaving.start_tunnel().await;
    let staying_tunnel = staying.start_tunnel().await;
    assert_healthz_through(&leaving_tunnel, &leaving.config).await;

    // Bob keeps one HTTP connection open across Alice's sign-out.
    let mut stream = tokio::time::timeout(
        EXCHANGE_TIMEOUT,
        staying_tunnel.dial(api_address(&staying.config)),
    )
    .await
    .expect("dial in time")
    .expect("dial through the tunnel");
    let first = tokio::time::timeout(EXCHANGE_TIMEOUT, http_get(&mut stream, "/healthz", true))
        .await
        .expect("exchange in time")
        .expect("first exchange");
    let before = staying_tunnel.stats();
    let hub_before = server
        .hub()
        .peers()
        .into_iter()
        .find(|peer| peer.public_key == staying.public_key())
        .expect("the hub has bob");

    server.logout(&leaving.token).await;

    let second = tokio::time::timeout(EXCHANGE_TIMEOUT, http_get(&mut stream, "/healthz", true))
        .await
        .expect("exchange in time")
        .expect("second exchange on the same connection");
    assert_eq!(first.0, 200);
    assert_eq!(second, (200, r#"{"status":"ok"}"#.to_owned()));
    assert_healthz_through(&staying_tunnel, &staying.config).await;
    let after = staying_tunnel.stats();
    assert_eq!(after.state, TunnelState::Connected);
    assert_eq!(
        after.last_handshake, before.last_handshake,
        "the same WireGuard session carries the traffic"
    );
    assert!(after.rx_bytes > before.rx_bytes);
    assert!(after.tx_bytes > before.tx_bytes);
    let hub_after = server
        .hub()
        .peers()
        .into_iter()
        .find(|peer| peer.public_key == staying.public_key())
        .expect("the hub keeps bob");
    assert_eq!(hub_after.last_handshake, hub_before.last_handshake);
    assert!(hub_after.rx_bytes > hub_before.rx_bytes);
    assert!(!hub_has(&server, &leaving.public_key()));
    assert_tunnel_cut(&server, &leaving_tunnel, &leaving.config).await;

    drop(stream);
    leaving_tunnel.shutdown().await;
    staying_tunnel.shutdown().await;
}

on_both_databases!(restart_rebuilds_hub_peers);

async fn restart_rebuilds_hub_peers(database: Database) {
    let mut server = TestServer::start(database).await;
    let password = server.add_user("alice").await;
    let device = Device::sign_in(&server, "alice", &password).await;
    let tunnel = device.start_tunnel().await;
    assert_healthz_through(&tunnel, &device.config).await;
    tunnel.shutdown().await;

    server.restart().await;

    let peers = server.hub().peers();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].public_key, device.public_key());
    assert_eq!(peers[0].address, device.config.address.addr());
    // The hub has a new port (port 0 in the config), which the config carries.
    let response = server.get("/wireguard/config", &device.token).await;
    let config: WireguardConfig = expect_json(response, StatusCode::OK).await;
    assert_eq!(config.endpoint, server.hub().local_addr().to_string());
    assert_eq!(config.address, device.config.address);
    assert_eq!(config.server_public_key, device.config.server_public_key);

    let tunnel = start_tunnel(&config, &device.key).await;
    assert_healthz_through(&tunnel, &config).await;
    tunnel.shutdown().await;
}

#[tokio::test]
async fn admin_revoke_cuts_the_tunnel() {
    let server = TestServer::start(Database::Sqlite).await;
    let password = server.add_user("alice").await;
    let device = Device::sign_in(&server, "alice", &password).await;
    let admin = server.admin_token().await;
    let tunnel = device.start_tunnel().await;
    let mut stream =
        tokio::time::timeout(EXCHANGE_TIMEOUT, tunnel.dial(api_address(&device.config)))
            .await
            .expect("dial in time")
            .expect("dial through the tunnel");
    let first = tokio::time::timeout(EXCHANGE_TIMEOUT, http_get(&mut stream, "/healthz", true))
        .await
        .expect("exchange in time")
        .expect("first exchange");
    let list: AdminPeerList =
        expect_json(server.get("/admin/peers", &admin).await, StatusCode::OK).await;

    let response = server
        .authorized(
            server
                .http
                .delete(server.url(&format!("/admin/peers/{}", list.peers[0].id))),
            &admin,
        )
        .send()
        .await
        .expect("request is sent");

    let revoked: AdminRevokeResponse = expect_json(response, StatusCode::OK).await;
    assert_eq!(first.0, 200);
    assert!(revoked.wireguard.peer_removed);
    assert!(!hub_has(&server, &device.public_key()));
    assert!(!file_has(&server, &device.public_key()));
    // The open connection gets no response any more.
    let second =
        tokio::time::timeout(CONNECT_TIMEOUT, http_get(&mut stream, "/healthz", true)).await;
    assert!(
        !matches!(second, Ok(Ok(_))),
        "the revoked tunnel still answered: {second:?}"
    );
    assert_tunnel_cut(&server, &tunnel, &device.config).await;

    drop(stream);
    tunnel.shutdown().await;
}

/// Restarts a tunnel with the same key every second until `stop` is set, so that the
/// hub records a new handshake each time. Returns the last tunnel.
fn keep_handshaking(
    config: WireguardConfig,
    key: PrivateKey,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Tunnel> {
    tokio::spawn(async move {
        let mut tunnel = start_tunnel(&config, &key).await;
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let next = start_tunnel(&config, &key).await;
            std::mem::replace(&mut tunnel, next).shutdown().await;
        }
        tunnel
    })
}

#[tokio::test]
async fn sweeper_reclaims_stopped_client_and_keeps_active() {
    const LEASE: Duration = Duration::from_secs(4);
    let server = TestServer::start_with(Database::Sqlite, |config| {
        config.lease_time = LEASE;
        config.sweep_interval = Duration::from_millis(200);
    })
    .await;
    let password = server.add_user("alice").await;
    let stopped = Device::sign_in(&server, "alice", &password).await;
    let active = Device::sign_in(&server, "alice", &password).await;
    let stopped_tunnel = stopped.start_tunnel().await;
    assert_healthz_through(&stopped_tunnel, &stopped.config).await;
    stopped_tunnel.shutdown().await;

    let stop = Arc::new(AtomicBool::new(false));
    let handshaking =
        keep_handshaking(active.config.clone(), active.key.clone(), Arc::clone(&stop));

    let reclaimed = wait_until(DEADLINE, || async {
        !hub_has(&server, &stopped.public_key())
    })
    .await;
    // More than another lease with sweeps, so that a wrong reclaim of the active peer shows.
    tokio::time::sleep(LEASE + Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let active_tunnel = handshaking.await.expect("handshake task ends");

    assert!(reclaimed, "the stopped client's peer stayed in the hub");
    assert!(!file_has(&server, &stopped.public_key()));
    let peers = server.db().list_peers().await.expect("peers");
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0].public_key, active.public_key());
    assert!(hub_has(&server, &active.public_key()));
    assert_healthz_through(&active_tunnel, &active.config).await;
    let metrics = server.metrics().await;
    assert_eq!(
        sample_value(&metrics, "camwire_releases_total{cause=\"lease_expiry\"}"),
        Some(1)
    );

    active_tunnel.shutdown().await;
}

#[tokio::test]
async fn failed_file_write_still_cuts_the_tunnel() {
    let server = TestServer::start_with(Database::Sqlite, |config| {
        config.sweep_interval = Duration::from_millis(200);
        // Long, so that the sweeper and not the resynchronization completes the removal.
        config.resync_interval = Duration::from_secs(3_600);
    })
    .await;
    let password = server.add_user("alice").await;
    let device = Device::sign_in(&server, "alice", &password).await;
    let tunnel = device.start_tunnel().await;
    assert_healthz_through(&tunnel, &device.config).await;
    let blocker = server.dir.path().join(".wg0.conf.tmp");
    std::fs::create_dir(&blocker).expect("blocking directory");

    let logout = server.logout(&device.token).await;

    let cleanup = logout.wireguard.expect("cleanup is reported");
    assert_eq!(cleanup.status, CleanupStatus::Failed);
    assert_eq!(cleanup.released_address, Some(device.config.address.addr()));
    assert_eq!(server.counts().await.peers, 0, "the database side is freed");
    assert!(!hub_has(&server, &device.public_key()));
    assert!(file_has(&server, &device.public_key()));
    assert_tunnel_cut(&server, &tunnel, &device.config).await;

    std::fs::remove_dir(&blocker).expect("unblock");
    let retried = wait_until(DEADLINE, || async {
        server.counts().await.pending_removals == 0
    })
    .await;
    assert!(retried, "the pending removal was not retried");
    assert!(!file_has(&server, &device.public_key()));

    tunnel.shutdown().await;
}

/// Starts a local service for the forward test that greets each connection, then
/// echoes it, and returns its address.
async fn greeting_service() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("service binds");
    let address = listener.local_addr().expect("service address");

    tokio::spawn(async move {
        while let Ok((mut connection, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = connection.split();
                if writer.write_all(b"camera\n").await.is_ok() {
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                }
            });
        }
    });
    address
}

#[tokio::test]
async fn forward_reaches_local_service() {
    let service = greeting_service().await;
    let server = TestServer::start_with(Database::Sqlite, |config| {
        config.forwards = vec![Forward {
            port: 554,
            target: service,
        }];
    })
    .await;
    let password = server.add_user("alice").await;
    let device = Device::sign_in(&server, "alice", &password).await;
    let tunnel = device.start_tunnel().await;
    let camera = SocketAddrV4::new(device.config.server_address, 554);

    let echoed = tokio::time::timeout(EXCHANGE_TIMEOUT, async {
        let mut stream = tunnel.dial(camera).await.expect("dial the forwarded port");
        stream.write_all(b"ping\n").await.expect("write");
        let mut received = [0u8; 12];
        stream.read_exact(&mut received).await.expect("read");
        received
    })
    .await
    .expect("exchange in time");

    assert_eq!(&echoed, b"camera\nping\n");
    assert_healthz_through(&tunnel, &device.config).await;
    let unforwarded = tunnel
        .dial(SocketAddrV4::new(device.config.server_address, 22))
        .await;
    assert!(
        unforwarded.is_err(),
        "a port without a forward accepted a connection"
    );

    tunnel.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_the_hub() {
    let mut server = TestServer::start(Database::Sqlite).await;
    let password = server.add_user("alice").await;
    let device = Device::sign_in(&server, "alice", &password).await;
    let tunnel = device.start_tunnel().await;
    assert_healthz_through(&tunnel, &device.config).await;
    let hub = server.hub().clone();

    server.stop().await;

    let stats = hub.stats();
    assert_eq!(stats.tasks, 0, "{stats:?}");
    assert_eq!(stats.peers, 0, "{stats:?}");
    let dialed = tunnel.dial(api_address(&device.config)).await;
    assert!(dialed.is_err(), "the stopped hub still answered");

    tunnel.shutdown().await;
}

#[tokio::test]
async fn binary_hands_out_hub_and_forwards_api() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let database = format!("sqlite://{}", dir.path().join("camwire.db").display());
    let db = camwire_server::db::Db::connect(&database)
        .await
        .expect("database opens");
    let password = create_user(&db, "alice", Role::User).await;
    db.close().await;
    let server = ServerProcess::spawn(&database, &dir.path().join("wg0.conf"), &[]).await;
    let http = reqwest::Client::new();

    let token = login(&http, &server.url, "alice", &password)
        .await
        .expect("signs in");
    let key = PrivateKey::generate();
    let config = register(&http, &server.url, &token, &key.public_key().to_base64())
        .await
        .expect("registers");
    let tunnel = start_tunnel(&config, &key).await;

    let hub_addr = server
        .hub_addr()
        .expect("stdout names the hub before the URL");
    assert_eq!(config.endpoint, hub_addr.to_string());
    assert_healthz_through(&tunnel, &config).await;
    let log = server.log();
    assert!(
        log.contains(&format!("wireguard hub listening on udp://{hub_addr}")),
        "{log}"
    );

    tunnel.shutdown().await;
}
