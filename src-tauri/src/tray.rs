//! The system tray icon: one icon and tooltip per state, and a menu with *Open Camwire*,
//! *Connect*, *Disconnect*, *Log out* and *Quit*.
//!
//! The mapping from the controller's [`Snapshot`] to the tray and from menu ids to actions is
//! pure and unit-tested; [`Tray::build`] and [`perform`] are the Tauri shell around it.

use std::time::Duration;

use camwire_client::{Controller, Phase, Snapshot, TunnelPhase};
use tauri::image::Image;
use tauri::menu::{Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::{TrayIcon, TrayIconBuilder};
use tauri::{AppHandle, Manager as _, Wry};

use crate::window::{self, PageRequest};

/// Interval at which the tray reads the tunnel's state even without a published change,
/// because a handshake completing publishes nothing.
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// State of the tray icon: its image, tooltip and enabled menu items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrayState {
    SignedOut,
    /// Signing in, or the tunnel runs but has no handshake yet.
    Connecting,
    Connected,
    /// Signed in with the tunnel stopped by *Disconnect*.
    Disconnected,
    /// The tunnel could not start; it is started again with backoff.
    Error,
}

/// An entry of the tray menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrayAction {
    /// Shows and focuses the window.
    Show,
    Connect,
    Disconnect,
    /// Shows the window with the page's log-out confirmation dialog.
    LogOut,
    /// Stops the tunnel (bounded) and exits.
    Quit,
}

impl TrayState {
    pub fn from_snapshot(snapshot: &Snapshot) -> Self {
        match snapshot.phase {
            Phase::Starting | Phase::SignedOut | Phase::SigningOut => TrayState::SignedOut,
            Phase::SigningIn => TrayState::Connecting,
            Phase::SignedIn if snapshot.disconnected => TrayState::Disconnected,
            Phase::SignedIn => match snapshot.tunnel.phase {
                TunnelPhase::Connected => TrayState::Connected,
                TunnelPhase::Error { .. } => TrayState::Error,
                // Expired starts a new handshake with the next packet; Stopped is the moment
                // between loading the session and starting its tunnel.
                TunnelPhase::Connecting | TunnelPhase::Expired | TunnelPhase::Stopped => {
                    TrayState::Connecting
                }
            },
        }
    }

    fn icon(self) -> Image<'static> {
        match self {
            TrayState::SignedOut => tauri::include_image!("../icons/tray/signed-out.png"),
            TrayState::Connecting => tauri::include_image!("../icons/tray/connecting.png"),
            TrayState::Connected => tauri::include_image!("../icons/tray/connected.png"),
            TrayState::Disconnected => tauri::include_image!("../icons/tray/disconnected.png"),
            TrayState::Error => tauri::include_image!("../icons/tray/error.png"),
        }
    }
}

/// Returns the tray's tooltip: the state, and who is signed in with which address.
pub fn tooltip(snapshot: &Snapshot) -> String {
    let state = TrayState::from_snapshot(snapshot);
    let who = snapshot.profile.as_ref().map(|profile| {
        format!(
            "{} ({})",
            profile.user.username,
            profile.wireguard.address.addr()
        )
    });

    match (state, who) {
        (TrayState::SignedOut, _) if snapshot.phase == Phase::SigningOut => {
            "Camwire: logging out…".to_owned()
        }
        (TrayState::SignedOut, _) => "Camwire: signed out".to_owned(),
        (TrayState::Connecting, None) => "Camwire: signing in…".to_owned(),
        (TrayState::Connecting, Some(who)) => format!("Camwire: connecting as {who}…"),
        (TrayState::Connected, Some(who)) => format!("Camwire: connected as {who}"),
        (TrayState::Disconnected, Some(who)) => {
            format!("Camwire: disconnected, signed in as {who}")
        }
        (TrayState::Error, Some(who)) => {
            format!("Camwire: the tunnel of {who} failed to start; retrying")
        }
        (state, None) => format!("Camwire: {state:?}"),
    }
}

