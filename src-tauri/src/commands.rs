//! Commands the webview may call. Each one is a thin call into the [`Controller`], the
//! settings or the log export.

use std::path::PathBuf;
use std::time::SystemTime;

use camwire_api::Password;
use camwire_client::{Controller, Phase, Snapshot, format_bytes};
use tauri::{AppHandle, Manager as _, State};
use tauri_plugin_autostart::ManagerExt as _;
use tauri_plugin_dialog::DialogExt as _;

use crate::log_export;
use crate::logging::LogControl;
use crate::settings::{Settings, SettingsStore, parse_server_url};
use crate::view::{
    AppState, SaveSettingsView, SettingsView, SignOutView, TunnelView, user_message,
};
use crate::window;

/// Returns the state once the saved session (if any) has been loaded.
#[tauri::command]
pub async fn app_state(controller: State<'_, Controller>) -> Result<AppState, String> {
    let snapshot = controller.started_snapshot().await;
    Ok(AppState::new(snapshot, SystemTime::now()))
}

/// Confirms the saved session with the server, or retries after a failure.
#[tauri::command]
pub async fn check_session(controller: State<'_, Controller>) -> Result<AppState, String> {
    let snapshot = controller.resume().await;
    Ok(AppState::new(snapshot, SystemTime::now()))
}

/// Signs in, applying the settings' rule for plain `http://`, and remembers the server in the
/// settings.
#[tauri::command]
pub async fn sign_in(
    controller: State<'_, Controller>,
    settings: State<'_, SettingsStore>,
    server_url: String,
    username: String,
    password: Password,
) -> Result<AppState, String> {
    parse_server_url(&server_url, settings.get().allow_insecure)?;

    let snapshot = controller
        .sign_in(&server_url, &username, password)
        .await
        .map_err(|error| user_message(&error))?;

    remember_server(&settings, &snapshot);
    Ok(AppState::new(snapshot, SystemTime::now()))
}

#[tauri::command]
pub async fn sign_out(controller: State<'_, Controller>) -> Result<SignOutView, String> {
    let outcome = controller.sign_out().await;
    Ok(SignOutView::new(
        outcome,
        controller.snapshot(),
        SystemTime::now(),
    ))
}

/// Starts the tunnel again after *Disconnect*; the tray's *Connect* calls the same method.
#[tauri::command]
pub async fn connect(controller: State<'_, Controller>) -> Result<AppState, String> {
    let snapshot = controller
        .connect()
        .await
        .map_err(|error| user_message(&error))?;
    Ok(AppState::new(snapshot, SystemTime::now()))
}

/// Stops the tunnel and keeps the session; the tray's *Disconnect* calls the same method.
#[tauri::command]
pub async fn disconnect(controller: State<'_, Controller>) -> Result<AppState, String> {
    controller.disconnect().await;
    Ok(AppState::new(controller.snapshot(), SystemTime::now()))
}

/// Returns the tunnel's state, counters and last probe result, for the page to poll.
#[tauri::command]
pub fn tunnel_status(controller: State<'_, Controller>) -> TunnelView {
    TunnelView::new(&controller.tunnel_status(), SystemTime::now())
}

/// Probes the server through the tunnel now; the result arrives through `tunnel_status`.
#[tauri::command]
pub fn check_tunnel(controller: State<'_, Controller>) {
    controller.check_tunnel();
}

#[tauri::command]
pub fn get_settings(
    settings: State<'_, SettingsStore>,
    logs: State<'_, LogControl>,
) -> SettingsView {
    SettingsView::new(settings.get(), logs.directory())
}

/// Validates and saves the settings, and applies the log level and start at login.
///
/// A new server while signed in needs a log-out first. Without `confirm_logout` nothing is
/// saved and the result has status `logout_required`, so the page requests a confirmation;
/// with it, the session is signed out first.
#[tauri::command]
pub async fn save_settings(
    app: AppHandle,
    controller: State<'_, Controller>,
    store: State<'_, SettingsStore>,
    logs: State<'_, LogControl>,
    settings: Settings,
    confirm_logout: bool,
) -> Result<SaveSettingsView, String> {
    let settings = settings.validated()?;
    let before = store.get();

    if needs_logout(&controller.snapshot(), &settings) {
        if !confirm_logout {
            return Ok(SaveSettingsView::logout_required(
                SettingsView::new(before, logs.directory()),
                controller.snapshot(),
                SystemTime::now(),
            ));
        }
        tracing::info!("logging out to change the server");
        controller.sign_out().await;
    }

    apply_start_at_login(&app, settings.start_at_login)?;
    if settings.log_level != before.log_level {
        logs.set_level(settings.log_level);
    }
    store.save(settings.clone())?;
    tracing::info!(?settings, "saved the settings");

    Ok(SaveSettingsView::saved(
        SettingsView::new(settings, logs.directory()),
        controller.snapshot(),
        SystemTime::now(),
    ))
}

