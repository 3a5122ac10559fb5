//! Harness of Camwire's end-to-end suites.
//!
//! - [`server::ServerProcess`]: a real `camwire-server` child process with its own files.
//! - [`driver::AppSession`]: the real app in the real WebKit webview through tauri-driver.
//! - [`proxy::FaultProxy`]: a named fake in front of the real server for faults that real
//!   parts cannot produce on demand.
//! - [`world::scenario`]: one scenario's set-up, tear-down and failure artifacts.

pub mod db;
pub mod driver;
pub mod hub;
pub mod process;
pub mod proxy;
pub mod server;
pub mod window;
pub mod world;
