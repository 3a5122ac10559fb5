//! Settings of a server, with the command line's defaults.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use camwire_tunnel::Forward;
use ipnet::Ipv4Net;

use crate::backend::PeerBackend;
use crate::db::sqlite_file_path;
use crate::pool::{AddressPool, PoolError};
use crate::rate_limit::LoginLimits;

pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
pub const DEFAULT_DATABASE_URL: &str = "sqlite://camwire.db";
pub const DEFAULT_POOL: &str = "10.13.0.0/16";

/// UDP address of the embedded WireGuard hub.
pub const DEFAULT_WG_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 51820);

/// Endpoint handed to clients by the back ends without a hub, when none is set.
pub const DEFAULT_WG_ENDPOINT: &str = "127.0.0.1:51820";

/// TCP port of the server's VPN address that the hub forwards to the HTTP API.
pub const HTTP_FORWARD_PORT: u16 = 80;
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(86_400);

/// Longest accepted lifetime of an access token: 365 days. It keeps every expiry time a
/// valid date, and a stolen token stops working within a year.
pub const MAX_SESSION_TTL: Duration = Duration::from_secs(365 * 86_400);

/// Longest accepted lease time, sweep, resynchronization or request timeout: 365 days, so
/// that every deadline computed from them is a valid date.
pub const MAX_DURATION: Duration = MAX_SESSION_TTL;

/// Idle time without a handshake after which the sweeper reclaims a peer.
pub const DEFAULT_LEASE_TIME: Duration = Duration::from_secs(86_400);

/// Interval of the lease sweeper.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Interval of the full resynchronization of the back end with the database.
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(30);

/// Time after which a request that has not finished gets 503 `request_timeout`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Name of the `wg` program, looked up on `PATH`.
pub const DEFAULT_WG_PROGRAM: &str = "wg";

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
    /// The wg-quick config file that the embedded and wg-config back ends keep.
    pub wg_config_path: PathBuf,
    /// UDP address that the embedded hub binds; port 0 picks a free port.
    pub wg_listen: SocketAddr,
    /// The server's WireGuard UDP endpoint as clients reach it, as `host:port`. `None`
    /// hands out the hub's bound address (embedded back end), or
    /// [`DEFAULT_WG_ENDPOINT`] with the other back ends.
    pub wg_endpoint: Option<String>,
    /// TCP ports of the server's VPN address that the embedded hub forwards to local
    /// services. Port [`HTTP_FORWARD_PORT`] goes to this server's HTTP listener unless
    /// a forward here takes it.
    pub forwards: Vec<Forward>,
    /// Lifetime of an access token.
    pub session_ttl: Duration,
    /// Create the missing demo users and print their new passwords; loopback addresses
    /// only.
    pub demo: bool,
    pub login_limits: LoginLimits,
    /// Idle time without a handshake after which a peer is reclaimed.
    pub lease_time: Duration,
    /// Interval of the lease sweeper.
    pub sweep_interval: Duration,
    /// Interval of the full resynchronization of the back end with the database.
    pub resync_interval: Duration,
    /// Time limit of one request.
    pub request_timeout: Duration,
    /// The kernel WireGuard interface that the wg-config back end applies its file to.
    pub wg_interface: Option<String>,
    /// The `wg` program for `wg_interface`.
    pub wg_program: PathBuf,
    pub backend: BackendChoice,
}

/// Choice of a server's peer back end.
#[derive(Clone, Default)]
pub enum BackendChoice {
    /// The embedded back end: a userspace WireGuard hub on `wg_listen`, and the file
    /// at `wg_config_path`.
    #[default]
    Embedded,
    /// The wg-config back end: the file at `wg_config_path`, applied to `wg_interface`
    /// when one is set.
    WgConfig,
    /// A back end made by the caller, such as [`crate::backend::MemoryBackend`] in tests.
    /// The server key still comes from `wg_config_path`, which is created when missing.
    Provided(Arc<dyn PeerBackend>),
}

