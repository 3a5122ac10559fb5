//! The live half of the embedded back end: peers applied to a [`camwire_tunnel::Hub`]
//! that runs in this process.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use camwire_tunnel::core::AddPeerError;
use camwire_tunnel::{Hub, HubError, PublicKey};

use super::{BackendError, Handshakes, LivePeer, PeerBackend, SyncReport, plan_sync};

/// Applies peers to a userspace WireGuard hub. Removing a peer ends its session and its
/// TCP connections through the hub at once.
///
/// The hub takes only addresses of its own network. A peer of the database outside it
/// (one that kept its address after the pool changed) cannot reach the hub, so
/// [`sync`](PeerBackend::sync) skips it with one warning per key instead of failing.
#[derive(Debug)]
pub struct HubBackend {
    hub: Hub,
    /// Serializes changes, so that the check for a stale key and the addition that
    /// follows it see the same peers.
    changes: Mutex<()>,
    /// Keys already reported as outside the hub's network, so that each periodic
    /// resynchronization does not warn again.
    skipped: Mutex<HashSet<PublicKey>>,
}

impl HubBackend {
    pub fn new(hub: Hub) -> Self {
        Self {
            hub,
            changes: Mutex::new(()),
            skipped: Mutex::new(HashSet::new()),
        }
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    fn lock_changes(&self) -> MutexGuard<'_, ()> {
        // The guard protects no data, so a panic elsewhere leaves nothing inconsistent.
        self.changes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds `public_key` on `address`, removing a stale key on that address and the
    /// key's own entry on another address first. Call with the change lock held.
    fn add_locked(&self, public_key: PublicKey, address: Ipv4Addr) -> Result<(), HubError> {
        // The common case, a new key on a free address, needs no listing of the peers.
        let conflict = match self.hub.add_peer(public_key, address) {
            Ok(()) => return Ok(()),
            Err(HubError::Peer(error @ AddPeerError::KeyInUse(_)))
            | Err(HubError::Peer(error @ AddPeerError::AddressInUse(_))) => error,
            Err(error) => return Err(error),
        };

        let peers = self.hub.peers();
        if peers
            .iter()
            .any(|peer| peer.public_key == public_key && peer.address == address)
        {
            return Ok(());
        }

        for peer in &peers {
            if peer.public_key == public_key || peer.address == address {
                self.hub.remove_peer(&peer.public_key);
            }
        }
        tracing::debug!(
            key_fingerprint = %public_key.fingerprint(),
            %address,
            %conflict,
            "replaced a stale hub peer"
        );

        self.hub.add_peer(public_key, address)
    }

    /// Reports once per key that the hub cannot take its address.
    fn warn_skipped(&self, peer: &LivePeer, error: &HubError) {
        let first = self
            .skipped
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(peer.public_key);
        if first {
            tracing::warn!(
                key_fingerprint = %peer.public_key.fingerprint(),
                address = %peer.address,
                %error,
                "the WireGuard hub cannot take this peer; it keeps its address in the database until sign-out or lease expiry"
            );
        }
    }
}

/// Tells whether the hub rejects `address` for good, whatever peers it has.
fn is_unusable_address(error: &HubError) -> bool {
    matches!(
        error,
        HubError::Peer(AddPeerError::OutsideNetwork { .. } | AddPeerError::HubAddress(_))
    )
}

#[async_trait]
impl PeerBackend for HubBackend {
    fn name(&self) -> &'static str {
        "hub"
    }

    async fn add_peer(&self, public_key: PublicKey, address: Ipv4Addr) -> Result<(), BackendError> {
        let _changes = self.lock_changes();

        self.add_locked(public_key, address)
            .map_err(|source| BackendError::Hub { address, source })
    }

    async fn remove_peer(&self, public_key: PublicKey) -> Result<(), BackendError> {
        let _changes = self.lock_changes();

        self.hub.remove_peer(&public_key);
        Ok(())
    }

    async fn peers(&self) -> Result<Vec<LivePeer>, BackendError> {
        let peers = self
            .hub
            .peers()
            .into_iter()
            .map(|peer| LivePeer {
                public_key: peer.public_key,
                address: peer.address,
            })
            .collect();

        Ok(peers)
    }

    async fn last_handshakes(&self) -> Result<Option<Handshakes>, BackendError> {
        let handshakes = self
            .hub
            .peers()
            .into_iter()
            .filter_map(|peer| Some((peer.public_key, peer.last_handshake?)))
            .collect();

        Ok(Some(handshakes))
    }

