//! Logic of the `/admin` routes and of the `peers` and `pool` commands.

use std::collections::HashMap;
use std::time::Duration;

use camwire_api::{AdminPeer, AdminPeerList, AdminRevokeResponse, PoolStatus};
use camwire_tunnel::PublicKey;

use crate::db::{Db, PeerDetail};
use crate::error::Error;
use crate::metrics::ReleaseCause;
use crate::peers::{PeerContext, PeerSelector, SessionAction, release_peer, unix_to_datetime};
use crate::pool::AddressPool;
use crate::sweeper::idle_since;

/// Lists every peer, lowest address first.
///
/// `handshakes` are the live back end's, in unix seconds; each peer shows the later of
/// those and the database's stored time. With `handshakes` and a `lease_time`, each peer
/// also shows when the sweeper reclaims it for idleness.
pub async fn list_peers(
    db: &Db,
    handshakes: Option<&HashMap<PublicKey, i64>>,
    lease_time: Option<Duration>,
) -> Result<AdminPeerList, Error> {
    let details = db.list_peer_details().await?;

    let peers = details
        .iter()
        .map(|detail| admin_peer(detail, handshakes, lease_time))
        .collect();

    Ok(AdminPeerList { peers })
}

fn admin_peer(
    detail: &PeerDetail,
    handshakes: Option<&HashMap<PublicKey, i64>>,
    lease_time: Option<Duration>,
) -> AdminPeer {
    let peer = &detail.peer;
    let live = handshakes.and_then(|handshakes| handshakes.get(&peer.public_key).copied());
    let last_handshake = peer.last_handshake_at.max(live);

    let idle_expires_at = match (handshakes, lease_time) {
        (Some(handshakes), Some(lease_time)) => {
            let lease_seconds = i64::try_from(lease_time.as_secs()).unwrap_or(i64::MAX);
            let deadline = idle_since(peer, Some(handshakes)).saturating_add(lease_seconds);
            Some(unix_to_datetime(deadline))
        }
        _ => None,
    };

    AdminPeer {
        id: peer.id.clone(),
        user_id: peer.user_id.clone(),
        username: detail.username.clone(),
        session_id: peer.session_id.clone(),
        address: peer.address,
        public_key: peer.public_key.to_base64(),
        created_at: unix_to_datetime(peer.created_at),
        last_handshake: last_handshake.map(unix_to_datetime),
        expires_at: unix_to_datetime(detail.session_expires_at),
        idle_expires_at,
    }
}

/// Revokes a peer: removes it from the back end, frees its address and deletes its
/// session, so that its access token gets 401.
pub async fn revoke_peer(
    context: &PeerContext<'_>,
    peer_id: &str,
) -> Result<AdminRevokeResponse, Error> {
    let outcome = release_peer(
        context,
        PeerSelector::Peer(peer_id),
        ReleaseCause::Admin,
        SessionAction::Delete,
    )
    .await?;

    let Some(released) = outcome.released else {
        return Err(Error::PeerNotFound {
            id: peer_id.chars().take(64).collect(),
        });
    };

    tracing::info!(
        peer_id,
        user_id = %released.peer.user_id,
        session_id = %released.peer.session_id,
        address = %released.peer.address,
        session_revoked = outcome.session_deleted,
        "revoked a peer"
    );

    Ok(AdminRevokeResponse {
        peer_id: released.peer.id,
        user_id: released.peer.user_id,
        session_id: released.peer.session_id,
        session_revoked: outcome.session_deleted,
        wireguard: released.cleanup,
    })
}

/// Reads the size and use of `pool` from the database.
pub async fn pool_status(db: &Db, pool: &AddressPool) -> Result<PoolStatus, Error> {
    let figures = db.pool_figures(pool).await?;

    Ok(PoolStatus {
        cidr: pool.network(),
        size: pool.client_count(),
        allocated: figures.allocated,
        free: figures.free,
        lowest_free: figures.lowest_free,
    })
}
