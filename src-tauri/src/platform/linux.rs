//! Linux: tray icons are StatusNotifierItems (libayatana-appindicator), shown only when a
//! StatusNotifier host, such as a desktop panel, runs on the D-Bus session bus.

/// Well-known D-Bus name of the StatusNotifier watcher that panels register items with.
const WATCHER: &str = "org.kde.StatusNotifierWatcher";

/// Returns whether a StatusNotifier watcher owns its name on the session bus, so that a tray
/// icon would show. Without a session bus (Xvfb without `dbus-run-session`) it returns false.
///
/// NOTE: an old X11 panel with only the XEmbed tray would show the icon through
/// libayatana-appindicator's fallback, but counts as no host here.
pub fn tray_host_available() -> bool {
    let connection = match zbus::blocking::Connection::session() {
        Ok(connection) => connection,
        Err(error) => {
            tracing::debug!(%error, "no D-Bus session bus");
            return false;
        }
    };
    let proxy = match zbus::blocking::fdo::DBusProxy::new(&connection) {
        Ok(proxy) => proxy,
        Err(error) => {
            tracing::debug!(%error, "could not reach the D-Bus daemon");
            return false;
        }
    };
    let name = match zbus::names::BusName::try_from(WATCHER) {
        Ok(name) => name,
        Err(error) => {
            tracing::warn!(%error, "invalid StatusNotifier watcher name");
            return false;
        }
    };

    match proxy.name_has_owner(name) {
        Ok(owned) => owned,
        Err(error) => {
            tracing::debug!(%error, "could not ask for the StatusNotifier watcher");
            false
        }
    }
}
