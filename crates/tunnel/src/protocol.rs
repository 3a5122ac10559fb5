//! WireGuard protocol constants and the few header fields Camwire reads itself.

use std::net::Ipv4Addr;
use std::time::Duration;

// Timer constants from the table in section 6.1 of "WireGuard: Next Generation Kernel
// Network Tunnel" (Jason A. Donenfeld, NDSS 2017). boringtun 0.7.1 uses the same values
// inside `noise::Tunn`; Camwire's own copies drive its deadlines and its tests.

/// A session initiator starts a new handshake once its session is this old.
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);

/// A session this old is no longer used to send or receive.
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);

/// A handshake initiation without a response is retried after this time.
pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);

/// A peer that received data but sent nothing for this long sends an empty keepalive.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A peer gives up retrying a handshake after this long.
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);

/// Interval between calls of boringtun's `Tunn::update_timers`.
///
/// boringtun evaluates all WireGuard timers only inside `update_timers` and reads its
/// own clock there, so it needs a call at least this often while a session exists.
/// 250 ms is what boringtun's own device loop uses; it keeps every timer within a
/// quarter second of its due time.
pub const TIMER_TICK: Duration = Duration::from_millis(250);

/// MTU of the tunnel's inner IP packets, as in `wg-quick`'s default.
pub const TUNNEL_MTU: usize = 1420;

/// Length of the scratch buffer for boringtun: `decapsulate` panics when its output
/// buffer is shorter than the datagram, so it gets room for the largest UDP payload.
pub const SCRATCH_LEN: usize = 65_536;

const HANDSHAKE_INITIATION: u32 = 1;
const HANDSHAKE_RESPONSE: u32 = 2;
const COOKIE_REPLY: u32 = 3;
const TRANSPORT_DATA: u32 = 4;

const HANDSHAKE_INITIATION_LEN: usize = 148;
const HANDSHAKE_RESPONSE_LEN: usize = 92;
const COOKIE_REPLY_LEN: usize = 64;
const TRANSPORT_DATA_MIN_LEN: usize = 32;

/// Kind of a WireGuard message, read from its header only (nothing is authenticated yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    HandshakeInitiation,
    /// A message addressed to one of our sessions by its receiver index.
    HandshakeResponse {
        receiver_index: u32,
    },
    CookieReply {
        receiver_index: u32,
    },
    TransportData {
        receiver_index: u32,
    },
}

impl MessageKind {
    /// Parses the message type and receiver index. Returns `None` for a wrong type or a
    /// length that the type does not allow, the same checks as boringtun 0.7.1 makes.
    pub fn parse(datagram: &[u8]) -> Option<Self> {
        let message_type = u32::from_le_bytes(datagram.get(0..4)?.try_into().ok()?);
        let receiver_index = || -> Option<u32> {
            let range = match message_type {
                HANDSHAKE_RESPONSE => 8..12,
                _ => 4..8,
            };
            Some(u32::from_le_bytes(datagram.get(range)?.try_into().ok()?))
        };

        match (message_type, datagram.len()) {
            (HANDSHAKE_INITIATION, HANDSHAKE_INITIATION_LEN) => Some(Self::HandshakeInitiation),
            (HANDSHAKE_RESPONSE, HANDSHAKE_RESPONSE_LEN) => Some(Self::HandshakeResponse {
                receiver_index: receiver_index()?,
            }),
            (COOKIE_REPLY, COOKIE_REPLY_LEN) => Some(Self::CookieReply {
                receiver_index: receiver_index()?,
            }),
            (TRANSPORT_DATA, len) if len >= TRANSPORT_DATA_MIN_LEN => Some(Self::TransportData {
                receiver_index: receiver_index()?,
            }),
            _ => None,
        }
    }

    pub fn receiver_index(self) -> Option<u32> {
        match self {
            Self::HandshakeInitiation => None,
            Self::HandshakeResponse { receiver_index }
            | Self::CookieReply { receiver_index }
            | Self::TransportData { receiver_index } => Some(receiver_index),
        }
    }
}

/// Returns whether `datagram` is a handshake response, the message that completes a
/// handshake on the responder's side.
pub fn is_handshake_response(datagram: &[u8]) -> bool {
    matches!(
        MessageKind::parse(datagram),
        Some(MessageKind::HandshakeResponse { .. })
    )
}

/// Returns whether `datagram` is a cookie reply (sent to a peer under load).
pub fn is_cookie_reply(datagram: &[u8]) -> bool {
    matches!(
        MessageKind::parse(datagram),
        Some(MessageKind::CookieReply { .. })
    )
}

/// Source and destination of an IPv4 packet, or `None` when it is not one.
pub fn ipv4_addresses(packet: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let version = packet.first()? >> 4;
    if version != 4 || packet.len() < 20 {
        return None;
    }

    let source: [u8; 4] = packet[12..16].try_into().ok()?;
    let destination: [u8; 4] = packet[16..20].try_into().ok()?;
    Some((Ipv4Addr::from(source), Ipv4Addr::from(destination)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_kind_rejects_truncated_messages() {
        let mut initiation = vec![0u8; HANDSHAKE_INITIATION_LEN];
        initiation[0] = 1;

        assert_eq!(
            MessageKind::parse(&initiation),
            Some(MessageKind::HandshakeInitiation)
        );
        assert_eq!(MessageKind::parse(&initiation[..100]), None);
        assert_eq!(MessageKind::parse(&initiation[..3]), None);
        assert_eq!(MessageKind::parse(&[]), None);
    }

    #[test]
    fn message_kind_reads_receiver_index() {
        let mut response = vec![0u8; HANDSHAKE_RESPONSE_LEN];
        response[0] = 2;
        response[8..12].copy_from_slice(&0x0102_0304u32.to_le_bytes());
        let mut data = vec![0u8; 40];
        data[0] = 4;
        data[4..8].copy_from_slice(&7u32.to_le_bytes());

        assert_eq!(
            MessageKind::parse(&response),
            Some(MessageKind::HandshakeResponse {
                receiver_index: 0x0102_0304
            })
        );
        assert_eq!(
            MessageKind::parse(&data),
            Some(MessageKind::TransportData { receiver_index: 7 })
        );
    }

    #[test]
    fn message_kind_rejects_unknown_type() {
        let mut data = vec![0u8; 40];
        data[0] = 9;

        assert_eq!(MessageKind::parse(&data), None);
    }

    #[test]
    fn ipv4_addresses_reads_header() {
        let mut packet = vec![0u8; 20];
        packet[0] = 0x45;
        packet[12..16].copy_from_slice(&[10, 13, 0, 2]);
        packet[16..20].copy_from_slice(&[10, 13, 0, 1]);

        assert_eq!(
            ipv4_addresses(&packet),
            Some((Ipv4Addr::new(10, 13, 0, 2), Ipv4Addr::new(10, 13, 0, 1)))
        );
        assert_eq!(ipv4_addresses(&packet[..19]), None);
        packet[0] = 0x60;
        assert_eq!(ipv4_addresses(&packet), None);
    }
}
