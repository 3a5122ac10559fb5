//! Prometheus metrics: per-process counters, and pool gauges read from the database.
//!
//! The text is written by hand in the Prometheus text exposition format 0.0.4: a
//! `# HELP` and a `# TYPE` line per metric, then its samples.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use camwire_tunnel::HubStats;

/// Value of `Content-Type` for the exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Cause of an address going back to the pool: the `cause` label of `camwire_releases_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseCause {
    /// `POST /logout`.
    Logout,
    /// `DELETE /wireguard/config`: the device gave up its address and kept its session.
    Revoke,
    /// The sweeper: no handshake for the lease time.
    LeaseExpiry,
    /// An administrator: `DELETE /admin/peers/{id}` or `camwire-server peers revoke`.
    Admin,
    /// The sweeper: the session expired.
    SessionExpiry,
}

impl ReleaseCause {
    pub const ALL: [ReleaseCause; 5] = [
        ReleaseCause::Logout,
        ReleaseCause::Revoke,
        ReleaseCause::LeaseExpiry,
        ReleaseCause::Admin,
        ReleaseCause::SessionExpiry,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseCause::Logout => "logout",
            ReleaseCause::Revoke => "revoke",
            ReleaseCause::LeaseExpiry => "lease_expiry",
            ReleaseCause::Admin => "admin",
            ReleaseCause::SessionExpiry => "session_expiry",
        }
    }

    fn index(self) -> usize {
        match self {
            ReleaseCause::Logout => 0,
            ReleaseCause::Revoke => 1,
            ReleaseCause::LeaseExpiry => 2,
            ReleaseCause::Admin => 3,
            ReleaseCause::SessionExpiry => 4,
        }
    }
}

/// Counters of this process since it started.
#[derive(Debug, Default)]
pub struct Metrics {
    allocations: AtomicU64,
    releases: [AtomicU64; 5],
    sign_ins: AtomicU64,
    failed_sign_ins: AtomicU64,
}

/// Pool gauges, read from the database so that every replica reports the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGauges {
    pub size: u32,
    pub allocated: u32,
}

