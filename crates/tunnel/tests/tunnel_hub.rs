//! A client tunnel and a hub over real UDP on loopback, with real handshakes.

#![cfg(not(feature = "mock-clock"))]

mod common;

use std::net::SocketAddrV4;
use std::time::Duration;

use camwire_tunnel::{TunnelError, TunnelOptions, TunnelState};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn forward_reaches_http_target() {
    init_tracing();
    let hub = TestHub::start().await;
    let (tunnel, _key) = hub
        .connect_client(client_address(2), TunnelOptions::default())
        .await;

    let local = tunnel
        .forward("127.0.0.1:0".parse().expect("valid address"), http_target())
        .await
        .expect("forward binds");
    let mut stream = TcpStream::connect(local).await.expect("forward accepts");
    let response = http_get(&mut stream).await;

    assert!(
        response.starts_with("HTTP/1.1 200 OK"),
        "response: {response}"
    );
    assert!(response.ends_with(HTTP_BODY), "response: {response}");
    let stats = tunnel.stats();
    assert_eq!(stats.state, TunnelState::Connected);
    assert!(stats.last_handshake.is_some());
    assert!(stats.rx_packets > 0);
    assert!(stats.tx_packets > 0);
    assert!(stats.rx_bytes > 0);
    assert!(stats.tx_bytes > 0);
    let peers = hub.hub.peers();
    assert_eq!(peers.len(), 1);
    assert!(peers[0].last_handshake.is_some());
    assert!(peers[0].rx_bytes > 0);
    assert!(peers[0].tx_bytes > 0);

    tunnel.shutdown().await;
}

#[tokio::test]
async fn dial_echoes_through_tunnel() {
    let hub = TestHub::start().await;
    let (tunnel, _key) = hub
        .connect_client(client_address(2), TunnelOptions::default())
        .await;

    let mut stream = tunnel.dial(echo_target()).await.expect("dial succeeds");
    stream
        .write_all(b"hello through the tunnel")
        .await
        .expect("write succeeds");
    stream.shutdown().await.expect("FIN is queued");
    let mut echoed = Vec::new();
    stream
        .read_to_end(&mut echoed)
        .await
        .expect("read succeeds");

    assert_eq!(echoed, b"hello through the tunnel");
    tunnel.shutdown().await;
}

#[tokio::test]
async fn dial_unmapped_port_is_refused() {
    let hub = TestHub::start().await;
    let (tunnel, _key) = hub
        .connect_client(client_address(2), TunnelOptions::default())
        .await;

    let result = tunnel.dial(SocketAddrV4::new(HUB_ADDRESS, 81)).await;

    assert!(
        matches!(result, Err(TunnelError::ConnectionRefused(_))),
        "result: {result:?}"
    );
    tunnel.shutdown().await;
}

#[tokio::test]
async fn dial_outside_allowed_ips_is_rejected() {
    let hub = TestHub::start().await;
    let (tunnel, _key) = hub
        .connect_client(client_address(2), TunnelOptions::default())
        .await;

    let result = tunnel
        .dial("192.0.2.1:80".parse().expect("valid address"))
        .await;
    let forward = tunnel
        .forward(
            "127.0.0.1:0".parse().expect("valid address"),
            "192.0.2.1:80".parse().expect("valid address"),
        )
        .await;

    assert!(
        matches!(result, Err(TunnelError::NotAllowed(_))),
        "result: {result:?}"
    );
    assert!(
        matches!(forward, Err(TunnelError::NotAllowed(_))),
        "forward: {forward:?}"
    );
    tunnel.shutdown().await;
}

#[tokio::test]
async fn socks5_connect_reaches_http_target() {
    let hub = TestHub::start().await;
    let (tunnel, _key) = hub
        .connect_client(client_address(2), TunnelOptions::default())
        .await;
    let proxy = tunnel
        .socks5("127.0.0.1:0".parse().expect("valid address"))
        .await
        .expect("proxy binds");

    let mut stream = TcpStream::connect(proxy).await.expect("proxy accepts");
    stream
        .write_all(&[5, 1, 0])
        .await
        .expect("greeting is sent");
    let mut method = [0u8; 2];
    stream
        .read_exact(&mut method)
        .await
        .expect("method reply arrives");
    stream
        .write_all(&[5, 1, 0, 1, 10, 13, 0, 1, 0, 80])
        .await
        .expect("request is sent");
    let mut reply = [0u8; 10];
    stream.read_exact(&mut reply).await.expect("reply arrives");
    let response = http_get(&mut stream).await;

    assert_eq!(method, [5, 0]);
    assert_eq!(reply[..2], [5, 0]);
    assert!(response.ends_with(HTTP_BODY), "response: {response}");
    tunnel.shutdown().await;
}

