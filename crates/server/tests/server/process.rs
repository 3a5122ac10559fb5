//! `camwire-server serve` as a child process, and a small HTTP client for it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use reqwest::{Client, StatusCode};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use camwire_api::{LoginResponse, WireguardConfig};

pub const BINARY: &str = env!("CARGO_BIN_EXE_camwire-server");

/// Upper bound for a debug build to migrate a database and bind. It is far above the time
/// this takes on an idle machine, so that a loaded machine does not fail the test.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `camwire-server serve` whose log goes to a file.
pub struct ServerProcess {
    child: Child,
    pub url: String,
    /// UDP address of the embedded hub, from the stdout line before the URL; `None`
    /// with `--peer-backend wg-config`.
    hub_addr: Option<SocketAddr>,
    pub log_path: PathBuf,
    pub wg_config: PathBuf,
    /// Kept open so that the server never writes into a closed pipe.
    _stdout: Lines<BufReader<ChildStdout>>,
}

impl ServerProcess {
    /// Starts `camwire-server serve --listen 127.0.0.1:0 --database DATABASE --wg-config
    /// WG_CONFIG EXTRA...` and waits until it listens. The embedded hub gets
    /// `--wg-listen 127.0.0.1:0`, unless EXTRA selects `wg-config`.
    pub async fn spawn(database: &str, wg_config: &Path, extra: &[&str]) -> Self {
        Self::spawn_with_env(database, wg_config, extra, &[]).await
    }

    /// Like [`spawn`](Self::spawn), with extra environment variables.
    pub async fn spawn_with_env(
        database: &str,
        wg_config: &Path,
        extra: &[&str],
        environment: &[(&str, String)],
    ) -> Self {
        let directory = wg_config.parent().expect("config file has a directory");
        let log_path = directory.join(format!("server-{}.log", uuid::Uuid::new_v4()));
        let log = std::fs::File::create(&log_path).expect("log file");
        let wg_config_text = wg_config.display().to_string();
        let hub_arguments: &[&str] = if extra.contains(&"wg-config") {
            &[]
        } else {
            &["--wg-listen", "127.0.0.1:0"]
        };

        let mut child = Command::new(BINARY)
            .args(["serve", "--listen", "127.0.0.1:0", "--database", database])
            .args(["--wg-config", &wg_config_text])
            .args(hub_arguments)
            .args(extra)
            .env("RUST_LOG", "info")
            .envs(
                environment
                    .iter()
                    .map(|(name, value)| (*name, value.as_str())),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("camwire-server starts");

        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();

        let (hub_addr, url) = tokio::time::timeout(START_TIMEOUT, async {
            let mut hub_addr = None;
            while let Some(line) = lines.next_line().await.expect("stdout is readable") {
                if let Some(addr) = line.strip_prefix("wireguard hub listening on udp://") {
                    hub_addr = Some(addr.parse().expect("the hub line ends in a socket address"));
                }
                if let Some(url) = line.strip_prefix("listening on ") {
                    return (hub_addr, url.to_owned());
                }
            }
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("camwire-server exited before listening; log:\n{log}")
        })
        .await
        .expect("camwire-server listens in time");

        Self {
            child,
            url,
            hub_addr,
            log_path,
            wg_config: wg_config.to_owned(),
            _stdout: lines,
        }
    }

    /// Returns the UDP address of the embedded hub, from the stdout line that comes
    /// before the URL; `None` with `--peer-backend wg-config`.
    pub fn hub_addr(&self) -> Option<SocketAddr> {
        self.hub_addr
    }

    /// Kills the process with SIGKILL, as a crash would end it, and waits for it.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("child is killed");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).expect("log is readable")
    }

    /// Returns the WARN and ERROR lines of the log, for failure messages.
    pub fn problems(&self) -> String {
        self.log()
            .lines()
            .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Signs in at `base` and returns the access token.
pub async fn login(
    http: &Client,
    base: &str,
    username: &str,
    password: &str,
) -> Result<String, String> {
    let response = http
        .post(format!("{base}/login"))
        .json(&serde_json::json!({"username": username, "password": password}))
        .send()
        .await
        .map_err(|error| error.to_string())?;

    let status = response.status();
    if status != StatusCode::OK {
        return Err(format!(
            "login: {status} {}",
            response.text().await.unwrap_or_default()
        ));
    }
    let login: LoginResponse = response.json().await.map_err(|error| error.to_string())?;
    Ok(login.access_token.expose().to_owned())
}

/// Registers `public_key` at `base` and returns the allocated config.
pub async fn register(
    http: &Client,
    base: &str,
    token: &str,
    public_key: &str,
) -> Result<WireguardConfig, String> {
    let response = http
        .post(format!("{base}/wireguard/config"))
        .bearer_auth(token)
        .json(&serde_json::json!({"public_key": public_key}))
        .send()
        .await
        .map_err(|error| error.to_string())?;

    let status = response.status();
    if status != StatusCode::CREATED {
        return Err(format!(
            "register: {status} {}",
            response.text().await.unwrap_or_default()
        ));
    }
    response.json().await.map_err(|error| error.to_string())
}

/// Signs out at `base`.
pub async fn logout(http: &Client, base: &str, token: &str) -> Result<(), String> {
    let response = http
        .post(format!("{base}/logout"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|error| error.to_string())?;

    let status = response.status();
    if status != StatusCode::OK {
        return Err(format!(
            "logout: {status} {}",
            response.text().await.unwrap_or_default()
        ));
    }
    Ok(())
}

/// Returns the text of `GET /metrics` at `base`.
pub async fn metrics(http: &Client, base: &str) -> String {
    let response = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("request is sent");
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.expect("body is readable")
}
