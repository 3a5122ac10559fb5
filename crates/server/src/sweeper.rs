//! The lease sweeper: reclaims peers whose session expired or that sent no handshake
//! for the lease time, deletes expired sessions and retries failed back-end removals.
//!
//! [`plan_sweep`] decides from (peers, sessions, last handshakes, now) alone, so tests
//! move time by arithmetic; [`sweep_once`] reads its inputs and carries the actions
//! out, and [`spawn`] runs it periodically.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;

use camwire_tunnel::PublicKey;

use crate::db::{
    PeerDetail, PeerRow, PendingRemoval, SessionRow, delete_expired_session, store_handshakes,
    unix_now,
};
use crate::error::{Error, error_chain};
use crate::metrics::ReleaseCause;
use crate::peers::{PeerContext, PeerSelector, SessionAction, release_peer};

/// Inputs of one sweep. Times are unix seconds.
#[derive(Debug, Clone, Copy)]
pub struct SweepInput<'a> {
    /// Every peer, with its session's expiry and the handshake time stored in the database.
    pub peers: &'a [PeerDetail],
    /// Sessions; those that expired at or before `now` are deleted.
    pub sessions: &'a [SessionRow],
    /// Last handshakes that this replica's back end reports, or `None` when it cannot
    /// tell; then no peer is reclaimed for idleness.
    pub handshakes: Option<&'a HashMap<PublicKey, i64>>,
    pub pending_removals: &'a [PendingRemoval],
    pub now: i64,
    /// Idle time after which a peer without a handshake is reclaimed, in seconds.
    pub lease_seconds: i64,
}

/// An action of a sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SweepAction {
    /// Release the peer. With [`ReleaseCause::SessionExpiry`] its session is deleted too.
    Reclaim {
        peer: PeerRow,
        cause: ReleaseCause,
        /// Start of the idle time: the last handshake, or the allocation when none.
        idle_since: i64,
    },
    /// Delete an expired session that has no peer.
    DeleteSession { session_id: String, user_id: String },
    /// Remove a released peer from the back end again, because the first removal failed.
    RetryRemoval(PendingRemoval),
    /// Forget a pending removal whose key a current peer registered again, so that the
    /// retry does not remove the new peer.
    DropPendingRemoval(PendingRemoval),
}

/// Decides what one sweep does at `input.now`.
pub fn plan_sweep(input: &SweepInput<'_>) -> Vec<SweepAction> {
    let mut actions = Vec::new();
    let mut sessions_with_peer = HashSet::new();

    for detail in input.peers {
        let peer = &detail.peer;
        sessions_with_peer.insert(peer.session_id.as_str());

        let idle_since = idle_since(peer, input.handshakes);

        if detail.session_expires_at <= input.now {
            actions.push(SweepAction::Reclaim {
                peer: peer.clone(),
                cause: ReleaseCause::SessionExpiry,
                idle_since,
            });
            continue;
        }

        let Some(_) = input.handshakes else {
            continue;
        };

        if input.now.saturating_sub(idle_since) >= input.lease_seconds {
            actions.push(SweepAction::Reclaim {
                peer: peer.clone(),
                cause: ReleaseCause::LeaseExpiry,
                idle_since,
            });
        }
    }

    for session in input.sessions {
        if session.expires_at <= input.now && !sessions_with_peer.contains(session.id.as_str()) {
            actions.push(SweepAction::DeleteSession {
                session_id: session.id.clone(),
                user_id: session.user_id.clone(),
            });
        }
    }

    let held_keys: HashSet<PublicKey> = input
        .peers
        .iter()
        .map(|detail| detail.peer.public_key)
        .collect();
    for pending in input.pending_removals {
        if held_keys.contains(&pending.public_key) {
            actions.push(SweepAction::DropPendingRemoval(pending.clone()));
        } else {
            actions.push(SweepAction::RetryRemoval(pending.clone()));
        }
    }

    actions
}

/// Returns the start of a peer's idle time: its latest handshake, stored or live, or
/// its allocation when it never completed one.
pub fn idle_since(peer: &PeerRow, handshakes: Option<&HashMap<PublicKey, i64>>) -> i64 {
    let live = handshakes.and_then(|handshakes| handshakes.get(&peer.public_key).copied());

    [Some(peer.created_at), peer.last_handshake_at, live]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(peer.created_at)
}

/// Converts a handshake time to unix seconds; times before 1970 become 0.
pub fn unix_seconds(time: SystemTime) -> i64 {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0);
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

