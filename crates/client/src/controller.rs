//! The session state machine that the desktop app's commands call, testable without a window.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use camwire_api::Password;
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use crate::report::SignOutReport;
use crate::session::Confirmation;
use crate::{
    ApiClient, ApiError, ApiOptions, CredentialStore, Profile, ServerUrl, ServerUrlError, Session,
    SignInError,
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
    /// [`crate::ServerOutcome::kind`]) or `session_expired`.
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
    pub notice: Option<Notice>,
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

    #[error(transparent)]
    SignIn(#[from] SignInError),

    #[error(transparent)]
    Client(ApiError),

    #[error(
        "could not save the sign-in on this device ({0}); the new session was logged out again"
    )]
    Store(String),
}

/// Owner of the session and the credential store; every user action is a method here.
///
/// Operations (resume, sign-in, sign-out) run one at a time in call order. Each runs in its
/// own task, so it completes even if the caller stops waiting. A sign-out interrupts a
/// running check of a resumed session, so that it waits only for its own `POST /logout`.
/// Call [`Controller::resume`] once at start; it may be called again to retry reaching the
/// server. Cloning is cheap and shares the state.
#[derive(Clone)]
pub struct Controller {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn CredentialStore>,
    options: ApiOptions,
    operations: Arc<Mutex<Operations>>,
    view: watch::Sender<Snapshot>,
    /// Incremented by every sign-out call before it waits for its turn; a confirmation in
    /// progress stops when it changes.
    sign_out_requests: watch::Sender<u64>,
    /// Number of sign-outs that ended a session, so that a call that waited behind one
    /// can return that one's report.
    completed_sign_outs: AtomicU64,
}

/// State that only the operation holding the lock may touch.
struct Operations {
    store_loaded: bool,
    session: Option<Session>,
    last_sign_out: Option<SignOutReport>,
}

impl Controller {
    pub fn new(store: Arc<dyn CredentialStore>, options: ApiOptions) -> Self {
        let snapshot = Snapshot {
            phase: Phase::Starting,
            server_url: None,
            profile: None,
            server_status: ServerStatus::Unknown,
            notice: None,
        };

        Self {
            inner: Arc::new(Inner {
                store,
                options,
                operations: Arc::new(Mutex::new(Operations {
                    store_loaded: false,
                    session: None,
                    last_sign_out: None,
                })),
                view: watch::channel(snapshot).0,
                sign_out_requests: watch::channel(0).0,
                completed_sign_outs: AtomicU64::new(0),
            }),
        }
    }

    /// Returns the current state without waiting for a running operation.
    pub fn snapshot(&self) -> Snapshot {
        self.inner.view.borrow().clone()
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

    /// Loads the stored session (on the first call) and confirms it with the server.
    ///
    /// A 401 ends the session locally and leaves a `session_expired` notice. A network or
    /// server failure keeps the session with the saved profile and records the failure in
    /// [`Snapshot::server_status`]; call `resume` again to retry.
    pub async fn resume(&self) -> Snapshot {
        let mut interrupts = self.inner.sign_out_requests.subscribe();

        self.run(move |controller, mut operations| async move {
            controller.load_store(&mut operations);
            controller
                .confirm_session(&mut operations, &mut interrupts)
                .await;
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

        self.run(move |controller, mut operations| async move {
            controller.load_store(&mut operations);
            controller
                .sign_in_locked(&mut operations, server_url, &username, &password)
                .await
        })
        .await
    }

    /// Signs out: `POST /logout` under the logout timeout, then clears the stored credentials
    /// whatever the server replied.
    ///
    /// A call made while another sign-out runs waits for it and returns its report; a call
    /// with no session returns [`SignOutOutcome::AlreadySignedOut`].
    pub async fn sign_out(&self) -> SignOutOutcome {
        let completed_before = self.inner.completed_sign_outs.load(Ordering::SeqCst);
        self.inner
            .sign_out_requests
            .send_modify(|count| *count += 1);

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

            operations.last_sign_out = Some(report.clone());
            controller
                .inner
                .completed_sign_outs
                .fetch_add(1, Ordering::SeqCst);
            controller.publish(|view| {
                view.phase = Phase::SignedOut;
                view.profile = None;
                view.server_status = ServerStatus::Unknown;
                view.notice = Some(Notice {
                    kind: report.server.kind(),
                    message: report.message(),
                });
            });
            SignOutOutcome::Completed(report)
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
        tracing::info!(user_id = %session.profile().user.id, server = %server_url, "resumed the saved session");
        let profile = session.profile().clone();
        operations.session = Some(session);
        self.publish(|view| {
            view.phase = Phase::SignedIn;
            view.server_url = Some(server_url.to_string());
            view.profile = Some(profile);
            view.server_status = ServerStatus::Unknown;
        });
    }

    /// Confirms a session not yet confirmed; stops early when a sign-out is requested.
    async fn confirm_session(
        &self,
        operations: &mut Operations,
        interrupts: &mut watch::Receiver<u64>,
    ) {
        let Some(session) = operations.session.as_mut() else {
            return;
        };
        if self.inner.view.borrow().server_status == ServerStatus::Confirmed {
            return;
        }
        self.publish(|view| view.server_status = ServerStatus::Checking);

        let result = tokio::select! {
            result = session.confirm() => result,
            _ = interrupts.changed() => {
                tracing::debug!("sign-out requested; stopping the session check");
                self.publish(|view| view.server_status = ServerStatus::Unknown);
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
            Ok(Confirmation::Expired) => self.end_expired_session(operations),
            Err(error) => {
                tracing::warn!(%error, "could not confirm the saved session; keeping it");
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

    fn end_expired_session(&self, operations: &mut Operations) {
        tracing::info!("the server rejected the saved session; signing out locally");

        // TODO: stop the tunnel here too once camwire-tunnel provides it.
        operations.session = None;
        if let Err(error) = self.inner.store.clear() {
            tracing::error!(%error, "could not clear the expired credentials");
        }

        self.publish(|view| {
            view.phase = Phase::SignedOut;
            view.profile = None;
            view.server_status = ServerStatus::Unknown;
            view.notice = Some(Notice {
                kind: "session_expired",
                message: "Your session expired or was revoked; sign in again.".to_owned(),
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

        tracing::info!(user_id = %session.profile().user.id, "signed in and saved the session");
        Ok(session)
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
