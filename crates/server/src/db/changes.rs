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

impl PeerChange {
    pub fn public_key(&self) -> PublicKey {
        match *self {
            PeerChange::Added { public_key, .. } | PeerChange::Removed { public_key } => public_key,
        }
    }
}

/// A peer change with the replica that made it and its generation, as a notification
/// carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerNotification {
    /// Id of the process that made the change; a replica skips its own changes.
    pub origin: String,
    /// The peer generation that the change's transaction committed. Transactions take
    /// generations in commit order, the order in which PostgreSQL delivers their
    /// notifications.
    pub generation: i64,
    pub change: PeerChange,
}

impl PeerNotification {
    /// Formats the payload: `v1 ORIGIN GENERATION add KEY ADDRESS` or
    /// `v1 ORIGIN GENERATION remove KEY`.
    pub fn to_payload(&self) -> String {
        let (origin, generation) = (&self.origin, self.generation);

        match self.change {
            PeerChange::Added {
                public_key,
                address,
            } => format!("v1 {origin} {generation} add {public_key} {address}"),
            PeerChange::Removed { public_key } => {
                format!("v1 {origin} {generation} remove {public_key}")
            }
        }
    }

    /// Parses a payload made by [`to_payload`](Self::to_payload); `None` for anything else.
    pub fn from_payload(payload: &str) -> Option<Self> {
        let words: Vec<&str> = payload.split(' ').collect();

        let (origin, generation, change) = match words.as_slice() {
            ["v1", origin, generation, "add", key, address] => (
                origin,
                generation,
                PeerChange::Added {
                    public_key: PublicKey::from_base64(key).ok()?,
                    address: address.parse().ok()?,
                },
            ),
            ["v1", origin, generation, "remove", key] => (
                origin,
                generation,
                PeerChange::Removed {
                    public_key: PublicKey::from_base64(key).ok()?,
                },
            ),
            _ => return None,
        };

        Some(Self {
            origin: (*origin).to_owned(),
            generation: generation.parse().ok()?,
            change,
        })
    }
}

/// Records a peer change inside the transaction that makes it: increments the peer
/// generation and, on PostgreSQL, queues a notification that is sent on commit.
/// Returns the new generation.
///
/// Call it as the last statement before the commit: on PostgreSQL the generation row
/// stays locked until the transaction ends, so transactions take generations in commit
/// order, and concurrent changes wait only for commits.
pub async fn record_peer_change(
    connection: &mut AnyConnection,
    kind: DbKind,
    origin: &str,
    change: PeerChange,
) -> Result<i64, sqlx::Error> {
    let generation: i64 = sqlx::query(
        "UPDATE peer_generation SET generation = generation + 1 WHERE id = 1 \
         RETURNING generation",
    )
    .fetch_one(&mut *connection)
    .await?
    .try_get("generation")?;

    if kind == DbKind::Postgres {
        let notification = PeerNotification {
            origin: origin.to_owned(),
            generation,
            change,
        };

        // pg_notify returns `void`, which the Any driver cannot decode, so the select
        // returns a constant instead.
        sqlx::query("SELECT 1 AS sent FROM (SELECT pg_notify($1, $2)) AS notification")
            .bind(PEER_CHANNEL)
            .bind(notification.to_payload())
            .fetch_one(&mut *connection)
            .await?;
    }

    Ok(generation)
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
                generation: 7,
                change: PeerChange::Added {
                    public_key,
                    address: Ipv4Addr::new(10, 13, 0, 2),
                },
            },
            PeerNotification {
                origin: "a1b2".into(),
                generation: 8,
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