/// Counts of what one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepSummary {
    pub reclaimed: usize,
    pub sessions_deleted: usize,
    pub removals_retried: usize,
    pub handshakes_stored: u64,
}

/// Runs one sweep at `now` (unix seconds): stores the back end's handshakes in the
/// database, plans, and carries out every action. An action that fails is logged and
/// the others still run.
pub async fn sweep_once(
    context: &PeerContext<'_>,
    lease_time: Duration,
    now: i64,
) -> Result<SweepSummary, Error> {
    let mut summary = SweepSummary::default();
    let handshakes = read_handshakes(context).await;
    let peers = context.db.list_peer_details().await?;

    if let Some(handshakes) = &handshakes {
        summary.handshakes_stored = store_newer_handshakes(context, &peers, handshakes).await?;
    }

    let sessions = context.db.list_expired_sessions(now).await?;
    let pending_removals = context.db.list_pending_removal_rows().await?;
    let input = SweepInput {
        peers: &peers,
        sessions: &sessions,
        handshakes: handshakes.as_ref(),
        pending_removals: &pending_removals,
        now,
        lease_seconds: i64::try_from(lease_time.as_secs()).unwrap_or(i64::MAX),
    };

    for action in plan_sweep(&input) {
        match carry_out(context, &action, now).await {
            Ok(SweepStep::Reclaimed) => summary.reclaimed += 1,
            Ok(SweepStep::SessionDeleted) => summary.sessions_deleted += 1,
            Ok(SweepStep::RemovalRetried) => summary.removals_retried += 1,
            Ok(SweepStep::Nothing) => {}
            Err(error) => tracing::warn!(
                action = ?action_name(&action),
                error = %error.log_text(),
                "sweep action failed; the next sweep tries again"
            ),
        }
    }

    Ok(summary)
}

/// Reads the back end's handshakes as unix seconds. Returns `None` when the back end
/// cannot tell or the read failed, so that no peer is reclaimed for idleness on missing data.
async fn read_handshakes(context: &PeerContext<'_>) -> Option<HashMap<PublicKey, i64>> {
    read_live_handshakes(context.backend?).await
}

/// Reads `backend`'s last handshakes as unix seconds; `None` when it cannot tell or the
/// read failed (logged).
pub async fn read_live_handshakes(
    backend: &dyn crate::backend::PeerBackend,
) -> Option<HashMap<PublicKey, i64>> {
    match backend.last_handshakes().await {
        Ok(Some(handshakes)) => Some(
            handshakes
                .into_iter()
                .map(|(key, time)| (key, unix_seconds(time)))
                .collect(),
        ),
        Ok(None) => None,
        Err(error) => {
            tracing::warn!(
                backend = backend.name(),
                error = %error_chain(&error),
                "failed to read the last handshakes; no peer is reclaimed for idleness in this sweep"
            );
            None
        }
    }
}

/// Stores the handshakes that are newer than the database's, so that every replica's
/// sweeper finds the clients that use this replica's endpoint.
async fn store_newer_handshakes(
    context: &PeerContext<'_>,
    peers: &[PeerDetail],
    handshakes: &HashMap<PublicKey, i64>,
) -> Result<u64, Error> {
    let newer: Vec<(PublicKey, i64)> = peers
        .iter()
        .filter_map(|detail| {
            let live = *handshakes.get(&detail.peer.public_key)?;
            let stored = detail.peer.last_handshake_at.unwrap_or(i64::MIN);
            (live > stored).then_some((detail.peer.public_key, live))
        })
        .collect();

    if newer.is_empty() {
        return Ok(0);
    }

    let _turn = context.db.lock_writes().await;
    let mut transaction = context.db.pool().begin().await?;
    let stored = store_handshakes(&mut transaction, &newer).await?;
    transaction.commit().await?;
    Ok(stored)
}

enum SweepStep {
    Reclaimed,
    SessionDeleted,
    RemovalRetried,
    Nothing,
}

fn action_name(action: &SweepAction) -> &'static str {
    match action {
        SweepAction::Reclaim { .. } => "reclaim",
        SweepAction::DeleteSession { .. } => "delete_session",
        SweepAction::RetryRemoval(_) => "retry_removal",
        SweepAction::DropPendingRemoval(_) => "drop_pending_removal",
    }
}

