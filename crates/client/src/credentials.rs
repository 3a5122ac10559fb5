//! Credentials of a signed-in device, and their JSON form in the credential store.

use camwire_api::{AccessToken, User, WireguardConfig};
use camwire_tunnel::PrivateKey;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::ServerUrl;

/// Version of the stored JSON shape; a store with another version reads as signed out.
const FORMAT_VERSION: u32 = 1;

/// The signed-in user and the device's WireGuard allocation, as the server last reported them.
///
/// Contains no secret, so it may be shown, logged at DEBUG level and sent to the webview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub user: User,
    pub wireguard: WireguardConfig,
}

/// Everything needed to resume a session: server, access token, device key and cached profile.
///
/// `Debug` shows the token and key as `<redacted>`, and both are wiped from memory on drop.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub server_url: ServerUrl,
    pub access_token: AccessToken,
    /// End of the session as the server announced it at sign-in.
    pub token_expires_at: DateTime<Utc>,
    /// The device's WireGuard private key; only its public key was sent to the server.
    pub private_key: PrivateKey,
    pub profile: Profile,
}

/// Invalid stored credential record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsFormatError {
    #[error("the stored session is not a credential record: {0}")]
    Shape(String),
    #[error(
        "the stored session has format version {found}; this version of Camwire reads {FORMAT_VERSION}"
    )]
    UnknownVersion { found: u32 },
    #[error("the stored session has an invalid server URL: {0}")]
    ServerUrl(String),
    #[error("the stored session has an invalid device key: {0}")]
    PrivateKey(String),
}

/// JSON shape of [`Credentials`] in the store; the key text is wiped on drop.
#[derive(Serialize, Deserialize)]
struct StoredCredentials {
    format: u32,
    server_url: String,
    access_token: AccessToken,
    token_expires_at: DateTime<Utc>,
    /// Base64 of the 32-byte x25519 private key, as `wg genkey` prints it.
    private_key: String,
    user: User,
    wireguard: WireguardConfig,
}

impl Drop for StoredCredentials {
    fn drop(&mut self) {
        self.private_key.zeroize();
    }
}

impl Credentials {
    /// Converts the credentials into their stored JSON form.
    ///
    /// The value contains the token and private key in clear text: write it to the store
    /// and never log it. NOTE: a `serde_json::Value` is not wiped from memory on drop.
    pub fn to_json(&self) -> serde_json::Value {
        let stored = StoredCredentials {
            format: FORMAT_VERSION,
            server_url: self.server_url.to_string(),
            access_token: self.access_token.clone(),
            token_expires_at: self.token_expires_at,
            private_key: self.private_key.to_base64().to_string(),
            user: self.profile.user.clone(),
            wireguard: self.profile.wireguard.clone(),
        };

        serde_json::to_value(&stored)
            .expect("credential fields serialize to JSON: strings, numbers and dates")
    }

    /// Reads credentials from their stored JSON form.
    ///
    /// Errors name the problem but never quote the token or key.
    pub fn from_json(value: serde_json::Value) -> Result<Self, CredentialsFormatError> {
        let format = value.get("format").and_then(serde_json::Value::as_u64);
        match format {
            Some(found) if found != u64::from(FORMAT_VERSION) => {
                return Err(CredentialsFormatError::UnknownVersion {
                    found: u32::try_from(found).unwrap_or(u32::MAX),
                });
            }
            _ => {}
        }

        // serde_json quotes offending values in its messages, so only the position is kept.
        let stored: StoredCredentials = serde_json::from_value(value)
            .map_err(|error| CredentialsFormatError::Shape(describe_shape_error(&error)))?;

        let server_url = ServerUrl::parse(&stored.server_url)
            .map_err(|error| CredentialsFormatError::ServerUrl(error.to_string()))?;
        let private_key = PrivateKey::from_base64(&stored.private_key).map_err(|_| {
            CredentialsFormatError::PrivateKey("not a base64 32-byte key".to_owned())
        })?;

        Ok(Self {
            server_url,
            access_token: stored.access_token.clone(),
            token_expires_at: stored.token_expires_at,
            private_key,
            profile: Profile {
                user: stored.user.clone(),
                wireguard: stored.wireguard.clone(),
            },
        })
    }
}

