//! The client side: one peer (the server), one address, a TCP/IP stack for dialing.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Instant;

use ipnet::Ipv4Net;

use super::{Event, TimeoutReason, Transmit, earliest, is_allowed};
use crate::keys::{PrivateKey, PublicKey};
use crate::protocol::{SCRATCH_LEN, TIMER_TICK};
use crate::session::{Session, TimerOutcome, TrafficCounters};
use crate::stack::{ConnectionId, Stack, TcpBuffers};

/// Everything the client core needs to know about its peer and itself.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub private_key: PrivateKey,
    pub server_public_key: PublicKey,
    /// The server's UDP endpoint, where every datagram goes.
    pub endpoint: SocketAddr,
    /// The client's own address inside the tunnel.
    pub address: Ipv4Addr,
    /// The server's address inside the tunnel, used as the default gateway.
    pub server_address: Ipv4Addr,
    /// Networks reachable through the tunnel; packets from other sources are dropped.
    pub allowed_ips: Vec<Ipv4Net>,
    /// Seconds between keepalives sent even when idle; `None` turns them off.
    pub persistent_keepalive: Option<u16>,
    pub tcp_buffers: TcpBuffers,
}

/// State of a client tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelState {
    /// No session yet, or a handshake is in progress.
    Connecting,
    /// A session exists and data flows.
    Connected,
    /// boringtun gave up; the next packet to send starts a new handshake.
    Expired,
    /// The tunnel was stopped and its key dropped.
    Stopped,
}

/// Error of opening a connection through the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error("address {0} is outside the tunnel's allowed IPs")]
    NotAllowed(SocketAddrV4),
    #[error("the tunnel is stopped")]
    Stopped,
    #[error("the tunnel's TCP stack rejected the connection: {0}")]
    Stack(#[from] smoltcp::socket::tcp::ConnectError),
}

/// The sans-IO client: one WireGuard session with the server and the TCP/IP stack
/// that connections through the tunnel run on. See the module `core` for the call order.
pub struct ClientCore {
    session: Option<Session>,
    endpoint: SocketAddr,
    allowed_ips: Vec<Ipv4Net>,
    stack: Stack,
    scratch: Vec<u8>,
    outgoing: Vec<Vec<u8>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    next_timer_check: Option<Instant>,
    rejected_source_packets: u64,
    invalid_datagrams: u64,
    stopped_counters: Option<TrafficCounters>,
}

impl ClientCore {
    /// Creates the core and queues the first handshake initiation.
    pub fn new(config: ClientConfig, now: Instant) -> Self {
        let session = Session::new(
            &config.private_key,
            config.server_public_key,
            config.persistent_keepalive.filter(|seconds| *seconds > 0),
            rand::random::<u32>() & 0x00ff_ffff,
            None,
        );
        let stack = Stack::new(
            config.address,
            32,
            Some(config.server_address),
            config.tcp_buffers,
            now,
        );

        let mut core = Self {
            session: Some(session),
            endpoint: config.endpoint,
            allowed_ips: config.allowed_ips,
            stack,
            scratch: vec![0; SCRATCH_LEN],
            outgoing: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_timer_check: Some(now + TIMER_TICK),
            rejected_source_packets: 0,
            invalid_datagrams: 0,
            stopped_counters: None,
        };
        if let Some(session) = core.session.as_mut() {
            session.initiate_handshake(&mut core.scratch, &mut core.outgoing);
        }
        core.queue_outgoing();
        core
    }

    /// Handles one datagram received from the server's endpoint.
    pub fn handle_datagram(&mut self, datagram: &[u8], now: Instant) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let first = session.last_handshake().is_none();

        let result =
            session.decapsulate(None, datagram, &mut self.scratch, &mut self.outgoing, now);
        let decapsulated = match result {
            Ok(decapsulated) => decapsulated,
            Err(error) => {
                self.invalid_datagrams += 1;
                tracing::trace!(?error, len = datagram.len(), "dropped invalid datagram");
                return;
            }
        };
        if decapsulated.handshake_completed {
            self.next_timer_check = Some(now + TIMER_TICK);
            self.events.push_back(Event::HandshakeCompleted {
                peer: session.peer(),
                first,
            });
        }
        self.queue_outgoing();

