//! Checks of the values a server sends, for a client that must not store or use a reply that
//! parses as JSON but cannot work, or that would flood its logs and views.

use std::net::Ipv4Addr;

use crate::{User, WireguardConfig, parse_key};

/// Maximum number of characters of a user's id, user name, display name or e-mail address.
pub const MAX_USER_FIELD_CHARS: usize = 256;

/// Maximum number of characters of a host name. A DNS name has at most 255 octets on the wire,
/// which leaves 253 characters in its dotted text form.
pub const MAX_HOST_CHARS: usize = 253;

/// Number of characters of an invalid value that [`InvalidField`] keeps.
const MAX_QUOTED_CHARS: usize = 64;

/// A field of a reply that fails its check, named by its JSON name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {value:?}: {reason}")]
pub struct InvalidField {
    /// JSON name of the field, such as `endpoint`.
    pub field: &'static str,
    /// The value, cut to its first 64 characters with an ellipsis after them.
    pub value: String,
    /// Reason the value is invalid, such as `the port is 0; expected 1 to 65535`.
    pub reason: String,
}

impl InvalidField {
    /// Creates the error, cutting `value` to its first 64 characters.
    pub fn new(field: &'static str, value: &str, reason: impl Into<String>) -> Self {
        Self {
            field,
            value: shorten(value, MAX_QUOTED_CHARS),
            reason: reason.into(),
        }
    }
}

impl WireguardConfig {
    /// Checks that a tunnel can be started from this config: a valid server public key and
    /// endpoint, a device address that is a usable `/32`, and a server address inside
    /// `allowed_ips`.
    ///
    /// The lease's end and the keepalive interval are not checked, because every value of
    /// their types is usable.
    pub fn validate(&self) -> Result<(), InvalidField> {
        parse_key(&self.server_public_key).map_err(|error| {
            let reason = match error {
                crate::KeyError::NotBase64 { .. } => {
                    "not base64 of a 32-byte x25519 key".to_owned()
                }
                crate::KeyError::WrongLength { len, .. } => {
                    format!("decodes to {len} bytes; expected {}", crate::KEY_LEN)
                }
            };
            InvalidField::new("server_public_key", &self.server_public_key, reason)
        })?;

        validate_endpoint(&self.endpoint)
            .map_err(|reason| InvalidField::new("endpoint", &self.endpoint, reason))?;

        let address = self.address.to_string();
        if self.address.prefix_len() != 32 {
            return Err(InvalidField::new(
                "address",
                &address,
                "expected a single address with prefix length /32",
            ));
        }
        if let Some(reason) = unusable_address_reason(self.address.addr()) {
            return Err(InvalidField::new("address", &address, reason));
        }

        if self.server_address == self.address.addr() {
            return Err(InvalidField::new(
                "server_address",
                &self.server_address.to_string(),
                "equals the device's address",
            ));
        }
        if !self
            .allowed_ips
            .iter()
            .any(|network| network.contains(&self.server_address))
        {
            return Err(InvalidField::new(
                "server_address",
                &self.server_address.to_string(),
                "not inside any network of allowed_ips, so no packet to it would enter the tunnel",
            ));
        }
        Ok(())
    }
}

impl User {
    /// Checks that every text of the profile is short enough to log and show, contains no
    /// control characters, and that the id is not empty.
    ///
    /// The role needs no check because it parses only from `user` or `admin`.
    pub fn validate(&self) -> Result<(), InvalidField> {
        if self.id.is_empty() {
            return Err(InvalidField::new("id", &self.id, "empty"));
        }

        let texts = [
            ("id", &self.id),
            ("username", &self.username),
            ("display_name", &self.display_name),
            ("email", &self.email),
        ];
        for (field, text) in texts {
            let length = text.chars().count();
            if length > MAX_USER_FIELD_CHARS {
                return Err(InvalidField::new(
                    field,
                    text,
                    format!("{length} characters long; expected at most {MAX_USER_FIELD_CHARS}"),
                ));
            }
            if text.chars().any(char::is_control) {
                return Err(InvalidField::new(
                    field,
                    text,
                    "contains control characters",
                ));
            }
        }
        Ok(())
    }
}

