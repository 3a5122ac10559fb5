//! The device's WireGuard tunnel for one session: started at sign-in or resume, started again
//! after a failed start, probed for the server's health, and stopped within a bound.

use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use camwire_api::WireguardConfig;
use camwire_tunnel::{PrivateKey, PublicKey, Tunnel, TunnelOptions};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::probe::{self, HEALTH_PORT};
use crate::report::TunnelOutcome;
use crate::status::{ServerProbe, TunnelPhase, TunnelStatus};

/// Timing of the tunnel and its health probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelSettings {
    /// Options of [`Tunnel::start`]. Keep `shutdown_timeout` below `stop_bound`, so that the
    /// tunnel's own abort of late tasks runs before the bound cuts it short.
    pub tunnel: TunnelOptions,
    /// Bound on one start attempt (endpoint lookup and UDP socket bind).
    pub start_timeout: Duration,
    /// Bound on stopping the tunnel at sign-out or exit, waiting for its tasks included.
    pub stop_bound: Duration,
    /// Time between two health probes while the tunnel runs.
    pub probe_interval: Duration,
    /// Bound on one health probe: TCP handshake, request and complete reply.
    pub probe_timeout: Duration,
    /// Delay before the first new attempt after a failed start; it doubles after every
    /// further failure, up to `max_retry_delay`.
    pub retry_delay: Duration,
    pub max_retry_delay: Duration,
}

impl Default for TunnelSettings {
    fn default() -> Self {
        Self {
            tunnel: TunnelOptions {
                shutdown_timeout: Duration::from_millis(1_500),
                ..TunnelOptions::default()
            },
            start_timeout: Duration::from_secs(5),
            stop_bound: Duration::from_secs(2),
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(3),
            retry_delay: Duration::from_secs(1),
            max_retry_delay: Duration::from_secs(30),
        }
    }
}

/// Called after the supervisor changed the tunnel's status (a start, a failed start, a probe
/// result), outside every lock of the supervisor.
pub(crate) type ChangeNotifier = Arc<dyn Fn() + Send + Sync>;

/// Owner of one session's tunnel.
///
/// [`TunnelSupervisor::start`] makes the first start attempt before it returns; a task then
/// starts the tunnel again after failures (with backoff) and probes the server's health.
/// [`TunnelSupervisor::stop`] ends both within [`TunnelSettings::stop_bound`]. Dropping the
/// supervisor aborts everything without waiting.
pub(crate) struct TunnelSupervisor {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// The WireGuard config and device key the tunnel runs with.
    config: WireguardConfig,
    public_key: PublicKey,
    stop_bound: Duration,
}

/// Read access to a supervisor's status, for callers that must not wait for the session.
#[derive(Clone)]
pub(crate) struct TunnelWatch(Arc<Shared>);

struct Shared {
    slot: Mutex<Slot>,
    /// Wakes the supervising task for an immediate probe or start attempt.
    check_now: Notify,
    notify: ChangeNotifier,
}

struct Slot {
    /// The running tunnel. The supervising task holds a second reference only during a probe.
    tunnel: Option<Arc<Tunnel>>,
    /// Error of the last failed start attempt and the count of failures in a row, while no
    /// tunnel runs.
    start_error: Option<(String, u32)>,
    server: ServerProbe,
    /// Number of health probes that failed in a row since the tunnel started or the server
    /// last replied.
    failed_probes: u32,
    /// Set by `stop`; from then on the task neither stores a tunnel nor notifies.
    stopped: bool,
}

/// A start that has not succeeded yet: the config and the key to try again with.
struct PendingStart {
    config: WireguardConfig,
    private_key: PrivateKey,
}

