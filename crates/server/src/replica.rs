//! Keeping this replica's back end in step with peer changes that other processes make.
//!
//! Several server processes may share one database, each with its own back end. A
//! change made through one of them reaches the others in two ways:
//!
//! - On PostgreSQL, every change sends a `NOTIFY` on commit, and each replica listens
//!   with [`sqlx::postgres::PgListener`] and applies the change to its back end at once.
//! - Every change increments the peer generation. On SQLite, which has no
//!   notifications, each replica polls it every [`GENERATION_POLL_INTERVAL`] and
//!   resynchronizes when another process changed the peers.
//!
//! On both databases a full resynchronization runs every `resync_interval` as a safety
//! net, and after the listener reconnects.
//!
//! A resynchronization reads the peers and applies them while holding the change gate
//! exclusively, and every local change holds it shared from before its transaction
//! begins until after its commit, so a resynchronization never sees a half-made local
//! change. Applying a notification also holds the gate exclusively and skips changes
//! older than what the back end already has: a notification may arrive after a newer
//! local change of the same key, or describe a change that a resynchronization applied.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::task::JoinHandle;

use crate::backend::{BackendError, LivePeer, PeerBackend, SyncReport};
use crate::db::{Db, DbKind, PEER_CHANNEL, PeerChange, PeerNotification};
use crate::error::error_chain;
use camwire_tunnel::PublicKey;

/// Interval at which replicas on SQLite poll the peer generation.
pub const GENERATION_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Wait before reconnecting the PostgreSQL listener after a failure.
const LISTENER_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Errors of a resynchronization.
#[derive(Debug, thiserror::Error)]
pub enum ResyncError {
    #[error("failed to read the peers from the database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// This process's identity among replicas, its change gate and the peer generations
/// that it made itself.
#[derive(Debug)]
pub struct ReplicaSync {
    id: String,
    gate: RwLock<()>,
    generations: Mutex<GenerationLog>,
    resync_requested: Notify,
}

impl Default for ReplicaSync {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplicaSync {
    /// Creates the state of a new process with a random replica id.
    pub fn new() -> Self {
        Self {
            id: uuid::Uuid::new_v4().simple().to_string(),
            gate: RwLock::new(()),
            generations: Mutex::new(GenerationLog::default()),
            resync_requested: Notify::new(),
        }
    }

    /// Returns the id that this process puts into its notifications.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Takes the change gate shared; hold it from before a peer transaction begins
    /// until after it commits.
    pub async fn lock_for_change(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().await
    }

    async fn lock_for_resync(&self) -> RwLockWriteGuard<'_, ()> {
        self.gate.write().await
    }

    /// Notes a change of `public_key` that this process committed as `generation`, so
    /// that polling and notifications skip it.
    pub fn note_own_change(&self, generation: i64, public_key: PublicKey) {
        let mut log = self.log();
        log.own.insert(generation);
        log.note_key(public_key, generation);
    }

    /// Notes that the back end has every change up to `generation`.
    pub fn mark_applied(&self, generation: i64) {
        self.log().mark_applied(generation);
    }

    /// Asks the background task for a full resynchronization as soon as possible.
    pub fn request_resync(&self) {
        self.resync_requested.notify_one();
    }

    fn log(&self) -> std::sync::MutexGuard<'_, GenerationLog> {
        // The log stays consistent after a panic elsewhere: every change is one insert
        // or one update.
        self.generations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Generations this replica has applied, and those it made itself.
#[derive(Debug, Default)]
struct GenerationLog {
    /// Every change up to this generation is applied to the back end.
    applied: i64,
    /// Generations committed by this process and not yet passed by `applied`.
    own: BTreeSet<i64>,
    /// Generation of the latest change applied to each key since `applied`, by a local
    /// change or a notification.
    keys: HashMap<PublicKey, i64>,
}

impl GenerationLog {
    fn note_key(&mut self, public_key: PublicKey, generation: i64) {
        let entry = self.keys.entry(public_key).or_insert(generation);
        *entry = (*entry).max(generation);
    }

    /// Tells whether a notified change is newer than what the back end has for its key.
    fn is_newer(&self, public_key: &PublicKey, generation: i64) -> bool {
        generation > self.applied
            && self
                .keys
                .get(public_key)
                .is_none_or(|applied| *applied < generation)
    }

    /// Forgets key entries that no later notification can be older than: PostgreSQL
    /// delivers notifications in generation order, so every one after `delivered` is newer.
    fn forget_keys_up_to(&mut self, delivered: i64) {
        self.keys.retain(|_, generation| *generation > delivered);
    }

