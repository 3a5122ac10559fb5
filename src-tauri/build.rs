//! Embeds `ui/` and the capabilities, and generates the `allow-<command>` permissions of
//! Camwire's commands so that the capability can grant each one by name.

/// Commands the webview may call; each needs an `allow-` permission in `capabilities/`.
const COMMANDS: &[&str] = &[
    "app_state",
    "check_session",
    "check_tunnel",
    "connect",
    "disconnect",
    "export_logs",
    "get_settings",
    "save_settings",
    "sign_in",
    "sign_out",
    "tunnel_status",
];

fn main() {
    let manifest = tauri_build::AppManifest::new().commands(COMMANDS);
    tauri_build::try_build(tauri_build::Attributes::new().app_manifest(manifest))
        .expect("tauri-build failed to check the config, capabilities or icons");
}
