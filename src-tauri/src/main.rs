//! Camwire desktop app: a Tauri 2 window over camwire-client's [`Controller`].
//!
//! The webview calls the commands in [`commands`]; the controller owns the session, its
//! WireGuard tunnel and the credential store (tauri-plugin-store, `credentials.json` in the
//! app data folder), which the webview cannot reach.
//!
//! Quitting stops the tunnel and keeps the session, so the next start resumes it. The app has
//! no tray icon, so closing the last window quits.

// Release builds on Windows open no console window next to the app.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod commands;
mod plugin_store;
mod view;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use camwire_client::{ApiOptions, Controller};
use tauri::{AppHandle, Manager as _, RunEvent};

/// Bound on stopping the tunnel at exit: the controller's 2 s tunnel stop bound plus 1 s for
/// an operation that is still running, such as a sign-in. When it passes, the app exits anyway
/// and the operating system closes the tunnel's socket.
const EXIT_BOUND: Duration = Duration::from_secs(3);

fn main() -> anyhow::Result<()> {
    init_logging();
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "starting Camwire");

    let app = tauri::Builder::default()
        .plugin(tauri_plugin_store::Builder::default().build())
        .setup(|app| {
            let store = plugin_store::PluginCredentialStore::open(app.handle())?;
            let controller = Controller::new(Arc::new(store), ApiOptions::default());
            app.manage(controller.clone());

            tauri::async_runtime::spawn(async move {
                let snapshot = controller.resume().await;
                tracing::info!(phase = ?snapshot.phase, status = ?snapshot.server_status, "resume finished");
            });
            Ok(())
        })
        .invoke_handler(tauri::generate_handler![
            commands::app_state,
            commands::check_session,
            commands::check_tunnel,
            commands::sign_in,
            commands::sign_out,
            commands::tunnel_status,
        ])
        .build(tauri::generate_context!())
        .context("the Tauri app failed to start")?;

    let stopped = AtomicBool::new(false);
    let exit_code = app.run_return(move |app, event| {
        // Closing the last window sends `ExitRequested`. `Exit` comes when the event loop
        // ends, after a request or without one, so the first of the two stops the tunnel.
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

/// Stops the tunnel before the process exits, keeping the session saved. Blocks the event
/// loop for at most [`EXIT_BOUND`].
fn stop_tunnel_for_exit(app: &AppHandle) {
    let controller = app.state::<Controller>().inner().clone();
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

/// Logs to stderr, which tauri-driver keeps; `RUST_LOG` overrides the default levels.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,camwire=debug,camwire_client=debug")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
