//! The real Camwire app in the real WebKit webview, driven through tauri-driver.
//!
//! Each [`AppSession`] starts its own tauri-driver on free ports, in its own process
//! group, with `XDG_DATA_HOME` pointing at the test's data directory, so that the
//! store file can be read after the test and nothing is shared between tests.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio::process::Command;

use crate::process::{GroupChild, free_port, group_members, port_is_open, workspace_binary};

/// The app's identifier in `tauri.conf.json`, which names its data directory.
pub const APP_IDENTIFIER: &str = "dev.camwire.desktop";

/// Name of the store file that contains the credentials.
pub const STORE_FILE: &str = "credentials.json";

/// Default timeout of the page waits.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(15);

/// One running app instance and the WebDriver session that controls it.
pub struct AppSession {
    driver: Option<GroupChild>,
    client: Option<Client>,
    port: u16,
    native_port: u16,
    data_home: PathBuf,
    log: PathBuf,
}

impl AppSession {
    /// Starts tauri-driver and the app with `data_home` as `XDG_DATA_HOME`; the app's and
    /// the driver's output is appended to `log`.
    pub async fn launch(data_home: &Path, log: &Path) -> Result<Self> {
        let application = workspace_binary("camwire")?;
        let tauri_driver = std::env::var_os("CAMWIRE_TAURI_DRIVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("tauri-driver"));
        let port = free_port()?;
        let native_port = free_port()?;

        let mut command = Command::new(&tauri_driver);
        command
            .args(["--port", &port.to_string(), "--native-port", &native_port.to_string()])
            .env("XDG_DATA_HOME", data_home)
            .env("RUST_LOG", "info,camwire=debug,camwire_client=debug");
        let driver = GroupChild::spawn_logged("tauri-driver", command, log)
            .with_context(|| format!("failed to start {}; run `cargo xtask setup` to install it", tauri_driver.display()))?;

        let mut session = Self {
            driver: Some(driver),
            client: None,
            port,
            native_port,
            data_home: data_home.to_path_buf(),
            log: log.to_path_buf(),
        };
        session.wait_for_driver().await?;

        let capabilities = json!({
            "tauri:options": { "application": application },
        });
        let capabilities = capabilities.as_object().cloned().unwrap_or_default();
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .with_context(|| format!("failed to start a WebDriver session; see {}", session.log.display()))?;
        session.client = Some(client);
        Ok(session)
    }

    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("the WebDriver session lives until close")
    }

    /// Returns the path of the store file that the app writes its credentials to.
    pub fn store_path(&self) -> PathBuf {
        store_path(&self.data_home)
    }

    /// Ends the WebDriver session and the driver, then checks that the driver's ports
    /// are closed and no process of its group (the app included) is left.
    pub async fn close(mut self) -> Result<()> {
        if let Some(client) = self.client.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
        }
        let Some(mut driver) = self.driver.take() else {
            return Ok(());
        };
        let group = driver.group_id();
        driver.terminate(Duration::from_secs(5)).await;

