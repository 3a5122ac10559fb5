//! Handlers of the `/admin` routes; only users with the admin role get past
//! [`AdminSession`].

use axum::Json;
use axum::extract::{Path, State};

use camwire_api::{AdminPeerList, AdminRevokeResponse, PoolStatus};

use super::extract::AdminSession;
use crate::error::Error;
use crate::state::AppState;
use crate::sweeper::read_live_handshakes;

/// `GET /admin/peers`: every peer with its user, session, handshake and expiry.
pub async fn list_peers(
    State(state): State<AppState>,
    _admin: AdminSession,
) -> Result<Json<AdminPeerList>, Error> {
    let handshakes = read_live_handshakes(state.backend().as_ref()).await;

    let list =
        crate::admin::list_peers(state.db(), handshakes.as_ref(), Some(state.lease_time())).await?;

    Ok(Json(list))
}

/// `DELETE /admin/peers/{id}`: removes the peer from the back end, frees its address
/// and revokes its session.
pub async fn revoke_peer(
    State(state): State<AppState>,
    admin: AdminSession,
    Path(peer_id): Path<String>,
) -> Result<Json<AdminRevokeResponse>, Error> {
    // Debug quotes the id and escapes control characters, because it comes decoded
    // from the path, where %0A would otherwise start a forged log line.
    tracing::info!(admin_user_id = %admin.0.user.id, ?peer_id, "revoking a peer");

    let response = crate::admin::revoke_peer(&state.peer_context(), &peer_id).await?;

    Ok(Json(response))
}

/// `GET /admin/pool`: size and use of the address pool.
pub async fn pool(
    State(state): State<AppState>,
    _admin: AdminSession,
) -> Result<Json<PoolStatus>, Error> {
    let status = crate::admin::pool_status(state.db(), state.pool()).await?;

    Ok(Json(status))
}
