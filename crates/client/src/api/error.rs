//! Typed failures of API calls, and the classification of transport errors.

use std::error::Error as _;
use std::time::Duration;

use super::Route;

/// Maximum number of characters of a server-supplied text (error message, code) that an error keeps.
const MAX_SERVER_TEXT_CHARS: usize = 300;

/// Failure of an API call. Every variant names the route, and none contains a token or key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// No HTTP reply arrived: the connection failed, or the reply did not come in time.
    #[error("could not reach the server at {server} ({route}): {reason}")]
    Unreachable {
        server: String,
        route: Route,
        reason: UnreachableReason,
    },

    /// The server replied with an error status and a Camwire error body.
    #[error("the server rejected {route} with HTTP {status} ({code}): {message}")]
    Rejected {
        route: Route,
        status: u16,
        code: String,
        message: String,
    },

    /// The server replied with a status that is neither success nor a Camwire error body,
    /// such as a proxy's 502 page or a redirect.
    #[error("the server replied to {route} with HTTP {status} and no Camwire error body")]
    UnexpectedStatus { route: Route, status: u16 },

    /// A reply parsed, but a value in it cannot be used or is out of bounds, such as an
    /// endpoint without a port.
    #[error(
        "the server's reply to {route} contains an invalid value: {error}; contact the server's operator"
    )]
    InvalidReply {
        route: Route,
        #[source]
        error: camwire_api::InvalidField,
    },

    /// A reply arrived but its body is not the JSON that the route returns.
    #[error("the server's reply to {route} (HTTP {status}) is not the expected JSON: {reason}")]
    InvalidBody {
        route: Route,
        status: u16,
        reason: String,
    },

    /// The server sent bytes that are not an HTTP reply.
    #[error("the server's reply to {route} is not valid HTTP: {detail}")]
    MalformedReply { route: Route, detail: String },

    /// A reply body exceeded the size limit; reading stopped there.
    #[error("the server's reply to {route} exceeds the limit of {limit} bytes")]
    BodyTooLarge { route: Route, limit: usize },

    /// The request could not be built or the HTTP client could not start.
    #[error("could not send {route}: {detail}")]
    Request { route: Route, detail: String },
}

/// Cause of a missing reply from the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnreachableReason {
    /// Nothing listens on the server's port (the OS reported connection refused).
    #[error("connection refused; check the URL and that the server is running")]
    ConnectionRefused,

    /// The host name did not resolve to an address.
    #[error("the host name {host:?} could not be resolved (DNS lookup failed); check the URL")]
    DnsLookupFailed { host: String },

    /// The connection or the whole exchange exceeded its time bound.
    #[error("no reply within {} s (timed out)", format_seconds(*after))]
    TimedOut { after: Duration },

    /// Connecting failed for another reason, such as a TLS error or an unreachable network.
    #[error("connection failed: {detail}")]
    ConnectFailed { detail: String },

    /// The connection closed or reset before a complete reply arrived.
    #[error("the connection closed before a reply arrived: {detail}")]
    ConnectionLost { detail: String },
}

impl ApiError {
    /// Returns the HTTP status of the reply, if one arrived.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Rejected { status, .. }
            | ApiError::UnexpectedStatus { status, .. }
            | ApiError::InvalidBody { status, .. } => Some(*status),
            ApiError::Unreachable { .. }
            | ApiError::InvalidReply { .. }
            | ApiError::MalformedReply { .. }
            | ApiError::BodyTooLarge { .. }
            | ApiError::Request { .. } => None,
        }
    }

    /// Returns the `error` code of a Camwire error body, such as `address_pool_exhausted`.
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiError::Rejected { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Returns whether the server rejected the access token (HTTP 401).
    pub fn is_unauthorized(&self) -> bool {
        self.status() == Some(401)
    }

    /// Returns the reason when no reply arrived from the server.
    pub fn unreachable_reason(&self) -> Option<&UnreachableReason> {
        match self {
            ApiError::Unreachable { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// Classified reqwest transport error.
pub(super) enum TransportFailure {
    Unreachable(UnreachableReason),
    /// The reply was not valid HTTP.
    Malformed(String),
}

/// Classifies a transport error from reqwest by walking its source chain.
///
/// The DNS case is recognized by the "dns error" text of hyper-util's connect error
/// (hyper-util 0.1), because that type is private.
pub(super) fn classify_transport_error(
    error: &reqwest::Error,
    host: &str,
    connect_timeout: Duration,
) -> TransportFailure {
    if error.is_timeout() {
        return TransportFailure::Unreachable(UnreachableReason::TimedOut {
            after: connect_timeout,
        });
    }

    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return TransportFailure::Unreachable(UnreachableReason::ConnectionRefused);
        }
        if cause.to_string() == "dns error" {
            return TransportFailure::Unreachable(UnreachableReason::DnsLookupFailed {
                host: host.to_owned(),
            });
        }
        if let Some(hyper_error) = cause.downcast_ref::<hyper::Error>()
            && (hyper_error.is_parse() || hyper_error.is_parse_status())
        {
            return TransportFailure::Malformed(error_chain(error));
        }
        source = cause.source();
    }

    let detail = error_chain(error);
    if error.is_connect() {
        TransportFailure::Unreachable(UnreachableReason::ConnectFailed { detail })
    } else {
        TransportFailure::Unreachable(UnreachableReason::ConnectionLost { detail })
    }
}

/// Joins an error and its sources into one line, `outer: inner: innermost`.
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Cuts a server-supplied text to a bounded length and drops control characters, so that a
/// hostile reply cannot flood a log or forge extra log lines.
pub(crate) fn sanitize_server_text(text: &str) -> String {
    let printable: String = text
        .chars()
        .filter(|character| !character.is_control())
        .collect();
    camwire_api::shorten(&printable, MAX_SERVER_TEXT_CHARS)
}

fn format_seconds(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    if seconds.fract() == 0.0 {
        format!("{seconds:.0}")
    } else {
        format!("{seconds:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_drops_control_characters_and_cuts() {
        let text = format!("line one\nline two\u{1b}[31m{}", "x".repeat(1000));

        let clean = sanitize_server_text(&text);

        assert!(!clean.contains('\n'));
        assert!(!clean.contains('\u{1b}'));
        assert_eq!(clean.chars().count(), MAX_SERVER_TEXT_CHARS + 1);
        assert!(clean.ends_with('…'));
    }

    #[test]
    fn sanitize_keeps_short_text() {
        assert_eq!(
            sanitize_server_text("Invalid user name or password."),
            "Invalid user name or password."
        );
    }

    #[test]
    fn timeout_message_names_seconds() {
        let reason = UnreachableReason::TimedOut {
            after: Duration::from_secs(5),
        };
        assert_eq!(reason.to_string(), "no reply within 5 s (timed out)");

        let reason = UnreachableReason::TimedOut {
            after: Duration::from_millis(2500),
        };
        assert_eq!(reason.to_string(), "no reply within 2.5 s (timed out)");
    }
}
