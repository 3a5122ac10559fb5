//! Commands the webview may call. Each one is a thin call into the [`Controller`].

use std::time::SystemTime;

use camwire_api::Password;
use camwire_client::Controller;
use tauri::State;

use crate::view::{AppState, SignOutView, TunnelView, user_message};

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

#[tauri::command]
pub async fn sign_in(
    controller: State<'_, Controller>,
    server_url: String,
    username: String,
    password: Password,
) -> Result<AppState, String> {
    let result = controller.sign_in(&server_url, &username, password).await;
    result
        .map(|snapshot| AppState::new(snapshot, SystemTime::now()))
        .map_err(|error| user_message(&error))
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
