//! Creating users, for `camwire-server user add` and the `--demo` users.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;

use camwire_api::{Password, Role, User};

use crate::auth::{PasswordError, hash_password};
use crate::db::{Db, NewUserRow, insert_user};
use crate::error::is_unique_violation;

/// Maximum length of a user name, in characters.
pub const MAX_USERNAME_LEN: usize = 64;

/// Maximum length of a password, in bytes. Argon2 hashes any length, so the limit only
/// bounds the work.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub password: Password,
    /// Defaults to the user name.
    pub display_name: Option<String>,
    /// Defaults to empty.
    pub email: Option<String>,
    pub role: Role,
}

/// Errors of creating a user.
#[derive(Debug, thiserror::Error)]
pub enum AddUserError {
    #[error("invalid user name {username:?}: {reason}")]
    InvalidUsername {
        username: String,
        reason: &'static str,
    },
    #[error("invalid password: {0}")]
    InvalidPassword(&'static str),
    #[error("user {username:?} already exists; choose another name")]
    UsernameTaken { username: String },
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("password hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Checks a user name: 1 to 64 characters, none of them whitespace or control characters,
/// so that it prints as one word.
pub fn validate_username(username: &str) -> Result<(), AddUserError> {
    let invalid = |reason| AddUserError::InvalidUsername {
        username: username.chars().take(MAX_USERNAME_LEN + 1).collect(),
        reason,
    };

    if username.is_empty() {
        return Err(invalid("it is empty"));
    }

    if username.chars().count() > MAX_USERNAME_LEN {
        return Err(invalid("it is longer than 64 characters"));
    }

    if username
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid("it contains whitespace or control characters"));
    }

    Ok(())
}

fn validate_password(password: &Password) -> Result<(), AddUserError> {
    if password.is_empty() {
        return Err(AddUserError::InvalidPassword("it is empty"));
    }

    if password.expose().len() > MAX_PASSWORD_LEN {
        return Err(AddUserError::InvalidPassword(
            "it is longer than 1024 bytes",
        ));
    }

    Ok(())
}

/// Hashes the password on the blocking pool, where Argon2's tens of milliseconds of CPU
/// work do not hold up other requests.
async fn hash_in_background(password: &Password) -> Result<String, AddUserError> {
    let password = password.clone();
    let hash = tokio::task::spawn_blocking(move || hash_password(&password)).await??;
    Ok(hash)
}

/// Creates a user with an Argon2 hash of the password.
pub async fn add_user(db: &Db, user: NewUser) -> Result<User, AddUserError> {
    validate_username(&user.username)?;
    validate_password(&user.password)?;

    let password_hash = hash_in_background(&user.password).await?;
    let display_name = user.display_name.unwrap_or_else(|| user.username.clone());
    let email = user.email.unwrap_or_default();

    let mut connection = db.pool().acquire().await?;
    let row = NewUserRow {
        username: &user.username,
        display_name: &display_name,
        email: &email,
        role: user.role,
        password_hash: &password_hash,
    };

    match insert_user(&mut connection, row).await {
        Ok(created) => Ok(created.to_api()),
        Err(error) if is_unique_violation(&error) => Err(AddUserError::UsernameTaken {
            username: user.username,
        }),
        Err(error) => Err(error.into()),
    }
}

/// A demo user as [`ensure_demo_users`] left it.
#[derive(Debug, Clone)]
pub struct DemoUser {
    pub username: String,
    /// The password of a user created on this start; `None` for a user that existed
    /// already, whose password was left unchanged.
    pub password: Option<Password>,
}

/// The demo users: name, display name, e-mail and role.
const DEMO_USERS: [(&str, &str, &str, Role); 3] = [
    ("alice", "Alice Liddell", "alice@example.com", Role::User),
    ("bob", "Bob", "bob@example.com", Role::User),
    ("admin", "Administrator", "admin@example.com", Role::Admin),
];

/// Creates the demo users that are missing, each with a new random password. Existing
/// users, demo or real, keep their password and every other field.
pub async fn ensure_demo_users(db: &Db) -> Result<Vec<DemoUser>, AddUserError> {
    let mut users = Vec::with_capacity(DEMO_USERS.len());

    for (username, display_name, email, role) in DEMO_USERS {
        if db.find_user_by_username(username).await?.is_some() {
            users.push(DemoUser {
                username: username.to_owned(),
                password: None,
            });
            continue;
        }

        let password = generate_password();
        let user = NewUser {
            username: username.to_owned(),
            password: password.clone(),
            display_name: Some(display_name.to_owned()),
            email: Some(email.to_owned()),
            role,
        };

        // Another server starting on the same database may create the user first, and
        // then that server's password applies.
        let password = match add_user(db, user).await {
            Ok(_) => Some(password),
            Err(AddUserError::UsernameTaken { .. }) => None,
            Err(error) => return Err(error),
        };
        users.push(DemoUser {
            username: username.to_owned(),
            password,
        });
    }

    Ok(users)
}

/// Generates a password of 16 base64url characters (96 random bits).
fn generate_password() -> Password {
    let mut bytes = zeroize::Zeroizing::new([0u8; 12]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());

    Password::new(URL_SAFE_NO_PAD.encode(bytes.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_checked() {
        assert!(validate_username("alice").is_ok());
        assert!(validate_username("alice.liddell@example.com").is_ok());
        assert!(validate_username(&"a".repeat(64)).is_ok());

        for bad in [
            "",
            "alice liddell",
            "tab\tname",
            "new\nline",
            &"a".repeat(65),
        ] {
            assert!(
                matches!(
                    validate_username(bad),
                    Err(AddUserError::InvalidUsername { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn passwords_are_checked() {
        assert!(validate_password(&Password::new("x")).is_ok());
        assert!(validate_password(&Password::new("")).is_err());
        assert!(validate_password(&Password::new("x".repeat(1025))).is_err());
    }

    #[test]
    fn generated_passwords_are_one_word_and_differ() {
        let first = generate_password();
        let second = generate_password();

        assert_eq!(first.expose().len(), 16);
        assert!(!first.expose().contains(char::is_whitespace));
        assert_ne!(first, second);
    }
}
