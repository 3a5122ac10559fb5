//! Commands the webview may call. Each one is a thin call into the [`Controller`].

use camwire_api::Password;
use camwire_client::Controller;
use tauri::State;

use crate::view::{AppState, SignOutView, user_message};

/// Returns the state once the saved session (if any) has been loaded.
#[tauri::command]
pub async fn app_state(controller: State<'_, Controller>) -> Result<AppState, String> {
    Ok(AppState::from(controller.started_snapshot().await))
}

/// Confirms the saved session with the server, or retries after a failure.
#[tauri::command]
pub async fn check_session(controller: State<'_, Controller>) -> Result<AppState, String> {
    Ok(AppState::from(controller.resume().await))
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
        .map(AppState::from)
        .map_err(|error| user_message(&error))
}

#[tauri::command]
pub async fn sign_out(controller: State<'_, Controller>) -> Result<SignOutView, String> {
    let outcome = controller.sign_out().await;
    Ok(SignOutView::new(outcome, controller.snapshot()))
}
