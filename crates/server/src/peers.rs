//! Allocation and release of WireGuard peers: the database and the back end together.
//!
//! Each operation runs in one database transaction, and the back end is called inside
//! it, so that a failed call rolls the database back (allocation) or is recorded for a
//! retry (release). The unique constraints of `peers` decide every race.

use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use ipnet::Ipv4Net;
use sqlx::AnyConnection;

use camwire_api::{CleanupStatus, WireguardCleanup, WireguardConfig};
use camwire_tunnel::PublicKey;

use crate::config::PERSISTENT_KEEPALIVE;
use crate::db::{
    PeerRow, delete_peer_by_session, delete_session, insert_peer, insert_pending_removal,
    release_address, take_lowest_free_address,
};
use crate::error::{Error, TokenProblem, error_chain, is_unique_violation, violated_constraint};
use crate::state::AppState;

/// The caller of an authenticated request: a session and its user.
#[derive(Debug, Clone)]
pub struct SessionContext {
    pub session_id: String,
    pub user_id: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// Allocates the lowest free address to `public_key` for the caller's session.
pub async fn allocate(
    state: &AppState,
    session: &SessionContext,
    public_key: PublicKey,
) -> Result<PeerRow, Error> {
    let db = state.db();

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

    let mut transaction = db.pool().begin().await?;

    let Some(address) = take_lowest_free_address(&mut transaction).await? else {
        tracing::warn!(
            user_id = %session.user_id,
            session_id = %session.session_id,
            pool = %state.pool(),
            outcome = "address_pool_exhausted",
            "allocation failed"
        );
        return Err(Error::AddressPoolExhausted {
            pool: state.pool().network(),
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
            return Err(classify_insert_error(state, session, error).await);
        }
    };

    // A failure here drops the transaction, which rolls back and keeps the address free.
    state.backend().add_peer(public_key, address).await?;

    if let Err(error) = transaction.commit().await {
        undo_add(state, public_key).await;
        return Err(error.into());
    }

    tracing::info!(
        user_id = %session.user_id,
        session_id = %session.session_id,
        address = %address,
        key_fingerprint = %public_key.fingerprint(),
        outcome = "allocated",
        "peer allocated"
    );

    Ok(peer)
}

/// Maps a failed peer insert to the error that names the conflict.
async fn classify_insert_error(
    state: &AppState,
    session: &SessionContext,
    error: sqlx::Error,
) -> Error {
    if !is_unique_violation(&error) {
        return error.into();
    }

    let constraint = violated_constraint(&error).unwrap_or_default();

    if constraint.contains("session_id") {
        return match state.db().find_peer_by_session(&session.session_id).await {
            Ok(Some(existing)) => Error::AlreadyConfigured {
                address: existing.address,
            },
            Ok(None) => error.into(),
            Err(lookup) => lookup.into(),
        };
    }

    if constraint.contains("public_key") {
        return Error::PublicKeyInUse;
    }

    // Two peers for one address means the free table lists a held address.
    tracing::warn!(
        session_id = %session.session_id,
        constraint = %constraint,
        "peer insert hit a unique constraint; the free-address table may be out of date"
    );
    error.into()
}

/// Takes a peer out of the back end again after its database transaction failed.
async fn undo_add(state: &AppState, public_key: PublicKey) {
    if let Err(error) = state.backend().remove_peer(public_key).await {
        tracing::error!(
            key_fingerprint = %public_key.fingerprint(),
            error = %error_chain(&error),
            "failed to remove a peer whose allocation was rolled back; it stays in the back end until the next start"
        );
    }
}

/// Puts a peer back into the back end after the transaction that released it failed.
async fn undo_remove(state: &AppState, peer: &PeerRow) {
    if let Err(error) = state
        .backend()
        .add_peer(peer.public_key, peer.address)
        .await
    {
        tracing::error!(
            key_fingerprint = %peer.public_key.fingerprint(),
            address = %peer.address,
            error = %error_chain(&error),
            "failed to restore a peer whose release was rolled back; the next start restores it"
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

/// A released peer, for logging after the commit.
struct Released {
    peer: PeerRow,
    cleanup: WireguardCleanup,
}

/// Deletes the session's peer, removes it from the back end and frees its address,
/// inside `transaction`. A failed back-end removal is recorded in `pending_removals` and
/// reported as `failed`; the database side is freed all the same.
async fn release_in(
    state: &AppState,
    transaction: &mut AnyConnection,
    session: &SessionContext,
) -> Result<Option<Released>, Error> {
    let Some(peer) = delete_peer_by_session(transaction, &session.session_id).await? else {
        return Ok(None);
    };

    let removal = state.backend().remove_peer(peer.public_key).await;

    // Addresses of an older, larger pool are not handed out again.
    if state.pool().is_client_address(peer.address)
        && let Err(error) = release_address(transaction, peer.address).await
    {
        if removal.is_ok() {
            undo_remove(state, &peer).await;
        }
        return Err(error.into());
    }

    let cleanup = match removal {
        Ok(()) => WireguardCleanup {
            status: CleanupStatus::Revoked,
            released_address: Some(peer.address),
            peer_removed: true,
            detail: None,
        },
        Err(error) => {
            let reason = error_chain(&error);
            tracing::warn!(
                user_id = %session.user_id,
                session_id = %session.session_id,
                address = %peer.address,
                key_fingerprint = %peer.public_key.fingerprint(),
                backend = state.backend().name(),
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
                    state.backend().name()
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
    let mut transaction = state.db().pool().begin().await?;

    let Some(released) = release_in(state, &mut transaction, session).await? else {
        return Ok(not_configured());
    };

    if let Err(error) = transaction.commit().await {
        undo_remove(state, &released.peer).await;
        return Err(error.into());
    }

    log_release(session, &released);
    Ok(released.cleanup)
}

/// Signs the caller's session out: frees its peer and deletes the session, in one
/// transaction (`POST /logout`). Touches no other session.
pub async fn logout(state: &AppState, session: &SessionContext) -> Result<WireguardCleanup, Error> {
    let mut transaction = state.db().pool().begin().await?;

    let released = release_in(state, &mut transaction, session).await?;

    let deleted = match delete_session(&mut transaction, &session.session_id).await {
        Ok(deleted) => deleted,
        Err(error) => {
            drop(transaction);
            if let Some(released) = &released {
                undo_remove(state, &released.peer).await;
            }
            return Err(error.into());
        }
    };

    // A concurrent sign-out of the same session deleted it first.
    if !deleted {
        drop(transaction);
        if let Some(released) = &released {
            undo_remove(state, &released.peer).await;
        }
        return Err(Error::Unauthorized(TokenProblem::Invalid));
    }

    if let Err(error) = transaction.commit().await {
        if let Some(released) = &released {
            undo_remove(state, &released.peer).await;
        }
        return Err(error.into());
    }

    let cleanup = match released {
        Some(released) => {
            log_release(session, &released);
            released.cleanup
        }
        None => not_configured(),
    };

    tracing::info!(
        user_id = %session.user_id,
        session_id = %session.session_id,
        address = cleanup.released_address.map(tracing::field::display),
        outcome = cleanup_outcome(cleanup.status),
        "signed out"
    );

    Ok(cleanup)
}

fn log_release(session: &SessionContext, released: &Released) {
    tracing::info!(
        user_id = %session.user_id,
        session_id = %session.session_id,
        address = %released.peer.address,
        key_fingerprint = %released.peer.public_key.fingerprint(),
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
