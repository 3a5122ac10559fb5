//! Camwire desktop app: a Tauri 2 window and tray icon over camwire-client's [`Controller`].
//!
//! The webview calls the commands in [`commands`]; the controller owns the session, its
//! WireGuard tunnel and the credential store (tauri-plugin-store, `credentials.json` in the
//! app data folder), which the webview cannot reach. The settings live in `settings.json`
//! beside it, and the logs in daily files in the app's log folder.
//!
//! Only one instance runs: starting Camwire again shows the running window. While a tray icon
//! is shown, closing the window keeps the app running; *Quit* in the tray menu exits. Without
//! a tray (no StatusNotifier host on Linux), closing the window quits. Quitting stops the
//! tunnel and keeps the session, so the next start resumes it.

// Release builds on Windows open no console window next to the app.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod commands;
mod log_export;
mod logging;
mod platform;
mod plugin_store;
mod settings;
mod tray;
mod view;
mod window;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use camwire_client::{ApiOptions, Controller};
use tauri::{AppHandle, Manager as _, RunEvent, WindowEvent};

use crate::logging::LogControl;
use crate::settings::SettingsStore;

/// Bound on stopping the tunnel at exit: the controller's 2 s tunnel stop bound plus 1 s for
/// an operation that is still running, such as a sign-in. When it passes, the app exits anyway
/// and the operating system closes the tunnel's socket.
const EXIT_BOUND: Duration = Duration::from_secs(3);

/// Argument of the start-at-login entry: such a start stays in the tray when there is one.
const AUTOSTART_ARG: &str = "--autostart";

/// Whether the tray icon was created, so that closing the window may hide it.
struct TrayCreated(bool);

fn main() -> anyhow::Result<()> {
    let logs = LogControl::init();
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "starting Camwire");

    let app = tauri::Builder::default()
        // First, so that a second instance exits before the other plugins set up.
        .plugin(tauri_plugin_single_instance::init(
            |app, _arguments, _folder| {
                tracing::info!("Camwire was started again; showing the running window");
                window::show_main(app);
            },
        ))
        .plugin(tauri_plugin_store::Builder::default().build())
        .plugin(tauri_plugin_dialog::init())
        .plugin(
            tauri_plugin_autostart::Builder::new()
                .app_name("Camwire")
                .arg(AUTOSTART_ARG)
                .build(),
        )
        .manage(logs)
        .setup(|app| {
            setup(app.handle())?;
            Ok(())
        })
        .on_window_event(on_window_event)
        .invoke_handler(tauri::generate_handler![
            commands::app_state,
            commands::check_session,
            commands::check_tunnel,
            commands::connect,
            commands::disconnect,
            commands::export_logs,
            commands::get_settings,
            commands::save_settings,
            commands::sign_in,
            commands::sign_out,
            commands::tunnel_status,
        ])
        .build(tauri::generate_context!())
        .context("the Tauri app failed to start")?;

    let stopped = AtomicBool::new(false);
    let exit_code = app.run_return(move |app, event| {
        // Closing the last window without a tray, or *Quit*, sends `ExitRequested`. `Exit`
        // comes when the event loop ends, after a request or without one, so the first of
        // the two stops the tunnel.
        if matches!(event, RunEvent::ExitRequested { .. } | RunEvent::Exit)
            && !stopped.swap(true, Ordering::SeqCst)
        {
            stop_tunnel_for_exit(app);
        }
    });

    tracing::info!(exit_code, "Camwire stopped");
    if exit_code != 0 {
        std::process::exit(exit_code);
    }
    Ok(())
}

/// Opens the log folder, the settings and the credential store, starts the tray, and resumes
/// the saved session.
fn setup(app: &AppHandle) -> anyhow::Result<()> {
    let logs = app.state::<LogControl>();
    match app.path().app_log_dir() {
        Ok(folder) => match logs.attach_directory(&folder) {
            Ok(()) => tracing::info!(folder = %folder.display(), "writing log files"),
            Err(error) => tracing::warn!(%error, "logging to stderr only"),
        },
        Err(error) => tracing::warn!(%error, "no log folder; logging to stderr only"),
    }

    let settings = SettingsStore::open(app)?;
    logs.apply_saved_level(settings.get().log_level);
    app.manage(settings);

    let store = plugin_store::PluginCredentialStore::open(app);
    let controller = Controller::new(Arc::new(store), ApiOptions::default());
    app.manage(controller.clone());
    window::follow_session_checks(app.clone(), controller.clone());

    let tray_created = start_tray(app, &controller);
    app.manage(TrayCreated(tray_created));
    let autostarted = std::env::args().any(|argument| argument == AUTOSTART_ARG);
    if autostarted && tray_created && platform::tray_host_available() {
        tracing::info!("started at login; staying in the tray");
        if let Some(window) = app.get_webview_window(window::MAIN)
            && let Err(error) = window.hide()
        {
            tracing::warn!(%error, "could not hide the window");
        }
    }

    tauri::async_runtime::spawn(async move {
        let snapshot = controller.resume().await;
        tracing::info!(phase = ?snapshot.phase, status = ?snapshot.server_status, "resume finished");
    });
    Ok(())
}

/// Creates the tray icon; a failure is logged and the app runs without one.
fn start_tray(app: &AppHandle, controller: &Controller) -> bool {
    if !platform::tray_host_available() {
        tracing::warn!(
            "no system tray host found; the tray icon shows if one starts later, and until then closing the window quits"
        );
    }

    match tray::Tray::build(app, &controller.snapshot()) {
        Ok(tray) => {
            tray.follow(controller.clone());
            true
        }
        Err(error) => {
            tracing::warn!(%error, "could not create the tray icon; closing the window quits");
            false
        }
    }
}

/// Hides the main window on close while a tray icon is shown, so that the app keeps running.
fn on_window_event(window: &tauri::Window, event: &WindowEvent) {
    let WindowEvent::CloseRequested { api, .. } = event else {
        return;
    };
    if window.label() != window::MAIN {
        return;
    }
    let tray_created = window
        .app_handle()
        .try_state::<TrayCreated>()
        .is_some_and(|created| created.0);
    if !tray_created || !platform::tray_host_available() {
        tracing::info!("the window was closed and there is no tray icon; quitting");
        return;
    }

    api.prevent_close();
    match window.hide() {
        Ok(()) => tracing::info!("the window was closed; Camwire keeps running in the tray"),
        Err(error) => tracing::warn!(%error, "could not hide the window"),
    }
}

/// Stops the tunnel before the process exits, keeping the session saved. Blocks the event
/// loop for at most [`EXIT_BOUND`].
fn stop_tunnel_for_exit(app: &AppHandle) {
    let Some(controller) = app.try_state::<Controller>() else {
        return;
    };
    let controller = controller.inner().clone();
    let stopped = tauri::async_runtime::block_on(async move {
        tokio::time::timeout(EXIT_BOUND, controller.shutdown()).await
    });

    match stopped {
        Ok(Some(outcome)) => {
            tracing::info!(
                outcome = outcome.kind(),
                ?outcome,
                "stopped the tunnel for exit"
            )
        }
        Ok(None) => tracing::info!("no session; nothing to stop before exit"),
        Err(_) => {
            tracing::warn!(bound = ?EXIT_BOUND, "the tunnel did not stop before exit within the bound; exiting anyway")
        }
    }
}
