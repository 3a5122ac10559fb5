//! The HTTP API's error type: one status mapping, one JSON shape.

use std::net::Ipv4Addr;
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ipnet::Ipv4Net;

use camwire_api::{ErrorBody, Role, error_code};

use crate::auth::PasswordError;
use crate::backend::BackendError;

/// Value of `WWW-Authenticate` on every 401 (RFC 6750 section 3).
const WWW_AUTHENTICATE: &str = "Bearer realm=\"camwire\"";

/// Value of `WWW-Authenticate` when a token was sent but is not valid.
const WWW_AUTHENTICATE_INVALID_TOKEN: &str = "Bearer realm=\"camwire\", error=\"invalid_token\"";

/// Problems with the access token of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    Missing,
    Malformed,
    /// Unknown to the server, or revoked by a sign-out.
    Invalid,
    Expired,
}

/// Every way a request can fail. `status` and `code` map each variant once.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    MalformedRequest(String),
    #[error("request body is larger than the limit of {limit} bytes; send a smaller body")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("invalid user name or password")]
    InvalidCredentials,
    #[error("too many failed sign-ins; try again in {} s", retry_after_seconds(*retry_after))]
    RateLimited { retry_after: Duration },
    #[error("{}", token_message(*.0))]
    Unauthorized(TokenProblem),
    #[error("no route for {method} {path}; GET /openapi.json lists the routes of the API")]
    RouteNotFound { method: String, path: String },
    #[error(
        "method {method} is not allowed on {path}; the Allow header lists the methods it accepts"
    )]
    MethodNotAllowed { method: String, path: String },
    /// The message names the value and the expected form.
    #[error("{0}")]
    InvalidPublicKey(String),
    #[error(
        "this WireGuard public key is already registered by another session; generate a new key pair on the device"
    )]
    PublicKeyInUse,
    #[error(
        "this session already has the WireGuard address {address}; use GET /wireguard/config, or DELETE it first to register a new key"
    )]
    AlreadyConfigured { address: Ipv4Addr },
    #[error("every address of the pool {pool} is in use; try again after other devices sign out")]
    AddressPoolExhausted { pool: Ipv4Net },
    #[error(
        "this session has no WireGuard configuration; register a public key with POST /wireguard/config"
    )]
    NotConfigured,
    #[error("{0}")]
    Conflict(String),
    #[error("this route is for administrators; the user {username:?} has the role {role}")]
    Forbidden { username: String, role: Role },
    #[error("no peer with the id {id:?}; GET /admin/peers lists the peers")]
    PeerNotFound { id: String },
    #[error(
        "the server did not finish the request within {} s; try again later",
        limit.as_secs()
    )]
    RequestTimeout { limit: Duration },
    #[error("internal server error; try again, and tell the server's operator if it persists")]
    Internal(#[from] InternalError),
}

/// Details of a 500, logged once and never sent to the client.
#[derive(Debug, thiserror::Error)]
pub enum InternalError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("peer back end error: {0}")]
    Backend(#[from] BackendError),
    #[error("password hashing error: {0}")]
    Password(#[from] PasswordError),
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl From<sqlx::Error> for Error {
    /// Maps a unique violation to 409 and anything else to 500.
    fn from(error: sqlx::Error) -> Self {
        if is_unique_violation(&error) {
            return Error::Conflict(
                "the request conflicts with data that another request just stored; try again"
                    .into(),
            );
        }

        Error::Internal(InternalError::Database(error))
    }
}

impl From<BackendError> for Error {
    fn from(error: BackendError) -> Self {
        Error::Internal(InternalError::Backend(error))
    }
}

impl From<PasswordError> for Error {
    fn from(error: PasswordError) -> Self {
        Error::Internal(InternalError::Password(error))
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(error: tokio::task::JoinError) -> Self {
        Error::Internal(InternalError::Task(error))
    }
}

/// Tells whether `error` is a violation of a UNIQUE or PRIMARY KEY constraint.
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|database| database.is_unique_violation())
}

/// Tells whether `error` is a violation of a FOREIGN KEY constraint, such as a peer
/// inserted for a session that a concurrent sign-out deleted.
pub fn is_foreign_key_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|database| database.is_foreign_key_violation())
}

/// Returns the name of the violated constraint or, where the driver gives none (SQLite),
/// its message, which names the columns. For telling unique violations apart.
pub fn violated_constraint(error: &sqlx::Error) -> Option<String> {
    let database = error.as_database_error()?;

    Some(match database.constraint() {
        Some(constraint) => constraint.to_owned(),
        None => database.message().to_owned(),
    })
}

