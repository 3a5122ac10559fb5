//! Queries on the `sessions` table: one row per signed-in device.

use sqlx::{AnyConnection, Row};

use super::{Db, DbKind, UserRow};

/// A session as stored. The token itself is never stored, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub id: String,
    pub user_id: String,
    /// Unix seconds after which the token is rejected.
    pub expires_at: i64,
}

/// Inserts a session for `user_id` with a new UUID.
pub async fn insert_session(
    connection: &mut AnyConnection,
    user_id: &str,
    token_hash: &str,
    expires_at: i64,
) -> Result<SessionRow, sqlx::Error> {
    let id = uuid::Uuid::new_v4().to_string();

    sqlx::query(
        "INSERT INTO sessions (id, user_id, token_hash, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&id)
    .bind(user_id)
    .bind(token_hash)
    .bind(super::unix_now())
    .bind(expires_at)
    .execute(&mut *connection)
    .await?;

    Ok(SessionRow {
        id,
        user_id: user_id.to_owned(),
        expires_at,
    })
}

/// Deletes a session; returns whether it existed. The session's peer must be gone first.
pub async fn delete_session(
    connection: &mut AnyConnection,
    session_id: &str,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query("DELETE FROM sessions WHERE id = $1")
        .bind(session_id)
        .execute(&mut *connection)
        .await?;

    Ok(result.rows_affected() == 1)
}

/// Locks a session's row until the transaction ends, on PostgreSQL. A peer insert for
/// the session checks its foreign key with a share lock on that row. So a concurrent
/// insert either commits before this returns, and later statements of the transaction
/// see the peer, or waits for this transaction and finds the session gone. On SQLite,
/// whose writers take turns, this does nothing.
pub async fn lock_session(
    connection: &mut AnyConnection,
    kind: DbKind,
    session_id: &str,
) -> Result<(), sqlx::Error> {
    if kind == DbKind::Sqlite {
        return Ok(());
    }

    sqlx::query("SELECT id FROM sessions WHERE id = $1 FOR UPDATE")
        .bind(session_id)
        .fetch_optional(&mut *connection)
        .await?;

    Ok(())
}

impl Db {
    /// Finds the session whose token hashes to `token_hash`, with its user, expired or not.
    pub async fn find_session_by_token_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<(SessionRow, UserRow)>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT sessions.id AS session_id, sessions.expires_at, \
                    users.id, users.username, users.display_name, users.email, users.role, \
                    users.password_hash \
             FROM sessions JOIN users ON users.id = sessions.user_id \
             WHERE sessions.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;

        let Some(row) = row else {
            return Ok(None);
        };

        let user = UserRow::from_row(&row)?;
        let session = SessionRow {
            id: row.try_get("session_id")?,
            user_id: user.id.clone(),
            expires_at: row.try_get("expires_at")?,
        };

        Ok(Some((session, user)))
    }

    /// Finds a session by its id.
    pub async fn find_session(&self, session_id: &str) -> Result<Option<SessionRow>, sqlx::Error> {
        let row = sqlx::query("SELECT id, user_id, expires_at FROM sessions WHERE id = $1")
            .bind(session_id)
            .fetch_optional(self.pool())
            .await?;

        let Some(row) = row else {
            return Ok(None);
        };

        Ok(Some(SessionRow {
            id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            expires_at: row.try_get("expires_at")?,
        }))
    }
}
