//! Address arithmetic of the WireGuard address pool.
//!
//! The pool is an IPv4 network such as `10.13.0.0/16`. Its first host (`10.13.0.1`) is
//! the server's address inside the tunnel, the network and broadcast addresses are
//! never handed out, and every other host is a client address.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use ipnet::Ipv4Net;

/// Shortest prefix accepted for a pool. The free-address table contains one row per
/// client address, so a /16 (65,533 client addresses) is the largest pool.
pub const MIN_PREFIX_LEN: u8 = 16;

/// Longest prefix accepted for a pool: a /30 has one client address besides the server.
pub const MAX_PREFIX_LEN: u8 = 30;

/// Pool suggested in errors: a private range, the default of `--pool`.
const SUGGESTED_POOL: &str = "10.13.0.0/16";

/// IPv4 ranges that cannot hold WireGuard client addresses, as named in the IANA
/// special-purpose address registry (RFC 6890).
const UNUSABLE_RANGES: [(Ipv4Net, &str); 5] = [
    (
        Ipv4Net::new_assert(Ipv4Addr::new(0, 0, 0, 0), 8),
        "the unspecified (\"this network\") range 0.0.0.0/8",
    ),
    (
        Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8),
        "the loopback range 127.0.0.0/8",
    ),
    (
        Ipv4Net::new_assert(Ipv4Addr::new(169, 254, 0, 0), 16),
        "the link-local range 169.254.0.0/16",
    ),
    (
        Ipv4Net::new_assert(Ipv4Addr::new(224, 0, 0, 0), 4),
        "the multicast range 224.0.0.0/4",
    ),
    (
        Ipv4Net::new_assert(Ipv4Addr::new(240, 0, 0, 0), 4),
        "the reserved range 240.0.0.0/4 (which includes the broadcast address 255.255.255.255)",
    ),
];

/// Ranges meant for private networks: RFC 1918's three, and RFC 6598's shared address
/// space 100.64.0.0/10.
const PRIVATE_RANGES: [Ipv4Net; 4] = [
    Ipv4Net::new_assert(Ipv4Addr::new(10, 0, 0, 0), 8),
    Ipv4Net::new_assert(Ipv4Addr::new(172, 16, 0, 0), 12),
    Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 0, 0), 16),
    Ipv4Net::new_assert(Ipv4Addr::new(100, 64, 0, 0), 10),
];

/// Errors of validating an address pool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("invalid address pool {network}: host bits are set; use {expected}")]
    HostBitsSet { network: Ipv4Net, expected: Ipv4Net },
    #[error(
        "invalid address pool {network}: the prefix must be between /{MIN_PREFIX_LEN} and /{MAX_PREFIX_LEN}"
    )]
    PrefixOutOfRange { network: Ipv4Net },
    /// The network lies in a range whose addresses no WireGuard client can have.
    #[error(
        "invalid address pool {network}: it lies in {range}, so clients cannot use its addresses; use a private range such as {SUGGESTED_POOL}"
    )]
    UnusableRange {
        network: Ipv4Net,
        range: &'static str,
    },
}

/// A validated address pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPool {
    network: Ipv4Net,
}

impl AddressPool {
    /// Checks that `network` is a network address with a prefix from /16 to /30 outside
    /// each of the multicast, broadcast, loopback, unspecified, link-local and
    /// reserved ranges. A public unicast network is accepted, because its owner may use
    /// it; see [`AddressPool::is_private`].
    pub fn new(network: Ipv4Net) -> Result<Self, PoolError> {
        if network.network() != network.addr() {
            return Err(PoolError::HostBitsSet {
                network,
                expected: network.trunc(),
            });
        }

        if !(MIN_PREFIX_LEN..=MAX_PREFIX_LEN).contains(&network.prefix_len()) {
            return Err(PoolError::PrefixOutOfRange { network });
        }

        // Every range is a /16 or larger and every pool a /16 or smaller, so a pool
        // that overlaps a range lies in it.
        let unusable = UNUSABLE_RANGES
            .iter()
            .find(|(range, _)| range.contains(&network));
        if let Some((_, range)) = unusable {
            return Err(PoolError::UnusableRange { network, range });
        }

        Ok(Self { network })
    }

