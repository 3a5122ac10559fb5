//! The TCP/IP stack inside the tunnel: a smoltcp interface on a virtual device whose
//! packets come from and go to WireGuard sessions, and the TCP connections on it.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::task::Waker;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Checksum, Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint};

use crate::protocol::TUNNEL_MTU;

/// Sizes of each TCP connection's buffers inside the tunnel, in bytes.
///
/// The receive buffer is the TCP window, so goodput is at most `receive / RTT`:
/// 1 MiB allows about 400 Mbit/s at 20 ms. smoltcp scales the window (RFC 7323) to
/// fit buffers above 64 KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpBuffers {
    pub receive: usize,
    pub send: usize,
}

impl Default for TcpBuffers {
    /// 1 MiB each way: the throughput bench (`cargo bench -p camwire-tunnel --bench
    /// throughput`) reached its goals with it on a 2-core machine, with a memory cost
    /// of 2 MiB per open connection.
    fn default() -> Self {
        Self {
            receive: 1 << 20,
            send: 1 << 20,
        }
    }
}

/// Identifier of a TCP connection in the tunnel, never reused within one stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(u64);

/// Progress of an outgoing connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectProgress {
    Connecting,
    Established,
    /// Reset by the peer, timed out, or removed.
    Failed,
}

/// Result of reading from a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvOutcome {
    Data(usize),
    /// Nothing to read yet.
    Pending,
    /// The peer closed its side and every byte was read.
    Finished,
}

/// Error of reading or writing a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    #[error("connection reset")]
    Reset,
    #[error("connection closed for writing")]
    WriteClosed,
}

/// Inbound packets after which the stack runs even in the middle of a receive batch.
const INBOUND_PACKETS_PER_POLL: usize = 4;

/// A detached connection (its stream dropped) that has not finished closing after
/// this long is aborted, as Linux's `tcp_fin_timeout` does.
const DETACHED_LINGER: Duration = Duration::from_secs(60);

/// An established connection whose peer stops acknowledging is aborted after this.
const RETRANSMIT_TIMEOUT: Duration = Duration::from_secs(60);

struct Connection {
    handle: SocketHandle,
    detached_at: Option<Instant>,
}

pub(crate) struct Stack {
    iface: Interface,
    device: VirtualDevice,
    sockets: SocketSet<'static>,
    connections: HashMap<ConnectionId, Connection>,
    next_connection: u64,
    buffers: TcpBuffers,
    epoch: Instant,
    needs_poll: bool,
}

impl Stack {
    /// Creates a stack with one address; `gateway` adds a default route for
    /// destinations outside `address`'s prefix.
    pub fn new(
        address: Ipv4Addr,
        prefix_len: u8,
        gateway: Option<Ipv4Addr>,
        buffers: TcpBuffers,
        now: Instant,
    ) -> Self {
        let mut device = VirtualDevice::default();
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = rand::random();

        let mut iface = Interface::new(config, &mut device, SmolInstant::ZERO);
        iface.update_ip_addrs(|addresses| {
            addresses
                .push(IpCidr::new(IpAddress::Ipv4(address), prefix_len))
                .expect("a new interface has room for one address");
        });
        if let Some(gateway) = gateway {
            iface
                .routes_mut()
                .add_default_ipv4_route(gateway)
                .expect("a new interface has room for one route");
        }

        Self {
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            connections: HashMap::new(),
            next_connection: 0,
            buffers,
            epoch: now,
            needs_poll: true,
        }
    }

    /// Queues an inner IP packet that arrived through the tunnel.
    pub fn push_inbound(&mut self, packet: Vec<u8>) {
        self.device.inbound.push_back(packet);
        self.needs_poll = true;
    }

