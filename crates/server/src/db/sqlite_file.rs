//! The file behind a SQLite URL: parsing the URL, creating the file with owner-only
//! access, and turning SQLite's terse open and write errors into messages that name the
//! path and the fix.

use std::path::{Path, PathBuf};

use super::DbError;

/// SQLite's primary result code for a write to a read-only database (`SQLITE_READONLY`).
const SQLITE_READONLY: i32 = 8;

/// SQLite's primary result code for a file that cannot be opened (`SQLITE_CANTOPEN`).
const SQLITE_CANTOPEN: i32 = 14;

/// The storage that a SQLite URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqliteLocation {
    /// A file, such as `camwire.db` in `sqlite://camwire.db`.
    File(PathBuf),
    /// Memory only, as in `sqlite::memory:` or `sqlite://c.db?mode=memory`.
    Memory,
    /// No path at all, as in `sqlite://`.
    Empty,
}

/// Reads the storage of a SQLite URL such as `sqlite://camwire.db` or
/// `sqlite:///var/lib/c.db`; `None` when `url` is not a SQLite URL.
pub fn sqlite_location(url: &str) -> Option<SqliteLocation> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));

    let in_memory = path.contains(":memory:") || query.split('&').any(|pair| pair == "mode=memory");
    if in_memory {
        return Some(SqliteLocation::Memory);
    }

    if path.is_empty() {
        return Some(SqliteLocation::Empty);
    }

    Some(SqliteLocation::File(PathBuf::from(path)))
}

/// Checks a SQLite URL before SQLite opens it: it must name a file that is not a
/// directory, in a directory that exists. Returns the file's path.
pub(super) fn check_sqlite_url(url: &str) -> Result<PathBuf, DbError> {
    let url_text = || url.chars().take(256).collect();

    let path = match sqlite_location(url) {
        Some(SqliteLocation::File(path)) => path,
        Some(SqliteLocation::Memory) => return Err(DbError::SqliteInMemory { url: url_text() }),
        Some(SqliteLocation::Empty) | None => {
            return Err(DbError::SqliteEmptyPath { url: url_text() });
        }
    };

    if path.is_dir() {
        return Err(DbError::SqlitePathIsDirectory { path });
    }

    let directory = path.parent().unwrap_or(Path::new(""));
    if !directory.as_os_str().is_empty() && !directory.exists() {
        return Err(DbError::SqliteDirectoryMissing {
            directory: directory.to_path_buf(),
            path,
        });
    }

    Ok(path)
}

/// Mode of a new SQLite file on Unix: read and write for the owner only, because the
/// database contains password hashes. SQLite gives its `-wal` and `-shm` files the
/// same mode as the database file.
pub const SQLITE_FILE_MODE: u32 = 0o600;

/// Creates an empty SQLite file at `path` with mode [`SQLITE_FILE_MODE`] on Unix, unless
/// the file exists; SQLite takes an empty file as an empty database. On other systems
/// it does nothing, and SQLite creates the file.
pub(super) fn create_private_file(path: &Path) -> Result<(), DbError> {
    let created = create_new_private(path);

    match created {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(DbError::SqliteCreate {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(unix)]
fn create_new_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;

    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(SQLITE_FILE_MODE)
        .open(path)?;
    Ok(())
}

#[cfg(not(unix))]
fn create_new_private(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Maps an error of opening the SQLite file at `path` to the one that names the path.
pub(super) fn explain_open_error(path: &Path, error: sqlx::Error) -> DbError {
    if sqlite_code(&error) == Some(SQLITE_CANTOPEN) {
        return DbError::SqliteOpen {
            path: path.to_path_buf(),
            source: error,
        };
    }

    explain_write_error(path, error, DbError::Connect)
}

/// Maps a failed statement on the SQLite file at `path`: a write to a read-only
/// database becomes [`DbError::SqliteReadOnly`], anything else `otherwise`.
pub(super) fn explain_write_error(
    path: &Path,
    error: sqlx::Error,
    otherwise: impl FnOnce(sqlx::Error) -> DbError,
) -> DbError {
    if sqlite_code(&error) == Some(SQLITE_READONLY) {
        return DbError::SqliteReadOnly {
            path: path.to_path_buf(),
        };
    }

    otherwise(error)
}

/// Returns the primary SQLite result code of a database error: the low byte of the
/// extended code that sqlx reports.
fn sqlite_code(error: &sqlx::Error) -> Option<i32> {
    let code = error.as_database_error()?.code()?;
    let extended: i32 = code.parse().ok()?;
    Some(extended & 0xff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_from_url_forms() {
        let file = |path: &str| Some(SqliteLocation::File(PathBuf::from(path)));

        assert_eq!(sqlite_location("sqlite://camwire.db"), file("camwire.db"));
        assert_eq!(sqlite_location("sqlite:camwire.db"), file("camwire.db"));
        assert_eq!(
            sqlite_location("sqlite:///var/lib/camwire/c.db?mode=rwc"),
            file("/var/lib/camwire/c.db")
        );
        assert_eq!(sqlite_location("postgres://localhost/c"), None);
    }

    #[test]
    fn location_recognizes_memory_and_empty_urls() {
        for url in [
            "sqlite::memory:",
            "sqlite://:memory:",
            "sqlite://:memory:?cache=shared",
            "sqlite://c.db?mode=memory",
        ] {
            assert_eq!(sqlite_location(url), Some(SqliteLocation::Memory), "{url}");
        }
        for url in ["sqlite://", "sqlite:", "sqlite://?mode=rwc"] {
            assert_eq!(sqlite_location(url), Some(SqliteLocation::Empty), "{url}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn new_file_is_private_and_existing_file_is_kept() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("c.db");
        let mode = |path: &Path| {
            std::fs::metadata(path)
                .expect("file exists")
                .permissions()
                .mode()
                & 0o777
        };

        create_private_file(&path).expect("file is created");
        let created_mode = mode(&path);
        std::fs::write(&path, b"data").expect("file is writable");
        create_private_file(&path).expect("an existing file is fine");

        assert_eq!(created_mode, 0o600);
        assert_eq!(std::fs::read(&path).expect("file is readable"), b"data");
    }

    #[test]
    fn url_check_names_the_problem() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let missing = dir.path().join("missing");
        let url = |path: &Path| format!("sqlite://{}", path.display());

        assert!(matches!(
            check_sqlite_url("sqlite://"),
            Err(DbError::SqliteEmptyPath { .. })
        ));
        assert!(matches!(
            check_sqlite_url("sqlite://:memory:"),
            Err(DbError::SqliteInMemory { .. })
        ));
        assert!(matches!(
            check_sqlite_url(&url(dir.path())),
            Err(DbError::SqlitePathIsDirectory { path }) if path == dir.path()
        ));
        assert!(matches!(
            check_sqlite_url(&url(&missing.join("c.db"))),
            Err(DbError::SqliteDirectoryMissing { directory, .. }) if directory == missing
        ));
        assert_eq!(
            check_sqlite_url(&url(&dir.path().join("c.db"))).ok(),
            Some(dir.path().join("c.db"))
        );
        assert_eq!(
            check_sqlite_url("sqlite://c.db").ok(),
            Some(PathBuf::from("c.db"))
        );
    }
}
