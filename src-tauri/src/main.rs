//! Camwire desktop app: a Tauri 2 window over camwire-client's [`Controller`].
//!
//! The webview calls the commands in [`commands`]; the controller owns the session and the
//! credential store (tauri-plugin-store, `credentials.json` in the app data folder), which the
//! webview cannot reach.

// Release builds on Windows open no console window next to the app.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod commands;
mod plugin_store;
mod view;

use std::sync::Arc;

use anyhow::Context as _;
use camwire_client::{ApiOptions, Controller};
use tauri::Manager as _;

fn main() -> anyhow::Result<()> {
    init_logging();
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "starting Camwire");

    tauri::Builder::default()
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
            commands::sign_in,
            commands::sign_out,
        ])
        .run(tauri::generate_context!())
        .context("the Tauri app failed to run")?;

    // Quitting keeps the session in the store, so the next start resumes it.
    tracing::info!("Camwire stopped");
    Ok(())
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
