//! Queries on `peers`, `free_addresses` and `pending_removals`.

use std::net::Ipv4Addr;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use camwire_tunnel::PublicKey;

use super::{Db, DbKind};
use crate::pool::{address_from_db, address_to_db};

/// Attempts at taking a free address while concurrent transactions lock every free
/// row. Only PostgreSQL gets there; SQLite serializes writers.
const TAKE_ADDRESS_ATTEMPTS: usize = 16;

/// A WireGuard peer as stored: one device's key and address, owned by one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRow {
    pub id: String,
    pub session_id: String,
    pub user_id: String,
    pub public_key: PublicKey,
    pub address: Ipv4Addr,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last handshake that a replica's sweeper recorded.
    pub last_handshake_at: Option<i64>,
}

const PEER_COLUMNS: &str =
    "id, session_id, user_id, public_key, address, created_at, last_handshake_at";

impl PeerRow {
    pub(super) fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let public_key: String = row.try_get("public_key")?;
        let public_key =
            PublicKey::from_base64(&public_key).map_err(|error| sqlx::Error::ColumnDecode {
                index: "public_key".into(),
                source: Box::new(error),
            })?;

        let address = decode_address(row.try_get("address")?)?;

        Ok(Self {
            id: row.try_get("id")?,
            session_id: row.try_get("session_id")?,
            user_id: row.try_get("user_id")?,
            public_key,
            address,
            created_at: row.try_get("created_at")?,
            last_handshake_at: row.try_get("last_handshake_at")?,
        })
    }
}

pub(super) fn decode_address(value: i64) -> Result<Ipv4Addr, sqlx::Error> {
    address_from_db(value).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: "address".into(),
        source: format!("{value} is not an IPv4 address").into(),
    })
}

/// Takes the lowest address out of `free_addresses`, or returns `None` when the pool
/// is exhausted. Run it inside the transaction that inserts the peer, so that a
/// rollback puts the address back.
///
/// On SQLite the statement is a write, so it takes the database's write lock at the
/// start of the transaction (where the busy timeout applies) and writers take turns.
/// On PostgreSQL the row is locked with `FOR UPDATE SKIP LOCKED`, so concurrent
/// transactions take different rows at once: each gets the lowest address that no
/// other open transaction holds. When every free row is locked, the transaction waits
/// for the lowest one and tries again, so a rollback elsewhere is not mistaken for an
/// exhausted pool. The cost is one index lookup however full the pool is.
pub async fn take_lowest_free_address(
    connection: &mut AnyConnection,
    kind: DbKind,
) -> Result<Option<Ipv4Addr>, sqlx::Error> {
    let take = match kind {
        DbKind::Sqlite => {
            "DELETE FROM free_addresses \
             WHERE address = (SELECT MIN(address) FROM free_addresses) \
             RETURNING address"
        }
        DbKind::Postgres => {
            "DELETE FROM free_addresses \
             WHERE address = (SELECT address FROM free_addresses ORDER BY address LIMIT 1 \
                              FOR UPDATE SKIP LOCKED) \
             RETURNING address"
        }
    };

    for _ in 0..TAKE_ADDRESS_ATTEMPTS {
        let deleted_row = sqlx::query(take).fetch_optional(&mut *connection).await?;

        if let Some(row) = deleted_row {
            return decode_address(row.try_get("address")?).map(Some);
        }

        if kind == DbKind::Sqlite {
            return Ok(None);
        }

        // Every free row is locked by another transaction, or none is left. The locking
        // read waits for the holder of the lowest row. It returns no row when that
        // holder took the address, or when the table is empty.
        let waited =
            sqlx::query("SELECT address FROM free_addresses ORDER BY address LIMIT 1 FOR UPDATE")
                .fetch_optional(&mut *connection)
                .await?;

        if waited.is_none() && !has_free_address(connection).await? {
            return Ok(None);
        }
    }

    Err(sqlx::Error::Protocol(format!(
        "could not take a free address in {TAKE_ADDRESS_ATTEMPTS} attempts because concurrent sign-ins took each candidate first"
    )))
}

async fn has_free_address(connection: &mut AnyConnection) -> Result<bool, sqlx::Error> {
    let row = sqlx::query("SELECT address FROM free_addresses LIMIT 1")
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.is_some())
}