impl TrayAction {
    /// Every action, in menu order.
    pub const ALL: [TrayAction; 5] = [
        TrayAction::Show,
        TrayAction::Connect,
        TrayAction::Disconnect,
        TrayAction::LogOut,
        TrayAction::Quit,
    ];

    /// Returns the menu item id.
    pub fn id(self) -> &'static str {
        match self {
            TrayAction::Show => "show",
            TrayAction::Connect => "connect",
            TrayAction::Disconnect => "disconnect",
            TrayAction::LogOut => "log-out",
            TrayAction::Quit => "quit",
        }
    }

    /// Returns the action of a menu item id, `None` for an id the tray did not create.
    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|action| action.id() == id)
    }

    pub fn label(self) -> &'static str {
        match self {
            TrayAction::Show => "Open Camwire",
            TrayAction::Connect => "Connect",
            TrayAction::Disconnect => "Disconnect",
            TrayAction::LogOut => "Log out…",
            TrayAction::Quit => "Quit Camwire",
        }
    }

    /// Returns whether the menu offers the action in `state`.
    pub fn is_enabled(self, state: TrayState, phase: Phase) -> bool {
        let has_session = phase == Phase::SignedIn;
        match self {
            TrayAction::Show | TrayAction::Quit => true,
            TrayAction::Connect => state == TrayState::Disconnected,
            TrayAction::Disconnect => has_session && state != TrayState::Disconnected,
            TrayAction::LogOut => has_session,
        }
    }
}

/// The tray icon and its menu items, kept to update them.
pub struct Tray {
    icon: TrayIcon<Wry>,
    items: Vec<(TrayAction, MenuItem<Wry>)>,
}

impl Tray {
    /// Builds the tray icon with its menu, showing `snapshot`.
    pub fn build(app: &AppHandle, snapshot: &Snapshot) -> tauri::Result<Self> {
        let state = TrayState::from_snapshot(snapshot);
        let mut items = Vec::new();
        for action in TrayAction::ALL {
            let enabled = action.is_enabled(state, snapshot.phase);
            let item = MenuItem::with_id(app, action.id(), action.label(), enabled, None::<&str>)?;
            items.push((action, item));
        }

        let separator = PredefinedMenuItem::separator(app)?;
        let menu = Menu::new(app)?;
        for (action, item) in &items {
            if *action == TrayAction::Quit {
                menu.append(&separator)?;
            }
            menu.append(item)?;
        }

        let icon = TrayIconBuilder::with_id("camwire")
            .icon(state.icon())
            .tooltip(tooltip(snapshot))
            .menu(&menu)
            .show_menu_on_left_click(true)
            .on_menu_event(|app, event| {
                let Some(action) = TrayAction::from_id(event.id().as_ref()) else {
                    tracing::debug!(id = ?event.id(), "ignoring an unknown tray menu item");
                    return;
                };
                perform(app, action);
            })
            .build(app)?;

        Ok(Self { icon, items })
    }

    /// Shows `snapshot`: icon, tooltip and which menu items are enabled.
    fn show(&self, snapshot: &Snapshot) -> tauri::Result<()> {
        let state = TrayState::from_snapshot(snapshot);
        self.icon.set_icon(Some(state.icon()))?;
        self.icon.set_tooltip(Some(tooltip(snapshot)))?;
        for (action, item) in &self.items {
            item.set_enabled(action.is_enabled(state, snapshot.phase))?;
        }
        Ok(())
    }

    /// Keeps the tray in step with the controller until the app exits.
    pub fn follow(self, controller: Controller) {
        tauri::async_runtime::spawn(async move {
            let mut changes = controller.subscribe();
            let mut shown = None;
            loop {
                let snapshot = controller.snapshot();
                let view = (
                    TrayState::from_snapshot(&snapshot),
                    tooltip(&snapshot),
                    snapshot.phase,
                );
                if shown.as_ref() != Some(&view) {
                    if let Err(error) = self.show(&snapshot) {
                        tracing::warn!(%error, "could not update the tray icon");
                    }
                    shown = Some(view);
                }

                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep(REFRESH_INTERVAL) => {}
                }
            }
        });
    }
}

