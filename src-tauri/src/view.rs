//! Display data that the commands send to the webview, with no token, key or password.
//!
//! Conversions that show a time take `now`, so that only the commands read the clock.

use std::time::SystemTime;

use camwire_client::{
    Notice, Phase, Profile, ServerProbe, ServerStatus, SignOutOutcome, Snapshot, TunnelPhase,
    TunnelStatus, format_age, format_bytes,
};
use serde::Serialize;

use crate::settings::Settings;

/// The app's state for the page.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppState {
    /// `starting`, `signed_out`, `signing_in`, `signed_in` or `signing_out`.
    pub phase: &'static str,
    /// The session's server, or the last one used, to prefill the sign-in form.
    pub server_url: Option<String>,
    pub profile: Option<ProfileView>,
    pub server_status: ServerStatusView,
    pub tunnel: TunnelView,
    /// Whether the user stopped the tunnel with *Disconnect*; the session and address are kept.
    pub disconnected: bool,
    pub notice: Option<NoticeView>,
}

/// The tunnel's state, counters and health probe, formatted for people.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TunnelView {
    /// `connecting`, `connected`, `expired`, `stopped` or `error`.
    pub state: &'static str,
    /// The state as the page shows it, such as `connected` or `error: <message>`.
    pub state_text: String,
    /// Age of the last handshake, such as `12 s ago`, or `never`.
    pub handshake: String,
    /// Bytes sent and received, such as `1.5 KiB`.
    pub sent: String,
    pub received: String,
    /// `checking`, `answering` or `not_answering`.
    pub server: &'static str,
    /// The probe result as the page shows it: `answering (3 ms)`, `not answering` or `checking`.
    pub server_text: String,
    /// Reason of the last failed probe, for a tooltip.
    pub server_detail: Option<String>,
}

/// The profile fields the page shows.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileView {
    pub username: String,
    pub display_name: String,
    pub email: String,
    pub role: String,
    /// The device's VPN address, such as `10.13.0.2/32`.
    pub address: String,
    /// The server's WireGuard endpoint, `host:port`.
    pub endpoint: String,
}

/// The last check of the session with the server.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerStatusView {
    /// `unknown`, `checking`, `confirmed`, `unreachable` or `failing`.
    pub kind: &'static str,
    /// A sentence for the user, present for `checking`, `unreachable` and `failing`.
    pub message: Option<String>,
}

/// End of the last session, for the sign-in view.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NoticeView {
    /// `confirmed`, `unreachable`, `token_rejected`, `server_error`, `session_expired` or
    /// `store_error`.
    pub kind: &'static str,
    pub message: String,
}

/// The settings for the settings view.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingsView {
    pub settings: Settings,
    /// The folder of the log files, absent when Camwire writes no log file.
    pub log_directory: Option<String>,
}

/// Result of the `save_settings` command.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SaveSettingsView {
    /// `saved`, or `logout_required` when the new server needs a log-out first and nothing
    /// was saved.
    pub status: &'static str,
    /// The settings in force: the saved ones, or the unchanged ones.
    pub settings: SettingsView,
    pub state: AppState,
}

/// Result of the `sign_out` command.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignOutView {
    /// `completed` or `already_signed_out`.
    pub outcome: &'static str,
    /// The report's sentence; absent when there was nothing to sign out.
    pub message: Option<String>,
    /// Whether the server confirmed the sign-out.
    pub server_confirmed: bool,
    /// Whether the saved credentials were removed from disk.
    pub store_cleared: bool,
    /// Outcome of the tunnel's stop: `not_running`, `stopped` or `timed_out`. Absent when
    /// there was nothing to sign out.
    pub tunnel: Option<&'static str>,
    pub state: AppState,
}

impl AppState {
    pub fn new(snapshot: Snapshot, now: SystemTime) -> Self {
        Self {
            phase: phase_name(snapshot.phase),
            server_url: snapshot.server_url,
            profile: snapshot.profile.map(ProfileView::from),
            server_status: ServerStatusView::from(snapshot.server_status),
            tunnel: TunnelView::new(&snapshot.tunnel, now),
            disconnected: snapshot.disconnected,
            notice: snapshot.notice.map(NoticeView::from),
        }
    }
}

impl SettingsView {
    pub fn new(settings: Settings, log_directory: Option<std::path::PathBuf>) -> Self {
        Self {
            settings,
            log_directory: log_directory.map(|folder| folder.display().to_string()),
        }
    }
}

impl SaveSettingsView {
    pub fn saved(settings: SettingsView, snapshot: Snapshot, now: SystemTime) -> Self {
        Self {
            status: "saved",
            settings,
            state: AppState::new(snapshot, now),
        }
    }

    /// Returns the result for a new server while signed in: nothing saved, `current` in force.
    pub fn logout_required(current: SettingsView, snapshot: Snapshot, now: SystemTime) -> Self {
        Self {
            status: "logout_required",
            settings: current,
            state: AppState::new(snapshot, now),
        }
    }
}

