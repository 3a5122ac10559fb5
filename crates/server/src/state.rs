//! The server's shared state, and the start-up steps that build it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use camwire_api::Password;
use camwire_tunnel::{Forward, Hub, HubConfig, HubError, PrivateKey, PublicKey};

use crate::auth::{PasswordError, hash_password};
use crate::backend::{
    BackendError, EmbeddedBackend, HubBackend, LivePeer, PeerBackend, WgConfigBackend, WgInterface,
    WgTool,
};
use crate::config::{
    BackendChoice, ConfigError, DEFAULT_WG_ENDPOINT, DEFAULT_WG_LISTEN, HTTP_FORWARD_PORT,
    ServerConfig, local_target,
};
use crate::db::{Db, DbError, DbKind, PoolChange, reconcile_pool};
use crate::error::error_chain;
use crate::metrics::Metrics;
use crate::peers::PeerContext;
use crate::pool::AddressPool;
use crate::rate_limit::LoginLimiter;
use crate::replica::{ReplicaSync, SyncSettings};
use crate::users::{AddUserError, DemoUser, ensure_demo_users};

/// Errors of starting a server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("failed to prepare the address pool in the database: {0}")]
    Pool(#[source] sqlx::Error),
    #[error("failed to read the peers from the database: {0}")]
    LoadPeers(#[source] sqlx::Error),
    #[error("failed to delete the completed pending removals from the database: {0}")]
    ClearPendingRemovals(#[source] sqlx::Error),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("{0}; pass --wg-listen with a free address, such as 127.0.0.1:0 for any free port")]
    HubBind(#[source] HubError),
    #[error("failed to start the WireGuard hub: {0}")]
    Hub(#[source] HubError),
    #[error("failed to create the demo users: {0}")]
    Demo(#[from] AddUserError),
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error(
        "failed to listen on {addr}: {source}; pass --listen with a free address, such as 127.0.0.1:0 for any free port"
    )]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// State shared by every request handler. Cloning is cheap.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    db: Db,
    backend: Arc<dyn PeerBackend>,
    /// The embedded back end's hub; `None` with the other back ends.
    hub: Option<Hub>,
    pool: AddressPool,
    server_public_key: PublicKey,
    wg_endpoint: String,
    session_ttl: Duration,
    lease_time: Duration,
    request_timeout: Duration,
    limiter: Mutex<LoginLimiter>,
    metrics: Metrics,
    replica: Arc<ReplicaSync>,
    /// Hash of a random password, verified for unknown user names so that they cost the
    /// same Argon2 work as a wrong password.
    dummy_password_hash: String,
}

impl AppState {
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    pub fn backend(&self) -> &Arc<dyn PeerBackend> {
        &self.inner.backend
    }

    pub fn pool(&self) -> &AddressPool {
        &self.inner.pool
    }

    /// Returns the WireGuard hub of the embedded back end, or `None` with the others.
    pub fn hub(&self) -> Option<&Hub> {
        self.inner.hub.as_ref()
    }

    pub fn server_public_key(&self) -> PublicKey {
        self.inner.server_public_key
    }

    pub fn wg_endpoint(&self) -> &str {
        &self.inner.wg_endpoint
    }

    pub fn session_ttl(&self) -> Duration {
        self.inner.session_ttl
    }

    pub fn lease_time(&self) -> Duration {
        self.inner.lease_time
    }

    pub fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn replica(&self) -> &Arc<ReplicaSync> {
        &self.inner.replica
    }

    /// Returns what a peer change of a request touches.
    pub fn peer_context(&self) -> PeerContext<'_> {
        PeerContext {
            db: &self.inner.db,
            pool: &self.inner.pool,
            backend: Some(self.inner.backend.as_ref()),
            replica: &self.inner.replica,
            metrics: &self.inner.metrics,
        }
    }

    pub fn dummy_password_hash(&self) -> &str {
        &self.inner.dummy_password_hash
    }

    /// Locks the sign-in rate limiter. A poisoned lock is taken over, since the limiter's
    /// counts stay consistent after any panic.
    pub fn limiter(&self) -> MutexGuard<'_, LoginLimiter> {
        self.inner
            .limiter
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A prepared server: database migrated, pool reconciled, back end synchronized.
pub struct App {
    pub state: AppState,
    /// The demo users, with the passwords of those created on this start; empty without
    /// `--demo`.
    pub demo_users: Vec<DemoUser>,
    background: BackgroundSettings,
}

/// Settings of the tasks that [`App::spawn_background_tasks`] starts.
#[derive(Debug, Clone)]
struct BackgroundSettings {
    sweep_interval: Duration,
    sync: SyncSettings,
}

/// The sweeper and the replica synchronization of a server; aborted on drop.
#[derive(Debug)]
pub struct BackgroundTasks {
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        for handle in &self.handles {
            handle.abort();
        }
    }
}

impl App {
    /// Runs every start-up step except binding the HTTP listener.
    ///
    /// With the embedded back end, the hub forwards port [`HTTP_FORWARD_PORT`] of the
    /// server's VPN address to `config.listen`, so that address must be where the HTTP
    /// listener is bound: [`crate::start`] passes the bound address. With port 0 in
    /// `config.listen` that forward is left out.
    pub async fn open(config: &ServerConfig) -> Result<Self, StartError> {
        let valid = config.validate()?;
        let pool = valid.pool;
        warn_if_public(&pool);

        let db = Db::connect(&config.database_url).await?;
        db.check_writable().await?;
        log_database(&db, &config.database_url);

        let change = reconcile_pool(&db, &pool).await.map_err(StartError::Pool)?;
        log_pool_change(&pool, &change);

        let private_key = load_or_generate_server_key(&config.wg_config_path)?;
        let server_public_key = private_key.public_key();
        let replica = Arc::new(ReplicaSync::new());
        let default_port = valid.endpoint_port.unwrap_or(DEFAULT_WG_LISTEN.port());

        let (backend, hub, wg_endpoint): (Arc<dyn PeerBackend>, Option<Hub>, String) =
            match &config.backend {
                BackendChoice::Embedded => {
                    let hub = bind_hub(config, &pool, private_key.clone()).await?;
                    let endpoint = match &config.wg_endpoint {
                        Some(endpoint) => endpoint.clone(),
                        None => advertised_endpoint(hub.local_addr()),
                    };
                    let file = ConfigFileSetup {
                        private_key,
                        listen_port: hub.local_addr().port(),
                        wg: None,
                    };
                    let backend =
                        open_config_file_backend(&db, config, &pool, file, Some(&hub), &replica)
                            .await?;
                    (backend, Some(hub), endpoint)
                }
                BackendChoice::WgConfig => {
                    let wg = config.wg_interface.as_ref().map(|name| WgTool {
                        program: config.wg_program.clone(),
                        interface: name.clone(),
                    });
                    let file = ConfigFileSetup {
                        private_key,
                        listen_port: default_port,
                        wg,
                    };
                    let backend =
                        open_config_file_backend(&db, config, &pool, file, None, &replica).await?;
                    (backend, None, default_endpoint(config))
                }
                BackendChoice::Provided(backend) => {
                    sync_provided_backend(&db, backend.as_ref(), &replica).await?;
                    (Arc::clone(backend), None, default_endpoint(config))
                }
            };
        log_handshake_tracking(backend.as_ref(), config).await;

        let demo_users = if config.demo {
            ensure_demo_users(&db).await?
        } else {
            Vec::new()
        };

        let dummy_password = Password::new(uuid::Uuid::new_v4().to_string());
        let dummy_password_hash =
            tokio::task::spawn_blocking(move || hash_password(&dummy_password))
                .await
                .map_err(|error| StartError::Backend(BackendError::Task(error)))??;

        let postgres_url = match db.kind() {
            DbKind::Postgres => Some(config.database_url.clone()),
            DbKind::Sqlite => None,
        };
        let background = BackgroundSettings {
            sweep_interval: config.sweep_interval,
            sync: SyncSettings {
                resync_interval: config.resync_interval,
                postgres_url,
            },
        };

        let shared = Shared {
            db,
            backend,
            hub,
            pool,
            server_public_key,
            wg_endpoint,
            session_ttl: config.session_ttl,
            lease_time: config.lease_time,
            request_timeout: config.request_timeout,
            limiter: Mutex::new(LoginLimiter::new(config.login_limits)),
            metrics: Metrics::default(),
            replica,
            dummy_password_hash,
        };

        Ok(Self {
            state: AppState {
                inner: Arc::new(shared),
            },
            demo_users,
            background,
        })
    }

    /// Starts the lease sweeper and the synchronization with other replicas; they run
    /// until the returned value is dropped.
    pub fn spawn_background_tasks(&self) -> BackgroundTasks {
        let state = &self.state;

        let mut handles = crate::replica::spawn(
            state.db().clone(),
            Arc::clone(state.backend()),
            Arc::clone(state.replica()),
            self.background.sync.clone(),
        );
        handles.push(crate::sweeper::spawn(
            state.clone(),
            state.lease_time(),
            self.background.sweep_interval,
        ));

        BackgroundTasks { handles }
    }
}

/// Brings a caller's back end to the database's peers at start.
async fn sync_provided_backend(
    db: &Db,
    backend: &dyn PeerBackend,
    replica: &ReplicaSync,
) -> Result<(), StartError> {
    let report =
        crate::replica::resync(db, backend, replica)
            .await
            .map_err(|error| match error {
                crate::replica::ResyncError::Database(error) => StartError::LoadPeers(error),
                crate::replica::ResyncError::Backend(error) => StartError::Backend(error),
            })?;

    tracing::info!(
        backend = backend.name(),
        added = report.added,
        removed = report.removed,
        "synchronized the back end with the database"
    );
    Ok(())
}

/// Logs whether idle peers are reclaimed, which depends on the back end.
async fn log_handshake_tracking(backend: &dyn PeerBackend, config: &ServerConfig) {
    match backend.last_handshakes().await {
        Ok(Some(_)) => tracing::info!(
            backend = backend.name(),
            lease_seconds = config.lease_time.as_secs(),
            "peers without a handshake for the lease time are reclaimed"
        ),
        Ok(None) => tracing::info!(
            backend = backend.name(),
            "the back end does not report handshakes, so peers are reclaimed only when their session expires; pass --wg-interface, or use the embedded back end, to reclaim idle peers"
        ),
        Err(error) => tracing::warn!(
            backend = backend.name(),
            error = %error_chain(&error),
            "failed to read the last handshakes; the sweeper tries again"
        ),
    }
}

fn load_or_generate_server_key(path: &Path) -> Result<PrivateKey, StartError> {
    if let Some(key) = WgConfigBackend::read_private_key(path)? {
        tracing::info!(
            path = %path.display(),
            server_key = %key.public_key().fingerprint(),
            "using the server key from the WireGuard config"
        );
        return Ok(key);
    }

    let key = PrivateKey::generate();
    tracing::info!(
        path = %path.display(),
        server_key = %key.public_key().fingerprint(),
        "generated a new server key"
    );
    Ok(key)
}

/// Binds the embedded hub on `config.wg_listen` with the server's key, with the
/// HTTP API forwarded from port [`HTTP_FORWARD_PORT`] unless a configured forward takes
/// that port or the HTTP listener's port is unknown (0).
async fn bind_hub(
    config: &ServerConfig,
    pool: &AddressPool,
    private_key: PrivateKey,
) -> Result<Hub, StartError> {
    let forwards = hub_forwards(&config.forwards, config.listen);

    let hub_config = HubConfig::new(
        config.wg_listen,
        private_key,
        pool.server_address(),
        pool.network(),
        forwards.clone(),
    );
    let hub = Hub::bind(hub_config).await.map_err(|error| match error {
        HubError::Bind { .. } => StartError::HubBind(error),
        error => StartError::Hub(error),
    })?;

    let local_addr = hub.local_addr();
    for forward in &forwards {
        tracing::info!(
            port = forward.port,
            target = %forward.target,
            "forwarding TCP port {} of {} to {}",
            forward.port,
            pool.server_address(),
            forward.target
        );
    }
    tracing::info!(%local_addr, server_key = %hub.public_key().fingerprint(), "wireguard hub listening on udp://{local_addr}");

    Ok(hub)
}

/// Returns the hub's forwards: `configured`, and port [`HTTP_FORWARD_PORT`] to the HTTP
/// listener at `http_listen` unless `configured` takes that port or the listener's port
/// is 0 (not bound yet).
pub fn hub_forwards(configured: &[Forward], http_listen: SocketAddr) -> Vec<Forward> {
    let mut forwards = configured.to_vec();

    let http_taken = configured
        .iter()
        .any(|forward| forward.port == HTTP_FORWARD_PORT);
    if !http_taken && http_listen.port() != 0 {
        forwards.push(Forward {
            port: HTTP_FORWARD_PORT,
            target: local_target(http_listen),
        });
    }

    forwards.sort_by_key(|forward| forward.port);
    forwards
}

/// Returns the endpoint handed to clients for a hub bound on `local_addr`. An
/// unspecified address such as 0.0.0.0 is replaced by loopback, which only local
/// clients reach, with a warning to set `--wg-endpoint`.
fn advertised_endpoint(local_addr: SocketAddr) -> String {
    let endpoint = local_target(local_addr);

    if endpoint != local_addr {
        tracing::warn!(
            %local_addr,
            %endpoint,
            "the hub listens on every address, so clients get the loopback endpoint; pass --wg-endpoint HOST:PORT with an address that remote clients reach"
        );
    }
    endpoint.to_string()
}

fn default_endpoint(config: &ServerConfig) -> String {
    config
        .wg_endpoint
        .clone()
        .unwrap_or_else(|| DEFAULT_WG_ENDPOINT.to_owned())
}

/// The server's side of the config file, and the live interface to apply it to.
struct ConfigFileSetup {
    private_key: PrivateKey,
    listen_port: u16,
    wg: Option<WgTool>,
}

/// Opens the config file back end with every peer of the database, which rewrites the
/// file and synchronizes the live interface, and with `hub` brings the hub to the same
/// peers. Pending removals are then complete, because the file and the hub list only
/// the database's peers.
async fn open_config_file_backend(
    db: &Db,
    config: &ServerConfig,
    pool: &AddressPool,
    setup: ConfigFileSetup,
    hub: Option<&Hub>,
    replica: &ReplicaSync,
) -> Result<Arc<dyn PeerBackend>, StartError> {
    let generation = db.peer_generation().await.map_err(StartError::LoadPeers)?;
    let peers = db.list_peers().await.map_err(StartError::LoadPeers)?;
    let desired: Vec<LivePeer> = peers
        .iter()
        .map(|peer| LivePeer {
            public_key: peer.public_key,
            address: peer.address,
        })
        .collect();

    let interface = WgInterface {
        private_key: setup.private_key,
        listen_port: setup.listen_port,
        address: pool.interface_address(),
    };
    let entries = desired.iter().map(|peer| (peer.public_key, peer.address));
    let file =
        WgConfigBackend::open(config.wg_config_path.clone(), interface, setup.wg, entries).await?;

    let backend: Arc<dyn PeerBackend> = match hub {
        Some(hub) => {
            let hub = HubBackend::new(hub.clone());
            let report = hub.sync(&desired).await?;
            tracing::info!(
                peers = report.added,
                "added the database's peers to the WireGuard hub"
            );
            Arc::new(EmbeddedBackend::new(file, hub))
        }
        None => Arc::new(file),
    };
    replica.mark_applied(generation);

    let completed = db
        .clear_pending_removals()
        .await
        .map_err(StartError::ClearPendingRemovals)?;
    tracing::info!(
        path = %config.wg_config_path.display(),
        interface = config.wg_interface.as_deref(),
        peers = desired.len(),
        pending_removals_completed = completed,
        "rewrote the WireGuard config from the database"
    );

    Ok(backend)
}

fn log_database(db: &Db, url: &str) {
    match crate::db::sqlite_file_path(url) {
        Some(path) => {
            tracing::info!(kind = ?db.kind(), path = %path.display(), "opened the database")
        }
        None => tracing::info!(kind = ?db.kind(), "opened the database"),
    }
}

/// Warns about a pool of public addresses, which the server accepts because an operator
/// may own such a range.
fn warn_if_public(pool: &AddressPool) {
    if pool.is_private() {
        return;
    }

    tracing::warn!(
        pool = %pool,
        "the address pool is a public range; clients route it into the tunnel, so they cannot reach the real hosts at these addresses; keep it only if you own the range, or pass a private range such as --pool 10.13.0.0/16"
    );
}

fn log_pool_change(pool: &AddressPool, change: &PoolChange) {
    let cidr = pool.network().to_string();

    match change {
        PoolChange::Unchanged => tracing::info!(pool = %cidr, "address pool unchanged"),
        PoolChange::Seeded { free } => tracing::info!(pool = %cidr, free, "address pool created"),
        PoolChange::Changed {
            previous,
            free,
            peers_outside,
        } => tracing::warn!(
            pool = %cidr,
            previous = %previous,
            free,
            peers_outside,
            "address pool changed; peers outside the new pool keep their addresses until sign-out"
        ),
        PoolChange::Repaired { free } => tracing::warn!(
            pool = %cidr,
            free,
            "free-address table did not match the peers and was rebuilt"
        ),
    }
}