    /// Checks whether enough inbound packets are queued that the stack should run now
    /// instead of after the whole receive batch.
    ///
    /// smoltcp 0.14 sends at most one ACK per poll, and its congestion controllers grow
    /// the window per ACK, not per acknowledged byte. Polling after every
    /// [`INBOUND_PACKETS_PER_POLL`] packets gives about one ACK per four segments (Linux
    /// sends one per one or two). With one poll per 64-datagram batch, the sender's
    /// window grew so slowly that goodput at 20 ms RTT stayed below 100 Mbit/s.
    pub fn inbound_backlog_full(&self) -> bool {
        self.device.inbound.len() >= INBOUND_PACKETS_PER_POLL
    }

    /// Takes the next inner IP packet that the stack wants to send.
    pub fn pop_outbound(&mut self) -> Option<Vec<u8>> {
        self.device.outbound.pop_front()
    }

    pub fn needs_poll(&mut self, now: Instant) -> bool {
        self.needs_poll || self.poll_at(now).is_some_and(|at| at <= now)
    }

    /// Processes queued inbound packets and socket timers; outbound packets queue up
    /// for [`Stack::pop_outbound`].
    pub fn poll(&mut self, now: Instant) {
        let timestamp = self.timestamp(now);
        self.iface
            .poll(timestamp, &mut self.device, &mut self.sockets);
        self.needs_poll = false;
        self.reap_detached(now);
    }

