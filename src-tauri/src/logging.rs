//! Logging: `tracing` to stderr and to daily files in the app's log folder, with a filter that
//! the settings can change while the app runs.
//!
//! The subscriber starts before Tauri, but the log folder is known only in the app's setup,
//! which calls [`LogControl::attach_directory`]. Events before that go to stderr only.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

use crate::settings::LogLevel;

/// Prefix of the log files: `camwire.2026-01-31.log`.
pub const FILE_PREFIX: &str = "camwire";
/// Suffix of the log files.
pub const FILE_SUFFIX: &str = "log";
/// Number of daily files kept; older ones are deleted when a new day's file starts.
pub const MAX_LOG_FILES: usize = 7;

/// Control of the running subscriber: its filter and its file output.
pub struct LogControl {
    filter: reload::Handle<EnvFilter, Registry>,
    file: LogFile,
    /// Whether `RUST_LOG` set the filter at start, which then wins over the saved level.
    from_environment: bool,
}

/// The file output: discards events until a folder is attached.
#[derive(Clone, Default)]
struct LogFile {
    slot: Arc<Mutex<Option<(RollingFileAppender, PathBuf)>>>,
}

impl LogControl {
    /// Installs the global subscriber: `RUST_LOG` when it is set and valid, otherwise the
    /// directives of `LogLevel::default()`.
    pub fn init() -> Self {
        let from_environment = std::env::var_os(EnvFilter::DEFAULT_ENV).is_some();
        let (filter, invalid_environment) = match EnvFilter::try_from_default_env() {
            Ok(filter) => (filter, None),
            Err(error) => (
                EnvFilter::new(filter_directives(LogLevel::default())),
                from_environment.then_some(error),
            ),
        };
        let (filter, handle) = reload::Layer::new(filter);
        let file = LogFile::default();

        tracing_subscriber::registry()
            .with(filter)
            .with(
                fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .with(fmt::layer().with_ansi(false).with_writer({
                let file = file.clone();
                move || file.clone()
            }))
            .init();

        let from_environment = from_environment && invalid_environment.is_none();
        if let Some(error) = invalid_environment {
            tracing::warn!(%error, "RUST_LOG is invalid; using the default log level");
        }
        Self {
            filter: handle,
            file,
            from_environment,
        }
    }

    /// Starts writing daily files to `folder`, creating it.
    pub fn attach_directory(&self, folder: &Path) -> Result<(), String> {
        std::fs::create_dir_all(folder)
            .map_err(|error| format!("could not create {}: {error}", folder.display()))?;
        let appender = RollingFileAppender::builder()
            .rotation(Rotation::DAILY)
            .filename_prefix(FILE_PREFIX)
            .filename_suffix(FILE_SUFFIX)
            .max_log_files(MAX_LOG_FILES)
            .build(folder)
            .map_err(|error| {
                format!("could not open a log file in {}: {error}", folder.display())
            })?;

        *self.file.lock() = Some((appender, folder.to_path_buf()));
        Ok(())
    }

    /// Returns the folder of the log files, once attached.
    pub fn directory(&self) -> Option<PathBuf> {
        self.file.lock().as_ref().map(|(_, folder)| folder.clone())
    }

    /// Applies the level saved in the settings at start, unless `RUST_LOG` set the filter.
    pub fn apply_saved_level(&self, level: LogLevel) {
        if self.from_environment {
            tracing::info!(saved = %level, "RUST_LOG is set; ignoring the saved log level");
            return;
        }
        self.set_level(level);
    }

    /// Replaces the filter with the directives of `level`, as a change in the settings does.
    pub fn set_level(&self, level: LogLevel) {
        let directives = filter_directives(level);
        match self.filter.reload(EnvFilter::new(&directives)) {
            Ok(()) => tracing::info!(%level, %directives, "set the log level"),
            Err(error) => tracing::warn!(%error, %level, "could not change the log level"),
        }
    }
}

/// Returns the filter of a level: Camwire's crates at `level`, every other crate at `warn`
/// (or `error` when `level` is `error`), so that a debug log stays readable.
pub fn filter_directives(level: LogLevel) -> String {
    let others = match level {
        LogLevel::Error => "error",
        _ => "warn",
    };
    let level = level.as_str();
    format!("{others},camwire={level},camwire_client={level},camwire_tunnel={level}")
}

impl LogFile {
    fn lock(&self) -> MutexGuard<'_, Option<(RollingFileAppender, PathBuf)>> {
        // A panic while writing leaves at most a partial line; the appender is still usable.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::io::Write for LogFile {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match self.lock().as_mut() {
            Some((appender, _)) => appender.write(bytes),
            None => Ok(bytes.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.lock().as_mut() {
            Some((appender, _)) => appender.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn directives_set_camwire_crates_to_level() {
        assert_eq!(
            filter_directives(LogLevel::Debug),
            "warn,camwire=debug,camwire_client=debug,camwire_tunnel=debug"
        );
        assert_eq!(
            filter_directives(LogLevel::Error),
            "error,camwire=error,camwire_client=error,camwire_tunnel=error"
        );
    }

    #[test]
    fn every_level_builds_a_valid_filter() {
        for level in LogLevel::ALL {
            let directives = filter_directives(level);
            assert!(
                EnvFilter::try_new(&directives).is_ok(),
                "{level}: {directives}"
            );
        }
    }

    #[test]
    fn file_output_discards_until_attached() {
        let mut file = LogFile::default();

        let line = b"before a folder is attached\n";

        let written = file.write(line).expect("writes");

        assert_eq!(written, line.len());
    }
}