        let left = group_members(group);
        ensure!(left.is_empty(), "processes of the driver's group are still running: {left:?}");
        ensure!(!port_is_open(self.port), "tauri-driver's port {} is still open", self.port);
        ensure!(
            !port_is_open(self.native_port),
            "WebKitWebDriver's port {} is still open",
            self.native_port
        );
        Ok(())
    }

    /// Kills the app process with SIGKILL, as `kill -9` would, and ends the driver.
    pub async fn kill_app(mut self) -> Result<()> {
        let application = workspace_binary("camwire")?;
        let Some(mut driver) = self.driver.take() else {
            return Ok(());
        };
        for pid in group_members(driver.group_id()) {
            let is_app = std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|exe| Some(exe) == application.canonicalize().ok());
            if is_app {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        self.client.take();
        driver.terminate(Duration::from_secs(5)).await;
        Ok(())
    }

    async fn wait_for_driver(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let status_url = format!("http://127.0.0.1:{}/status", self.port);
        while Instant::now() < deadline {
            if reqwest::get(&status_url).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("tauri-driver did not answer on port {} within 20 s; see {}", self.port, self.log.display())
    }

    // Page helpers. Every element is found by the ids listed in ui/ids.js.

    pub async fn find(&self, id: &str) -> Result<Element> {
        self.client()
            .find(Locator::Id(id))
            .await
            .with_context(|| format!("element #{id} not found"))
    }

    pub async fn click(&self, id: &str) -> Result<()> {
        self.find(id).await?.click().await.with_context(|| format!("failed to click #{id}"))
    }

    /// Replaces the text of an input field.
    pub async fn fill(&self, id: &str, text: &str) -> Result<()> {
        let field = self.find(id).await?;
        field.clear().await.with_context(|| format!("failed to clear #{id}"))?;
        field.send_keys(text).await.with_context(|| format!("failed to type into #{id}"))
    }

    pub async fn text(&self, id: &str) -> Result<String> {
        self.find(id).await?.text().await.with_context(|| format!("failed to read #{id}"))
    }

    pub async fn is_visible(&self, id: &str) -> Result<bool> {
        match self.client().find(Locator::Id(id)).await {
            Ok(element) => Ok(element.is_displayed().await?),
            Err(_) => Ok(false),
        }
    }

    pub async fn is_enabled(&self, id: &str) -> Result<bool> {
        Ok(self.find(id).await?.is_enabled().await?)
    }

    /// Waits until `#id` is shown, for at most `timeout`.
    pub async fn wait_visible(&self, id: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_visible(id).await? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("#{id} did not show within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the text of `#id` is not empty and returns it.
    pub async fn wait_text(&self, id: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_visible(id).await? {
                let text = self.text(id).await?;
                if !text.trim().is_empty() {
                    return Ok(text);
                }
            }
            if Instant::now() >= deadline {
                bail!("#{id} showed no text within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Fills in the sign-in form and submits it.
    pub async fn submit_sign_in(&self, server_url: &str, user: &str, password: &str) -> Result<()> {
        self.wait_visible("signin-view", DEFAULT_WAIT).await?;
        self.fill("server-url", server_url).await?;
        self.fill("username", user).await?;
        self.fill("password", password).await?;
        self.click("signin-button").await
    }

    /// Signs in and waits for the profile view.
    pub async fn sign_in(&self, server_url: &str, user: &str, password: &str) -> Result<()> {
        self.submit_sign_in(server_url, user, password).await?;
        self.wait_visible("profile-view", DEFAULT_WAIT).await
    }

    /// Clicks *Log out*, confirms, and waits for the sign-in view.
    pub async fn log_out(&self) -> Result<()> {
        self.click("logout-button").await?;
        self.wait_visible("logout-dialog", DEFAULT_WAIT).await?;
        self.click("logout-confirm").await?;
        self.wait_visible("signin-view", DEFAULT_WAIT).await
    }

    pub async fn screenshot(&self, path: &Path) -> Result<()> {
        let png = self.client().screenshot().await.context("failed to take a screenshot")?;
        std::fs::write(path, png).with_context(|| format!("failed to write {}", path.display()))
    }

    pub async fn page_source(&self) -> Result<String> {
        Ok(self.client().source().await?)
    }
}

impl Drop for AppSession {
    fn drop(&mut self) {
        // GroupChild's own drop sends SIGKILL to the group; this only says so.
        if self.driver.is_some() {
            eprintln!("AppSession dropped without close(); killing tauri-driver's process group");
        }
    }
}

/// Returns the store file of an app whose `XDG_DATA_HOME` is `data_home`.
pub fn store_path(data_home: &Path) -> PathBuf {
    data_home.join(APP_IDENTIFIER).join(STORE_FILE)
}
