//! Display data that the commands send to the webview, with no token, key or password.

use camwire_client::{Notice, Phase, Profile, ServerStatus, SignOutOutcome, Snapshot};
use serde::Serialize;

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
    pub notice: Option<NoticeView>,
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
    /// `confirmed`, `unreachable`, `token_rejected`, `server_error` or `session_expired`.
    pub kind: &'static str,
    pub message: String,
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
    pub state: AppState,
}

impl From<Snapshot> for AppState {
    fn from(snapshot: Snapshot) -> Self {
        Self {
            phase: phase_name(snapshot.phase),
            server_url: snapshot.server_url,
            profile: snapshot.profile.map(ProfileView::from),
            server_status: ServerStatusView::from(snapshot.server_status),
            notice: snapshot.notice.map(NoticeView::from),
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
    pub fn new(outcome: SignOutOutcome, snapshot: Snapshot) -> Self {
        let state = AppState::from(snapshot);
        match outcome {
            SignOutOutcome::Completed(report) => Self {
                outcome: "completed",
                message: Some(report.message()),
                server_confirmed: report.server_confirmed(),
                store_cleared: report.store_cleared(),
                state,
            },
            SignOutOutcome::AlreadySignedOut => Self {
                outcome: "already_signed_out",
                message: None,
                server_confirmed: false,
                store_cleared: true,
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
