//! The main window: showing it, and requests to its page from the Rust side.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_script_dispatches_the_name() {
        assert_eq!(
            PageRequest::ConfirmLogOut.script(),
            "document.dispatchEvent(new CustomEvent(\"camwire:request\", { detail: \"confirm-logout\" }));"
        );
    }
}
