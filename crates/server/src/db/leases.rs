//! Queries of the sweeper and the admin routes: peers with their sessions and users,
//! stored handshakes, expired sessions, pending removals and pool figures.

use std::net::Ipv4Addr;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use camwire_tunnel::PublicKey;

use super::peers::decode_address;
use super::{Db, PeerRow, SessionRow};
use crate::pool::AddressPool;

/// A peer with its user name and the expiry of its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerDetail {
    pub peer: PeerRow,
    pub username: String,
    /// Unix seconds at which the peer's session expires.
    pub session_expires_at: i64,
}

/// A peer whose removal from a live back end failed, kept for a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRemoval {
    pub id: String,
    pub public_key: PublicKey,
    pub address: Ipv4Addr,
}

/// Figures of the address pool, from the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolFigures {
    /// Peers holding an address of the pool.
    pub allocated: u32,
    /// Rows of the free-address table.
    pub free: u32,
    pub lowest_free: Option<Ipv4Addr>,
}

fn public_key_column(row: &AnyRow) -> Result<PublicKey, sqlx::Error> {
    let text: String = row.try_get("public_key")?;
    PublicKey::from_base64(&text).map_err(|error| sqlx::Error::ColumnDecode {
        index: "public_key".into(),
        source: Box::new(error),
    })
}

fn count_column(row: &AnyRow, name: &str) -> Result<u32, sqlx::Error> {
    let count: i64 = row.try_get(name)?;
    Ok(u32::try_from(count).unwrap_or(u32::MAX))
}

/// Stores newer handshake times, as `(public key, unix seconds)`. A stored time is only
/// ever moved forward, so replicas that report older times change nothing.
pub async fn store_handshakes(
    connection: &mut AnyConnection,
    handshakes: &[(PublicKey, i64)],
) -> Result<u64, sqlx::Error> {
    let mut updated = 0;

    for (public_key, seconds) in handshakes {
        let result = sqlx::query(
            "UPDATE peers SET last_handshake_at = $1 \
             WHERE public_key = $2 AND (last_handshake_at IS NULL OR last_handshake_at < $1)",
        )
        .bind(*seconds)
        .bind(public_key.to_base64())
        .execute(&mut *connection)
        .await?;
        updated += result.rows_affected();
    }

    Ok(updated)
}

/// Deletes a session that has expired and has no peer; returns whether it did.
pub async fn delete_expired_session(
    connection: &mut AnyConnection,
    session_id: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "DELETE FROM sessions WHERE id = $1 AND expires_at <= $2 \
         AND NOT EXISTS (SELECT 1 FROM peers WHERE peers.session_id = sessions.id)",
    )
    .bind(session_id)
    .bind(now)
    .execute(&mut *connection)
    .await?;

    Ok(result.rows_affected() == 1)
}

impl Db {
    /// Lists every peer with its user name and session expiry, lowest address first.
    pub async fn list_peer_details(&self) -> Result<Vec<PeerDetail>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT peers.id, peers.session_id, peers.user_id, peers.public_key, peers.address, \
                    peers.created_at, peers.last_handshake_at, users.username, \
                    sessions.expires_at AS session_expires_at \
             FROM peers \
             JOIN sessions ON sessions.id = peers.session_id \
             JOIN users ON users.id = peers.user_id \
             ORDER BY peers.address",
        )
        .fetch_all(self.pool())
        .await?;

        rows.iter()
            .map(|row| {
                Ok(PeerDetail {
                    peer: PeerRow::from_row(row)?,
                    username: row.try_get("username")?,
                    session_expires_at: row.try_get("session_expires_at")?,
                })
            })
            .collect()
    }

    /// Lists the sessions that expired at or before `now`.
    pub async fn list_expired_sessions(&self, now: i64) -> Result<Vec<SessionRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, user_id, expires_at FROM sessions WHERE expires_at <= $1 ORDER BY expires_at",
        )
        .bind(now)
        .fetch_all(self.pool())
        .await?;

        rows.iter()
            .map(|row| {
                Ok(SessionRow {
                    id: row.try_get("id")?,
                    user_id: row.try_get("user_id")?,
                    expires_at: row.try_get("expires_at")?,
                })
            })
            .collect()
    }

    /// Lists the pending removals, oldest first.
    pub async fn list_pending_removal_rows(&self) -> Result<Vec<PendingRemoval>, sqlx::Error> {
        let rows =
            sqlx::query("SELECT id, public_key, address FROM pending_removals ORDER BY created_at")
                .fetch_all(self.pool())
                .await?;

        rows.iter()
            .map(|row| {
                Ok(PendingRemoval {
                    id: row.try_get("id")?,
                    public_key: public_key_column(row)?,
                    address: decode_address(row.try_get("address")?)?,
                })
            })
            .collect()
    }

    /// Deletes one pending removal; returns whether it existed.
    pub async fn delete_pending_removal(&self, id: &str) -> Result<bool, sqlx::Error> {
        let result = sqlx::query("DELETE FROM pending_removals WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Reads the allocated and free counts of `pool` and its lowest free address, in one
    /// statement so that the figures belong to one snapshot.
    pub async fn pool_figures(&self, pool: &AddressPool) -> Result<PoolFigures, sqlx::Error> {
        let range = pool.client_range();

        let row = sqlx::query(
            "SELECT \
                (SELECT COUNT(*) FROM peers WHERE address >= $1 AND address <= $2) AS allocated, \
                (SELECT COUNT(*) FROM free_addresses) AS free, \
                (SELECT MIN(address) FROM free_addresses) AS lowest_free",
        )
        .bind(i64::from(*range.start()))
        .bind(i64::from(*range.end()))
        .fetch_one(self.pool())
        .await?;

        let lowest_free: Option<i64> = row.try_get("lowest_free")?;

        Ok(PoolFigures {
            allocated: count_column(&row, "allocated")?,
            free: count_column(&row, "free")?,
            lowest_free: lowest_free.map(decode_address).transpose()?,
        })
    }

    /// Finds a peer by its id.
    pub async fn find_peer(&self, peer_id: &str) -> Result<Option<PeerRow>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT id, session_id, user_id, public_key, address, created_at, last_handshake_at \
             FROM peers WHERE id = $1",
        )
        .bind(peer_id)
        .fetch_optional(self.pool())
        .await?;

        row.as_ref().map(PeerRow::from_row).transpose()
    }

    /// Counts the addresses that are both held by a peer and listed as free, which must
    /// always be zero.
    pub async fn count_held_and_free(&self) -> Result<i64, sqlx::Error> {
        sqlx::query(
            "SELECT COUNT(*) AS count FROM peers \
             JOIN free_addresses ON free_addresses.address = peers.address",
        )
        .fetch_one(self.pool())
        .await?
        .try_get("count")
    }
}
