//! A real `camwire-server` child process with its own SQLite file and config file.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::process::{GroupChild, free_port, workspace_binary};

/// How to start a server; every path lives in the directory given to [`ServerProcess::start`].
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Address pool as a CIDR, `10.13.0.0/16` by default.
    pub pool: String,
    /// Further arguments of `camwire-server serve`.
    pub extra_arguments: Vec<String>,
    /// Loopback port to listen on; a free one when `None`.
    pub port: Option<u16>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            pool: "10.13.0.0/16".into(),
            extra_arguments: Vec::new(),
            port: None,
        }
    }
}

/// A running `camwire-server serve --demo` on a loopback port.
pub struct ServerProcess {
    child: Option<GroupChild>,
    options: ServerOptions,
    dir: PathBuf,
    port: u16,
    /// Demo users' passwords as the server printed them, by user name.
    pub passwords: HashMap<String, String>,
}

impl ServerProcess {
    /// Starts a server whose database, config file and log live in `dir`.
    pub async fn start(dir: &Path, options: ServerOptions) -> Result<Self> {
        let port = match options.port {
            Some(port) => port,
            None => free_port()?,
        };
        let mut server = Self {
            child: None,
            options,
            dir: dir.to_path_buf(),
            port,
            passwords: HashMap::new(),
        };
        server.launch().await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn database_path(&self) -> PathBuf {
        self.dir.join("camwire.db")
    }

    pub fn database_url(&self) -> String {
        format!("sqlite://{}", self.database_path().display())
    }

    pub fn wg_config_path(&self) -> PathBuf {
        self.dir.join("wg0.conf")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    pub fn password(&self, user: &str) -> &str {
        self.passwords.get(user).map(String::as_str).unwrap_or_default()
    }

    /// Stops the server with SIGTERM, keeping its files.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.terminate(Duration::from_secs(5)).await;
        }
    }

    /// Starts the server again on the same port and files; demo passwords change.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await;
        self.launch().await
    }

    /// Runs `camwire-server ARGS` against this server's database and returns its stdout.
    pub async fn cli(&self, arguments: &[&str], stdin: Option<&str>) -> Result<String> {
        let binary = workspace_binary("camwire-server")?;
        let mut child = Command::new(&binary)
            .args(arguments)
            .args(["--database", &self.database_url()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("failed to start {}", binary.display()))?;

        let mut input = child.stdin.take().context("stdin is piped")?;
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).await?;
        }
        drop(input);

        let output = child.wait_with_output().await?;
        if !output.status.success() {
            bail!(
                "camwire-server {arguments:?} failed with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    async fn launch(&mut self) -> Result<()> {
        let binary = workspace_binary("camwire-server")?;
        let mut command = Command::new(&binary);
        command
            .arg("serve")
            .args(["--listen", &self.addr().to_string()])
            .args(["--database", &self.database_url()])
            .args(["--pool", &self.options.pool])
            .args(["--wg-config", &self.wg_config_path().to_string_lossy()])
            .arg("--demo")
            .args(&self.options.extra_arguments)
            .env("RUST_LOG", "info,camwire_server=debug")
            .stdout(Stdio::piped());

        let mut child = GroupChild::spawn("camwire-server", command, &self.log_path())?;
        let stdout = child.child_mut().stdout.take().context("stdout is piped")?;
        self.child = Some(child);

        let mut lines = BufReader::new(stdout).lines();
        let log_path = self.log_path();
        let mut log = tokio::fs::OpenOptions::new().append(true).open(&log_path).await?;
        let wait = async {
            while let Some(line) = lines.next_line().await? {
                log.write_all(format!("{line}\n").as_bytes()).await?;
                if let Some(rest) = line.strip_prefix("demo user ") {
                    let mut words = rest.split_whitespace();
                    if let (Some(user), Some("password"), Some(password)) =
                        (words.next(), words.next(), words.next())
                    {
                        self.passwords.insert(user.to_owned(), password.to_owned());
                    }
                }
                if line.starts_with("listening on ") {
                    return Ok((lines, log));
                }
            }
            bail!(
                "camwire-server exited before listening; see {}",
                log_path.display()
            )
        };
        let (mut lines, mut log) = tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .with_context(|| format!("camwire-server did not listen within 60 s; see {}", self.log_path().display()))??;

        // Keep draining stdout into the log, so the server never blocks on a full pipe
        // and its stdout log lines land beside its stderr.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = log.write_all(format!("{line}\n").as_bytes()).await;
            }
        });
        Ok(())
    }
}
