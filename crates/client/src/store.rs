//! Storage of credentials between runs: the [`CredentialStore`] trait and two implementations.
//!
//! Every store contains one JSON document, an object whose `session` entry is the credential
//! record (see [`Credentials::to_json`]); a cleared store is `{}`. The desktop app backs the
//! trait with tauri-plugin-store, which uses the same document shape.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

use crate::Credentials;

/// Key of the credential record in the store document.
pub const SESSION_KEY: &str = "session";

/// Storage of the signed-in device's credentials.
///
/// `save` and `clear` persist before they return (a cleared store stays cleared after a
/// crash). `load` treats unreadable contents as "signed out" and logs a warning.
pub trait CredentialStore: Send + Sync {
    /// Loads the saved credentials; `Ok(None)` when there are none or they cannot be read as
    /// credentials, such as an empty, zeroed, truncated or foreign file.
    fn load(&self) -> Result<Option<Credentials>, StoreError>;

    /// Saves the credentials, replacing any earlier ones.
    fn save(&self, credentials: &Credentials) -> Result<(), StoreError>;

    /// Removes the saved credentials and persists the removal.
    fn clear(&self) -> Result<(), StoreError>;
}

/// Failure to read or write a credential store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("could not read the credential store {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("could not write the credential store {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A failure of another storage backend, such as tauri-plugin-store.
    #[error("the credential store failed: {0}")]
    Backend(String),
}

/// Reads the credential record out of a store entry, logging a warning when it is unreadable.
///
/// `origin` names the store in the warning, such as its file path.
pub fn credentials_from_entry(entry: Option<Value>, origin: &str) -> Option<Credentials> {
    let entry = entry?;

    match Credentials::from_json(entry) {
        Ok(credentials) => Some(credentials),
        Err(error) => {
            tracing::warn!(store = origin, %error, "ignoring unreadable saved session; starting signed out");
            None
        }
    }
}

/// Reads the credential record out of the bytes of a whole store document.
///
/// Empty, all-NUL, non-JSON and non-object contents read as signed out with a warning;
/// `{}` (a cleared store) reads as signed out without one.
pub fn credentials_from_document(bytes: &[u8], origin: &str) -> Option<Credentials> {
    if bytes
        .iter()
        .all(|byte| *byte == 0 || byte.is_ascii_whitespace())
    {
        tracing::warn!(
            store = origin,
            bytes = bytes.len(),
            "credential store is empty or zeroed; starting signed out"
        );
        return None;
    }

    let document = match serde_json::from_slice::<Value>(bytes) {
        Ok(document) => document,
        Err(error) => {
            // The position is enough to find the damage; the text could contain a secret.
            tracing::warn!(
                store = origin,
                line = error.line(),
                column = error.column(),
                "credential store is not valid JSON; starting signed out"
            );
            return None;
        }
    };

    let Value::Object(mut entries) = document else {
        tracing::warn!(
            store = origin,
            "credential store is not a JSON object; starting signed out"
        );
        return None;
    };
    credentials_from_entry(entries.remove(SESSION_KEY), origin)
}

/// A store in memory only, for tests and for running without persistence.
#[derive(Default)]
pub struct MemoryStore {
    document: Mutex<serde_json::Map<String, Value>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The document contains the token and key, so only its presence is shown.
        formatter
            .debug_struct("MemoryStore")
            .field("has_session", &self.entries().contains_key(SESSION_KEY))
            .finish()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates a store whose `session` entry is `entry`, such as a damaged record.
    pub fn with_entry(entry: Value) -> Self {
        let store = Self::default();
        store.entries().insert(SESSION_KEY.to_owned(), entry);
        store
    }

    /// Returns the stored `session` entry, for tests to inspect.
    pub fn entry(&self) -> Option<Value> {
        self.entries().get(SESSION_KEY).cloned()
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, serde_json::Map<String, Value>> {
        // A panic while holding this lock cannot leave the map half-updated, so a
        // poisoned lock is still safe to use.
        self.document
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl CredentialStore for MemoryStore {
    fn load(&self) -> Result<Option<Credentials>, StoreError> {
        Ok(credentials_from_entry(self.entry(), "memory"))
    }

    fn save(&self, credentials: &Credentials) -> Result<(), StoreError> {
        self.entries()
            .insert(SESSION_KEY.to_owned(), credentials.to_json());
        Ok(())
    }

    fn clear(&self) -> Result<(), StoreError> {
        self.entries().clear();
        Ok(())
    }
}

/// A store in one JSON file, replaced atomically on every write (write a temporary file in
/// the same folder, sync it, rename it over the old one) and readable only by its owner on Unix.
#[derive(Debug)]
pub struct JsonFileStore {
    path: PathBuf,
    write_lock: Mutex<()>,
}

impl JsonFileStore {
    /// Creates a store at `path`; the file and its folder are created on the first write.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            write_lock: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_document(&self, document: &Value) -> Result<(), StoreError> {
        let _guard = self
            .write_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let write_error = |source| StoreError::Write {
            path: self.path.clone(),
            source,
        };

        let folder = match self.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        create_private_folder(folder).map_err(write_error)?;

        let mut builder = tempfile::Builder::new();
        builder.prefix(".credentials-").suffix(".tmp");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            builder.permissions(std::fs::Permissions::from_mode(0o600));
        }
        let mut file = builder.tempfile_in(folder).map_err(write_error)?;

        let text =
            serde_json::to_vec_pretty(document).map_err(|error| write_error(error.into()))?;
        file.write_all(&text).map_err(write_error)?;
        file.write_all(b"\n").map_err(write_error)?;
        file.as_file().sync_all().map_err(write_error)?;
        file.persist(&self.path)
            .map_err(|error| write_error(error.error))?;

        sync_folder(folder);
        Ok(())
    }
}

impl CredentialStore for JsonFileStore {
    fn load(&self) -> Result<Option<Credentials>, StoreError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };

        Ok(credentials_from_document(
            &bytes,
            &self.path.display().to_string(),
        ))
    }

    fn save(&self, credentials: &Credentials) -> Result<(), StoreError> {
        let mut document = serde_json::Map::new();
        document.insert(SESSION_KEY.to_owned(), credentials.to_json());
        self.write_document(&Value::Object(document))
    }

    fn clear(&self) -> Result<(), StoreError> {
        self.write_document(&Value::Object(serde_json::Map::new()))
    }
}

/// Creates `folder` and its missing parents, readable only by the user (0700) on Unix.
/// An existing folder keeps its mode.
pub fn create_private_folder(folder: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(folder)
}

/// Syncs the folder so that the rename survives a power loss; only Unix can open a folder.
fn sync_folder(folder: &Path) {
    #[cfg(unix)]
    if let Err(error) = std::fs::File::open(folder).and_then(|handle| handle.sync_all()) {
        tracing::debug!(folder = %folder.display(), %error, "could not sync the credential store's folder");
    }
    #[cfg(not(unix))]
    let _ = folder;
}
