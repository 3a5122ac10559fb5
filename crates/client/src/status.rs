//! The tunnel's state as the profile shows it, and the formatting of its values for people.
//!
//! Everything here is pure: functions that depend on the time take `now`.

use std::time::{Duration, SystemTime};

use camwire_tunnel::TunnelState;

/// State of the device's tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelPhase {
    /// The first handshake with the server has not completed yet.
    Connecting,
    Connected,
    /// The WireGuard session lapsed without a new handshake; the next packet starts one.
    Expired,
    /// No session, or the tunnel was stopped by sign-out or app exit.
    Stopped,
    /// The tunnel could not start; it is started again with backoff. `failed_starts` counts
    /// the failed attempts since the last success.
    Error {
        message: String,
        failed_starts: u32,
    },
}

/// Whether the server's HTTP API answers `GET /healthz` through the tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerProbe {
    /// No probe has finished since the tunnel started.
    Checking,
    /// The last probe got `200 {"status":"ok"}`; `round_trip` runs from the TCP handshake's
    /// start to the complete reply.
    Answering { round_trip: Duration },
    /// The last probe failed, or there is no tunnel to probe through.
    NotAnswering { reason: String },
}

/// The tunnel's part of the profile. Contains no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelStatus {
    pub phase: TunnelPhase,
    /// Wall-clock time of the last completed handshake.
    pub last_handshake: Option<SystemTime>,
    /// WireGuard datagram bytes, handshakes and keepalives included.
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub server: ServerProbe,
}

impl TunnelStatus {
    /// Returns the status of a device without a running tunnel.
    pub fn stopped() -> Self {
        Self {
            phase: TunnelPhase::Stopped,
            last_handshake: None,
            tx_bytes: 0,
            rx_bytes: 0,
            server: ServerProbe::NotAnswering {
                reason: "the tunnel is stopped".to_owned(),
            },
        }
    }
}

impl Default for TunnelStatus {
    fn default() -> Self {
        Self::stopped()
    }
}

impl From<TunnelState> for TunnelPhase {
    fn from(state: TunnelState) -> Self {
        match state {
            TunnelState::Connecting => TunnelPhase::Connecting,
            TunnelState::Connected => TunnelPhase::Connected,
            TunnelState::Expired => TunnelPhase::Expired,
            TunnelState::Stopped => TunnelPhase::Stopped,
        }
    }
}

impl TunnelPhase {
    /// Returns a short machine-readable name: `connecting`, `connected`, `expired`, `stopped`
    /// or `error`.
    pub fn kind(&self) -> &'static str {
        match self {
            TunnelPhase::Connecting => "connecting",
            TunnelPhase::Connected => "connected",
            TunnelPhase::Expired => "expired",
            TunnelPhase::Stopped => "stopped",
            TunnelPhase::Error { .. } => "error",
        }
    }

    /// Describes the state for the profile, such as `connected` or `error: <message>`.
    pub fn describe(&self) -> String {
        match self {
            TunnelPhase::Error { message, .. } => format!("error: {message}"),
            other => other.kind().to_owned(),
        }
    }
}

impl ServerProbe {
    /// Returns a short machine-readable name: `checking`, `answering` or `not_answering`.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerProbe::Checking => "checking",
            ServerProbe::Answering { .. } => "answering",
            ServerProbe::NotAnswering { .. } => "not_answering",
        }
    }

    /// Describes the result for the profile: `answering (3 ms)`, `not answering` or `checking`.
    pub fn describe(&self) -> String {
        match self {
            ServerProbe::Checking => "checking".to_owned(),
            ServerProbe::Answering { round_trip } => {
                format!("answering ({})", format_round_trip(*round_trip))
            }
            ServerProbe::NotAnswering { .. } => "not answering".to_owned(),
        }
    }
}

/// Formats a round-trip time in whole milliseconds, or `<1 ms`.
pub fn format_round_trip(round_trip: Duration) -> String {
    match round_trip.as_millis() {
        0 => "<1 ms".to_owned(),
        millis => format!("{millis} ms"),
    }
}

