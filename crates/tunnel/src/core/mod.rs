//! The sans-IO core: WireGuard sessions and the TCP/IP stack, driven by datagrams in,
//! datagrams out and the current time passed in. Nothing here opens a socket, spawns a
//! task or reads a clock (boringtun reads its own clock inside `Tunn`).
//!
//! Call order, the same for [`ClientCore`] and [`HubCore`]:
//!
//! 1. feed every received UDP datagram to `handle_datagram(.., now)`;
//! 2. when the deadline from `poll_timeout` has passed, call `handle_timeout(now)`;
//! 3. after either, and after any application read, write or close, send everything
//!    `poll_transmit(now)` returns until it returns `None`;
//! 4. drain `poll_event()`, then sleep until the next `poll_timeout` deadline or the
//!    next datagram.

mod client;
mod hub;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Instant;

pub use client::{ClientConfig, ClientCore, ConnectError, TunnelState};
pub use hub::{AddPeerError, HubCore, HubCoreConfig, HubCounters, PeerSnapshot};

use crate::keys::PublicKey;

/// A WireGuard datagram to send over UDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub destination: SocketAddr,
    pub payload: Vec<u8>,
}

/// Something the driver or the application may want to act on or log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A handshake with `peer` completed; `first` is false for rekeys.
    HandshakeCompleted { peer: PublicKey, first: bool },
    /// boringtun gave up on `peer`'s session: no handshake succeeded within
    /// REKEY_ATTEMPT_TIME, or no session existed for three times REJECT_AFTER_TIME.
    SessionExpired { peer: PublicKey },
    /// A peer opened a TCP connection to a forwarded port of the hub.
    ConnectionAccepted {
        connection: crate::stack::ConnectionId,
        peer: PublicKey,
        peer_address: SocketAddrV4,
        port: u16,
    },
}

/// Reason of a deadline from `poll_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutReason {
    /// boringtun's timers (handshake retry, rekey, keepalive, expiry) are due for
    /// their periodic check.
    WireguardTimers,
    /// A TCP timer inside the tunnel (retransmission, delayed ACK) is due.
    TcpTimers,
    /// The shared handshake rate limiter's per-second count is due for a reset.
    RateLimiterReset,
}

/// Returns the earlier of two optional deadlines.
fn earliest(
    first: Option<(Instant, TimeoutReason)>,
    second: Option<(Instant, TimeoutReason)>,
) -> Option<(Instant, TimeoutReason)> {
    match (first, second) {
        (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Checks whether `address` is inside one of `networks`.
fn is_allowed(networks: &[ipnet::Ipv4Net], address: Ipv4Addr) -> bool {
    networks.iter().any(|network| network.contains(&address))
}

#[cfg(test)]
mod tests;