impl TunnelSupervisor {
    /// Starts a tunnel to the server that `config` describes and the task that looks after it.
    ///
    /// A failed first attempt is recorded in the status, and the task tries again later, so
    /// this returns a supervisor in every case.
    pub async fn start(
        config: WireguardConfig,
        private_key: PrivateKey,
        settings: TunnelSettings,
        notify: ChangeNotifier,
    ) -> Self {
        let public_key = private_key.public_key();
        let first = start_tunnel(&config, &private_key, &settings).await;
        let now = Instant::now();

        let (slot, schedule, pending) = match first {
            Ok(tunnel) => {
                let slot = Slot {
                    tunnel: Some(Arc::new(tunnel)),
                    start_error: None,
                    server: ServerProbe::Checking,
                    failed_probes: 0,
                    stopped: false,
                };
                // The key stays in the tunnel only; this copy is dropped (and wiped) here.
                (slot, Schedule::running(&settings, now), None)
            }
            Err(message) => {
                tracing::warn!(key = %public_key.fingerprint(), endpoint = ?config.endpoint, error = ?message, "the tunnel could not start; trying again later");
                let slot = Slot {
                    tunnel: None,
                    start_error: Some((message, 1)),
                    server: not_running(),
                    failed_probes: 0,
                    stopped: false,
                };
                let pending = PendingStart {
                    config: config.clone(),
                    private_key,
                };
                (slot, Schedule::failed(&settings, now), Some(pending))
            }
        };

        let shared = Arc::new(Shared {
            slot: Mutex::new(slot),
            check_now: Notify::new(),
            notify,
        });
        let (stop, stop_receiver) = watch::channel(false);
        let server_address = SocketAddrV4::new(config.server_address, HEALTH_PORT);
        let task = tokio::spawn(supervise(
            Arc::clone(&shared),
            schedule,
            pending,
            server_address,
            settings,
            stop_receiver,
        ));

        Self {
            shared,
            stop,
            task,
            config,
            public_key,
            stop_bound: settings.stop_bound,
        }
    }

    /// Returns whether this supervisor's tunnel was started with `config` and the key of
    /// `public_key`, ignoring the lease's end, which the server moves on every renewal.
    pub fn runs_with(&self, config: &WireguardConfig, public_key: &PublicKey) -> bool {
        self.public_key == *public_key && same_tunnel_config(&self.config, config)
    }

    pub fn watch(&self) -> TunnelWatch {
        TunnelWatch(Arc::clone(&self.shared))
    }

    pub fn status(&self) -> TunnelStatus {
        self.shared.status()
    }

    /// Stops the tunnel and the supervising task within the stop bound, and reports how.
    ///
    /// The tunnel's private key is dropped (and wiped) at the start of its shutdown. When the
    /// bound passes first, the tunnel is dropped, which aborts its remaining tasks without
    /// waiting for them.
    pub async fn stop(mut self) -> TunnelOutcome {
        let deadline = tokio::time::Instant::now() + self.stop_bound;
        let tunnel = {
            let mut slot = self.shared.lock();
            slot.stopped = true;
            slot.tunnel.take()
        };
        let _ = self.stop.send(true);
        self.task.abort();

        let Some(tunnel) = tunnel else {
            self.wait_for_task(deadline).await;
            return TunnelOutcome::NotRunning;
        };
        let tunnel = match Arc::try_unwrap(tunnel) {
            Ok(tunnel) => tunnel,
            Err(tunnel) => {
                // The task holds the second reference during a probe and drops it when the
                // abort takes effect, at its next poll.
                self.wait_for_task(deadline).await;
                match Arc::try_unwrap(tunnel) {
                    Ok(tunnel) => tunnel,
                    Err(_) => {
                        tracing::warn!(bound = ?self.stop_bound, "the supervising task did not end within the bound; the tunnel stops when it does");
                        return TunnelOutcome::TimedOut {
                            bound: self.stop_bound,
                        };
                    }
                }
            }
        };

        let outcome = match tokio::time::timeout_at(deadline, tunnel.shutdown()).await {
            Ok(report) => TunnelOutcome::Stopped {
                ended: report.ended,
                aborted: report.aborted,
            },
            Err(_) => {
                tracing::warn!(bound = ?self.stop_bound, "the tunnel did not stop within the bound; dropped it, which aborts its tasks");
                TunnelOutcome::TimedOut {
                    bound: self.stop_bound,
                }
            }
        };
        self.wait_for_task(deadline).await;
        outcome
    }

    /// Waits until the supervising task has ended, or until `deadline`.
    async fn wait_for_task(&mut self, deadline: tokio::time::Instant) {
        // A JoinHandle must not be polled again after it completed.
        if self.task.is_finished() {
            return;
        }
        let _ = tokio::time::timeout_at(deadline, &mut self.task).await;
    }

    /// Wakes the supervising task for an immediate probe, or an immediate start attempt when
    /// no tunnel runs.
    pub fn check_now(&self) {
        self.shared.check_now.notify_one();
    }
}

