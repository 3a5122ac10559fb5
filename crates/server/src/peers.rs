//! Allocation and release of WireGuard peers: the database and the back end together.
//!
//! Each operation runs in one database transaction, and the back end is called inside
//! it, so that a failed call rolls the database back (allocation) or is recorded for a
//! retry (release). The unique constraints of `peers` decide every race. Every change
//! also increments the peer generation and, on PostgreSQL, notifies the other replicas
//! (see [`crate::replica`]).

use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use ipnet::Ipv4Net;
use sqlx::AnyConnection;

use camwire_api::{CleanupStatus, WireguardCleanup, WireguardConfig};
use camwire_tunnel::PublicKey;

use crate::backend::PeerBackend;
use crate::config::PERSISTENT_KEEPALIVE;
use crate::db::{
    Db, PeerChange, PeerRow, delete_peer_by_id, delete_peer_by_session, delete_session,
    forget_held_free_address, insert_peer, insert_pending_removal, lock_session,
    record_peer_change, release_address, take_lowest_free_address,
};
use crate::error::{
    Error, TokenProblem, error_chain, is_foreign_key_violation, is_unique_violation,
    violated_constraint,
};
use crate::metrics::{Metrics, ReleaseCause};
use crate::pool::AddressPool;
use crate::replica::ReplicaSync;
use crate::state::AppState;

/// The caller of an authenticated request: a session and its user.
#[derive(Debug, Clone)]
pub struct SessionContext {
    pub session_id: String,
    pub user_id: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// Everything that a peer change touches.
#[derive(Clone, Copy)]
pub struct PeerContext<'a> {
    pub db: &'a Db,
    pub pool: &'a AddressPool,
    /// The live back end; `None` in the command line tools, whose changes the running
    /// servers apply when they are notified or resynchronize.
    pub backend: Option<&'a dyn PeerBackend>,
    pub replica: &'a ReplicaSync,
    pub metrics: &'a Metrics,
}

impl PeerContext<'_> {
    fn backend_name(&self) -> &'static str {
        self.backend.map_or("none", |backend| backend.name())
    }

    /// Records the change in the transaction: generation and notification.
    async fn record_change(
        &self,
        transaction: &mut AnyConnection,
        change: PeerChange,
    ) -> Result<i64, sqlx::Error> {
        record_peer_change(transaction, self.db.kind(), self.replica.id(), change).await
    }
}

/// Allocates the lowest free address to `public_key` for the caller's session.
pub async fn allocate(
    state: &AppState,
    session: &SessionContext,
    public_key: PublicKey,
) -> Result<PeerRow, Error> {
    let context = state.peer_context();
    let db = context.db;

    // Read first, to return a precise error in the common cases; the constraints below
    // still decide when two requests race.
    if let Some(existing) = db.find_peer_by_session(&session.session_id).await? {
        return Err(Error::AlreadyConfigured {
            address: existing.address,
        });
    }

    if db.find_peer_by_public_key(&public_key).await?.is_some() {
        return Err(Error::PublicKeyInUse);
    }

    // A unique violation on the address means that the free table listed a held
    // address. The repair deletes that row, and one more attempt takes the next one.
    let stale_address = match allocate_once(&context, session, public_key).await? {
        Attempt::Allocated(peer) => return Ok(peer),
        Attempt::StaleFreeAddress(address) => address,
    };

    repair_free_address(&context, stale_address).await?;

    match allocate_once(&context, session, public_key).await? {
        Attempt::Allocated(peer) => Ok(peer),
        Attempt::StaleFreeAddress(address) => Err(Error::Conflict(format!(
            "the address {address} is listed as free but held by a peer; try again"
        ))),
    }
}

/// Outcome of one allocation transaction.
enum Attempt {
    Allocated(PeerRow),
    /// The insert hit the unique address constraint; nothing was changed.
    StaleFreeAddress(Ipv4Addr),
}