/// Inserts a peer with a new UUID. The unique constraints on `session_id`, `public_key`
/// and `address` reject a second peer for the session, a key in use and an address held.
pub async fn insert_peer(
    connection: &mut AnyConnection,
    session_id: &str,
    user_id: &str,
    public_key: &PublicKey,
    address: Ipv4Addr,
) -> Result<PeerRow, sqlx::Error> {
    let peer = PeerRow {
        id: uuid::Uuid::new_v4().to_string(),
        session_id: session_id.to_owned(),
        user_id: user_id.to_owned(),
        public_key: *public_key,
        address,
        created_at: super::unix_now(),
        last_handshake_at: None,
    };

    sqlx::query(
        "INSERT INTO peers (id, session_id, user_id, public_key, address, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&peer.id)
    .bind(&peer.session_id)
    .bind(&peer.user_id)
    .bind(peer.public_key.to_base64())
    .bind(address_to_db(address))
    .bind(peer.created_at)
    .execute(&mut *connection)
    .await?;

    Ok(peer)
}

/// Deletes the peer of a session and returns it, or `None` when the session has none.
///
/// This does not free the address; call [`release_address`] in the same transaction.
pub async fn delete_peer_by_session(
    connection: &mut AnyConnection,
    session_id: &str,
) -> Result<Option<PeerRow>, sqlx::Error> {
    let sql = format!("DELETE FROM peers WHERE session_id = $1 RETURNING {PEER_COLUMNS}");

    let row = sqlx::query(&sql)
        .bind(session_id)
        .fetch_optional(&mut *connection)
        .await?;

    row.as_ref().map(PeerRow::from_row).transpose()
}

/// Deletes the peer with `peer_id` and returns it, or `None` when there is none.
///
/// This does not free the address; call [`release_address`] in the same transaction.
pub async fn delete_peer_by_id(
    connection: &mut AnyConnection,
    peer_id: &str,
) -> Result<Option<PeerRow>, sqlx::Error> {
    let sql = format!("DELETE FROM peers WHERE id = $1 RETURNING {PEER_COLUMNS}");

    let row = sqlx::query(&sql)
        .bind(peer_id)
        .fetch_optional(&mut *connection)
        .await?;

    row.as_ref().map(PeerRow::from_row).transpose()
}

/// Removes an address that a peer has from `free_addresses`, after a unique violation
/// showed that the free table listed it. Returns whether a row was deleted.
pub async fn forget_held_free_address(
    connection: &mut AnyConnection,
    address: Ipv4Addr,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "DELETE FROM free_addresses WHERE address = $1 \
         AND EXISTS (SELECT 1 FROM peers WHERE peers.address = free_addresses.address)",
    )
    .bind(address_to_db(address))
    .execute(&mut *connection)
    .await?;

    Ok(result.rows_affected() > 0)
}

/// Puts `address` back into `free_addresses`. An address already there stays once.
pub async fn release_address(
    connection: &mut AnyConnection,
    address: Ipv4Addr,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO free_addresses (address) VALUES ($1) ON CONFLICT (address) DO NOTHING",
    )
    .bind(address_to_db(address))
    .execute(&mut *connection)
    .await?;

    Ok(())
}

/// Records a peer whose removal from the live back end failed, for a later retry.
pub async fn insert_pending_removal(
    connection: &mut AnyConnection,
    public_key: &PublicKey,
    address: Ipv4Addr,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO pending_removals (id, public_key, address, reason, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(public_key.to_base64())
    .bind(address_to_db(address))
    .bind(reason)
    .bind(super::unix_now())
    .execute(&mut *connection)
    .await?;

    Ok(())
}

impl Db {
    /// Lists every peer, lowest address first.
    pub async fn list_peers(&self) -> Result<Vec<PeerRow>, sqlx::Error> {
        let sql = format!("SELECT {PEER_COLUMNS} FROM peers ORDER BY address");

        let rows = sqlx::query(&sql).fetch_all(self.pool()).await?;

        rows.iter().map(PeerRow::from_row).collect()
    }

    pub async fn find_peer_by_session(
        &self,
        session_id: &str,
    ) -> Result<Option<PeerRow>, sqlx::Error> {
        let sql = format!("SELECT {PEER_COLUMNS} FROM peers WHERE session_id = $1");

        let row = sqlx::query(&sql)
            .bind(session_id)
            .fetch_optional(self.pool())
            .await?;

        row.as_ref().map(PeerRow::from_row).transpose()
    }

    pub async fn find_peer_by_public_key(
        &self,
        public_key: &PublicKey,
    ) -> Result<Option<PeerRow>, sqlx::Error> {
        let sql = format!("SELECT {PEER_COLUMNS} FROM peers WHERE public_key = $1");

        let row = sqlx::query(&sql)
            .bind(public_key.to_base64())
            .fetch_optional(self.pool())
            .await?;

        row.as_ref().map(PeerRow::from_row).transpose()
    }

    /// Lists the free addresses, lowest first.
    pub async fn list_free_addresses(&self) -> Result<Vec<Ipv4Addr>, sqlx::Error> {
        let rows = sqlx::query("SELECT address FROM free_addresses ORDER BY address")
            .fetch_all(self.pool())
            .await?;

        rows.iter()
            .map(|row| decode_address(row.try_get("address")?))
            .collect()
    }

    /// Lists the public keys whose removal from the live back end is still pending.
    pub async fn list_pending_removals(&self) -> Result<Vec<PublicKey>, sqlx::Error> {
        let rows = sqlx::query("SELECT public_key FROM pending_removals ORDER BY created_at")
            .fetch_all(self.pool())
            .await?;

        rows.iter()
            .map(|row| {
                let text: String = row.try_get("public_key")?;
                PublicKey::from_base64(&text).map_err(|error| sqlx::Error::ColumnDecode {
                    index: "public_key".into(),
                    source: Box::new(error),
                })
            })
            .collect()
    }

    /// Deletes every pending removal, after the back end was rebuilt from the peers table.
    pub async fn clear_pending_removals(&self) -> Result<u64, sqlx::Error> {
        let result = sqlx::query("DELETE FROM pending_removals")
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected())
    }
}
