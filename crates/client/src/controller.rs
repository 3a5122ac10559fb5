//! The session state machine that the desktop app's commands call, testable without a window.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use camwire_api::Password;
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use crate::report::{SignOutReport, TunnelOutcome};
use crate::session::Confirmation;
use crate::supervisor::{ChangeNotifier, TunnelWatch};
use crate::{
    ApiClient, ApiError, ApiOptions, CredentialStore, Profile, ServerUrl, ServerUrlError, Session,
    SignInError, TunnelSettings, TunnelStatus,
};

/// Stage of the controller's life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// [`Controller::resume`] has not read the store yet.
    Starting,
    SignedOut,
    SigningIn,
    SignedIn,
    SigningOut,
}

/// Result of the last check of a signed-in session with its server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerStatus {
    /// Nothing asked yet, or no session.
    Unknown,
    /// A confirmation (`GET /me`, `GET /wireguard/config`) is running.
    Checking,
    /// The server accepted the session at the last check or at sign-in.
    Confirmed,
    /// The last check got no reply; the profile shown is the saved one.
    Unreachable { message: String },
    /// The last check got an error reply other than 401; the profile shown is the saved one.
    Failing { message: String },
}

/// A message for the sign-in view about how the last session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// `confirmed`, `unreachable`, `token_rejected`, `server_error` (see
    /// [`crate::ServerOutcome::kind`]), `session_expired` (the server rejected the session at
    /// a check) or `store_error` (the credential store could not be read at start).
    pub kind: &'static str,
    pub message: String,
}

/// The controller's state as the user interface shows it. Contains no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub phase: Phase,
    /// The session's server, or the last one used, to prefill the sign-in form.
    pub server_url: Option<String>,
    pub profile: Option<Profile>,
    pub server_status: ServerStatus,
    /// The tunnel's state, counters and health probe. [`Controller::snapshot`] reads it live;
    /// in snapshots from [`Controller::subscribe`] it is as of the change that published them.
    pub tunnel: TunnelStatus,
    /// Whether the user stopped the tunnel with [`Controller::disconnect`]; the session and its
    /// address are kept until [`Controller::connect`] starts the tunnel again.
    pub disconnected: bool,
    pub notice: Option<Notice>,
}

/// Settings of a [`Controller`].
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    pub api: ApiOptions,
    pub tunnel: TunnelSettings,
    /// Time between two checks of a signed-in session with the server, so that a session
    /// that an administrator revoked or that expired ends on the device too.
    pub session_check_interval: Duration,
    /// Number of health probes through the tunnel that must fail in a row before the
    /// session is checked with the server at once. Every further multiple checks again.
    pub failed_probes_before_session_check: u32,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        Self {
            api: ApiOptions::default(),
            tunnel: TunnelSettings::default(),
            session_check_interval: Duration::from_secs(60),
            failed_probes_before_session_check: 3,
        }
    }
}

/// Result of [`Controller::sign_out`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignOutOutcome {
    /// This call, or a sign-out running when it was made, ended the session.
    Completed(SignOutReport),
    /// There was no session to end.
    AlreadySignedOut,
}

/// Failure of [`Controller::sign_in`]: rejected input, or a sign-in that could not complete.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    InvalidServerUrl(#[from] ServerUrlError),

    #[error("enter your {field}")]
    MissingField { field: &'static str },

    #[error("already signed in as {username}; log out first")]
    AlreadySignedIn { username: String },

    #[error("not signed in; sign in first")]
    NotSignedIn,

    #[error("Camwire is quitting; start it again to connect")]
    ShutDown,

    #[error(transparent)]
    SignIn(#[from] SignInError),

    #[error(transparent)]
    Client(ApiError),

    #[error(
        "could not save the sign-in on this device ({0}); the new session was logged out again"
    )]
    Store(String),
}