impl Drop for TunnelSupervisor {
    fn drop(&mut self) {
        self.task.abort();
        let tunnel = {
            let mut slot = self.shared.lock();
            slot.stopped = true;
            slot.tunnel.take()
        };
        // Dropping the last reference stops the tunnel and aborts its tasks.
        drop(tunnel);
    }
}

impl std::fmt::Debug for TunnelSupervisor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TunnelSupervisor")
            .field("key", &self.public_key.fingerprint())
            .field("endpoint", &self.config.endpoint)
            .field("phase", &self.status().phase)
            .finish_non_exhaustive()
    }
}

impl TunnelWatch {
    pub fn status(&self) -> TunnelStatus {
        self.0.status()
    }

    /// See [`TunnelSupervisor::check_now`].
    pub fn check_now(&self) {
        self.0.check_now.notify_one();
    }

    /// Returns the number of health probes that failed in a row since the tunnel started or
    /// the server last replied, or 0 while no tunnel runs.
    pub fn failed_probes(&self) -> u32 {
        self.0.lock().failed_probes
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        // Every update of the slot is a single assignment, so a poisoned lock is still whole.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn status(&self) -> TunnelStatus {
        let slot = self.lock();
        if slot.stopped {
            return TunnelStatus::stopped();
        }

        let Some(tunnel) = &slot.tunnel else {
            let (message, failed_starts) = slot
                .start_error
                .clone()
                .unwrap_or_else(|| ("the tunnel has not started".to_owned(), 0));
            return TunnelStatus {
                phase: TunnelPhase::Error {
                    message,
                    failed_starts,
                },
                server: slot.server.clone(),
                ..TunnelStatus::stopped()
            };
        };

        let stats = tunnel.stats();
        TunnelStatus {
            phase: TunnelPhase::from(stats.state),
            last_handshake: stats.last_handshake,
            tx_bytes: stats.tx_bytes,
            rx_bytes: stats.rx_bytes,
            server: slot.server.clone(),
        }
    }

    /// Applies `change` unless the supervisor was stopped, then calls the notifier outside
    /// the lock. Returns false when stopped.
    fn update(&self, change: impl FnOnce(&mut Slot)) -> bool {
        {
            let mut slot = self.lock();
            if slot.stopped {
                return false;
            }
            change(&mut slot);
        }
        (self.notify)();
        true
    }
}

/// Starts the tunnel again after failures and probes the server, until stopped or aborted.
async fn supervise(
    shared: Arc<Shared>,
    mut schedule: Schedule,
    mut pending: Option<PendingStart>,
    server_address: SocketAddrV4,
    settings: TunnelSettings,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        match schedule.poll_action(Instant::now()) {
            Action::Start => {
                let Some(request) = pending.as_ref() else {
                    return;
                };
                let attempt = start_tunnel(&request.config, &request.private_key, &settings).await;
                let now = Instant::now();
                match attempt {
                    Ok(tunnel) => {
                        tracing::info!(
                            attempt = schedule.failed_starts + 1,
                            "the tunnel started after earlier failures"
                        );
                        let tunnel = Arc::new(tunnel);
                        let stored = shared.update(|slot| {
                            slot.tunnel = Some(tunnel);
                            slot.start_error = None;
                            slot.server = ServerProbe::Checking;
                            slot.failed_probes = 0;
                        });
                        if !stored {
                            return;
                        }
                        pending = None;
                        schedule.on_started(now);
                    }
                    Err(message) => {
                        schedule.on_start_failed(now);
                        let failures = schedule.failed_starts;
                        tracing::debug!(failures, retry_in = ?schedule.retry_delay(), error = %message, "the tunnel could not start again");
                        if !shared.update(|slot| slot.start_error = Some((message, failures))) {
                            return;
                        }
                    }
                }
            }
            Action::Probe => {
                let tunnel = shared.lock().tunnel.clone();
                let Some(tunnel) = tunnel else {
                    return;
                };
                let result =
                    probe::probe_health(&tunnel, server_address, settings.probe_timeout).await;
                drop(tunnel);
                schedule.on_probed(Instant::now());

                let server = match result {
                    Ok(round_trip) => ServerProbe::Answering { round_trip },
                    Err(error) => ServerProbe::NotAnswering {
                        reason: error.to_string(),
                    },
                };
                log_probe_change(&shared.lock().server, &server, server_address);
                let answered = matches!(server, ServerProbe::Answering { .. });
                let stored = shared.update(|slot| {
                    slot.failed_probes = if answered {
                        0
                    } else {
                        slot.failed_probes.saturating_add(1)
                    };
                    slot.server = server;
                });
                if !stored {
                    return;
                }
            }
            Action::WaitUntil(at) => {
                tokio::select! {
                    _ = stop.changed() => return,
                    () = shared.check_now.notified() => schedule.request_check(Instant::now()),
                    () = tokio::time::sleep_until(at.into()) => {}
                }
            }
        }
    }
}