        let Some(packet) = decapsulated.inner else {
            return;
        };
        let Some((source, _)) = crate::protocol::ipv4_addresses(&packet) else {
            self.rejected_source_packets += 1;
            return;
        };
        if !is_allowed(&self.allowed_ips, source) {
            self.rejected_source_packets += 1;
            tracing::trace!(%source, "dropped packet from a source outside the allowed IPs");
            return;
        }
        self.stack.push_inbound(packet);
        if self.stack.inbound_backlog_full() {
            self.stack.poll(now);
            self.encapsulate_outbound(now);
        }
    }

    /// Runs whatever timers are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(session) = self.session.as_mut() else {
            return;
        };

        if self.next_timer_check.is_some_and(|at| at <= now) {
            let outcome = session.update_timers(&mut self.scratch, &mut self.outgoing);
            if outcome == TimerOutcome::Expired {
                self.events.push_back(Event::SessionExpired {
                    peer: session.peer(),
                });
            }
            // An expired session needs no timer checks until new traffic starts a
            // handshake again.
            self.next_timer_check = match session.is_expired() {
                true => None,
                false => Some(now + TIMER_TICK),
            };
            self.queue_outgoing();
        }
    }

    /// Returns the next datagram to send, after running the TCP/IP stack if it has
    /// work to do.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.transmits.is_empty() && self.session.is_some() && self.stack.needs_poll(now) {
            self.stack.poll(now);
            self.encapsulate_outbound(now);
        }
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Returns the next deadline at which `handle_timeout` wants to run, and its reason.
    pub fn poll_timeout(&mut self, now: Instant) -> Option<(Instant, TimeoutReason)> {
        self.session.as_ref()?;
        let timers = self
            .next_timer_check
            .map(|at| (at, TimeoutReason::WireguardTimers));
        let tcp = self
            .stack
            .poll_at(now)
            .map(|at| (at, TimeoutReason::TcpTimers));
        earliest(timers, tcp)
    }

    /// Opens a TCP connection through the tunnel. The SYN leaves with the next
    /// `poll_transmit`, and the connection is usable once the handshake completes.
    pub fn connect(&mut self, remote: SocketAddrV4) -> Result<ConnectionId, ConnectError> {
        if self.session.is_none() {
            return Err(ConnectError::Stopped);
        }
        if !is_allowed(&self.allowed_ips, *remote.ip()) {
            return Err(ConnectError::NotAllowed(remote));
        }
        Ok(self.stack.connect(remote)?)
    }

    pub fn state(&self) -> TunnelState {
        let Some(session) = self.session.as_ref() else {
            return TunnelState::Stopped;
        };
        if session.is_expired() {
            TunnelState::Expired
        } else if session.has_session() {
            TunnelState::Connected
        } else {
            TunnelState::Connecting
        }
    }

    pub fn last_handshake(&self) -> Option<Instant> {
        self.session.as_ref()?.last_handshake()
    }

    /// Datagram counters; they stay at their last values after [`Self::stop`].
    pub fn counters(&self) -> TrafficCounters {
        self.session
            .as_ref()
            .map(Session::counters)
            .unwrap_or(self.final_counters())
    }

    /// Packets dropped because their inner source was outside the allowed IPs.
    pub fn rejected_source_packets(&self) -> u64 {
        self.rejected_source_packets
    }

    /// Datagrams that failed to parse or authenticate.
    pub fn invalid_datagrams(&self) -> u64 {
        self.invalid_datagrams
    }

    pub fn allowed_ips(&self) -> &[Ipv4Net] {
        &self.allowed_ips
    }

    pub fn is_stopped(&self) -> bool {
        self.session.is_none()
    }

    /// Stops the tunnel: drops every connection (their streams see a reset) and the
    /// WireGuard session, whose copy of the private key is zeroized on drop.
    pub fn stop(&mut self) {
        if let Some(session) = self.session.take() {
            self.stopped_counters = Some(session.counters());
        }
        self.stack.drop_all();
        self.transmits.clear();
        self.outgoing.clear();
        self.next_timer_check = None;
    }

    pub(crate) fn stack(&mut self) -> &mut Stack {
        &mut self.stack
    }

    fn final_counters(&self) -> TrafficCounters {
        self.stopped_counters.unwrap_or_default()
    }

    fn encapsulate_outbound(&mut self, now: Instant) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let had_session = session.has_session();

        while let Some(packet) = self.stack.pop_outbound() {
            session.encapsulate(&packet, &mut self.scratch, &mut self.outgoing);
        }
        if !had_session && self.next_timer_check.is_none() {
            // Traffic after an expiry starts a new handshake, whose retries need the timers.
            self.next_timer_check = Some(now + TIMER_TICK);
        }
        self.queue_outgoing();
    }

    fn queue_outgoing(&mut self) {
        for payload in self.outgoing.drain(..) {
            self.transmits.push_back(Transmit {
                destination: self.endpoint,
                payload,
            });
        }
    }
}
