//! Report of a sign-out, for the user and for tests.

use std::time::Duration;

use camwire_api::{CleanupStatus, LogoutResponse, WireguardCleanup};

use crate::api::sanitize_server_text;
use crate::{ApiError, UnreachableReason};

/// Outcome of a sign-out: the server's reply, how the tunnel stopped, and whether the stored
/// credentials are gone.
///
/// The session ends on this device in every case, and [`SignOutReport::message`] states that
/// in a sentence for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignOutReport {
    /// The server the session belonged to, such as `http://127.0.0.1:8080`.
    pub server_url: String,
    pub server: ServerOutcome,
    pub tunnel: TunnelOutcome,
    pub store: StoreOutcome,
}

/// Server's reply to `POST /logout`, sorted into the four cases shown to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOutcome {
    /// The server ended the session. Both fields are `None` from an older server whose reply
    /// has only a `message`.
    Confirmed {
        session_invalidated: Option<bool>,
        wireguard: Option<WireguardCleanup>,
    },
    /// No reply arrived; the server frees the address when the lease expires.
    Unreachable { reason: UnreachableReason },
    /// The server rejected the token (HTTP 401): it had expired or was revoked already.
    TokenRejected,
    /// The server replied with a 5xx, another unexpected status, or a body that is not the
    /// expected JSON.
    ServerError { status: Option<u16>, detail: String },
}

/// Outcome of stopping the session's tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelOutcome {
    /// No tunnel ran: it had not started, or every start attempt failed.
    NotRunning,
    /// The tunnel stopped within the bound. `ended` tasks returned after the stop signal;
    /// `aborted` ones were still running at the tunnel's shutdown timeout and were aborted.
    Stopped { ended: usize, aborted: usize },
    /// The tunnel's tasks did not finish within `bound`. The tunnel was dropped, which aborts
    /// its remaining tasks without waiting for them.
    TimedOut { bound: Duration },
}

impl TunnelOutcome {
    /// Returns a short machine-readable name: `not_running`, `stopped` or `timed_out`.
    pub fn kind(&self) -> &'static str {
        match self {
            TunnelOutcome::NotRunning => "not_running",
            TunnelOutcome::Stopped { .. } => "stopped",
            TunnelOutcome::TimedOut { .. } => "timed_out",
        }
    }
}

/// Whether clearing the stored credentials succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOutcome {
    Cleared,
    /// Clearing failed. The error names the store, because its file may still contain the token.
    Failed {
        error: String,
    },
}

impl ServerOutcome {
    /// Sorts the result of `POST /logout` into the four outcomes shown to the user.
    pub fn from_logout_result(result: Result<LogoutResponse, ApiError>) -> Self {
        let error = match result {
            Ok(response) => {
                return ServerOutcome::Confirmed {
                    session_invalidated: response.session_invalidated,
                    wireguard: response.wireguard.map(bound_cleanup_detail),
                };
            }
            Err(error) => error,
        };

        if error.is_unauthorized() {
            return ServerOutcome::TokenRejected;
        }
        if let ApiError::Unreachable { reason, .. } = error {
            return ServerOutcome::Unreachable { reason };
        }
        ServerOutcome::ServerError {
            status: error.status(),
            detail: error.to_string(),
        }
    }

    /// Returns a short machine-readable name: `confirmed`, `unreachable`, `token_rejected` or
    /// `server_error`.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerOutcome::Confirmed { .. } => "confirmed",
            ServerOutcome::Unreachable { .. } => "unreachable",
            ServerOutcome::TokenRejected => "token_rejected",
            ServerOutcome::ServerError { .. } => "server_error",
        }
    }
}

/// Cuts the server's `detail` to 300 characters and drops its control characters, as error
/// bodies are, because the report is logged and shown to the user.
fn bound_cleanup_detail(mut cleanup: WireguardCleanup) -> WireguardCleanup {
    cleanup.detail = cleanup.detail.as_deref().map(sanitize_server_text);
    cleanup
}

impl SignOutReport {
    /// Returns whether the server confirmed the sign-out.
    pub fn server_confirmed(&self) -> bool {
        matches!(self.server, ServerOutcome::Confirmed { .. })
    }

    /// Returns whether the stored credentials were removed.
    pub fn store_cleared(&self) -> bool {
        self.store == StoreOutcome::Cleared
    }

