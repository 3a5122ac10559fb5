//! *Export logs*: the app's log files, oldest first, concatenated into one text file.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use crate::logging::{FILE_PREFIX, FILE_SUFFIX};

/// Summary of a finished export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// Names of the log files copied, oldest first.
    pub files: Vec<String>,
    /// Size of the written file, in bytes.
    pub bytes: u64,
}

/// Failure of an export. Each message names the path and what to do next.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("could not read the log folder {}: {source}", folder.display())]
    ReadFolder {
        folder: PathBuf,
        source: std::io::Error,
    },

    #[error("there are no log files in {} yet; use the app for a moment and export again", folder.display())]
    NoLogs { folder: PathBuf },

    #[error("could not read the log file {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("could not write {}: {source}; choose a folder you can write to", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Writes every log file of `folder` (`camwire.YYYY-MM-DD.log`), oldest first, into
/// `destination`, each after a line that names it. A destination inside `folder` that matches
/// the log file pattern is not copied into itself.
pub fn export_logs(folder: &Path, destination: &Path) -> Result<ExportSummary, ExportError> {
    let mut logs = log_files(folder)?;
    let destination_name = destination.file_name().and_then(|name| name.to_str());
    if destination.parent() == Some(folder) {
        logs.retain(|name| Some(name.as_str()) != destination_name);
    }
    if logs.is_empty() {
        return Err(ExportError::NoLogs {
            folder: folder.to_path_buf(),
        });
    }

    let write_error = |source| ExportError::Write {
        path: destination.to_path_buf(),
        source,
    };
    let mut output = BufWriter::new(File::create(destination).map_err(write_error)?);

    for name in &logs {
        let path = folder.join(name);
        let mut input = File::open(&path).map_err(|source| ExportError::ReadFile {
            path: path.clone(),
            source,
        })?;
        writeln!(output, "===== {name} =====").map_err(write_error)?;
        std::io::copy(&mut input, &mut output).map_err(|source| ExportError::ReadFile {
            path: path.clone(),
            source,
        })?;
        writeln!(output).map_err(write_error)?;
    }

    let file = output
        .into_inner()
        .map_err(|error| write_error(error.into_error()))?;
    file.sync_all().map_err(write_error)?;
    let bytes = file.metadata().map_err(write_error)?.len();

    Ok(ExportSummary { files: logs, bytes })
}

/// Returns the names of the log files in `folder`, oldest first: the date in the name sorts
/// them.
fn log_files(folder: &Path) -> Result<Vec<String>, ExportError> {
    let read_error = |source| ExportError::ReadFolder {
        folder: folder.to_path_buf(),
        source,
    };
    let prefix = format!("{FILE_PREFIX}.");
    let suffix = format!(".{FILE_SUFFIX}");

    let mut names = Vec::new();
    for entry in std::fs::read_dir(folder).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let is_file = entry.file_type().is_ok_and(|kind| kind.is_file());
        if is_file && name.starts_with(&prefix) && name.ends_with(&suffix) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(folder: &Path, name: &str, text: &str) {
        std::fs::write(folder.join(name), text).expect("writes a test file");
    }

    #[test]
    fn concatenates_logs_oldest_first() {
        let logs = tempfile::tempdir().expect("temp dir");
        let out = tempfile::tempdir().expect("temp dir");
        write(logs.path(), "camwire.2026-03-02.log", "second day\n");
        write(logs.path(), "camwire.2026-03-01.log", "first day\n");
        write(logs.path(), "notes.txt", "not a log\n");
        write(
            logs.path(),
            "camwire.2026-03-03.log.tmp",
            "not a log either\n",
        );
        let destination = out.path().join("export.txt");

        let summary = export_logs(logs.path(), &destination).expect("exports");

        let text = std::fs::read_to_string(&destination).expect("export readable");
        assert_eq!(
            text,
            "===== camwire.2026-03-01.log =====\nfirst day\n\n\
             ===== camwire.2026-03-02.log =====\nsecond day\n\n"
        );
        assert_eq!(
            summary.files,
            ["camwire.2026-03-01.log", "camwire.2026-03-02.log"]
        );
        assert_eq!(summary.bytes, text.len() as u64);
    }

    #[test]
    fn replaces_an_existing_destination() {
        let logs = tempfile::tempdir().expect("temp dir");
        write(logs.path(), "camwire.2026-03-01.log", "today\n");
        let destination = logs.path().join("old-export.txt");
        write(
            logs.path(),
            "old-export.txt",
            "stale contents that are longer\n",
        );

        export_logs(logs.path(), &destination).expect("exports");

        let text = std::fs::read_to_string(&destination).expect("export readable");
        assert_eq!(text, "===== camwire.2026-03-01.log =====\ntoday\n\n");
    }

    #[test]
    fn log_named_destination_is_skipped() {
        let logs = tempfile::tempdir().expect("temp dir");
        write(logs.path(), "camwire.2026-03-01.log", "today\n");
        write(logs.path(), "camwire.export.log", "an earlier export\n");
        let destination = logs.path().join("camwire.export.log");

        let summary = export_logs(logs.path(), &destination).expect("exports");

        assert_eq!(summary.files, ["camwire.2026-03-01.log"]);
        let text = std::fs::read_to_string(&destination).expect("export readable");
        assert!(!text.contains("an earlier export"), "{text}");
    }

    #[test]
    fn empty_folder_is_reported() {
        let logs = tempfile::tempdir().expect("temp dir");

        let error = export_logs(logs.path(), &logs.path().join("export.txt"))
            .expect_err("no logs to export");

        assert!(matches!(error, ExportError::NoLogs { .. }), "{error}");
        assert!(!logs.path().join("export.txt").exists());
    }

    #[test]
    fn missing_folder_is_reported() {
        let logs = tempfile::tempdir().expect("temp dir");
        let missing = logs.path().join("missing");

        let error = export_logs(&missing, &logs.path().join("export.txt")).expect_err("no folder");

        assert!(matches!(error, ExportError::ReadFolder { .. }), "{error}");
        assert!(error.to_string().contains("missing"), "{error}");
    }

    #[test]
    fn unwritable_destination_is_reported() {
        let logs = tempfile::tempdir().expect("temp dir");
        write(logs.path(), "camwire.2026-03-01.log", "today\n");
        let destination = logs.path().join("no-such-folder").join("export.txt");

        let error = export_logs(logs.path(), &destination).expect_err("no folder to write to");

        assert!(matches!(error, ExportError::Write { .. }), "{error}");
        assert!(error.to_string().contains("choose a folder"), "{error}");
    }
}