/// Carries out a tray menu action. Connect and disconnect call the same controller methods
/// as the page's buttons, then ask the page to show the new state.
pub fn perform(app: &AppHandle, action: TrayAction) {
    tracing::info!(?action, "tray menu action");
    let controller = app.state::<Controller>().inner().clone();

    match action {
        TrayAction::Show => window::show_main(app),
        TrayAction::Connect => {
            let app = app.clone();
            tauri::async_runtime::spawn(async move {
                if let Err(error) = controller.connect().await {
                    tracing::warn!(%error, "could not connect from the tray");
                }
                window::request(&app, PageRequest::Refresh);
            });
        }
        TrayAction::Disconnect => {
            let app = app.clone();
            tauri::async_runtime::spawn(async move {
                controller.disconnect().await;
                window::request(&app, PageRequest::Refresh);
            });
        }
        TrayAction::LogOut => {
            window::show_main(app);
            window::request(app, PageRequest::ConfirmLogOut);
        }
        TrayAction::Quit => app.exit(0),
    }
}

#[cfg(test)]
mod tests {
    use camwire_api::{Role, User, WireguardConfig};
    use camwire_client::{Profile, TunnelStatus};

    use super::*;

    fn snapshot(phase: Phase, tunnel: TunnelPhase, disconnected: bool) -> Snapshot {
        let wireguard: WireguardConfig = serde_json::from_value(serde_json::json!({
            "address": "10.13.0.2/32",
            "server_address": "10.13.0.1",
            "server_public_key": "0fDuLGSYob+8di4t6fr8jydBUwxlaoh5q3si97h4t0E=",
            "endpoint": "127.0.0.1:51820",
            "allowed_ips": ["10.13.0.0/16"],
            "persistent_keepalive": 25,
            "expires_at": "2030-01-01T00:00:00Z",
        }))
        .expect("config parses");
        let profile = (phase == Phase::SignedIn).then(|| Profile {
            user: User {
                id: "u-1".into(),
                username: "alice".into(),
                display_name: "Alice".into(),
                email: "alice@example.com".into(),
                role: Role::User,
            },
            wireguard,
        });

        Snapshot {
            phase,
            server_url: Some("http://127.0.0.1:8080".to_owned()),
            profile,
            server_status: camwire_client::ServerStatus::Confirmed,
            tunnel: TunnelStatus {
                phase: tunnel,
                ..TunnelStatus::stopped()
            },
            disconnected,
            notice: None,
        }
    }

    fn error() -> TunnelPhase {
        TunnelPhase::Error {
            message: "failed to bind".to_owned(),
            failed_starts: 2,
        }
    }

    #[test]
    fn state_follows_phase_and_tunnel() {
        let cases = [
            (
                Phase::Starting,
                TunnelPhase::Stopped,
                false,
                TrayState::SignedOut,
            ),
            (
                Phase::SignedOut,
                TunnelPhase::Stopped,
                false,
                TrayState::SignedOut,
            ),
            (
                Phase::SigningIn,
                TunnelPhase::Stopped,
                false,
                TrayState::Connecting,
            ),
            (
                Phase::SignedIn,
                TunnelPhase::Stopped,
                false,
                TrayState::Connecting,
            ),
            (
                Phase::SignedIn,
                TunnelPhase::Connecting,
                false,
                TrayState::Connecting,
            ),
            (
                Phase::SignedIn,
                TunnelPhase::Expired,
                false,
                TrayState::Connecting,
            ),
            (
                Phase::SignedIn,
                TunnelPhase::Connected,
                false,
                TrayState::Connected,
            ),
            (Phase::SignedIn, error(), false, TrayState::Error),
            (
                Phase::SignedIn,
                TunnelPhase::Stopped,
                true,
                TrayState::Disconnected,
            ),
            (
                Phase::SigningOut,
                TunnelPhase::Connected,
                false,
                TrayState::SignedOut,
            ),
        ];

        for (phase, tunnel, disconnected, expected) in cases {
            let state = TrayState::from_snapshot(&snapshot(phase, tunnel.clone(), disconnected));
            assert_eq!(
                state, expected,
                "{phase:?} {tunnel:?} disconnected={disconnected}"
            );
        }
    }

