//! Wire types of the Camwire HTTP API, version 1.
//!
//! Every request and response body of the API is a type here, with the JSON field
//! names of the wire contract. Errors travel as [`ErrorBody`] with a status code and
//! one of the codes in [`error_code`]. Secrets ([`AccessToken`], [`Password`]) print as
//! `<redacted>` in `Debug` and are wiped from memory when dropped.

mod key;
mod secret;
mod validate;

use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

pub use key::{KEY_LEN, KeyError, fingerprint, parse_key};
pub use secret::{AccessToken, Password};
pub use validate::{InvalidField, MAX_HOST_CHARS, MAX_USER_FIELD_CHARS, shorten};

/// Version of the wire contract that these types describe.
pub const API_VERSION: u32 = 1;

/// Scheme of the `Authorization` header that carries the access token: `Bearer <token>`.
pub const AUTHORIZATION_SCHEME: &str = "Bearer";

/// Codes of the `error` field of [`ErrorBody`].
pub mod error_code {
    pub const MALFORMED_REQUEST: &str = "malformed_request";
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    pub const INVALID_CREDENTIALS: &str = "invalid_credentials";
    pub const RATE_LIMITED: &str = "rate_limited";
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const FORBIDDEN: &str = "forbidden";
    pub const NOT_FOUND: &str = "not_found";
    pub const INVALID_PUBLIC_KEY: &str = "invalid_public_key";
    pub const PUBLIC_KEY_IN_USE: &str = "public_key_in_use";
    pub const ALREADY_CONFIGURED: &str = "already_configured";
    pub const ADDRESS_POOL_EXHAUSTED: &str = "address_pool_exhausted";
    pub const NOT_CONFIGURED: &str = "not_configured";
    pub const REQUEST_TIMEOUT: &str = "request_timeout";
    pub const INTERNAL: &str = "internal_error";
    /// The path exists, but not with this method; the `Allow` header lists the methods.
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// The request raced another one that stored conflicting data first; retrying may work.
    pub const CONFLICT: &str = "conflict";
}

/// Body of every error response: a machine-readable code and a sentence for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

/// Body of `POST /login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginRequest {
    pub username: String,
    pub password: Password,
}

/// Kind of access token; version 1 has bearer tokens only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    Bearer,
}

/// Body of a successful `POST /login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginResponse {
    pub access_token: AccessToken,
    pub token_type: TokenType,
    /// End of the session; the token is rejected with 401 after it.
    pub expires_at: DateTime<Utc>,
    pub user: User,
}

/// Role of a user; only admins may call the `/admin` routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "user" => Ok(Role::User),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "invalid role {other:?}: expected \"user\" or \"admin\""
            )),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Body of `GET /me`, and the `user` of [`LoginResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub email: String,
    pub role: Role,
}

/// Body of `POST /wireguard/config`: the device's WireGuard public key.
///
/// The key stays a string on the wire so that the server can name the bad value in
/// its `invalid_public_key` error; [`parse_key`] checks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterKeyRequest {
    /// Base64 of the 32-byte x25519 public key.
    pub public_key: String,
}

/// A device's WireGuard settings, as `POST` and `GET /wireguard/config` return them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireguardConfig {
    /// The device's tunnel address, always a `/32`, such as `10.13.0.2/32`.
    pub address: Ipv4Net,
    /// The server's address inside the tunnel, such as `10.13.0.1`.
    pub server_address: Ipv4Addr,
    /// Base64 of the server's 32-byte x25519 public key.
    pub server_public_key: String,
    /// The server's WireGuard UDP endpoint as `host:port`.
    pub endpoint: String,
    /// Networks routed into the tunnel, such as `10.13.0.0/16`.
    pub allowed_ips: Vec<Ipv4Net>,
    /// Keepalive interval in seconds; 0 turns keepalives off.
    pub persistent_keepalive: u16,
    /// End of the lease; the address is reclaimed after it unless the session is renewed.
    pub expires_at: DateTime<Utc>,
}

/// Outcome of removing a device's WireGuard peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CleanupStatus {
    /// The peer was removed and its address freed.
    Revoked,
    /// The session had no peer, so there was nothing to remove.
    NotConfigured,
    /// The address was freed in the database, but removing the live peer failed;
    /// the server retries the removal later.
    Failed,
}

/// Body of `DELETE /wireguard/config`, and the `wireguard` part of [`LogoutResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireguardCleanup {
    pub status: CleanupStatus,
    /// The address that went back to the pool, such as `10.13.0.2`.
    pub released_address: Option<Ipv4Addr>,
    /// Whether the peer is gone from the live WireGuard endpoint and its config.
    pub peer_removed: bool,
    /// What went wrong, when `status` is `failed`.
    pub detail: Option<String>,
}

/// Body of `POST /logout`.
///
/// Servers older than version 1 send only `message`, so the other fields are optional
/// when parsing; this server always sends them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogoutResponse {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_invalidated: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard: Option<WireguardCleanup>,
}

/// Body of `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResponse {
    pub status: String,
}

mod admin;

pub use admin::{AdminPeer, AdminPeerList, AdminRevokeResponse, PoolStatus};

#[cfg(test)]
mod tests;
