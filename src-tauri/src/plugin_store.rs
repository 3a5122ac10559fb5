//! [`CredentialStore`] backed by tauri-plugin-store, in `credentials.json` in the app data folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use camwire_client::{
    CredentialStore, Credentials, SESSION_KEY, StoreError, create_private_folder,
    credentials_from_entry,
};
use tauri::{AppHandle, Manager as _, Wry};
use tauri_plugin_store::{Store, StoreBuilder};

/// Name of the store file in the app data folder.
const FILE_NAME: &str = "credentials.json";

/// The plugin's store, written to disk by every `save` and `clear`, or the reason it could not
/// be opened.
///
/// Only Rust code uses it, because the webview has no store permission.
///
/// NOTE: tauri-plugin-store 2.5 writes the file in place, without write-then-rename. A crash
/// during a write can leave it truncated, and loading such a file logs a warning and starts
/// signed out.
pub enum PluginCredentialStore {
    Open {
        store: Arc<Store<Wry>>,
        folder: PathBuf,
        path: PathBuf,
    },
    /// The store could not be opened: every call fails with this message, so the app starts
    /// signed out and a sign-in shows the message.
    Unavailable { message: String },
}

impl PluginCredentialStore {
    /// Opens the store, creating its folder and file readable only by the user on Unix.
    ///
    /// Logs a store that cannot be opened at WARN and returns it as
    /// [`PluginCredentialStore::Unavailable`], so the app still starts. One example is a file
    /// whose mode cannot be set because another user owns it.
    pub fn open(app: &AppHandle) -> Self {
        match Self::try_open(app) {
            Ok(store) => store,
            Err(error) => {
                let message = format!("{error:#}");
                tracing::warn!(error = %message, "could not open the credential store; starting signed out");
                Self::Unavailable {
                    message: format!(
                        "{message}. Make the file and its folder writable by your user, then start Camwire again"
                    ),
                }
            }
        }
    }

    fn try_open(app: &AppHandle) -> anyhow::Result<Self> {
        let folder = app
            .path()
            .app_data_dir()
            .context("could not find the app data folder")?;
        let path = folder.join(FILE_NAME);
        prepare_private_file(&folder, &path).with_context(|| {
            format!("could not prepare the credential store {}", path.display())
        })?;

        let store = StoreBuilder::new(app, &path)
            .disable_auto_save()
            .deserialize(parse_document)
            .build()
            .with_context(|| format!("could not open the credential store {}", path.display()))?;

        tracing::info!(path = %path.display(), "opened the credential store");
        Ok(Self::Open {
            store,
            folder,
            path,
        })
    }

    /// Returns the open store, or the reason it is unavailable as an error.
    fn open_store(&self) -> Result<(&Arc<Store<Wry>>, &Path, &Path), StoreError> {
        match self {
            Self::Open {
                store,
                folder,
                path,
            } => Ok((store, folder, path)),
            Self::Unavailable { message } => Err(StoreError::Backend(message.clone())),
        }
    }
}

impl CredentialStore for PluginCredentialStore {
    fn load(&self) -> Result<Option<Credentials>, StoreError> {
        let (store, _, path) = self.open_store()?;
        Ok(credentials_from_entry(
            store.get(SESSION_KEY),
            &path.display().to_string(),
        ))
    }

    fn save(&self, credentials: &Credentials) -> Result<(), StoreError> {
        let (store, folder, path) = self.open_store()?;
        store.set(SESSION_KEY, credentials.to_json());
        write_privately(folder, path, || store.save())
    }

    fn clear(&self) -> Result<(), StoreError> {
        let (store, folder, path) = self.open_store()?;
        store.clear();
        write_privately(folder, path, || store.save())
    }
}

/// Makes the folder (0700) and the file (0600) private, creating them when they are missing,
/// then runs `write`, which writes the file in place.
///
/// tauri-plugin-store writes with `std::fs::write`, which creates a missing file with the
/// default mode (usually 0644) and keeps the mode of an existing one. Preparing the file
/// before every write keeps a file that was deleted while the app ran from coming back
/// readable by every user. Nothing is written when the preparation fails.
fn write_privately<E: std::fmt::Display>(
    folder: &Path,
    path: &Path,
    write: impl FnOnce() -> Result<(), E>,
) -> Result<(), StoreError> {
    prepare_private_file(folder, path).map_err(|error| {
        StoreError::Backend(format!(
            "could not make {} private before writing it: {error}",
            path.display()
        ))
    })?;
    write().map_err(|error| {
        StoreError::Backend(format!("could not write {}: {error}", path.display()))
    })
}