async fn allocate_once(
    context: &PeerContext<'_>,
    session: &SessionContext,
    public_key: PublicKey,
) -> Result<Attempt, Error> {
    let _gate = context.replica.lock_for_change().await;
    let _turn = context.db.lock_writes().await;
    let mut transaction = context.db.pool().begin().await?;

    let Some(address) = take_lowest_free_address(&mut transaction, context.db.kind()).await? else {
        tracing::warn!(
            user_id = %session.user_id,
            session_id = %session.session_id,
            pool = %context.pool,
            outcome = "address_pool_exhausted",
            "allocation failed"
        );
        return Err(Error::AddressPoolExhausted {
            pool: context.pool.network(),
        });
    };

    let inserted = insert_peer(
        &mut transaction,
        &session.session_id,
        &session.user_id,
        &public_key,
        address,
    )
    .await;
    let peer = match inserted {
        Ok(peer) => peer,
        Err(error) => {
            drop(transaction);
            return classify_insert_error(context, session, address, error).await;
        }
    };

    // A failure here drops the transaction, which rolls back and keeps the address free.
    if let Some(backend) = context.backend {
        backend.add_peer(public_key, address).await?;
    }

    let committed = commit_change(
        context,
        transaction,
        PeerChange::Added {
            public_key,
            address,
        },
    )
    .await;
    if let Err(error) = committed {
        undo_add(context, public_key).await;
        return Err(error.into());
    }

    context.metrics.record_allocation();
    tracing::info!(
        user_id = %session.user_id,
        session_id = %session.session_id,
        address = %address,
        key_fingerprint = %public_key.fingerprint(),
        outcome = "allocated",
        "peer allocated"
    );

    Ok(Attempt::Allocated(peer))
}

/// Records `change`, commits, and notes the generation as this replica's own.
async fn commit_change(
    context: &PeerContext<'_>,
    mut transaction: sqlx::Transaction<'_, sqlx::Any>,
    change: PeerChange,
) -> Result<(), sqlx::Error> {
    let generation = context.record_change(&mut transaction, change).await?;
    transaction.commit().await?;
    context
        .replica
        .note_own_change(generation, change.public_key());
    Ok(())
}

/// Maps a failed peer insert to the error that names the conflict.
async fn classify_insert_error(
    context: &PeerContext<'_>,
    session: &SessionContext,
    address: Ipv4Addr,
    error: sqlx::Error,
) -> Result<Attempt, Error> {
    // The session row is gone: a sign-out or revocation ended it after this request's
    // token was checked, so the request gets the 401 of an ended session.
    if is_foreign_key_violation(&error) {
        tracing::info!(
            user_id = %session.user_id,
            session_id = %session.session_id,
            outcome = "session_ended",
            "allocation rejected: the session ended during the request"
        );
        return Err(Error::Unauthorized(TokenProblem::Invalid));
    }

    if !is_unique_violation(&error) {
        return Err(error.into());
    }

    let constraint = violated_constraint(&error).unwrap_or_default();

    if constraint.contains("session_id") {
        return match context.db.find_peer_by_session(&session.session_id).await {
            Ok(Some(existing)) => Err(Error::AlreadyConfigured {
                address: existing.address,
            }),
            Ok(None) => Err(error.into()),
            Err(lookup) => Err(lookup.into()),
        };
    }

    if constraint.contains("public_key") {
        return Err(Error::PublicKeyInUse);
    }

    if constraint.contains("address") {
        tracing::warn!(
            session_id = %session.session_id,
            address = %address,
            "the free-address table listed an address that a peer holds; repairing it"
        );
        return Ok(Attempt::StaleFreeAddress(address));
    }

    Err(error.into())
}

/// Deletes a held address from the free table, in its own transaction.
async fn repair_free_address(context: &PeerContext<'_>, address: Ipv4Addr) -> Result<(), Error> {
    let _turn = context.db.lock_writes().await;
    let mut transaction = context.db.pool().begin().await?;
    forget_held_free_address(&mut transaction, address).await?;
    transaction.commit().await?;
    Ok(())
}

/// Takes a peer out of the back end again after its database transaction failed.
async fn undo_add(context: &PeerContext<'_>, public_key: PublicKey) {
    let Some(backend) = context.backend else {
        return;
    };

    if let Err(error) = backend.remove_peer(public_key).await {
        tracing::error!(
            key_fingerprint = %public_key.fingerprint(),
            error = %error_chain(&error),
            "failed to remove a peer whose allocation was rolled back; the next resynchronization removes it"
        );
    }
}

/// Puts a peer back into the back end after the transaction that released it failed.
async fn undo_remove(context: &PeerContext<'_>, released: &Released) {
    let Some(backend) = context.backend else {
        return;
    };
    if !released.cleanup.peer_removed {
        return;
    }

    let peer = &released.peer;
    if let Err(error) = backend.add_peer(peer.public_key, peer.address).await {
        tracing::error!(
            key_fingerprint = %peer.public_key.fingerprint(),
            address = %peer.address,
            error = %error_chain(&error),
            "failed to restore a peer whose release was rolled back; the next resynchronization restores it"
        );
    }
}