impl TunnelView {
    pub fn new(status: &TunnelStatus, now: SystemTime) -> Self {
        let server_detail = match &status.server {
            ServerProbe::NotAnswering { reason } => Some(reason.clone()),
            ServerProbe::Checking | ServerProbe::Answering { .. } => None,
        };
        let state_text = match &status.phase {
            TunnelPhase::Error {
                message,
                failed_starts,
            } if *failed_starts > 1 => {
                format!("error: {message} (failed {failed_starts} times, retrying)")
            }
            phase => phase.describe(),
        };

        Self {
            state: status.phase.kind(),
            state_text,
            handshake: format_age(status.last_handshake, now),
            sent: format_bytes(status.tx_bytes),
            received: format_bytes(status.rx_bytes),
            server: status.server.kind(),
            server_text: status.server.describe(),
            server_detail,
        }
    }
}

impl From<Profile> for ProfileView {
    fn from(profile: Profile) -> Self {
        Self {
            username: profile.user.username,
            display_name: profile.user.display_name,
            email: profile.user.email,
            role: profile.user.role.to_string(),
            address: profile.wireguard.address.to_string(),
            endpoint: profile.wireguard.endpoint,
        }
    }
}

impl From<ServerStatus> for ServerStatusView {
    fn from(status: ServerStatus) -> Self {
        let (kind, message) = match status {
            ServerStatus::Unknown => ("unknown", None),
            ServerStatus::Checking => (
                "checking",
                Some("Checking the session with the server…".to_owned()),
            ),
            ServerStatus::Confirmed => ("confirmed", None),
            ServerStatus::Unreachable { message } => ("unreachable", Some(message)),
            ServerStatus::Failing { message } => ("failing", Some(message)),
        };
        Self { kind, message }
    }
}

impl From<Notice> for NoticeView {
    fn from(notice: Notice) -> Self {
        Self {
            kind: notice.kind,
            message: notice.message,
        }
    }
}

impl SignOutView {
    pub fn new(outcome: SignOutOutcome, snapshot: Snapshot, now: SystemTime) -> Self {
        let state = AppState::new(snapshot, now);
        match outcome {
            SignOutOutcome::Completed(report) => Self {
                outcome: "completed",
                message: Some(report.message()),
                server_confirmed: report.server_confirmed(),
                store_cleared: report.store_cleared(),
                tunnel: Some(report.tunnel.kind()),
                state,
            },
            SignOutOutcome::AlreadySignedOut => Self {
                outcome: "already_signed_out",
                message: None,
                server_confirmed: false,
                store_cleared: true,
                tunnel: None,
                state,
            },
        }
    }
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Starting => "starting",
        Phase::SignedOut => "signed_out",
        Phase::SigningIn => "signing_in",
        Phase::SignedIn => "signed_in",
        Phase::SigningOut => "signing_out",
    }
}

/// Turns an error into a sentence for the page: its message with a capital first letter and a
/// final period.
pub fn user_message(error: &dyn std::error::Error) -> String {
    let text = error.to_string();
    let mut characters = text.chars();
    let Some(first) = characters.next() else {
        return "Something failed without a message; see the log.".to_owned();
    };

    let mut sentence: String = first.to_uppercase().chain(characters).collect();
    if !sentence.ends_with(['.', '!', '?', '…']) {
        sentence.push('.');
    }
    sentence
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn connected_tunnel_is_formatted() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let status = TunnelStatus {
            phase: TunnelPhase::Connected,
            last_handshake: Some(now - Duration::from_secs(12)),
            tx_bytes: 1536,
            rx_bytes: 300,
            server: ServerProbe::Answering {
                round_trip: Duration::from_millis(3),
            },
        };

        let view = TunnelView::new(&status, now);

        assert_eq!(view.state, "connected");
        assert_eq!(view.state_text, "connected");
        assert_eq!(view.handshake, "12 s ago");
        assert_eq!(view.sent, "1.5 KiB");
        assert_eq!(view.received, "300 B");
        assert_eq!(view.server, "answering");
        assert_eq!(view.server_text, "answering (3 ms)");
        assert_eq!(view.server_detail, None);
    }

    #[test]
    fn failing_tunnel_shows_retries() {
        let status = TunnelStatus {
            phase: TunnelPhase::Error {
                message: "failed to bind".to_owned(),
                failed_starts: 3,
            },
            ..TunnelStatus::stopped()
        };

        let view = TunnelView::new(&status, SystemTime::UNIX_EPOCH);

        assert_eq!(view.state, "error");
        assert_eq!(
            view.state_text,
            "error: failed to bind (failed 3 times, retrying)"
        );
        assert_eq!(view.handshake, "never");
        assert_eq!(view.server_text, "not answering");
        assert_eq!(view.server_detail.as_deref(), Some("the tunnel is stopped"));
    }
}
