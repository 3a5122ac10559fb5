//! A throwaway PostgreSQL server for the test run, in `target/xtask/postgres/`.
//!
//! The server's suite runs against SQLite and PostgreSQL. Unless
//! `CAMWIRE_TEST_POSTGRES_URL` already names a server, `cargo xtask test` creates a
//! cluster with Debian's `initdb`, starts it on a free loopback port with trust
//! authentication, and stops it when the tests end.

use std::env;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::run;
use crate::setup::is_root;

/// Environment variable through which the tests find PostgreSQL.
pub const URL_VARIABLE: &str = "CAMWIRE_TEST_POSTGRES_URL";

/// A PostgreSQL server started for this run; stopped on drop.
pub struct Postgres {
    pub url: String,
    data_dir: Option<PathBuf>,
    bin_dir: PathBuf,
}

impl Postgres {
    /// Uses the server named by `CAMWIRE_TEST_POSTGRES_URL`, or starts one.
    pub fn start(root: &Path) -> Result<Self> {
        if let Ok(url) = env::var(URL_VARIABLE) {
            println!("xtask: using PostgreSQL from {URL_VARIABLE}");
            return Ok(Self { url, data_dir: None, bin_dir: PathBuf::new() });
        }

        let bin_dir = find_bin_dir()?;
        let base = root.join("target/xtask/postgres");
        let data_dir = base.join("data");
        let _ = stop(&bin_dir, &data_dir);
        if base.exists() {
            fs::remove_dir_all(&base).with_context(|| format!("failed to remove {}", base.display()))?;
        }
        fs::create_dir_all(&base)?;
        if is_root() {
            // initdb refuses to run as root, so the cluster belongs to the postgres user.
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&base))?;
        }

        let port = free_port()?;
        println!("xtask: starting PostgreSQL on 127.0.0.1:{port} in {}", data_dir.display());
        run(as_owner(&bin_dir.join("initdb"))
            .args(["--auth=trust", "--username=postgres", "--encoding=UTF8", "--pgdata"])
            .arg(&data_dir))?;
        run(as_owner(&bin_dir.join("pg_ctl"))
            .args(["start", "--wait", "--pgdata"])
            .arg(&data_dir)
            .arg("--log")
            .arg(base.join("server.log"))
            .arg("--options")
            .arg(format!(
                "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='{}' -c max_connections=300 -c fsync=off",
                base.display()
            )))?;

        Ok(Self {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            data_dir: Some(data_dir),
            bin_dir,
        })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(data_dir) = &self.data_dir {
            let _ = stop(&self.bin_dir, data_dir);
        }
    }
}

fn stop(bin_dir: &Path, data_dir: &Path) -> Result<()> {
    if !data_dir.join("postmaster.pid").exists() {
        return Ok(());
    }
    run(as_owner(&bin_dir.join("pg_ctl"))
        .args(["stop", "--mode=fast", "--pgdata"])
        .arg(data_dir))
}

/// Returns Debian's PostgreSQL binary directory, such as `/usr/lib/postgresql/15/bin`.
fn find_bin_dir() -> Result<PathBuf> {
    let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    match versions.pop() {
        Some(bin) => Ok(bin),
        None => bail!(
            "PostgreSQL's initdb not found under /usr/lib/postgresql: install the `postgresql` \
             package, or set {URL_VARIABLE} to a server the tests may create databases on"
        ),
    }
}

/// Returns a command that runs `program` as the cluster's owner: this user, or the
/// `postgres` user when this process is root.
fn as_owner(program: &Path) -> Command {
    if !is_root() {
        return Command::new(program);
    }
    let mut command = Command::new("runuser");
    command.args(["-u", "postgres", "--"]).arg(program);
    command
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("failed to bind a loopback port")?;
    Ok(listener.local_addr()?.port())
}