impl std::fmt::Debug for BackendChoice {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendChoice::Embedded => formatter.write_str("Embedded"),
            BackendChoice::WgConfig => formatter.write_str("WgConfig"),
            BackendChoice::Provided(backend) => write!(formatter, "Provided({})", backend.name()),
        }
    }
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
            wg_listen: DEFAULT_WG_LISTEN,
            wg_endpoint: None,
            forwards: Vec::new(),
            session_ttl: DEFAULT_SESSION_TTL,
            demo: false,
            login_limits: LoginLimits::default(),
            lease_time: DEFAULT_LEASE_TIME,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            resync_interval: DEFAULT_RESYNC_INTERVAL,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            wg_interface: None,
            wg_program: PathBuf::from(DEFAULT_WG_PROGRAM),
            backend: BackendChoice::Embedded,
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

        if self.session_ttl > MAX_SESSION_TTL {
            return Err(ConfigError::SessionTtlTooLong {
                seconds: self.session_ttl.as_secs(),
            });
        }

        for (option, value) in [
            ("--lease-time", self.lease_time),
            ("--sweep-interval", self.sweep_interval),
            ("--resync-interval", self.resync_interval),
            ("--request-timeout", self.request_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::ZeroDuration { option });
            }
            if value > MAX_DURATION {
                return Err(ConfigError::DurationTooLong {
                    option,
                    seconds: value.as_secs(),
                });
            }
        }

        if let Some(interface) = &self.wg_interface
            && !is_valid_interface_name(interface)
        {
            return Err(ConfigError::InvalidInterface {
                value: interface.chars().take(64).collect(),
            });
        }

        let embedded = matches!(self.backend, BackendChoice::Embedded);
        if self.wg_interface.is_some() && !matches!(self.backend, BackendChoice::WgConfig) {
            return Err(ConfigError::InterfaceNeedsWgConfig);
        }
        if !self.forwards.is_empty() && !embedded {
            return Err(ConfigError::ForwardNeedsEmbedded);
        }

        let pool = AddressPool::new(self.pool)?;
        check_forwards(&self.forwards, pool.network())?;

        let endpoint_port = match &self.wg_endpoint {
            Some(endpoint) => Some(endpoint_port(endpoint)?),
            None => None,
        };

        Ok(ValidConfig {
            pool,
            endpoint_port,
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
            .field("wg_listen", &self.wg_listen)
            .field("wg_endpoint", &self.wg_endpoint)
            .field("forwards", &self.forwards)
            .field("session_ttl", &self.session_ttl)
            .field("demo", &self.demo)
            .field("login_limits", &self.login_limits)
            .field("lease_time", &self.lease_time)
            .field("sweep_interval", &self.sweep_interval)
            .field("resync_interval", &self.resync_interval)
            .field("request_timeout", &self.request_timeout)
            .field("wg_interface", &self.wg_interface)
            .field("wg_program", &self.wg_program)
            .field("backend", &self.backend)
            .finish()
    }
}

/// Parts of a [`ServerConfig`] that validation derives.
#[derive(Debug, Clone, Copy)]
pub struct ValidConfig {
    pub pool: AddressPool,
    /// Port of `wg_endpoint`, when one is set.
    pub endpoint_port: Option<u16>,
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
    #[error(
        "--session-ttl {seconds} is longer than the maximum of {} seconds (365 days); pass a shorter session lifetime, such as 86400 for a day",
        MAX_SESSION_TTL.as_secs()
    )]
    SessionTtlTooLong { seconds: u64 },
    #[error("{option} must be greater than zero")]
    ZeroDuration { option: &'static str },
    #[error(
        "{option} {seconds} is longer than the maximum of {} seconds (365 days); pass a shorter time",
        MAX_DURATION.as_secs()
    )]
    DurationTooLong { option: &'static str, seconds: u64 },
    #[error(
        "invalid WireGuard interface name {value:?}; expected 1 to 15 letters, digits, '_', '-' or '.', such as wg0"
    )]
    InvalidInterface { value: String },
    #[error(
        "--wg-interface needs --peer-backend wg-config; the embedded back end runs its own WireGuard hub"
    )]
    InterfaceNeedsWgConfig,
    #[error(
        "--forward needs the embedded back end, which forwards TCP ports of the server's VPN address; leave out --forward or use --peer-backend embedded"
    )]
    ForwardNeedsEmbedded,
    #[error(
        "invalid --forward {value:?}: {reason}; expected PORT=HOST:PORT such as 554=127.0.0.1:8554"
    )]
    InvalidForward { value: String, reason: &'static str },
    #[error(
        "--forward {port}=... is given twice; each TCP port of the server's VPN address goes to one service"
    )]
    DuplicateForward { port: u16 },
    #[error(
        "--forward {port}={target} points into the address pool {pool}, which exists only inside the tunnel; forward to an address that this host reaches, such as 127.0.0.1"
    )]
    ForwardIntoPool {
        port: u16,
        target: SocketAddr,
        pool: Ipv4Net,
    },
    #[error(transparent)]
    Pool(#[from] PoolError),
}