/// Checks a WireGuard endpoint `host:port`, where host is a DNS name, an IPv4 address or an
/// IPv6 address in brackets, and returns why it is invalid.
///
/// NOTE: the labels of a DNS name are not checked (at most 63 characters, none empty), so such
/// a name passes here and fails at the tunnel's lookup, which the tunnel status shows.
fn validate_endpoint(endpoint: &str) -> Result<(), String> {
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        return Err("expected host:port".to_owned());
    };

    match port.parse::<u16>() {
        Ok(0) => return Err("the port is 0; expected 1 to 65535".to_owned()),
        Ok(_) => {}
        Err(_) => return Err("the port is not a number from 1 to 65535".to_owned()),
    }

    if let Some(inner) = host.strip_prefix('[') {
        let Some(inner) = inner.strip_suffix(']') else {
            return Err("the IPv6 address lacks its closing bracket".to_owned());
        };
        return match inner.parse::<std::net::Ipv6Addr>() {
            Ok(_) => Ok(()),
            Err(_) => Err("the host in brackets is not an IPv6 address".to_owned()),
        };
    }

    if host.is_empty() {
        return Err("the host is empty".to_owned());
    }
    let length = host.chars().count();
    if length > MAX_HOST_CHARS {
        return Err(format!(
            "the host is {length} characters long; expected at most {MAX_HOST_CHARS}"
        ));
    }
    let is_host_character =
        |character: char| character.is_ascii_alphanumeric() || matches!(character, '.' | '-' | '_');
    if !host.chars().all(is_host_character) {
        return Err(
            "the host contains characters other than letters, digits, '.', '-' and '_'".to_owned(),
        );
    }
    Ok(())
}

/// Returns why an IPv4 address cannot be a device's tunnel address, if it cannot.
fn unusable_address_reason(address: Ipv4Addr) -> Option<&'static str> {
    if address.is_unspecified() {
        Some("the unspecified address cannot be a tunnel address")
    } else if address.is_loopback() {
        Some("a loopback address cannot be a tunnel address")
    } else if address.is_multicast() {
        Some("a multicast address cannot be a tunnel address")
    } else if address.is_broadcast() {
        Some("the broadcast address cannot be a tunnel address")
    } else {
        None
    }
}

