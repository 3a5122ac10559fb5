//! Bodies of the `/admin` routes, which only users with the admin role may call.

use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::WireguardCleanup;

/// One WireGuard peer as `GET /admin/peers` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminPeer {
    /// Id of the peer, for `DELETE /admin/peers/{id}`.
    pub id: String,
    pub user_id: String,
    pub username: String,
    pub session_id: String,
    /// The device's tunnel address, such as `10.13.0.2`.
    pub address: Ipv4Addr,
    /// Base64 of the device's 32-byte x25519 public key.
    pub public_key: String,
    /// Time of the allocation.
    pub created_at: DateTime<Utc>,
    /// Time of the last completed handshake that any server saw, or null when none was seen.
    pub last_handshake: Option<DateTime<Utc>>,
    /// End of the session; the peer is reclaimed then.
    pub expires_at: DateTime<Utc>,
    /// Time at which the peer is reclaimed for lack of handshakes, unless one arrives first;
    /// null when the server's back end does not report handshakes.
    pub idle_expires_at: Option<DateTime<Utc>>,
}

/// Body of `GET /admin/peers`: every peer, lowest address first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminPeerList {
    pub peers: Vec<AdminPeer>,
}

/// Body of a successful `DELETE /admin/peers/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminRevokeResponse {
    pub peer_id: String,
    pub user_id: String,
    pub session_id: String,
    /// Whether the peer's session was deleted, so that its access token gets 401.
    pub session_revoked: bool,
    /// Removal of the peer from the WireGuard back end and release of its address.
    pub wireguard: WireguardCleanup,
}

/// Body of `GET /admin/pool`: the address pool's size and use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub cidr: Ipv4Net,
    /// Client addresses of the pool: its hosts less the server's address.
    pub size: u32,
    /// Addresses of the pool that peers hold.
    pub allocated: u32,
    /// Addresses of the pool ready to be handed out.
    pub free: u32,
    /// The address that the next allocation takes, or null when the pool is exhausted.
    pub lowest_free: Option<Ipv4Addr>,
}
