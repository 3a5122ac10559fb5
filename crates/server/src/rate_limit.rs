//! In-memory limits on failed sign-ins, per user name and client IP address.
//!
//! Pure logic: every method takes `now`, so tests move time by arithmetic.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failures of one user name from one client address within the window before that
/// pair is blocked. Guessing one account from one address hits this limit first.
pub const DEFAULT_MAX_FAILURES_PER_PAIR: usize = 10;

/// Failures from one client address within the window, over every user name, before the
/// address is blocked. It stops one address from guessing many accounts.
pub const DEFAULT_MAX_FAILURES_PER_ADDRESS: usize = 30;

/// Failures of one user name within the window, over every address, before the user
/// name is blocked everywhere. It stops guessing one account from many addresses. It is
/// ten times the pair limit, and blocked attempts do not count, so locking the owner out
/// takes at least ten addresses guessing at their full rate.
pub const DEFAULT_MAX_FAILURES_PER_USERNAME: usize = 100;

/// Length of the sliding window in which failures count.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// Number of keys above which a record call first drops the keys with no recent failure.
const PRUNE_THRESHOLD: usize = 10_000;

/// Limits of the sign-in rate limiter: the maximum number of failures within `window`
/// for each kind of key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failures of one user name from one client address.
    pub max_failures_per_pair: usize,
    /// Failures from one client address, over every user name.
    pub max_failures_per_address: usize,
    /// Failures of one user name, over every address.
    pub max_failures_per_username: usize,
    pub window: Duration,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            max_failures_per_pair: DEFAULT_MAX_FAILURES_PER_PAIR,
            max_failures_per_address: DEFAULT_MAX_FAILURES_PER_ADDRESS,
            max_failures_per_username: DEFAULT_MAX_FAILURES_PER_USERNAME,
            window: DEFAULT_WINDOW,
        }
    }
}

/// Counts failed sign-ins in a sliding window per (user name, client address) pair, per
/// client address and per user name, each with its own limit in [`LoginLimits`].
///
/// A key with its maximum number of failures within the window is blocked until the
/// oldest of them leaves the window. So wrong passwords for bob from one address block
/// bob from that address, and only a guess rate over the much higher user name limit
/// blocks bob from every address. A successful sign-in clears its pair's failures but
/// not the address's or the user name's, so that one valid account does not reset
/// guessing on others.
///
/// NOTE: the counts live in one process's memory. Several replicas behind a load
/// balancer each count on their own, and a restart clears them.
#[derive(Debug)]
pub struct LoginLimiter {
    limits: LoginLimits,
    by_pair: FailureLog<(String, Option<IpAddr>)>,
    by_address: FailureLog<IpAddr>,
    by_username: FailureLog<String>,
}

impl LoginLimiter {
    pub fn new(limits: LoginLimits) -> Self {
        Self {
            limits,
            by_pair: FailureLog::default(),
            by_address: FailureLog::default(),
            by_username: FailureLog::default(),
        }
    }

    /// Returns how long the caller must wait before trying again, or `None` when a
    /// sign-in attempt for `username` from `ip` may go ahead.
    pub fn check_at(
        &mut self,
        username: &str,
        ip: Option<IpAddr>,
        now: Instant,
    ) -> Option<Duration> {
        let window = self.limits.window;

        let by_pair = self.by_pair.retry_after(
            &(username.to_owned(), ip),
            self.limits.max_failures_per_pair,
            window,
            now,
        );
        let by_address = ip.and_then(|ip| {
            self.by_address
                .retry_after(&ip, self.limits.max_failures_per_address, window, now)
        });
        let by_username = self.by_username.retry_after(
            username,
            self.limits.max_failures_per_username,
            window,
            now,
        );

        by_pair.max(by_address).max(by_username)
    }

    /// Records a failed sign-in for `username` from `ip`.
    pub fn record_failure_at(&mut self, username: &str, ip: Option<IpAddr>, now: Instant) {
        let window = self.limits.window;

        self.by_pair.record(
            (username.to_owned(), ip),
            self.limits.max_failures_per_pair,
            window,
            now,
        );

        if let Some(ip) = ip {
            self.by_address
                .record(ip, self.limits.max_failures_per_address, window, now);
        }

        self.by_username.record(
            username.to_owned(),
            self.limits.max_failures_per_username,
            window,
            now,
        );
    }

    /// Forgets the failures of `username` from `ip` after a successful sign-in.
    pub fn record_success(&mut self, username: &str, ip: Option<IpAddr>) {
        self.by_pair.failures.remove(&(username.to_owned(), ip));
    }
}

#[derive(Debug)]
struct FailureLog<K> {
    /// Times of the failures within the window, oldest first, per key.
    failures: HashMap<K, VecDeque<Instant>>,
}

impl<K> Default for FailureLog<K> {
    fn default() -> Self {
        Self {
            failures: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash> FailureLog<K> {
    fn retry_after<Q>(
        &mut self,
        key: &Q,
        max_failures: usize,
        window: Duration,
        now: Instant,
    ) -> Option<Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let times = self.failures.get_mut(key)?;
        drop_expired(times, window, now);

        if times.len() < max_failures {
            return None;
        }

        let oldest = times.front()?;
        let unblocked_at = *oldest + window;
        Some(unblocked_at.saturating_duration_since(now))
    }

    fn record(&mut self, key: K, max_failures: usize, window: Duration, now: Instant) {
        if self.failures.len() >= PRUNE_THRESHOLD {
            self.failures.retain(|_, times| {
                drop_expired(times, window, now);
                !times.is_empty()
            });
        }

        let times = self.failures.entry(key).or_default();
        drop_expired(times, window, now);
        times.push_back(now);

        // Failures beyond the limit add nothing: the block ends when the oldest counted
        // failure leaves the window, so keep at most `max_failures` of them.
        while times.len() > max_failures {
            times.pop_front();
        }
    }
}

fn drop_expired(times: &mut VecDeque<Instant>, window: Duration, now: Instant) {
    while let Some(oldest) = times.front() {
        if now.saturating_duration_since(*oldest) < window {
            break;
        }
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const IP: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
    const OTHER_IP: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 8)));