    /// Tells whether the pool lies inside a range meant for private networks
    /// (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 or 100.64.0.0/10). Other pools are
    /// public addresses, which clash with real hosts unless the operator owns them.
    pub fn is_private(&self) -> bool {
        PRIVATE_RANGES
            .iter()
            .any(|range| range.contains(&self.network))
    }

    pub fn network(&self) -> Ipv4Net {
        self.network
    }

    /// Returns the server's address inside the tunnel: the first host of the network.
    pub fn server_address(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network.network()) + 1)
    }

    /// Returns the server's address with the pool's prefix, as in `Address = 10.13.0.1/16`.
    pub fn interface_address(&self) -> Ipv4Net {
        Ipv4Net::new(self.server_address(), self.network.prefix_len())
            .expect("the prefix length comes from a valid network")
    }

    /// Returns the client addresses as numbers: from the second host to the last host.
    pub fn client_range(&self) -> RangeInclusive<u32> {
        let first = u32::from(self.network.network()) + 2;
        let last = u32::from(self.network.broadcast()) - 1;
        first..=last
    }

    /// Returns the client addresses in ascending order.
    pub fn client_addresses(&self) -> impl Iterator<Item = Ipv4Addr> + use<> {
        self.client_range().map(Ipv4Addr::from)
    }

    /// Returns the number of client addresses: the hosts of the network less the server.
    pub fn client_count(&self) -> u32 {
        let range = self.client_range();
        range.end() - range.start() + 1
    }

    /// Tells whether `address` is one that the pool hands out to clients.
    pub fn is_client_address(&self, address: Ipv4Addr) -> bool {
        self.client_range().contains(&u32::from(address))
    }
}

impl std::fmt::Display for AddressPool {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.network.fmt(formatter)
    }
}

/// Converts an address to the BIGINT that the database stores.
pub fn address_to_db(address: Ipv4Addr) -> i64 {
    i64::from(u32::from(address))
}