/// Parses a `--forward` value `PORT=HOST:PORT`: a TCP port of the server's VPN address
/// and the local service that receives its connections. HOST is an IP address, in
/// brackets for IPv6.
pub fn parse_forward(text: &str) -> Result<Forward, ConfigError> {
    let invalid = |reason| ConfigError::InvalidForward {
        value: text.chars().take(64).collect(),
        reason,
    };

    let Some((port, target)) = text.split_once('=') else {
        return Err(invalid("missing '='"));
    };

    let port = match port.trim().parse::<u16>() {
        Ok(port) if port != 0 => port,
        _ => return Err(invalid("the tunnel port must be a number from 1 to 65535")),
    };

    let Ok(target) = target.trim().parse::<SocketAddr>() else {
        return Err(invalid(
            "the target must be an IP address and port, such as 127.0.0.1:8554 or [::1]:8554",
        ));
    };
    if target.port() == 0 {
        return Err(invalid("the target port must be from 1 to 65535"));
    }

    Ok(Forward { port, target })
}

/// Checks forwards built in code as [`parse_forward`] checks typed ones, and rejects a
/// port given twice or a target inside the pool.
fn check_forwards(forwards: &[Forward], pool: Ipv4Net) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();

    for forward in forwards {
        let text = format!("{}={}", forward.port, forward.target);
        parse_forward(&text)?;

        if !seen.insert(forward.port) {
            return Err(ConfigError::DuplicateForward { port: forward.port });
        }

        if let std::net::IpAddr::V4(address) = forward.target.ip()
            && pool.contains(&address)
        {
            return Err(ConfigError::ForwardIntoPool {
                port: forward.port,
                target: forward.target,
                pool,
            });
        }
    }

    Ok(())
}

/// Returns the address that a connection to `listen` should go to: the loopback
/// address of the same family when `listen` is an unspecified address such as 0.0.0.0.
pub fn local_target(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port())
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), listen.port())
        }
        _ => listen,
    }
}

