//! A back end that keeps peers in memory only.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use async_trait::async_trait;

use camwire_tunnel::PublicKey;

use super::{BackendError, Handshakes, LivePeer, PeerBackend};

/// A back end with no WireGuard behind it: it records the peers in memory, and the
/// caller sets their handshake times.
///
/// It exists for tests and benchmarks: tests inject handshakes with
/// [`set_last_handshake`](Self::set_last_handshake) to drive the lease sweeper, and the
/// allocation benchmark uses it to measure the database without a config file's cost.
/// No client can connect through it.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    peers: HashMap<PublicKey, Ipv4Addr>,
    /// The inverse of `peers`, so that an addition finds a stale key on its address at once.
    keys_by_address: HashMap<Ipv4Addr, PublicKey>,
    handshakes: Handshakes,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a completed handshake of `public_key` at `time`, as a live endpoint would.
    pub fn set_last_handshake(&self, public_key: PublicKey, time: SystemTime) {
        self.lock().handshakes.insert(public_key, time);
    }

    /// Tells whether the back end has a peer with `public_key`.
    pub fn contains(&self, public_key: &PublicKey) -> bool {
        self.lock().peers.contains_key(public_key)
    }

    fn lock(&self) -> MutexGuard<'_, MemoryState> {
        // The maps stay consistent after a panic in another thread: every change is
        // one insert or remove.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl PeerBackend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn add_peer(&self, public_key: PublicKey, address: Ipv4Addr) -> Result<(), BackendError> {
        let mut state = self.lock();

        if let Some(stale) = state.keys_by_address.insert(address, public_key)
            && stale != public_key
        {
            state.peers.remove(&stale);
        }
        if let Some(previous) = state.peers.insert(public_key, address)
            && previous != address
        {
            state.keys_by_address.remove(&previous);
        }

        Ok(())
    }

    async fn remove_peer(&self, public_key: PublicKey) -> Result<(), BackendError> {
        let mut state = self.lock();

        if let Some(address) = state.peers.remove(&public_key) {
            state.keys_by_address.remove(&address);
        }
        state.handshakes.remove(&public_key);

        Ok(())
    }

    async fn peers(&self) -> Result<Vec<LivePeer>, BackendError> {
        let state = self.lock();

        let mut peers: Vec<LivePeer> = state
            .peers
            .iter()
            .map(|(public_key, address)| LivePeer {
                public_key: *public_key,
                address: *address,
            })
            .collect();
        peers.sort_by_key(|peer| peer.address);

        Ok(peers)
    }

    async fn last_handshakes(&self) -> Result<Option<Handshakes>, BackendError> {
        let state = self.lock();

        let handshakes = state
            .handshakes
            .iter()
            .filter(|(key, _)| state.peers.contains_key(key))
            .map(|(key, time)| (*key, *time))
            .collect();

        Ok(Some(handshakes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use camwire_tunnel::PrivateKey;

    #[tokio::test]
    async fn add_on_held_address_replaces_the_stale_key() {
        let backend = MemoryBackend::new();
        let stale = PrivateKey::generate().public_key();
        let new = PrivateKey::generate().public_key();
        let address = Ipv4Addr::new(10, 13, 0, 2);

        backend.add_peer(stale, address).await.expect("adds");
        backend.add_peer(new, address).await.expect("adds");

        let peers = backend.peers().await.expect("lists");
        assert_eq!(
            peers,
            [LivePeer {
                public_key: new,
                address
            }]
        );
    }

    #[tokio::test]
    async fn moved_key_frees_its_old_address() {
        let backend = MemoryBackend::new();
        let key = PrivateKey::generate().public_key();
        let other = PrivateKey::generate().public_key();
        let old = Ipv4Addr::new(10, 13, 0, 2);

        backend.add_peer(key, old).await.expect("adds");
        backend
            .add_peer(key, Ipv4Addr::new(10, 13, 0, 3))
            .await
            .expect("moves");
        backend.add_peer(other, old).await.expect("adds");

        let peers = backend.peers().await.expect("lists");
        assert_eq!(peers.len(), 2, "{peers:?}");
        assert!(backend.contains(&key));
        assert!(backend.contains(&other));
    }

    #[tokio::test]
    async fn default_sync_reaches_the_desired_set() {
        let backend = MemoryBackend::new();
        let kept = PrivateKey::generate().public_key();
        let stale = PrivateKey::generate().public_key();
        let new = PrivateKey::generate().public_key();
        backend
            .add_peer(kept, Ipv4Addr::new(10, 13, 0, 2))
            .await
            .expect("adds");
        backend
            .add_peer(stale, Ipv4Addr::new(10, 13, 0, 3))
            .await
            .expect("adds");
        let desired = [
            LivePeer {
                public_key: kept,
                address: Ipv4Addr::new(10, 13, 0, 2),
            },
            LivePeer {
                public_key: new,
                address: Ipv4Addr::new(10, 13, 0, 3),
            },
        ];

        let report = backend.sync(&desired).await.expect("syncs");

        assert_eq!(
            report,
            super::super::SyncReport {
                added: 1,
                removed: 1
            }
        );
        assert_eq!(backend.peers().await.expect("lists"), desired);
    }

    #[tokio::test]
    async fn handshakes_of_removed_peers_are_dropped() {
        let backend = MemoryBackend::new();
        let key = PrivateKey::generate().public_key();
        backend
            .add_peer(key, Ipv4Addr::new(10, 13, 0, 2))
            .await
            .expect("adds");
        backend.set_last_handshake(key, SystemTime::now());

        backend.remove_peer(key).await.expect("removes");

        let handshakes = backend.last_handshakes().await.expect("reads");
        assert_eq!(handshakes.map(|map| map.len()), Some(0));
    }
}
