//! Closing the app's window the way a window manager does when the user clicks its close
//! button: an X11 `WM_DELETE_WINDOW` client message to the window of the app's process.
//!
//! WebDriver's Close Window ends the session and kills the app, so the app's own exit path
//! (stop the tunnel, keep the session) would not run. This message makes GTK report a close
//! request to the app instead, as a real quit does.

use anyhow::{Context, Result, bail};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    AtomEnum, ClientMessageEvent, ConnectionExt as _, EventMask, MapState, Window,
};
use x11rb::rust_connection::RustConnection;

/// Sends `WM_DELETE_WINDOW` to every shown window of process `pid` on `$DISPLAY` that
/// accepts it, and returns how many windows got the message.
pub fn request_close(pid: i32) -> Result<usize> {
    let (connection, screen) =
        x11rb::connect(None).context("failed to connect to the X display in DISPLAY")?;
    let root = connection.setup().roots[screen].root;

    let pid_atom = intern(&connection, "_NET_WM_PID")?;
    let protocols_atom = intern(&connection, "WM_PROTOCOLS")?;
    let delete_atom = intern(&connection, "WM_DELETE_WINDOW")?;

    let mut closed = 0;
    for window in windows_below(&connection, root)? {
        if window_pid(&connection, window, pid_atom)? != Some(pid) {
            continue;
        }
        if !is_viewable(&connection, window)? {
            continue;
        }
        if !accepts_protocol(&connection, window, protocols_atom, delete_atom)? {
            continue;
        }

        // Data: the protocol atom, then the time stamp (0 is CurrentTime).
        let message = ClientMessageEvent::new(32, window, protocols_atom, [delete_atom, 0, 0, 0, 0]);
        connection
            .send_event(false, window, EventMask::NO_EVENT, message)
            .context("failed to send WM_DELETE_WINDOW")?;
        closed += 1;
    }

    connection.flush().context("failed to flush the X connection")?;
    if closed == 0 {
        bail!("no window of process {pid} accepts WM_DELETE_WINDOW");
    }
    Ok(closed)
}

fn intern(connection: &RustConnection, name: &str) -> Result<u32> {
    let reply = connection
        .intern_atom(false, name.as_bytes())?
        .reply()
        .with_context(|| format!("failed to intern the atom {name}"))?;
    Ok(reply.atom)
}

/// Returns every window below `root`, depth first.
fn windows_below(connection: &RustConnection, root: Window) -> Result<Vec<Window>> {
    let mut found = Vec::new();
    let mut pending = vec![root];
    while let Some(window) = pending.pop() {
        let tree = connection.query_tree(window)?.reply().context("failed to list child windows")?;
        found.extend(&tree.children);
        pending.extend(&tree.children);
    }
    Ok(found)
}

fn window_pid(connection: &RustConnection, window: Window, pid_atom: u32) -> Result<Option<i32>> {
    let reply = connection
        .get_property(false, window, pid_atom, AtomEnum::CARDINAL, 0, 1)?
        .reply()
        .context("failed to read _NET_WM_PID")?;
    let pid = reply.value32().and_then(|mut values| values.next());
    Ok(pid.and_then(|pid| i32::try_from(pid).ok()))
}

fn is_viewable(connection: &RustConnection, window: Window) -> Result<bool> {
    let attributes = connection
        .get_window_attributes(window)?
        .reply()
        .context("failed to read window attributes")?;
    Ok(attributes.map_state == MapState::VIEWABLE)
}

fn accepts_protocol(connection: &RustConnection, window: Window, protocols_atom: u32, protocol: u32) -> Result<bool> {
    let reply = connection
        .get_property(false, window, protocols_atom, AtomEnum::ATOM, 0, 32)?
        .reply()
        .context("failed to read WM_PROTOCOLS")?;
    Ok(reply.value32().is_some_and(|mut atoms| atoms.any(|atom| atom == protocol)))
}
