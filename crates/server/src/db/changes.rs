//! Telling other replicas that the peers changed: a generation counter on both
//! databases, and a `NOTIFY` on PostgreSQL.

use std::net::Ipv4Addr;

use sqlx::{AnyConnection, Row};

use camwire_tunnel::PublicKey;

use super::{Db, DbKind};

/// PostgreSQL channel of peer change notifications.
pub const PEER_CHANNEL: &str = "camwire_peers";

/// A change of one peer, as replicas apply it to their back ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerChange {
    Added {
        public_key: PublicKey,
        address: Ipv4Addr,
    },
    Removed {
        public_key: PublicKey,
    },
}

/// A peer change with the replica that made it, as a notification carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerNotification {
    /// Id of the process that made the change; a replica skips its own changes.
    pub origin: String,
    pub change: PeerChange,
}

impl PeerNotification {
    /// Formats the payload: `v1 ORIGIN add KEY ADDRESS` or `v1 ORIGIN remove KEY`.
    pub fn to_payload(&self) -> String {
        match self.change {
            PeerChange::Added {
                public_key,
                address,
            } => format!("v1 {} add {public_key} {address}", self.origin),
            PeerChange::Removed { public_key } => {
                format!("v1 {} remove {public_key}", self.origin)
            }
        }
    }

    /// Parses a payload made by [`to_payload`](Self::to_payload); `None` for anything else.
    pub fn from_payload(payload: &str) -> Option<Self> {
        let words: Vec<&str> = payload.split(' ').collect();

        let (origin, change) = match words.as_slice() {
            ["v1", origin, "add", key, address] => (
                origin,
                PeerChange::Added {
                    public_key: PublicKey::from_base64(key).ok()?,
                    address: address.parse().ok()?,
                },
            ),
            ["v1", origin, "remove", key] => (
                origin,
                PeerChange::Removed {
                    public_key: PublicKey::from_base64(key).ok()?,
                },
            ),
            _ => return None,
        };

        Some(Self {
            origin: (*origin).to_owned(),
            change,
        })
    }
}

/// Records a peer change inside the transaction that makes it: increments the peer
/// generation and, on PostgreSQL, queues a notification that is sent on commit.
/// Returns the new generation.
///
/// Call it as the last statement before the commit: on PostgreSQL the generation row
/// stays locked until the transaction ends, so concurrent changes wait only for commits.
pub async fn record_peer_change(
    connection: &mut AnyConnection,
    kind: DbKind,
    notification: &PeerNotification,
) -> Result<i64, sqlx::Error> {
    if kind == DbKind::Postgres {
        // pg_notify returns `void`, which the Any driver cannot decode, so the select
        // returns a constant instead.
        sqlx::query("SELECT 1 AS sent FROM (SELECT pg_notify($1, $2)) AS notification")
            .bind(PEER_CHANNEL)
            .bind(notification.to_payload())
            .fetch_one(&mut *connection)
            .await?;
    }

    sqlx::query(
        "UPDATE peer_generation SET generation = generation + 1 WHERE id = 1 \
         RETURNING generation",
    )
    .fetch_one(&mut *connection)
    .await?
    .try_get("generation")
}

impl Db {
    /// Returns the peer generation: the number of committed peer changes so far.
    pub async fn peer_generation(&self) -> Result<i64, sqlx::Error> {
        sqlx::query("SELECT generation FROM peer_generation WHERE id = 1")
            .fetch_one(self.pool())
            .await?
            .try_get("generation")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use camwire_tunnel::PrivateKey;

    #[test]
    fn payload_round_trips() {
        let public_key = PrivateKey::generate().public_key();
        let notifications = [
            PeerNotification {
                origin: "a1b2".into(),
                change: PeerChange::Added {
                    public_key,
                    address: Ipv4Addr::new(10, 13, 0, 2),
                },
            },
            PeerNotification {
                origin: "a1b2".into(),
                change: PeerChange::Removed { public_key },
            },
        ];

        for notification in notifications {
            let payload = notification.to_payload();

            assert_eq!(PeerNotification::from_payload(&payload), Some(notification));
        }
    }

    #[test]
    fn foreign_payloads_are_ignored() {
        for payload in [
            "",
            "hello",
            "v2 a add k 10.0.0.1",
            "v1 a add notakey 10.0.0.1",
            "v1 a remove",
        ] {
            assert_eq!(PeerNotification::from_payload(payload), None, "{payload:?}");
        }
    }
}