async fn carry_out(
    context: &PeerContext<'_>,
    action: &SweepAction,
    now: i64,
) -> Result<SweepStep, Error> {
    match action {
        SweepAction::Reclaim {
            peer,
            cause,
            idle_since,
        } => {
            let session_action = match cause {
                ReleaseCause::SessionExpiry => SessionAction::Delete,
                _ => SessionAction::Keep,
            };
            let outcome = release_peer(
                context,
                PeerSelector::Peer(&peer.id),
                *cause,
                session_action,
            )
            .await?;

            // A concurrent sign-out released it first.
            if outcome.released.is_none() {
                return Ok(SweepStep::Nothing);
            }

            tracing::info!(
                user_id = %peer.user_id,
                session_id = %peer.session_id,
                address = %peer.address,
                cause = cause.as_str(),
                idle_seconds = now.saturating_sub(*idle_since),
                session_deleted = outcome.session_deleted,
                "reclaimed a peer"
            );
            Ok(SweepStep::Reclaimed)
        }
        SweepAction::DeleteSession {
            session_id,
            user_id,
        } => {
            let _turn = context.db.lock_writes().await;
            let mut transaction = context.db.pool().begin().await?;
            let deleted = delete_expired_session(&mut transaction, session_id, now).await?;
            transaction.commit().await?;

            if !deleted {
                return Ok(SweepStep::Nothing);
            }
            tracing::info!(%user_id, %session_id, cause = "session_expiry", "deleted an expired session");
            Ok(SweepStep::SessionDeleted)
        }
        SweepAction::RetryRemoval(pending) => {
            let Some(backend) = context.backend else {
                return Ok(SweepStep::Nothing);
            };

            backend.remove_peer(pending.public_key).await?;
            context.db.delete_pending_removal(&pending.id).await?;
            tracing::info!(
                address = %pending.address,
                key_fingerprint = %pending.public_key.fingerprint(),
                backend = backend.name(),
                "completed a pending removal"
            );
            Ok(SweepStep::RemovalRetried)
        }
        SweepAction::DropPendingRemoval(pending) => {
            context.db.delete_pending_removal(&pending.id).await?;
            tracing::info!(
                address = %pending.address,
                key_fingerprint = %pending.public_key.fingerprint(),
                "dropped a pending removal: the key belongs to a current peer again"
            );
            Ok(SweepStep::Nothing)
        }
    }
}

