//! The `wg-config` back end: a wg-quick style config file, rewritten on every change.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use ipnet::Ipv4Net;
use tokio::sync::Mutex;

use camwire_tunnel::{PrivateKey, PublicKey};

use super::{
    BackendError, Handshakes, LivePeer, PeerBackend, SyncReport, WgTool, WgToolError, plan_sync,
};
use crate::atomic_file::write_atomically;
use crate::wg_conf::{self, InterfaceSection, PeerSection, WgConfigFile};

/// Mode of the config file, because it contains the server's private key.
const CONFIG_FILE_MODE: u32 = 0o600;

/// The `[Interface]` settings of the server.
#[derive(Debug, Clone)]
pub struct WgInterface {
    pub private_key: PrivateKey,
    pub listen_port: u16,
    /// The server's address with the pool's prefix, such as `10.13.0.1/16`.
    pub address: Ipv4Net,
}

/// Keeps a wg-quick config file with one `[Peer]` per allocated address and, when it has
/// a [`WgTool`], applies every change to that live interface.
///
/// The file is rendered in full from the back end's peer list and replaced atomically
/// on every change, so it never contains a half-written section. On the live interface,
/// an addition runs `wg syncconf` with the file stripped of the wg-quick-only `Address`
/// line, and a removal runs `wg set INTERFACE peer KEY remove`, which leaves the other
/// peers' sessions alone. Last handshakes come from `wg show INTERFACE latest-handshakes`.
///
/// NOTE: every change renders and writes the whole file, and an addition on a live
/// interface makes `wg` read it whole, so a change costs time in proportion to the
/// number of peers.
#[derive(Debug)]
pub struct WgConfigBackend {
    path: PathBuf,
    interface: WgInterface,
    wg: Option<WgTool>,
    /// Address of each peer, by public key; the desired contents of the file.
    peers: Mutex<HashMap<PublicKey, Ipv4Addr>>,
}

impl WgConfigBackend {
    /// Reads the server's private key from an existing config file, or returns `None`
    /// when there is no file yet.
    pub fn read_private_key(path: &Path) -> Result<Option<PrivateKey>, BackendError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => zeroize::Zeroizing::new(text),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(BackendError::ReadConfig {
                    path: path.to_owned(),
                    source,
                });
            }
        };

        let parsed = wg_conf::parse(&text).map_err(|source| BackendError::ParseConfig {
            path: path.to_owned(),
            source,
        })?;

        Ok(Some(parsed.interface.private_key))
    }

    /// Creates the back end with `peers` and writes the file at once, replacing its old
    /// contents. With `wg`, the live interface is then synchronized with the file.
    pub async fn open(
        path: PathBuf,
        interface: WgInterface,
        wg: Option<WgTool>,
        peers: impl IntoIterator<Item = (PublicKey, Ipv4Addr)>,
    ) -> Result<Self, BackendError> {
        let backend = Self {
            path,
            interface,
            wg,
            peers: Mutex::new(peers.into_iter().collect()),
        };

        let peers = backend.peers.lock().await;
        backend.write(&peers).await?;
        backend.apply_to_interface(&peers).await?;
        drop(peers);

        Ok(backend)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns the live interface's tool, when the back end has one.
    pub fn wg_tool(&self) -> Option<&WgTool> {
        self.wg.as_ref()
    }

    /// Renders the file from `peers` and replaces the file with it.
    async fn write(&self, peers: &HashMap<PublicKey, Ipv4Addr>) -> Result<(), BackendError> {
        let config = self.file_contents(peers);
        let path = self.path.clone();

        tokio::task::spawn_blocking(move || {
            let text = wg_conf::render(&config);
            write_atomically(&path, text.as_bytes(), CONFIG_FILE_MODE)
                .map_err(|source| BackendError::WriteConfig { path, source })
        })
        .await?
    }

    /// Runs `wg syncconf` with `peers`, when the back end has a live interface.
    ///
    /// The stripped config goes to a temporary file of mode 0600 beside the config file,
    /// because it contains the private key. The file is deleted when the call ends.
    async fn apply_to_interface(
        &self,
        peers: &HashMap<PublicKey, Ipv4Addr>,
    ) -> Result<(), BackendError> {
        let Some(wg) = &self.wg else {
            return Ok(());
        };

        let mut config = self.file_contents(peers);
        // `Address` is a wg-quick setting that `wg` rejects, so `wg-quick strip` drops it too.
        config.interface.address = None;
        let directory = match self.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };

        let stripped = tokio::task::spawn_blocking(move || {
            use std::io::Write;

            let text = wg_conf::render(&config);
            let mut file = tempfile::Builder::new()
                .prefix(".camwire-syncconf-")
                .tempfile_in(directory)?;
            file.write_all(text.as_bytes())?;
            file.as_file().sync_all()?;
            Ok::<_, std::io::Error>(file.into_temp_path())
        })
        .await?
        .map_err(WgToolError::TemporaryFile)?;

        wg.run(&wg.syncconf_args(&stripped)).await?;
        drop(stripped);
        Ok(())
    }

    fn file_contents(&self, peers: &HashMap<PublicKey, Ipv4Addr>) -> WgConfigFile {
        let mut sections: Vec<(Ipv4Addr, PeerSection)> = peers
            .iter()
            .map(|(public_key, address)| {
                let section = PeerSection {
                    public_key: *public_key,
                    allowed_ips: vec![Ipv4Net::from(*address)],
                };
                (*address, section)
            })
            .collect();
        sections.sort_by_key(|(address, _)| *address);

        WgConfigFile {
            interface: InterfaceSection {
                private_key: self.interface.private_key.clone(),
                listen_port: Some(self.interface.listen_port),
                address: Some(self.interface.address),
            },
            peers: sections.into_iter().map(|(_, section)| section).collect(),
        }
    }
}

