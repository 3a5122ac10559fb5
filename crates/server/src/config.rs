//! Settings of a server, with the command line's defaults.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::db::sqlite_file_path;
use crate::pool::{AddressPool, PoolError};
use crate::rate_limit::LoginLimits;

pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
pub const DEFAULT_DATABASE_URL: &str = "sqlite://camwire.db";
pub const DEFAULT_POOL: &str = "10.13.0.0/16";
pub const DEFAULT_WG_ENDPOINT: &str = "127.0.0.1:51820";
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(86_400);

/// File name of the wg-quick config when no path is given; it goes beside the database.
pub const DEFAULT_WG_CONFIG_NAME: &str = "wg0.conf";

/// Keepalive interval sent to clients, in seconds: 25 s keeps NAT mappings open on
/// common routers, the interval that wg-quick's documentation suggests.
pub const PERSISTENT_KEEPALIVE: u16 = 25;

/// Settings of one server.
#[derive(Clone)]
pub struct ServerConfig {
    /// Address of the HTTP API; port 0 picks a free port.
    pub listen: SocketAddr,
    /// `sqlite://PATH` or `postgres://...`.
    pub database_url: String,
    /// Network of the WireGuard addresses; its first host is the server's address.
    pub pool: Ipv4Net,
    /// The wg-quick config file that the wg-config back end keeps.
    pub wg_config_path: PathBuf,
    /// The server's WireGuard UDP endpoint as clients reach it, as `host:port`.
    pub wg_endpoint: String,
    /// Lifetime of an access token.
    pub session_ttl: Duration,
    /// Create the demo users and print their new passwords; loopback addresses only.
    pub demo: bool,
    pub login_limits: LoginLimits,
}

impl ServerConfig {
    /// Returns the command line's defaults for the database at `database_url`, with the
    /// config file beside the database.
    pub fn new(database_url: impl Into<String>) -> Self {
        let database_url = database_url.into();

        Self {
            listen: DEFAULT_LISTEN,
            wg_config_path: default_wg_config_path(&database_url),
            database_url,
            pool: DEFAULT_POOL
                .parse()
                .expect("the default pool is a valid CIDR"),
            wg_endpoint: DEFAULT_WG_ENDPOINT.to_owned(),
            session_ttl: DEFAULT_SESSION_TTL,
            demo: false,
            login_limits: LoginLimits::default(),
        }
    }

    /// Checks the settings that do not need I/O and returns the parts derived from them.
    pub fn validate(&self) -> Result<ValidConfig, ConfigError> {
        if self.demo && !self.listen.ip().is_loopback() {
            return Err(ConfigError::DemoNeedsLoopback {
                listen: self.listen,
            });
        }

        if self.session_ttl.is_zero() {
            return Err(ConfigError::ZeroSessionTtl);
        }

        let pool = AddressPool::new(self.pool)?;
        let wg_listen_port = endpoint_port(&self.wg_endpoint)?;

        Ok(ValidConfig {
            pool,
            wg_listen_port,
        })
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("database_url", &redact_url_password(&self.database_url))
            .field("pool", &self.pool)
            .field("wg_config_path", &self.wg_config_path)
            .field("wg_endpoint", &self.wg_endpoint)
            .field("session_ttl", &self.session_ttl)
            .field("demo", &self.demo)
            .field("login_limits", &self.login_limits)
            .finish()
    }
}

/// Parts of a [`ServerConfig`] that validation derives.
#[derive(Debug, Clone, Copy)]
pub struct ValidConfig {
    pub pool: AddressPool,
    /// `ListenPort` of the config file: the port of the endpoint.
    pub wg_listen_port: u16,
}

/// Invalid settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "--demo is only allowed on a loopback address, because the demo users' passwords are printed; use --listen 127.0.0.1:{} or leave out --demo",
        listen.port()
    )]
    DemoNeedsLoopback { listen: SocketAddr },
    #[error(
        "invalid WireGuard endpoint {value:?}; expected HOST:PORT such as vpn.example.com:51820"
    )]
    InvalidEndpoint { value: String },
    #[error("the session lifetime must be at least 1 second")]
    ZeroSessionTtl,
    #[error(transparent)]
    Pool(#[from] PoolError),
}

/// Returns `wg0.conf` in the directory of a SQLite database, or in the current directory
/// for other databases.
pub fn default_wg_config_path(database_url: &str) -> PathBuf {
    let directory = sqlite_file_path(database_url)
        .and_then(|path| path.parent().map(Path::to_path_buf))
        .unwrap_or_default();

    directory.join(DEFAULT_WG_CONFIG_NAME)
}

