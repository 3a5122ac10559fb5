//! The real Camwire app in the real WebKit webview, driven through tauri-driver.
//!
//! Each [`AppSession`] starts its own tauri-driver on free ports, in its own process
//! group, with `XDG_DATA_HOME` pointing at the test's data directory, so that the
//! store file can be read after the test and nothing is shared between tests.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use fantoccini::actions::{
    InputSource as _, KeyAction, KeyActions, MOUSE_BUTTON_LEFT, MouseActions, PointerAction,
};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio::process::Command;

use crate::process::{
    GroupChild, describe_listeners, free_ports, group_members, port_is_open, process_is_alive, workspace_binary,
};

/// The app's identifier in `tauri.conf.json`, which names its data directory.
pub const APP_IDENTIFIER: &str = "dev.camwire.desktop";

/// Name of the store file that contains the credentials.
pub const STORE_FILE: &str = "credentials.json";

/// Default timeout of the page waits.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(15);

/// Time that the app is given to open its window when a WebDriver session starts. A debug
/// build opens it within a few seconds here, and later on a loaded machine.
pub const SESSION_START_WAIT: Duration = Duration::from_secs(60);

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
    ///
    /// The app gets no D-Bus session bus. With the user's bus, tauri-plugin-single-instance
    /// would hand a second device's start to the first instance (or to a Camwire the user
    /// runs), and a tray host would keep the app running when its window closes.
    pub async fn launch(data_home: &Path, log: &Path) -> Result<Self> {
        Self::launch_with(data_home, log, false).await
    }

    /// Like [`AppSession::launch`], with the test's D-Bus session bus, for tests of single
    /// instance and the tray.
    pub async fn launch_on_session_bus(data_home: &Path, log: &Path) -> Result<Self> {
        Self::launch_with(data_home, log, true).await
    }

    async fn launch_with(data_home: &Path, log: &Path, session_bus: bool) -> Result<Self> {
        ensure!(
            has_display(),
            "no display: the WebDriver tests need an X display; run them under `xvfb-run -a` \
             or with `cargo xtask test`, which starts Xvfb when DISPLAY is not set"
        );
        let application = workspace_binary("camwire")?;
        let tauri_driver = std::env::var_os("CAMWIRE_TAURI_DRIVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("tauri-driver"));
        let [port, native_port] = free_ports()?;

        let mut command = Command::new(&tauri_driver);
        command
            .args(["--port", &port.to_string(), "--native-port", &native_port.to_string()])
            .env("XDG_DATA_HOME", data_home)
            .env("RUST_LOG", "info,camwire=debug,camwire_client=debug");
        if !session_bus {
            // A socket path that does not exist, so the app finds no bus.
            command.env("DBUS_SESSION_BUS_ADDRESS", format!("unix:path={}", data_home.join("no-session-bus").display()));
        }
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
        let url = format!("http://127.0.0.1:{port}");
        let mut builder = ClientBuilder::new(connector);
        builder.capabilities(capabilities);
        let connecting = builder.connect(&url);
        // An app that dies in its set-up leaves WebKitWebDriver waiting for a window forever.
        let client = tokio::time::timeout(SESSION_START_WAIT, connecting)
            .await
            .with_context(|| {
                format!(
                    "the app opened no window within {SESSION_START_WAIT:?}; it may have failed at start, see {}",
                    session.log.display()
                )
            })?
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
        ensure!(
            !port_is_open(self.port),
            "tauri-driver's port {} is still open, by {}",
            self.port,
            describe_listeners(self.port)
        );
        ensure!(
            !port_is_open(self.native_port),
            "WebKitWebDriver's port {} is still open, by {}",
            self.native_port,
            describe_listeners(self.native_port)
        );
        Ok(())
    }

    /// Kills the app process with SIGKILL, as `kill -9` would, and ends the driver.
    pub async fn kill_app(mut self) -> Result<()> {
        let pid = self.app_pid()?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
            .with_context(|| format!("failed to kill the app (pid {pid})"))?;
        self.client.take();
        self.close().await
    }

    /// Quits the app as a user does, by closing its window, and waits for the process to
    /// exit; then ends the driver. Returns the time from the close request to the exit.
    ///
    /// The window gets `WM_DELETE_WINDOW`, what a window manager sends for the close button,
    /// so the app runs its own exit path (stop the tunnel, keep the session).
    pub async fn quit(mut self) -> Result<Duration> {
        let pid = self.app_pid()?;
        let started = Instant::now();
        crate::window::request_close(pid)?;

        let deadline = started + APP_EXIT_WAIT;
        while process_is_alive(pid) {
            if Instant::now() >= deadline {
                bail!("the app (pid {pid}) did not exit within {APP_EXIT_WAIT:?} of closing its window");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let exited = started.elapsed();

        // The WebDriver session ended with the app; only the driver is left to stop.
        self.client.take();
        self.close().await?;
        Ok(exited)
    }

    /// Returns the pid of the app process that the driver started.
    pub fn app_pid(&self) -> Result<i32> {
        let application = workspace_binary("camwire")?.canonicalize()?;
        let Some(driver) = &self.driver else {
            bail!("the driver has stopped");
        };

        let mut apps = group_members(driver.group_id())
            .into_iter()
            .filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == application));
        let Some(pid) = apps.next() else {
            bail!("no process of {} runs in the driver's group", application.display());
        };
        ensure!(apps.next().is_none(), "more than one app process runs in the driver's group");
        Ok(pid)
    }

    async fn wait_for_driver(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let status_url = format!("http://127.0.0.1:{}/status", self.port);
        while Instant::now() < deadline {
            if reqwest::get(&status_url).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
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

    /// Returns the `data-kind` attribute of `#id`, or an empty string when it has none.
    pub async fn data_kind(&self, id: &str) -> Result<String> {
        let kind = self
            .find(id)
            .await?
            .attr("data-kind")
            .await
            .with_context(|| format!("failed to read data-kind of #{id}"))?;
        Ok(kind.unwrap_or_default())
    }

    /// Returns which of the two views shows, failing when none or both do.
    pub async fn view(&self) -> Result<View> {
        let signin = self.is_visible("signin-view").await?;
        let profile = self.is_visible("profile-view").await?;
        match (signin, profile) {
            (true, false) => Ok(View::SignIn),
            (false, true) => Ok(View::Profile),
            _ => bail!("the page shows sign-in view: {signin}, profile view: {profile}"),
        }
    }

    /// Runs `script` in the page (its body, with `arguments` as WebDriver passes them) and
    /// returns its result.
    pub async fn execute(&self, script: &str, arguments: Vec<serde_json::Value>) -> Result<serde_json::Value> {
        self.client()
            .execute(script, arguments)
            .await
            .context("failed to run a script in the page")
    }

    /// Calls one of the app's commands from the page, as the page's own code does, and
    /// returns its result. A rejected call returns an error with the command's message.
    pub async fn invoke(&self, command: &str, arguments: serde_json::Value) -> Result<serde_json::Value> {
        let script = "const [command, args, done] = arguments;
            window.__TAURI__.core.invoke(command, args).then(
                (value) => done({ ok: value }),
                (error) => done({ error: String(error) }),
            );";
        let reply = self
            .client()
            .execute_async(script, vec![json!(command), arguments])
            .await
            .with_context(|| format!("failed to call the app command {command}"))?;
        if let Some(error) = reply.get("error") {
            bail!("the app command {command} failed: {error}");
        }
        Ok(reply.get("ok").cloned().unwrap_or_default())
    }

    /// Returns the tunnel's state as the `tunnel_status` command reports it, such as
    /// `connecting` or `stopped`.
    pub async fn tunnel_state(&self) -> Result<String> {
        let status = self.invoke("tunnel_status", json!({})).await?;
        let Some(state) = status.get("state").and_then(serde_json::Value::as_str) else {
            bail!("tunnel_status returned no state: {status}");
        };
        Ok(state.to_owned())
    }

    /// Double-clicks `#id` with the pointer, as a quick user does: two presses 50 ms apart.
    pub async fn double_click(&self, id: &str) -> Result<()> {
        let element = self.find(id).await?;
        let pointer = MouseActions::new("mouse".to_owned())
            .then(PointerAction::MoveToElement { element, duration: None, x: 0.0, y: 0.0 })
            .then(PointerAction::Down { button: MOUSE_BUTTON_LEFT })
            .then(PointerAction::Up { button: MOUSE_BUTTON_LEFT })
            .pause(Duration::from_millis(50))
            .then(PointerAction::Down { button: MOUSE_BUTTON_LEFT })
            .then(PointerAction::Up { button: MOUSE_BUTTON_LEFT });
        self.client()
            .perform_actions(pointer)
            .await
            .with_context(|| format!("failed to double-click #{id}"))
    }

    /// Presses Escape in the focused element.
    pub async fn press_escape(&self) -> Result<()> {
        let keys = KeyActions::new("keyboard".to_owned())
            .then(KeyAction::Down { value: Key::Escape.into() })
            .then(KeyAction::Up { value: Key::Escape.into() });
        self.client().perform_actions(keys).await.context("failed to press Escape")
    }

    /// Waits until `#id` is hidden, for at most `timeout`.
    pub async fn wait_hidden(&self, id: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_visible(id).await? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("#{id} still showed after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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

/// One of the page's two views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    SignIn,
    Profile,
}

/// Maximum time between closing the app's window and the end of its process: the app's
/// 3 s bound on stopping the tunnel at exit, plus slack for a loaded machine.
pub const APP_EXIT_WAIT: Duration = Duration::from_secs(10);

/// Returns whether an X or Wayland display is set for the app's window.
pub fn has_display() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
}

/// Returns the store file of an app whose `XDG_DATA_HOME` is `data_home`.
pub fn store_path(data_home: &Path) -> PathBuf {
    data_home.join(APP_IDENTIFIER).join(STORE_FILE)
}
