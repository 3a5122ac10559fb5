//! The server's WireGuard hub: a tokio driver around [`HubCore`] that forwards TCP
//! connections to the hub's tunnel address on to local services.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ipnet::Ipv4Net;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::core::{AddPeerError, Event, HubCore, HubCoreConfig};
use crate::driver::{Shared, drive, to_system_time};
use crate::keys::{PrivateKey, PublicKey};
use crate::stack::{ConnectionId, TcpBuffers};
use crate::stream::StackStream;
use crate::tasks::{ShutdownReport, TaskSet};
use crate::udp::{self, DEFAULT_UDP_BUFFER_SIZE};

/// Buffer size of each direction when copying between the tunnel and a local service.
const COPY_BUFFER: usize = 64 * 1024;

/// How long a forward waits for the local service to accept a connection.
const TARGET_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`Hub::shutdown`] waits for tasks before aborting them.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// A TCP port on the hub's tunnel address whose connections go to `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub port: u16,
    pub target: SocketAddr,
}

/// Settings of a [`Hub`].
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// UDP address for WireGuard, such as `0.0.0.0:51820`.
    pub listen: SocketAddr,
    pub private_key: PrivateKey,
    /// The hub's address inside the tunnel, such as `10.13.0.1`.
    pub address: Ipv4Addr,
    /// The network of peer addresses, such as `10.13.0.0/16`.
    pub network: Ipv4Net,
    /// Forwarded TCP ports. SYNs to other ports get RST.
    pub forwards: Vec<Forward>,
    pub tcp_buffers: TcpBuffers,
    /// Requested `SO_RCVBUF` and `SO_SNDBUF` of the UDP socket, in bytes.
    pub udp_buffer_size: usize,
}

impl HubConfig {
    /// Creates a configuration with default TCP and UDP buffer sizes.
    pub fn new(
        listen: SocketAddr,
        private_key: PrivateKey,
        address: Ipv4Addr,
        network: Ipv4Net,
        forwards: Vec<Forward>,
    ) -> Self {
        Self {
            listen,
            private_key,
            address,
            network,
            forwards,
            tcp_buffers: TcpBuffers::default(),
            udp_buffer_size: DEFAULT_UDP_BUFFER_SIZE,
        }
    }
}

/// A peer as [`Hub::peers`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub public_key: PublicKey,
    pub address: Ipv4Addr,
    /// The UDP endpoint of the peer's last authenticated datagram.
    pub endpoint: Option<SocketAddr>,
    pub last_handshake: Option<SystemTime>,
    /// WireGuard datagram bytes and counts, handshakes and keepalives included.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

/// Counters of a [`Hub`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubStats {
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
    /// Valid handshake initiations from keys that are not peers.
    pub unknown_key_handshakes: u64,
    pub peers: usize,
    /// TCP connections through the hub that are open or closing.
    pub connections: usize,
    /// Tasks of this hub still running (driver and forwarded connections).
    pub tasks: usize,
}

/// Error of a hub operation.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("failed to bind the hub's UDP socket on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: io::Error,
    },
    #[error("hub address {address} is outside its network {network}")]
    AddressOutsideNetwork { address: Ipv4Addr, network: Ipv4Net },
    #[error("forwarded port 0 is invalid; use a TCP port from 1 to 65535")]
    InvalidForwardPort,
    #[error(transparent)]
    Peer(#[from] AddPeerError),
    #[error("the hub is stopped")]
    Stopped,
}

/// Stops the hub's tasks when the last [`Hub`] clone is dropped.
struct Lifetime {
    tasks: TaskSet,
    stop: watch::Sender<bool>,
    shared: Arc<Shared<HubCore>>,
}

impl Drop for Lifetime {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.shared.lock().stop();
        self.tasks.abort_all();
    }
}

/// A WireGuard endpoint for any number of peers on one UDP socket.
///
/// Every method takes `&self`; clones share the same hub, which stops when the last
/// clone is dropped or [`Hub::shutdown`] is called.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared<HubCore>>,
    lifetime: Arc<Lifetime>,
    local_addr: SocketAddr,
    public_key: PublicKey,
}

impl Hub {
    /// Binds the UDP socket and starts the hub with no peers.
    pub async fn bind(config: HubConfig) -> Result<Hub, HubError> {
        if !config.network.contains(&config.address) {
            return Err(HubError::AddressOutsideNetwork {
                address: config.address,
                network: config.network,
            });
        }
        if config.forwards.iter().any(|forward| forward.port == 0) {
            return Err(HubError::InvalidForwardPort);
        }

        let bind_error = |source| HubError::Bind {
            address: config.listen,
            source,
        };
        let socket = udp::bind(config.listen, config.udp_buffer_size).map_err(bind_error)?;
        let local_addr = socket.local_addr().map_err(bind_error)?;

        let public_key = config.private_key.public_key();
        let targets: HashMap<u16, SocketAddr> = config
            .forwards
            .iter()
            .map(|forward| (forward.port, forward.target))
            .collect();
        let core = HubCore::new(
            HubCoreConfig {
                private_key: config.private_key,
                address: config.address,
                network: config.network,
                forward_ports: targets.keys().copied().collect(),
                tcp_buffers: config.tcp_buffers,
            },
            Instant::now(),
        );
        let shared = Shared::new(core);
        let tasks = TaskSet::default();
        let (stop_sender, stop) = watch::channel(false);

        let forwarder = Forwarder {
            shared: Arc::clone(&shared),
            tasks: tasks.clone(),
            stop: stop.clone(),
            targets: Arc::new(targets),
        };
        tasks.spawn(drive(Arc::clone(&shared), socket, stop, move |event| {
            forwarder.handle_event(event);
        }));
        tracing::info!(%local_addr, address = %config.address, network = %config.network, "WireGuard hub started");

        Ok(Hub {
            lifetime: Arc::new(Lifetime {
                tasks,
                stop: stop_sender,
                shared: Arc::clone(&shared),
            }),
            shared,
            local_addr,
            public_key,
        })
    }

