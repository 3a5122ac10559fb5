//! Checks of base64-encoded WireGuard keys.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Length in bytes of an x25519 key.
pub const KEY_LEN: usize = 32;

/// Why a text is not a WireGuard key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("invalid WireGuard key {value:?}: not base64; expected 44 characters such as `wg pubkey` prints")]
    NotBase64 { value: String },
    #[error("invalid WireGuard key {value:?}: decodes to {len} bytes; expected {KEY_LEN}")]
    WrongLength { value: String, len: usize },
}

/// Decodes a base64 WireGuard key (as `wg genkey` and `wg pubkey` print) into its 32 bytes.
///
/// The error quotes at most the first 64 characters of the value, so that a huge
/// input does not end up in logs or responses whole.
pub fn parse_key(text: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let value = || text.chars().take(64).collect::<String>();

    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| KeyError::NotBase64 { value: value() })?;

    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| KeyError::WrongLength {
        value: value(),
        len: bytes.len(),
    })
}

/// Returns a short, public identifier of a public key for logs: its first 8 base64 characters.
///
/// Only ever pass a public key; a private key must never be logged in any form.
pub fn fingerprint(public_key: &[u8; KEY_LEN]) -> String {
    let mut text = STANDARD.encode(public_key);
    text.truncate(8);
    text
}
