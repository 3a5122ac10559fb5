//! The client and hub cores in a simulated network: datagrams move by function call
//! and time moves by arithmetic. Tests of boringtun's timers need the `mock-clock`
//! feature, which moves boringtun's clock along:
//! `cargo test -p camwire-tunnel --features mock-clock --lib`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::*;
use crate::keys::PrivateKey;
use crate::protocol::TIMER_TICK;
use crate::stack::{ConnectProgress, ConnectionId, RecvOutcome, TcpBuffers};

const HUB_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 1);
const CLIENT_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 2);
const FORWARDED_PORT: u16 = 80;

/// Which datagrams the simulated network loses.
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "mock-clock"), allow(dead_code))]
enum Loss {
    None,
    ToHub,
    Both,
}

/// A client and a hub joined by a network that loses datagrams only as `loss` sets.
struct Pair {
    client: ClientCore,
    hub: HubCore,
    client_key: PrivateKey,
    client_endpoint: SocketAddr,
    now: Instant,
    loss: Loss,
    /// Every datagram each side sent, whether or not the network delivered it.
    sent_by_client: Vec<Vec<u8>>,
    sent_by_hub: Vec<Vec<u8>>,
    client_events: Vec<Event>,
    hub_events: Vec<Event>,
}

impl Pair {
    fn new() -> Self {
        Self::with_keepalive(None)
    }

    fn with_keepalive(persistent_keepalive: Option<u16>) -> Self {
        let now = Instant::now();
        let hub_key = PrivateKey::generate();
        let client_key = PrivateKey::generate();
        let hub_endpoint: SocketAddr = "192.0.2.1:51820".parse().expect("valid address");

        let mut hub = HubCore::new(
            HubCoreConfig {
                private_key: hub_key.clone(),
                address: HUB_ADDRESS,
                network: "10.13.0.0/16".parse().expect("valid network"),
                forward_ports: vec![FORWARDED_PORT],
                tcp_buffers: TcpBuffers::default(),
            },
            now,
        );
        hub.add_peer(client_key.public_key(), CLIENT_ADDRESS, now)
            .expect("peer is new");
        let client = ClientCore::new(
            ClientConfig {
                private_key: client_key.clone(),
                server_public_key: hub_key.public_key(),
                endpoint: hub_endpoint,
                address: CLIENT_ADDRESS,
                server_address: HUB_ADDRESS,
                allowed_ips: vec!["10.13.0.0/16".parse().expect("valid network")],
                persistent_keepalive,
                tcp_buffers: TcpBuffers::default(),
            },
            now,
        );

        Self {
            client,
            hub,
            client_key,
            client_endpoint: "198.51.100.2:40000".parse().expect("valid address"),
            now,
            loss: Loss::None,
            sent_by_client: Vec::new(),
            sent_by_hub: Vec::new(),
            client_events: Vec::new(),
            hub_events: Vec::new(),
        }
    }

    /// Moves datagrams both ways until neither side has anything to send.
    fn run(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            while let Some(transmit) = self.client.poll_transmit(self.now) {
                moved = true;
                self.sent_by_client.push(transmit.payload.clone());
                if self.loss == Loss::None {
                    self.hub
                        .handle_datagram(self.client_endpoint, &transmit.payload, self.now);
                }
            }
            while let Some(transmit) = self.hub.poll_transmit(self.now) {
                moved = true;
                assert_eq!(transmit.destination, self.client_endpoint);
                self.sent_by_hub.push(transmit.payload.clone());
                if self.loss != Loss::Both {
                    self.client.handle_datagram(&transmit.payload, self.now);
                }
            }
            self.client_events
                .extend(std::iter::from_fn(|| self.client.poll_event()));
            self.hub_events
                .extend(std::iter::from_fn(|| self.hub.poll_event()));
            if !moved {
                return;
            }
        }
        panic!("the simulated network never went quiet");
    }

    /// Moves time forward in steps of at most one timer tick, running timers and the
    /// network at each step.
    fn advance(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            let step = TIMER_TICK.min(end - self.now);
            self.now += step;
            #[cfg(feature = "mock-clock")]
            mock_instant::MockClock::advance(step);
            self.client.handle_timeout(self.now);
            self.hub.handle_timeout(self.now);
            self.run();
        }
    }

    /// Opens a connection to the hub's forwarded port and returns both ends.
    fn open_connection(&mut self) -> (ConnectionId, ConnectionId) {
        let client_end = self
            .client
            .connect(SocketAddrV4::new(HUB_ADDRESS, FORWARDED_PORT))
            .expect("connect is allowed");
        self.run();
        self.advance(Duration::from_millis(50));

        let hub_end = self
            .hub_events
            .iter()
            .find_map(|event| match event {
                Event::ConnectionAccepted { connection, .. } => Some(*connection),
                _ => None,
            })
            .expect("the hub accepted the connection");
        assert_eq!(
            self.client.stack().connect_progress(client_end),
            ConnectProgress::Established
        );
        (client_end, hub_end)
    }

    fn hub_handshakes(&self) -> u64 {
        self.hub.counters().handshakes
    }
}

