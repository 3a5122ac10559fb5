//! In-memory limit on failed sign-ins, per user name and per client IP address.
//!
//! Pure logic: every method takes `now`, so tests move time by arithmetic.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failures allowed per key within [`LoginLimits::window`] before sign-in is blocked.
pub const DEFAULT_MAX_FAILURES: usize = 10;

/// Length of the sliding window in which failures count.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// Number of keys above which a record call first drops the keys with no recent failure.
const PRUNE_THRESHOLD: usize = 10_000;

/// Limits of the sign-in rate limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    pub max_failures: usize,
    pub window: Duration,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            max_failures: DEFAULT_MAX_FAILURES,
            window: DEFAULT_WINDOW,
        }
    }
}

/// Counts failed sign-ins per user name and per client IP in a sliding window.
///
/// A key with `max_failures` failures within the window is blocked until the oldest of
/// them leaves the window. Successful sign-ins clear the user name's failures but not
/// the IP address's, so that one valid account does not reset guessing on others.
///
/// NOTE: the counts live in one process's memory. Several replicas behind a load
/// balancer each count on their own, and a restart clears them.
#[derive(Debug)]
pub struct LoginLimiter {
    limits: LoginLimits,
    by_username: FailureLog<String>,
    by_ip: FailureLog<IpAddr>,
}

impl LoginLimiter {
    pub fn new(limits: LoginLimits) -> Self {
        Self {
            limits,
            by_username: FailureLog::default(),
            by_ip: FailureLog::default(),
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
        let by_username = self.by_username.retry_after(username, self.limits, now);
        let by_ip = ip.and_then(|ip| self.by_ip.retry_after(&ip, self.limits, now));

        by_username.max(by_ip)
    }

    /// Records a failed sign-in for `username` from `ip`.
    pub fn record_failure_at(&mut self, username: &str, ip: Option<IpAddr>, now: Instant) {
        self.by_username
            .record(username.to_owned(), self.limits, now);

        if let Some(ip) = ip {
            self.by_ip.record(ip, self.limits, now);
        }
    }

    /// Forgets the failures of `username` after a successful sign-in.
    pub fn record_success(&mut self, username: &str) {
        self.by_username.failures.remove(username);
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
    fn retry_after<Q>(&mut self, key: &Q, limits: LoginLimits, now: Instant) -> Option<Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let times = self.failures.get_mut(key)?;
        drop_expired(times, limits.window, now);

        if times.len() < limits.max_failures {
            return None;
        }

        let oldest = times.front()?;
        let unblocked_at = *oldest + limits.window;
        Some(unblocked_at.saturating_duration_since(now))
    }

    fn record(&mut self, key: K, limits: LoginLimits, now: Instant) {
        if self.failures.len() >= PRUNE_THRESHOLD {
            self.failures.retain(|_, times| {
                drop_expired(times, limits.window, now);
                !times.is_empty()
            });
        }

        let times = self.failures.entry(key).or_default();
        drop_expired(times, limits.window, now);
        times.push_back(now);

        // Failures beyond the limit add nothing: the block ends when the oldest counted
        // failure leaves the window, so keep at most `max_failures` of them.
        while times.len() > limits.max_failures {
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

    fn limiter() -> LoginLimiter {
        LoginLimiter::new(LoginLimits {
            max_failures: 3,
            window: Duration::from_secs(60),
        })
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
    fn ip_limit_covers_many_user_names() {
        let mut limiter = limiter();
        let now = Instant::now();
        for name in ["a", "b", "c"] {
            limiter.record_failure_at(name, IP, now);
        }

        assert!(limiter.check_at("d", IP, now).is_some());
        assert_eq!(limiter.check_at("d", None, now), None);
        assert_eq!(
            limiter.check_at("d", Some(IpAddr::V4(Ipv4Addr::LOCALHOST)), now),
            None
        );
    }

    #[test]
    fn success_clears_user_name_but_not_ip() {
        let mut limiter = limiter();
        let now = Instant::now();
        for _ in 0..3 {
            limiter.record_failure_at("alice", IP, now);
        }

        limiter.record_success("alice");

        assert_eq!(limiter.check_at("alice", None, now), None);
        assert!(limiter.check_at("alice", IP, now).is_some());
    }

    #[test]
    fn memory_per_key_stays_bounded() {
        let mut limiter = limiter();
        let now = Instant::now();

        for _ in 0..1000 {
            limiter.record_failure_at("alice", None, now);
        }

        assert_eq!(limiter.by_username.failures["alice"].len(), 3);
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
    }
}
