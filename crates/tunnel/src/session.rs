//! One WireGuard peer's cryptographic session: a boringtun `Tunn` with counters and
//! the handshake bookkeeping that Camwire reports.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};

use crate::keys::{PrivateKey, PublicKey};
use crate::protocol::{MessageKind, is_cookie_reply, is_handshake_response};

/// Bytes and packets of one peer's WireGuard datagrams, counted on the UDP side
/// (headers and authentication tags of WireGuard included, IP and UDP headers not).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TrafficCounters {
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub rx_packets: u64,
}

/// Result of decrypting one datagram.
#[derive(Debug, Default)]
pub(crate) struct Decapsulated {
    /// The inner IPv4 packet of a transport data message, not yet checked against
    /// the allowed IPs.
    pub inner: Option<Vec<u8>>,
    pub handshake_completed: bool,
    /// The rate limiter replied to a handshake initiation with a cookie.
    pub cookie_sent: bool,
}

/// Outcome of one run of boringtun's timers.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TimerOutcome {
    Idle,
    /// boringtun gave up on the session (handshake retries exhausted, or no session
    /// for three times REJECT_AFTER_TIME); reported once per expiry.
    Expired,
}

pub(crate) struct Session {
    tunn: Tunn,
    peer: PublicKey,
    last_handshake: Option<Instant>,
    counters: TrafficCounters,
    expired: bool,
}

impl Session {
    /// Creates the session state for `peer`; `index` must be unique among the owner's
    /// sessions and below 2^24 (boringtun shifts it left by 8 bits).
    pub fn new(
        local: &PrivateKey,
        peer: PublicKey,
        persistent_keepalive: Option<u16>,
        index: u32,
        rate_limiter: Option<Arc<RateLimiter>>,
    ) -> Self {
        let tunn = Tunn::new(
            local.as_x25519().clone(),
            peer.as_x25519(),
            None,
            persistent_keepalive,
            index,
            rate_limiter,
        );

        Self {
            tunn,
            peer,
            last_handshake: None,
            counters: TrafficCounters::default(),
            expired: false,
        }
    }

    pub fn peer(&self) -> PublicKey {
        self.peer
    }

    pub fn counters(&self) -> TrafficCounters {
        self.counters
    }

    /// Time of the last completed handshake, in the caller's clock.
    pub fn last_handshake(&self) -> Option<Instant> {
        self.last_handshake
    }

    /// Checks whether boringtun has a current session to encrypt with.
    pub fn has_session(&self) -> bool {
        self.tunn.time_since_last_handshake().is_some()
    }

    pub fn is_expired(&self) -> bool {
        self.expired
    }

    /// Starts a handshake unless one is in progress; the initiation goes to `out`.
    pub fn initiate_handshake(&mut self, scratch: &mut [u8], out: &mut Vec<Vec<u8>>) {
        let result = self.tunn.format_handshake_initiation(scratch, false);
        self.collect_transmit(result, out);
    }

    /// Encrypts one inner IP packet. Without a session boringtun queues the packet
    /// and returns a handshake initiation instead.
    pub fn encapsulate(&mut self, packet: &[u8], scratch: &mut [u8], out: &mut Vec<Vec<u8>>) {
        self.expired = false;
        let result = self.tunn.encapsulate(packet, scratch);
        self.collect_transmit(result, out);
    }

    /// Authenticates and decrypts one datagram; replies (handshake responses,
    /// keepalives, cookie replies, queued packets) go to `out`.
    pub fn decapsulate(
        &mut self,
        source: Option<IpAddr>,
        datagram: &[u8],
        scratch: &mut [u8],
        out: &mut Vec<Vec<u8>>,
        now: Instant,
    ) -> Result<Decapsulated, WireGuardError> {
        let kind = MessageKind::parse(datagram);
        let mut outcome = Decapsulated::default();

        match self.tunn.decapsulate(source, datagram, scratch) {
            TunnResult::Done => {}
            TunnResult::Err(error) => return Err(error),
            TunnResult::WriteToNetwork(reply) => {
                outcome.cookie_sent = is_cookie_reply(reply);
                outcome.handshake_completed = match kind {
                    Some(MessageKind::HandshakeInitiation) => is_handshake_response(reply),
                    Some(MessageKind::HandshakeResponse { .. }) => true,
                    _ => false,
                };
                self.counters.tx_bytes += reply.len() as u64;
                self.counters.tx_packets += 1;
                out.push(reply.to_vec());
                self.flush_queue(scratch, out);
            }
            TunnResult::WriteToTunnelV4(packet, _) => outcome.inner = Some(packet.to_vec()),
            // The tunnel carries IPv4 only; an IPv6 packet is as wrong as a bad one.
            TunnResult::WriteToTunnelV6(..) => return Err(WireGuardError::InvalidPacket),
        }

        if !outcome.cookie_sent {
            self.counters.rx_bytes += datagram.len() as u64;
            self.counters.rx_packets += 1;
        }
        if outcome.handshake_completed {
            self.last_handshake = Some(now);
            self.expired = false;
        }
        Ok(outcome)
    }

    /// Runs boringtun's timers: handshake retries, rekeys and keepalives go to `out`.
    pub fn update_timers(&mut self, scratch: &mut [u8], out: &mut Vec<Vec<u8>>) -> TimerOutcome {
        match self.tunn.update_timers(scratch) {
            TunnResult::Err(WireGuardError::ConnectionExpired) if !self.expired => {
                self.expired = true;
                TimerOutcome::Expired
            }
            TunnResult::Err(WireGuardError::ConnectionExpired) => TimerOutcome::Idle,
            TunnResult::Err(error) => {
                tracing::debug!(peer = %self.peer.fingerprint(), ?error, "WireGuard timer update failed");
                TimerOutcome::Idle
            }
            result => {
                self.collect_transmit(result, out);
                TimerOutcome::Idle
            }
        }
    }

    fn collect_transmit(&mut self, result: TunnResult<'_>, out: &mut Vec<Vec<u8>>) {
        match result {
            TunnResult::WriteToNetwork(datagram) => {
                self.counters.tx_bytes += datagram.len() as u64;
                self.counters.tx_packets += 1;
                out.push(datagram.to_vec());
            }
            TunnResult::Done => {}
            TunnResult::Err(error) => {
                tracing::debug!(peer = %self.peer.fingerprint(), ?error, "WireGuard encryption failed");
            }
            TunnResult::WriteToTunnelV4(..) | TunnResult::WriteToTunnelV6(..) => {}
        }
    }

    /// Sends the packets boringtun queued while it had no session.
    fn flush_queue(&mut self, scratch: &mut [u8], out: &mut Vec<Vec<u8>>) {
        loop {
            let TunnResult::WriteToNetwork(datagram) = self.tunn.decapsulate(None, &[], scratch)
            else {
                return;
            };
            self.counters.tx_bytes += datagram.len() as u64;
            self.counters.tx_packets += 1;
            out.push(datagram.to_vec());
        }
    }
}
