//! Feeds arbitrary datagrams into the hub's sans-IO datagram input.
//!
//! Run with `cargo +nightly fuzz run hub_datagram` from the repository root.
//! The hub has one peer; each input is split into datagrams at every 0xFF byte, so
//! that sequences of messages are explored too. Nothing may panic, and a hub that
//! received only unauthenticated input may send nothing but cookie replies and must
//! keep its peers unchanged.

#![no_main]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Instant;

use camwire_tunnel::core::{HubCore, HubCoreConfig};
use camwire_tunnel::{PrivateKey, PublicKey, TcpBuffers};
use libfuzzer_sys::fuzz_target;

const PEER_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 2);

fn keys() -> &'static (PrivateKey, PublicKey) {
    static KEYS: OnceLock<(PrivateKey, PublicKey)> = OnceLock::new();
    KEYS.get_or_init(|| (PrivateKey::generate(), PrivateKey::generate().public_key()))
}

fuzz_target!(|input: &[u8]| {
    let (hub_key, peer_key) = keys();
    let now = Instant::now();
    let mut hub = HubCore::new(
        HubCoreConfig {
            private_key: hub_key.clone(),
            address: Ipv4Addr::new(10, 13, 0, 1),
            network: "10.13.0.0/16".parse().expect("valid network"),
            forward_ports: vec![80],
            tcp_buffers: TcpBuffers { receive: 4096, send: 4096 },
        },
        now,
    );
    hub.add_peer(*peer_key, PEER_ADDRESS, now).expect("peer is new");
    let peers_before = hub.peers();
    let source: SocketAddr = "192.0.2.7:51820".parse().expect("valid address");

    for datagram in input.split(|byte| *byte == 0xff) {
        hub.handle_datagram(source, datagram, now);
        hub.handle_timeout(now);
        while let Some(transmit) = hub.poll_transmit(now) {
            assert_eq!(transmit.payload.first(), Some(&3), "answered junk with more than a cookie reply");
        }
    }

    assert_eq!(hub.peers(), peers_before);
    assert_eq!(hub.counters().handshakes, 0);
});