/// Describes a serde error without the value it may quote (which could be a secret).
fn describe_shape_error(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let missing_field = text.starts_with("missing field");
    if missing_field {
        return text;
    }
    match error.classify() {
        serde_json::error::Category::Data => "a field has the wrong type or value".to_owned(),
        _ => "the record is not valid JSON".to_owned(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use camwire_api::Role;
    use serde_json::json;

    pub(crate) fn sample_credentials() -> Credentials {
        let wireguard: WireguardConfig = serde_json::from_value(json!({
            "address": "10.13.0.2/32",
            "server_address": "10.13.0.1",
            "server_public_key": "0fDuLGSYob+8di4t6fr8jydBUwxlaoh5q3si97h4t0E=",
            "endpoint": "127.0.0.1:51820",
            "allowed_ips": ["10.13.0.0/16"],
            "persistent_keepalive": 25,
            "expires_at": "2030-01-01T00:00:00Z",
        }))
        .expect("sample WireGuard config parses");

        Credentials {
            server_url: ServerUrl::parse("http://127.0.0.1:8080").expect("valid URL"),
            access_token: AccessToken::new("sample-token-3f9a"),
            token_expires_at: "2030-01-01T00:00:00Z".parse().expect("valid date"),
            private_key: PrivateKey::generate(),
            profile: Profile {
                user: User {
                    id: "u-1".into(),
                    username: "alice".into(),
                    display_name: "Alice Liddell".into(),
                    email: "alice@example.com".into(),
                    role: Role::User,
                },
                wireguard,
            },
        }
    }

    #[test]
    fn round_trips_through_json() {
        let credentials = sample_credentials();

        let parsed = Credentials::from_json(credentials.to_json()).expect("own output parses");

        assert_eq!(parsed.server_url, credentials.server_url);
        assert_eq!(parsed.access_token, credentials.access_token);
        assert_eq!(
            parsed.private_key.public_key(),
            credentials.private_key.public_key()
        );
        assert_eq!(parsed.profile, credentials.profile);
    }

    #[test]
    fn debug_hides_token_and_key() {
        let credentials = sample_credentials();
        let key = credentials.private_key.to_base64();

        let printed = format!("{credentials:?}");

        assert!(
            !printed.contains("sample-token-3f9a"),
            "token leaked: {printed}"
        );
        assert!(!printed.contains(key.as_str()), "key leaked: {printed}");
        assert!(printed.contains("alice"));
    }

    #[test]
    fn unknown_version_is_rejected() {
        let mut value = sample_credentials().to_json();
        value["format"] = json!(7);

        let error = Credentials::from_json(value).expect_err("version 7");

        assert_eq!(error, CredentialsFormatError::UnknownVersion { found: 7 });
    }

    #[test]
    fn shape_errors_do_not_quote_secrets() {
        let mut value = sample_credentials().to_json();
        value["private_key"] = json!("not-a-key-secret-ish");
        value["access_token"] = json!(12345);

        let error = Credentials::from_json(value).expect_err("wrong token type");
        let message = error.to_string();

        assert!(!message.contains("12345"), "{message}");
        assert!(!message.contains("not-a-key-secret-ish"), "{message}");
    }

    #[test]
    fn bad_private_key_is_rejected_without_quoting_it() {
        let mut value = sample_credentials().to_json();
        value["private_key"] = json!("c2VjcmV0");

        let error = Credentials::from_json(value).expect_err("short key");

        assert!(
            matches!(error, CredentialsFormatError::PrivateKey(_)),
            "{error}"
        );
        assert!(!error.to_string().contains("c2VjcmV0"));
    }

    #[test]
    fn missing_field_is_named() {
        let mut value = sample_credentials().to_json();
        value.as_object_mut().expect("object").remove("wireguard");

        let error = Credentials::from_json(value).expect_err("no wireguard");

        assert!(
            error.to_string().contains("missing field `wireguard`"),
            "{error}"
        );
    }
}