    /// Adds a peer that may use `address` inside the tunnel. Fails when the key or the
    /// address is already in use, or the address is outside the hub's network.
    pub fn add_peer(&self, public_key: PublicKey, address: Ipv4Addr) -> Result<(), HubError> {
        let mut core = self.shared.lock();
        if core.is_stopped() {
            return Err(HubError::Stopped);
        }
        core.add_peer(public_key, address, Instant::now())?;
        drop(core);

        // The driver recomputes its deadline: the new peer's timers need checks.
        self.shared.wake.notify_one();
        tracing::info!(peer = %public_key.fingerprint(), %address, "peer added");
        Ok(())
    }

    /// Removes a peer; its session and TCP connections end at once and its key no
    /// longer completes a handshake. Returns whether the key was a peer.
    pub fn remove_peer(&self, public_key: &PublicKey) -> bool {
        let removed = self.shared.lock().remove_peer(public_key);
        if removed {
            self.shared.wake.notify_one();
            tracing::info!(peer = %public_key.fingerprint(), "peer removed");
        }
        removed
    }

    pub fn peers(&self) -> Vec<PeerStatus> {
        let core = self.shared.lock();
        core.peers()
            .into_iter()
            .map(|peer| PeerStatus {
                public_key: peer.public_key,
                address: peer.address,
                endpoint: peer.endpoint,
                last_handshake: peer.last_handshake.map(to_system_time),
                rx_bytes: peer.counters.rx_bytes,
                tx_bytes: peer.counters.tx_bytes,
                rx_packets: peer.counters.rx_packets,
                tx_packets: peer.counters.tx_packets,
            })
            .collect()
    }

    pub fn stats(&self) -> HubStats {
        let core = self.shared.lock();
        let counters = core.counters();
        HubStats {
            junk_datagrams: counters.junk_datagrams,
            rejected_source_packets: counters.rejected_source_packets,
            handshakes: counters.handshakes,
            cookies_sent: counters.cookies_sent,
            unknown_key_handshakes: counters.unknown_key_handshakes,
            peers: core.peers().len(),
            connections: core.connection_count(),
            tasks: self.lifetime.tasks.live(),
        }
    }

    /// Returns the local address of the hub's UDP socket.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// Stops the hub: every task ends (aborted after 2 s), the UDP socket and every
    /// forwarded connection close, and the private key is zeroized.
    pub async fn shutdown(&self) -> ShutdownReport {
        let _ = self.lifetime.stop.send(true);
        self.shared.lock().stop();
        let report = self.lifetime.tasks.shutdown(SHUTDOWN_TIMEOUT).await;
        tracing::info!(
            ended = report.ended,
            aborted = report.aborted,
            "WireGuard hub stopped"
        );
        report
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Hub")
            .field("local_addr", &self.local_addr)
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

/// Starts a task for each connection that a peer opens to a forwarded port.
struct Forwarder {
    shared: Arc<Shared<HubCore>>,
    tasks: TaskSet,
    stop: watch::Receiver<bool>,
    targets: Arc<HashMap<u16, SocketAddr>>,
}

impl Forwarder {
    fn handle_event(&self, event: Event) {
        match event {
            Event::HandshakeCompleted { peer, first: true } => {
                tracing::info!(peer = %peer.fingerprint(), "handshake completed");
            }
            Event::HandshakeCompleted { peer, first: false } => {
                tracing::debug!(peer = %peer.fingerprint(), "handshake completed (rekey)");
            }
            Event::SessionExpired { peer } => {
                tracing::debug!(peer = %peer.fingerprint(), "WireGuard session expired");
            }
            Event::ConnectionAccepted {
                connection,
                peer,
                peer_address,
                port,
            } => {
                let Some(target) = self.targets.get(&port).copied() else {
                    self.shared.lock().stack().abort(connection);
                    return;
                };
                tracing::debug!(peer = %peer.fingerprint(), %peer_address, port, %target, "forwarding connection");

                let shared = Arc::clone(&self.shared);
                let mut stop = self.stop.clone();
                self.tasks.spawn(async move {
                    tokio::select! {
                        _ = stop.changed() => {}
                        () = forward(shared, connection, target) => {}
                    }
                });
            }
        }
    }
}

async fn forward(shared: Arc<Shared<HubCore>>, connection: ConnectionId, target: SocketAddr) {
    let mut tunnel = StackStream::new(Arc::clone(&shared), connection);

    let connected = tokio::time::timeout(TARGET_CONNECT_TIMEOUT, TcpStream::connect(target)).await;
    let mut local = match connected {
        Ok(Ok(local)) => local,
        Ok(Err(error)) => {
            tracing::debug!(%target, %error, "forward target refused the connection");
            shared.lock().stack().abort(connection);
            return;
        }
        Err(_) => {
            tracing::debug!(%target, "forward target did not accept within the timeout");
            shared.lock().stack().abort(connection);
            return;
        }
    };
    let _ = local.set_nodelay(true);

    let result =
        tokio::io::copy_bidirectional_with_sizes(&mut tunnel, &mut local, COPY_BUFFER, COPY_BUFFER)
            .await;
    match result {
        Ok((received, sent)) => {
            tracing::debug!(%target, received, sent, "forwarded connection closed")
        }
        Err(error) => tracing::debug!(%target, %error, "forwarded connection failed"),
    }
}