    /// Next time at which a TCP timer (retransmission, delayed ACK, keepalive) is due.
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        let at = self.iface.poll_at(self.timestamp(now), &self.sockets)?;
        let micros = u64::try_from(at.total_micros()).unwrap_or(0);
        Some(self.epoch + Duration::from_micros(micros))
    }

    /// Opens a connection from a random local port to `remote`.
    pub fn connect(&mut self, remote: SocketAddrV4) -> Result<ConnectionId, tcp::ConnectError> {
        let mut socket = self.new_socket();
        let local_port = rand::Rng::gen_range(&mut rand::thread_rng(), 49_152..=65_535u16);
        let remote = IpEndpoint::new(IpAddress::Ipv4(*remote.ip()), remote.port());

        socket.connect(self.iface.context(), remote, local_port)?;

        let handle = self.sockets.add(socket);
        self.needs_poll = true;
        Ok(self.adopt(handle))
    }

    /// Adds a socket listening on `port` of every local address.
    pub fn listen(&mut self, port: u16) -> SocketHandle {
        let mut socket = self.new_socket();
        socket
            .listen(port)
            .expect("a new socket listens on a non-zero port");
        self.sockets.add(socket)
    }

    /// Checks whether the socket still waits for a SYN.
    pub fn is_listening(&self, handle: SocketHandle) -> bool {
        self.sockets.get::<tcp::Socket>(handle).is_listening()
    }

    /// Remote end of a socket that left the listening state.
    pub fn remote_endpoint(&self, handle: SocketHandle) -> Option<SocketAddrV4> {
        let endpoint = self.sockets.get::<tcp::Socket>(handle).remote_endpoint()?;
        let IpAddress::Ipv4(address) = endpoint.addr;
        Some(SocketAddrV4::new(address, endpoint.port))
    }

    /// Turns a socket (a listener that took a SYN, or a new outgoing one) into a
    /// connection that streams can address.
    pub fn adopt(&mut self, handle: SocketHandle) -> ConnectionId {
        let id = ConnectionId(self.next_connection);
        self.next_connection += 1;
        self.connections.insert(
            id,
            Connection {
                handle,
                detached_at: None,
            },
        );
        id
    }

    pub fn connect_progress(&self, id: ConnectionId) -> ConnectProgress {
        let Some(socket) = self.socket(id) else {
            return ConnectProgress::Failed;
        };
        match socket.state() {
            tcp::State::SynSent | tcp::State::SynReceived => ConnectProgress::Connecting,
            tcp::State::Closed | tcp::State::Listen => ConnectProgress::Failed,
            _ => ConnectProgress::Established,
        }
    }

    /// Copies up to `data.len()` bytes into the connection's send buffer.
    /// `Ok(0)` means the buffer is full.
    pub fn send(&mut self, id: ConnectionId, data: &[u8]) -> Result<usize, ConnectionError> {
        let socket = self.socket_mut(id).ok_or(ConnectionError::Reset)?;
        // An accepted connection waits in SYN-RECEIVED for the peer's final ACK, which
        // takes one round trip; writes wait for it like reads do.
        if matches!(
            socket.state(),
            tcp::State::SynSent | tcp::State::SynReceived
        ) {
            return Ok(0);
        }
        if !socket.may_send() {
            return Err(match socket.state() {
                tcp::State::Closed => ConnectionError::Reset,
                _ => ConnectionError::WriteClosed,
            });
        }

        let sent = socket
            .send_slice(data)
            .map_err(|_| ConnectionError::Reset)?;
        if sent > 0 {
            self.needs_poll = true;
        }
        Ok(sent)
    }

    pub fn recv(
        &mut self,
        id: ConnectionId,
        buffer: &mut [u8],
    ) -> Result<RecvOutcome, ConnectionError> {
        let socket = self.socket_mut(id).ok_or(ConnectionError::Reset)?;

        // smoltcp refuses reads until the handshake is done, with the same error as
        // for a reset connection.
        if matches!(
            socket.state(),
            tcp::State::SynSent | tcp::State::SynReceived
        ) {
            return Ok(RecvOutcome::Pending);
        }

        match socket.recv_slice(buffer) {
            Ok(0) => Ok(RecvOutcome::Pending),
            Ok(read) => {
                self.needs_poll = true;
                Ok(RecvOutcome::Data(read))
            }
            Err(tcp::RecvError::Finished) => Ok(RecvOutcome::Finished),
            Err(tcp::RecvError::InvalidState) => Err(ConnectionError::Reset),
        }
    }

    pub fn register_recv_waker(&mut self, id: ConnectionId, waker: &Waker) {
        if let Some(socket) = self.socket_mut(id) {
            socket.register_recv_waker(waker);
        }
    }

    pub fn register_send_waker(&mut self, id: ConnectionId, waker: &Waker) {
        if let Some(socket) = self.socket_mut(id) {
            socket.register_send_waker(waker);
        }
    }

    /// Sends FIN after the queued data; reading goes on until the peer's FIN.
    pub fn shutdown_write(&mut self, id: ConnectionId) {
        if let Some(socket) = self.socket_mut(id) {
            socket.close();
            self.needs_poll = true;
        }
    }

    /// Closes a connection whose stream is gone: FIN now, removal once TCP is done.
    pub fn release(&mut self, id: ConnectionId, now: Instant) {
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        connection.detached_at = Some(now);
        let socket = self.sockets.get_mut::<tcp::Socket>(connection.handle);
        socket.close();
        self.needs_poll = true;
    }

    /// Resets a connection (RST to the peer on the next poll) and removes it once closed.
    pub fn abort(&mut self, id: ConnectionId) {
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        self.sockets
            .get_mut::<tcp::Socket>(connection.handle)
            .abort();
        connection.detached_at = Some(self.epoch);
        self.needs_poll = true;
    }

    /// Drops every connection with `remote` at the other end at once, without
    /// sending anything; their streams see a reset.
    pub fn drop_connections_of(&mut self, remote: Ipv4Addr) -> usize {
        let doomed: Vec<ConnectionId> = self
            .connections
            .iter()
            .filter(|(_, connection)| {
                let socket = self.sockets.get::<tcp::Socket>(connection.handle);
                socket
                    .remote_endpoint()
                    .is_some_and(|endpoint| endpoint.addr == IpAddress::Ipv4(remote))
            })
            .map(|(id, _)| *id)
            .collect();

        for id in &doomed {
            self.remove(*id);
        }
        doomed.len()
    }

    /// Drops every socket, listeners included; streams see a reset.
    pub fn drop_all(&mut self) {
        let ids: Vec<ConnectionId> = self.connections.keys().copied().collect();
        for id in ids {
            self.remove(id);
        }
        let handles: Vec<SocketHandle> = self.sockets.iter().map(|(handle, _)| handle).collect();
        for handle in handles {
            self.sockets.remove(handle);
        }
    }

    /// Removes a listener socket that never took a connection.
    pub fn remove_listener(&mut self, handle: SocketHandle) {
        self.sockets.remove(handle);
    }

    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    fn remove(&mut self, id: ConnectionId) {
        let Some(connection) = self.connections.remove(&id) else {
            return;
        };
        // Aborting first wakes the tasks waiting on the socket, so that they look again
        // and find the connection gone.
        self.sockets
            .get_mut::<tcp::Socket>(connection.handle)
            .abort();
        self.sockets.remove(connection.handle);
    }

    fn reap_detached(&mut self, now: Instant) {
        let finished: Vec<ConnectionId> = self
            .connections
            .iter()
            .filter(|(_, connection)| {
                let Some(detached_at) = connection.detached_at else {
                    return false;
                };
                let state = self.sockets.get::<tcp::Socket>(connection.handle).state();
                matches!(state, tcp::State::Closed | tcp::State::TimeWait)
                    || now.saturating_duration_since(detached_at) >= DETACHED_LINGER
            })
            .map(|(id, _)| *id)
            .collect();

        for id in finished {
            self.remove(id);
        }
    }

    fn new_socket(&self) -> tcp::Socket<'static> {
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; self.buffers.receive]),
            tcp::SocketBuffer::new(vec![0; self.buffers.send]),
        );
        socket.set_congestion_control(tcp::CongestionControl::Cubic);
        // Streams forward whatever their writer hands them; Nagle's algorithm would
        // hold small writes back until the previous segment is acknowledged.
        socket.set_nagle_enabled(false);
        socket.set_timeout(Some(smoltcp::time::Duration::from_secs(
            RETRANSMIT_TIMEOUT.as_secs(),
        )));
        socket
    }

    fn socket(&self, id: ConnectionId) -> Option<&tcp::Socket<'static>> {
        let connection = self.connections.get(&id)?;
        Some(self.sockets.get::<tcp::Socket>(connection.handle))
    }

    fn socket_mut(&mut self, id: ConnectionId) -> Option<&mut tcp::Socket<'static>> {
        let connection = self.connections.get(&id)?;
        Some(self.sockets.get_mut::<tcp::Socket>(connection.handle))
    }

    fn timestamp(&self, now: Instant) -> SmolInstant {
        let elapsed = now.saturating_duration_since(self.epoch);
        SmolInstant::from_micros(i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX))
    }
}