    #[test]
    fn every_state_has_its_own_tooltip() {
        let snapshots = [
            snapshot(Phase::SignedOut, TunnelPhase::Stopped, false),
            snapshot(Phase::SigningIn, TunnelPhase::Stopped, false),
            snapshot(Phase::SignedIn, TunnelPhase::Connecting, false),
            snapshot(Phase::SignedIn, TunnelPhase::Connected, false),
            snapshot(Phase::SignedIn, TunnelPhase::Stopped, true),
            snapshot(Phase::SignedIn, error(), false),
            snapshot(Phase::SigningOut, TunnelPhase::Stopped, false),
        ];

        let tooltips: Vec<String> = snapshots.iter().map(tooltip).collect();

        let mut unique = tooltips.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), tooltips.len(), "{tooltips:?}");
        assert_eq!(tooltips[3], "Camwire: connected as alice (10.13.0.2)");
        assert_eq!(tooltips[0], "Camwire: signed out");
    }

    #[test]
    fn menu_ids_map_back_to_actions() {
        for action in TrayAction::ALL {
            assert_eq!(TrayAction::from_id(action.id()), Some(action));
        }
        assert_eq!(TrayAction::from_id("connect"), Some(TrayAction::Connect));
        assert_eq!(
            TrayAction::from_id("disconnect"),
            Some(TrayAction::Disconnect)
        );
        assert_eq!(TrayAction::from_id("log-out"), Some(TrayAction::LogOut));
        assert_eq!(TrayAction::from_id("quit"), Some(TrayAction::Quit));
        assert_eq!(TrayAction::from_id("Connect"), None);
        assert_eq!(TrayAction::from_id(""), None);
    }

    #[test]
    fn menu_offers_actions_that_apply() {
        let enabled = |state, phase| -> Vec<TrayAction> {
            TrayAction::ALL
                .into_iter()
                .filter(|action| action.is_enabled(state, phase))
                .collect()
        };

        assert_eq!(
            enabled(TrayState::SignedOut, Phase::SignedOut),
            [TrayAction::Show, TrayAction::Quit]
        );
        assert_eq!(
            enabled(TrayState::Connecting, Phase::SigningIn),
            [TrayAction::Show, TrayAction::Quit]
        );
        assert_eq!(
            enabled(TrayState::Connected, Phase::SignedIn),
            [
                TrayAction::Show,
                TrayAction::Disconnect,
                TrayAction::LogOut,
                TrayAction::Quit
            ]
        );
        assert_eq!(
            enabled(TrayState::Error, Phase::SignedIn),
            [
                TrayAction::Show,
                TrayAction::Disconnect,
                TrayAction::LogOut,
                TrayAction::Quit
            ]
        );
        assert_eq!(
            enabled(TrayState::Disconnected, Phase::SignedIn),
            [
                TrayAction::Show,
                TrayAction::Connect,
                TrayAction::LogOut,
                TrayAction::Quit
            ]
        );
    }

    #[test]
    fn every_state_has_an_icon() {
        let states = [
            TrayState::SignedOut,
            TrayState::Connecting,
            TrayState::Connected,
            TrayState::Disconnected,
            TrayState::Error,
        ];

        let icons: Vec<Vec<u8>> = states
            .iter()
            .map(|state| state.icon().rgba().to_vec())
            .collect();

        for (state, icon) in states.iter().zip(&icons) {
            assert_eq!(icon.len(), 64 * 64 * 4, "{state:?}");
        }
        for (index, icon) in icons.iter().enumerate() {
            for other in &icons[index + 1..] {
                assert_ne!(icon, other, "two states share an icon");
            }
        }
    }
}
