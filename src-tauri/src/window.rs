//! The main window: showing it, and requests to its page from the Rust side.

use std::mem::discriminant;

use camwire_client::{Controller, Phase, Snapshot};
use tauri::{AppHandle, Manager as _};

/// Label of the window in `tauri.conf.json`.
pub const MAIN: &str = "main";

/// A request to the page from outside it, such as from the tray menu.
///
/// The page has no event permission (the store plugin broadcasts every change as an event),
/// so a request is a `camwire:request` DOM event that the app dispatches in the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageRequest {
    /// Read the app state again and render it.
    Refresh,
    /// Open the log-out confirmation dialog.
    ConfirmLogOut,
}

impl PageRequest {
    /// Returns the `detail` of the DOM event; `ui/app.js` handles the same names.
    pub fn name(self) -> &'static str {
        match self {
            PageRequest::Refresh => "refresh",
            PageRequest::ConfirmLogOut => "confirm-logout",
        }
    }

    /// Returns the script that dispatches the request in the page. It contains only the
    /// constant name, never data.
    fn script(self) -> String {
        format!(
            "document.dispatchEvent(new CustomEvent(\"camwire:request\", {{ detail: \"{}\" }}));",
            self.name()
        )
    }
}

/// Shows the main window, restores it when minimized and gives it the focus.
pub fn show_main(app: &AppHandle) {
    let Some(window) = app.get_webview_window(MAIN) else {
        tracing::warn!("the main window is gone; cannot show it");
        return;
    };
    let shown = window
        .unminimize()
        .and_then(|()| window.show())
        .and_then(|()| window.set_focus());
    if let Err(error) = shown {
        tracing::warn!(%error, "could not show the main window");
    }
}

/// Sends a request to the page of the main window.
pub fn request(app: &AppHandle, request: PageRequest) {
    let Some(window) = app.get_webview_window(MAIN) else {
        return;
    };
    if let Err(error) = window.eval(request.script()) {
        tracing::warn!(%error, ?request, "could not send a request to the page");
    }
}

/// Asks the page to refresh when the controller changes the state on its own: a session check
/// that ended the session or changed the server status. Runs until the app exits.
pub fn follow_session_checks(app: AppHandle, controller: Controller) {
    tauri::async_runtime::spawn(async move {
        let mut changes = controller.subscribe();
        let mut before = changes.borrow_and_update().clone();
        while changes.changed().await.is_ok() {
            let after = changes.borrow_and_update().clone();
            if changed_by_session_check(&before, &after) {
                tracing::debug!(phase = ?after.phase, status = ?after.server_status, "asking the page to show the checked session");
                request(&app, PageRequest::Refresh);
            }
            before = after;
        }
    });
}

/// Returns whether the change from `before` to `after` is one that the page did not ask for:
/// the session ended without a sign-out (the server rejected it), or its server status changed
/// while signed in.
///
/// A sign-out moves through `SigningOut`, and a sign-in through `SigningIn`; the page renders
/// those itself, so they need no refresh.
fn changed_by_session_check(before: &Snapshot, after: &Snapshot) -> bool {
    match (before.phase, after.phase) {
        (Phase::SignedIn, Phase::SignedOut) => true,
        (Phase::SignedIn, Phase::SignedIn) => {
            discriminant(&before.server_status) != discriminant(&after.server_status)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use camwire_client::{ServerStatus, TunnelStatus};

    use super::*;

    fn snapshot(phase: Phase, server_status: ServerStatus) -> Snapshot {
        Snapshot {
            phase,
            server_url: None,
            profile: None,
            server_status,
            tunnel: TunnelStatus::stopped(),
            disconnected: false,
            notice: None,
        }
    }

    #[test]
    fn session_check_changes_need_refresh() {
        let confirmed = snapshot(Phase::SignedIn, ServerStatus::Confirmed);
        let unreachable = snapshot(
            Phase::SignedIn,
            ServerStatus::Unreachable {
                message: "Server not reachable".to_owned(),
            },
        );
        let ended = snapshot(Phase::SignedOut, ServerStatus::Unknown);
        let signing_out = snapshot(Phase::SigningOut, ServerStatus::Confirmed);
        let signing_in = snapshot(Phase::SigningIn, ServerStatus::Unknown);

        assert!(changed_by_session_check(&confirmed, &ended));
        assert!(changed_by_session_check(&confirmed, &unreachable));
        assert!(changed_by_session_check(&unreachable, &confirmed));
        assert!(!changed_by_session_check(&confirmed, &confirmed));
        assert!(!changed_by_session_check(&confirmed, &signing_out));
        assert!(!changed_by_session_check(&signing_out, &ended));
        assert!(!changed_by_session_check(&signing_in, &confirmed));
    }

    #[test]
    fn request_script_dispatches_the_name() {
        assert_eq!(
            PageRequest::ConfirmLogOut.script(),
            "document.dispatchEvent(new CustomEvent(\"camwire:request\", { detail: \"confirm-logout\" }));"
        );
    }
}