#[cfg_attr(not(feature = "mock-clock"), allow(dead_code))]
fn message_type(datagram: &[u8]) -> u8 {
    datagram[0]
}

#[cfg_attr(not(feature = "mock-clock"), allow(dead_code))]
/// Count of handshake initiations among `datagrams`.
fn initiations(datagrams: &[Vec<u8>]) -> usize {
    datagrams
        .iter()
        .filter(|datagram| message_type(datagram) == 1)
        .count()
}

#[cfg_attr(not(feature = "mock-clock"), allow(dead_code))]
/// Count of keepalives (transport data messages with an empty payload) among `datagrams`.
fn keepalives(datagrams: &[Vec<u8>]) -> usize {
    datagrams
        .iter()
        .filter(|datagram| message_type(datagram) == 4 && datagram.len() == 32)
        .count()
}

fn read_all(stack: &mut crate::stack::Stack, id: ConnectionId) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(RecvOutcome::Data(read)) = stack.recv(id, &mut buffer) {
        received.extend_from_slice(&buffer[..read]);
    }
    received
}

#[test]
fn handshake_completes() {
    let mut pair = Pair::new();

    pair.run();

    assert_eq!(pair.client.state(), TunnelState::Connected);
    assert_eq!(pair.hub_handshakes(), 1);
    assert_eq!(pair.client.last_handshake(), Some(pair.now));
    assert_eq!(pair.hub.peers()[0].last_handshake, Some(pair.now));
    assert_eq!(pair.hub.peers()[0].endpoint, Some(pair.client_endpoint));
    assert!(matches!(
        pair.client_events[..],
        [Event::HandshakeCompleted { first: true, .. }]
    ));
    assert!(matches!(
        pair.hub_events[..],
        [Event::HandshakeCompleted { first: true, .. }]
    ));
}

#[test]
fn data_flows_both_ways() {
    let mut pair = Pair::new();
    pair.run();
    let (client_end, hub_end) = pair.open_connection();

    let sent = pair
        .client
        .stack()
        .send(client_end, b"request")
        .expect("send succeeds");
    pair.run();
    let at_hub = read_all(pair.hub.stack(), hub_end);
    pair.hub
        .stack()
        .send(hub_end, b"response")
        .expect("send succeeds");
    pair.run();
    let at_client = read_all(pair.client.stack(), client_end);

    assert_eq!(sent, 7);
    assert_eq!(at_hub, b"request");
    assert_eq!(at_client, b"response");
    let counters = pair.client.counters();
    assert_eq!(counters.tx_packets, pair.sent_by_client.len() as u64);
    assert_eq!(counters.rx_packets, pair.sent_by_hub.len() as u64);
}

#[test]
fn write_before_final_ack_waits() {
    let mut pair = Pair::new();
    pair.run();
    pair.client
        .connect(SocketAddrV4::new(HUB_ADDRESS, FORWARDED_PORT))
        .expect("connect is allowed");
    let syn = pair.client.poll_transmit(pair.now).expect("SYN is sent");
    pair.hub
        .handle_datagram(pair.client_endpoint, &syn.payload, pair.now);
    let syn_ack = pair.hub.poll_transmit(pair.now).expect("SYN-ACK is sent");
    let hub_end = std::iter::from_fn(|| pair.hub.poll_event())
        .find_map(|event| match event {
            Event::ConnectionAccepted { connection, .. } => Some(connection),
            _ => None,
        })
        .expect("the hub accepted the connection");

    let early = pair.hub.stack().send(hub_end, b"early");
    pair.client.handle_datagram(&syn_ack.payload, pair.now);
    pair.run();
    let late = pair.hub.stack().send(hub_end, b"late");

    assert_eq!(early, Ok(0), "a write in SYN-RECEIVED must wait, not fail");
    assert_eq!(late, Ok(4));
}

