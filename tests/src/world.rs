//! The scenario runner: one server, one app, one temporary directory per scenario, and
//! the artifacts a tester needs when a scenario fails.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use futures::FutureExt;

use crate::driver::{AppSession, store_path};
use crate::process::target_dir;
use crate::server::{ServerOptions, ServerProcess};

/// Everything one scenario runs against.
pub struct World {
    name: String,
    dir: tempfile::TempDir,
    pub server: ServerProcess,
    app: Option<AppSession>,
    app_starts: u32,
}

impl World {
    pub async fn new(name: &str, options: ServerOptions) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("camwire-e2e-{name}-"))
            .tempdir()
            .context("failed to create a temporary directory")?;
        let server = ServerProcess::start(dir.path(), options).await?;

        Ok(Self {
            name: name.to_owned(),
            dir,
            server,
            app: None,
            app_starts: 0,
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Returns the `XDG_DATA_HOME` of every app instance of this scenario.
    pub fn data_home(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn app_log_path(&self) -> PathBuf {
        self.dir.path().join("app.log")
    }

    pub fn store_path(&self) -> PathBuf {
        store_path(&self.data_home())
    }

    /// Returns the store file as JSON, `None` when the file does not exist.
    pub fn store_json(&self) -> Result<Option<serde_json::Value>> {
        let path = self.store_path();
        let Ok(bytes) = std::fs::read(&path) else {
            return Ok(None);
        };
        let value = serde_json::from_slice(&bytes)
            .with_context(|| format!("store file {} is not JSON: {:?}", path.display(), String::from_utf8_lossy(&bytes)))?;
        Ok(Some(value))
    }

    /// Starts the app (a new process each time), with the scenario's data directory.
    pub async fn launch_app(&mut self) -> Result<&AppSession> {
        self.close_app().await?;
        std::fs::create_dir_all(self.data_home())?;
        self.app_starts += 1;
        let session = AppSession::launch(&self.data_home(), &self.app_log_path()).await?;
        Ok(self.app.insert(session))
    }

    pub fn app(&self) -> &AppSession {
        self.app.as_ref().expect("launch_app() runs before app()")
    }

    /// Quits the app and checks that it left nothing running.
    pub async fn close_app(&mut self) -> Result<()> {
        match self.app.take() {
            Some(app) => app.close().await,
            None => Ok(()),
        }
    }

    /// Kills the app with SIGKILL, as a crash or `kill -9` would.
    pub async fn kill_app(&mut self) -> Result<()> {
        match self.app.take() {
            Some(app) => app.kill_app().await,
            None => Ok(()),
        }
    }

    async fn save_artifacts(&self) -> PathBuf {
        let dir = target_dir().join("e2e-artifacts").join(&self.name);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::create_dir_all(&dir);

        if let Some(app) = &self.app {
            if let Err(error) = app.screenshot(&dir.join("screenshot.png")).await {
                eprintln!("no screenshot: {error:#}");
            }
            if let Ok(source) = app.page_source().await {
                let _ = std::fs::write(dir.join("page.html"), source);
            }
        }
        let _ = std::fs::copy(self.app_log_path(), dir.join("app.log"));
        let _ = std::fs::copy(self.server.log_path(), dir.join("server.log"));
        let _ = std::fs::copy(self.store_path(), dir.join("store.json"));
        let _ = std::fs::copy(self.server.wg_config_path(), dir.join("wg0.conf"));
        dir
    }

    async fn shut_down(mut self) -> Result<()> {
        let closed = self.close_app().await;
        self.server.stop().await;
        closed
    }
}

/// Runs one scenario: starts a server, hands the world to `body`, and on failure saves
/// a screenshot, the page source, the app's and the server's logs and the store file
/// under `target/e2e-artifacts/<name>/` before failing the test.
pub async fn scenario(
    name: &str,
    options: ServerOptions,
    body: impl AsyncFnOnce(&mut World) -> Result<()>,
) {
    let mut world = match World::new(name, options).await {
        Ok(world) => world,
        Err(error) => panic!("scenario {name}: set-up failed: {error:#}"),
    };

    let outcome = AssertUnwindSafe(body(&mut world)).catch_unwind().await;
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(format!("{error:#}")),
        Err(panic) => Some(panic_message(&panic)),
    };

    if let Some(failure) = failure {
        let artifacts = world.save_artifacts().await;
        let _ = world.shut_down().await;
        panic!("scenario {name} failed: {failure}\nartifacts: {}", artifacts.display());
    }

    if let Err(error) = world.shut_down().await {
        panic!("scenario {name}: tear-down failed: {error:#}");
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        return (*text).to_owned();
    }
    if let Some(text) = panic.downcast_ref::<String>() {
        return text.clone();
    }
    "panic with a non-string payload".into()
}
