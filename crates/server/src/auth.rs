//! Password hashing and access tokens.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng as PasswordRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use camwire_api::{AUTHORIZATION_SCHEME, AccessToken, Password};

/// Number of random bytes in an access token (256 bits).
pub const TOKEN_BYTES: usize = 32;

/// Length of an access token in base64url without padding: ceil(32 * 4 / 3).
pub const TOKEN_LEN: usize = 43;

/// Errors of hashing or verifying a password.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("failed to hash the password: {0}")]
    Hash(argon2::password_hash::Error),
    #[error("stored password hash is not a valid PHC string: {0}")]
    InvalidStoredHash(argon2::password_hash::Error),
}

/// Hashes `password` with Argon2id and the argon2 crate's default cost, as a PHC string.
pub fn hash_password(password: &Password) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut PasswordRng);

    let hash = Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .map_err(PasswordError::Hash)?;

    Ok(hash.to_string())
}

/// Checks `password` against a PHC string made by [`hash_password`].
///
/// Verification uses the cost parameters stored in the hash, so hashes made with older
/// parameters keep working.
pub fn verify_password(password: &Password, stored_hash: &str) -> Result<bool, PasswordError> {
    let parsed = PasswordHash::new(stored_hash).map_err(PasswordError::InvalidStoredHash)?;

    match Argon2::default().verify_password(password.expose().as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(other) => Err(PasswordError::Hash(other)),
    }
}

/// Generates a new access token: 256 bits from the operating system's random number
/// generator, as base64url without padding.
pub fn generate_token() -> AccessToken {
    let mut bytes = Zeroizing::new([0u8; TOKEN_BYTES]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());

    AccessToken::new(URL_SAFE_NO_PAD.encode(bytes.as_ref()))
}

/// Returns the SHA-256 of a token as lowercase hex: the only form the database stores.
///
/// A plain hash is enough because the token has 256 bits of entropy, so a stolen
/// database does not let anyone guess tokens from their hashes.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Problems of an `Authorization` header without a usable bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    /// The header is absent.
    Missing,
    /// The header is not `Bearer <token>` with a token of the shape the server issues.
    Malformed,
}

/// Extracts the token from an `Authorization` header value such as `Bearer <token>`.
///
/// The scheme is matched without regard to case, as HTTP auth schemes are. The token must
/// look like one that [`generate_token`] makes, so garbage never reaches the database.
pub fn parse_bearer(header: Option<&[u8]>) -> Result<&str, BearerError> {
    let Some(header) = header else {
        return Err(BearerError::Missing);
    };

    let Ok(text) = std::str::from_utf8(header) else {
        return Err(BearerError::Malformed);
    };

    let Some((scheme, token)) = text.trim().split_once(' ') else {
        return Err(BearerError::Malformed);
    };

    if !scheme.eq_ignore_ascii_case(AUTHORIZATION_SCHEME) {
        return Err(BearerError::Malformed);
    }

    let token = token.trim_start();
    let well_formed = token.len() == TOKEN_LEN
        && token
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');

    if !well_formed {
        return Err(BearerError::Malformed);
    }

    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hash_verifies_only_the_same_password() {
        let password = Password::new("correct horse battery staple");

        let hash = hash_password(&password).expect("hashes");

        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password(&password, &hash).expect("verifies"));
        assert!(!verify_password(&Password::new("wrong"), &hash).expect("verifies"));
    }

    #[test]
    fn same_password_gets_different_salts() {
        let password = Password::new("hunter2");

        assert_ne!(
            hash_password(&password).expect("hashes"),
            hash_password(&password).expect("hashes")
        );
    }

    #[test]
    fn invalid_stored_hash_is_an_error() {
        let result = verify_password(&Password::new("x"), "not a phc string");

        assert!(matches!(result, Err(PasswordError::InvalidStoredHash(_))));
    }

    #[test]
    fn token_is_43_base64url_characters() {
        let token = generate_token();

        assert_eq!(token.expose().len(), TOKEN_LEN);
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(token.expose())
                .expect("base64url")
                .len(),
            TOKEN_BYTES
        );
        assert_ne!(generate_token(), token);
    }

    #[test]
    fn token_hash_is_sha256_hex() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn bearer_header_parses() {
        let token = generate_token();
        let header = format!("Bearer {}", token.expose());
        let lowercase = format!("bearer {}", token.expose());

        assert_eq!(parse_bearer(Some(header.as_bytes())), Ok(token.expose()));
        assert_eq!(parse_bearer(Some(lowercase.as_bytes())), Ok(token.expose()));
    }

    #[test]
    fn bad_bearer_headers_are_rejected() {
        let token = generate_token();
        let cases: Vec<(Option<Vec<u8>>, BearerError)> = vec![
            (None, BearerError::Missing),
            (Some(b"".to_vec()), BearerError::Malformed),
            (Some(b"Bearer".to_vec()), BearerError::Malformed),
            (
                Some(format!("Basic {}", token.expose()).into_bytes()),
                BearerError::Malformed,
            ),
            (
                Some(token.expose().as_bytes().to_vec()),
                BearerError::Malformed,
            ),
            (Some(b"Bearer short".to_vec()), BearerError::Malformed),
            (
                Some(format!("Bearer {}x", token.expose()).into_bytes()),
                BearerError::Malformed,
            ),
            (
                Some(format!("Bearer {}", "+".repeat(TOKEN_LEN)).into_bytes()),
                BearerError::Malformed,
            ),
            (Some(b"Bearer \xff\xfe".to_vec()), BearerError::Malformed),
        ];

        for (header, expected) in cases {
            assert_eq!(parse_bearer(header.as_deref()), Err(expected), "{header:?}");
        }
    }
}