/// Cuts a text to its first `max_chars` characters, with an ellipsis when it was longer, so
/// that a huge value does not reach a log or a message whole.
pub fn shorten(text: &str, max_chars: usize) -> String {
    let mut short: String = text.chars().take(max_chars).collect();
    if text.chars().nth(max_chars).is_some() {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::Role;

    fn config() -> WireguardConfig {
        serde_json::from_value(json!({
            "address": "10.13.0.2/32",
            "server_address": "10.13.0.1",
            "server_public_key": "0fDuLGSYob+8di4t6fr8jydBUwxlaoh5q3si97h4t0E=",
            "endpoint": "vpn.example.com:51820",
            "allowed_ips": ["10.13.0.0/16"],
            "persistent_keepalive": 25,
            "expires_at": "2030-01-01T00:00:00Z",
        }))
        .expect("test config parses")
    }

    fn user() -> User {
        User {
            id: "7f1c".to_owned(),
            username: "alice".to_owned(),
            display_name: "Alice Example".to_owned(),
            email: "alice@example.com".to_owned(),
            role: Role::User,
        }
    }

    #[track_caller]
    fn assert_invalid(config: &WireguardConfig, field: &str) -> InvalidField {
        let error = config.validate().expect_err("config is invalid");
        assert_eq!(error.field, field, "{error}");
        error
    }

    #[test]
    fn valid_config_passes() {
        assert_eq!(config().validate(), Ok(()));
    }

    #[test]
    fn endpoint_forms_that_pass() {
        for endpoint in [
            "127.0.0.1:51820",
            "vpn.example.com:1",
            "vpn-1.example_site.org:65535",
            "[::1]:51820",
            "[2001:db8::5]:51820",
        ] {
            let config = WireguardConfig {
                endpoint: endpoint.to_owned(),
                ..config()
            };

            assert_eq!(config.validate(), Ok(()), "{endpoint}");
        }
    }

    #[test]
    fn bad_endpoints_are_rejected() {
        let long_host = format!("{}:51820", "a".repeat(MAX_HOST_CHARS + 1));
        let cases = [
            "",
            "vpn.example.com",
            "vpn.example.com:",
            ":51820",
            "vpn.example.com:0",
            "vpn.example.com:65536",
            "vpn.example.com:-1",
            "vpn.example.com:port",
            "vpn example.com:51820",
            "vpn.example.com\nFAKE LOG LINE:51820",
            "::1:51820",
            "[::1:51820",
            "[not-ipv6]:51820",
            long_host.as_str(),
        ];

        for endpoint in cases {
            let config = WireguardConfig {
                endpoint: endpoint.to_owned(),
                ..config()
            };

            let error = assert_invalid(&config, "endpoint");
            assert!(error.value.chars().count() <= 65, "{error}");
        }
    }

    #[test]
    fn host_of_maximum_length_passes() {
        let config = WireguardConfig {
            endpoint: format!("{}:51820", "a".repeat(MAX_HOST_CHARS)),
            ..config()
        };

        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn bad_server_keys_are_rejected() {
        let cases = ["", "not base64!", "AAAA", &"A".repeat(800_000)];

        for key in cases {
            let config = WireguardConfig {
                server_public_key: key.to_owned(),
                ..config()
            };

            let error = assert_invalid(&config, "server_public_key");
            assert!(error.value.chars().count() <= 65, "{error}");
        }
    }

    #[test]
    fn unusable_addresses_are_rejected() {
        let cases = [
            "10.13.0.0/24",
            "0.0.0.0/32",
            "127.0.0.1/32",
            "224.0.0.1/32",
            "255.255.255.255/32",
        ];

        for address in cases {
            let config = WireguardConfig {
                address: address.parse().expect("valid network"),
                ..config()
            };

            assert_invalid(&config, "address");
        }
    }

    #[test]
    fn server_address_outside_allowed_ips_is_rejected() {
        let config = WireguardConfig {
            allowed_ips: vec!["192.168.0.0/16".parse().expect("valid network")],
            ..config()
        };

        let error = assert_invalid(&config, "server_address");

        assert!(error.reason.contains("allowed_ips"), "{error}");
    }

    #[test]
    fn empty_allowed_ips_are_rejected() {
        let config = WireguardConfig {
            allowed_ips: Vec::new(),
            ..config()
        };

        assert_invalid(&config, "server_address");
    }

    #[test]
    fn server_address_equal_to_device_address_is_rejected() {
        let config = WireguardConfig {
            server_address: Ipv4Addr::new(10, 13, 0, 2),
            ..config()
        };

        assert_invalid(&config, "server_address");
    }

    #[test]
    fn unparsable_allowed_ips_fail_to_parse() {
        let mut value = serde_json::to_value(config()).expect("serializes");
        value["allowed_ips"] = json!(["10.13.0.0/33"]);

        let result = serde_json::from_value::<WireguardConfig>(value);

        assert!(result.is_err());
    }

    #[test]
    fn valid_user_passes() {
        assert_eq!(user().validate(), Ok(()));
    }

    #[test]
    fn user_field_of_maximum_length_passes() {
        let user = User {
            display_name: "é".repeat(MAX_USER_FIELD_CHARS),
            ..user()
        };

        assert_eq!(user.validate(), Ok(()));
    }

    #[test]
    fn overlong_user_fields_are_rejected() {
        let long = "x".repeat(MAX_USER_FIELD_CHARS + 1);
        let cases: [(&str, User); 4] = [
            (
                "id",
                User {
                    id: long.clone(),
                    ..user()
                },
            ),
            (
                "username",
                User {
                    username: long.clone(),
                    ..user()
                },
            ),
            (
                "display_name",
                User {
                    display_name: "x".repeat(900_000),
                    ..user()
                },
            ),
            (
                "email",
                User {
                    email: long.clone(),
                    ..user()
                },
            ),
        ];

        for (field, user) in cases {
            let error = user.validate().expect_err(field);

            assert_eq!(error.field, field);
            assert!(error.reason.contains("at most 256"), "{error}");
            assert_eq!(error.value.chars().count(), MAX_QUOTED_CHARS + 1);
            assert!(error.value.ends_with('…'));
        }
    }

    #[test]
    fn control_characters_in_user_fields_are_rejected() {
        let user = User {
            id: "7f1c\n2026-01-01T00:00:00Z INFO forged line".to_owned(),
            ..user()
        };

        let error = user.validate().expect_err("control character");

        assert_eq!(error.field, "id");
        assert!(error.to_string().contains("\\n"), "{error}");
    }

    #[test]
    fn empty_user_id_is_rejected() {
        let user = User {
            id: String::new(),
            ..user()
        };

        assert_eq!(user.validate().expect_err("empty id").field, "id");
    }

    #[test]
    fn error_names_field_value_and_reason() {
        let config = WireguardConfig {
            endpoint: "vpn.example.com:0".to_owned(),
            ..config()
        };

        let error = config.validate().expect_err("port 0");

        assert_eq!(
            error.to_string(),
            "invalid endpoint \"vpn.example.com:0\": the port is 0; expected 1 to 65535"
        );
    }
}
