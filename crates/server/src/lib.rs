//! camwire-server: the reference backend of Camwire.
//!
//! A user signs in with `POST /login`, registers the device's WireGuard public key with
//! `POST /wireguard/config` and gets the lowest free address of the pool; `POST /logout`
//! removes the peer, frees the address and ends the session in one transaction. The
//! database (SQLite or PostgreSQL through sqlx) decides who holds which address; a
//! [`backend::PeerBackend`] applies the peers to WireGuard.
//!
//! Several server processes may share one database: each keeps its own back end in step
//! with the others' changes ([`replica`]), and a sweeper on each reclaims idle and
//! expired peers ([`sweeper`]).
//!
//! [`start`] runs a server on a loopback or public address; [`App::open`] and [`router`]
//! give the same service without a listener or background tasks, for tests that call it
//! directly.

pub mod admin;
pub mod atomic_file;
pub mod auth;
pub mod backend;
pub mod config;
pub mod db;
pub mod error;
mod http;
pub mod metrics;
pub mod peers;
pub mod pool;
pub mod rate_limit;
pub mod replica;
mod server;
mod state;
pub mod sweeper;
pub mod users;
pub mod wg_conf;

pub use config::ServerConfig;
pub use error::Error;
pub use http::{MAX_BODY_BYTES, OPENAPI_JSON, route_table, router};
pub use server::{RunningServer, SHUTDOWN_GRACE, ServeError, start};
pub use state::{App, AppState, BackgroundTasks, StartError};
