//! Database access through sqlx's `Any` driver, for SQLite and PostgreSQL alike.
//!
//! Every query uses `$1` placeholders, TEXT ids, BIGINT unix seconds and BIGINT
//! addresses, and no syntax that only one of the two databases has, so the same code
//! and migrations run on both.

mod address_pool;
mod changes;
mod leases;
mod peers;
mod sessions;
mod sqlite_file;
mod users;

use std::path::PathBuf;
use std::sync::Arc;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Row};

pub use address_pool::{PoolChange, reconcile_pool};
pub use changes::{PEER_CHANNEL, PeerChange, PeerNotification, record_peer_change};
pub use leases::{
    PeerDetail, PendingRemoval, PoolFigures, delete_expired_session, store_handshakes,
};
pub use peers::{
    PeerRow, delete_peer_by_id, delete_peer_by_session, forget_held_free_address, insert_peer,
    insert_pending_removal, release_address, take_lowest_free_address,
};
pub use sessions::{SessionRow, delete_session, insert_session, lock_session};
pub use sqlite_file::{SqliteLocation, sqlite_location};
pub use users::{NewUserRow, UserRow, insert_user};

/// Connections of the pool; SQLite serializes writers anyway, and PostgreSQL servers
/// allow 100 connections by default, shared by every replica.
const MAX_CONNECTIONS: u32 = 8;

/// How long a SQLite statement waits for another process's write lock, in milliseconds.
/// Writers of this process queue in [`Db::lock_writes`] instead.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 30_000;

/// Errors of opening a database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "unsupported database URL scheme {scheme:?}; use sqlite://PATH or postgres://USER@HOST/NAME"
    )]
    UnsupportedScheme { scheme: String },
    #[error(
        "the database URL {url:?} names no file; pass --database sqlite://PATH, such as sqlite://camwire.db"
    )]
    SqliteEmptyPath { url: String },
    #[error(
        "the in-memory SQLite database {url:?} cannot be used, because each connection would get its own empty database and every user, session and peer would be lost at exit; pass --database sqlite://PATH with a file, such as sqlite://camwire.db"
    )]
    SqliteInMemory { url: String },
    #[error(
        "the SQLite database path {} is a directory; pass --database sqlite://PATH with a file, such as sqlite://{}",
        path.display(),
        path.join("camwire.db").display()
    )]
    SqlitePathIsDirectory { path: PathBuf },
    #[error(
        "the directory {} of the SQLite database {} does not exist; create it, or pass --database with a file in an existing directory",
        directory.display(),
        path.display()
    )]
    SqliteDirectoryMissing { path: PathBuf, directory: PathBuf },
    #[error(
        "failed to open the SQLite database {}: {source}; check that this user may read and write the file and its directory",
        path.display()
    )]
    SqliteOpen {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "the SQLite database {} is read-only, but the server writes sessions and peers to it; make the file and its directory writable by this user, and leave mode=ro out of the URL",
        path.display()
    )]
    SqliteReadOnly { path: PathBuf },
    #[error(
        "database {} not found; pass --database with the server's database",
        path.display()
    )]
    SqliteNotFound { path: PathBuf },
    #[error(
        "failed to create the SQLite database {}: {source}; check that this user may write to its directory",
        path.display()
    )]
    SqliteCreate {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to open the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("failed to apply the database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("failed to configure the database: {0}")]
    Configure(#[source] sqlx::Error),
}

/// The kind of database behind a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

impl DbKind {
    /// Reads the kind from the scheme of a database URL.
    pub fn of_url(url: &str) -> Result<Self, DbError> {
        let scheme = url.split_once(':').map_or(url, |(scheme, _)| scheme);

        match scheme {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            other => Err(DbError::UnsupportedScheme {
                scheme: other.chars().take(32).collect(),
            }),
        }
    }
}

/// Tables whose rows tests and operators count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Users,
    Sessions,
    Peers,
    FreeAddresses,
    PendingRemovals,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Users => "users",
            Table::Sessions => "sessions",
            Table::Peers => "peers",
            Table::FreeAddresses => "free_addresses",
            Table::PendingRemovals => "pending_removals",
        }
    }
}

/// A migrated database with its connection pool. Cloning shares the pool.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    kind: DbKind,
    /// The file of a SQLite database; `None` on PostgreSQL.
    sqlite_path: Option<PathBuf>,
    /// Queue of this process's SQLite write transactions; see [`Db::lock_writes`].
    writes: Arc<tokio::sync::Mutex<()>>,
}