/// Asks for a file in a native save dialog (opened from Rust; the webview has no dialog
/// permission) and writes the log files into it. Returns a sentence for the page, or `None`
/// when the user cancelled.
#[tauri::command]
pub async fn export_logs(
    app: AppHandle,
    logs: State<'_, LogControl>,
) -> Result<Option<String>, String> {
    let Some(folder) = logs.directory() else {
        return Err(
            "Camwire is not writing log files, because it could not open its log folder; \
             its log goes to the terminal only."
                .to_owned(),
        );
    };

    let Some(destination) = ask_export_path(&app).await else {
        tracing::info!("the log export was cancelled");
        return Ok(None);
    };
    let target = destination.clone();
    let summary =
        tauri::async_runtime::spawn_blocking(move || log_export::export_logs(&folder, &target))
            .await
            .map_err(|error| format!("The log export stopped unexpectedly ({error}); try again."))?
            .map_err(|error| user_message(&error))?;

    tracing::info!(path = %destination.display(), files = summary.files.len(), bytes = summary.bytes, "exported the logs");
    Ok(Some(format!(
        "Saved {} log file(s), {}, to {}.",
        summary.files.len(),
        format_bytes(summary.bytes),
        destination.display()
    )))
}

/// Returns whether saving `settings` changes the server of the current session.
pub fn needs_logout(snapshot: &Snapshot, settings: &Settings) -> bool {
    let signed_in = matches!(snapshot.phase, Phase::SignedIn | Phase::SigningIn);
    let Some(new_server) = settings.server_url.as_deref() else {
        return false;
    };
    signed_in && snapshot.server_url.as_deref() != Some(new_server)
}

/// Saves the session's server as the settings' server, so the next sign-in form shows it.
fn remember_server(settings: &SettingsStore, snapshot: &Snapshot) {
    let mut current = settings.get();
    if snapshot.server_url.is_none() || current.server_url == snapshot.server_url {
        return;
    }
    current.server_url = snapshot.server_url.clone();
    if let Err(error) = settings.save(current) {
        tracing::warn!(%error, "could not remember the server in the settings");
    }
}

/// Creates or removes the autostart entry so that it matches `enabled`.
fn apply_start_at_login(app: &AppHandle, enabled: bool) -> Result<(), String> {
    let autolaunch = app.autolaunch();
    let current = autolaunch.is_enabled().unwrap_or_else(|error| {
        tracing::warn!(%error, "could not read the start-at-login state");
        !enabled
    });
    if current == enabled {
        return Ok(());
    }

    let result = if enabled {
        autolaunch.enable()
    } else {
        autolaunch.disable()
    };
    result.map_err(|error| {
        let action = if enabled { "turn on" } else { "turn off" };
        format!("Could not {action} start at login: {error}. Check your desktop's startup applications settings.")
    })?;
    tracing::info!(enabled, "changed start at login");
    Ok(())
}

/// Opens the native save dialog over the main window and waits for the user's choice.
async fn ask_export_path(app: &AppHandle) -> Option<PathBuf> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let mut dialog = app
        .dialog()
        .file()
        .set_title("Export Camwire logs")
        .set_file_name("camwire-logs.txt")
        .add_filter("Text", &["txt", "log"]);
    if let Some(window) = app.get_webview_window(window::MAIN) {
        dialog = dialog.set_parent(&window);
    }
    dialog.save_file(move |path| {
        let _ = sender.send(path);
    });

    let path = receiver.await.ok()??;
    match path.into_path() {
        Ok(path) => Some(path),
        Err(error) => {
            tracing::warn!(%error, "the save dialog returned a location that is not a file path");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use camwire_client::TunnelStatus;

    use super::*;

    fn snapshot(phase: Phase, server_url: Option<&str>) -> Snapshot {
        Snapshot {
            phase,
            server_url: server_url.map(str::to_owned),
            profile: None,
            server_status: camwire_client::ServerStatus::Unknown,
            tunnel: TunnelStatus::stopped(),
            disconnected: false,
            notice: None,
        }
    }

    fn settings(server_url: Option<&str>) -> Settings {
        Settings {
            server_url: server_url.map(str::to_owned),
            ..Settings::default()
        }
    }

    #[test]
    fn new_server_while_signed_in_needs_logout() {
        let signed_in = snapshot(Phase::SignedIn, Some("http://127.0.0.1:8080"));

        assert!(needs_logout(
            &signed_in,
            &settings(Some("http://127.0.0.1:9090"))
        ));
        assert!(!needs_logout(
            &signed_in,
            &settings(Some("http://127.0.0.1:8080"))
        ));
        assert!(!needs_logout(&signed_in, &settings(None)));
    }

    #[test]
    fn new_server_while_signed_out_needs_no_logout() {
        let signed_out = snapshot(Phase::SignedOut, Some("http://127.0.0.1:8080"));

        assert!(!needs_logout(
            &signed_out,
            &settings(Some("http://127.0.0.1:9090"))
        ));
    }
}
