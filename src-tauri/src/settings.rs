//! The user's settings, their validation, and their store file `settings.json` in the app
//! data folder, apart from the credentials.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use camwire_client::ServerUrl;
use serde::{Deserialize, Serialize};
use tauri::{AppHandle, Manager as _, Wry};
use tauri_plugin_store::{Store, StoreBuilder};

/// Name of the settings file in the app data folder.
const FILE_NAME: &str = "settings.json";

/// Key of the settings record in the store document.
const SETTINGS_KEY: &str = "settings";

/// The settings as the settings view edits them and `settings.json` stores them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Settings {
    /// The server to sign in to, normalized (`http://127.0.0.1:8080`); `None` leaves the
    /// sign-in form's field as the user types it.
    pub server_url: Option<String>,
    /// Accept plain `http://` to hosts other than this computer.
    pub allow_insecure: bool,
    pub log_level: LogLevel,
    /// Start Camwire when the user logs in to the computer.
    pub start_at_login: bool,
    pub theme: Theme,
}

/// Level of Camwire's own log messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

/// Colour scheme of the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Theme {
    /// Follow the system's light or dark preference (`prefers-color-scheme`).
    #[default]
    System,
    Light,
    Dark,
}

impl LogLevel {
    #[cfg(test)]
    pub const ALL: [LogLevel; 5] = [
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ];

    /// Returns the name that `tracing` filters use: `error`, `warn`, `info`, `debug`, `trace`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl std::fmt::Display for LogLevel {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl Settings {
    /// Checks the settings as the user entered them and returns them with the server URL
    /// normalized; an empty URL becomes `None`.
    ///
    /// Plain `http://` is accepted for this computer only, unless `allow_insecure` is set.
    pub fn validated(mut self) -> Result<Self, String> {
        let text = self.server_url.take().unwrap_or_default();
        if text.trim().is_empty() {
            return Ok(self);
        }

        let server_url = parse_server_url(&text, self.allow_insecure)?;
        self.server_url = Some(server_url.to_string());
        Ok(self)
    }
}

/// Parses a server URL and applies the insecure-http rule, for the settings view and the
/// sign-in form alike. The error is a sentence for the page.
pub fn parse_server_url(text: &str, allow_insecure: bool) -> Result<ServerUrl, String> {
    let server_url = ServerUrl::parse(text).map_err(|error| crate::view::user_message(&error))?;
    server_url
        .require_secure_transport(allow_insecure)
        .map_err(|error| crate::view::user_message(&error))?;
    Ok(server_url)
}

/// The settings in memory and in `settings.json`.
///
/// Only Rust code uses the store, because the webview has no store permission.
#[derive(Clone)]
pub struct SettingsStore {
    store: Arc<Store<Wry>>,
    path: PathBuf,
    current: Arc<Mutex<Settings>>,
}

impl SettingsStore {
    /// Opens `settings.json`, starting from the defaults when it is missing or unreadable.
    pub fn open(app: &AppHandle) -> anyhow::Result<Self> {
        let folder = app
            .path()
            .app_data_dir()
            .context("could not find the app data folder")?;
        let path = folder.join(FILE_NAME);
        let store = StoreBuilder::new(app, &path)
            .disable_auto_save()
            .build()
            .with_context(|| format!("could not open the settings file {}", path.display()))?;

        let current = match store.get(SETTINGS_KEY) {
            None => Settings::default(),
            Some(value) => serde_json::from_value(value).unwrap_or_else(|error| {
                tracing::warn!(path = %path.display(), %error, "the saved settings are unreadable; using the defaults");
                Settings::default()
            }),
        };
        tracing::info!(path = %path.display(), ?current, "loaded the settings");

        Ok(Self {
            store,
            path,
            current: Arc::new(Mutex::new(current)),
        })
    }

    pub fn get(&self) -> Settings {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Writes `settings` to disk, then makes them current.
    pub fn save(&self, settings: Settings) -> Result<(), String> {
        let value = serde_json::to_value(&settings)
            .map_err(|error| format!("could not encode the settings: {error}"))?;
        self.store.set(SETTINGS_KEY, value);
        self.store.save().map_err(|error| {
            format!(
                "could not save the settings to {}: {error}; check that the folder is writable",
                self.path.display()
            )
        })?;

        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = settings;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_url(url: &str, allow_insecure: bool) -> Settings {
        Settings {
            server_url: Some(url.to_owned()),
            allow_insecure,
            ..Settings::default()
        }
    }

    #[test]
    fn server_url_is_normalized() {
        let settings = with_url("  http://127.0.0.1:8080/ ", false)
            .validated()
            .expect("valid");

        assert_eq!(
            settings.server_url.as_deref(),
            Some("http://127.0.0.1:8080")
        );
    }

    #[test]
    fn empty_server_url_becomes_none() {
        let settings = with_url("   ", false).validated().expect("valid");

        assert_eq!(settings.server_url, None);
    }

    #[test]
    fn invalid_server_url_is_a_sentence() {
        let error = with_url("127.0.0.1:8080", false)
            .validated()
            .expect_err("no scheme");

        assert!(error.starts_with("Invalid server URL"), "{error}");
        assert!(error.contains("http://127.0.0.1:8080"), "{error}");
        assert!(error.ends_with('.'), "{error}");
    }

    #[test]
    fn remote_http_needs_allow_insecure() {
        let error = with_url("http://camwire.example.com", false)
            .validated()
            .expect_err("plain http to a remote host");
        let allowed = with_url("http://camwire.example.com", true).validated();

        assert!(error.contains("Allow insecure connection"), "{error}");
        assert_eq!(
            allowed.expect("allowed").server_url.as_deref(),
            Some("http://camwire.example.com")
        );
    }

    #[test]
    fn sign_in_form_rule_matches_settings() {
        assert!(parse_server_url("http://localhost:8080", false).is_ok());
        assert!(parse_server_url("https://camwire.example.com", false).is_ok());
        assert!(parse_server_url("http://192.0.2.10:8080", false).is_err());
        assert!(parse_server_url("http://192.0.2.10:8080", true).is_ok());
    }

    #[test]
    fn stored_form_uses_camel_case_and_defaults() {
        let settings = Settings {
            server_url: Some("https://camwire.example.com".to_owned()),
            allow_insecure: false,
            log_level: LogLevel::Debug,
            start_at_login: true,
            theme: Theme::Dark,
        };

        let value = serde_json::to_value(&settings).expect("encodes");
        let partial: Settings =
            serde_json::from_value(serde_json::json!({ "theme": "light" })).expect("decodes");

        assert_eq!(
            value,
            serde_json::json!({
                "serverUrl": "https://camwire.example.com",
                "allowInsecure": false,
                "logLevel": "debug",
                "startAtLogin": true,
                "theme": "dark",
            })
        );
        assert_eq!(partial.theme, Theme::Light);
        assert_eq!(partial.log_level, LogLevel::Info);
        assert_eq!(partial.server_url, None);
    }
}
