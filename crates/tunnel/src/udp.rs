//! The UDP socket that carries WireGuard datagrams.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

/// Requested `SO_RCVBUF` and `SO_SNDBUF` size, in bytes.
///
/// With Linux's default of about 208 KiB, bursts of a smoltcp sender with TCP windows
/// of 128 KiB or more overflowed the receive buffer. smoltcp 0.14 then recovered only
/// by its 1 s minimum retransmission timeout and fell to a few Mbit/s.
/// Linux caps the request at `net.core.rmem_max` and `wmem_max`.
pub const DEFAULT_UDP_BUFFER_SIZE: usize = 8 << 20;

/// Binds a non-blocking UDP socket with large kernel buffers.
pub(crate) fn bind(address: SocketAddr, buffer_size: usize) -> io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if address.is_ipv6() {
        // Accept IPv4-mapped peers too when bound to [::].
        let _ = socket.set_only_v6(false);
    }
    set_buffer_sizes(&socket, buffer_size);
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;

    UdpSocket::from_std(socket.into())
}

fn set_buffer_sizes(socket: &Socket, size: usize) {
    if let Err(error) = socket.set_recv_buffer_size(size) {
        tracing::debug!(%error, size, "failed to set the UDP receive buffer size");
    }
    if let Err(error) = socket.set_send_buffer_size(size) {
        tracing::debug!(%error, size, "failed to set the UDP send buffer size");
    }

    let granted = socket.recv_buffer_size().unwrap_or(0);
    if granted < size {
        tracing::debug!(
            requested = size,
            granted,
            "UDP receive buffer is smaller than requested; raise net.core.rmem_max for more"
        );
    }
}