#[test]
fn unmapped_port_is_reset() {
    let mut pair = Pair::new();
    pair.run();

    let id = pair
        .client
        .connect(SocketAddrV4::new(HUB_ADDRESS, 81))
        .expect("connect is allowed");
    pair.run();

    assert_eq!(
        pair.client.stack().connect_progress(id),
        ConnectProgress::Failed
    );
}

#[test]
fn connect_outside_allowed_ips_is_rejected() {
    let mut pair = Pair::new();

    let result = pair
        .client
        .connect("192.0.2.9:80".parse().expect("valid address"));

    assert!(matches!(result, Err(ConnectError::NotAllowed(_))));
}

#[test]
fn removed_peer_is_cut_off_at_once() {
    let mut pair = Pair::new();
    pair.run();
    let (client_end, _hub_end) = pair.open_connection();
    let hub_sent_before = pair.sent_by_hub.len();
    let junk_before = pair.hub.counters().junk_datagrams;

    assert!(pair.hub.remove_peer(&pair.client_key.public_key()));
    pair.client
        .stack()
        .send(client_end, b"late")
        .expect("send succeeds");
    pair.run();

    assert_eq!(
        pair.sent_by_hub.len(),
        hub_sent_before,
        "the hub answered a removed peer"
    );
    assert!(pair.hub.counters().junk_datagrams > junk_before);
    assert_eq!(pair.hub.connection_count(), 0);
    assert!(pair.hub.peers().is_empty());
}

#[test]
fn removed_key_handshake_is_not_answered() {
    let mut pair = Pair::new();
    pair.hub.remove_peer(&pair.client_key.public_key());

    pair.run();

    assert_eq!(pair.client.state(), TunnelState::Connecting);
    assert!(pair.sent_by_hub.is_empty());
    assert_eq!(pair.hub.counters().unknown_key_handshakes, 1);
}

#[test]
fn hub_drops_junk_and_counts_it() {
    let mut pair = Pair::new();
    pair.run();
    let peers_before = pair.hub.peers();

    for datagram in [
        &[][..],
        &[1, 0, 0, 0][..],
        &[4u8; 31][..],
        &[4u8; 100][..],
        &[2u8; 92][..],
    ] {
        pair.hub
            .handle_datagram(pair.client_endpoint, datagram, pair.now);
    }

    assert_eq!(pair.hub.counters().junk_datagrams, 5);
    assert_eq!(pair.hub.poll_transmit(pair.now), None);
    assert_eq!(pair.hub.peers(), peers_before);
}

#[cfg(feature = "mock-clock")]
mod timers {
    use super::*;
    use crate::protocol::{
        KEEPALIVE_TIMEOUT, REJECT_AFTER_TIME, REKEY_AFTER_TIME, REKEY_ATTEMPT_TIME, REKEY_TIMEOUT,
    };

    #[test]
    fn handshake_is_retried_after_rekey_timeout() {
        let mut pair = Pair::new();
        pair.loss = Loss::Both;
        pair.run();
        assert_eq!(initiations(&pair.sent_by_client), 1);

        pair.advance(REKEY_TIMEOUT - Duration::from_millis(500));
        assert_eq!(initiations(&pair.sent_by_client), 1, "retried too early");
        pair.advance(Duration::from_secs(1));
        assert_eq!(
            initiations(&pair.sent_by_client),
            2,
            "not retried after REKEY_TIMEOUT"
        );

        pair.loss = Loss::None;
        pair.advance(REKEY_TIMEOUT + Duration::from_secs(1));
        assert_eq!(pair.client.state(), TunnelState::Connected);
    }

    #[test]
    fn session_expires_after_rekey_attempt_time() {
        let mut pair = Pair::new();
        pair.loss = Loss::Both;
        pair.run();

        pair.advance(REKEY_ATTEMPT_TIME - Duration::from_secs(1));
        assert_eq!(pair.client.state(), TunnelState::Connecting);
        pair.advance(Duration::from_secs(2));

        assert_eq!(pair.client.state(), TunnelState::Expired);
        assert!(
            pair.client_events
                .iter()
                .any(|event| matches!(event, Event::SessionExpired { .. }))
        );
        let sent_when_expired = pair.sent_by_client.len();
        pair.advance(Duration::from_secs(30));
        assert_eq!(
            pair.sent_by_client.len(),
            sent_when_expired,
            "an expired tunnel kept sending"
        );
    }

