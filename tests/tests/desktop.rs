//! The desktop suite: what makes Camwire a desktop app, driven in the real app and webview
//! through tauri-driver, against a real `camwire-server` process.
//!
//! - the settings view: validation, the plain-http rule, persistence across restarts, start
//!   at login, the theme, and a server change while signed in;
//! - the confirmation dialog's keyboard behaviour;
//! - *Disconnect* and *Connect* on the profile (the tray menu calls the same commands);
//! - single instance, the credential file's mode, and secrets in the app's log files;
//! - the `.deb` bundle's contents, when `CAMWIRE_DEB` names one.
//!
//! Run `cargo build --workspace` first, then under a display:
//! `CAMWIRE_TAURI_DRIVER=$HOME/.cargo/bin/tauri-driver xvfb-run -a cargo test -p camwire-e2e --test desktop`.
//! Every app of this binary runs with `HOME` pointing into `target/desktop-home/`, so that
//! the start-at-login entry (`~/.config/autostart/Camwire.desktop`) never lands in the real
//! home folder.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use camwire_e2e::db;
use camwire_e2e::driver::{APP_IDENTIFIER, AppSession, DEFAULT_WAIT};
use camwire_e2e::process::{target_dir, workspace_binary};
use camwire_e2e::server::ServerOptions;
use camwire_e2e::world::{World, scenario};
use fantoccini::key::Key;
use serde_json::Value;

/// One WebDriver session at a time: the tests of this binary share `HOME` and the app's
/// single-instance name, so two apps at once would find each other.
static WEBDRIVER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `HOME` of every app this binary starts, set once for the whole process.
static HOME: OnceLock<PathBuf> = OnceLock::new();

/// Takes the WebDriver lock and makes sure every app started from now on gets the isolated
/// `HOME`.
async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    isolated_home();
    WEBDRIVER.lock().await
}

/// Points `HOME` of this process, and so of tauri-driver and the app it starts, at an empty
/// folder under `target/`. The autostart plugin writes its entry to `$HOME/.config/autostart`
/// and ignores `XDG_CONFIG_HOME`, so `HOME` is what keeps it off this machine's real login.
fn isolated_home() -> &'static Path {
    HOME.get_or_init(|| {
        let home = target_dir().join("desktop-home");
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).expect("the isolated HOME can be created under target/");
        // SAFETY: this runs once, before the first app of this binary starts. The other tests
        // wait in `get_or_init`, so no thread of this process reads the environment meanwhile.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("HOME", &home);
        }
        home
    })
}

fn autostart_entry() -> PathBuf {
    isolated_home()
        .join(".config")
        .join("autostart")
        .join("Camwire.desktop")
}

/// Password of a demo user as the server printed it.
fn password(world: &World, user: &str) -> String {
    world.server.password(user).to_owned()
}

/// Folder of the app's own files in the scenario's `XDG_DATA_HOME`.
fn app_data(world: &World) -> PathBuf {
    world.data_home().join(APP_IDENTIFIER)
}

/// Returns `settings.json` as JSON, `None` when the app has not written it.
fn settings_file(world: &World) -> Result<Option<Value>> {
    let path = app_data(world).join("settings.json");
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(None);
    };
    let value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    Ok(Some(value))
}

/// Returns the `settings` record of `settings.json`, `Value::Null` when there is none.
fn saved_settings(world: &World) -> Result<Value> {
    Ok(settings_file(world)?
        .and_then(|document| document.get("settings").cloned())
        .unwrap_or(Value::Null))
}

async fn run_script(app: &AppSession, script: &str) -> Result<Value> {
    app.client()
        .execute(script, Vec::new())
        .await
        .with_context(|| format!("script failed: {script}"))
}

/// Returns the id of the focused element, empty when it has none.
async fn focused_id(app: &AppSession) -> Result<String> {
    let value = run_script(
        app,
        "return document.activeElement ? document.activeElement.id : '';",
    )
    .await?;
    Ok(value.as_str().unwrap_or_default().to_owned())
}

/// Sends keys to the focused element, as a person typing would.
async fn press(app: &AppSession, keys: &str) -> Result<()> {
    let element = app
        .client()
        .active_element()
        .await
        .context("no focused element")?;
    element.send_keys(keys).await.context("failed to send keys")
}

async fn theme(app: &AppSession) -> Result<String> {
    let value = run_script(app, "return document.documentElement.dataset.theme || '';").await?;
    Ok(value.as_str().unwrap_or_default().to_owned())
}