/// Converts a stored BIGINT back to an address; `None` when it is not a 32-bit value.
pub fn address_from_db(value: i64) -> Option<Ipv4Addr> {
    u32::try_from(value).ok().map(Ipv4Addr::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(text: &str) -> AddressPool {
        AddressPool::new(text.parse().expect("valid CIDR")).expect("valid pool")
    }

    #[test]
    fn default_pool_layout() {
        let pool = pool("10.13.0.0/16");

        assert_eq!(pool.server_address(), Ipv4Addr::new(10, 13, 0, 1));
        assert_eq!(pool.interface_address().to_string(), "10.13.0.1/16");
        assert_eq!(
            pool.client_addresses().next(),
            Some(Ipv4Addr::new(10, 13, 0, 2))
        );
        assert_eq!(
            pool.client_addresses().last(),
            Some(Ipv4Addr::new(10, 13, 255, 254))
        );
        assert_eq!(pool.client_count(), 65_533);
    }

    #[test]
    fn slash_29_has_five_client_addresses() {
        let pool = pool("192.168.7.8/29");

        let addresses: Vec<String> = pool.client_addresses().map(|a| a.to_string()).collect();

        assert_eq!(pool.server_address(), Ipv4Addr::new(192, 168, 7, 9));
        assert_eq!(
            addresses,
            [
                "192.168.7.10",
                "192.168.7.11",
                "192.168.7.12",
                "192.168.7.13",
                "192.168.7.14"
            ]
        );
        assert_eq!(pool.client_count(), 5);
    }

    #[test]
    fn slash_30_has_one_client_address() {
        let pool = pool("10.0.0.0/30");

        assert_eq!(pool.client_count(), 1);
        assert_eq!(
            pool.client_addresses().collect::<Vec<_>>(),
            [Ipv4Addr::new(10, 0, 0, 2)]
        );
    }

    #[test]
    fn membership_excludes_network_server_and_broadcast() {
        let pool = pool("10.13.0.0/29");

        assert!(!pool.is_client_address(Ipv4Addr::new(10, 13, 0, 0)));
        assert!(!pool.is_client_address(Ipv4Addr::new(10, 13, 0, 1)));
        assert!(pool.is_client_address(Ipv4Addr::new(10, 13, 0, 2)));
        assert!(pool.is_client_address(Ipv4Addr::new(10, 13, 0, 6)));
        assert!(!pool.is_client_address(Ipv4Addr::new(10, 13, 0, 7)));
        assert!(!pool.is_client_address(Ipv4Addr::new(10, 13, 0, 8)));
        assert!(!pool.is_client_address(Ipv4Addr::new(10, 12, 255, 255)));
    }

    #[test]
    fn host_bits_are_rejected_with_the_fix() {
        let error = AddressPool::new("10.13.0.5/16".parse().expect("valid CIDR"))
            .expect_err("host bits set");

        assert_eq!(
            error.to_string(),
            "invalid address pool 10.13.0.5/16: host bits are set; use 10.13.0.0/16"
        );
    }

    #[test]
    fn prefix_out_of_range_is_rejected() {
        for text in ["10.0.0.0/8", "10.12.0.0/15", "10.13.0.0/31", "10.13.0.1/32"] {
            let network: Ipv4Net = text.parse().expect("valid CIDR");
            let network = network.trunc();

            let result = AddressPool::new(network);

            assert_eq!(
                result,
                Err(PoolError::PrefixOutOfRange { network }),
                "{text}"
            );
        }
    }

    #[test]
    fn unusable_ranges_are_rejected() {
        for (text, range) in [
            ("224.0.0.0/24", "multicast"),
            ("239.255.0.0/16", "multicast"),
            ("255.255.255.252/30", "broadcast"),
            ("240.0.0.0/16", "reserved"),
            ("127.0.0.0/16", "loopback"),
            ("127.13.0.0/24", "loopback"),
            ("0.0.0.0/16", "unspecified"),
            ("0.13.0.0/24", "unspecified"),
            ("169.254.0.0/16", "link-local"),
            ("169.254.10.0/24", "link-local"),
        ] {
            let network: Ipv4Net = text.parse().expect("valid CIDR");

            let error = AddressPool::new(network).expect_err(text).to_string();

            assert!(
                error.starts_with(&format!("invalid address pool {text}: ")),
                "{error}"
            );
            assert!(error.contains(range), "{text}: {error}");
            assert!(error.contains("such as 10.13.0.0/16"), "{text}: {error}");
        }
    }

    #[test]
    fn neighbors_of_unusable_ranges_are_accepted() {
        for text in [
            "1.0.0.0/16",
            "126.255.255.0/24",
            "128.0.0.0/16",
            "169.253.0.0/16",
            "169.255.0.0/16",
            "223.255.255.0/24",
        ] {
            let network: Ipv4Net = text.parse().expect("valid CIDR");

            assert!(AddressPool::new(network).is_ok(), "{text}");
        }
    }

    #[test]
    fn private_pools_are_recognized() {
        for text in [
            "10.13.0.0/16",
            "172.31.0.0/24",
            "192.168.7.8/29",
            "100.64.0.0/16",
        ] {
            assert!(pool(text).is_private(), "{text}");
        }
        for text in [
            "8.8.0.0/16",
            "172.32.0.0/16",
            "100.128.0.0/16",
            "198.51.100.0/24",
        ] {
            assert!(!pool(text).is_private(), "{text}");
        }
    }

    #[test]
    fn database_form_round_trips() {
        for address in [
            Ipv4Addr::new(0, 0, 0, 0),
            Ipv4Addr::new(10, 13, 0, 2),
            Ipv4Addr::BROADCAST,
        ] {
            assert_eq!(address_from_db(address_to_db(address)), Some(address));
        }

        assert_eq!(address_to_db(Ipv4Addr::BROADCAST), 4_294_967_295);
        assert_eq!(address_from_db(-1), None);
        assert_eq!(address_from_db(1 << 32), None);
    }
}
