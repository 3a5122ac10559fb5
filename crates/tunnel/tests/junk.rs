//! Junk, truncated WireGuard messages and a handshake flood sent to a hub over UDP.

#![cfg(not(feature = "mock-clock"))]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use boringtun::noise::{Tunn, TunnResult};
use camwire_tunnel::{PrivateKey, PublicKey, Tunnel, TunnelOptions};
use common::*;
use rand::{Rng, RngCore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

/// Lengths of the four WireGuard message types (the data length is the minimum).
const MESSAGE_LENGTHS: [(u8, usize); 4] = [(1, 148), (2, 92), (3, 64), (4, 32)];

/// Datagrams that are not valid messages of any peer: random bytes, every message
/// type cut short or padded, and full-length messages with random contents.
fn junk_datagrams() -> Vec<Vec<u8>> {
    let mut rng = rand::thread_rng();
    let mut datagrams = vec![Vec::new()];

    for _ in 0..200 {
        let mut datagram = vec![0u8; rng.gen_range(1..1500)];
        rng.fill_bytes(&mut datagram);
        datagrams.push(datagram);
    }
    for (message_type, length) in MESSAGE_LENGTHS {
        for cut in 0..length + 2 {
            let mut datagram = vec![0u8; cut];
            rng.fill_bytes(&mut datagram);
            if let Some(first) = datagram.first_mut() {
                *first = message_type;
            }
            datagram
                .iter_mut()
                .skip(1)
                .take(3)
                .for_each(|byte| *byte = 0);
            datagrams.push(datagram);
        }
    }
    datagrams
}

fn handshake_initiation(hub_key: PublicKey) -> Vec<u8> {
    let flooder = PrivateKey::generate();
    let mut tunn = Tunn::new(
        flooder.as_x25519().clone(),
        hub_key.as_x25519(),
        None,
        None,
        1,
        None,
    );
    let mut buffer = vec![0u8; 2048];
    match tunn.format_handshake_initiation(&mut buffer, false) {
        TunnResult::WriteToNetwork(initiation) => initiation.to_vec(),
        other => panic!("no initiation: {other:?}"),
    }
}

#[tokio::test]
async fn junk_changes_nothing_but_junk_counter() {
    init_tracing();
    let hub = TestHub::start().await;
    let mut config = hub.client_config(client_address(2));
    config.persistent_keepalive = 0;
    let key = PrivateKey::generate();
    hub.hub
        .add_peer(key.public_key(), client_address(2))
        .expect("peer is new");
    let tunnel = Tunnel::start(&config, key, TunnelOptions::default())
        .await
        .expect("tunnel starts");
    wait_connected(&tunnel).await;
    // Let the handshake's keepalive and any queued packet settle.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let peers_before = hub.hub.peers();
    let stats_before = hub.hub.stats();
    let junk = junk_datagrams();

    let socket = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind on loopback");
    for datagram in &junk {
        socket
            .send_to(datagram, hub.hub.local_addr())
            .await
            .expect("send on loopback");
    }
    let expected = stats_before.junk_datagrams + junk.len() as u64;
    let counted = wait_until(Duration::from_secs(5), || {
        hub.hub.stats().junk_datagrams == expected
    })
    .await;

    let stats_after = hub.hub.stats();
    assert!(
        counted,
        "junk counter is {}, expected {expected}",
        stats_after.junk_datagrams
    );
    assert_eq!(hub.hub.peers(), peers_before);
    assert_eq!(stats_after.handshakes, stats_before.handshakes);
    assert_eq!(stats_after.cookies_sent, stats_before.cookies_sent);
    assert_eq!(
        stats_after.rejected_source_packets,
        stats_before.rejected_source_packets
    );
    assert_eq!(
        stats_after.unknown_key_handshakes,
        stats_before.unknown_key_handshakes
    );
    assert_eq!(stats_after.peers, 1);
    let mut answer = [0u8; 1];
    let answered = tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut answer)).await;
    assert!(answered.is_err(), "the hub answered junk");

    let mut stream = tunnel
        .dial(echo_target())
        .await
        .expect("dial succeeds after junk");
    stream.write_all(b"alive").await.expect("write succeeds");
    let mut echoed = [0u8; 5];
    stream.read_exact(&mut echoed).await.expect("echo arrives");
    assert_eq!(&echoed, b"alive");
    tunnel.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_flood_gets_cookies_and_client_connects() {
    let hub = TestHub::start().await;
    let initiations: Vec<Vec<u8>> = (0..200)
        .map(|_| handshake_initiation(hub.hub.public_key()))
        .collect();
    let hub_address: SocketAddr = hub.hub.local_addr();
    let (stop_flood, mut flood_stopped) = tokio::sync::watch::channel(false);
    let flood = tokio::spawn(async move {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind on loopback");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut sent = 0u64;
        // About 2000 initiations per second, bounded in time.
        while tokio::time::Instant::now() < deadline && !*flood_stopped.borrow_and_update() {
            for initiation in initiations.iter().take(20) {
                let _ = socket.send_to(initiation, hub_address).await;
                sent += 1;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sent
    });
    let under_load = wait_until(Duration::from_secs(5), || hub.hub.stats().cookies_sent > 0).await;
    assert!(under_load, "the flood drew no cookie replies");

    let key = PrivateKey::generate();
    hub.hub
        .add_peer(key.public_key(), client_address(2))
        .expect("peer is new");
    let tunnel = Tunnel::start(
        &hub.client_config(client_address(2)),
        key,
        TunnelOptions::default(),
    )
    .await
    .expect("tunnel starts");
    // A client that got a cookie retries after REKEY_TIMEOUT (5 s) with the cookie's MAC.
    let connected = wait_until(Duration::from_secs(20), || {
        tunnel.stats().state == camwire_tunnel::TunnelState::Connected
    })
    .await;
    let _ = stop_flood.send(true);
    let sent = flood.await.expect("flood task ends");

    let stats = hub.hub.stats();
    assert!(connected, "the real client did not connect under the flood");
    assert!(stats.cookies_sent > 0);
    assert!(stats.handshakes >= 1);
    assert!(sent > 1000, "flood sent only {sent} initiations");
    let mut stream = tunnel.dial(echo_target()).await.expect("dial succeeds");
    stream.write_all(b"in").await.expect("write succeeds");
    let mut echoed = [0u8; 2];
    stream.read_exact(&mut echoed).await.expect("echo arrives");
    tunnel.shutdown().await;
}
