//! The server side: many peers on one UDP socket, one TCP/IP stack on the server's
//! tunnel address, and TCP ports forwarded to local services.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, TunnResult};
use ipnet::Ipv4Net;
use smoltcp::iface::SocketHandle;

use super::{Event, TimeoutReason, Transmit, earliest};
use crate::keys::{PrivateKey, PublicKey};
use crate::protocol::{MessageKind, SCRATCH_LEN, TIMER_TICK, ipv4_addresses};
use crate::session::{Session, TimerOutcome, TrafficCounters};
use crate::stack::{Stack, TcpBuffers};

/// Handshake messages per second that the shared rate limiter lets through before it
/// replies with cookies, the value of boringtun 0.7.1's own device (`HANDSHAKE_RATE_LIMIT`). Camwire checks each
/// initiation twice (once to find the peer, once inside `Tunn`), so about half as many
/// handshakes per second complete before cookies are required.
const HANDSHAKES_PER_SECOND: u64 = 100;

/// Interval of the rate limiter's count reset; `RateLimiter::reset_count` resets only
/// when a second has passed on boringtun's clock.
const RATE_LIMITER_RESET: Duration = Duration::from_secs(1);

/// Listening sockets kept per forwarded port: a smoltcp listener takes exactly one
/// connection, so SYNs that arrive in the same poll need one listener each.
const LISTEN_BACKLOG: usize = 4;

/// Peer indices are 24 bits wide because boringtun shifts them left by 8 bits.
const INDEX_MASK: u32 = 0x00ff_ffff;

/// Settings of the hub's sans-IO core.
#[derive(Debug, Clone)]
pub struct HubCoreConfig {
    pub private_key: PrivateKey,
    /// The hub's own address inside the tunnel.
    pub address: Ipv4Addr,
    /// The network that peer addresses come from.
    pub network: Ipv4Net,
    /// TCP ports on `address` that accept connections. SYNs to other ports get RST.
    pub forward_ports: Vec<u16>,
    pub tcp_buffers: TcpBuffers,
}

/// Error of adding a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddPeerError {
    #[error("public key {0} is already a peer of this hub")]
    KeyInUse(String),
    #[error("address {0} is already the address of another peer")]
    AddressInUse(Ipv4Addr),
    #[error("address {address} is outside the hub's network {network}")]
    OutsideNetwork { address: Ipv4Addr, network: Ipv4Net },
    #[error("address {0} is the hub's own address")]
    HubAddress(Ipv4Addr),
    #[error("public key {0} is the hub's own key")]
    OwnKey(String),
    #[error("the hub is stopped")]
    Stopped,
}

/// Counters of the hub's datagram input.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HubCounters {
    /// Datagrams dropped because they were not WireGuard messages, named no session of
    /// a current peer, or failed authentication.
    pub junk_datagrams: u64,
    /// Decrypted packets dropped because their inner source was not the sending
    /// peer's address.
    pub rejected_source_packets: u64,
    /// Handshakes completed, rekeys included.
    pub handshakes: u64,
    /// Cookie replies sent because handshakes arrived faster than the rate limit.
    pub cookies_sent: u64,
    /// Valid handshake initiations from keys that are not peers (for example removed ones).
    pub unknown_key_handshakes: u64,
}

/// A peer as [`HubCore::peers`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSnapshot {
    pub public_key: PublicKey,
    pub address: Ipv4Addr,
    /// The UDP endpoint of the peer's last authenticated datagram.
    pub endpoint: Option<SocketAddr>,
    pub last_handshake: Option<Instant>,
    pub counters: TrafficCounters,
}

struct Peer {
    session: Session,
    address: Ipv4Addr,
    endpoint: Option<SocketAddr>,
}

/// The sans-IO hub. See the module `core` for the call order.
pub struct HubCore {
    /// `None` once stopped, so that the key is zeroized then.
    private_key: Option<PrivateKey>,
    public_key: PublicKey,
    address: Ipv4Addr,
    network: Ipv4Net,
    rate_limiter: Arc<RateLimiter>,
    peers: HashMap<u32, Peer>,
    index_by_key: HashMap<PublicKey, u32>,
    index_by_address: HashMap<Ipv4Addr, u32>,
    next_index: u32,
    stack: Stack,
    listeners: Vec<(u16, Vec<SocketHandle>)>,
    scratch: Vec<u8>,
    outgoing: Vec<Vec<u8>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    next_timer_check: Option<Instant>,
    next_rate_reset: Instant,
    counters: HubCounters,
    stopped: bool,
}