/// A device whose "wire" is two packet queues that the tunnel fills and drains.
#[derive(Default)]
struct VirtualDevice {
    inbound: VecDeque<Vec<u8>>,
    outbound: VecDeque<Vec<u8>>,
}

struct InboundToken(Vec<u8>);

struct OutboundToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl RxToken for InboundToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for OutboundToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = vec![0; len];
        let result = f(&mut packet);
        self.0.push_back(packet);
        result
    }
}

impl Device for VirtualDevice {
    type RxToken<'a> = InboundToken;
    type TxToken<'a> = OutboundToken<'a>;

    fn receive(
        &mut self,
        _timestamp: SmolInstant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let packet = self.inbound.pop_front()?;
        Some((InboundToken(packet), OutboundToken(&mut self.outbound)))
    }

    fn transmit(&mut self, _timestamp: SmolInstant) -> Option<Self::TxToken<'_>> {
        Some(OutboundToken(&mut self.outbound))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ip;
        capabilities.max_transmission_unit = TUNNEL_MTU;
        // WireGuard's AEAD already protects every packet, so received checksums are not
        // verified. Sent packets get checksums because kernel TCP stacks check them.
        capabilities.checksum.ipv4 = Checksum::Tx;
        capabilities.checksum.tcp = Checksum::Tx;
        capabilities
    }
}