impl Metrics {
    pub fn record_allocation(&self) {
        self.allocations.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_release(&self, cause: ReleaseCause) {
        self.releases[cause.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_sign_in(&self) {
        self.sign_ins.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a sign-in rejected for a wrong user name or password.
    pub fn record_failed_sign_in(&self) {
        self.failed_sign_ins.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders every metric in the text exposition format, with the hub's figures when
    /// the server runs one.
    pub fn render(&self, gauges: PoolGauges, hub: Option<&HubStats>) -> String {
        let mut text = String::with_capacity(1024);

        write_metric(
            &mut text,
            "camwire_pool_size",
            "Client addresses of the WireGuard address pool.",
            "gauge",
            &[("", u64::from(gauges.size))],
        );
        write_metric(
            &mut text,
            "camwire_pool_allocated",
            "Addresses of the pool that peers hold, across every replica.",
            "gauge",
            &[("", u64::from(gauges.allocated))],
        );
        write_metric(
            &mut text,
            "camwire_allocations_total",
            "Addresses allocated by this process.",
            "counter",
            &[("", self.allocations.load(Ordering::Relaxed))],
        );

        let releases: Vec<(String, u64)> = ReleaseCause::ALL
            .iter()
            .map(|cause| {
                (
                    format!("{{cause=\"{}\"}}", cause.as_str()),
                    self.releases[cause.index()].load(Ordering::Relaxed),
                )
            })
            .collect();
        let releases: Vec<(&str, u64)> = releases
            .iter()
            .map(|(labels, value)| (labels.as_str(), *value))
            .collect();
        write_metric(
            &mut text,
            "camwire_releases_total",
            "Addresses released by this process, by cause.",
            "counter",
            &releases,
        );

        write_metric(
            &mut text,
            "camwire_sign_ins_total",
            "Successful sign-ins on this process.",
            "counter",
            &[("", self.sign_ins.load(Ordering::Relaxed))],
        );
        write_metric(
            &mut text,
            "camwire_failed_sign_ins_total",
            "Sign-ins on this process rejected for a wrong user name or password.",
            "counter",
            &[("", self.failed_sign_ins.load(Ordering::Relaxed))],
        );

        if let Some(hub) = hub {
            write_hub_metrics(&mut text, hub);
        }

        text
    }
}

/// Appends the figures of the embedded WireGuard hub.
fn write_hub_metrics(text: &mut String, hub: &HubStats) {
    let count = |value: usize| u64::try_from(value).unwrap_or(u64::MAX);

    write_metric(
        text,
        "camwire_hub_peers",
        "Peers of this process's WireGuard hub.",
        "gauge",
        &[("", count(hub.peers))],
    );
    write_metric(
        text,
        "camwire_hub_connections",
        "TCP connections through this process's WireGuard hub that are open or closing.",
        "gauge",
        &[("", count(hub.connections))],
    );
    write_metric(
        text,
        "camwire_hub_handshakes_total",
        "WireGuard handshakes completed by the hub, rekeys included.",
        "counter",
        &[("", hub.handshakes)],
    );
    write_metric(
        text,
        "camwire_hub_junk_datagrams_total",
        "Datagrams the hub dropped: not WireGuard, no session of a current peer, or failed authentication.",
        "counter",
        &[("", hub.junk_datagrams)],
    );
    write_metric(
        text,
        "camwire_hub_rejected_source_packets_total",
        "Decrypted packets the hub dropped because their source was not the sending peer's address.",
        "counter",
        &[("", hub.rejected_source_packets)],
    );
    write_metric(
        text,
        "camwire_hub_cookies_sent_total",
        "Cookie replies the hub sent because handshakes arrived faster than its rate limit.",
        "counter",
        &[("", hub.cookies_sent)],
    );
    write_metric(
        text,
        "camwire_hub_unknown_key_handshakes_total",
        "Valid handshake initiations from keys that are not peers of the hub, such as signed-out devices.",
        "counter",
        &[("", hub.unknown_key_handshakes)],
    );
}

/// Appends one metric: HELP, TYPE and a sample per label set (`""` for none).
fn write_metric(text: &mut String, name: &str, help: &str, kind: &str, samples: &[(&str, u64)]) {
    // Writing to a String cannot fail.
    let _ = writeln!(text, "# HELP {name} {help}");
    let _ = writeln!(text, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(text, "{name}{labels} {value}");
    }
}

/// Reads the value of the sample `name` (with its labels, such as
/// `camwire_releases_total{cause="logout"}`) from an exposition text.
pub fn sample_value(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (sample, value) = line.rsplit_once(' ')?;
            (sample == name).then(|| value.parse().ok()).flatten()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_help_type_and_sample() {
        let metrics = Metrics::default();
        metrics.record_allocation();
        metrics.record_release(ReleaseCause::LeaseExpiry);
        metrics.record_release(ReleaseCause::LeaseExpiry);
        metrics.record_sign_in();
        metrics.record_failed_sign_in();

        let text = metrics.render(
            PoolGauges {
                size: 65_533,
                allocated: 7,
            },
            None,
        );

        for (name, kind) in [
            ("camwire_pool_size", "gauge"),
            ("camwire_pool_allocated", "gauge"),
            ("camwire_allocations_total", "counter"),
            ("camwire_releases_total", "counter"),
            ("camwire_sign_ins_total", "counter"),
            ("camwire_failed_sign_ins_total", "counter"),
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}:\n{text}");
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "{name}:\n{text}"
            );
        }
        assert_eq!(sample_value(&text, "camwire_pool_size"), Some(65_533));
        assert_eq!(sample_value(&text, "camwire_pool_allocated"), Some(7));
        assert_eq!(sample_value(&text, "camwire_allocations_total"), Some(1));
        assert_eq!(
            sample_value(&text, "camwire_releases_total{cause=\"lease_expiry\"}"),
            Some(2)
        );
        assert_eq!(
            sample_value(&text, "camwire_releases_total{cause=\"logout\"}"),
            Some(0)
        );
        assert_eq!(sample_value(&text, "camwire_sign_ins_total"), Some(1));
        assert_eq!(
            sample_value(&text, "camwire_failed_sign_ins_total"),
            Some(1)
        );
    }

    #[test]
    fn every_cause_has_a_label() {
        let text = Metrics::default().render(
            PoolGauges {
                size: 5,
                allocated: 0,
            },
            None,
        );

        for cause in [
            "logout",
            "revoke",
            "lease_expiry",
            "admin",
            "session_expiry",
        ] {
            let sample = format!("camwire_releases_total{{cause=\"{cause}\"}}");
            assert_eq!(sample_value(&text, &sample), Some(0), "{cause}");
        }
    }

    #[test]
    fn hub_figures_appear_only_with_a_hub() {
        let gauges = PoolGauges {
            size: 5,
            allocated: 1,
        };
        let stats = HubStats {
            junk_datagrams: 4,
            rejected_source_packets: 3,
            handshakes: 2,
            cookies_sent: 5,
            unknown_key_handshakes: 6,
            peers: 1,
            connections: 7,
            tasks: 9,
        };

        let without = Metrics::default().render(gauges, None);
        let with = Metrics::default().render(gauges, Some(&stats));

        assert!(!without.contains("camwire_hub_"), "{without}");
        for (name, kind, value) in [
            ("camwire_hub_peers", "gauge", 1),
            ("camwire_hub_connections", "gauge", 7),
            ("camwire_hub_handshakes_total", "counter", 2),
            ("camwire_hub_junk_datagrams_total", "counter", 4),
            ("camwire_hub_rejected_source_packets_total", "counter", 3),
            ("camwire_hub_cookies_sent_total", "counter", 5),
            ("camwire_hub_unknown_key_handshakes_total", "counter", 6),
        ] {
            assert!(
                with.contains(&format!("# TYPE {name} {kind}\n")),
                "{name}:\n{with}"
            );
            assert_eq!(sample_value(&with, name), Some(value), "{name}");
        }
    }
}