impl HubCore {
    pub fn new(config: HubCoreConfig, now: Instant) -> Self {
        let public_key = config.private_key.public_key();
        let rate_limiter = Arc::new(RateLimiter::new(
            &public_key.as_x25519(),
            HANDSHAKES_PER_SECOND,
        ));
        let mut stack = Stack::new(
            config.address,
            config.network.prefix_len(),
            None,
            config.tcp_buffers,
            now,
        );

        let mut ports = config.forward_ports;
        ports.sort_unstable();
        ports.dedup();
        let listeners = ports
            .into_iter()
            .map(|port| {
                let handles = (0..LISTEN_BACKLOG).map(|_| stack.listen(port)).collect();
                (port, handles)
            })
            .collect();

        Self {
            private_key: Some(config.private_key),
            public_key,
            address: config.address,
            network: config.network,
            rate_limiter,
            peers: HashMap::new(),
            index_by_key: HashMap::new(),
            index_by_address: HashMap::new(),
            next_index: rand::random::<u32>() & INDEX_MASK,
            stack,
            listeners,
            scratch: vec![0; SCRATCH_LEN],
            outgoing: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_timer_check: None,
            next_rate_reset: now + RATE_LIMITER_RESET,
            counters: HubCounters::default(),
            stopped: false,
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// Adds a peer allowed to use `address` as its inner source address.
    pub fn add_peer(
        &mut self,
        public_key: PublicKey,
        address: Ipv4Addr,
        now: Instant,
    ) -> Result<(), AddPeerError> {
        if public_key == self.public_key {
            return Err(AddPeerError::OwnKey(public_key.to_base64()));
        }
        if self.index_by_key.contains_key(&public_key) {
            return Err(AddPeerError::KeyInUse(public_key.to_base64()));
        }
        if address == self.address {
            return Err(AddPeerError::HubAddress(address));
        }
        if !self.network.contains(&address) {
            return Err(AddPeerError::OutsideNetwork {
                address,
                network: self.network,
            });
        }
        if self.index_by_address.contains_key(&address) {
            return Err(AddPeerError::AddressInUse(address));
        }

        if self.private_key.is_none() {
            return Err(AddPeerError::Stopped);
        }
        let index = self.allocate_index();
        let Some(private_key) = self.private_key.as_ref() else {
            return Err(AddPeerError::Stopped);
        };
        let session = Session::new(
            private_key,
            public_key,
            None,
            index,
            Some(Arc::clone(&self.rate_limiter)),
        );
        self.peers.insert(
            index,
            Peer {
                session,
                address,
                endpoint: None,
            },
        );
        self.index_by_key.insert(public_key, index);
        self.index_by_address.insert(address, index);
        self.next_timer_check.get_or_insert(now + TIMER_TICK);
        Ok(())
    }

    /// Removes a peer: its session ends at once (later datagrams count as junk, its
    /// handshakes as unknown keys) and its TCP connections are dropped.
    pub fn remove_peer(&mut self, public_key: &PublicKey) -> bool {
        let Some(index) = self.index_by_key.remove(public_key) else {
            return false;
        };
        let Some(peer) = self.peers.remove(&index) else {
            return false;
        };
        self.index_by_address.remove(&peer.address);
        self.stack.drop_connections_of(peer.address);
        if self.peers.is_empty() {
            self.next_timer_check = None;
        }
        true
    }

    pub fn peers(&self) -> Vec<PeerSnapshot> {
        let mut peers: Vec<PeerSnapshot> = self
            .peers
            .values()
            .map(|peer| PeerSnapshot {
                public_key: peer.session.peer(),
                address: peer.address,
                endpoint: peer.endpoint,
                last_handshake: peer.session.last_handshake(),
                counters: peer.session.counters(),
            })
            .collect();
        peers.sort_by_key(|peer| peer.address);
        peers
    }

    pub fn counters(&self) -> HubCounters {
        self.counters
    }

    /// Number of TCP connections through the hub that are open or closing.
    pub fn connection_count(&self) -> usize {
        self.stack.connection_count()
    }

    /// Handles one UDP datagram from `source`. Anything that is not a valid message
    /// of a current peer is counted and dropped.
    pub fn handle_datagram(&mut self, source: SocketAddr, datagram: &[u8], now: Instant) {
        if self.stopped {
            return;
        }
        let Some(kind) = MessageKind::parse(datagram) else {
            self.drop_junk(source, "not a WireGuard message");
            return;
        };

        let index = match kind.receiver_index() {
            Some(receiver_index) => receiver_index >> 8,
            None => match self.identify_initiator(source, datagram) {
                Some(index) => index,
                None => return,
            },
        };
        let Some(peer) = self.peers.get_mut(&index) else {
            self.drop_junk(source, "unknown receiver index");
            return;
        };

        let first = peer.session.last_handshake().is_none();
        let result = peer.session.decapsulate(
            Some(source.ip()),
            datagram,
            &mut self.scratch,
            &mut self.outgoing,
            now,
        );
        let decapsulated = match result {
            Ok(decapsulated) => decapsulated,
            Err(error) => {
                self.counters.junk_datagrams += 1;
                tracing::trace!(%source, ?error, "dropped datagram that failed authentication");
                return;
            }
        };

        if decapsulated.cookie_sent {
            self.counters.cookies_sent += 1;
            self.queue_outgoing(source);
            return;
        }
        peer.endpoint = Some(source);
        if decapsulated.handshake_completed {
            self.counters.handshakes += 1;
            self.events.push_back(Event::HandshakeCompleted {
                peer: peer.session.peer(),
                first,
            });
        }
        let peer_address = peer.address;
        self.queue_outgoing(source);

        let Some(packet) = decapsulated.inner else {
            return;
        };
        let inner_source = ipv4_addresses(&packet).map(|(inner_source, _)| inner_source);
        if inner_source != Some(peer_address) {
            self.counters.rejected_source_packets += 1;
            tracing::trace!(?inner_source, %peer_address, "dropped packet with a spoofed inner source");
            return;
        }
        self.stack.push_inbound(packet);
        if self.stack.inbound_backlog_full() {
            self.stack.poll(now);
            self.accept_connections();
            self.encapsulate_outbound();
        }
    }

    /// Runs whatever timers are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.stopped {
            return;
        }
        if self.next_rate_reset <= now {
            self.rate_limiter.reset_count();
            self.next_rate_reset = now + RATE_LIMITER_RESET;
        }

        if self.next_timer_check.is_some_and(|at| at <= now) {
            for peer in self.peers.values_mut() {
                let outcome = peer
                    .session
                    .update_timers(&mut self.scratch, &mut self.outgoing);
                if outcome == TimerOutcome::Expired {
                    self.events.push_back(Event::SessionExpired {
                        peer: peer.session.peer(),
                    });
                }
                queue_to(&mut self.transmits, &mut self.outgoing, peer.endpoint);
            }
            self.next_timer_check = (!self.peers.is_empty()).then_some(now + TIMER_TICK);
        }
    }

