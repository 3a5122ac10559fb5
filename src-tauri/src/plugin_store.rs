//! [`CredentialStore`] backed by tauri-plugin-store, in `credentials.json` in the app data folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use camwire_client::{
    CredentialStore, Credentials, SESSION_KEY, StoreError, credentials_from_entry,
};
use tauri::{AppHandle, Manager as _, Wry};
use tauri_plugin_store::{Store, StoreBuilder};

/// Name of the store file in the app data folder.
const FILE_NAME: &str = "credentials.json";

/// The plugin's store, written to disk by every `save` and `clear`.
///
/// Only Rust code uses it, because the webview has no store permission.
///
/// NOTE: tauri-plugin-store 2.5 writes the file in place, without write-then-rename. A crash
/// during a write can leave it truncated, and loading such a file logs a warning and starts
/// signed out.
pub struct PluginCredentialStore {
    store: Arc<Store<Wry>>,
    path: PathBuf,
}

impl PluginCredentialStore {
    /// Opens the store, creating its folder and file readable only by the user on Unix.
    pub fn open(app: &AppHandle) -> anyhow::Result<Self> {
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
        Ok(Self { store, path })
    }

    fn save_to_disk(&self) -> Result<(), StoreError> {
        self.store.save().map_err(|error| {
            StoreError::Backend(format!("could not write {}: {error}", self.path.display()))
        })
    }
}

impl CredentialStore for PluginCredentialStore {
    fn load(&self) -> Result<Option<Credentials>, StoreError> {
        Ok(credentials_from_entry(
            self.store.get(SESSION_KEY),
            &self.path.display().to_string(),
        ))
    }

    fn save(&self, credentials: &Credentials) -> Result<(), StoreError> {
        self.store.set(SESSION_KEY, credentials.to_json());
        self.save_to_disk()
    }

    fn clear(&self) -> Result<(), StoreError> {
        self.store.clear();
        self.save_to_disk()
    }
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

/// Creates the folder (0700) and an empty store file (0600) before the plugin writes it,
/// because the plugin's writes keep the mode of an existing file and would otherwise create
/// it readable by every user.
fn prepare_private_file(folder: &Path, path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(folder)?;

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
