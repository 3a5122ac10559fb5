//! Crash-safe replacement of a file's contents.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Replaces the contents of `path` with `contents` so that a reader, or the file after a
/// crash, sees either the old or the new contents in full, never a part.
///
/// Steps: write `.<name>.tmp` in the same directory, fsync it, rename it over `path`,
/// fsync the directory so that the rename itself is durable. On Unix the file gets mode
/// `mode`. When a step fails, `path` keeps its old contents and the temporary file is
/// removed if it was created.
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let temporary = temporary_path(path)?;

    let result = write_and_rename(&temporary, path, contents, mode);

    if result.is_err() && temporary.is_file() {
        // Best effort: the error that matters is the one returned below.
        let _ = std::fs::remove_file(&temporary);
    }

    result
}

/// Returns `<dir>/.<file name>.tmp`, the temporary file of `path`.
fn temporary_path(path: &Path) -> io::Result<PathBuf> {
    let Some(name) = path.file_name() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        ));
    };

    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(name);
    temporary_name.push(".tmp");

    Ok(path.with_file_name(temporary_name))
}

fn write_and_rename(temporary: &Path, path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut file = create_with_mode(temporary, mode)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);

    std::fs::rename(temporary, path)?;

    sync_parent_directory(path)
}

#[cfg(unix)]
fn create_with_mode(path: &Path, mode: u32) -> io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;

    // A leftover temporary file from a crash keeps its old mode through `open`, so set it.
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;

    Ok(file)
}

#[cfg(not(unix))]
fn create_with_mode(path: &Path, _mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

#[cfg(unix)]
fn sync_parent_directory(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };

    File::open(parent)?.sync_all()
}

/// Windows has no way to fsync a directory; the rename is as durable as NTFS makes it.
#[cfg(not(unix))]
fn sync_parent_directory(_path: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_new_file() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("wg0.conf");

        write_atomically(&path, b"new", 0o600).expect("write succeeds");

        assert_eq!(std::fs::read(&path).expect("readable"), b"new");
        assert!(!dir.path().join(".wg0.conf.tmp").exists());
    }

    #[test]
    fn replaces_existing_contents() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("wg0.conf");
        std::fs::write(&path, "old contents that are longer").expect("seed file");

        write_atomically(&path, b"new", 0o600).expect("write succeeds");

        assert_eq!(std::fs::read_to_string(&path).expect("readable"), "new");
    }

    #[cfg(unix)]
    #[test]
    fn file_gets_requested_mode() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("wg0.conf");
        std::fs::write(&path, "old").expect("seed file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");

        write_atomically(&path, b"new", 0o600).expect("write succeeds");

        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[cfg(unix)]
    #[test]
    fn stale_temporary_file_is_replaced_with_right_mode() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("wg0.conf");
        let stale = dir.path().join(".wg0.conf.tmp");
        std::fs::write(&stale, "half-written leftover from a crash").expect("seed stale file");
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o666)).expect("chmod");

        write_atomically(&path, b"new", 0o600).expect("write succeeds");

        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(std::fs::read_to_string(&path).expect("readable"), "new");
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn failed_write_keeps_old_contents() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("wg0.conf");
        std::fs::write(&path, "old").expect("seed file");

        // A directory where the temporary file must go makes the write fail for real,
        // also for root, who may write into directories without write permission.
        std::fs::create_dir(dir.path().join(".wg0.conf.tmp")).expect("blocking directory");

        let result = write_atomically(&path, b"new", 0o600);

        assert!(result.is_err());
        assert_eq!(std::fs::read_to_string(&path).expect("readable"), "old");
    }

    #[cfg(unix)]
    #[test]
    fn unwritable_directory_keeps_old_contents() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("wg0.conf");
        std::fs::write(&path, "old").expect("seed file");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o500))
            .expect("chmod");

        // Root may write into a directory without write permission; then this case cannot
        // be produced, and `failed_write_keeps_old_contents` covers the failure instead.
        if std::fs::write(dir.path().join("probe"), "x").is_ok() {
            eprintln!("skipped: this user can write into a mode 0500 directory");
            return;
        }

        let result = write_atomically(&path, b"new", 0o600);

        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod back");
        assert!(result.is_err());
        assert_eq!(std::fs::read_to_string(&path).expect("readable"), "old");
    }

    #[test]
    fn path_without_file_name_is_rejected() {
        let result = write_atomically(Path::new("/"), b"new", 0o600);

        assert_eq!(
            result.expect_err("no file name").kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
