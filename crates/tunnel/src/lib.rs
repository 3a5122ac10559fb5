//! Userspace WireGuard for Camwire: boringtun sessions and a smoltcp TCP/IP stack in
//! the application's own process, without a TUN device or privileges.
//!
//! - [`Tunnel`] is the client: one peer (the server), TCP connections through
//!   [`Tunnel::dial`], local port forwards and a SOCKS5 proxy.
//! - [`Hub`] is the server side: many peers on one UDP socket, peers added and
//!   removed live, TCP ports of the hub's tunnel address forwarded to local services.
//! - [`core`] contains the sans-IO state machines under both, driven by datagrams and
//!   the current time, which tests run in a simulated network.
//!
//! Only IPv4 travels inside the tunnel; the UDP endpoint may be IPv4 or IPv6.

pub mod core;
pub mod keys;
pub mod protocol;

mod driver;
mod hub;
mod session;
mod socks5;
mod stack;
mod stream;
mod tasks;
mod tunnel;
mod udp;

pub use crate::core::TunnelState;
pub use hub::{Forward, Hub, HubConfig, HubError, HubStats, PeerStatus};
pub use keys::{PrivateKey, PublicKey};
pub use session::TrafficCounters;
pub use stack::{ConnectionId, TcpBuffers};
pub use stream::TunnelStream;
pub use tasks::{ShutdownReport, live_tasks};
pub use tunnel::{Tunnel, TunnelError, TunnelOptions, TunnelStats};
pub use udp::DEFAULT_UDP_BUFFER_SIZE;