    #[test]
    fn expired_tunnel_reconnects_on_new_traffic() {
        let mut pair = Pair::new();
        pair.loss = Loss::Both;
        pair.run();
        pair.advance(REKEY_ATTEMPT_TIME + Duration::from_secs(1));
        assert_eq!(pair.client.state(), TunnelState::Expired);

        pair.loss = Loss::None;
        pair.client
            .connect(SocketAddrV4::new(HUB_ADDRESS, FORWARDED_PORT))
            .expect("connect is allowed");
        pair.run();

        assert_eq!(pair.client.state(), TunnelState::Connected);
        assert_eq!(pair.hub_handshakes(), 1);
    }

    #[test]
    fn session_is_dropped_after_reject_after_time() {
        let mut pair = Pair::new();
        pair.run();
        assert_eq!(pair.client.state(), TunnelState::Connected);

        pair.advance(REJECT_AFTER_TIME - Duration::from_secs(1));
        assert_eq!(pair.client.state(), TunnelState::Connected);
        pair.advance(Duration::from_secs(2));

        assert_ne!(pair.client.state(), TunnelState::Connected);
    }

    #[test]
    fn passive_keepalive_after_keepalive_timeout() {
        let mut pair = Pair::new();
        pair.run();
        // A SYN to an address without a peer reaches the hub as data that it never
        // replies to, so the hub owes the client a keepalive.
        pair.client
            .connect(SocketAddrV4::new(Ipv4Addr::new(10, 13, 0, 99), 80))
            .expect("connect is allowed");
        pair.run();
        let hub_keepalives = keepalives(&pair.sent_by_hub);

        pair.advance(KEEPALIVE_TIMEOUT - Duration::from_millis(500));
        assert_eq!(
            keepalives(&pair.sent_by_hub),
            hub_keepalives,
            "keepalive before KEEPALIVE_TIMEOUT"
        );
        pair.advance(Duration::from_secs(1));

        assert_eq!(keepalives(&pair.sent_by_hub), hub_keepalives + 1);
    }

    #[test]
    fn persistent_keepalive_is_sent_when_idle() {
        let mut pair = Pair::with_keepalive(Some(25));
        pair.run();
        let before = keepalives(&pair.sent_by_client);

        pair.advance(Duration::from_secs(24));
        let early = keepalives(&pair.sent_by_client);
        pair.advance(Duration::from_secs(2));

        assert_eq!(early, before);
        assert_eq!(keepalives(&pair.sent_by_client), before + 1);
    }

    #[test]
    fn rekey_after_rekey_after_time() {
        let mut pair = Pair::new();
        pair.run();
        let first_handshake = pair.client.last_handshake().expect("handshake completed");
        let (client_end, hub_end) = pair.open_connection();

        // Traffic every second: the initiator rekeys once its session is REKEY_AFTER_TIME old.
        let seconds = REKEY_AFTER_TIME.as_secs() + 2;
        for _ in 0..seconds {
            pair.client
                .stack()
                .send(client_end, b".")
                .expect("send succeeds");
            pair.advance(Duration::from_secs(1));
            read_all(pair.hub.stack(), hub_end);
        }

        assert_eq!(pair.hub_handshakes(), 2);
        let second_handshake = pair.client.last_handshake().expect("handshake completed");
        assert!(second_handshake >= first_handshake + REKEY_AFTER_TIME);
        assert!(
            pair.client_events
                .iter()
                .any(|event| matches!(event, Event::HandshakeCompleted { first: false, .. }))
        );
        assert_eq!(pair.client.state(), TunnelState::Connected);
        assert_eq!(
            pair.client.stack().connect_progress(client_end),
            ConnectProgress::Established
        );
    }

    #[test]
    fn lost_initiations_are_retried_until_answered() {
        let mut pair = Pair::new();
        pair.loss = Loss::ToHub;
        pair.run();

        pair.advance(REKEY_TIMEOUT * 3 + Duration::from_secs(1));
        let attempts = initiations(&pair.sent_by_client);
        pair.loss = Loss::None;
        pair.advance(REKEY_TIMEOUT + Duration::from_secs(1));

        assert_eq!(attempts, 4);
        assert_eq!(pair.client.state(), TunnelState::Connected);
        assert_eq!(pair.hub_handshakes(), 1);
    }
}
