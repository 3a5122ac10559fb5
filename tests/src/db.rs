//! Read-only checks of a server's SQLite database, for assertions and the demo.

use std::net::Ipv4Addr;
use std::str::FromStr;

use anyhow::{Context, Result};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Row};

/// One allocation as the `peers` table records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRow {
    pub username: String,
    pub address: Ipv4Addr,
    pub public_key: String,
    pub session_id: String,
}

/// Returns every peer of the database at `database_url` (`sqlite://PATH`), lowest address first.
pub async fn peers(database_url: &str) -> Result<Vec<PeerRow>> {
    let mut connection = SqliteConnectOptions::from_str(database_url)
        .with_context(|| format!("invalid database URL {database_url:?}"))?
        .connect()
        .await
        .with_context(|| format!("failed to open {database_url}"))?;

    let rows = sqlx::query(
        "SELECT users.username, peers.address, peers.public_key, peers.session_id \
         FROM peers JOIN users ON users.id = peers.user_id ORDER BY peers.address",
    )
    .fetch_all(&mut connection)
    .await
    .context("failed to read the peers table")?;

    rows.iter()
        .map(|row| {
            let address: i64 = row.try_get("address")?;
            let address = u32::try_from(address).context("address out of IPv4 range")?;
            Ok(PeerRow {
                username: row.try_get("username")?,
                address: Ipv4Addr::from(address),
                public_key: row.try_get("public_key")?,
                session_id: row.try_get("session_id")?,
            })
        })
        .collect()
}

/// Returns the addresses that `username` holds.
pub async fn addresses_of(database_url: &str, username: &str) -> Result<Vec<Ipv4Addr>> {
    Ok(peers(database_url)
        .await?
        .into_iter()
        .filter(|peer| peer.username == username)
        .map(|peer| peer.address)
        .collect())
}

/// Returns how many sessions `username` has.
pub async fn session_count(database_url: &str, username: &str) -> Result<i64> {
    let mut connection = SqliteConnectOptions::from_str(database_url)?.connect().await?;
    let count: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sessions JOIN users ON users.id = sessions.user_id WHERE users.username = $1",
    )
    .bind(username)
    .fetch_one(&mut connection)
    .await
    .context("failed to count sessions")?;
    Ok(count)
}