/// Returns the port of a `host:port` endpoint; the host may be a name, an IPv4 address
/// or a bracketed IPv6 address.
pub fn endpoint_port(endpoint: &str) -> Result<u16, ConfigError> {
    let invalid = || ConfigError::InvalidEndpoint {
        value: endpoint.chars().take(256).collect(),
    };

    let Some((host, port)) = endpoint.rsplit_once(':') else {
        return Err(invalid());
    };

    let host_is_valid = !host.is_empty()
        && !host.chars().any(char::is_whitespace)
        && (host.starts_with('[') == host.ends_with(']'))
        && (host.starts_with('[') || !host.contains(':'));
    if !host_is_valid {
        return Err(invalid());
    }

    match port.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(invalid()),
    }
}

/// Replaces the password of a URL such as `postgres://user:secret@host/db` with `<redacted>`.
pub fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };

    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];

    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };

    let Some(colon) = authority[..at].find(':') else {
        return url.to_owned();
    };

    format!(
        "{scheme}://{}:<redacted>{}",
        &authority[..colon],
        &rest[at..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wg_config_goes_beside_sqlite_file() {
        assert_eq!(
            default_wg_config_path("sqlite://camwire.db"),
            PathBuf::from("wg0.conf")
        );
        assert_eq!(
            default_wg_config_path("sqlite:///var/lib/camwire/camwire.db?mode=rwc"),
            PathBuf::from("/var/lib/camwire/wg0.conf")
        );
        assert_eq!(
            default_wg_config_path("sqlite://data/c.db"),
            PathBuf::from("data/wg0.conf")
        );
        assert_eq!(
            default_wg_config_path("postgres://localhost/c"),
            PathBuf::from("wg0.conf")
        );
    }

    #[test]
    fn endpoint_port_accepts_host_forms() {
        assert_eq!(endpoint_port("127.0.0.1:51820"), Ok(51820));
        assert_eq!(endpoint_port("vpn.example.com:443"), Ok(443));
        assert_eq!(endpoint_port("[::1]:51820"), Ok(51820));
    }

    #[test]
    fn endpoint_port_rejects_bad_values() {
        for value in [
            "",
            "51820",
            ":51820",
            "host:",
            "host:0",
            "host:70000",
            "::1:51820",
            "a b:1",
            "[::1:5",
        ] {
            assert!(endpoint_port(value).is_err(), "{value:?}");
        }
    }

    #[test]
    fn demo_needs_loopback() {
        let mut config = ServerConfig::new("sqlite://c.db");
        config.demo = true;
        config.listen = "0.0.0.0:8080".parse().expect("socket address");

        let error = config.validate().expect_err("not loopback");

        assert_eq!(
            error,
            ConfigError::DemoNeedsLoopback {
                listen: config.listen
            }
        );
        assert!(
            error.to_string().contains("--listen 127.0.0.1:8080"),
            "{error}"
        );
    }

    #[test]
    fn demo_on_loopback_is_valid() {
        for listen in ["127.0.0.1:0", "127.0.0.2:8080", "[::1]:8080"] {
            let mut config = ServerConfig::new("sqlite://c.db");
            config.demo = true;
            config.listen = listen.parse().expect("socket address");

            assert!(config.validate().is_ok(), "{listen}");
        }
    }

    #[test]
    fn defaults_validate() {
        let valid = ServerConfig::new(DEFAULT_DATABASE_URL)
            .validate()
            .expect("defaults are valid");

        assert_eq!(valid.wg_listen_port, 51820);
        assert_eq!(valid.pool.server_address(), Ipv4Addr::new(10, 13, 0, 1));
    }

    #[test]
    fn url_password_is_redacted() {
        assert_eq!(
            redact_url_password("postgres://camwire:s3cret@db.example.com:5432/camwire"),
            "postgres://camwire:<redacted>@db.example.com:5432/camwire"
        );
        assert_eq!(
            redact_url_password("postgres://camwire@localhost/c"),
            "postgres://camwire@localhost/c"
        );
        assert_eq!(
            redact_url_password("sqlite://camwire.db"),
            "sqlite://camwire.db"
        );
    }

    #[test]
    fn debug_hides_database_password() {
        let config = ServerConfig::new("postgres://u:hunter2@localhost/c");

        let printed = format!("{config:?}");

        assert!(!printed.contains("hunter2"), "{printed}");
    }
}