#[async_trait]
impl PeerBackend for WgConfigBackend {
    fn name(&self) -> &'static str {
        "wg-config"
    }

    async fn add_peer(&self, public_key: PublicKey, address: Ipv4Addr) -> Result<(), BackendError> {
        let mut peers = self.peers.lock().await;
        let before = peers.clone();

        peers.retain(|key, held| *key == public_key || *held != address);
        peers.insert(public_key, address);

        let mut result = self.write(&peers).await;
        if result.is_ok() {
            result = self.apply_to_interface(&peers).await;
        }

        // The peer was not added, so neither the list nor the file may keep it.
        if result.is_err() {
            *peers = before;
            if let Err(error) = self.write(&peers).await {
                tracing::warn!(
                    path = %self.path.display(),
                    error = %crate::error::error_chain(&error),
                    "failed to restore the WireGuard config after a failed addition; the next change rewrites it"
                );
            }
        }

        result
    }

    async fn remove_peer(&self, public_key: PublicKey) -> Result<(), BackendError> {
        let mut peers = self.peers.lock().await;

        // The peer stays out of the list even when a step fails: its address is free
        // in the database, so the next successful rewrite must drop it.
        peers.remove(&public_key);

        let written = self.write(&peers).await;

        // The live removal runs even when the file write failed, because it is what
        // ends the client's tunnel.
        let removed_live = match &self.wg {
            Some(wg) => wg.run(&wg.remove_peer_args(&public_key)).await.map(drop),
            None => Ok(()),
        };

        written?;
        removed_live?;
        Ok(())
    }

    async fn peers(&self) -> Result<Vec<LivePeer>, BackendError> {
        let peers = self.peers.lock().await;

        let mut live: Vec<LivePeer> = peers
            .iter()
            .map(|(public_key, address)| LivePeer {
                public_key: *public_key,
                address: *address,
            })
            .collect();
        live.sort_by_key(|peer| peer.address);

        Ok(live)
    }

    async fn last_handshakes(&self) -> Result<Option<Handshakes>, BackendError> {
        let Some(wg) = &self.wg else {
            return Ok(None);
        };

        Ok(Some(wg.latest_handshakes().await?))
    }

    async fn sync(&self, desired: &[LivePeer]) -> Result<SyncReport, BackendError> {
        let mut peers = self.peers.lock().await;

        let current: Vec<LivePeer> = peers
            .iter()
            .map(|(public_key, address)| LivePeer {
                public_key: *public_key,
                address: *address,
            })
            .collect();
        let report = plan_sync(&current, desired).report();

        // The live interface is synchronized even when the list did not change, because
        // another program may have changed the interface.
        *peers = desired
            .iter()
            .map(|peer| (peer.public_key, peer.address))
            .collect();
        if !report.is_empty() {
            self.write(&peers).await?;
        }
        self.apply_to_interface(&peers).await?;

        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interface() -> WgInterface {
        WgInterface {
            private_key: PrivateKey::generate(),
            listen_port: 51820,
            address: "10.13.0.1/16".parse().expect("valid CIDR"),
        }
    }

    fn read(path: &Path) -> WgConfigFile {
        wg_conf::parse(&std::fs::read_to_string(path).expect("readable")).expect("parses")
    }

    #[tokio::test]
    async fn open_writes_peers_sorted_by_address() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("wg0.conf");
        let high = PrivateKey::generate().public_key();
        let low = PrivateKey::generate().public_key();

        let peers = [
            (high, Ipv4Addr::new(10, 13, 0, 9)),
            (low, Ipv4Addr::new(10, 13, 0, 2)),
        ];
        WgConfigBackend::open(path.clone(), interface(), None, peers)
            .await
            .expect("opens");

        let file = read(&path);
        assert_eq!(file.peers.len(), 2);
        assert_eq!(file.peers[0].public_key, low);
        assert_eq!(
            file.peers[0].allowed_ips,
            ["10.13.0.2/32".parse::<Ipv4Net>().expect("CIDR")]
        );
        assert_eq!(file.peers[1].public_key, high);
        assert_eq!(file.interface.listen_port, Some(51820));
    }

    #[tokio::test]
    async fn add_and_remove_rewrite_the_file() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("wg0.conf");
        let backend = WgConfigBackend::open(path.clone(), interface(), None, [])
            .await
            .expect("opens");
        let key = PrivateKey::generate().public_key();

        backend
            .add_peer(key, Ipv4Addr::new(10, 13, 0, 2))
            .await
            .expect("adds");
        let after_add = read(&path);
        backend.remove_peer(key).await.expect("removes");
        let after_remove = read(&path);

        assert_eq!(after_add.peers.len(), 1);
        assert_eq!(after_add.peers[0].public_key, key);
        assert!(after_remove.peers.is_empty());
        assert!(backend.peers().await.expect("lists").is_empty());
    }

    #[tokio::test]
    async fn failed_add_leaves_file_and_list_unchanged() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("wg0.conf");
        let backend = WgConfigBackend::open(path.clone(), interface(), None, [])
            .await
            .expect("opens");
        let before = std::fs::read_to_string(&path).expect("readable");
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
        assert_eq!(std::fs::read_to_string(&path).expect("readable"), before);
        assert!(backend.peers().await.expect("lists").is_empty());
    }

    #[tokio::test]
    async fn failed_remove_is_completed_by_next_write() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("wg0.conf");
        let backend = WgConfigBackend::open(path.clone(), interface(), None, [])
            .await
            .expect("opens");
        let removed_key = PrivateKey::generate().public_key();
        backend
            .add_peer(removed_key, Ipv4Addr::new(10, 13, 0, 2))
            .await
            .expect("adds");
        let blocker = dir.path().join(".wg0.conf.tmp");
        std::fs::create_dir(&blocker).expect("blocking directory");

        let failed = backend.remove_peer(removed_key).await;
        let still_in_file = read(&path).peers.len();
        std::fs::remove_dir(&blocker).expect("unblock");
        let retried = backend.remove_peer(removed_key).await;

        assert!(failed.is_err());
        assert_eq!(still_in_file, 1);
        assert!(retried.is_ok());
        assert!(read(&path).peers.is_empty());
    }

    #[tokio::test]
    async fn private_key_is_read_back() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("wg0.conf");
        let interface = interface();
        let expected = interface.private_key.public_key();

        let missing = WgConfigBackend::read_private_key(&path).expect("reads");
        WgConfigBackend::open(path.clone(), interface, None, [])
            .await
            .expect("opens");
        let found = WgConfigBackend::read_private_key(&path).expect("reads");

        assert!(missing.is_none());
        assert_eq!(found.map(|key| key.public_key()), Some(expected));
    }

    #[tokio::test]
    async fn unparsable_file_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("wg0.conf");
        std::fs::write(&path, "[Interface]\nnot a key line\n").expect("seed file");

        let error = WgConfigBackend::read_private_key(&path).expect_err("does not parse");

        assert!(error.to_string().contains("wg0.conf"), "{error}");
        assert!(error.to_string().contains("line 2"), "{error}");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn file_mode_is_0600() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("wg0.conf");

        WgConfigBackend::open(path.clone(), interface(), None, [])
            .await
            .expect("opens");

        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
