//! The `camwire-server` binary as a child process: flags, `user add`, `--demo` and logs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use std::net::Ipv4Addr;

use camwire_api::{AdminPeerList, LoginResponse, LogoutResponse, Role, WireguardConfig};
use camwire_server::{ServerConfig, start};

use crate::common::{Database, TestServer, expect_error, expect_json, new_public_key, wait_until};
use crate::process::ServerProcess;

const BINARY: &str = env!("CARGO_BIN_EXE_camwire-server");

/// Upper bound for a debug build to migrate a new database and bind. It is far above
/// the time this takes on an idle machine, so that a loaded machine does not fail the test.
const START_TIMEOUT: Duration = Duration::from_secs(60);

fn database_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("camwire.db").display())
}

/// Runs `camwire-server ARGS` to completion with `stdin` as standard input.
async fn run(arguments: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BINARY)
        .args(arguments)
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("camwire-server starts");

    let mut input = child.stdin.take().expect("stdin is piped");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("stdin is writable");
    drop(input);

    tokio::time::timeout(START_TIMEOUT, child.wait_with_output())
        .await
        .expect("camwire-server exits in time")
        .expect("output is readable")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A `camwire-server serve --demo` child whose logs go to a file.
struct DemoServer {
    child: Child,
    url: String,
    /// Passwords of the demo users created on this start.
    passwords: HashMap<String, String>,
    /// Demo users that existed before this start.
    existing: Vec<String>,
    log_path: PathBuf,
    /// Kept open so that the server never writes into a closed pipe.
    _stdout: Lines<BufReader<ChildStdout>>,
}

impl DemoServer {
    async fn spawn(dir: &Path) -> Self {
        let log_path = dir.join(format!("server-{}.log", uuid::Uuid::new_v4()));
        let log = std::fs::File::create(&log_path).expect("log file");
        let database = database_url(dir);

        let mut child = Command::new(BINARY)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database",
                &database,
                "--wg-listen",
                "127.0.0.1:0",
                "--demo",
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("camwire-server starts");

        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let mut passwords = HashMap::new();
        let mut existing = Vec::new();

        let url = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await.expect("stdout is readable") {
                if let Some(url) = line.strip_prefix("listening on ") {
                    return url.to_owned();
                }

                if line.starts_with("wireguard hub listening on udp://127.0.0.1:") {
                    continue;
                }

                let words: Vec<&str> = line.split(' ').collect();
                match words.as_slice() {
                    ["demo", "user", name, "password", password] => {
                        passwords.insert((*name).to_owned(), (*password).to_owned());
                    }
                    [
                        "demo",
                        "user",
                        name,
                        "exists;",
                        "its",
                        "password",
                        "was",
                        "left",
                        "unchanged",
                    ] => {
                        existing.push((*name).to_owned());
                    }
                    _ => panic!("unexpected stdout line {line:?}"),
                }
            }
            panic!(
                "camwire-server exited before listening; log: {}",
                log_path.display()
            )
        })
        .await
        .expect("camwire-server listens in time");

        Self {
            child,
            url,
            passwords,
            existing,
            log_path,
            _stdout: lines,
        }
    }

    async fn stop(mut self) -> String {
        self.child.kill().await.expect("child is killed");
        std::fs::read_to_string(&self.log_path).expect("log is readable")
    }
}

#[tokio::test]
async fn demo_on_public_address_is_rejected() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let database = database_url(dir.path());

    let output = run(
        &[
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--database",
            &database,
            "--demo",
        ],
        "",
    )
    .await;

    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("--demo is only allowed on a loopback address"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("camwire.db").exists(),
        "nothing is created"
    );
}

