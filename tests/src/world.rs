//! The scenario runner: one server, one app, one temporary directory per scenario, and
//! the artifacts a tester needs when a scenario fails.
//!
//! Scenarios run one at a time, whatever the number of test threads, because [`scenario`]
//! takes a process-wide lock while it runs. Every app instance starts WebKit processes, and
//! on a small machine several of them at once slow down each other's timed steps.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use futures::FutureExt;
use tokio::sync::Mutex;

use crate::driver::{AppSession, store_path};
use crate::process::target_dir;
use crate::server::{ServerOptions, ServerProcess};

/// Held by the running scenario; a `tokio` mutex, so that it does not depend on one
/// runtime and a panicking scenario does not poison it.
static SCENARIO_LOCK: Mutex<()> = Mutex::const_new(());

/// The session entry of a store file, with the secrets that must leave the file at sign-out.
#[derive(Debug, Clone)]
pub struct StoredSession {
    pub access_token: String,
    /// Base64 of the device's WireGuard private key.
    pub private_key: String,
    /// Base64 of the public key that belongs to `private_key`.
    pub public_key: String,
    /// The VPN address, such as `10.13.0.2/32`.
    pub address: String,
    pub server_url: String,
    /// The session's WireGuard configuration, as the server handed it out.
    pub wireguard: camwire_api::WireguardConfig,
}

impl StoredSession {
    /// Reads the session entry of a store document, `None` when it has none.
    pub fn from_document(document: &serde_json::Value) -> Result<Option<Self>> {
        let Some(entry) = document.get(camwire_client::SESSION_KEY) else {
            return Ok(None);
        };
        let credentials = camwire_client::Credentials::from_json(entry.clone())
            .context("the store's session entry is not a valid credential record")?;
        let text = |name: &str| -> Result<String> {
            entry
                .get(name)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .with_context(|| format!("the store's session entry has no {name}"))
        };

        Ok(Some(Self {
            access_token: text("access_token")?,
            private_key: text("private_key")?,
            public_key: credentials.private_key.public_key().to_base64(),
            address: credentials.profile.wireguard.address.to_string(),
            server_url: credentials.server_url.to_string(),
            wireguard: credentials.profile.wireguard.clone(),
        }))
    }
}

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

    /// Returns the store file's bytes, `None` when the file does not exist.
    pub fn store_bytes(&self) -> Result<Option<Vec<u8>>> {
        match std::fs::read(self.store_path()) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error).with_context(|| format!("failed to read {}", self.store_path().display())),
        }
    }

    /// Returns the session in the store file, `None` when the file does not exist or
    /// contains no session. Fails when the file is not JSON.
    pub fn stored_session(&self) -> Result<Option<StoredSession>> {
        let Some(document) = self.store_json()? else {
            return Ok(None);
        };
        StoredSession::from_document(&document)
    }

    /// Checks that the store file contains no session: it is missing, or a JSON object
    /// without the session entry, and none of `secrets` (tokens, keys) is in its raw bytes.
    pub fn ensure_store_signed_out(&self, secrets: &[&str]) -> Result<()> {
        let Some(bytes) = self.store_bytes()? else {
            return Ok(());
        };

        let text = String::from_utf8_lossy(&bytes);
        for secret in secrets {
            ensure!(!text.contains(secret), "the store file still contains a secret of the ended session");
        }

        let document: serde_json::Value =
            serde_json::from_slice(&bytes).with_context(|| format!("the store file is not JSON: {text:?}"))?;
        let Some(entries) = document.as_object() else {
            bail!("the store file is not a JSON object: {text:?}");
        };
        ensure!(
            !entries.contains_key(camwire_client::SESSION_KEY),
            "the store file still contains a session entry"
        );
        Ok(())
    }

    /// Writes `bytes` as the store file, as a damaged or older file would be found at start.
    pub fn write_store(&self, bytes: &[u8]) -> Result<()> {
        let path = self.store_path();
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder)?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("failed to write {}", path.display()))
    }

    /// Starts the app (a new process each time), with the scenario's data directory and no
    /// D-Bus session bus (see [`AppSession::launch`]).
    pub async fn launch_app(&mut self) -> Result<&AppSession> {
        self.close_app().await?;
        std::fs::create_dir_all(self.data_home())?;
        self.app_starts += 1;
        let session = AppSession::launch(&self.data_home(), &self.app_log_path()).await?;
        Ok(self.app.insert(session))
    }

    /// Like [`World::launch_app`], with the test's D-Bus session bus, for tests of single
    /// instance and the tray.
    pub async fn launch_app_on_session_bus(&mut self) -> Result<&AppSession> {
        self.close_app().await?;
        std::fs::create_dir_all(self.data_home())?;
        self.app_starts += 1;
        let session = AppSession::launch_on_session_bus(&self.data_home(), &self.app_log_path()).await?;
        Ok(self.app.insert(session))
    }

    /// Starts the app of another device, such as a second user's computer, with its own
    /// data directory and log `<name>-app.log` in the scenario's directory. The caller
    /// closes it; the log is among the artifacts.
    pub async fn launch_other_device(&self, name: &str) -> Result<AppSession> {
        let data_home = self.dir.path().join(format!("{name}-data"));
        std::fs::create_dir_all(&data_home)?;
        AppSession::launch(&data_home, &self.dir.path().join(format!("{name}-app.log"))).await
    }

    /// Quits the app by closing its window and returns how long it took to exit.
    pub async fn quit_app(&mut self) -> Result<Duration> {
        let Some(app) = self.app.take() else {
            bail!("no app is running");
        };
        app.quit().await
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
        for entry in std::fs::read_dir(self.dir.path()).into_iter().flatten().flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().ends_with("-app.log") {
                let _ = std::fs::copy(entry.path(), dir.join(name));
            }
        }
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
///
/// Scenarios run one at a time (see the module documentation).
pub async fn scenario(
    name: &str,
    options: ServerOptions,
    body: impl AsyncFnOnce(&mut World) -> Result<()>,
) {
    let _turn = SCENARIO_LOCK.lock().await;
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