/// Owner of the session, its tunnel and the credential store; every user action is a method
/// here.
///
/// Operations (resume, sign-in, connect, disconnect, sign-out, shutdown) run one at a time in
/// call order. Each runs in its own task, so it completes even if the caller stops waiting.
/// A sign-out or shutdown interrupts a running check of a resumed session, so that it waits only for its own work.
/// Call [`Controller::resume`] once at start; it may be called again to retry reaching the
/// server. Call [`Controller::shutdown`] when the app quits. Cloning is cheap and shares the
/// state.
///
/// A session has at most one tunnel. It starts at sign-in, after the key is registered and
/// before the profile is published, and at resume from the saved key and WireGuard config.
/// A tunnel that cannot start (endpoint not resolvable, socket error) does not fail the
/// sign-in, because the server has accepted the device already. The profile shows the error,
/// and the tunnel is started again with backoff, as users of VPN clients such as Tailscale
/// expect.
#[derive(Clone)]
pub struct Controller {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn CredentialStore>,
    options: ApiOptions,
    tunnel_settings: TunnelSettings,
    session_check_interval: Duration,
    failed_probes_before_session_check: u32,
    /// Set once the task of periodic session checks runs.
    periodic_checks_started: AtomicBool,
    /// Set while a session check started by failed probes waits or runs, so that probes
    /// failing meanwhile do not queue more.
    probe_check_pending: AtomicBool,
    operations: Arc<Mutex<Operations>>,
    view: watch::Sender<Snapshot>,
    /// Status access to the session's tunnel, readable while an operation has the session.
    tunnel: std::sync::Mutex<Option<TunnelWatch>>,
    /// Incremented by every sign-out and shutdown call before it waits for its turn; a
    /// confirmation in progress stops when it changes.
    interrupts: watch::Sender<u64>,
    /// Counter incremented by every user operation on a session (sign-out, shutdown,
    /// disconnect, connect) before it waits for its turn. A session check that the
    /// controller started itself stops when it changes, so it never delays a user request.
    user_requests: watch::Sender<u64>,
    /// Number of sign-outs that ended a session, so that a call that waited behind one
    /// can return that one's report.
    completed_sign_outs: AtomicU64,
}

/// State that only the operation holding the lock may touch.
struct Operations {
    store_loaded: bool,
    session: Option<Session>,
    last_sign_out: Option<SignOutReport>,
    /// Set by [`Controller::shutdown`]; no tunnel starts after it.
    shut_down: bool,
    /// Set by [`Controller::disconnect`] and cleared by [`Controller::connect`], sign-in and
    /// sign-out; no tunnel starts while it is set.
    disconnected: bool,
}

impl Controller {
    /// Creates a controller with the default tunnel settings and session checks.
    pub fn new(store: Arc<dyn CredentialStore>, options: ApiOptions) -> Self {
        Self::with_options(
            store,
            ControllerOptions {
                api: options,
                ..ControllerOptions::default()
            },
        )
    }

    /// Creates a controller. No task starts before the first [`Controller::resume`] or
    /// [`Controller::sign_in`], so this may run outside a Tokio runtime.
    pub fn with_options(store: Arc<dyn CredentialStore>, options: ControllerOptions) -> Self {
        let snapshot = Snapshot {
            phase: Phase::Starting,
            server_url: None,
            profile: None,
            server_status: ServerStatus::Unknown,
            tunnel: TunnelStatus::stopped(),
            disconnected: false,
            notice: None,
        };

        Self {
            inner: Arc::new(Inner {
                store,
                options: options.api,
                tunnel_settings: options.tunnel,
                session_check_interval: options.session_check_interval,
                // Zero would check after every probe, failed or not.
                failed_probes_before_session_check: options
                    .failed_probes_before_session_check
                    .max(1),
                periodic_checks_started: AtomicBool::new(false),
                probe_check_pending: AtomicBool::new(false),
                operations: Arc::new(Mutex::new(Operations {
                    store_loaded: false,
                    session: None,
                    last_sign_out: None,
                    shut_down: false,
                    disconnected: false,
                })),
                view: watch::channel(snapshot).0,
                tunnel: std::sync::Mutex::new(None),
                interrupts: watch::channel(0).0,
                user_requests: watch::channel(0).0,
                completed_sign_outs: AtomicU64::new(0),
            }),
        }
    }