#[tokio::test]
async fn user_add_creates_user_who_can_sign_in() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let database = database_url(dir.path());
    let arguments = [
        "user",
        "add",
        "carol",
        "--database",
        &database,
        "--password-stdin",
        "--display-name",
        "Carol Ann",
        "--email",
        "carol@example.com",
        "--role",
        "admin",
    ];

    let output = run(&arguments, "two words\n").await;

    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).starts_with("created user carol (admin)"));

    let mut config = ServerConfig::new(database);
    config.listen = "127.0.0.1:0".parse().expect("socket address");
    config.wg_listen = "127.0.0.1:0".parse().expect("socket address");
    let server = start(config).await.expect("server starts");
    let response = reqwest::Client::new()
        .post(format!("{}/login", server.url()))
        .json(&serde_json::json!({"username": "carol", "password": "two words"}))
        .send()
        .await
        .expect("request is sent");

    let login: LoginResponse = expect_json(response, StatusCode::OK).await;
    assert_eq!(login.user.display_name, "Carol Ann");
    assert_eq!(login.user.email, "carol@example.com");
    assert_eq!(login.user.role, Role::Admin);
    server.shutdown().await.expect("server stops");
}

#[tokio::test]
async fn user_add_duplicate_name_is_rejected() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let database = database_url(dir.path());
    let arguments = [
        "user",
        "add",
        "carol",
        "--database",
        &database,
        "--password-stdin",
    ];
    let first = run(&arguments, "secret\n").await;
    assert!(first.status.success(), "{}", text(&first.stderr));

    let second = run(&arguments, "other\n").await;

    let stderr = text(&second.stderr);
    assert!(!second.status.success());
    assert!(stderr.contains("user \"carol\" already exists"), "{stderr}");
}

#[tokio::test]
async fn user_add_needs_a_password() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let database = database_url(dir.path());

    let without_flag = run(
        &["user", "add", "carol", "--database", &database],
        "secret\n",
    )
    .await;
    let empty_stdin = run(
        &[
            "user",
            "add",
            "carol",
            "--database",
            &database,
            "--password-stdin",
        ],
        "",
    )
    .await;

    assert!(!without_flag.status.success());
    assert!(text(&without_flag.stderr).contains("--password-stdin"));
    assert!(!empty_stdin.status.success());
    assert!(text(&empty_stdin.stderr).contains("standard input is empty"));
}

#[tokio::test]
async fn user_add_rejects_name_with_space() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let database = database_url(dir.path());

    let output = run(
        &[
            "user",
            "add",
            "carol ann",
            "--database",
            &database,
            "--password-stdin",
        ],
        "x\n",
    )
    .await;

    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("invalid user name \"carol ann\""));
}

#[tokio::test]
async fn demo_logs_contain_ids_not_secrets() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = DemoServer::spawn(dir.path()).await;
    let http = reqwest::Client::new();
    let password = server.passwords["alice"].clone();
    assert_eq!(server.passwords.len(), 3);

    // A whole sign-in, allocation and sign-out.
    let response = http
        .post(format!("{}/login", server.url))
        .json(&serde_json::json!({"username": "alice", "password": password}))
        .send()
        .await
        .expect("request is sent");
    let login: LoginResponse = expect_json(response, StatusCode::OK).await;
    let token = login.access_token.expose().to_owned();
    assert_eq!(login.user.display_name, "Alice Liddell");
    assert_eq!(login.user.email, "alice@example.com");

    let public_key = new_public_key();
    let response = http
        .post(format!("{}/wireguard/config", server.url))
        .bearer_auth(&token)
        .json(&serde_json::json!({"public_key": public_key}))
        .send()
        .await
        .expect("request is sent");
    let config: WireguardConfig = expect_json(response, StatusCode::CREATED).await;

    let response = http
        .post(format!("{}/logout", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request is sent");
    expect_json::<LogoutResponse>(response, StatusCode::OK).await;

    let server_private_key = std::fs::read_to_string(dir.path().join("wg0.conf"))
        .expect("config file")
        .lines()
        .find_map(|line| line.strip_prefix("PrivateKey = ").map(str::to_owned))
        .expect("config file has the server key");
    let log = server.stop().await;

    for (name, secret) in [
        ("access token", token.as_str()),
        ("alice's password", password.as_str()),
        ("device public key", public_key.as_str()),
        ("server private key", server_private_key.as_str()),
    ] {
        assert!(!log.contains(secret), "the log contains the {name}:\n{log}");
    }

    let user_id = format!("user_id={}", login.user.id);
    let address = format!("address={}", config.address.addr());
    let line_with = |message: &str| {
        log.lines()
            .find(|line| line.contains(" INFO ") && line.contains(message))
            .unwrap_or_else(|| panic!("no INFO line {message:?} in:\n{log}"))
            .to_owned()
    };

    let signed_in = line_with("signed in");
    let allocated = line_with("peer allocated");
    let released = line_with("peer released");
    let signed_out = line_with("signed out");

    assert!(signed_in.contains(&user_id), "{signed_in}");
    assert!(signed_in.contains("session_id="), "{signed_in}");
    assert!(allocated.contains(&user_id), "{allocated}");
    assert!(allocated.contains(&address), "{allocated}");
    assert!(allocated.contains("key_fingerprint="), "{allocated}");
    assert!(released.contains(&address), "{released}");
    assert!(signed_out.contains(&user_id), "{signed_out}");
    assert!(signed_out.contains("outcome=\"revoked\""), "{signed_out}");
}

/// Signs in at `url` and returns the status.
async fn login_status(url: &str, username: &str, password: &str) -> StatusCode {
    reqwest::Client::new()
        .post(format!("{url}/login"))
        .json(&serde_json::json!({"username": username, "password": password}))
        .send()
        .await
        .expect("request is sent")
        .status()
}

#[tokio::test]
async fn demo_restart_keeps_passwords() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let first = DemoServer::spawn(dir.path()).await;
    let first_passwords = first.passwords.clone();
    first.stop().await;

    let second = DemoServer::spawn(dir.path()).await;

    assert_eq!(first_passwords.len(), 3);
    assert!(second.passwords.is_empty(), "{:?}", second.passwords);
    assert_eq!(second.existing, ["alice", "bob", "admin"]);
    for (name, password) in &first_passwords {
        assert_eq!(
            login_status(&second.url, name, password).await,
            StatusCode::OK,
            "{name}"
        );
    }
    second.stop().await;
}