    /// Tells whether a generation after `applied` and up to `current` came from another
    /// process, and moves `applied` to `current` when none did.
    fn check_foreign(&mut self, current: i64) -> bool {
        let foreign =
            (self.applied + 1..=current).any(|generation| !self.own.contains(&generation));

        if !foreign {
            self.mark_applied(current);
        }
        foreign
    }

    fn mark_applied(&mut self, generation: i64) {
        self.applied = self.applied.max(generation);
        self.own = self.own.split_off(&(self.applied + 1));
        let applied = self.applied;
        self.keys.retain(|_, generation| *generation > applied);
    }
}

/// Makes `backend` hold exactly the peers of the database.
///
/// Pending removals are done afterwards, since the back end now has no peer that the
/// database lacks; their rows are deleted.
pub async fn resync(
    db: &Db,
    backend: &dyn PeerBackend,
    replica: &ReplicaSync,
) -> Result<SyncReport, ResyncError> {
    let _gate = replica.lock_for_resync().await;

    // Read before the peers: a change committed in between is in the list and also
    // makes the generation look newer, which costs one more resynchronization at most.
    let generation = db.peer_generation().await?;
    let desired: Vec<LivePeer> = db
        .list_peers()
        .await?
        .into_iter()
        .map(|peer| LivePeer {
            public_key: peer.public_key,
            address: peer.address,
        })
        .collect();

    let report = backend.sync(&desired).await?;
    replica.log().mark_applied(generation);

    // NOTE: a pending removal recorded by another replica is deleted here too; that
    // replica's own periodic resynchronization then removes its stale peer.
    db.clear_pending_removals().await?;

    Ok(report)
}

/// Settings of the background synchronization.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// Interval of the full resynchronization.
    pub resync_interval: Duration,
    /// URL of the PostgreSQL database for the listener; `None` on SQLite.
    pub postgres_url: Option<String>,
}

/// Starts the background synchronization of `backend` with the database. The tasks end
/// when the returned handles are aborted.
pub fn spawn(
    db: Db,
    backend: Arc<dyn PeerBackend>,
    replica: Arc<ReplicaSync>,
    settings: SyncSettings,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();

    if let Some(url) = settings.postgres_url.clone() {
        tasks.push(tokio::spawn(listen(
            url,
            Arc::clone(&backend),
            Arc::clone(&replica),
        )));
    }

    tasks.push(tokio::spawn(poll_and_resync(
        db, backend, replica, settings,
    )));
    tasks
}

/// Runs a full resynchronization every `resync_interval` and when one is requested,
/// and on SQLite whenever the peer generation shows another process's change.
async fn poll_and_resync(
    db: Db,
    backend: Arc<dyn PeerBackend>,
    replica: Arc<ReplicaSync>,
    settings: SyncSettings,
) {
    let mut last_full = Instant::now();

    loop {
        let requested = tokio::select! {
            () = tokio::time::sleep(GENERATION_POLL_INTERVAL) => false,
            () = replica.resync_requested.notified() => true,
        };

        let foreign = db.kind() == DbKind::Sqlite && has_foreign_changes(&db, &replica).await;
        let due = last_full.elapsed() >= settings.resync_interval;
        if !(requested || foreign || due) {
            continue;
        }

        let reason = if requested {
            "requested"
        } else if foreign {
            "changed by another process"
        } else {
            "periodic"
        };
        run_resync(&db, backend.as_ref(), &replica, reason).await;
        last_full = Instant::now();
    }
}

async fn has_foreign_changes(db: &Db, replica: &ReplicaSync) -> bool {
    match db.peer_generation().await {
        Ok(generation) => replica.log().check_foreign(generation),
        Err(error) => {
            tracing::warn!(error = %error_chain(&error), "failed to read the peer generation");
            false
        }
    }
}

async fn run_resync(db: &Db, backend: &dyn PeerBackend, replica: &ReplicaSync, reason: &str) {
    match resync(db, backend, replica).await {
        Ok(report) if report.is_empty() => {
            tracing::debug!(reason, "back end matches the database");
        }
        Ok(report) => tracing::info!(
            reason,
            added = report.added,
            removed = report.removed,
            backend = backend.name(),
            "resynchronized the back end with the database"
        ),
        Err(error) => tracing::warn!(
            reason,
            backend = backend.name(),
            error = %error_chain(&error),
            "failed to resynchronize the back end; retrying at the next interval"
        ),
    }
}

/// Listens for peer notifications on PostgreSQL and applies other replicas' changes.
/// After every (re)connection it requests a full resynchronization, because
/// notifications sent while it was disconnected are lost.
async fn listen(url: String, backend: Arc<dyn PeerBackend>, replica: Arc<ReplicaSync>) {
    loop {
        let mut listener = match connect_listener(&url).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(
                    error = %error_chain(&error),
                    "failed to listen for peer notifications; retrying"
                );
                tokio::time::sleep(LISTENER_RETRY_DELAY).await;
                continue;
            }
        };
        replica.request_resync();

        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    apply_notification(backend.as_ref(), &replica, notification.payload()).await;
                }
                Ok(None) => {
                    tracing::warn!("lost the connection for peer notifications; reconnecting");
                    break;
                }
                Err(error) => {
                    tracing::warn!(
                        error = %error_chain(&error),
                        "failed to receive peer notifications; reconnecting"
                    );
                    break;
                }
            }
        }
    }
}

