//! Windows and macOS, where the system tray (notification area, menu bar) is always there.

/// Returns whether tray icons can be shown: always, on Windows and macOS.
pub fn tray_host_available() -> bool {
    true
}
