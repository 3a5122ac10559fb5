//! The `embedded` back end: the userspace WireGuard hub as the live endpoint, and the
//! wg-quick style config file beside it.

use std::net::Ipv4Addr;

use async_trait::async_trait;

use camwire_tunnel::{Hub, PublicKey};

use super::{
    BackendError, Handshakes, HubBackend, LivePeer, PeerBackend, SyncReport, WgConfigBackend,
};
use crate::error::error_chain;

/// Applies every change to the hub that runs in this process and to the config file.
///
/// The file keeps the server's private key, which is also the hub's, and one `[Peer]`
/// per peer of the database, as with the wg-config back end. The hub is what clients
/// reach, so a removal takes the peer out of the hub first and the hub's removal cannot
/// fail. A change that fails on either side returns the error, so that an allocation
/// rolls back and a release reports `failed` and is retried by the sweeper.
#[derive(Debug)]
pub struct EmbeddedBackend {
    file: WgConfigBackend,
    hub: HubBackend,
}

impl EmbeddedBackend {
    /// Combines a config file back end without a live interface and a hub that use the
    /// same server key.
    pub fn new(file: WgConfigBackend, hub: HubBackend) -> Self {
        Self { file, hub }
    }

    pub fn hub(&self) -> &Hub {
        self.hub.hub()
    }
}

#[async_trait]
impl PeerBackend for EmbeddedBackend {
    fn name(&self) -> &'static str {
        "embedded"
    }

    /// Adds the peer to the hub, then to the file. When the file fails, the peer is
    /// taken out of the hub again, which cannot fail.
    ///
    /// NOTE: a key that the hub had moved from another address is then absent from the
    /// hub until the next resynchronization, while the file keeps its old address.
    async fn add_peer(&self, public_key: PublicKey, address: Ipv4Addr) -> Result<(), BackendError> {
        self.hub.add_peer(public_key, address).await?;

        let Err(error) = self.file.add_peer(public_key, address).await else {
            return Ok(());
        };

        if let Err(undo) = self.hub.remove_peer(public_key).await {
            tracing::error!(
                key_fingerprint = %public_key.fingerprint(),
                error = %error_chain(&undo),
                "failed to take a peer out of the hub after the config file rejected it; the next resynchronization removes it"
            );
        }
        Err(error)
    }

    async fn remove_peer(&self, public_key: PublicKey) -> Result<(), BackendError> {
        self.hub.remove_peer(public_key).await?;
        self.file.remove_peer(public_key).await
    }

    /// Lists the peers of the config file, which mirror the database. The hub has the
    /// same peers except those outside its network.
    async fn peers(&self) -> Result<Vec<LivePeer>, BackendError> {
        self.file.peers().await
    }

    async fn last_handshakes(&self) -> Result<Option<Handshakes>, BackendError> {
        self.hub.last_handshakes().await
    }

    /// Synchronizes the hub, then the file, even when the hub failed. Each count of the
    /// report is the larger of the hub's and the file's.
    async fn sync(&self, desired: &[LivePeer]) -> Result<SyncReport, BackendError> {
        let hub = self.hub.sync(desired).await;
        let file = self.file.sync(desired).await?;
        let hub = hub?;

        Ok(SyncReport {
            added: hub.added.max(file.added),
            removed: hub.removed.max(file.removed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::WgInterface;
    use crate::wg_conf;
    use camwire_tunnel::{HubConfig, PrivateKey};
    use std::path::Path;

    async fn embedded(path: &Path) -> EmbeddedBackend {
        let private_key = PrivateKey::generate();
        let hub = Hub::bind(HubConfig::new(
            "127.0.0.1:0".parse().expect("socket address"),
            private_key.clone(),
            Ipv4Addr::new(10, 13, 0, 1),
            "10.13.0.0/24".parse().expect("CIDR"),
            Vec::new(),
        ))
        .await
        .expect("hub binds on loopback");
        let interface = WgInterface {
            private_key,
            listen_port: hub.local_addr().port(),
            address: "10.13.0.1/24".parse().expect("CIDR"),
        };
        let file = WgConfigBackend::open(path.to_owned(), interface, None, [])
            .await
            .expect("opens");

        EmbeddedBackend::new(file, HubBackend::new(hub))
    }

    fn file_keys(path: &Path) -> Vec<PublicKey> {
        let text = std::fs::read_to_string(path).expect("readable");
        let file = wg_conf::parse(&text).expect("parses");
        file.peers.iter().map(|peer| peer.public_key).collect()
    }

    fn hub_keys(backend: &EmbeddedBackend) -> Vec<PublicKey> {
        backend
            .hub()
            .peers()
            .iter()
            .map(|peer| peer.public_key)
            .collect()
    }

    #[tokio::test]
    async fn add_and_remove_reach_hub_and_file() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("wg0.conf");
        let backend = embedded(&path).await;
        let key = PrivateKey::generate().public_key();

        backend
            .add_peer(key, Ipv4Addr::new(10, 13, 0, 2))
            .await
            .expect("adds");
        let added = (hub_keys(&backend), file_keys(&path));
        backend.remove_peer(key).await.expect("removes");

        assert_eq!(added, (vec![key], vec![key]));
        assert!(hub_keys(&backend).is_empty());
        assert!(file_keys(&path).is_empty());
    }

    #[tokio::test]
    async fn failed_write_undoes_hub_add() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("wg0.conf");
        let backend = embedded(&path).await;
        std::fs::create_dir(dir.path().join(".wg0.conf.tmp")).expect("blocking directory");

        let result = backend
            .add_peer(
                PrivateKey::generate().public_key(),
                Ipv4Addr::new(10, 13, 0, 2),
            )
            .await;

        assert!(
            matches!(result, Err(BackendError::WriteConfig { .. })),
            "{result:?}"
        );
        assert!(hub_keys(&backend).is_empty());
        assert!(file_keys(&path).is_empty());
    }

    #[tokio::test]
    async fn failed_write_still_removes_from_hub() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("wg0.conf");
        let backend = embedded(&path).await;
        let key = PrivateKey::generate().public_key();
        backend
            .add_peer(key, Ipv4Addr::new(10, 13, 0, 2))
            .await
            .expect("adds");
        std::fs::create_dir(dir.path().join(".wg0.conf.tmp")).expect("blocking directory");

        let result = backend.remove_peer(key).await;

        assert!(result.is_err());
        assert!(hub_keys(&backend).is_empty());
        assert_eq!(file_keys(&path), [key]);
    }

    #[tokio::test]
    async fn sync_reaches_hub_and_file() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("wg0.conf");
        let backend = embedded(&path).await;
        let stale = PrivateKey::generate().public_key();
        let new = PrivateKey::generate().public_key();
        backend
            .add_peer(stale, Ipv4Addr::new(10, 13, 0, 2))
            .await
            .expect("adds");
        let desired = [LivePeer {
            public_key: new,
            address: Ipv4Addr::new(10, 13, 0, 2),
        }];

        let report = backend.sync(&desired).await.expect("syncs");

        assert_eq!(
            report,
            SyncReport {
                added: 1,
                removed: 1
            }
        );
        assert_eq!(hub_keys(&backend), [new]);
        assert_eq!(file_keys(&path), [new]);
    }
}