type Document = HashMap<String, serde_json::Value>;

/// Parses the store file, logging a warning when it is damaged; the plugin then starts with an
/// empty store, which reads as signed out.
///
/// The plugin takes a plain function, so the warning names the file but not its folder.
fn parse_document(bytes: &[u8]) -> Result<Document, Box<dyn std::error::Error + Send + Sync>> {
    serde_json::from_slice(bytes).map_err(|error| {
        // The position locates the damage; the text could contain a secret.
        tracing::warn!(
            store = FILE_NAME,
            bytes = bytes.len(),
            line = error.line(),
            column = error.column(),
            "credential store is damaged; starting signed out"
        );
        error.into()
    })
}

/// Creates the folder (0700) and an empty store file (0600) when they are missing, and sets
/// those modes on existing ones, before the plugin writes the file. The plugin's writes keep
/// the mode of an existing file and would otherwise create it readable by every user.
fn prepare_private_file(folder: &Path, path: &Path) -> std::io::Result<()> {
    create_private_folder(folder)?;

    #[cfg(unix)]
    {
        use std::io::Write as _;
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};

        // WebKit may have created the folder first, with the default mode.
        std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o700))?;

        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut file) => file.write_all(b"{}\n")?,
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("the path exists")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn new_store_is_private() {
        let root = tempfile::tempdir().expect("temp dir");
        let folder = root.path().join("dev.camwire.desktop");
        let path = folder.join(FILE_NAME);

        prepare_private_file(&folder, &path).expect("prepares the store");

        assert_eq!(mode(&folder), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read_to_string(&path).expect("readable"), "{}\n");
    }

    #[test]
    fn deleted_folder_is_recreated_private_before_write() {
        let root = tempfile::tempdir().expect("temp dir");
        let folder = root.path().join("dev.camwire.desktop");
        let path = folder.join(FILE_NAME);
        prepare_private_file(&folder, &path).expect("prepares the store");
        std::fs::remove_dir_all(&folder).expect("deletes the folder, as a user might");

        // The plugin writes with `std::fs::write`, which creates a missing file with the
        // process's default mode.
        let mut modes_seen_by_write = None;
        write_privately(&folder, &path, || {
            modes_seen_by_write = Some((mode(&folder), mode(&path)));
            std::fs::write(&path, "{\"session\": \"secret\"}\n")
        })
        .expect("writes the store");

        assert_eq!(modes_seen_by_write, Some((0o700, 0o600)));
        assert_eq!(mode(&folder), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(
            std::fs::read_to_string(&path).expect("readable"),
            "{\"session\": \"secret\"}\n"
        );
    }

    #[test]
    fn deleted_file_is_recreated_private_before_write() {
        let root = tempfile::tempdir().expect("temp dir");
        let folder = root.path().join("dev.camwire.desktop");
        let path = folder.join(FILE_NAME);
        prepare_private_file(&folder, &path).expect("prepares the store");
        std::fs::remove_file(&path).expect("deletes the file, as a user might");

        write_privately(&folder, &path, || std::fs::write(&path, "{}\n"))
            .expect("writes the store");

        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn failed_preparation_writes_nothing() {
        let root = tempfile::tempdir().expect("temp dir");
        let folder = root.path().join("dev.camwire.desktop");
        std::fs::create_dir(&folder).expect("creates the folder");
        let path = folder.join(FILE_NAME);
        // A link to a missing file: creating the file fails, and so does setting its mode.
        std::os::unix::fs::symlink(root.path().join("missing"), &path).expect("links");
        let mut written = false;

        let result = write_privately(&folder, &path, || {
            written = true;
            Ok::<(), std::io::Error>(())
        });

        let Err(StoreError::Backend(message)) = result else {
            panic!("expected a failed preparation, got {result:?}");
        };
        assert!(message.contains(FILE_NAME), "message: {message}");
        assert!(!written, "the store was written after a failed preparation");
    }

    #[test]
    fn existing_store_is_made_private_and_kept() {
        let root = tempfile::tempdir().expect("temp dir");
        let folder = root.path().join("dev.camwire.desktop");
        std::fs::create_dir(&folder).expect("creates the folder");
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755))
            .expect("opens the folder");
        let path = folder.join(FILE_NAME);
        std::fs::write(&path, "{\"session\": {}}\n").expect("writes a store");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .expect("opens the file");

        prepare_private_file(&folder, &path).expect("prepares the store");

        assert_eq!(mode(&folder), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(
            std::fs::read_to_string(&path).expect("readable"),
            "{\"session\": {}}\n"
        );
    }
}
