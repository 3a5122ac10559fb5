//! Userspace WireGuard for Camwire.

pub mod keys;

pub use keys::{PrivateKey, PublicKey};