#[tokio::test]
async fn demo_keeps_a_real_users_password() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let database = database_url(dir.path());
    let added = run(
        &[
            "user",
            "add",
            "alice",
            "--database",
            &database,
            "--password-stdin",
            "--role",
            "admin",
        ],
        "alice's own password\n",
    )
    .await;
    assert!(added.status.success(), "{}", text(&added.stderr));

    let server = DemoServer::spawn(dir.path()).await;

    assert_eq!(server.existing, ["alice"]);
    assert!(!server.passwords.contains_key("alice"));
    assert_eq!(
        login_status(&server.url, "alice", "alice's own password").await,
        StatusCode::OK
    );
    for name in ["bob", "admin"] {
        let password = &server.passwords[name];
        assert_eq!(
            login_status(&server.url, name, password).await,
            StatusCode::OK,
            "{name}"
        );
    }
    let log = server.stop().await;
    assert!(!log.contains("alice's own password"), "{log}");
}

on_both_databases!(peers_commands_list_revoke_and_show_pool);

async fn peers_commands_list_revoke_and_show_pool(database: Database) {
    let server = TestServer::start_with(database, |config| {
        config.pool = "10.13.0.0/29".parse().expect("CIDR");
    })
    .await;
    let url = server.database.url.clone();
    let password = server.add_user("alice").await;
    let laptop = server.login("alice", &password).await;
    let phone = server.login("alice", &password).await;
    let laptop_key = new_public_key();
    let phone_key = new_public_key();
    server.register(&laptop, &laptop_key).await;
    server.register(&phone, &phone_key).await;

    let json = run(&["peers", "list", "--json", "--database", &url], "").await;
    let table = run(&["peers", "list", "--database", &url], "").await;
    let pool = run(&["pool", "--database", &url], "").await;

    assert!(json.status.success(), "{}", text(&json.stderr));
    let list: AdminPeerList = serde_json::from_slice(&json.stdout).expect("JSON list");
    assert_eq!(list.peers.len(), 2);
    assert_eq!(list.peers[0].public_key, laptop_key);
    assert_eq!(list.peers[0].username, "alice");
    let table = text(&table.stdout);
    assert!(
        table.contains("10.13.0.2") && table.contains("10.13.0.3"),
        "{table}"
    );
    assert!(table.contains("2 peers"), "{table}");
    let pool = text(&pool.stdout);
    for line in ["size 5", "allocated 2", "free 3", "lowest_free 10.13.0.4"] {
        assert!(
            pool.lines().any(|printed| printed == line),
            "{line:?} in:\n{pool}"
        );
    }

    let revoke = run(
        &["peers", "revoke", &list.peers[0].id, "--database", &url],
        "",
    )
    .await;

    assert!(revoke.status.success(), "{}", text(&revoke.stderr));
    assert!(
        text(&revoke.stdout).contains("10.13.0.2 freed"),
        "{}",
        text(&revoke.stdout)
    );
    // The running server applies the change made by another process to its back end.
    let applied = wait_until(Duration::from_secs(10), || async {
        !server.wg_config_text().contains(&laptop_key)
    })
    .await;
    assert!(
        applied,
        "the server kept the revoked peer:\n{}",
        server.wg_config_text()
    );
    assert!(server.wg_config_text().contains(&phone_key));
    let hub_keys: Vec<String> = server
        .hub()
        .peers()
        .iter()
        .map(|peer| peer.public_key.to_base64())
        .collect();
    assert_eq!(hub_keys, vec![phone_key], "the hub applies the change too");
    let me = server.get("/me", &laptop).await;
    expect_error(me, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let free = server.db().list_free_addresses().await.expect("free");
    assert_eq!(free.first(), Some(&Ipv4Addr::new(10, 13, 0, 2)));

    let unknown = run(&["peers", "revoke", "no-such-peer", "--database", &url], "").await;
    let unknown_stderr = text(&unknown.stderr);
    assert!(!unknown.status.success());
    assert!(
        unknown_stderr.contains(
            "no peer with the id \"no-such-peer\"; `camwire-server peers list` lists the peers"
        ),
        "{unknown_stderr}"
    );
    assert!(
        !unknown_stderr.contains("GET /admin/peers"),
        "{unknown_stderr}"
    );
}

#[tokio::test]
async fn pool_command_needs_a_started_database() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let database = database_url(dir.path());
    let added = run(
        &[
            "user",
            "add",
            "carol",
            "--database",
            &database,
            "--password-stdin",
        ],
        "secret\n",
    )
    .await;
    assert!(added.status.success(), "{}", text(&added.stderr));

    let output = run(&["pool", "--database", &database], "").await;

    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("has no address pool yet"),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test]