/// Logs a probe result that differs in kind from the last one, so that a steady state logs
/// once and not every probe interval.
fn log_probe_change(before: &ServerProbe, after: &ServerProbe, server: SocketAddrV4) {
    if before.kind() == after.kind() {
        return;
    }
    match after {
        ServerProbe::Answering { round_trip } => {
            tracing::info!(%server, ?round_trip, "the server answers through the tunnel")
        }
        ServerProbe::NotAnswering { reason } => {
            tracing::warn!(%server, %reason, "the server does not answer through the tunnel")
        }
        ServerProbe::Checking => {}
    }
}

/// Makes one bounded start attempt; the error is a sentence for the profile.
async fn start_tunnel(
    config: &WireguardConfig,
    private_key: &PrivateKey,
    settings: &TunnelSettings,
) -> Result<Tunnel, String> {
    let start = Tunnel::start(config, private_key.clone(), settings.tunnel);
    match tokio::time::timeout(settings.start_timeout, start).await {
        Ok(Ok(tunnel)) => Ok(tunnel),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!(
            "starting the tunnel to {} timed out after {} s",
            config.endpoint,
            settings.start_timeout.as_secs_f64()
        )),
    }
}

fn not_running() -> ServerProbe {
    ServerProbe::NotAnswering {
        reason: "the tunnel is not running".to_owned(),
    }
}

/// Returns whether two configs describe the same tunnel: every field but the lease's end.
pub(crate) fn same_tunnel_config(a: &WireguardConfig, b: &WireguardConfig) -> bool {
    a.address == b.address
        && a.server_address == b.server_address
        && a.server_public_key == b.server_public_key
        && a.endpoint == b.endpoint
        && a.allowed_ips == b.allowed_ips
        && a.persistent_keepalive == b.persistent_keepalive
}

/// Next step of the supervising task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Start,
    Probe,
    WaitUntil(Instant),
}

/// When the next start attempt or probe is due. Time is passed in.
#[derive(Debug, Clone)]
struct Schedule {
    retry_delay: Duration,
    max_retry_delay: Duration,
    probe_interval: Duration,
    /// Failed start attempts since the last success.
    failed_starts: u32,
    /// Set while no tunnel runs.
    next_start: Option<Instant>,
    /// Set while a tunnel runs.
    next_probe: Option<Instant>,
}

impl Schedule {
    /// Returns a schedule for a running tunnel, with a probe due at once.
    fn running(settings: &TunnelSettings, now: Instant) -> Self {
        Self {
            retry_delay: settings.retry_delay,
            max_retry_delay: settings.max_retry_delay,
            probe_interval: settings.probe_interval,
            failed_starts: 0,
            next_start: None,
            next_probe: Some(now),
        }
    }

    /// Returns a schedule after a failed first start.
    fn failed(settings: &TunnelSettings, now: Instant) -> Self {
        let mut schedule = Self::running(settings, now);
        schedule.next_probe = None;
        schedule.on_start_failed(now);
        schedule
    }

    fn poll_action(&self, now: Instant) -> Action {
        let due = self.next_start.or(self.next_probe);
        let Some(due) = due else {
            // Neither is set only if the schedule was built wrong; wait for a check request.
            return Action::WaitUntil(now + self.max_retry_delay);
        };
        if due > now {
            return Action::WaitUntil(due);
        }
        if self.next_start.is_some() {
            Action::Start
        } else {
            Action::Probe
        }
    }

    fn on_started(&mut self, now: Instant) {
        self.failed_starts = 0;
        self.next_start = None;
        self.next_probe = Some(now);
    }

    fn on_start_failed(&mut self, now: Instant) {
        self.failed_starts = self.failed_starts.saturating_add(1);
        self.next_probe = None;
        self.next_start = Some(now + self.retry_delay());
    }

    fn on_probed(&mut self, now: Instant) {
        if self.next_probe.is_some() {
            self.next_probe = Some(now + self.probe_interval);
        }
    }

