//! A real `camwire-server` child process with its own SQLite file and config file.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use camwire_api::{AdminPeerList, AdminRevokeResponse};

use crate::process::{GroupChild, free_port, free_udp_port, workspace_binary};

/// How to start a server; every path lives in the directory given to [`ServerProcess::start`].
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Address pool as a CIDR, `10.13.0.0/16` by default.
    pub pool: String,
    /// Further arguments of `camwire-server serve`. When they contain `--peer-backend`,
    /// `--wg-listen` or `--wg-endpoint`, they choose the WireGuard back end and its endpoint.
    /// Otherwise the harness runs the embedded hub on the server's own free UDP port.
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
    /// Loopback UDP port of the WireGuard endpoint that the server hands to clients.
    wg_port: u16,
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
            wg_port: free_udp_port()?,
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

    /// Returns the WireGuard endpoint that the server hands to clients, `127.0.0.1:PORT`,
    /// unless [`ServerOptions::extra_arguments`] set it.
    ///
    /// Each server gets its own free UDP port, so that clients of one test never send
    /// handshakes to another test's or another program's WireGuard port.
    pub fn wg_endpoint(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.wg_port))
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

    /// Starts the server again on the same port and files; demo users keep their passwords.
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

    /// Signs `user` in with the demo password through `POST /login` and returns the access
    /// token, as another device of the same user would.
    pub async fn login(&self, user: &str) -> Result<String> {
        let body = serde_json::json!({ "username": user, "password": self.password(user) });
        let reply = http()
            .post(format!("{}/login", self.url()))
            .json(&body)
            .send()
            .await
            .context("POST /login failed")?;
        let status = reply.status();
        let reply: serde_json::Value = reply.json().await.context("POST /login sent no JSON")?;
        let Some(token) = reply.get("access_token").and_then(serde_json::Value::as_str) else {
            bail!("POST /login as {user} returned {status} without an access token");
        };
        Ok(token.to_owned())
    }

    /// Returns the HTTP status of `GET /me` with `token`: 200 for a live session, 401 for an
    /// ended one.
    pub async fn status_of_token(&self, token: &str) -> Result<u16> {
        let reply = http()
            .get(format!("{}/me", self.url()))
            .bearer_auth(token)
            .send()
            .await
            .context("GET /me failed")?;
        Ok(reply.status().as_u16())
    }

    /// Returns the server's `GET /metrics` text.
    pub async fn metrics(&self) -> Result<String> {
        let reply = http()
            .get(format!("{}/metrics", self.url()))
            .send()
            .await
            .context("GET /metrics failed")?;
        let status = reply.status();
        ensure!(status.is_success(), "GET /metrics returned {status}");
        reply.text().await.context("GET /metrics sent an unreadable body")
    }

    /// Lists every peer through `GET /admin/peers`, signed in as the demo admin.
    pub async fn admin_peers(&self) -> Result<AdminPeerList> {
        let token = self.login("admin").await?;
        let reply = http()
            .get(format!("{}/admin/peers", self.url()))
            .bearer_auth(&token)
            .send()
            .await
            .context("GET /admin/peers failed")?;
        let status = reply.status();
        ensure!(status.is_success(), "GET /admin/peers returned {status}");
        reply.json().await.context("GET /admin/peers sent an invalid body")
    }

    /// Revokes the peer with `peer_id` through `DELETE /admin/peers/{id}`, signed in as the
    /// demo admin: its address is freed and its session ends.
    pub async fn admin_revoke(&self, peer_id: &str) -> Result<AdminRevokeResponse> {
        let token = self.login("admin").await?;
        let reply = http()
            .delete(format!("{}/admin/peers/{peer_id}", self.url()))
            .bearer_auth(&token)
            .send()
            .await
            .context("DELETE /admin/peers failed")?;
        let status = reply.status();
        ensure!(status.is_success(), "DELETE /admin/peers/{peer_id} returned {status}");
        reply.json().await.context("DELETE /admin/peers sent an invalid body")
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
            .arg("--demo");
        let caller_sets_wireguard = self.options.extra_arguments.iter().any(|argument| {
            ["--peer-backend", "--wg-listen", "--wg-endpoint"]
                .iter()
                .any(|flag| argument.starts_with(flag))
        });
        if !caller_sets_wireguard {
            command.args(["--wg-endpoint", &self.wg_endpoint().to_string()]);
            // Without --wg-listen, every server would bind the hub's default port.
            command
                .args(["--peer-backend", "embedded"])
                .args(["--wg-listen", &self.wg_endpoint().to_string()]);
        }
        command
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

/// Returns an HTTP client whose requests cannot hang a test.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default()
}