    /// Describes the sign-out in one or two sentences for the user.
    pub fn message(&self) -> String {
        let mut message = match &self.server {
            ServerOutcome::Confirmed { wireguard, .. } => confirmed_sentence(wireguard.as_ref()),
            ServerOutcome::Unreachable { reason } => format!(
                "Signed out on this device. The server could not be reached ({}) and will release \
                 the address when the lease expires.",
                unreachable_phrase(reason)
            ),
            ServerOutcome::TokenRejected => {
                "Signed out on this device. The server no longer accepted this \
                 session (it had expired or was revoked already)."
                    .to_owned()
            }
            ServerOutcome::ServerError { status, .. } => {
                let what = match status {
                    Some(status) => format!("replied with an error (HTTP {status})"),
                    None => "sent a reply that could not be read".to_owned(),
                };
                format!(
                    "Signed out on this device. The server {what} and will release the address \
                     when the lease expires."
                )
            }
        };

        match self.tunnel {
            TunnelOutcome::NotRunning | TunnelOutcome::Stopped { aborted: 0, .. } => {}
            TunnelOutcome::Stopped { aborted, .. } => message.push_str(&format!(
                " The VPN tunnel stopped; {aborted} of its tasks had to be aborted."
            )),
            TunnelOutcome::TimedOut { bound } => message.push_str(&format!(
                " The VPN tunnel did not stop within {} s and was shut down forcibly.",
                bound.as_secs_f64()
            )),
        }

        if let StoreOutcome::Failed { error } = &self.store {
            message.push_str(&format!(
                " Removing the saved sign-in from this device failed ({error}); delete the file \
                 by hand."
            ));
        }
        message
    }
}

fn confirmed_sentence(cleanup: Option<&WireguardCleanup>) -> String {
    let Some(cleanup) = cleanup else {
        return "Signed out. The server confirmed the sign-out.".to_owned();
    };

    match (cleanup.status, cleanup.released_address) {
        (CleanupStatus::Revoked, Some(address)) => {
            format!(
                "Signed out. The server ended the session and released the VPN address {address}."
            )
        }
        (CleanupStatus::Revoked, None) => {
            "Signed out. The server ended the session and released the VPN address.".to_owned()
        }
        (CleanupStatus::NotConfigured, _) => {
            "Signed out. The server ended the session; this device had no VPN address.".to_owned()
        }
        (CleanupStatus::Failed, _) => {
            let detail = cleanup
                .detail
                .as_deref()
                .map(|detail| format!(" ({detail})"))
                .unwrap_or_default();
            format!(
                "Signed out. The server ended the session and freed the address, but could not \
                 remove the WireGuard peer yet{detail}; it retries on its own."
            )
        }
    }
}

