//! Peer management of the hub over real UDP: removal, several clients, spoofing.

#![cfg(not(feature = "mock-clock"))]

mod common;

use std::time::Duration;

use camwire_tunnel::{Tunnel, TunnelError, TunnelOptions, TunnelState};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn echo_once(tunnel: &Tunnel, message: &[u8]) -> Vec<u8> {
    let mut stream = tunnel.dial(echo_target()).await.expect("dial succeeds");
    stream.write_all(message).await.expect("write succeeds");
    stream.shutdown().await.expect("FIN is queued");
    let mut echoed = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut echoed))
        .await
        .expect("echo arrives in time")
        .expect("read succeeds");
    echoed
}

#[tokio::test]
async fn removed_peer_session_stops_at_once() {
    init_tracing();
    let hub = TestHub::start().await;
    let (tunnel, key) = hub
        .connect_client(client_address(2), TunnelOptions::default())
        .await;
    let mut stream = tunnel.dial(echo_target()).await.expect("dial succeeds");
    stream.write_all(b"before").await.expect("write succeeds");
    let mut echoed = [0u8; 6];
    stream.read_exact(&mut echoed).await.expect("echo arrives");
    assert_eq!(hub.hub.stats().connections, 1);
    let junk_before = hub.hub.stats().junk_datagrams;

    assert!(hub.hub.remove_peer(&key.public_key()));
    stream
        .write_all(b"after")
        .await
        .expect("write is buffered locally");
    let mut more = [0u8; 5];
    let read = tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut more)).await;

    assert!(read.is_err(), "data still flows after removal: {read:?}");
    assert!(hub.hub.peers().is_empty());
    assert_eq!(hub.hub.stats().connections, 0);
    assert!(
        hub.hub.stats().junk_datagrams > junk_before,
        "datagrams of the removed session were not dropped"
    );
    assert!(
        !hub.hub.remove_peer(&key.public_key()),
        "second removal reports a peer"
    );
    tunnel.shutdown().await;
}

#[tokio::test]
async fn removed_key_gets_no_handshake_answer() {
    let hub = TestHub::start().await;
    let (tunnel, key) = hub
        .connect_client(client_address(2), TunnelOptions::default())
        .await;
    tunnel.shutdown().await;
    assert!(hub.hub.remove_peer(&key.public_key()));

    let again = Tunnel::start(
        &hub.client_config(client_address(2)),
        key,
        TunnelOptions::default(),
    )
    .await
    .expect("tunnel starts");
    let answered = wait_until(Duration::from_secs(2), || {
        again.stats().state == TunnelState::Connected
    })
    .await;

    assert!(!answered, "a removed key completed a handshake");
    assert!(hub.hub.stats().unknown_key_handshakes >= 1);
    assert_eq!(
        again.stats().rx_packets,
        0,
        "the hub answered a removed key"
    );
    again.shutdown().await;
}

#[tokio::test]
async fn add_peer_rejects_duplicates() {
    let hub = TestHub::start().await;
    let key = camwire_tunnel::PrivateKey::generate().public_key();
    hub.hub
        .add_peer(key, client_address(2))
        .expect("first peer is new");

    let same_key = hub.hub.add_peer(key, client_address(3));
    let same_address = hub.hub.add_peer(
        camwire_tunnel::PrivateKey::generate().public_key(),
        client_address(2),
    );
    let outside = hub.hub.add_peer(
        camwire_tunnel::PrivateKey::generate().public_key(),
        "10.14.0.2".parse().expect("valid address"),
    );
    let hub_address = hub.hub.add_peer(
        camwire_tunnel::PrivateKey::generate().public_key(),
        HUB_ADDRESS,
    );

    assert!(same_key.is_err());
    assert!(same_address.is_err());
    assert!(outside.is_err());
    assert!(hub_address.is_err());
    assert_eq!(hub.hub.peers().len(), 1);
}

#[tokio::test]
async fn second_client_unaffected_by_first_leaving() {
    let hub = TestHub::start().await;
    let (first, first_key) = hub
        .connect_client(client_address(2), TunnelOptions::default())
        .await;
    let (second, second_key) = hub
        .connect_client(client_address(3), TunnelOptions::default())
        .await;
    assert_eq!(echo_once(&first, b"first").await, b"first");
    assert_eq!(echo_once(&second, b"second").await, b"second");
    let second_before = hub
        .hub
        .peers()
        .into_iter()
        .find(|peer| peer.public_key == second_key.public_key())
        .expect("second peer is listed");
    let second_stats_before = second.stats();

    first.shutdown().await;
    assert!(hub.hub.remove_peer(&first_key.public_key()));
    assert_eq!(echo_once(&second, b"still here").await, b"still here");

    let peers = hub.hub.peers();
    assert_eq!(peers.len(), 1);
    let second_after = &peers[0];
    assert_eq!(second_after.public_key, second_key.public_key());
    assert_eq!(second_after.address, client_address(3));
    assert_eq!(
        second_after.last_handshake, second_before.last_handshake,
        "second peer had to handshake again"
    );
    assert!(second_after.rx_bytes > second_before.rx_bytes);
    assert!(second_after.tx_bytes > second_before.tx_bytes);
    let second_stats_after = second.stats();
    assert_eq!(second_stats_after.state, TunnelState::Connected);
    assert_eq!(
        second_stats_after.last_handshake,
        second_stats_before.last_handshake
    );
    assert!(second_stats_after.rx_bytes > second_stats_before.rx_bytes);
    second.shutdown().await;
}

#[tokio::test]
async fn spoofed_inner_source_is_dropped_and_counted() {
    let hub = TestHub::start().await;
    let (honest, _honest_key) = hub
        .connect_client(client_address(2), TunnelOptions::default())
        .await;
    // The spoofer's key belongs to 10.13.0.3, but its tunnel sends from 10.13.0.2.
    let spoofer_key = camwire_tunnel::PrivateKey::generate();
    hub.hub
        .add_peer(spoofer_key.public_key(), client_address(3))
        .expect("peer is new");
    let options = TunnelOptions {
        connect_timeout: Duration::from_secs(1),
        ..TunnelOptions::default()
    };
    let spoofer = Tunnel::start(&hub.client_config(client_address(2)), spoofer_key, options)
        .await
        .expect("tunnel starts");
    wait_connected(&spoofer).await;

    let result = spoofer.dial(echo_target()).await;

    assert!(
        matches!(result, Err(TunnelError::ConnectTimedOut { .. })),
        "result: {result:?}"
    );
    assert!(hub.hub.stats().rejected_source_packets >= 1);
    assert_eq!(echo_once(&honest, b"honest").await, b"honest");
    spoofer.shutdown().await;
    honest.shutdown().await;
}