    /// Returns the next datagram to send, after running the TCP/IP stack if it has
    /// work to do.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.transmits.is_empty() && !self.stopped && self.stack.needs_poll(now) {
            self.stack.poll(now);
            self.accept_connections();
            self.encapsulate_outbound();
        }
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Returns the next deadline at which `handle_timeout` wants to run, and its reason.
    pub fn poll_timeout(&mut self, now: Instant) -> Option<(Instant, TimeoutReason)> {
        if self.stopped {
            return None;
        }
        let timers = self
            .next_timer_check
            .map(|at| (at, TimeoutReason::WireguardTimers));
        let rate = Some((self.next_rate_reset, TimeoutReason::RateLimiterReset));
        let tcp = self
            .stack
            .poll_at(now)
            .map(|at| (at, TimeoutReason::TcpTimers));
        earliest(earliest(timers, rate), tcp)
    }

    /// Stops the hub: every peer and connection is dropped, and the sessions' copies
    /// of the private key are zeroized.
    pub fn stop(&mut self) {
        self.stopped = true;
        self.private_key = None;
        self.peers.clear();
        self.index_by_key.clear();
        self.index_by_address.clear();
        self.stack.drop_all();
        self.listeners.clear();
        self.transmits.clear();
        self.outgoing.clear();
        self.next_timer_check = None;
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    pub(crate) fn stack(&mut self) -> &mut Stack {
        &mut self.stack
    }

    /// Finds the peer of a handshake initiation, after the rate limiter checked its
    /// MAC and load. Under load it queues a cookie reply instead and returns `None`.
    fn identify_initiator(&mut self, source: SocketAddr, datagram: &[u8]) -> Option<u32> {
        let verified =
            self.rate_limiter
                .verify_packet(Some(source.ip()), datagram, &mut self.scratch);

        let initiation = match verified {
            Ok(Packet::HandshakeInit(initiation)) => initiation,
            Err(TunnResult::WriteToNetwork(cookie_reply)) => {
                self.counters.cookies_sent += 1;
                self.transmits.push_back(Transmit {
                    destination: source,
                    payload: cookie_reply.to_vec(),
                });
                return None;
            }
            Ok(_) | Err(_) => {
                self.drop_junk(source, "handshake initiation with an invalid MAC");
                return None;
            }
        };

        let private_key = self.private_key.as_ref()?;
        let Ok(half) = parse_handshake_anon(
            private_key.as_x25519(),
            &self.public_key.as_x25519(),
            &initiation,
        ) else {
            self.drop_junk(source, "handshake initiation that failed to decrypt");
            return None;
        };

        let initiator = PublicKey(half.peer_static_public);
        let Some(index) = self.index_by_key.get(&initiator) else {
            self.counters.unknown_key_handshakes += 1;
            tracing::debug!(%source, peer = %initiator.fingerprint(), "rejected handshake from a key that is not a peer");
            return None;
        };
        Some(*index)
    }

    fn accept_connections(&mut self) {
        for (port, handles) in &mut self.listeners {
            for handle in handles.iter_mut() {
                if self.stack.is_listening(*handle) {
                    continue;
                }
                let accepted_socket = std::mem::replace(handle, self.stack.listen(*port));

                let peer = self
                    .stack
                    .remote_endpoint(accepted_socket)
                    .and_then(|remote| Some((remote, self.index_by_address.get(remote.ip())?)))
                    .and_then(|(remote, index)| Some((remote, self.peers.get(index)?)));
                let Some((remote, peer)) = peer else {
                    // The peer went away between its SYN and this poll.
                    self.stack.remove_listener(accepted_socket);
                    continue;
                };

                let connection = self.stack.adopt(accepted_socket);
                self.events.push_back(Event::ConnectionAccepted {
                    connection,
                    peer: peer.session.peer(),
                    peer_address: remote,
                    port: *port,
                });
            }
        }
    }

    fn encapsulate_outbound(&mut self) {
        while let Some(packet) = self.stack.pop_outbound() {
            let Some((_, destination)) = ipv4_addresses(&packet) else {
                continue;
            };
            let Some(peer) = self
                .index_by_address
                .get(&destination)
                .and_then(|index| self.peers.get_mut(index))
            else {
                tracing::trace!(%destination, "dropped outbound packet to an address without a peer");
                continue;
            };
            peer.session
                .encapsulate(&packet, &mut self.scratch, &mut self.outgoing);
            queue_to(&mut self.transmits, &mut self.outgoing, peer.endpoint);
        }
    }

    fn queue_outgoing(&mut self, destination: SocketAddr) {
        queue_to(&mut self.transmits, &mut self.outgoing, Some(destination));
    }

    fn allocate_index(&mut self) -> u32 {
        loop {
            self.next_index = (self.next_index + 1) & INDEX_MASK;
            if !self.peers.contains_key(&self.next_index) {
                return self.next_index;
            }
        }
    }

    fn drop_junk(&mut self, source: SocketAddr, reason: &'static str) {
        self.counters.junk_datagrams += 1;
        tracing::trace!(%source, reason, "dropped junk datagram");
    }
}

/// Moves `outgoing` into `transmits`, addressed to `destination`; without a known
/// endpoint (a peer that never sent an authenticated datagram) they are dropped.
fn queue_to(
    transmits: &mut VecDeque<Transmit>,
    outgoing: &mut Vec<Vec<u8>>,
    destination: Option<SocketAddr>,
) {
    let Some(destination) = destination else {
        outgoing.clear();
        return;
    };
    for payload in outgoing.drain(..) {
        transmits.push_back(Transmit {
            destination,
            payload,
        });
    }
}