async fn connect_listener(url: &str) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect(url).await?;
    listener.listen(PEER_CHANNEL).await?;
    Ok(listener)
}

/// Applies one notification of another replica to the back end; a failure requests a
/// full resynchronization.
async fn apply_notification(backend: &dyn PeerBackend, replica: &ReplicaSync, payload: &str) {
    let Some(notification) = PeerNotification::from_payload(payload) else {
        tracing::warn!(
            payload = ?payload.chars().take(200).collect::<String>(),
            "ignored a peer notification in an unknown format"
        );
        return;
    };

    // Exclusive, so that no local change of the same key is half made while the
    // generations are compared.
    let _gate = replica.lock_for_resync().await;
    let public_key = notification.change.public_key();

    let is_newer = replica.log().is_newer(&public_key, notification.generation);
    if notification.origin == replica.id() || !is_newer {
        replica.log().forget_keys_up_to(notification.generation);
        return;
    }

    let (result, public_key) = match notification.change {
        PeerChange::Added {
            public_key,
            address,
        } => (backend.add_peer(public_key, address).await, public_key),
        PeerChange::Removed { public_key } => (backend.remove_peer(public_key).await, public_key),
    };

    replica.log().forget_keys_up_to(notification.generation);

    match result {
        Ok(()) => tracing::debug!(
            origin = ?notification.origin,
            key_fingerprint = %public_key.fingerprint(),
            "applied another replica's peer change"
        ),
        Err(error) => {
            tracing::warn!(
                origin = ?notification.origin,
                key_fingerprint = %public_key.fingerprint(),
                error = %error_chain(&error),
                "failed to apply another replica's peer change; resynchronizing"
            );
            replica.request_resync();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_generations_are_not_foreign() {
        let mut log = GenerationLog::default();
        log.own.extend([1, 2, 3]);

        assert!(!log.check_foreign(3));
        assert_eq!(log.applied, 3);
        assert!(log.own.is_empty());
    }

    #[test]
    fn generation_gap_is_foreign() {
        let mut log = GenerationLog::default();
        log.own.extend([1, 3]);

        assert!(log.check_foreign(3));
        assert_eq!(
            log.applied, 0,
            "applied moves only after a resynchronization"
        );

        log.mark_applied(3);
        assert_eq!(log.applied, 3);
        assert!(log.own.is_empty());
    }

    #[test]
    fn own_generations_ahead_of_applied_are_kept() {
        let mut log = GenerationLog::default();
        log.own.extend([5, 6]);

        log.mark_applied(5);

        assert_eq!(log.own.iter().copied().collect::<Vec<_>>(), [6]);
        assert!(!log.check_foreign(6));
    }

    #[test]
    fn notification_older_than_local_change_is_stale() {
        let key = camwire_tunnel::PrivateKey::generate().public_key();
        let mut log = GenerationLog::default();
        log.note_key(key, 12);

        assert!(
            !log.is_newer(&key, 11),
            "the add of 11 must not undo the removal of 12"
        );
        assert!(log.is_newer(&key, 13));
    }

    #[test]
    fn notification_covered_by_resync_is_stale() {
        let key = camwire_tunnel::PrivateKey::generate().public_key();
        let mut log = GenerationLog::default();

        log.mark_applied(20);

        assert!(!log.is_newer(&key, 20));
        assert!(log.is_newer(&key, 21));
    }

    #[test]
    fn delivered_notifications_prune_key_entries() {
        let early = camwire_tunnel::PrivateKey::generate().public_key();
        let late = camwire_tunnel::PrivateKey::generate().public_key();
        let mut log = GenerationLog::default();
        log.note_key(early, 3);
        log.note_key(late, 9);

        log.forget_keys_up_to(5);

        assert_eq!(log.keys.len(), 1);
        assert!(log.keys.contains_key(&late));
    }

    #[test]
    fn unchanged_generation_is_not_foreign() {
        let mut log = GenerationLog::default();
        log.mark_applied(9);

        assert!(!log.check_foreign(9));
        assert!(!log.check_foreign(4));
    }
}