/// Returns the WireGuard settings of the device with the address `address`.
pub fn wireguard_config(
    state: &AppState,
    address: Ipv4Addr,
    session_expires_at: i64,
) -> WireguardConfig {
    WireguardConfig {
        address: Ipv4Net::from(address),
        server_address: state.pool().server_address(),
        server_public_key: state.server_public_key().to_base64(),
        endpoint: state.wg_endpoint().to_owned(),
        allowed_ips: vec![state.pool().network()],
        persistent_keepalive: PERSISTENT_KEEPALIVE,
        expires_at: unix_to_datetime(session_expires_at),
    }
}

/// Converts unix seconds to a time; out-of-range values become the Unix epoch.
pub fn unix_to_datetime(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap_or_default()
}

/// Selector of the peer that a release takes.
#[derive(Debug, Clone, Copy)]
pub enum PeerSelector<'a> {
    /// The peer of this session, if it has one.
    Session(&'a str),
    /// The peer with this id.
    Peer(&'a str),
}

/// Handling of the peer's session in a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAction {
    /// Keep the session, so that its token stays valid.
    Keep,
    /// Delete the session, so that its token gets 401.
    Delete,
    /// Delete the session, and fail with 401 when it is already gone (a concurrent
    /// sign-out of the same session).
    DeleteExisting,
}

/// A released peer and what became of it.
#[derive(Debug, Clone)]
pub struct Released {
    pub peer: PeerRow,
    pub cleanup: WireguardCleanup,
}

/// Result of [`release_peer`].
#[derive(Debug, Clone)]
pub struct ReleaseOutcome {
    /// The peer that was released, or `None` when there was none.
    pub released: Option<Released>,
    /// Whether the session was deleted.
    pub session_deleted: bool,
}

impl ReleaseOutcome {
    /// Returns the cleanup for the response: the peer's, or `not_configured`.
    pub fn cleanup(&self) -> WireguardCleanup {
        match &self.released {
            Some(released) => released.cleanup.clone(),
            None => not_configured(),
        }
    }
}

/// Deletes a peer, removes it from the back end and frees its address, then handles
/// its session as `session_action` directs, all in one transaction.
///
/// A failed back-end removal is recorded in `pending_removals` and reported as
/// `failed`; the database side is freed all the same. Every release is logged with the
/// user id, session id, address and `cause`.
pub async fn release_peer(
    context: &PeerContext<'_>,
    selector: PeerSelector<'_>,
    cause: ReleaseCause,
    session_action: SessionAction,
) -> Result<ReleaseOutcome, Error> {
    let _gate = context.replica.lock_for_change().await;
    let _turn = context.db.lock_writes().await;
    let mut transaction = context.db.pool().begin().await?;

    // A registration on the same session that commits meanwhile would otherwise leave
    // a peer that this release does not see, and that blocks the session's deletion.
    if let PeerSelector::Session(session_id) = selector {
        lock_session(&mut transaction, context.db.kind(), session_id).await?;
    }

    let released = release_in(context, &mut transaction, selector).await?;

    let session_id = match (&released, selector) {
        (Some(released), _) => Some(released.peer.session_id.clone()),
        (None, PeerSelector::Session(session_id)) => Some(session_id.to_owned()),
        (None, PeerSelector::Peer(_)) => None,
    };

    let session_deleted = match (session_action, session_id) {
        (SessionAction::Keep, _) | (_, None) => false,
        (_, Some(session_id)) => match delete_session(&mut transaction, &session_id).await {
            Ok(deleted) => deleted,
            Err(error) => {
                drop(transaction);
                if let Some(released) = &released {
                    undo_remove(context, released).await;
                }
                return Err(error.into());
            }
        },
    };

    if session_action == SessionAction::DeleteExisting && !session_deleted {
        drop(transaction);
        if let Some(released) = &released {
            undo_remove(context, released).await;
        }
        return Err(Error::Unauthorized(TokenProblem::Invalid));
    }

    let committed = match &released {
        Some(released) => {
            let change = PeerChange::Removed {
                public_key: released.peer.public_key,
            };
            commit_change(context, transaction, change).await
        }
        None => transaction.commit().await,
    };
    if let Err(error) = committed {
        if let Some(released) = &released {
            undo_remove(context, released).await;
        }
        return Err(error.into());
    }

    if let Some(released) = &released {
        context.metrics.record_release(cause);
        log_release(released, cause);
    }

    Ok(ReleaseOutcome {
        released,
        session_deleted,
    })
}