async fn inspecting_commands_do_not_create_a_database() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("camwire.db");
    let database = database_url(dir.path());

    for arguments in [
        vec!["peers", "list", "--database", &database],
        vec!["peers", "list", "--json", "--database", &database],
        vec!["peers", "revoke", "some-id", "--database", &database],
        vec!["pool", "--database", &database],
    ] {
        let output = run(&arguments, "").await;

        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{arguments:?}");
        assert!(
            stderr.contains(&format!(
                "database {} not found; pass --database with the server's database",
                path.display()
            )),
            "{arguments:?}: {stderr}"
        );
        assert!(!text(&output.stdout).contains("0 peers"), "{arguments:?}");
        assert!(!path.exists(), "{arguments:?} created the database");
    }
}

/// Returns `serve --listen 127.0.0.1:0 --database DATABASE EXTRA...`.
fn serve_arguments<'a>(database: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut arguments = vec!["serve", "--listen", "127.0.0.1:0", "--database", database];
    arguments.extend_from_slice(extra);
    arguments
}

#[tokio::test]
async fn serve_rejects_invalid_hub_options() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let database = database_url(dir.path());
    let busy = std::net::UdpSocket::bind("127.0.0.1:0").expect("UDP socket");
    let busy_addr = busy.local_addr().expect("local address").to_string();
    let cases: [(Vec<&str>, &str); 6] = [
        (
            serve_arguments(&database, &["--forward", "554"]),
            "invalid --forward \"554\": missing '='",
        ),
        (
            serve_arguments(&database, &["--forward", "554=localhost:8554"]),
            "the target must be an IP address and port",
        ),
        (
            serve_arguments(
                &database,
                &[
                    "--peer-backend",
                    "wg-config",
                    "--forward",
                    "554=127.0.0.1:8554",
                ],
            ),
            "--forward needs the embedded back end",
        ),
        (
            serve_arguments(
                &database,
                &["--peer-backend", "wg-config", "--wg-listen", "127.0.0.1:0"],
            ),
            "--wg-listen sets the embedded hub's address",
        ),
        (
            serve_arguments(
                &database,
                &["--wg-interface", "wg0", "--wg-listen", "127.0.0.1:0"],
            ),
            "--wg-interface needs --peer-backend wg-config",
        ),
        (
            serve_arguments(&database, &["--wg-listen", &busy_addr]),
            "pass --wg-listen with a free address",
        ),
    ];

    for (arguments, expected) in cases {
        let output = run(&arguments, "").await;

        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{arguments:?} started");
        assert!(stderr.contains(expected), "{arguments:?}: {stderr}");
    }
    drop(busy);
}