    fn limiter() -> LoginLimiter {
        LoginLimiter::new(LoginLimits {
            max_failures_per_pair: 3,
            max_failures_per_address: 5,
            max_failures_per_username: 8,
            window: Duration::from_secs(60),
        })
    }

    /// Returns the `index`th address of 198.51.100.0/24.
    fn address(index: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, index)))
    }

    #[test]
    fn allows_until_limit_then_blocks() {
        let mut limiter = limiter();
        let start = Instant::now();

        for second in 0..3 {
            let now = start + Duration::from_secs(second);
            assert_eq!(limiter.check_at("alice", IP, now), None, "attempt {second}");
            limiter.record_failure_at("alice", IP, now);
        }

        let blocked = limiter.check_at("alice", IP, start + Duration::from_secs(3));
        assert_eq!(blocked, Some(Duration::from_secs(57)));
    }

    #[test]
    fn block_ends_when_oldest_failure_leaves_window() {
        let mut limiter = limiter();
        let start = Instant::now();
        for second in [0, 10, 20] {
            limiter.record_failure_at("alice", None, start + Duration::from_secs(second));
        }

        assert!(
            limiter
                .check_at("alice", None, start + Duration::from_secs(59))
                .is_some()
        );
        assert_eq!(
            limiter.check_at("alice", None, start + Duration::from_secs(60)),
            None
        );
    }

    #[test]
    fn pair_limit_spares_other_addresses() {
        let mut limiter = limiter();
        let now = Instant::now();
        for _ in 0..3 {
            limiter.record_failure_at("bob", IP, now);
        }

        assert!(limiter.check_at("bob", IP, now).is_some());
        assert_eq!(limiter.check_at("bob", OTHER_IP, now), None);
        assert_eq!(limiter.check_at("alice", IP, now), None);
    }

    #[test]
    fn address_limit_covers_many_user_names() {
        let mut limiter = limiter();
        let now = Instant::now();
        for name in ["a", "b", "c", "d", "e"] {
            limiter.record_failure_at(name, IP, now);
        }

        assert!(limiter.check_at("f", IP, now).is_some());
        assert_eq!(limiter.check_at("f", None, now), None);
        assert_eq!(limiter.check_at("f", OTHER_IP, now), None);
    }

    #[test]
    fn username_limit_covers_many_addresses() {
        let mut limiter = limiter();
        let now = Instant::now();
        for index in 0..8 {
            limiter.record_failure_at("bob", address(index), now);
        }

        assert!(limiter.check_at("bob", address(200), now).is_some());
        assert_eq!(limiter.check_at("alice", address(200), now), None);
    }

    #[test]
    fn one_address_cannot_reach_username_limit() {
        let mut limiter = limiter();
        let now = Instant::now();

        // The attacker keeps guessing after being blocked, as a script would.
        for _ in 0..100 {
            if limiter.check_at("bob", IP, now).is_none() {
                limiter.record_failure_at("bob", IP, now);
            }
        }

        assert!(limiter.check_at("bob", IP, now).is_some());
        assert_eq!(limiter.check_at("bob", OTHER_IP, now), None);
    }

    #[test]
    fn success_clears_pair_but_not_address() {
        let mut limiter = limiter();
        let now = Instant::now();
        for name in ["alice", "alice", "mallory", "mallory", "mallory"] {
            limiter.record_failure_at(name, IP, now);
        }

        limiter.record_success("alice", IP);

        assert_eq!(limiter.by_pair.failures.get(&("alice".into(), IP)), None);
        assert!(limiter.check_at("alice", IP, now).is_some());
        assert!(limiter.check_at("mallory", IP, now).is_some());
    }

    #[test]
    fn success_keeps_username_failures_from_elsewhere() {
        let mut limiter = limiter();
        let now = Instant::now();
        for index in 0..7 {
            limiter.record_failure_at("bob", address(index), now);
        }

        limiter.record_success("bob", IP);
        limiter.record_failure_at("bob", address(7), now);

        assert!(limiter.check_at("bob", address(8), now).is_some());
    }

    #[test]
    fn memory_per_key_stays_bounded() {
        let mut limiter = limiter();
        let now = Instant::now();

        for _ in 0..1000 {
            limiter.record_failure_at("alice", IP, now);
        }

        assert_eq!(limiter.by_pair.failures[&("alice".into(), IP)].len(), 3);
        assert_eq!(
            limiter.by_address.failures[&IP.expect("an address")].len(),
            5
        );
        assert_eq!(limiter.by_username.failures["alice"].len(), 8);
    }

    #[test]
    fn old_keys_are_pruned_past_threshold() {
        let mut limiter = limiter();
        let start = Instant::now();
        for index in 0..PRUNE_THRESHOLD {
            limiter.record_failure_at(&format!("user{index}"), None, start);
        }

        limiter.record_failure_at("late", None, start + Duration::from_secs(61));

        assert_eq!(limiter.by_username.failures.len(), 1);
        assert_eq!(limiter.by_pair.failures.len(), 1);
    }
}