    /// Makes the pending start attempt or probe due now.
    fn request_check(&mut self, now: Instant) {
        if self.next_start.is_some() {
            self.next_start = Some(now);
        }
        if self.next_probe.is_some() {
            self.next_probe = Some(now);
        }
    }

    /// Delay after the latest failure: `retry_delay` doubled per earlier failure, capped.
    fn retry_delay(&self) -> Duration {
        let doublings = self.failed_starts.saturating_sub(1).min(16);
        self.retry_delay
            .saturating_mul(1 << doublings)
            .min(self.max_retry_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> TunnelSettings {
        TunnelSettings::default()
    }

    fn seconds(value: u64) -> Duration {
        Duration::from_secs(value)
    }

    #[test]
    fn running_tunnel_probes_at_once_then_every_interval() {
        let start = Instant::now();
        let mut schedule = Schedule::running(&settings(), start);

        assert_eq!(schedule.poll_action(start), Action::Probe);
        schedule.on_probed(start + seconds(1));

        assert_eq!(
            schedule.poll_action(start + seconds(2)),
            Action::WaitUntil(start + seconds(6))
        );
        assert_eq!(schedule.poll_action(start + seconds(6)), Action::Probe);
    }

    #[test]
    fn failed_starts_back_off_to_cap() {
        let start = Instant::now();
        let mut schedule = Schedule::failed(&settings(), start);
        let mut now = start;
        let mut delays = Vec::new();

        for _ in 0..8 {
            let Action::WaitUntil(due) = schedule.poll_action(now) else {
                panic!("expected a wait after a failure");
            };
            delays.push(due - now);
            now = due;
            assert_eq!(schedule.poll_action(now), Action::Start);
            schedule.on_start_failed(now);
        }

        let expected = [1, 2, 4, 8, 16, 30, 30, 30].map(seconds);
        assert_eq!(delays, expected);
    }

    #[test]
    fn start_after_failures_resets_backoff() {
        let start = Instant::now();
        let mut schedule = Schedule::failed(&settings(), start);
        schedule.on_start_failed(start);
        schedule.on_start_failed(start);

        schedule.on_started(start + seconds(10));

        assert_eq!(schedule.failed_starts, 0);
        assert_eq!(schedule.poll_action(start + seconds(10)), Action::Probe);
        schedule.on_start_failed(start + seconds(20));
        assert_eq!(schedule.retry_delay(), seconds(1));
    }

    #[test]
    fn check_request_makes_pending_work_due() {
        let start = Instant::now();
        let mut probing = Schedule::running(&settings(), start);
        probing.on_probed(start);
        let mut starting = Schedule::failed(&settings(), start);
        for _ in 0..5 {
            starting.on_start_failed(start);
        }

        probing.request_check(start + seconds(1));
        starting.request_check(start + seconds(1));

        assert_eq!(probing.poll_action(start + seconds(1)), Action::Probe);
        assert_eq!(starting.poll_action(start + seconds(1)), Action::Start);
    }

    #[test]
    fn failed_schedule_does_not_probe() {
        let start = Instant::now();
        let mut schedule = Schedule::failed(&settings(), start);

        schedule.on_probed(start);

        assert_eq!(
            schedule.poll_action(start),
            Action::WaitUntil(start + seconds(1))
        );
    }

    #[test]
    fn lease_end_does_not_change_tunnel_config() {
        let config: WireguardConfig = serde_json::from_value(serde_json::json!({
            "address": "10.13.0.2/32",
            "server_address": "10.13.0.1",
            "server_public_key": "0fDuLGSYob+8di4t6fr8jydBUwxlaoh5q3si97h4t0E=",
            "endpoint": "127.0.0.1:51820",
            "allowed_ips": ["10.13.0.0/16"],
            "persistent_keepalive": 25,
            "expires_at": "2030-01-01T00:00:00Z",
        }))
        .expect("config parses");
        let mut renewed = config.clone();
        renewed.expires_at = "2031-01-01T00:00:00Z".parse().expect("date");
        let mut moved = config.clone();
        moved.endpoint = "127.0.0.1:51821".to_owned();
        let mut readdressed = config.clone();
        readdressed.address = "10.13.0.3/32".parse().expect("address");

        assert!(same_tunnel_config(&config, &renewed));
        assert!(!same_tunnel_config(&config, &moved));
        assert!(!same_tunnel_config(&config, &readdressed));
    }
}