async fn property(app: &AppSession, id: &str, name: &str) -> Result<String> {
    let element = app.find(id).await?;
    let value = element
        .prop(name)
        .await
        .with_context(|| format!("failed to read {name} of #{id}"))?;
    Ok(value.unwrap_or_default())
}

async fn attribute(app: &AppSession, id: &str, name: &str) -> Result<String> {
    let element = app.find(id).await?;
    let value = element
        .attr(name)
        .await
        .with_context(|| format!("failed to read {name} of #{id}"))?;
    Ok(value.unwrap_or_default())
}

async fn select(app: &AppSession, id: &str, value: &str) -> Result<()> {
    app.find(id)
        .await?
        .select_by_value(value)
        .await
        .with_context(|| format!("failed to select {value:?} in #{id}"))
}

/// Sets a checkbox to `checked` by clicking it when it differs.
async fn set_checked(app: &AppSession, id: &str, checked: bool) -> Result<()> {
    let current = property(app, id, "checked").await? == "true";
    if current != checked {
        app.click(id).await?;
    }
    Ok(())
}

/// Waits until `#id` is hidden.
async fn wait_hidden(app: &AppSession, id: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while app.is_visible(id).await? {
        if Instant::now() >= deadline {
            bail!("#{id} was still shown after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Waits until `read` returns a value that `accept` takes, and returns it.
async fn wait_for<T: std::fmt::Debug>(
    what: &str,
    timeout: Duration,
    read: impl AsyncFn() -> Result<T>,
    accept: impl Fn(&T) -> bool,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let value = read().await?;
        if accept(&value) {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("{what} did not happen within {timeout:?}; last value: {value:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn open_settings(app: &AppSession) -> Result<()> {
    app.click("settings-button").await?;
    app.wait_visible("settings-view", DEFAULT_WAIT).await
}

/// Opens the settings, saves `server_url` and checks that the error names the problem.
async fn expect_settings_error(
    app: &AppSession,
    server_url: &str,
    expected: &str,
) -> Result<String> {
    app.fill("settings-server-url", server_url).await?;
    app.click("settings-save").await?;
    let error = app.wait_text("settings-error", DEFAULT_WAIT).await?;
    ensure!(
        error.contains(expected),
        "the error for {server_url:?} lacks {expected:?}: {error}"
    );
    ensure!(error.ends_with('.'), "the error is not a sentence: {error}");
    ensure!(
        app.is_visible("settings-view").await?,
        "the settings view closed on an error"
    );
    Ok(error)
}

#[tokio::test]
async fn settings_validate_persist_and_apply() {
    let _exclusive = exclusive().await;
    let _ = std::fs::remove_file(autostart_entry());

    scenario(
        "desktop-settings",
        ServerOptions::default(),
        async |world| {
            world.launch_app().await?;
            let app = world.app();
            app.wait_visible("signin-view", DEFAULT_WAIT).await?;
            ensure!(
                theme(app).await? == "system",
                "the default theme is not system"
            );

            open_settings(app).await?;
            ensure!(
                !app.is_visible("signin-view").await?,
                "the sign-in view stays beside the settings"
            );
            ensure!(attribute(app, "settings-button", "aria-expanded").await? == "true");
            ensure!(
                focused_id(app).await? == "settings-server-url",
                "the server URL field has no focus"
            );
            expect_settings_error(app, "127.0.0.1:8080", "\"http://127.0.0.1:8080\"").await?;
            expect_settings_error(app, "ftp://127.0.0.1", "use http:// or https://").await?;
            let insecure =
                expect_settings_error(app, "http://192.0.2.10:8080", "Allow insecure connection")
                    .await?;
            ensure!(
                insecure.contains("https://192.0.2.10:8080"),
                "no https suggestion: {insecure}"
            );
            ensure!(
                saved_settings(world)?.get("serverUrl").is_none(),
                "an invalid URL was saved"
            );

            set_checked(app, "settings-allow-insecure", true).await?;
            select(app, "settings-log-level", "debug").await?;
            set_checked(app, "settings-start-at-login", true).await?;
            select(app, "settings-theme", "dark").await?;
            app.click("settings-save").await?;
            wait_hidden(app, "settings-view", DEFAULT_WAIT).await?;

            ensure!(
                theme(app).await? == "dark",
                "the dark theme was not applied"
            );
            ensure!(
                app.is_visible("signin-view").await?,
                "the sign-in view did not come back"
            );
            ensure!(property(app, "server-url", "value").await? == "http://192.0.2.10:8080");
            let saved = saved_settings(world)?;
            ensure!(saved["serverUrl"] == "http://192.0.2.10:8080", "{saved}");
            ensure!(saved["allowInsecure"] == true, "{saved}");
            ensure!(saved["logLevel"] == "debug", "{saved}");
            ensure!(saved["startAtLogin"] == true, "{saved}");
            ensure!(saved["theme"] == "dark", "{saved}");
            let document = settings_file(world)?.unwrap_or_default();
            ensure!(
                document.get("session").is_none(),
                "settings.json contains a session: {document}"
            );
            let entry = std::fs::read_to_string(autostart_entry()).with_context(|| {
                format!("no start-at-login entry at {}", autostart_entry().display())
            })?;
            ensure!(
                entry.contains("--autostart"),
                "the entry does not start in the tray: {entry}"
            );
            ensure!(
                entry.contains("camwire"),
                "the entry does not start Camwire: {entry}"
            );

            // A new process reads the same settings.
            world.launch_app().await?;
            let app = world.app();
            app.wait_visible("signin-view", DEFAULT_WAIT).await?;
            wait_for(
                "the saved theme",
                DEFAULT_WAIT,
                async || theme(app).await,
                |theme| theme == "dark",
            )
            .await?;
            ensure!(property(app, "server-url", "value").await? == "http://192.0.2.10:8080");
            open_settings(app).await?;
            ensure!(
                property(app, "settings-server-url", "value").await? == "http://192.0.2.10:8080"
            );
            ensure!(property(app, "settings-allow-insecure", "checked").await? == "true");
            ensure!(property(app, "settings-log-level", "value").await? == "debug");
            ensure!(property(app, "settings-start-at-login", "checked").await? == "true");
            ensure!(property(app, "settings-theme", "value").await? == "dark");

            // Escape leaves the settings without saving.
            select(app, "settings-theme", "light").await?;
            app.find("settings-server-url").await?.click().await?;
            press(app, &Key::Escape).await?;
            wait_hidden(app, "settings-view", DEFAULT_WAIT).await?;
            ensure!(
                focused_id(app).await? == "settings-button",
                "the focus did not return to Settings"
            );
            ensure!(
                theme(app).await? == "dark",
                "a cancelled theme change was applied"
            );
            ensure!(
                saved_settings(world)?["theme"] == "dark",
                "a cancelled change was saved"
            );

            // Turning start at login off removes the entry; the light theme applies at once.
            open_settings(app).await?;
            set_checked(app, "settings-start-at-login", false).await?;
            select(app, "settings-theme", "light").await?;
            set_checked(app, "settings-allow-insecure", false).await?;
            expect_settings_error(app, "http://192.0.2.10:8080", "Allow insecure connection")
                .await?;
            app.fill("settings-server-url", "http://localhost:8080")
                .await?;
            // Enter in a field submits the form.
            app.find("settings-server-url")
                .await?
                .send_keys(&Key::Enter)
                .await?;
            wait_hidden(app, "settings-view", DEFAULT_WAIT).await?;
            ensure!(
                theme(app).await? == "light",
                "the light theme was not applied"
            );
            ensure!(
                !autostart_entry().exists(),
                "the start-at-login entry is still there"
            );
            ensure!(saved_settings(world)?["serverUrl"] == "http://localhost:8080");
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
async fn server_change_asks_to_log_out() {
    let _exclusive = exclusive().await;

    scenario(
        "desktop-server-change",
        ServerOptions::default(),
        async |world| {
            world.launch_app().await?;
            let url = world.server.url();
            let password = password(world, "alice");
            let app = world.app();
            app.sign_in(&url, "alice", &password).await?;
            let database = world.server.database_url();
            let allocated = db::addresses_of(&database, "alice").await?;
            ensure!(allocated.len() == 1, "alice has {allocated:?}");
            ensure!(
                saved_settings(world)?["serverUrl"] == url.as_str(),
                "the sign-in did not remember the server"
            );

            open_settings(app).await?;
            ensure!(property(app, "settings-server-url", "value").await? == url);
            ensure!(
                !app.is_visible("profile-view").await?,
                "the profile stays beside the settings"
            );
            app.fill("settings-server-url", "http://localhost:9")
                .await?;
            app.click("settings-save").await?;
            app.wait_visible("logout-dialog", DEFAULT_WAIT).await?;
            let title = app.text("logout-dialog-title").await?;
            ensure!(
                title.contains("change the server"),
                "the dialog does not say why: {title}"
            );
            ensure!(app.text("logout-confirm").await? == "Log out and save");

            app.click("logout-cancel").await?;
            wait_hidden(app, "logout-dialog", DEFAULT_WAIT).await?;
            ensure!(
                app.is_visible("settings-view").await?,
                "cancel left the settings view"
            );
            ensure!(
                focused_id(app).await? == "settings-save",
                "the focus did not return to Save"
            );
            ensure!(
                saved_settings(world)?["serverUrl"] == url.as_str(),
                "a cancelled change was saved"
            );
            ensure!(
                db::addresses_of(&database, "alice").await? == allocated,
                "cancel changed the allocation"
            );
            app.click("settings-cancel").await?;
            app.wait_visible("profile-view", DEFAULT_WAIT).await?;
            ensure!(
                world
                    .store_json()?
                    .is_some_and(|store| store.get("session").is_some()),
                "cancel signed out"
            );

            open_settings(app).await?;
            app.fill("settings-server-url", "http://localhost:9")
                .await?;
            app.click("settings-save").await?;
            app.wait_visible("logout-dialog", DEFAULT_WAIT).await?;
            app.click("logout-confirm").await?;
            app.wait_visible("signin-view", DEFAULT_WAIT).await?;

            ensure!(
                !app.is_visible("settings-view").await?,
                "the settings view stayed open"
            );
            ensure!(property(app, "server-url", "value").await? == "http://localhost:9");
            ensure!(saved_settings(world)?["serverUrl"] == "http://localhost:9");
            ensure!(
                db::addresses_of(&database, "alice").await?.is_empty(),
                "the address was not freed"
            );
            let store = world.store_json()?.unwrap_or_default();
            ensure!(
                store.get("session").is_none(),
                "the credentials were kept: {store}"
            );
            let notice = app.wait_text("signout-notice", DEFAULT_WAIT).await?;
            ensure!(
                app.find("signout-notice")
                    .await?
                    .attr("data-kind")
                    .await?
                    .as_deref()
                    == Some("confirmed"),
                "{notice}"
            );
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
async fn confirmation_dialog_keyboard() {
    let _exclusive = exclusive().await;

    scenario(
        "desktop-dialog-keyboard",
        ServerOptions::default(),
        async |world| {
            world.launch_app().await?;
            let url = world.server.url();
            let password = password(world, "alice");
            let app = world.app();

            // Enter in the password field submits the sign-in form.
            app.wait_visible("signin-view", DEFAULT_WAIT).await?;
            app.fill("server-url", &url).await?;
            app.fill("username", "alice").await?;
            app.fill("password", &password).await?;
            app.find("password").await?.send_keys(&Key::Enter).await?;
            app.wait_visible("profile-view", DEFAULT_WAIT).await?;

            let dialog = app.find("logout-dialog").await?;
            ensure!(dialog.attr("role").await?.as_deref() == Some("dialog"));
            ensure!(dialog.attr("aria-modal").await?.as_deref() == Some("true"));
            ensure!(
                app.find("signin-error")
                    .await?
                    .attr("aria-live")
                    .await?
                    .as_deref()
                    == Some("assertive")
            );
            ensure!(
                app.find("logout-progress")
                    .await?
                    .attr("aria-live")
                    .await?
                    .as_deref()
                    == Some("polite")
            );

            // Enter on the focused *Log out* opens the dialog with the focus on Cancel.
            run_script(app, "document.getElementById('logout-button').focus();").await?;
            press(app, &Key::Enter).await?;
            app.wait_visible("logout-dialog", DEFAULT_WAIT).await?;
            ensure!(
                focused_id(app).await? == "logout-cancel",
                "the focus is not on Cancel"
            );

            // Tab and Shift+Tab cycle through the dialog's two buttons only.
            let mut seen = Vec::new();
            for _ in 0..5 {
                press(app, &Key::Tab).await?;
                seen.push(focused_id(app).await?);
            }
            ensure!(
                seen == [
                    "logout-confirm",
                    "logout-cancel",
                    "logout-confirm",
                    "logout-cancel",
                    "logout-confirm"
                ],
                "Tab left the dialog: {seen:?}"
            );
            let mut seen = Vec::new();
            for _ in 0..3 {
                press(app, &(Key::Shift + &Key::Tab)).await?;
                seen.push(focused_id(app).await?);
            }
            ensure!(
                seen == ["logout-cancel", "logout-confirm", "logout-cancel"],
                "Shift+Tab left the dialog: {seen:?}"
            );

            // Escape cancels: the dialog closes, the focus returns to *Log out*, nothing changes.
            press(app, &Key::Escape).await?;
            wait_hidden(app, "logout-dialog", DEFAULT_WAIT).await?;
            ensure!(
                focused_id(app).await? == "logout-button",
                "the focus did not return to Log out"
            );
            ensure!(app.is_visible("profile-view").await?, "Escape signed out");
            ensure!(
                world
                    .store_json()?
                    .is_some_and(|store| store.get("session").is_some()),
                "Escape cleared the store"
            );

            // Cancel by click returns the focus too, and Enter on *Log out* in the dialog logs out.
            press(app, &Key::Enter).await?;
            app.wait_visible("logout-dialog", DEFAULT_WAIT).await?;
            app.click("logout-cancel").await?;
            wait_hidden(app, "logout-dialog", DEFAULT_WAIT).await?;
            ensure!(
                focused_id(app).await? == "logout-button",
                "Cancel did not return the focus"
            );
            press(app, &Key::Enter).await?;
            app.wait_visible("logout-dialog", DEFAULT_WAIT).await?;
            press(app, &Key::Tab).await?;
            ensure!(focused_id(app).await? == "logout-confirm");
            press(app, &Key::Enter).await?;
            app.wait_visible("signin-view", DEFAULT_WAIT).await?;
            ensure!(
                focused_id(app).await? == "username",
                "the focus is not on the user name"
            );
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
async fn disconnect_and_connect_keep_session() {
    let _exclusive = exclusive().await;

    scenario("desktop-disconnect", embedded_hub(), async |world| {
        world.launch_app().await?;
        let url = world.server.url();
        let password = password(world, "alice");
        let app = world.app();
        app.sign_in(&url, "alice", &password).await?;
        wait_connected_and_answering(app).await?;
        let database = world.server.database_url();
        let peers = db::peers(&database).await?;
        let store = world.store_json()?.context("no credential store")?;
        let address = app.text("profile-address").await?;
        ensure!(
            app.is_visible("disconnect-button").await?,
            "no Disconnect button"
        );
        ensure!(
            !app.is_visible("connect-button").await?,
            "Connect shows while connected"
        );
        check_private_files(world)?;

        app.click("disconnect-button").await?;
        app.wait_visible("connect-button", DEFAULT_WAIT).await?;

        ensure!(
            !app.is_visible("disconnect-button").await?,
            "Disconnect still shows"
        );
        let state = wait_for(
            "the stopped tunnel",
            DEFAULT_WAIT,
            async || attribute(app, "tunnel-state", "data-kind").await,
            |kind| kind == "stopped",
        )
        .await?;
        ensure!(state == "stopped");
        ensure!(
            attribute(app, "tunnel-server", "data-kind").await? == "not_answering",
            "the server still answers through a stopped tunnel"
        );
        ensure!(
            app.text("profile-address").await? == address,
            "the address changed"
        );
        ensure!(
            db::peers(&database).await? == peers,
            "disconnect changed the database"
        );
        ensure!(
            world.store_json()? == Some(store.clone()),
            "disconnect changed the credential store"
        );

        app.click("connect-button").await?;
        app.wait_visible("disconnect-button", DEFAULT_WAIT).await?;

        wait_connected_and_answering(app).await?;
        ensure!(
            app.text("profile-address").await? == address,
            "the address changed"
        );
        ensure!(
            db::peers(&database).await? == peers,
            "connect changed the database"
        );
        ensure!(
            world.store_json()? == Some(store.clone()),
            "connect changed the credential store"
        );

        let secrets = Secrets::from_store(&store, &password)?;
        app.log_out().await?;
        world.close_app().await?;
        check_logs(world, &secrets)
    })
    .await;
}

#[tokio::test]
async fn second_start_shows_running_app() {
    let _exclusive = exclusive().await;
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none() {
        eprintln!(
            "skipped: no D-Bus session bus, which single instance needs on Linux; run the suite under dbus-run-session"
        );
        return;
    }

    scenario(
        "desktop-single-instance",
        ServerOptions::default(),
        async |world| {
            world.launch_app_on_session_bus().await?;
            let url = world.server.url();
            let password = password(world, "alice");
            world.app().sign_in(&url, "alice", &password).await?;
            let peers = db::peers(&world.server.database_url()).await?;

            let second_log = world.dir().join("second-instance.log");
            let log = std::fs::File::create(&second_log)?;
            let mut second = tokio::process::Command::new(workspace_binary("camwire")?)
                .env("XDG_DATA_HOME", world.data_home())
                .env("RUST_LOG", "info,camwire=debug,camwire_client=debug")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .context("failed to start a second instance")?;
            let status = tokio::time::timeout(Duration::from_secs(20), second.wait())
                .await
                .context("the second instance kept running")??;

            let output = std::fs::read_to_string(&second_log)?;
            ensure!(
                status.success(),
                "the second instance failed with {status}: {output}"
            );
            ensure!(
                !output.contains("resumed the saved session"),
                "the second instance resumed the session: {output}"
            );
            ensure!(
                !output.contains("tunnel started"),
                "the second instance started a tunnel: {output}"
            );
            wait_for(
                "the running app's note of the second start",
                DEFAULT_WAIT,
                async || Ok(std::fs::read_to_string(world.app_log_path()).unwrap_or_default()),
                |log| log.contains("Camwire was started again"),
            )
            .await?;
            ensure!(
                world.app().is_visible("profile-view").await?,
                "the running app lost its session"
            );
            ensure!(
                db::peers(&world.server.database_url()).await? == peers,
                "the second start changed the database"
            );
            Ok(())
        },
    )
    .await;
}

/// Returns the options of a server whose embedded WireGuard hub listens on a free loopback
/// port, so that the app's tunnel connects.
fn embedded_hub() -> ServerOptions {
    ServerOptions {
        extra_arguments: ["--peer-backend", "embedded", "--wg-listen", "127.0.0.1:0"]
            .map(str::to_owned)
            .to_vec(),
        ..ServerOptions::default()
    }
}

/// Waits until the profile shows a connected tunnel and the server replying through it.
async fn wait_connected_and_answering(app: &AppSession) -> Result<()> {
    wait_for(
        "a connected tunnel",
        DEFAULT_WAIT,
        async || attribute(app, "tunnel-state", "data-kind").await,
        |kind| kind == "connected",
    )
    .await?;
    wait_for(
        "the server's reply through the tunnel",
        DEFAULT_WAIT,
        async || attribute(app, "tunnel-server", "data-kind").await,
        |kind| kind == "answering",
    )
    .await?;
    Ok(())
}

/// Checks that the credential file is readable by its owner only, and its folder too.
fn check_private_files(world: &World) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;

    let store = world.store_path();
    let file_mode = std::fs::metadata(&store)?.permissions().mode() & 0o777;
    let folder = store.parent().context("the store has a folder")?;
    let folder_mode = std::fs::metadata(folder)?.permissions().mode() & 0o777;
    ensure!(
        file_mode == 0o600,
        "{} has mode {file_mode:o}",
        store.display()
    );
    ensure!(
        folder_mode == 0o700,
        "{} has mode {folder_mode:o}",
        folder.display()
    );
    Ok(())
}

/// The secrets of one session, to look for in logs.
struct Secrets {
    token: String,
    private_key: String,
    password: String,
}

impl Secrets {
    fn from_store(store: &Value, password: &str) -> Result<Self> {
        let session = store.get("session").context("the store has no session")?;
        let text = |name: &str| -> Result<String> {
            let value = session[name]
                .as_str()
                .with_context(|| format!("the session has no {name}"))?;
            Ok(value.to_owned())
        };
        Ok(Self {
            token: text("access_token")?,
            private_key: text("private_key")?,
            password: password.to_owned(),
        })
    }
}

/// Checks that the app wrote its log files and that neither they nor its stderr contain a
/// secret of the session.
fn check_logs(world: &World, secrets: &Secrets) -> Result<()> {
    let folder = app_data(world).join("logs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
        .with_context(|| format!("no log folder {}", folder.display()))?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("camwire.") && name.ends_with(".log"))
        })
        .collect();
    files.push(world.app_log_path());

    let mut file_text = String::new();
    for path in &files {
        file_text.push_str(
            &std::fs::read_to_string(path)
                .with_context(|| format!("failed to read {}", path.display()))?,
        );
    }
    ensure!(
        file_text.contains("disconnected: stopped the tunnel"),
        "the logs miss the disconnect"
    );
    ensure!(
        file_text.contains("connected: started the tunnel"),
        "the logs miss the connect"
    );
    for (name, secret) in [
        ("token", &secrets.token),
        ("private key", &secrets.private_key),
        ("password", &secrets.password),
    ] {
        ensure!(!secret.is_empty(), "the {name} is empty");
        for path in &files {
            let text = std::fs::read_to_string(path)?;
            ensure!(
                !text.contains(secret.as_str()),
                "{} contains the {name}",
                path.display()
            );
        }
    }
    Ok(())
}

/// Checks the `.deb` that `CAMWIRE_DEB` names: binary, desktop entry, icons and dependencies.
#[test]
fn deb_bundle_contents() {
    let Some(deb) = std::env::var_os("CAMWIRE_DEB") else {
        assert!(
            std::env::var("CAMWIRE_REQUIRE_BUNDLE").as_deref() != Ok("1"),
            "CAMWIRE_REQUIRE_BUNDLE=1 but CAMWIRE_DEB is not set; build the bundle with \
             `npx --yes @tauri-apps/cli@^2 build --bundles deb` and set CAMWIRE_DEB to the .deb"
        );
        eprintln!("skipped: set CAMWIRE_DEB to a .deb built by `tauri build` to check it");
        return;
    };
    let deb = PathBuf::from(deb);
    assert!(
        deb.is_file(),
        "CAMWIRE_DEB names no file: {}",
        deb.display()
    );

    let info = dpkg_deb(&["--info"], &deb);
    let contents = dpkg_deb(&["--contents"], &deb);
    // dpkg-deb lists paths as the archive stores them, with or without a leading `./`.
    let paths: Vec<&str> = contents
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(|path| path.trim_start_matches("./"))
        .collect();

    assert!(info.contains("Package: camwire"), "{info}");
    assert!(info.contains("Section: net"), "{info}");
    let depends = info
        .lines()
        .find_map(|line| line.trim().strip_prefix("Depends:"))
        .unwrap_or_else(|| panic!("no Depends line: {info}"));
    let packages: Vec<&str> = depends.split(',').map(str::trim).collect();
    for package in [
        "libwebkit2gtk-4.1-0",
        "libgtk-3-0",
        "libayatana-appindicator3-1",
    ] {
        let count = packages.iter().filter(|found| **found == package).count();
        assert_eq!(count, 1, "Depends names {package} {count} times: {depends}");
    }
    for path in [
        "usr/bin/camwire",
        "usr/share/applications/Camwire.desktop",
        "usr/share/icons/hicolor/32x32/apps/camwire.png",
        "usr/share/icons/hicolor/64x64/apps/camwire.png",
        "usr/share/icons/hicolor/128x128/apps/camwire.png",
        "usr/share/icons/hicolor/256x256@2/apps/camwire.png",
        "usr/share/icons/hicolor/512x512/apps/camwire.png",
    ] {
        assert!(paths.contains(&path), "the .deb lacks {path}: {paths:#?}");
    }

    let unpacked = tempfile::tempdir().expect("temp dir");
    dpkg_deb(&["-x", &deb.to_string_lossy()], unpacked.path());
    let entry = std::fs::read_to_string(
        unpacked
            .path()
            .join("usr/share/applications/Camwire.desktop"),
    )
    .expect("the desktop entry is readable");
    for line in [
        "Exec=camwire",
        "Icon=camwire",
        "Categories=Network;",
        "Terminal=false",
        "Type=Application",
    ] {
        assert!(
            entry.lines().any(|found| found == line),
            "the desktop entry lacks {line:?}: {entry}"
        );
    }
    assert!(entry.contains("Keywords=VPN;"), "{entry}");
}

/// Runs `dpkg-deb ARGUMENTS TARGET` and returns its output.
fn dpkg_deb(arguments: &[&str], target: &Path) -> String {
    let output = std::process::Command::new("dpkg-deb")
        .args(arguments)
        .arg(target)
        .output()
        .expect("dpkg-deb runs; install the dpkg package");
    assert!(
        output.status.success(),
        "dpkg-deb {arguments:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