fn unreachable_phrase(reason: &UnreachableReason) -> String {
    match reason {
        UnreachableReason::ConnectionRefused => "connection refused".to_owned(),
        UnreachableReason::DnsLookupFailed { host } => {
            format!("the name {host} could not be resolved")
        }
        UnreachableReason::TimedOut { after } => {
            format!("no reply within {} s", after.as_secs_f64())
        }
        UnreachableReason::ConnectFailed { .. } => "the connection failed".to_owned(),
        UnreachableReason::ConnectionLost { .. } => {
            "the connection closed without a reply".to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(server: ServerOutcome) -> SignOutReport {
        SignOutReport {
            server_url: "http://127.0.0.1:8080".into(),
            server,
            tunnel: TunnelOutcome::Stopped {
                ended: 1,
                aborted: 0,
            },
            store: StoreOutcome::Cleared,
        }
    }

    #[test]
    fn confirmed_message_names_released_address() {
        let message = report(ServerOutcome::Confirmed {
            session_invalidated: Some(true),
            wireguard: Some(WireguardCleanup {
                status: CleanupStatus::Revoked,
                released_address: Some("10.13.0.2".parse().expect("address")),
                peer_removed: true,
                detail: None,
            }),
        })
        .message();

        assert_eq!(
            message,
            "Signed out. The server ended the session and released the VPN address 10.13.0.2."
        );
    }

    #[test]
    fn confirmed_by_older_server_message() {
        let message = report(ServerOutcome::Confirmed {
            session_invalidated: None,
            wireguard: None,
        })
        .message();

        assert_eq!(message, "Signed out. The server confirmed the sign-out.");
    }

    #[test]
    fn unreachable_message_says_which_failure() {
        let cases = [
            (UnreachableReason::ConnectionRefused, "connection refused"),
            (
                UnreachableReason::TimedOut {
                    after: Duration::from_secs(5),
                },
                "no reply within 5 s",
            ),
            (
                UnreachableReason::DnsLookupFailed {
                    host: "camwire.invalid".into(),
                },
                "camwire.invalid could not be resolved",
            ),
        ];

        for (reason, expected) in cases {
            let message = report(ServerOutcome::Unreachable { reason }).message();
            assert!(
                message.starts_with("Signed out on this device."),
                "{message}"
            );
            assert!(message.contains(expected), "{message}");
            assert!(message.contains("lease expires"), "{message}");
        }
    }

    #[test]
    fn failed_store_is_mentioned() {
        let mut report = report(ServerOutcome::TokenRejected);
        report.store = StoreOutcome::Failed {
            error: "could not write the credential store /x: denied".into(),
        };

        let message = report.message();

        assert!(message.contains("no longer accepted"), "{message}");
        assert!(
            message.contains("could not write the credential store /x"),
            "{message}"
        );
    }

    #[test]
    fn forced_tunnel_stop_is_mentioned() {
        let mut timed_out = report(ServerOutcome::TokenRejected);
        timed_out.tunnel = TunnelOutcome::TimedOut {
            bound: Duration::from_secs(2),
        };
        let mut aborted = report(ServerOutcome::TokenRejected);
        aborted.tunnel = TunnelOutcome::Stopped {
            ended: 0,
            aborted: 1,
        };
        let mut not_running = report(ServerOutcome::TokenRejected);
        not_running.tunnel = TunnelOutcome::NotRunning;

        assert!(
            timed_out
                .message()
                .ends_with("The VPN tunnel did not stop within 2 s and was shut down forcibly."),
            "{}",
            timed_out.message()
        );
        assert!(
            aborted
                .message()
                .ends_with("The VPN tunnel stopped; 1 of its tasks had to be aborted."),
            "{}",
            aborted.message()
        );
        assert!(
            not_running.message().ends_with("revoked already)."),
            "{}",
            not_running.message()
        );
    }

    #[test]
    fn long_cleanup_detail_is_cut() {
        let detail = format!("wg failed\nFAKE LOG LINE{}", "x".repeat(500_000));
        let response = LogoutResponse {
            message: "Signed out.".into(),
            session_invalidated: Some(true),
            wireguard: Some(WireguardCleanup {
                status: CleanupStatus::Failed,
                released_address: None,
                peer_removed: false,
                detail: Some(detail),
            }),
        };

        let outcome = ServerOutcome::from_logout_result(Ok(response));

        let ServerOutcome::Confirmed {
            wireguard: Some(cleanup),
            ..
        } = &outcome
        else {
            panic!("expected a confirmed sign-out with a cleanup, got {outcome:?}");
        };
        let detail = cleanup.detail.as_deref().expect("detail is kept");
        assert_eq!(detail.chars().count(), 301);
        assert!(detail.starts_with("wg failedFAKE LOG LINE"), "{detail}");
        assert!(detail.ends_with('…'), "{detail}");
        assert!(report(outcome).message().len() < 600);
    }

    #[test]
    fn short_cleanup_detail_is_kept() {
        let response = LogoutResponse {
            message: "Signed out.".into(),
            session_invalidated: Some(true),
            wireguard: Some(WireguardCleanup {
                status: CleanupStatus::Failed,
                released_address: None,
                peer_removed: false,
                detail: Some("wg set failed".into()),
            }),
        };

        let message = report(ServerOutcome::from_logout_result(Ok(response))).message();

        assert!(message.contains("(wg set failed)"), "{message}");
    }

    #[test]
    fn outcome_sorts_api_errors() {
        use crate::api::Route;

        let rejected = ServerOutcome::from_logout_result(Err(ApiError::UnexpectedStatus {
            route: Route::LOGOUT,
            status: 401,
        }));
        let failing = ServerOutcome::from_logout_result(Err(ApiError::UnexpectedStatus {
            route: Route::LOGOUT,
            status: 500,
        }));
        let garbled = ServerOutcome::from_logout_result(Err(ApiError::InvalidBody {
            route: Route::LOGOUT,
            status: 200,
            reason: "expected value at line 1 column 1".into(),
        }));

        assert_eq!(rejected, ServerOutcome::TokenRejected);
        assert_eq!(failing.kind(), "server_error");
        assert!(matches!(
            garbled,
            ServerOutcome::ServerError {
                status: Some(200),
                ..
            }
        ));
    }
}