#[tokio::test]
async fn unusable_pool_is_rejected_before_storing() {
    for (pool, range) in [
        ("224.0.0.0/24", "multicast range 224.0.0.0/4"),
        ("255.255.255.0/24", "broadcast address 255.255.255.255"),
        ("127.13.0.0/16", "loopback range 127.0.0.0/8"),
        ("0.0.0.0/16", "unspecified"),
        ("169.254.0.0/16", "link-local range 169.254.0.0/16"),
        ("240.0.0.0/16", "reserved range 240.0.0.0/4"),
    ] {
        let dir = tempfile::tempdir().expect("temporary directory");
        let database = database_url(dir.path());

        let output = run(
            &serve_arguments(&database, &["--wg-listen", "127.0.0.1:0", "--pool", pool]),
            "",
        )
        .await;

        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{pool} started");
        assert!(!stderr.contains("panicked"), "{pool}: {stderr}");
        assert!(
            stderr.contains(&format!("invalid address pool {pool}")),
            "{pool}: {stderr}"
        );
        assert!(stderr.contains(range), "{pool}: {stderr}");
        assert!(stderr.contains("such as 10.13.0.0/16"), "{pool}: {stderr}");
        assert!(
            !dir.path().join("camwire.db").exists(),
            "{pool}: the database is created"
        );
    }
}

#[tokio::test]
async fn public_pool_logs_a_warning() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let database = database_url(dir.path());
    let wg_config = dir.path().join("wg0.conf");

    let server = ServerProcess::spawn(&database, &wg_config, &["--pool", "198.51.100.0/24"]).await;

    let log = server.log();
    let warning = log
        .lines()
        .find(|line| line.contains(" WARN ") && line.contains("public range"))
        .unwrap_or_else(|| panic!("no warning about the public pool in:\n{log}"));
    assert!(warning.contains("pool=198.51.100.0/24"), "{warning}");
    assert!(warning.contains("--pool 10.13.0.0/16"), "{warning}");
}

#[tokio::test]
async fn private_pool_logs_no_warning() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let database = database_url(dir.path());
    let wg_config = dir.path().join("wg0.conf");

    let server = ServerProcess::spawn(&database, &wg_config, &["--pool", "172.20.0.0/24"]).await;

    let log = server.log();
    assert!(!log.contains("public range"), "{log}");
}

#[tokio::test]
async fn peer_id_with_newline_stays_in_one_log_line() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = DemoServer::spawn(dir.path()).await;
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{}/login", server.url))
        .json(&serde_json::json!({"username": "admin", "password": server.passwords["admin"]}))
        .send()
        .await
        .expect("request is sent");
    let login: LoginResponse = expect_json(response, StatusCode::OK).await;

    let response = http
        .delete(format!(
            "{}/admin/peers/x%0A2030-01-01T00:00:00.000000Z%20%20INFO%20forged%20line",
            server.url
        ))
        .bearer_auth(login.access_token.expose())
        .send()
        .await
        .expect("request is sent");

    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let log = server.stop().await;
    assert!(
        !log.lines().any(|line| line.starts_with("2030-01-01")),
        "a forged line:\n{log}"
    );
    let revoking = log
        .lines()
        .find(|line| line.contains("revoking a peer"))
        .unwrap_or_else(|| panic!("no line \"revoking a peer\" in:\n{log}"));
    assert!(
        revoking.contains(r#"peer_id="x\n2030-01-01T00:00:00.000000Z  INFO forged line""#),
        "{revoking}"
    );
}

