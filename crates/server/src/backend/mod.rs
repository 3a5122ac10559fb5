//! Peer back ends: where the server applies the peers that the database allocates.
//!
//! The database decides who holds which address; a back end makes the WireGuard side
//! match. The `embedded` back end ([`EmbeddedBackend`]) applies peers to a userspace
//! WireGuard hub in this process and to a wg-quick style config file. The `wg-config`
//! back end keeps only the config file and, with an interface name, applies it to a
//! live kernel interface with the `wg` tool. [`MemoryBackend`] keeps the peers in
//! memory only, for tests and benchmarks.

mod embedded;
mod hub;
mod memory;
mod wg_config;
mod wg_tool;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::SystemTime;

use async_trait::async_trait;

use camwire_tunnel::PublicKey;

pub use embedded::EmbeddedBackend;
pub use hub::HubBackend;
pub use memory::MemoryBackend;
pub use wg_config::{WgConfigBackend, WgInterface};
pub use wg_tool::{WgTool, WgToolError, parse_latest_handshakes};

/// A peer as the back end has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivePeer {
    pub public_key: PublicKey,
    pub address: Ipv4Addr,
}

/// Last completed handshake of each peer that had one. A peer without an entry never
/// completed a handshake.
pub type Handshakes = HashMap<PublicKey, SystemTime>;

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
    #[error(transparent)]
    WgTool(#[from] WgToolError),
    #[error("the WireGuard hub rejected the peer on {address}: {source}")]
    Hub {
        address: Ipv4Addr,
        #[source]
        source: camwire_tunnel::HubError,
    },
    #[error("the WireGuard config writer task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Applies WireGuard peers to a live endpoint or its configuration.
///
/// Every method takes `&self` and may be called from concurrent requests. Calls for one
/// key are idempotent: adding a present peer or removing an absent one succeeds, so a
/// sweeper may retry a failed call as is.
///
/// The database guarantees that no two peers hold one address, and the server calls
/// [`add_peer`](Self::add_peer) inside the transaction that took the address. So a
/// back end that still has another key on that address has a stale peer, and
/// `add_peer` replaces it.
#[async_trait]
pub trait PeerBackend: Send + Sync + 'static {
    /// Short name for logs, such as `wg-config`.
    fn name(&self) -> &'static str;

    /// Adds a peer with `AllowedIPs = address/32`, or moves a present key to `address`.
    /// A different key on `address` is removed.
    async fn add_peer(&self, public_key: PublicKey, address: Ipv4Addr) -> Result<(), BackendError>;

    /// Removes the peer with `public_key`, so that its key no longer completes a handshake.
    async fn remove_peer(&self, public_key: PublicKey) -> Result<(), BackendError>;

    /// Lists the peers the back end has, lowest address first.
    async fn peers(&self) -> Result<Vec<LivePeer>, BackendError>;

    /// Returns the time of each peer's last completed handshake, or `None` when this
    /// back end cannot tell (a config file without a live interface). The sweeper
    /// reclaims idle peers only when the back end reports handshakes.
    async fn last_handshakes(&self) -> Result<Option<Handshakes>, BackendError>;

    /// Makes the back end hold exactly `desired`: adds missing peers, moves peers whose
    /// address changed and removes the others. Returns how many changed.
    ///
    /// The default removes first, so that freed addresses are free before the adds.
    /// Back ends that can apply a whole set at once override it.
    async fn sync(&self, desired: &[LivePeer]) -> Result<SyncReport, BackendError> {
        let current = self.peers().await?;
        let plan = plan_sync(&current, desired);

        for public_key in &plan.remove {
            self.remove_peer(*public_key).await?;
        }
        for peer in &plan.add {
            self.add_peer(peer.public_key, peer.address).await?;
        }

        Ok(plan.report())
    }
}

/// Changes that turn one peer set into another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncPlan {
    /// Keys to remove: present but not desired.
    pub remove: Vec<PublicKey>,
    /// Peers to add: desired but absent, or present with another address.
    pub add: Vec<LivePeer>,
}

impl SyncPlan {
    pub fn report(&self) -> SyncReport {
        SyncReport {
            added: self.add.len(),
            removed: self.remove.len(),
        }
    }
}

/// Number of peers that a [`PeerBackend::sync`] added (moves included) and removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub added: usize,
    pub removed: usize,
}

impl SyncReport {
    pub fn is_empty(&self) -> bool {
        self.added == 0 && self.removed == 0
    }
}

/// Computes the changes that turn `current` into `desired`, both in any order.
pub fn plan_sync(current: &[LivePeer], desired: &[LivePeer]) -> SyncPlan {
    let current_by_key: HashMap<PublicKey, Ipv4Addr> = current
        .iter()
        .map(|peer| (peer.public_key, peer.address))
        .collect();
    let desired_keys: HashSet<PublicKey> = desired.iter().map(|peer| peer.public_key).collect();

    let mut remove: Vec<PublicKey> = current
        .iter()
        .map(|peer| peer.public_key)
        .filter(|key| !desired_keys.contains(key))
        .collect();
    remove.sort_by_key(|key| key.0);

    let mut add: Vec<LivePeer> = desired
        .iter()
        .filter(|peer| current_by_key.get(&peer.public_key) != Some(&peer.address))
        .copied()
        .collect();
    add.sort_by_key(|peer| peer.address);

    SyncPlan { remove, add }
}

#[cfg(test)]
mod tests {
    use super::*;
    use camwire_tunnel::PrivateKey;

    fn peer(last_octet: u8) -> LivePeer {
        LivePeer {
            public_key: PrivateKey::generate().public_key(),
            address: Ipv4Addr::new(10, 13, 0, last_octet),
        }
    }

    #[test]
    fn plan_sync_of_equal_sets_is_empty() {
        let peers = [peer(2), peer(3)];

        let plan = plan_sync(&peers, &[peers[1], peers[0]]);

        assert_eq!(plan, SyncPlan::default());
        assert!(plan.report().is_empty());
    }

    #[test]
    fn plan_sync_adds_removes_and_moves() {
        let kept = peer(2);
        let stale = peer(3);
        let moved = peer(4);
        let new = peer(5);
        let moved_to = LivePeer {
            address: Ipv4Addr::new(10, 13, 0, 9),
            ..moved
        };

        let plan = plan_sync(&[kept, stale, moved], &[kept, moved_to, new]);

        assert_eq!(plan.remove, [stale.public_key]);
        assert_eq!(plan.add, [new, moved_to]);
        assert_eq!(
            plan.report(),
            SyncReport {
                added: 2,
                removed: 1
            }
        );
    }

    #[test]
    fn plan_sync_to_empty_removes_everything() {
        let peers = [peer(2), peer(3)];

        let plan = plan_sync(&peers, &[]);

        assert_eq!(plan.remove.len(), 2);
        assert!(plan.add.is_empty());
    }
}