/// Deletes the selected peer, removes it from the back end and frees its address,
/// inside `transaction`.
async fn release_in(
    context: &PeerContext<'_>,
    transaction: &mut AnyConnection,
    selector: PeerSelector<'_>,
) -> Result<Option<Released>, Error> {
    let deleted = match selector {
        PeerSelector::Session(session_id) => {
            delete_peer_by_session(transaction, session_id).await?
        }
        PeerSelector::Peer(peer_id) => delete_peer_by_id(transaction, peer_id).await?,
    };
    let Some(peer) = deleted else {
        return Ok(None);
    };

    let removal = match context.backend {
        Some(backend) => Some(backend.remove_peer(peer.public_key).await),
        None => None,
    };

    // Addresses of an older, larger pool are not handed out again.
    if context.pool.is_client_address(peer.address)
        && let Err(error) = release_address(transaction, peer.address).await
    {
        if let Some(Ok(())) = removal
            && let Some(backend) = context.backend
            && let Err(restore) = backend.add_peer(peer.public_key, peer.address).await
        {
            tracing::error!(
                key_fingerprint = %peer.public_key.fingerprint(),
                address = %peer.address,
                error = %error_chain(&restore),
                "failed to restore a peer whose release was rolled back; the next resynchronization restores it"
            );
        }
        return Err(error.into());
    }

    let cleanup = match removal {
        Some(Ok(())) => WireguardCleanup {
            status: CleanupStatus::Revoked,
            released_address: Some(peer.address),
            peer_removed: true,
            detail: None,
        },
        // The command line changes only the database; the running servers remove the
        // peer when they are notified or resynchronize.
        None => WireguardCleanup {
            status: CleanupStatus::Revoked,
            released_address: Some(peer.address),
            peer_removed: false,
            detail: Some(
                "the running servers remove the peer from their WireGuard back ends when they apply the change".into(),
            ),
        },
        Some(Err(error)) => {
            let reason = error_chain(&error);
            tracing::warn!(
                user_id = %peer.user_id,
                session_id = %peer.session_id,
                address = %peer.address,
                key_fingerprint = %peer.public_key.fingerprint(),
                backend = context.backend_name(),
                error = %reason,
                "failed to remove the peer from the back end; recorded for a retry"
            );
            insert_pending_removal(transaction, &peer.public_key, peer.address, &reason).await?;

            WireguardCleanup {
                status: CleanupStatus::Failed,
                released_address: Some(peer.address),
                peer_removed: false,
                detail: Some(format!(
                    "removing the peer from the {} back end failed; the address is free and the server retries the removal",
                    context.backend_name()
                )),
            }
        }
    };

    Ok(Some(Released { peer, cleanup }))
}

/// Returns the cleanup of a session that had no peer.
fn not_configured() -> WireguardCleanup {
    WireguardCleanup {
        status: CleanupStatus::NotConfigured,
        released_address: None,
        peer_removed: false,
        detail: None,
    }
}

/// Frees the caller's peer and keeps the session (`DELETE /wireguard/config`).
pub async fn release(
    state: &AppState,
    session: &SessionContext,
) -> Result<WireguardCleanup, Error> {
    let outcome = release_peer(
        &state.peer_context(),
        PeerSelector::Session(&session.session_id),
        ReleaseCause::Revoke,
        SessionAction::Keep,
    )
    .await?;

    Ok(outcome.cleanup())
}

/// Signs the caller's session out: frees its peer and deletes the session, in one
/// transaction (`POST /logout`). Touches no other session.
pub async fn logout(state: &AppState, session: &SessionContext) -> Result<WireguardCleanup, Error> {
    let outcome = release_peer(
        &state.peer_context(),
        PeerSelector::Session(&session.session_id),
        ReleaseCause::Logout,
        SessionAction::DeleteExisting,
    )
    .await?;
    let cleanup = outcome.cleanup();

    tracing::info!(
        user_id = %session.user_id,
        session_id = %session.session_id,
        address = cleanup.released_address.map(tracing::field::display),
        outcome = cleanup_outcome(cleanup.status),
        "signed out"
    );

    Ok(cleanup)
}

fn log_release(released: &Released, cause: ReleaseCause) {
    let peer = &released.peer;

    tracing::info!(
        user_id = %peer.user_id,
        session_id = %peer.session_id,
        address = %peer.address,
        key_fingerprint = %peer.public_key.fingerprint(),
        cause = cause.as_str(),
        outcome = cleanup_outcome(released.cleanup.status),
        "peer released"
    );
}

fn cleanup_outcome(status: CleanupStatus) -> &'static str {
    match status {
        CleanupStatus::Revoked => "revoked",
        CleanupStatus::NotConfigured => "not_configured",
        CleanupStatus::Failed => "failed",
    }
}