#[tokio::test]
async fn start_errors_name_the_path_and_fix() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let database = database_url(dir.path());
    let database_path = dir.path().join("camwire.db");
    let missing = dir.path().join("missing");
    let wg_config = dir.path().join("wg0.conf").display().to_string();
    let added = run(
        &[
            "user",
            "add",
            "carol",
            "--database",
            &database,
            "--password-stdin",
        ],
        "secret\n",
    )
    .await;
    assert!(added.status.success(), "{}", text(&added.stderr));
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("TCP listener");
    let busy_addr = busy.local_addr().expect("local address").to_string();
    let cases: [(String, &str, Vec<String>); 7] = [
        (
            format!("sqlite://{}", missing.join("c.db").display()),
            "127.0.0.1:0",
            vec![
                format!("the directory {} of the SQLite database", missing.display()),
                "does not exist; create it".into(),
            ],
        ),
        (
            format!("sqlite://{}", dir.path().display()),
            "127.0.0.1:0",
            vec![format!(
                "the SQLite database path {} is a directory",
                dir.path().display()
            )],
        ),
        (
            format!("{database}?mode=ro"),
            "127.0.0.1:0",
            vec![
                format!(
                    "the SQLite database {} is read-only",
                    database_path.display()
                ),
                "make the file and its directory writable".into(),
            ],
        ),
        (
            database.clone(),
            &busy_addr,
            vec![
                format!("failed to listen on {busy_addr}"),
                "pass --listen with a free address".into(),
            ],
        ),
        (
            "sqlite://".into(),
            "127.0.0.1:0",
            vec!["the database URL \"sqlite://\" names no file".into()],
        ),
        (
            "sqlite://:memory:".into(),
            "127.0.0.1:0",
            vec!["in-memory SQLite database".into(), "sqlite://PATH".into()],
        ),
        (
            "sqlite::memory:".into(),
            "127.0.0.1:0",
            vec!["in-memory SQLite database".into(), "sqlite://PATH".into()],
        ),
    ];

    for (url, listen, expected) in cases {
        let output = run(
            &[
                "serve",
                "--listen",
                listen,
                "--database",
                &url,
                "--wg-listen",
                "127.0.0.1:0",
                "--wg-config",
                &wg_config,
            ],
            "",
        )
        .await;

        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{url} started");
        for part in expected {
            assert!(stderr.contains(&part), "{url}: {part:?} in {stderr}");
        }
        assert!(
            !stderr.contains("failed to read the peers"),
            "{url}: {stderr}"
        );
    }
    assert!(!missing.exists(), "the missing directory is created");
    drop(busy);
}

#[tokio::test]
async fn session_ttl_over_a_year_is_rejected() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let database = database_url(dir.path());

    let output = run(
        &serve_arguments(
            &database,
            &[
                "--wg-listen",
                "127.0.0.1:0",
                "--session-ttl",
                "99999999999999",
            ],
        ),
        "",
    )
    .await;

    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("--session-ttl 99999999999999 is longer than the maximum"),
        "{stderr}"
    );
    assert!(stderr.contains("365 days"), "{stderr}");
    assert!(
        !dir.path().join("camwire.db").exists(),
        "the database is created"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn database_files_are_private() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().expect("temporary directory");
    let database = database_url(dir.path());
    let wg_config = dir.path().join("wg0.conf");

    let server = ServerProcess::spawn(&database, &wg_config, &[]).await;

    for name in ["camwire.db", "camwire.db-wal", "camwire.db-shm", "wg0.conf"] {
        let metadata = std::fs::metadata(dir.path().join(name))
            .unwrap_or_else(|error| panic!("{name}: {error}\n{}", server.log()));
        let mode = format!("{:o}", metadata.permissions().mode() & 0o777);
        assert_eq!(mode, "600", "{name}");
    }
}