#[tokio::test]
async fn socks5_answers_errors_with_their_codes() {
    let hub = TestHub::start().await;
    let (tunnel, _key) = hub
        .connect_client(client_address(2), TunnelOptions::default())
        .await;
    let proxy = tunnel
        .socks5("127.0.0.1:0".parse().expect("valid address"))
        .await
        .expect("proxy binds");
    let cases: [(&[u8], u8); 3] = [
        // Outside the allowed IPs: not allowed by ruleset.
        (&[5, 1, 0, 1, 192, 0, 2, 1, 0, 80], 2),
        // Unmapped port on the hub: connection refused.
        (&[5, 1, 0, 1, 10, 13, 0, 1, 0, 81], 5),
        // UDP ASSOCIATE: command not supported.
        (&[5, 3, 0, 1, 10, 13, 0, 1, 0, 80], 7),
    ];

    for (request, expected) in cases {
        let mut stream = TcpStream::connect(proxy).await.expect("proxy accepts");
        stream
            .write_all(&[5, 1, 0])
            .await
            .expect("greeting is sent");
        let mut method = [0u8; 2];
        stream
            .read_exact(&mut method)
            .await
            .expect("method reply arrives");
        stream.write_all(request).await.expect("request is sent");
        let mut reply = [0u8; 10];
        stream.read_exact(&mut reply).await.expect("reply arrives");

        assert_eq!(reply[1], expected, "request {request:?}");
    }
    tunnel.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_forward_and_ends_tasks() {
    let hub = TestHub::start().await;
    let (tunnel, _key) = hub
        .connect_client(client_address(2), TunnelOptions::default())
        .await;
    let local = tunnel
        .forward("127.0.0.1:0".parse().expect("valid address"), echo_target())
        .await
        .expect("forward binds");
    let mut open = TcpStream::connect(local).await.expect("forward accepts");
    open.write_all(b"ping").await.expect("write succeeds");
    let mut echoed = [0u8; 4];
    open.read_exact(&mut echoed).await.expect("echo arrives");
    let mut dialed = tunnel.dial(echo_target()).await.expect("dial succeeds");
    assert_eq!(
        tunnel.stats().tasks,
        3,
        "driver, forward listener, one connection"
    );

    let started = std::time::Instant::now();
    let report = tunnel.shutdown().await;

    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert_eq!(report.ended, 3);
    assert_eq!(report.aborted, 0);
    assert!(
        TcpStream::connect(local).await.is_err(),
        "forward port still accepts"
    );
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), open.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "forwarded connection is still open");
    assert!(
        dialed.write_all(b"x").await.is_err(),
        "dialed stream still writable"
    );
}

#[tokio::test]
async fn dropped_tunnel_stops_its_tasks() {
    let hub = TestHub::start().await;
    let (tunnel, _key) = hub
        .connect_client(client_address(2), TunnelOptions::default())
        .await;
    let local = tunnel
        .forward("127.0.0.1:0".parse().expect("valid address"), echo_target())
        .await
        .expect("forward binds");

    drop(tunnel);
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(local).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    assert!(
        refused,
        "the forward port of a dropped tunnel still accepts"
    );
}

#[tokio::test]
async fn hub_shutdown_ends_tasks_and_rejects_peers() {
    let hub = TestHub::start().await;
    let (tunnel, _key) = hub
        .connect_client(client_address(2), TunnelOptions::default())
        .await;
    let mut stream = tunnel.dial(echo_target()).await.expect("dial succeeds");
    stream.write_all(b"ping").await.expect("write succeeds");
    let mut echoed = [0u8; 4];
    stream.read_exact(&mut echoed).await.expect("echo arrives");
    assert_eq!(
        hub.hub.stats().tasks,
        2,
        "driver and one forwarded connection"
    );

    let report = hub.hub.shutdown().await;
    let added = hub.hub.add_peer(
        camwire_tunnel::PrivateKey::generate().public_key(),
        client_address(3),
    );

    assert_eq!(report.ended, 2);
    assert_eq!(report.aborted, 0);
    assert_eq!(hub.hub.stats().tasks, 0);
    assert_eq!(hub.hub.stats().peers, 0);
    assert!(added.is_err(), "a stopped hub accepted a peer");
    tunnel.shutdown().await;
}
