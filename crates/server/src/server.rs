//! Running the API on a TCP listener, and stopping it.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::ServerConfig;
use crate::db::Db;
use crate::http::router;
use crate::state::{App, AppState, BackgroundTasks, StartError};
use crate::users::DemoUser;

/// Time that [`RunningServer::shutdown`] gives open requests to finish before it drops
/// their connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Errors that stop a running server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the HTTP server failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the HTTP server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A server that accepts requests until [`shutdown`](Self::shutdown).
pub struct RunningServer {
    local_addr: SocketAddr,
    state: AppState,
    demo_users: Vec<DemoUser>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    background: Option<BackgroundTasks>,
}

/// Prepares the server (database, pool, WireGuard hub, config file, demo users), starts
/// the sweeper and the replica synchronization, and starts serving.
///
/// The listener is bound when this returns, so [`RunningServer::local_addr`] is the real
/// address also for port 0. It is bound before the hub, whose forward of port 80 goes
/// to it.
pub async fn start(mut config: ServerConfig) -> Result<RunningServer, StartError> {
    config.validate()?;

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    config.listen = local_addr;

    let app = App::open(&config).await?;

    let background = app.spawn_background_tasks();
    let (stop, stopped) = oneshot::channel::<()>();
    let service = router(app.state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let task = tokio::spawn(async move {
        axum::serve(listener, service)
            .with_graceful_shutdown(async {
                // A dropped sender stops the server too.
                let _ = stopped.await;
            })
            .await
    });

    tracing::info!(addr = %local_addr, "listening on http://{local_addr}");

    Ok(RunningServer {
        local_addr,
        state: app.state,
        demo_users: app.demo_users,
        stop: Some(stop),
        task,
        background: Some(background),
    })
}

impl RunningServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Returns the bound UDP address of the embedded WireGuard hub, or `None` with the
    /// other back ends.
    pub fn hub_addr(&self) -> Option<SocketAddr> {
        self.state.hub().map(camwire_tunnel::Hub::local_addr)
    }

    /// Returns the base URL, such as `http://127.0.0.1:8080`.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    pub fn db(&self) -> &Db {
        self.state.db()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Returns the demo users, with the passwords of those created on this start; empty
    /// unless the config set `demo`.
    pub fn demo_users(&self) -> &[DemoUser] {
        &self.demo_users
    }

    /// Serves until `signal` completes or the server fails, then shuts down.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<(), ServeError> {
        tokio::select! {
            () = signal => {
                tracing::info!("shutting down");
                self.shutdown().await
            }
            result = &mut self.task => {
                drop(self.background.take());
                self.stop_hub().await;
                self.state.db().close().await;
                result??;
                Ok(())
            }
        }
    }

    /// Stops the background tasks and accepting connections, lets open requests finish
    /// for up to [`SHUTDOWN_GRACE`], stops the WireGuard hub (its tasks are aborted
    /// after 2 s), then closes the database.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        drop(self.background.take());

        let result = match tokio::time::timeout(SHUTDOWN_GRACE, &mut self.task).await {
            Ok(joined) => joined
                .map_err(ServeError::from)
                .and_then(|served| served.map_err(ServeError::from)),
            Err(_elapsed) => {
                tracing::warn!(
                    grace_seconds = SHUTDOWN_GRACE.as_secs(),
                    "open requests did not finish in time; dropping their connections"
                );
                self.task.abort();
                Ok(())
            }
        };

        self.stop_hub().await;
        self.state.db().close().await;
        tracing::info!(addr = %self.local_addr, "stopped");
        result
    }

    /// Stops the hub, after the HTTP server, so that requests through the tunnel can
    /// finish within the grace time.
    async fn stop_hub(&self) {
        if let Some(hub) = self.state.hub() {
            hub.shutdown().await;
        }
    }
}