/// Runs [`sweep_once`] every `interval` until the handle is aborted.
pub fn spawn(
    state: crate::state::AppState,
    lease_time: Duration,
    interval: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;

            let context = state.peer_context();
            match sweep_once(&context, lease_time, unix_now()).await {
                Ok(summary) if summary == SweepSummary::default() => {}
                Ok(summary) => tracing::debug!(?summary, "sweep finished"),
                Err(error) => {
                    tracing::warn!(error = %error.log_text(), "sweep failed; retrying at the next interval")
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use camwire_tunnel::PrivateKey;
    use std::net::Ipv4Addr;

    const HOUR: i64 = 3_600;
    const LEASE: i64 = 24 * HOUR;
    const START: i64 = 1_767_225_600;

    fn detail(last_octet: u8, created_at: i64, session_expires_at: i64) -> PeerDetail {
        PeerDetail {
            peer: PeerRow {
                id: format!("peer-{last_octet}"),
                session_id: format!("session-{last_octet}"),
                user_id: "user-1".into(),
                public_key: PrivateKey::generate().public_key(),
                address: Ipv4Addr::new(10, 13, 0, last_octet),
                created_at,
                last_handshake_at: None,
            },
            username: "alice".into(),
            session_expires_at,
        }
    }

    fn plan(
        peers: &[PeerDetail],
        sessions: &[SessionRow],
        handshakes: Option<&HashMap<PublicKey, i64>>,
        now: i64,
    ) -> Vec<SweepAction> {
        plan_sweep(&SweepInput {
            peers,
            sessions,
            handshakes,
            pending_removals: &[],
            now,
            lease_seconds: LEASE,
        })
    }

    fn reclaimed(actions: &[SweepAction]) -> Vec<(String, ReleaseCause)> {
        actions
            .iter()
            .filter_map(|action| match action {
                SweepAction::Reclaim { peer, cause, .. } => Some((peer.id.clone(), *cause)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn peer_without_handshake_expires_a_lease_after_allocation() {
        let peers = [detail(2, START, START + 7 * LEASE)];
        let none = HashMap::new();

        let before = plan(&peers, &[], Some(&none), START + LEASE - 1);
        let at = plan(&peers, &[], Some(&none), START + LEASE);

        assert!(before.is_empty(), "{before:?}");
        assert_eq!(
            reclaimed(&at),
            [("peer-2".to_owned(), ReleaseCause::LeaseExpiry)]
        );
    }

    #[test]
    fn recent_live_handshake_keeps_the_peer() {
        let peers = [detail(2, START, START + 7 * LEASE)];
        let handshakes = HashMap::from([(peers[0].peer.public_key, START + 2 * LEASE)]);

        let kept = plan(&peers, &[], Some(&handshakes), START + 3 * LEASE - 1);
        let expired = plan(&peers, &[], Some(&handshakes), START + 3 * LEASE);

        assert!(kept.is_empty(), "{kept:?}");
        assert_eq!(reclaimed(&expired).len(), 1);
    }

    #[test]
    fn stored_handshake_of_another_replica_counts() {
        let mut peer = detail(2, START, START + 7 * LEASE);
        peer.peer.last_handshake_at = Some(START + 2 * LEASE);
        let local = HashMap::new();

        let actions = plan(&[peer], &[], Some(&local), START + 2 * LEASE + HOUR);

        assert!(actions.is_empty(), "{actions:?}");
    }

    #[test]
    fn backend_without_handshakes_reclaims_only_expired_sessions() {
        let peers = [
            detail(2, START, START + 100 * LEASE),
            detail(3, START, START + LEASE / 2),
        ];

        let actions = plan(&peers, &[], None, START + 10 * LEASE);

        assert_eq!(
            reclaimed(&actions),
            [("peer-3".to_owned(), ReleaseCause::SessionExpiry)]
        );
    }

    #[test]
    fn expired_session_wins_over_idle_lease() {
        let peers = [detail(2, START, START + HOUR)];
        let none = HashMap::new();

        let actions = plan(&peers, &[], Some(&none), START + 2 * LEASE);

        assert_eq!(
            reclaimed(&actions),
            [("peer-2".to_owned(), ReleaseCause::SessionExpiry)]
        );
    }

    #[test]
    fn expired_sessions_without_peers_are_deleted() {
        let peers = [detail(2, START, START + HOUR)];
        let sessions = [
            SessionRow {
                id: "session-2".into(),
                user_id: "user-1".into(),
                expires_at: START + HOUR,
            },
            SessionRow {
                id: "lonely".into(),
                user_id: "user-2".into(),
                expires_at: START + HOUR,
            },
            SessionRow {
                id: "valid".into(),
                user_id: "user-3".into(),
                expires_at: START + 3 * HOUR,
            },
        ];

        let actions = plan(&peers, &sessions, None, START + 2 * HOUR);

        let deleted: Vec<&SweepAction> = actions
            .iter()
            .filter(|action| matches!(action, SweepAction::DeleteSession { .. }))
            .collect();
        assert_eq!(
            deleted,
            [&SweepAction::DeleteSession {
                session_id: "lonely".into(),
                user_id: "user-2".into()
            }]
        );
        assert_eq!(reclaimed(&actions).len(), 1, "session-2 goes with its peer");
    }

    #[test]
    fn pending_removal_retried_unless_key_reused() {
        let peers = [detail(2, START, START + LEASE)];
        let gone = PendingRemoval {
            id: "r1".into(),
            public_key: PrivateKey::generate().public_key(),
            address: Ipv4Addr::new(10, 13, 0, 9),
        };
        let reused = PendingRemoval {
            id: "r2".into(),
            public_key: peers[0].peer.public_key,
            address: Ipv4Addr::new(10, 13, 0, 7),
        };

        let actions = plan_sweep(&SweepInput {
            peers: &peers,
            sessions: &[],
            handshakes: None,
            pending_removals: &[gone.clone(), reused.clone()],
            now: START,
            lease_seconds: LEASE,
        });

        assert_eq!(
            actions,
            [
                SweepAction::RetryRemoval(gone),
                SweepAction::DropPendingRemoval(reused)
            ]
        );
    }

    #[test]
    fn idle_since_takes_the_latest_activity() {
        let mut peer = detail(2, START, START + LEASE).peer;
        peer.last_handshake_at = Some(START + 50);
        let live = HashMap::from([(peer.public_key, START + 20)]);

        assert_eq!(idle_since(&peer, Some(&live)), START + 50);
        assert_eq!(idle_since(&peer, None), START + 50);

        peer.last_handshake_at = None;
        assert_eq!(idle_since(&peer, Some(&live)), START + 20);
        assert_eq!(idle_since(&peer, None), START);
    }

    #[test]
    fn unix_seconds_of_times() {
        assert_eq!(
            unix_seconds(UNIX_EPOCH + Duration::from_secs(START as u64)),
            START
        );
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(5)), 0);
    }
}