/// Checks a Linux network interface name: 1 to 15 bytes (IFNAMSIZ less the NUL) of ASCII
/// letters, digits, `_`, `-` and `.`, and not `.` or `..`. So it is also one `wg` argument.
pub fn is_valid_interface_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
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

        assert_eq!(valid.endpoint_port, None);
        assert_eq!(valid.pool.server_address(), Ipv4Addr::new(10, 13, 0, 1));
    }

    #[test]
    fn forward_parses_ipv4_and_ipv6_targets() {
        assert_eq!(
            parse_forward("554=127.0.0.1:8554"),
            Ok(Forward {
                port: 554,
                target: "127.0.0.1:8554".parse().expect("socket address"),
            })
        );
        assert_eq!(
            parse_forward("8080=[::1]:80").map(|forward| forward.target),
            Ok("[::1]:80".parse().expect("socket address"))
        );
    }

    #[test]
    fn forward_rejects_bad_values_with_reason() {
        for (value, reason) in [
            ("554", "missing '='"),
            ("0=127.0.0.1:8554", "tunnel port"),
            ("70000=127.0.0.1:8554", "tunnel port"),
            ("x=127.0.0.1:8554", "tunnel port"),
            ("554=localhost:8554", "IP address and port"),
            ("554=127.0.0.1", "IP address and port"),
            ("554=127.0.0.1:0", "target port"),
        ] {
            let error = parse_forward(value).expect_err(value).to_string();

            assert!(error.contains(reason), "{value}: {error}");
            assert!(error.contains("PORT=HOST:PORT"), "{value}: {error}");
        }
    }

    #[test]
    fn forwards_are_checked_in_validate() {
        let forward = |text: &str| parse_forward(text).expect("valid forward");
        let cases = [
            (
                vec![forward("554=127.0.0.1:1"), forward("554=127.0.0.1:2")],
                ConfigError::DuplicateForward { port: 554 },
            ),
            (
                vec![forward("554=10.13.0.9:554")],
                ConfigError::ForwardIntoPool {
                    port: 554,
                    target: "10.13.0.9:554".parse().expect("socket address"),
                    pool: "10.13.0.0/16".parse().expect("CIDR"),
                },
            ),
            (
                vec![Forward {
                    port: 0,
                    target: "127.0.0.1:1".parse().expect("socket address"),
                }],
                ConfigError::InvalidForward {
                    value: "0=127.0.0.1:1".into(),
                    reason: "the tunnel port must be a number from 1 to 65535",
                },
            ),
        ];

        for (forwards, expected) in cases {
            let mut config = ServerConfig::new("sqlite://c.db");
            config.forwards = forwards;

            assert_eq!(config.validate().err(), Some(expected));
        }
    }

    #[test]
    fn options_of_other_back_ends_are_rejected() {
        let mut interface_on_embedded = ServerConfig::new("sqlite://c.db");
        interface_on_embedded.wg_interface = Some("wg0".into());
        let mut forward_on_wg_config = ServerConfig::new("sqlite://c.db");
        forward_on_wg_config.backend = BackendChoice::WgConfig;
        forward_on_wg_config.forwards = vec![parse_forward("554=127.0.0.1:8554").expect("valid")];

        assert_eq!(
            interface_on_embedded.validate().err(),
            Some(ConfigError::InterfaceNeedsWgConfig)
        );
        assert_eq!(
            forward_on_wg_config.validate().err(),
            Some(ConfigError::ForwardNeedsEmbedded)
        );
    }

    #[test]
    fn local_target_replaces_unspecified_addresses() {
        let target = |text: &str| local_target(text.parse().expect("socket address"));

        assert_eq!(
            target("0.0.0.0:8080"),
            "127.0.0.1:8080".parse().expect("address")
        );
        assert_eq!(target("[::]:8080"), "[::1]:8080".parse().expect("address"));
        assert_eq!(
            target("10.0.0.5:8080"),
            "10.0.0.5:8080".parse().expect("address")
        );
    }

    #[test]
    fn interface_names_are_checked() {
        for valid in ["wg0", "camwire-1", "wg_test.2", "a23456789012345"] {
            assert!(is_valid_interface_name(valid), "{valid}");
        }
        for invalid in ["", "a234567890123456", "wg 0", "wg/0", "wg:0", ".."] {
            assert!(!is_valid_interface_name(invalid), "{invalid}");
        }
    }

    #[test]
    fn zero_durations_are_rejected() {
        let mut config = ServerConfig::new("sqlite://c.db");
        config.sweep_interval = Duration::ZERO;

        let error = config.validate().expect_err("zero interval");

        assert_eq!(
            error,
            ConfigError::ZeroDuration {
                option: "--sweep-interval"
            }
        );
    }

    #[test]
    fn lease_time_is_bounded_at_365_days() {
        let mut longest = ServerConfig::new("sqlite://c.db");
        longest.lease_time = MAX_DURATION;
        let mut too_long = ServerConfig::new("sqlite://c.db");
        too_long.lease_time = Duration::from_secs(99_999_999_999_999);

        let error = too_long.validate().expect_err("too long");

        assert!(longest.validate().is_ok());
        assert_eq!(
            error,
            ConfigError::DurationTooLong {
                option: "--lease-time",
                seconds: 99_999_999_999_999
            }
        );
    }

    #[test]
    fn session_ttl_is_bounded_at_365_days() {
        let mut longest = ServerConfig::new("sqlite://c.db");
        longest.session_ttl = MAX_SESSION_TTL;
        let mut too_long = ServerConfig::new("sqlite://c.db");
        too_long.session_ttl = Duration::from_secs(99_999_999_999_999);

        let error = too_long.validate().expect_err("too long");

        assert!(longest.validate().is_ok());
        assert_eq!(
            error,
            ConfigError::SessionTtlTooLong {
                seconds: 99_999_999_999_999
            }
        );
        assert!(error.to_string().contains("31536000 seconds"), "{error}");
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
