//! Session core of the Camwire desktop client, without any GUI.
//!
//! - [`ApiClient`] calls the server's HTTP API with bounded time and reply size.
//! - [`Session`] signs in (`POST /login`, a new device key, `POST /wireguard/config`,
//!   `GET /me`), confirms a resumed session, and signs out.
//! - [`CredentialStore`] keeps the credentials between runs ([`JsonFileStore`], [`MemoryStore`],
//!   or the desktop app's tauri-plugin-store backend).
//! - [`Controller`] is the state machine the desktop app's commands call: it serializes sign-in,
//!   sign-out and resume, and publishes a secret-free [`Snapshot`] of the state.
//!
//! Sign-out always ends the session on the device: `POST /logout` runs under a short timeout,
//! the stored credentials are cleared whatever the server replied, and a [`SignOutReport`]
//! states which of "confirmed", "unreachable", "token rejected" or "server error" happened.

mod api;
mod controller;
mod credentials;
mod report;
mod server_url;
mod session;
mod store;

pub use api::{ApiClient, ApiError, ApiOptions, Route, UnreachableReason};
pub use controller::{
    Controller, ControllerError, Notice, Phase, ServerStatus, SignOutOutcome, Snapshot,
};
pub use credentials::{Credentials, CredentialsFormatError, Profile};
pub use report::{ServerOutcome, SignOutReport, StoreOutcome};
pub use server_url::{ServerUrl, ServerUrlError};
pub use session::{Confirmation, Session, SignInError, SignInStep};
pub use store::{
    CredentialStore, JsonFileStore, MemoryStore, SESSION_KEY, StoreError,
    credentials_from_document, credentials_from_entry,
};
