//! Session core of the Camwire desktop client, without any GUI.
//!
//! - [`ApiClient`] calls the server's HTTP API with bounded time and reply size.
//! - [`Session`] signs in (`POST /login`, a new device key, `POST /wireguard/config`,
//!   `GET /me`), confirms a resumed session, runs the session's WireGuard tunnel
//!   ([`Session::ensure_tunnel`]), and signs out.
//! - [`CredentialStore`] keeps the credentials between runs ([`JsonFileStore`], [`MemoryStore`],
//!   or the desktop app's tauri-plugin-store backend).
//! - [`Controller`] is the state machine the desktop app's commands call: it serializes sign-in,
//!   sign-out and resume, and publishes a secret-free [`Snapshot`] of the state, the tunnel's
//!   [`TunnelStatus`] included.
//!
//! The tunnel is camwire-tunnel's userspace WireGuard client. While it runs, a probe sends
//! `GET /healthz` to port 80 of the server's VPN address through it (every 5 s by default)
//! and records whether the server replies and how fast. A tunnel that cannot start does not
//! fail the sign-in; it is started again later.
//!
//! Sign-out always ends the session on the device: `POST /logout` runs under a short timeout,
//! the tunnel stops under a bound of its own, the stored credentials are cleared whatever the
//! server replied, and a [`SignOutReport`] states which of "confirmed", "unreachable", "token
//! rejected" or "server error" happened and how the tunnel stopped.

mod api;
mod controller;
mod credentials;
mod probe;
mod report;
mod server_url;
mod session;
mod status;
mod store;
mod supervisor;

pub use api::{ApiClient, ApiError, ApiOptions, Route, UnreachableReason};
pub use controller::{
    Controller, ControllerError, ControllerOptions, Notice, Phase, ServerStatus, SignOutOutcome,
    Snapshot,
};
pub use credentials::{Credentials, CredentialsFormatError, Profile};
pub use probe::{HEALTH_PORT, ProbeError, ReplyProgress, parse_health_reply, probe_health};
pub use report::{ServerOutcome, SignOutReport, StoreOutcome, TunnelOutcome};
pub use server_url::{ServerUrl, ServerUrlError};
pub use session::{Confirmation, Session, SignInError, SignInStep};
pub use status::{
    ServerProbe, TunnelPhase, TunnelStatus, format_age, format_bytes, format_round_trip,
};
pub use store::{
    CredentialStore, JsonFileStore, MemoryStore, SESSION_KEY, StoreError, create_private_folder,
    credentials_from_document, credentials_from_entry,
};
pub use supervisor::TunnelSettings;
