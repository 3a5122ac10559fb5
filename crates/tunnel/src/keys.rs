//! WireGuard key pairs (x25519), with private keys that never print and are wiped on drop.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use boringtun::x25519;
use camwire_api::{KEY_LEN, KeyError, parse_key};
use zeroize::Zeroizing;

/// A device's or server's WireGuard private key.
///
/// The inner x25519 secret wipes itself when dropped; `Debug` prints `<redacted>`.
#[derive(Clone)]
pub struct PrivateKey(x25519::StaticSecret);

/// A WireGuard public key: 32 bytes, base64 on the wire and in config files.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl PrivateKey {
    /// Generates a new key from the operating system's random number generator.
    pub fn generate() -> Self {
        Self(x25519::StaticSecret::random_from_rng(rand_core::OsRng))
    }

    /// Parses a base64 private key as `wg genkey` prints it.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let bytes = Zeroizing::new(parse_key(text)?);
        Ok(Self(x25519::StaticSecret::from(*bytes)))
    }

    /// Returns the key as base64, for the credential store or a config file only.
    pub fn to_base64(&self) -> Zeroizing<String> {
        let bytes = Zeroizing::new(self.0.to_bytes());
        Zeroizing::new(STANDARD.encode(*bytes))
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519::PublicKey::from(&self.0).to_bytes())
    }

    /// Returns the boringtun form of the key, for `noise::Tunn`.
    pub fn as_x25519(&self) -> &x25519::StaticSecret {
        &self.0
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("PrivateKey(<redacted>)")
    }
}

impl PublicKey {
    /// Parses a base64 public key as `wg pubkey` prints it.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        parse_key(text).map(Self)
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Returns a short identifier for logs (the first 8 base64 characters).
    pub fn fingerprint(&self) -> String {
        camwire_api::fingerprint(&self.0)
    }

    pub fn as_x25519(&self) -> x25519::PublicKey {
        x25519::PublicKey::from(self.0)
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "PublicKey({})", self.to_base64())
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.to_base64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_key_round_trips_through_base64() {
        let key = PrivateKey::generate();

        let parsed = PrivateKey::from_base64(&key.to_base64()).expect("own output parses");

        assert_eq!(parsed.public_key(), key.public_key());
    }

    #[test]
    fn private_key_debug_is_redacted() {
        let key = PrivateKey::generate();

        let printed = format!("{key:?}");

        assert_eq!(printed, "PrivateKey(<redacted>)");
        assert!(!printed.contains(key.to_base64().as_str()));
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(
            PrivateKey::generate().public_key(),
            PrivateKey::generate().public_key()
        );
    }

    #[test]
    fn public_key_matches_wg_pubkey() {
        // Pair printed by `wg genkey | tee /dev/stderr | wg pubkey` (wireguard-tools v1.0.20210914).
        let private = PrivateKey::from_base64("OCMuYKsAipAZtrLTXbdD8GM5rxJsFmjHwlQGuzMKZF4=")
            .expect("valid private key");

        let public = private.public_key();

        assert_eq!(public.to_base64(), WG_PUBKEY_OF_SAMPLE);
    }

    const WG_PUBKEY_OF_SAMPLE: &str = "0fDuLGSYob+8di4t6fr8jydBUwxlaoh5q3si97h4t0E=";
}