impl Db {
    /// Opens the database at `url` and applies the migrations.
    ///
    /// A SQLite file is created when missing, with access for its owner only on Unix,
    /// and switched to WAL journaling. The busy timeout is [`SQLITE_BUSY_TIMEOUT_MS`], and
    /// foreign keys are enforced. In-memory SQLite databases are rejected, because each
    /// pooled connection would get its own.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        Self::open(url, OpenMode::CreateIfMissing).await
    }

    /// Opens an existing database at `url` as [`Db::connect`] does, but fails with
    /// [`DbError::SqliteNotFound`] instead of creating a missing SQLite file. The
    /// `peers` and `pool` commands use it, because they work on what a server stored.
    pub async fn connect_existing(url: &str) -> Result<Self, DbError> {
        Self::open(url, OpenMode::MustExist).await
    }

    async fn open(url: &str, mode: OpenMode) -> Result<Self, DbError> {
        let kind = DbKind::of_url(url)?;
        install_default_drivers();

        let sqlite_path = match kind {
            DbKind::Sqlite => Some(sqlite_file::check_sqlite_url(url)?),
            DbKind::Postgres => None,
        };
        if let Some(path) = &sqlite_path {
            match mode {
                OpenMode::MustExist if !path.exists() => {
                    return Err(DbError::SqliteNotFound { path: path.clone() });
                }
                OpenMode::MustExist => {}
                OpenMode::CreateIfMissing if !sets_sqlite_mode(url) => {
                    sqlite_file::create_private_file(path)?;
                }
                OpenMode::CreateIfMissing => {}
            }
        }

        let url = match kind {
            DbKind::Sqlite => sqlite_url_with_mode(url, mode),
            DbKind::Postgres => url.to_owned(),
        };
        let explain = |error: sqlx::Error, otherwise: fn(sqlx::Error) -> DbError| match &sqlite_path
        {
            Some(path) => sqlite_file::explain_write_error(path, error, otherwise),
            None => otherwise(error),
        };

        let pool = AnyPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .after_connect(move |connection, _metadata| {
                Box::pin(async move {
                    if kind == DbKind::Sqlite {
                        let pragma = format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}");
                        sqlx::query(&pragma).execute(connection).await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|error| match &sqlite_path {
                Some(path) => sqlite_file::explain_open_error(path, error),
                None => DbError::Connect(error),
            })?;

        if kind == DbKind::Sqlite {
            // WAL lets readers go on while a sign-in writes. The mode is stored in the
            // file, so setting it once per start is enough for every connection.
            sqlx::query("PRAGMA journal_mode = WAL")
                .fetch_optional(&pool)
                .await
                .map_err(|error| explain(error, DbError::Configure))?;
        }

        let migrated = sqlx::migrate!("./migrations").run(&pool).await;
        match migrated {
            Ok(()) => {}
            Err(sqlx::migrate::MigrateError::Execute(error)) => {
                return Err(explain(error, |error| DbError::Migrate(error.into())));
            }
            Err(error) => return Err(error.into()),
        }

        Ok(Self {
            pool,
            kind,
            sqlite_path,
            writes: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Checks that this process may write to a SQLite database, with a write
    /// transaction that changes nothing. Returns at once on PostgreSQL.
    ///
    /// A read-only file or `mode=ro` URL opens and migrates fine when the migrations are
    /// applied already, so without this check the server would fail later, at its first
    /// write.
    pub async fn check_writable(&self) -> Result<(), DbError> {
        let Some(path) = &self.sqlite_path else {
            return Ok(());
        };

        let write = async {
            let mut transaction = self.pool.begin().await?;
            sqlx::query("UPDATE peer_generation SET generation = generation WHERE id = 1")
                .execute(&mut *transaction)
                .await?;
            transaction.rollback().await
        };

        write
            .await
            .map_err(|error| sqlite_file::explain_write_error(path, error, DbError::Configure))
    }

    /// Queues for this process's turn to write, on SQLite; returns at once on PostgreSQL.
    ///
    /// SQLite has one writer at a time, and a writer that finds the lock taken sleeps
    /// and polls in its busy handler, which under load lets some writers wait past any
    /// timeout. Taking this first-come-first-served lock before `BEGIN` and holding it
    /// until the commit makes this process's writers take turns in order instead.
    /// PostgreSQL locks rows, so its writers run concurrently.
    pub async fn lock_writes(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.kind {
            DbKind::Sqlite => Some(self.writes.lock().await),
            DbKind::Postgres => None,
        }
    }

    /// Returns the connection pool, for plain SQL in tests and tools.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn kind(&self) -> DbKind {
        self.kind
    }

    /// Closes every connection; later queries fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Counts the rows of `table`.
    pub async fn count_rows(&self, table: Table) -> Result<i64, sqlx::Error> {
        let sql = format!("SELECT COUNT(*) AS count FROM {}", table.name());
        let row = sqlx::query(&sql).fetch_one(&self.pool).await?;
        row.try_get("count")
    }
}

/// Handling of a missing SQLite file when a database is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenMode {
    CreateIfMissing,
    MustExist,
}

/// Adds the SQLite open mode of `mode` to a URL that sets none: `mode=rwc` creates a
/// missing file, `mode=rw` does not.
fn sqlite_url_with_mode(url: &str, mode: OpenMode) -> String {
    if sets_sqlite_mode(url) || url.contains(":memory:") {
        return url.to_owned();
    }

    let separator = if url.contains('?') { '&' } else { '?' };
    let mode = match mode {
        OpenMode::CreateIfMissing => "rwc",
        OpenMode::MustExist => "rw",
    };
    format!("{url}{separator}mode={mode}")
}

/// Tells whether a SQLite URL sets its open mode, as `mode=ro` does.
fn sets_sqlite_mode(url: &str) -> bool {
    url.split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|pair| pair.starts_with("mode=")))
}

/// Returns the file of a SQLite URL such as `sqlite://camwire.db` or `sqlite:///var/lib/c.db`,
/// or `None` for other databases, in-memory SQLite and URLs without a path.
pub fn sqlite_file_path(url: &str) -> Option<PathBuf> {
    match sqlite_location(url)? {
        SqliteLocation::File(path) => Some(path),
        SqliteLocation::Memory | SqliteLocation::Empty => None,
    }
}

/// Returns the current time as unix seconds, the unit of every time column.
pub fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_is_read_from_scheme() {
        assert_eq!(
            DbKind::of_url("sqlite://camwire.db").ok(),
            Some(DbKind::Sqlite)
        );
        assert_eq!(DbKind::of_url("sqlite::memory:").ok(), Some(DbKind::Sqlite));
        assert_eq!(
            DbKind::of_url("postgres://u@localhost/c").ok(),
            Some(DbKind::Postgres)
        );
        assert_eq!(
            DbKind::of_url("postgresql://u@localhost/c").ok(),
            Some(DbKind::Postgres)
        );
        assert!(matches!(
            DbKind::of_url("mysql://localhost/c"),
            Err(DbError::UnsupportedScheme { scheme }) if scheme == "mysql"
        ));
    }

    #[test]
    fn sqlite_url_gets_create_mode() {
        let create = |url| sqlite_url_with_mode(url, OpenMode::CreateIfMissing);

        assert_eq!(create("sqlite://c.db"), "sqlite://c.db?mode=rwc");
        assert_eq!(
            create("sqlite://c.db?cache=shared"),
            "sqlite://c.db?cache=shared&mode=rwc"
        );
        assert_eq!(create("sqlite://c.db?mode=ro"), "sqlite://c.db?mode=ro");
        assert_eq!(create("sqlite::memory:"), "sqlite::memory:");
    }

    #[test]
    fn sqlite_url_of_existing_file_gets_write_mode() {
        let existing = |url| sqlite_url_with_mode(url, OpenMode::MustExist);

        assert_eq!(existing("sqlite://c.db"), "sqlite://c.db?mode=rw");
        assert_eq!(existing("sqlite://c.db?mode=ro"), "sqlite://c.db?mode=ro");
    }

    #[tokio::test]
    async fn existing_database_is_not_created() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("c.db");
        let url = format!("sqlite://{}", path.display());

        let missing = Db::connect_existing(&url).await;
        let created = Db::connect(&url).await;
        let reopened = Db::connect_existing(&url).await;

        assert!(
            matches!(&missing, Err(DbError::SqliteNotFound { path: reported }) if *reported == path),
            "{missing:?}"
        );
        assert!(created.is_ok(), "{created:?}");
        assert!(reopened.is_ok(), "{reopened:?}");
    }

    #[test]
    fn sqlite_file_path_from_url_forms() {
        assert_eq!(
            sqlite_file_path("sqlite://camwire.db"),
            Some(PathBuf::from("camwire.db"))
        );
        assert_eq!(
            sqlite_file_path("sqlite:camwire.db"),
            Some(PathBuf::from("camwire.db"))
        );
        assert_eq!(
            sqlite_file_path("sqlite:///var/lib/camwire/c.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/camwire/c.db"))
        );
        assert_eq!(sqlite_file_path("sqlite::memory:"), None);
        assert_eq!(sqlite_file_path("postgres://localhost/c"), None);
    }
}