    async fn sync(&self, desired: &[LivePeer]) -> Result<SyncReport, BackendError> {
        let _changes = self.lock_changes();

        let current: Vec<LivePeer> = self
            .hub
            .peers()
            .into_iter()
            .map(|peer| LivePeer {
                public_key: peer.public_key,
                address: peer.address,
            })
            .collect();
        let plan = plan_sync(&current, desired);

        let mut report = SyncReport::default();
        for public_key in &plan.remove {
            if self.hub.remove_peer(public_key) {
                report.removed += 1;
            }
        }

        for peer in &plan.add {
            match self.add_locked(peer.public_key, peer.address) {
                Ok(()) => report.added += 1,
                Err(error) if is_unusable_address(&error) => self.warn_skipped(peer, &error),
                Err(source) => {
                    return Err(BackendError::Hub {
                        address: peer.address,
                        source,
                    });
                }
            }
        }

        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use camwire_tunnel::{HubConfig, PrivateKey};

    async fn backend() -> HubBackend {
        let config = HubConfig::new(
            "127.0.0.1:0".parse().expect("socket address"),
            PrivateKey::generate(),
            Ipv4Addr::new(10, 13, 0, 1),
            "10.13.0.0/24".parse().expect("CIDR"),
            Vec::new(),
        );
        HubBackend::new(Hub::bind(config).await.expect("hub binds on loopback"))
    }

    fn key() -> PublicKey {
        PrivateKey::generate().public_key()
    }

    fn live(public_key: PublicKey, last_octet: u8) -> LivePeer {
        LivePeer {
            public_key,
            address: Ipv4Addr::new(10, 13, 0, last_octet),
        }
    }

    #[tokio::test]
    async fn add_on_held_address_replaces_the_stale_key() {
        let backend = backend().await;
        let stale = key();
        let new = key();

        backend
            .add_peer(stale, Ipv4Addr::new(10, 13, 0, 2))
            .await
            .expect("adds");
        backend
            .add_peer(new, Ipv4Addr::new(10, 13, 0, 2))
            .await
            .expect("replaces");

        assert_eq!(backend.peers().await.expect("lists"), [live(new, 2)]);
    }

    #[tokio::test]
    async fn add_moves_a_present_key_and_repeats_succeed() {
        let backend = backend().await;
        let moved = key();
        let other = key();

        backend
            .add_peer(moved, Ipv4Addr::new(10, 13, 0, 2))
            .await
            .expect("adds");
        backend
            .add_peer(moved, Ipv4Addr::new(10, 13, 0, 3))
            .await
            .expect("moves");
        backend
            .add_peer(moved, Ipv4Addr::new(10, 13, 0, 3))
            .await
            .expect("repeats");
        backend
            .add_peer(other, Ipv4Addr::new(10, 13, 0, 2))
            .await
            .expect("takes the freed address");

        assert_eq!(
            backend.peers().await.expect("lists"),
            [live(other, 2), live(moved, 3)]
        );
    }

    #[tokio::test]
    async fn remove_of_absent_key_succeeds() {
        let backend = backend().await;
        let present = key();
        backend
            .add_peer(present, Ipv4Addr::new(10, 13, 0, 2))
            .await
            .expect("adds");

        backend.remove_peer(key()).await.expect("absent key");
        backend.remove_peer(present).await.expect("present key");
        backend.remove_peer(present).await.expect("again");

        assert!(backend.peers().await.expect("lists").is_empty());
    }

    #[tokio::test]
    async fn add_outside_the_network_fails_naming_the_address() {
        let backend = backend().await;

        let error = backend
            .add_peer(key(), Ipv4Addr::new(10, 14, 0, 2))
            .await
            .expect_err("outside 10.13.0.0/24");

        assert!(error.to_string().contains("10.14.0.2"), "{error}");
    }

    #[tokio::test]
    async fn sync_skips_peers_outside_the_network() {
        let backend = backend().await;
        let kept = key();
        let stale = key();
        let new = key();
        let outside = LivePeer {
            public_key: key(),
            address: Ipv4Addr::new(10, 14, 0, 2),
        };
        backend
            .add_peer(kept, Ipv4Addr::new(10, 13, 0, 2))
            .await
            .expect("adds");
        backend
            .add_peer(stale, Ipv4Addr::new(10, 13, 0, 3))
            .await
            .expect("adds");

        let report = backend
            .sync(&[live(kept, 2), live(new, 3), outside])
            .await
            .expect("syncs");

        assert_eq!(
            report,
            SyncReport {
                added: 1,
                removed: 1
            }
        );
        assert_eq!(
            backend.peers().await.expect("lists"),
            [live(kept, 2), live(new, 3)]
        );
    }

    #[tokio::test]
    async fn peers_without_handshake_have_no_entry() {
        let backend = backend().await;
        backend
            .add_peer(key(), Ipv4Addr::new(10, 13, 0, 2))
            .await
            .expect("adds");

        let handshakes = backend.last_handshakes().await.expect("reads");

        assert_eq!(handshakes.map(|map| map.len()), Some(0));
    }
}