    /// Returns the current state, with the tunnel's status read live, without waiting for a
    /// running operation.
    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = self.inner.view.borrow().clone();
        snapshot.tunnel = self.tunnel_status();
        snapshot
    }

    /// Returns the tunnel's status without waiting for a running operation: stopped when
    /// there is no session.
    pub fn tunnel_status(&self) -> TunnelStatus {
        let watch = self.tunnel_watch();
        watch.map(|watch| watch.status()).unwrap_or_default()
    }

    /// Probes the server through the tunnel now, or tries again to start a tunnel that failed
    /// to start. The result shows in [`Controller::tunnel_status`] when it arrives.
    ///
    /// NOTE: a new start attempt uses the WireGuard config of the last confirmation. A config
    /// that the server changed since is picked up only by the next confirmation, which
    /// [`Controller::resume`] skips once the session is confirmed (the next app start runs one).
    pub fn check_tunnel(&self) {
        if let Some(watch) = self.tunnel_watch() {
            watch.check_now();
        }
    }

    /// Returns the state once the store has been read (the phase is no longer `Starting`).
    pub async fn started_snapshot(&self) -> Snapshot {
        let mut receiver = self.inner.view.subscribe();
        let Ok(snapshot) = receiver
            .wait_for(|snapshot| snapshot.phase != Phase::Starting)
            .await
        else {
            unreachable!("the controller owns the sender, so the channel stays open");
        };
        snapshot.clone()
    }

    /// Returns a receiver of state changes, for pushing updates to a window.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.inner.view.subscribe()
    }

    /// Loads the stored session (on the first call), starts its tunnel from the saved key and
    /// WireGuard config, and confirms the session with the server.
    ///
    /// A 401 ends the session locally and leaves a `session_expired` notice. A network or
    /// server failure keeps the session with the saved profile and records the failure in
    /// [`Snapshot::server_status`]; call `resume` again to retry. When the server hands out a
    /// changed WireGuard config or a new key, the tunnel starts again with them.
    ///
    /// The first call also starts the periodic session checks (see
    /// [`Controller::check_session`]).
    pub async fn resume(&self) -> Snapshot {
        self.start_periodic_checks();
        let mut interrupts = self.inner.interrupts.subscribe();

        self.run(move |controller, mut operations| async move {
            controller.load_store(&mut operations);
            controller.ensure_tunnel(&mut operations).await;
            controller
                .confirm_session(&mut operations, &mut interrupts)
                .await;
            controller.ensure_tunnel(&mut operations).await;
            controller.snapshot()
        })
        .await
    }

    /// Checks the signed-in session with the server now (`GET /me`, `GET /wireguard/config`),
    /// also when it was confirmed before, and returns the state.
    ///
    /// A 401 ends the session like at [`Controller::resume`]: the tunnel stops, the store is
    /// cleared and a `session_expired` notice says that the server ended the session. A
    /// network or server failure keeps the session and shows in [`Snapshot::server_status`].
    /// Does nothing without a session or after [`Controller::shutdown`].
    ///
    /// The controller calls this every [`ControllerOptions::session_check_interval`] while
    /// signed in, and when [`ControllerOptions::failed_probes_before_session_check`] health
    /// probes through the tunnel fail in a row.
    pub async fn check_session(&self) -> Snapshot {
        let interrupts = self.inner.interrupts.subscribe();
        self.check_session_until(interrupts).await
    }

    /// [`Controller::check_session`] for checks that the controller starts itself: it stops
    /// early for every user operation on the session, not only for a sign-out.
    async fn check_session_in_background(&self) -> Snapshot {
        let user_requests = self.inner.user_requests.subscribe();
        self.check_session_until(user_requests).await
    }

    async fn check_session_until(&self, mut interrupts: watch::Receiver<u64>) -> Snapshot {
        self.run(move |controller, mut operations| async move {
            controller.load_store(&mut operations);
            if operations.shut_down || operations.session.is_none() {
                return controller.snapshot();
            }

            controller
                .verify_session(&mut operations, &mut interrupts)
                .await;
            controller.ensure_tunnel(&mut operations).await;
            controller.snapshot()
        })
        .await
    }

    /// Signs in and saves the credentials; waits for a running operation (such as a sign-out)
    /// to finish first.
    pub async fn sign_in(
        &self,
        server_url: &str,
        username: &str,
        password: Password,
    ) -> Result<Snapshot, ControllerError> {
        let server_url = ServerUrl::parse(server_url)?;
        let username = username.trim().to_owned();
        if username.is_empty() {
            return Err(ControllerError::MissingField { field: "user name" });
        }
        if password.is_empty() {
            return Err(ControllerError::MissingField { field: "password" });
        }
        self.start_periodic_checks();

        self.run(move |controller, mut operations| async move {
            controller.load_store(&mut operations);
            controller
                .sign_in_locked(&mut operations, server_url, &username, &password)
                .await
        })
        .await
    }

    /// Signs out: `POST /logout` under the logout timeout, then stops the tunnel under its
    /// stop bound and clears the stored credentials, whatever the server replied.
    ///
    /// A call made while another sign-out runs waits for it and returns its report; a call
    /// with no session returns [`SignOutOutcome::AlreadySignedOut`].
    pub async fn sign_out(&self) -> SignOutOutcome {
        let completed_before = self.inner.completed_sign_outs.load(Ordering::SeqCst);
        self.inner.interrupts.send_modify(|count| *count += 1);
        self.interrupt_background_checks();

        self.run(move |controller, mut operations| async move {
            controller.load_store(&mut operations);

            let Some(session) = operations.session.take() else {
                let completed_now = controller.inner.completed_sign_outs.load(Ordering::SeqCst);
                return match &operations.last_sign_out {
                    Some(report) if completed_now > completed_before => {
                        SignOutOutcome::Completed(report.clone())
                    }
                    _ => SignOutOutcome::AlreadySignedOut,
                };
            };
            controller.publish(|view| view.phase = Phase::SigningOut);

            let report = session.sign_out(controller.inner.store.as_ref()).await;
            controller.set_tunnel_watch(None);
            operations.disconnected = false;

            operations.last_sign_out = Some(report.clone());
            controller
                .inner
                .completed_sign_outs
                .fetch_add(1, Ordering::SeqCst);
            controller.publish(|view| {
                view.phase = Phase::SignedOut;
                view.profile = None;
                view.server_status = ServerStatus::Unknown;
                view.tunnel = TunnelStatus::stopped();
                view.disconnected = false;
                view.notice = Some(Notice {
                    kind: report.server.kind(),
                    message: report.message(),
                });
            });
            SignOutOutcome::Completed(report)
        })
        .await
    }

    /// Stops the session's tunnel within its stop bound and keeps the session, its saved
    /// credentials and its VPN address, as *Disconnect* in VPN clients does. No tunnel starts
    /// again, not even at the next [`Controller::resume`], until [`Controller::connect`].
    ///
    /// Returns how the tunnel stopped, or `None` when there was no session.
    ///
    /// NOTE: the disconnected state is kept in memory only, so the next start of the app
    /// connects again.
    pub async fn disconnect(&self) -> Option<TunnelOutcome> {
        self.interrupt_background_checks();

        self.run(move |controller, mut operations| async move {
            controller.load_store(&mut operations);
            // Reborrow through the guard once, so that two fields can be borrowed apart.
            let operations = &mut *operations;
            let session = operations.session.as_mut()?;

            operations.disconnected = true;
            let outcome = session.stop_tunnel().await;
            tracing::info!(
                user_id = ?session.profile().user.id,
                outcome = outcome.kind(),
                ?outcome,
                "disconnected: stopped the tunnel and kept the session"
            );
            controller.set_tunnel_watch(None);
            controller.publish(|view| {
                view.tunnel = TunnelStatus::stopped();
                view.disconnected = true;
            });
            Some(outcome)
        })
        .await
    }

    /// Starts the session's tunnel again after [`Controller::disconnect`], with the saved key
    /// and WireGuard config, and returns the state. Does nothing to a tunnel that runs already.
    ///
    /// Like at sign-in, a tunnel that cannot start is not an error: the status shows why, and
    /// the tunnel is started again with backoff.
    pub async fn connect(&self) -> Result<Snapshot, ControllerError> {
        self.interrupt_background_checks();

        self.run(move |controller, mut operations| async move {
            controller.load_store(&mut operations);
            if operations.shut_down {
                return Err(ControllerError::ShutDown);
            }
            let Some(session) = operations.session.as_ref() else {
                return Err(ControllerError::NotSignedIn);
            };
            let user_id = session.profile().user.id.clone();

            operations.disconnected = false;
            controller.publish(|view| view.disconnected = false);
            controller.ensure_tunnel(&mut operations).await;
            tracing::info!(?user_id, "connected: started the tunnel of the session");
            Ok(controller.snapshot())
        })
        .await
    }

    /// Stops the tunnel within its stop bound for app exit and keeps the session saved, so
    /// that the next start resumes it. No tunnel starts after this call.
    ///
    /// Returns how the tunnel stopped, or `None` when there was no session.
    pub async fn shutdown(&self) -> Option<TunnelOutcome> {
        self.inner.interrupts.send_modify(|count| *count += 1);
        self.interrupt_background_checks();

        self.run(move |controller, mut operations| async move {
            operations.shut_down = true;
            let session = operations.session.as_mut()?;

            let outcome = session.stop_tunnel().await;
            tracing::info!(
                outcome = outcome.kind(),
                ?outcome,
                "stopped the tunnel for exit; the session stays saved"
            );
            controller.set_tunnel_watch(None);
            controller.publish(|view| view.tunnel = TunnelStatus::stopped());
            Some(outcome)
        })
        .await
    }

    /// Runs an operation in its own task once the previous operations have finished.
    async fn run<T, F, Fut>(&self, operation: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(Controller, OwnedMutexGuard<Operations>) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let operations = Arc::clone(&self.inner.operations).lock_owned().await;
        let controller = self.clone();

        let task = tokio::spawn(operation(controller, operations));
        match task.await {
            Ok(value) => value,
            Err(error) => match error.try_into_panic() {
                Ok(payload) => std::panic::resume_unwind(payload),
                Err(error) => {
                    panic!("a controller operation was cancelled by runtime shutdown: {error}")
                }
            },
        }
    }

    fn publish(&self, change: impl FnOnce(&mut Snapshot)) {
        self.inner.view.send_modify(change);
    }

    fn tunnel_watch(&self) -> Option<TunnelWatch> {
        let watch = self
            .inner
            .tunnel
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        watch.clone()
    }

    fn set_tunnel_watch(&self, watch: Option<TunnelWatch>) {
        *self
            .inner
            .tunnel
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = watch;
    }

    /// Returns the callback through which the tunnel's supervisor publishes status changes.
    /// It keeps a weak reference, so that a session owned by the controller does not keep the
    /// controller alive.
    fn tunnel_notifier(&self) -> ChangeNotifier {
        let inner = Arc::downgrade(&self.inner);
        Arc::new(move || {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let controller = Controller { inner };
            let status = controller.tunnel_status();
            controller.publish(|view| view.tunnel = status);
            controller.check_session_after_failed_probes();
        })
    }

    /// Starts a session check when the tunnel's health probes have failed a multiple of
    /// [`ControllerOptions::failed_probes_before_session_check`] times in a row, because a
    /// server that revoked the session drops the device's peer and so stops replying.
    fn check_session_after_failed_probes(&self) {
        let Some(watch) = self.tunnel_watch() else {
            return;
        };
        let failed_probes = watch.failed_probes();
        let threshold = self.inner.failed_probes_before_session_check;
        if failed_probes == 0 || failed_probes % threshold != 0 {
            return;
        }
        if self.inner.probe_check_pending.swap(true, Ordering::SeqCst) {
            return;
        }

        tracing::info!(
            failed_probes,
            "the server does not answer through the tunnel; checking the session with it"
        );
        let controller = self.clone();
        tokio::spawn(async move {
            controller.check_session_in_background().await;
            controller
                .inner
                .probe_check_pending
                .store(false, Ordering::SeqCst);
        });
    }

    /// Stops a session check that the controller started itself, so that the user operation
    /// calling this does not wait for it.
    fn interrupt_background_checks(&self) {
        self.inner.user_requests.send_modify(|count| *count += 1);
    }

    /// Starts the task that checks the session every
    /// [`ControllerOptions::session_check_interval`] while signed in, once per controller.
    /// The task holds a weak reference and ends when the controller is dropped.
    fn start_periodic_checks(&self) {
        if self
            .inner
            .periodic_checks_started
            .swap(true, Ordering::SeqCst)
        {
            return;
        }
        let interval = self.inner.session_check_interval;
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(check_periodically(inner, interval));
    }

    /// Starts the session's tunnel, or starts it again when the session's WireGuard config or
    /// key changed. Does nothing without a session, after [`Controller::shutdown`], or while
    /// the user has disconnected.
    async fn ensure_tunnel(&self, operations: &mut Operations) {
        if operations.shut_down || operations.disconnected {
            return;
        }
        let Some(session) = operations.session.as_mut() else {
            return;
        };

        session
            .ensure_tunnel_with(&self.inner.tunnel_settings, self.tunnel_notifier())
            .await;
        self.set_tunnel_watch(session.tunnel_watch());
        let status = self.tunnel_status();
        self.publish(|view| view.tunnel = status);
    }

    /// Reads the store once; unreadable contents and read errors mean "signed out".
    fn load_store(&self, operations: &mut Operations) {
        if operations.store_loaded {
            return;
        }
        operations.store_loaded = true;

        let credentials = match self.inner.store.load() {
            Ok(credentials) => credentials,
            Err(error) => {
                tracing::warn!(%error, "could not read the credential store; starting signed out");
                self.publish(|view| {
                    view.notice = Some(Notice {
                        kind: "store_error",
                        message: format!(
                            "Could not read the saved sign-in on this device: {error}."
                        ),
                    });
                });
                None
            }
        };
        let Some(credentials) = credentials else {
            tracing::info!("no saved session; starting signed out");
            self.publish(|view| view.phase = Phase::SignedOut);
            return;
        };

        let server_url = credentials.server_url.clone();
        let api = match ApiClient::new(server_url.clone(), self.inner.options.clone()) {
            Ok(api) => api,
            Err(error) => {
                tracing::error!(%error, "could not create the HTTP client; starting signed out");
                self.publish(|view| view.phase = Phase::SignedOut);
                return;
            }
        };

        let session = Session::resume(api, credentials);
        tracing::info!(user_id = ?session.profile().user.id, server = %server_url, "resumed the saved session");
        let profile = session.profile().clone();
        operations.session = Some(session);
        self.publish(|view| {
            view.phase = Phase::SignedIn;
            view.server_url = Some(server_url.to_string());
            view.profile = Some(profile);
            view.server_status = ServerStatus::Unknown;
        });
    }

    /// Confirms a session not yet confirmed, showing `Checking` meanwhile; stops early when a
    /// sign-out is requested.
    async fn confirm_session(
        &self,
        operations: &mut Operations,
        interrupts: &mut watch::Receiver<u64>,
    ) {
        if operations.session.is_none() {
            return;
        }
        if self.inner.view.borrow().server_status == ServerStatus::Confirmed {
            return;
        }
        self.publish(|view| view.server_status = ServerStatus::Checking);

        self.verify_session(operations, interrupts).await;
    }

    /// Checks the session with the server and applies the result: a saved profile update, the
    /// end of a session that the server rejected, or the failure in the server status. Stops
    /// early when a sign-out is requested.
    async fn verify_session(
        &self,
        operations: &mut Operations,
        interrupts: &mut watch::Receiver<u64>,
    ) {
        let Some(session) = operations.session.as_mut() else {
            return;
        };
        let status_before = self.inner.view.borrow().server_status.clone();

        let result = tokio::select! {
            result = session.confirm() => result,
            _ = interrupts.changed() => {
                tracing::debug!("the user requested an operation; stopping the session check");
                if status_before != ServerStatus::Confirmed {
                    self.publish(|view| view.server_status = ServerStatus::Unknown);
                }
                return;
            }
        };

        match result {
            Ok(Confirmation::Confirmed { changed }) => {
                if changed && let Err(error) = self.inner.store.save(session.credentials()) {
                    tracing::warn!(%error, "could not save the updated profile");
                }
                let profile = session.profile().clone();
                self.publish(|view| {
                    view.profile = Some(profile);
                    view.server_status = ServerStatus::Confirmed;
                });
            }
            Ok(Confirmation::Expired) => self.end_expired_session(operations).await,
            Err(error) => {
                // A server that stays down fails every periodic check; log the first failure
                // of a kind at WARN and the repeats at DEBUG.
                let unchanged = matches!(
                    (&status_before, error.unreachable_reason()),
                    (ServerStatus::Unreachable { .. }, Some(_))
                        | (ServerStatus::Failing { .. }, None)
                );
                if unchanged {
                    tracing::debug!(%error, "the session check failed again; keeping the session");
                } else {
                    tracing::warn!(%error, "could not confirm the session with the server; keeping it");
                }
                let status = match error.unreachable_reason() {
                    Some(reason) => ServerStatus::Unreachable {
                        message: format!(
                            "Server not reachable: {reason}. Showing the saved profile."
                        ),
                    },
                    None => ServerStatus::Failing {
                        message: format!(
                            "The server could not confirm the session: {error}. Showing the saved profile."
                        ),
                    },
                };
                self.publish(|view| view.server_status = status);
            }
        }
    }

    async fn end_expired_session(&self, operations: &mut Operations) {
        tracing::info!("the server rejected the session (revoked or expired); signing out locally");
        operations.disconnected = false;

        if let Some(mut session) = operations.session.take() {
            let outcome = session.stop_tunnel().await;
            tracing::info!(
                outcome = outcome.kind(),
                "stopped the tunnel of the expired session"
            );
        }
        self.set_tunnel_watch(None);
        if let Err(error) = self.inner.store.clear() {
            tracing::error!(%error, "could not clear the expired credentials");
        }

        self.publish(|view| {
            view.phase = Phase::SignedOut;
            view.profile = None;
            view.server_status = ServerStatus::Unknown;
            view.tunnel = TunnelStatus::stopped();
            view.disconnected = false;
            view.notice = Some(Notice {
                kind: "session_expired",
                message: "The server ended your session: an administrator revoked it, or it \
                          expired. Sign in again."
                    .to_owned(),
            });
        });
    }

    async fn sign_in_locked(
        &self,
        operations: &mut Operations,
        server_url: ServerUrl,
        username: &str,
        password: &Password,
    ) -> Result<Snapshot, ControllerError> {
        if let Some(session) = &operations.session {
            return Err(ControllerError::AlreadySignedIn {
                username: session.profile().user.username.clone(),
            });
        }
        self.publish(|view| {
            view.phase = Phase::SigningIn;
            view.server_url = Some(server_url.to_string());
            view.notice = None;
        });

        let result = self.create_session(server_url, username, password).await;
        let session = match result {
            Ok(session) => session,
            Err(error) => {
                self.publish(|view| view.phase = Phase::SignedOut);
                return Err(error);
            }
        };

        let profile = session.profile().clone();
        operations.session = Some(session);
        operations.disconnected = false;
        self.publish(|view| view.disconnected = false);
        self.ensure_tunnel(operations).await;

        self.publish(|view| {
            view.phase = Phase::SignedIn;
            view.profile = Some(profile);
            view.server_status = ServerStatus::Confirmed;
        });
        Ok(self.snapshot())
    }

    /// Signs in and saves the credentials; a session that cannot be saved is logged out again.
    async fn create_session(
        &self,
        server_url: ServerUrl,
        username: &str,
        password: &Password,
    ) -> Result<Session, ControllerError> {
        let api = ApiClient::new(server_url, self.inner.options.clone())
            .map_err(ControllerError::Client)?;

        let session = Session::sign_in(api, username, password).await?;

        if let Err(error) = self.inner.store.save(session.credentials()) {
            let message = error.to_string();
            session.abandon("the credentials could not be saved").await;
            if let Err(error) = self.inner.store.clear() {
                tracing::error!(%error, "could not clear the credential store after a failed save");
            }
            return Err(ControllerError::Store(message));
        }

        tracing::info!(user_id = ?session.profile().user.id, "signed in and saved the session");
        Ok(session)
    }
}

/// Checks the session every `interval` while the controller exists and is signed in.
async fn check_periodically(inner: Weak<Inner>, interval: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        ticks.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let controller = Controller { inner };
        if controller.inner.view.borrow().phase != Phase::SignedIn {
            continue;
        }

        tracing::debug!("checking the session with the server");
        controller.check_session_in_background().await;
    }
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Controller")
            .field("snapshot", &*self.inner.view.borrow())
            .finish_non_exhaustive()
    }
}
