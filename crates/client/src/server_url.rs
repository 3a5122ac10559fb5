//! Validation of the server URL that a user types on the sign-in form.

use std::net::IpAddr;

use reqwest::Url;

/// Maximum number of characters of a rejected value that an error message quotes.
const MAX_QUOTED_CHARS: usize = 120;

/// Address of a Camwire server: `http` or `https`, a host, an optional port, and no path.
///
/// `Display` prints the normalized form without a trailing slash, such as
/// `http://127.0.0.1:8080`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ServerUrl(Url);

/// Invalid server URL. Each message quotes the value and shows how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerUrlError {
    #[error("the server URL is empty; enter an address such as http://127.0.0.1:8080")]
    Empty,

    #[error("invalid server URL {value:?}: it has no scheme; write it as {suggestion:?}")]
    MissingScheme { value: String, suggestion: String },

    #[error(
        "invalid server URL {value:?}: the scheme {scheme:?} is not supported; \
         use http:// or https://, such as {suggestion:?}"
    )]
    UnsupportedScheme {
        value: String,
        scheme: String,
        suggestion: String,
    },

    #[error("invalid server URL {value:?}: it has no host name; write it as http://HOST:PORT")]
    MissingHost { value: String },

    #[error(
        "invalid server URL {value:?}: it must not contain a user name or password; \
         write it as {suggestion:?}"
    )]
    ContainsCredentials { value: String, suggestion: String },

    #[error(
        "invalid server URL {value:?}: remove the {part} {text:?}; the URL names only the server, \
         such as {suggestion:?}"
    )]
    ExtraPart {
        value: String,
        part: &'static str,
        text: String,
        suggestion: String,
    },

    #[error("invalid server URL {value:?}: {reason}; write it as http://HOST:PORT")]
    Malformed { value: String, reason: String },

    /// Plain `http://` to a host other than this computer, without the user's consent.
    #[error(
        "the server URL {value:?} uses plain http:// to {host}, which is not this computer, so \
         the password and token would cross the network unencrypted; use {suggestion:?}, or tick \
         Allow insecure connection in Settings"
    )]
    InsecureHttp {
        value: String,
        host: String,
        suggestion: String,
    },
}

impl ServerUrl {
    /// Parses and normalizes a server URL as a user typed it (surrounding spaces are ignored).
    pub fn parse(input: &str) -> Result<Self, ServerUrlError> {
        let text = input.trim();
        if text.is_empty() {
            return Err(ServerUrlError::Empty);
        }
        let value = quote(text);

        // `Url::parse` reads `localhost:8080` as scheme `localhost` and path `8080`, so a
        // missing `://` is caught before parsing.
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(ServerUrlError::MissingScheme {
                suggestion: format!("http://{}", strip_scheme_prefix(text)),
                value,
            });
        };

        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            let fixed_scheme = if scheme.ends_with('s') {
                "https"
            } else {
                "http"
            };
            return Err(ServerUrlError::UnsupportedScheme {
                scheme: quote(&scheme),
                suggestion: format!("{fixed_scheme}://{}", quote(rest)),
                value,
            });
        }

        let url = Url::parse(text).map_err(|error| ServerUrlError::Malformed {
            value: value.clone(),
            reason: error.to_string(),
        })?;

        let Some(host) = url.host_str().filter(|host| !host.is_empty()) else {
            return Err(ServerUrlError::MissingHost { value });
        };
        let origin = match url.port() {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        };

        if !url.username().is_empty() || url.password().is_some() {
            return Err(ServerUrlError::ContainsCredentials {
                value,
                suggestion: origin,
            });
        }

        let extra = if url.path() != "/" {
            Some(("path", url.path().to_owned()))
        } else if let Some(query) = url.query() {
            Some(("query", format!("?{query}")))
        } else {
            url.fragment()
                .map(|fragment| ("fragment", format!("#{fragment}")))
        };
        if let Some((part, text)) = extra {
            return Err(ServerUrlError::ExtraPart {
                value,
                part,
                text: quote(&text),
                suggestion: origin,
            });
        }

        Ok(Self(url))
    }

    /// Returns the URL of an API route, such as `/login`, on this server.
    pub fn endpoint(&self, path: &str) -> Url {
        let mut url = self.0.clone();
        url.set_path(path);
        url
    }

    /// Returns the host name or address, without the port.
    pub fn host(&self) -> &str {
        self.0.host_str().unwrap_or_default()
    }

    /// Returns whether the host is this computer: `localhost`, `127.0.0.0/8` or `::1`.
    pub fn is_loopback(&self) -> bool {
        let host = self.host();
        if host.eq_ignore_ascii_case("localhost") {
            return true;
        }
        // `host_str` writes IPv6 addresses in brackets.
        let address = host.trim_start_matches('[').trim_end_matches(']');
        address
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_loopback())
    }

    /// Rejects plain `http://` to a host other than this computer unless `allow_insecure` is
    /// set, because the password and the token would cross the network unencrypted.
    pub fn require_secure_transport(&self, allow_insecure: bool) -> Result<(), ServerUrlError> {
        if allow_insecure || self.0.scheme() == "https" || self.is_loopback() {
            return Ok(());
        }

        let mut secure = self.0.clone();
        // `Url::set_scheme` rejects only changes between special and non-special schemes,
        // and http and https are both special.
        let _ = secure.set_scheme("https");
        Err(ServerUrlError::InsecureHttp {
            value: self.to_string(),
            host: self.host().to_owned(),
            suggestion: secure.as_str().trim_end_matches('/').to_owned(),
        })
    }
}

