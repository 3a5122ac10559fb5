//! Peer back ends: where the server applies the peers that the database allocates.
//!
//! The database decides who holds which address; a back end makes the WireGuard side
//! match. The `wg-config` back end keeps a wg-quick style config file. An embedded
//! userspace WireGuard hub is planned as a second implementation of the same trait.

mod wg_config;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::SystemTime;

use async_trait::async_trait;

use camwire_tunnel::PublicKey;

pub use wg_config::{WgConfigBackend, WgInterface};

/// A peer as the back end knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LivePeer {
    pub public_key: PublicKey,
    pub address: Ipv4Addr,
    /// Time of the last completed handshake; `None` when the back end cannot tell or
    /// there was none.
    pub last_handshake: Option<SystemTime>,
}

/// Errors of a peer back end.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("failed to read the WireGuard config {path}: {source}")]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "invalid WireGuard config {path}: {source}; fix the file or move it away to start with a new server key"
    )]
    ParseConfig {
        path: PathBuf,
        #[source]
        source: crate::wg_conf::ParseError,
    },
    #[error("failed to write the WireGuard config {path}: {source}")]
    WriteConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the WireGuard config writer task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Applies WireGuard peers to a live endpoint or its configuration.
///
/// Every method takes `&self` and may be called from concurrent requests. Calls for one
/// key are idempotent: adding a present peer or removing an absent one succeeds, so a
/// sweeper may retry a failed call as is.
#[async_trait]
pub trait PeerBackend: Send + Sync + 'static {
    /// Short name for logs, such as `wg-config`.
    fn name(&self) -> &'static str;

    /// Adds a peer with `AllowedIPs = address/32`, or moves a present key to `address`.
    async fn add_peer(&self, public_key: PublicKey, address: Ipv4Addr) -> Result<(), BackendError>;

    /// Removes the peer with `public_key`.
    async fn remove_peer(&self, public_key: PublicKey) -> Result<(), BackendError>;

    /// Lists the peers the back end has, lowest address first.
    async fn peers(&self) -> Result<Vec<LivePeer>, BackendError>;
}