/// Formats a byte count with binary units: `512 B`, `1.5 KiB`, `12.0 MiB`, `3.2 GiB`.
///
/// Fractions are cut, not rounded, so a value never shows as 1024.0 of a unit.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];

    if bytes < 1024 {
        return format!("{bytes} B");
    }

    let mut divisor: u128 = 1024;
    let mut unit = UNITS[0];
    for next_unit in &UNITS[1..] {
        if u128::from(bytes) < divisor * 1024 {
            break;
        }
        divisor *= 1024;
        unit = next_unit;
    }

    let tenths = u128::from(bytes) * 10 / divisor;
    format!("{}.{} {unit}", tenths / 10, tenths % 10)
}

/// Formats how long ago `then` was, such as `12 s ago`, `3 min ago`, `2 h ago` or `5 d ago`;
/// `never` for `None`. A time after `now` (a clock step) shows as `0 s ago`.
pub fn format_age(then: Option<SystemTime>, now: SystemTime) -> String {
    let Some(then) = then else {
        return "never".to_owned();
    };

    let seconds = now
        .duration_since(then)
        .map(|age| age.as_secs())
        .unwrap_or(0);
    match seconds {
        0..60 => format!("{seconds} s ago"),
        60..3_600 => format!("{} min ago", seconds / 60),
        3_600..86_400 => format!("{} h ago", seconds / 3_600),
        _ => format!("{} d ago", seconds / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_use_binary_units() {
        let cases = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (1024 * 1024 - 1, "1023.9 KiB"),
            (1024 * 1024, "1.0 MiB"),
            (12 * 1024 * 1024 + 300 * 1024, "12.2 MiB"),
            (3 * 1024 * 1024 * 1024, "3.0 GiB"),
            (u64::MAX, "16777215.9 TiB"),
        ];

        for (bytes, expected) in cases {
            assert_eq!(format_bytes(bytes), expected, "{bytes} bytes");
        }
    }

    #[test]
    fn age_picks_largest_whole_unit() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let cases = [
            (0, "0 s ago"),
            (12, "12 s ago"),
            (59, "59 s ago"),
            (60, "1 min ago"),
            (3_599, "59 min ago"),
            (3_600, "1 h ago"),
            (86_399, "23 h ago"),
            (86_400 * 5, "5 d ago"),
        ];

        for (seconds, expected) in cases {
            let then = now - Duration::from_secs(seconds);
            assert_eq!(format_age(Some(then), now), expected, "{seconds} s");
        }
    }

    #[test]
    fn age_without_handshake_is_never() {
        assert_eq!(format_age(None, SystemTime::UNIX_EPOCH), "never");
    }

    #[test]
    fn age_in_future_is_zero() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100);

        let age = format_age(Some(now + Duration::from_secs(30)), now);

        assert_eq!(age, "0 s ago");
    }

    #[test]
    fn probe_descriptions() {
        let answering = ServerProbe::Answering {
            round_trip: Duration::from_micros(3_400),
        };
        let fast = ServerProbe::Answering {
            round_trip: Duration::from_micros(400),
        };
        let failing = ServerProbe::NotAnswering {
            reason: "the server replied with HTTP 503".to_owned(),
        };

        assert_eq!(answering.describe(), "answering (3 ms)");
        assert_eq!(fast.describe(), "answering (<1 ms)");
        assert_eq!(failing.describe(), "not answering");
        assert_eq!(ServerProbe::Checking.describe(), "checking");
        assert_eq!(failing.kind(), "not_answering");
    }

    #[test]
    fn phase_descriptions() {
        let error = TunnelPhase::Error {
            message: "failed to bind".to_owned(),
            failed_starts: 2,
        };

        assert_eq!(TunnelPhase::Connected.describe(), "connected");
        assert_eq!(error.describe(), "error: failed to bind");
        assert_eq!(error.kind(), "error");
    }
}