impl Error {
    /// Returns the text for the server's log: the cause of an internal error, with its
    /// sources, which the client-facing message hides, or the message of other errors.
    pub fn log_text(&self) -> String {
        match self {
            Error::Internal(detail) => error_chain(detail),
            other => other.to_string(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::MalformedRequest(_) | Error::InvalidPublicKey(_) => StatusCode::BAD_REQUEST,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::InvalidCredentials | Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Forbidden { .. } => StatusCode::FORBIDDEN,
            Error::RouteNotFound { .. } | Error::NotConfigured | Error::PeerNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::PublicKeyInUse | Error::AlreadyConfigured { .. } | Error::Conflict(_) => {
                StatusCode::CONFLICT
            }
            Error::AddressPoolExhausted { .. } | Error::RequestTimeout { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Error::MalformedRequest(_) => error_code::MALFORMED_REQUEST,
            Error::PayloadTooLarge { .. } => error_code::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType(_) => error_code::UNSUPPORTED_MEDIA_TYPE,
            Error::InvalidCredentials => error_code::INVALID_CREDENTIALS,
            Error::RateLimited { .. } => error_code::RATE_LIMITED,
            Error::Unauthorized(_) => error_code::UNAUTHORIZED,
            Error::RouteNotFound { .. } => error_code::NOT_FOUND,
            Error::MethodNotAllowed { .. } => error_code::METHOD_NOT_ALLOWED,
            Error::InvalidPublicKey(_) => error_code::INVALID_PUBLIC_KEY,
            Error::PublicKeyInUse => error_code::PUBLIC_KEY_IN_USE,
            Error::AlreadyConfigured { .. } => error_code::ALREADY_CONFIGURED,
            Error::AddressPoolExhausted { .. } => error_code::ADDRESS_POOL_EXHAUSTED,
            Error::NotConfigured => error_code::NOT_CONFIGURED,
            Error::Conflict(_) => error_code::CONFLICT,
            Error::Forbidden { .. } => error_code::FORBIDDEN,
            Error::PeerNotFound { .. } => error_code::NOT_FOUND,
            Error::RequestTimeout { .. } => error_code::REQUEST_TIMEOUT,
            Error::Internal(_) => error_code::INTERNAL,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if let Error::Internal(_) = &self {
            tracing::error!(error = %self.log_text(), "request failed with an internal error");
        }

        let status = self.status();
        let body = ErrorBody {
            error: self.code().to_owned(),
            message: self.to_string(),
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();

        match &self {
            Error::Unauthorized(
                TokenProblem::Invalid | TokenProblem::Expired | TokenProblem::Malformed,
            ) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(WWW_AUTHENTICATE_INVALID_TOKEN),
                );
            }
            Error::Unauthorized(TokenProblem::Missing) | Error::InvalidCredentials => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(WWW_AUTHENTICATE),
                );
            }
            Error::RateLimited { retry_after } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after_seconds(*retry_after)),
                );
            }
            _ => {}
        }

        response
    }
}

/// Rounds up, so that a client waiting this long is no longer blocked.
fn retry_after_seconds(retry_after: Duration) -> u64 {
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    seconds.max(1)
}

fn token_message(problem: TokenProblem) -> &'static str {
    match problem {
        TokenProblem::Missing => {
            "missing Authorization header; send `Authorization: Bearer <access_token>` with the token from POST /login"
        }
        TokenProblem::Malformed => {
            "malformed Authorization header; expected `Bearer ` followed by the 43-character access token from POST /login"
        }
        TokenProblem::Invalid => {
            "invalid access token: it is unknown or was revoked by a sign-out; sign in again with POST /login"
        }
        TokenProblem::Expired => "the access token has expired; sign in again with POST /login",
    }
}

/// Formats an error with its sources, for the one log line of an internal error.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();

    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }

    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(57)), 57);
        assert_eq!(retry_after_seconds(Duration::from_millis(56_001)), 57);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn internal_error_message_hides_details() {
        let error = Error::from(sqlx::Error::Protocol("SELECT secret FROM t".into()));

        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!error.to_string().contains("SELECT"), "{error}");
    }

    #[test]
    fn log_text_shows_the_internal_cause() {
        let internal = Error::from(sqlx::Error::Protocol("disk I/O error".into()));
        let conflict = Error::NotConfigured;

        assert_eq!(
            internal.log_text(),
            "database error: encountered unexpected or invalid data: disk I/O error"
        );
        assert_eq!(conflict.log_text(), conflict.to_string());
    }

    #[test]
    fn every_401_sets_www_authenticate() {
        let errors = [
            Error::InvalidCredentials,
            Error::Unauthorized(TokenProblem::Missing),
            Error::Unauthorized(TokenProblem::Malformed),
            Error::Unauthorized(TokenProblem::Invalid),
            Error::Unauthorized(TokenProblem::Expired),
        ];

        for error in errors {
            let response = error.into_response();

            let value = response.headers().get(header::WWW_AUTHENTICATE);
            assert!(value.is_some_and(|value| value.as_bytes().starts_with(b"Bearer")));
        }
    }

    #[test]
    fn rate_limited_sets_retry_after() {
        let response = Error::RateLimited {
            retry_after: Duration::from_millis(4_500),
        }
        .into_response();

        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response
                .headers()
                .get(header::RETRY_AFTER)
                .map(HeaderValue::as_bytes),
            Some(&b"5"[..])
        );
    }

    #[test]
    fn error_chain_joins_sources_once() {
        let io = std::io::Error::other("disk full");
        let error = BackendError::WriteConfig {
            path: "/etc/wireguard/wg0.conf".into(),
            source: io,
        };

        let text = error_chain(&error);

        assert_eq!(
            text,
            "failed to write the WireGuard config /etc/wireguard/wg0.conf: disk full"
        );
    }
}
