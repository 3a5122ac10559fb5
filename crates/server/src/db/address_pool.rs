//! The `address_pool` row and the seeding of `free_addresses`.

use std::collections::HashSet;

use ipnet::Ipv4Net;
use sqlx::{AnyConnection, Row};

use super::Db;
use crate::pool::{AddressPool, address_to_db};

/// Rows per INSERT when seeding; 500 bound values stay far below the limits of SQLite
/// (32,766 since 3.32) and PostgreSQL (65,535).
const SEED_CHUNK: usize = 500;

/// Change made by [`reconcile_pool`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolChange {
    /// The stored pool matches and the free table is complete.
    Unchanged,
    /// The first start: the free table was filled.
    Seeded { free: u64 },
    /// The CIDR differs from the stored one: the free table was rebuilt. Peers outside the
    /// new pool keep their addresses until they are released, which then are not reused.
    Changed {
        previous: String,
        free: u64,
        peers_outside: u64,
    },
    /// The CIDR matched, but the free table did not add up with the peers, so it was rebuilt.
    Repaired { free: u64 },
}

/// Makes the stored pool and the free-address table match `pool`.
///
/// Runs in one transaction. Most starts only compare the CIDR and two counts; a rebuild
/// writes one row per free address.
pub async fn reconcile_pool(db: &Db, pool: &AddressPool) -> Result<PoolChange, sqlx::Error> {
    let mut transaction = db.pool().begin().await?;

    let stored: Option<String> = sqlx::query("SELECT cidr FROM address_pool WHERE id = 1")
        .fetch_optional(&mut *transaction)
        .await?
        .map(|row| row.try_get("cidr"))
        .transpose()?;

    let cidr = pool.network().to_string();
    let change = match stored {
        None => {
            let free = rebuild_free_addresses(&mut transaction, pool).await?;
            PoolChange::Seeded { free }
        }
        Some(previous) if previous != cidr => {
            let free = rebuild_free_addresses(&mut transaction, pool).await?;
            let peers_outside = count_peers_outside(&mut transaction, pool).await?;
            PoolChange::Changed {
                previous,
                free,
                peers_outside,
            }
        }
        Some(_) => {
            if free_table_is_complete(&mut transaction, pool).await? {
                PoolChange::Unchanged
            } else {
                let free = rebuild_free_addresses(&mut transaction, pool).await?;
                PoolChange::Repaired { free }
            }
        }
    };

    if change != PoolChange::Unchanged {
        sqlx::query(
            "INSERT INTO address_pool (id, cidr, updated_at) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET cidr = excluded.cidr, updated_at = excluded.updated_at",
        )
        .bind(&cidr)
        .bind(super::unix_now())
        .execute(&mut *transaction)
        .await?;
    }

    transaction.commit().await?;
    Ok(change)
}

/// Checks that every client address is either free or held by exactly one peer.
async fn free_table_is_complete(
    connection: &mut AnyConnection,
    pool: &AddressPool,
) -> Result<bool, sqlx::Error> {
    let range = pool.client_range();
    let (first, last) = (i64::from(*range.start()), i64::from(*range.end()));

    let free: i64 = sqlx::query(
        "SELECT COUNT(*) AS count FROM free_addresses WHERE address >= $1 AND address <= $2",
    )
    .bind(first)
    .bind(last)
    .fetch_one(&mut *connection)
    .await?
    .try_get("count")?;

    let all_free: i64 = sqlx::query("SELECT COUNT(*) AS count FROM free_addresses")
        .fetch_one(&mut *connection)
        .await?
        .try_get("count")?;

    let held_count: i64 =
        sqlx::query("SELECT COUNT(*) AS count FROM peers WHERE address >= $1 AND address <= $2")
            .bind(first)
            .bind(last)
            .fetch_one(&mut *connection)
            .await?
            .try_get("count")?;

    Ok(free == all_free && free + held_count == i64::from(pool.client_count()))
}

/// Replaces the free table with every client address of `pool` that no peer holds.
async fn rebuild_free_addresses(
    connection: &mut AnyConnection,
    pool: &AddressPool,
) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM free_addresses")
        .execute(&mut *connection)
        .await?;

    let held_addresses: HashSet<i64> = sqlx::query("SELECT address FROM peers")
        .fetch_all(&mut *connection)
        .await?
        .iter()
        .map(|row| row.try_get("address"))
        .collect::<Result<_, _>>()?;

    let free: Vec<i64> = pool
        .client_addresses()
        .map(address_to_db)
        .filter(|address| !held_addresses.contains(address))
        .collect();

    for chunk in free.chunks(SEED_CHUNK) {
        let placeholders: Vec<String> = (1..=chunk.len())
            .map(|index| format!("(${index})"))
            .collect();
        let sql = format!(
            "INSERT INTO free_addresses (address) VALUES {}",
            placeholders.join(", ")
        );

        let mut query = sqlx::query(&sql);
        for address in chunk {
            query = query.bind(*address);
        }
        query.execute(&mut *connection).await?;
    }

    Ok(free.len() as u64)
}

async fn count_peers_outside(
    connection: &mut AnyConnection,
    pool: &AddressPool,
) -> Result<u64, sqlx::Error> {
    let range = pool.client_range();

    let outside: i64 =
        sqlx::query("SELECT COUNT(*) AS count FROM peers WHERE address < $1 OR address > $2")
            .bind(i64::from(*range.start()))
            .bind(i64::from(*range.end()))
            .fetch_one(&mut *connection)
            .await?
            .try_get("count")?;

    Ok(u64::try_from(outside).unwrap_or(0))
}

impl Db {
    /// Returns the pool stored by the last start, if any.
    pub async fn stored_pool(&self) -> Result<Option<Ipv4Net>, sqlx::Error> {
        let row = sqlx::query("SELECT cidr FROM address_pool WHERE id = 1")
            .fetch_optional(self.pool())
            .await?;

        let Some(row) = row else {
            return Ok(None);
        };

        let cidr: String = row.try_get("cidr")?;
        cidr.parse()
            .map(Some)
            .map_err(|error| sqlx::Error::ColumnDecode {
                index: "cidr".into(),
                source: Box::new(error),
            })
    }
}