impl std::fmt::Display for ServerUrl {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.0.as_str().trim_end_matches('/'))
    }
}

impl std::fmt::Debug for ServerUrl {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "ServerUrl({self})")
    }
}

impl std::str::FromStr for ServerUrl {
    type Err = ServerUrlError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// Drops a scheme-like prefix without `//` (`http:host`, `http:/host`) so that the
/// suggestion for a missing `://` does not repeat it.
fn strip_scheme_prefix(text: &str) -> &str {
    for prefix in ["https:/", "http:/", "https:", "http:"] {
        if let Some(rest) = text.strip_prefix(prefix) {
            return rest;
        }
    }
    text
}

/// Cuts a user-supplied value for an error message, so that a pasted page does not
/// end up in a log whole.
fn quote(text: &str) -> String {
    camwire_api::shorten(text, MAX_QUOTED_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_normalizes_valid_urls() {
        let cases = [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("  http://127.0.0.1:8080/  ", "http://127.0.0.1:8080"),
            ("HTTPS://Camwire.Example.COM", "https://camwire.example.com"),
            ("http://[::1]:8080", "http://[::1]:8080"),
            ("http://localhost:80/", "http://localhost"),
        ];

        for (input, expected) in cases {
            let url = ServerUrl::parse(input).unwrap_or_else(|error| panic!("{input:?}: {error}"));
            assert_eq!(url.to_string(), expected, "{input:?}");
        }
    }

    #[test]
    fn endpoint_appends_route() {
        let url = ServerUrl::parse("http://127.0.0.1:8080/").expect("valid");

        assert_eq!(
            url.endpoint("/login").as_str(),
            "http://127.0.0.1:8080/login"
        );
    }

    #[test]
    fn missing_scheme_suggests_http() {
        let cases = [
            ("localhost:8080", "http://localhost:8080"),
            ("127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("camwire.example.com", "http://camwire.example.com"),
            ("http:/localhost:8080", "http://localhost:8080"),
        ];

        for (input, suggestion) in cases {
            let error = ServerUrl::parse(input).expect_err(input);
            let message = error.to_string();
            assert!(
                matches!(error, ServerUrlError::MissingScheme { .. }),
                "{input:?}: {message}"
            );
            assert!(
                message.contains(&format!("{suggestion:?}")),
                "{input:?}: {message}"
            );
            assert!(
                message.contains(&format!("{input:?}")),
                "{input:?}: {message}"
            );
        }
    }

    #[test]
    fn scheme_typo_names_value_and_fix() {
        let error = ServerUrl::parse("htp://127.0.0.1:8080").expect_err("typo");
        let message = error.to_string();

        assert!(
            matches!(error, ServerUrlError::UnsupportedScheme { .. }),
            "{message}"
        );
        assert!(message.contains("\"htp://127.0.0.1:8080\""), "{message}");
        assert!(message.contains("\"http://127.0.0.1:8080\""), "{message}");
    }

    #[test]
    fn secure_scheme_typo_suggests_https() {
        let message = ServerUrl::parse("htps://camwire.example.com")
            .expect_err("typo")
            .to_string();

        assert!(
            message.contains("\"https://camwire.example.com\""),
            "{message}"
        );
    }

    #[test]
    fn rejects_path_query_and_fragment() {
        let cases = [
            ("http://127.0.0.1:8080/api", "path"),
            ("http://127.0.0.1:8080/login/", "path"),
            ("http://127.0.0.1:8080/?debug=1", "query"),
            ("http://127.0.0.1:8080/#top", "fragment"),
        ];

        for (input, part) in cases {
            let error = ServerUrl::parse(input).expect_err(input);
            let message = error.to_string();
            assert!(
                matches!(error, ServerUrlError::ExtraPart { part: found, .. } if found == part),
                "{input:?}: {message}"
            );
            assert!(
                message.contains("\"http://127.0.0.1:8080\""),
                "{input:?}: {message}"
            );
        }
    }

    #[test]
    fn rejects_credentials_in_url() {
        let error = ServerUrl::parse("http://alice:secret@127.0.0.1:8080").expect_err("userinfo");

        assert!(
            matches!(error, ServerUrlError::ContainsCredentials { .. }),
            "{error}"
        );
    }

    #[test]
    fn rejects_empty_and_hostless_input() {
        assert_eq!(ServerUrl::parse("   "), Err(ServerUrlError::Empty));

        let error = ServerUrl::parse("http://").expect_err("no host");
        assert!(
            matches!(
                error,
                ServerUrlError::Malformed { .. } | ServerUrlError::MissingHost { .. }
            ),
            "{error}"
        );
    }

    #[test]
    fn rejects_bad_port() {
        let error = ServerUrl::parse("http://127.0.0.1:99999").expect_err("port out of range");

        assert!(matches!(error, ServerUrlError::Malformed { .. }), "{error}");
        assert!(error.to_string().contains("99999"), "{error}");
    }

    #[test]
    fn plain_http_is_accepted_for_loopback_only() {
        let loopback = [
            "http://127.0.0.1:8080",
            "http://127.3.4.5",
            "http://localhost:8080",
            "http://LOCALHOST",
            "http://[::1]:8080",
        ];
        let remote = [
            "http://192.0.2.10:8080",
            "http://camwire.example.com",
            "http://[2001:db8::1]:8080",
            "http://localhost.example.com",
            "http://10.13.0.1",
        ];

        for input in loopback {
            let url = ServerUrl::parse(input).expect(input);
            assert!(url.is_loopback(), "{input}");
            assert_eq!(url.require_secure_transport(false), Ok(()), "{input}");
        }
        for input in remote {
            let url = ServerUrl::parse(input).expect(input);
            assert!(!url.is_loopback(), "{input}");
            let error = url.require_secure_transport(false).expect_err(input);
            assert!(
                matches!(error, ServerUrlError::InsecureHttp { .. }),
                "{input}: {error}"
            );
            assert_eq!(url.require_secure_transport(true), Ok(()), "{input}");
        }
    }

    #[test]
    fn insecure_http_error_suggests_https_and_the_setting() {
        let url = ServerUrl::parse("http://camwire.example.com:8080").expect("valid");

        let message = url
            .require_secure_transport(false)
            .expect_err("plain http to a remote host")
            .to_string();

        assert!(
            message.contains("\"https://camwire.example.com:8080\""),
            "{message}"
        );
        assert!(message.contains("Allow insecure connection"), "{message}");
    }

    #[test]
    fn https_is_accepted_for_every_host() {
        let url = ServerUrl::parse("https://camwire.example.com").expect("valid");

        assert_eq!(url.require_secure_transport(false), Ok(()));
    }

    #[test]
    fn error_quotes_only_a_prefix_of_huge_input() {
        let huge = format!("ftp://{}", "a".repeat(100_000));

        let message = ServerUrl::parse(&huge).expect_err("bad scheme").to_string();

        assert!(message.len() < 600, "message is {} bytes", message.len());
    }
}
