//! Queries on the `users` table.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use camwire_api::{Role, User};

use super::Db;

/// A user as stored, with the password hash.
#[derive(Clone)]
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub email: String,
    pub role: Role,
    /// Argon2 PHC string.
    pub password_hash: String,
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("UserRow")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("role", &self.role)
            .field("password_hash", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl UserRow {
    /// Returns the wire form, without the password hash.
    pub fn to_api(&self) -> User {
        User {
            id: self.id.clone(),
            username: self.username.clone(),
            display_name: self.display_name.clone(),
            email: self.email.clone(),
            role: self.role,
        }
    }

    pub(super) fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let role: String = row.try_get("role")?;
        let role = role
            .parse()
            .map_err(|message: String| sqlx::Error::ColumnDecode {
                index: "role".into(),
                source: message.into(),
            })?;

        Ok(Self {
            id: row.try_get("id")?,
            username: row.try_get("username")?,
            display_name: row.try_get("display_name")?,
            email: row.try_get("email")?,
            role,
            password_hash: row.try_get("password_hash")?,
        })
    }
}

/// Columns of a new user; the id and creation time are set by [`insert_user`].
pub struct NewUserRow<'a> {
    pub username: &'a str,
    pub display_name: &'a str,
    pub email: &'a str,
    pub role: Role,
    pub password_hash: &'a str,
}

const USER_COLUMNS: &str = "id, username, display_name, email, role, password_hash";

/// Inserts a user with a new UUID and returns it. A taken user name is a unique violation.
pub async fn insert_user(
    connection: &mut AnyConnection,
    user: NewUserRow<'_>,
) -> Result<UserRow, sqlx::Error> {
    let id = uuid::Uuid::new_v4().to_string();

    sqlx::query(
        "INSERT INTO users (id, username, display_name, email, role, password_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(user.username)
    .bind(user.display_name)
    .bind(user.email)
    .bind(user.role.as_str())
    .bind(user.password_hash)
    .bind(super::unix_now())
    .execute(&mut *connection)
    .await?;

    Ok(UserRow {
        id,
        username: user.username.to_owned(),
        display_name: user.display_name.to_owned(),
        email: user.email.to_owned(),
        role: user.role,
        password_hash: user.password_hash.to_owned(),
    })
}

impl Db {
    pub async fn find_user_by_username(
        &self,
        username: &str,
    ) -> Result<Option<UserRow>, sqlx::Error> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1");

        let row = sqlx::query(&sql)
            .bind(username)
            .fetch_optional(self.pool())
            .await?;

        row.as_ref().map(UserRow::from_row).transpose()
    }

    pub async fn list_users(&self) -> Result<Vec<UserRow>, sqlx::Error> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY username");

        let rows = sqlx::query(&sql).fetch_all(self.pool()).await?;

        rows.iter().map(UserRow::from_row).collect()
    }
}
