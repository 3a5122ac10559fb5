//! A real server on a loopback port with its own SQLite file and config file, and an
//! HTTP client for it.

use std::path::{Path, PathBuf};

use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use tempfile::TempDir;

use camwire_api::{ErrorBody, LoginResponse, LogoutResponse, Password, Role, WireguardConfig};
use camwire_server::db::{Db, Table};
use camwire_server::users::{NewUser, add_user};
use camwire_server::wg_conf::{self, WgConfigFile};
use camwire_server::{RunningServer, ServerConfig, start};
use camwire_tunnel::{Hub, PrivateKey};

/// Environment variable with the URL of a PostgreSQL server on which the tests may create
/// databases, such as `postgres://postgres@127.0.0.1:55432/postgres`. `cargo xtask test`
/// starts a throwaway server and sets it.
pub const POSTGRES_URL_VARIABLE: &str = "CAMWIRE_TEST_POSTGRES_URL";

/// The database kind that a test runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite,
    /// A new database on the PostgreSQL server at this URL.
    Postgres {
        server_url: String,
    },
}

impl Database {
    /// Returns the PostgreSQL server of [`POSTGRES_URL_VARIABLE`], or prints one line
    /// saying that `test` is skipped and returns `None` when the variable is not set.
    pub fn postgres(test: &str) -> Option<Self> {
        match std::env::var(POSTGRES_URL_VARIABLE) {
            Ok(server_url) if !server_url.is_empty() => Some(Self::Postgres { server_url }),
            _ => {
                // Straight to stderr, past the test harness's capture, so that the skip
                // shows in a normal `cargo test` run.
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "skipped {test} on PostgreSQL: {POSTGRES_URL_VARIABLE} is not set"
                );
                None
            }
        }
    }

    /// Creates an empty database of this kind; a SQLite file goes into `dir`.
    pub async fn create(&self, dir: &Path) -> TestDatabase {
        match self {
            Database::Sqlite => TestDatabase {
                url: format!("sqlite://{}", dir.join("camwire.db").display()),
                postgres: None,
            },
            Database::Postgres { server_url } => create_postgres_database(server_url).await,
        }
    }
}

/// A database for one test. A PostgreSQL database is dropped when this is dropped, so a
/// long run leaves no databases behind.
#[derive(Debug)]
pub struct TestDatabase {
    pub url: String,
    /// Server URL and name of a PostgreSQL database.
    postgres: Option<(String, String)>,
}

/// Creates a database with a random name on the server of `server_url`.
async fn create_postgres_database(server_url: &str) -> TestDatabase {
    use sqlx::Connection;

    sqlx::any::install_default_drivers();
    let name = format!("camwire_test_{}", uuid::Uuid::new_v4().simple());

    let mut connection = sqlx::AnyConnection::connect(server_url)
        .await
        .expect("PostgreSQL server is reachable");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut connection)
        .await
        .expect("database is created");
    connection.close().await.expect("connection closes");

    let (base, _database) = server_url.rsplit_once('/').expect("URL ends in /DATABASE");
    TestDatabase {
        url: format!("{base}/{name}"),
        postgres: Some((server_url.to_owned(), name)),
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((server_url, name)) = self.postgres.take() else {
            return;
        };

        // Drop runs inside the test's runtime, which cannot block on a future, so the
        // database is dropped from a thread with its own runtime.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime
                .block_on(async {
                    use sqlx::Connection;

                    let mut connection = sqlx::AnyConnection::connect(&server_url).await?;
                    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut connection)
                        .await?;
                    connection.close().await?;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                })
                .map_err(|error| std::io::Error::other(error.to_string()))
        })
        .join();

        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: failed to drop the test database {:?}", self.url);
        }
    }
}

pub struct TestServer {
    /// Directory of the database and the config file; removed on drop.
    pub dir: TempDir,
    pub config: ServerConfig,
    server: Option<RunningServer>,
    pub http: Client,
    /// Declared last, so that it is dropped after the server.
    pub database: TestDatabase,
}

/// Row counts of every table that a request may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowCounts {
    pub users: i64,
    pub sessions: i64,
    pub peers: i64,
    pub free_addresses: i64,
    pub pending_removals: i64,
}

impl TestServer {
    pub async fn start(database: Database) -> Self {
        Self::start_with(database, |_| {}).await
    }

    /// Starts a server with the defaults on `127.0.0.1:0`, its WireGuard hub on another
    /// free UDP port, and a new database of the kind `database`, after `adjust` changed
    /// the config.
    pub async fn start_with(database: Database, adjust: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let database = database.create(dir.path()).await;

        let mut config = ServerConfig::new(database.url.clone());
        config.listen = "127.0.0.1:0".parse().expect("socket address");
        config.wg_listen = "127.0.0.1:0".parse().expect("socket address");
        config.wg_config_path = dir.path().join("wg0.conf");
        adjust(&mut config);

        let server = start(config.clone()).await.expect("server starts");

        Self {
            dir,
            config,
            server: Some(server),
            http: Client::new(),
            database,
        }
    }

    pub fn server(&self) -> &RunningServer {
        self.server.as_ref().expect("server is running")
    }

    pub fn db(&self) -> &Db {
        self.server().db()
    }

    /// Returns the server's embedded WireGuard hub.
    pub fn hub(&self) -> &Hub {
        self.server()
            .state()
            .hub()
            .expect("the server runs the embedded back end")
    }

    /// Stops the server and keeps its files.
    pub async fn stop(&mut self) {
        let server = self.server.take().expect("server is running");
        server.shutdown().await.expect("server stops cleanly");
    }

    /// Stops the server and starts it again on the same files, after `adjust` changed the config.
    pub async fn restart_with(&mut self, adjust: impl FnOnce(&mut ServerConfig)) {
        let server = self.server.take().expect("server is running");
        server.shutdown().await.expect("server stops cleanly");

        adjust(&mut self.config);
        self.server = Some(
            start(self.config.clone())
                .await
                .expect("server starts again"),
        );
    }

    pub async fn restart(&mut self) {
        self.restart_with(|_| {}).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server().url())
    }

    pub fn wg_config_path(&self) -> PathBuf {
        self.config.wg_config_path.clone()
    }

    pub fn wg_config_text(&self) -> String {
        std::fs::read_to_string(self.wg_config_path()).expect("config file is readable")
    }

    pub fn wg_config_file(&self) -> WgConfigFile {
        wg_conf::parse(&self.wg_config_text()).expect("config file parses")
    }

    /// Creates a user with the role `user` and returns the password.
    pub async fn add_user(&self, username: &str) -> String {
        create_user(self.db(), username, Role::User).await
    }

    /// Creates a user with the role `admin`, signs in and returns the access token.
    pub async fn admin_token(&self) -> String {
        let password = create_user(self.db(), "root", Role::Admin).await;
        self.login("root", &password).await
    }

    /// Returns the text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        let response = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("request is sent");

        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.expect("body is readable")
    }

    pub async fn counts(&self) -> RowCounts {
        let db = self.db();
        let count = |table| async move { db.count_rows(table).await.expect("count") };

        RowCounts {
            users: count(Table::Users).await,
            sessions: count(Table::Sessions).await,
            peers: count(Table::Peers).await,
            free_addresses: count(Table::FreeAddresses).await,
            pending_removals: count(Table::PendingRemovals).await,
        }
    }

    pub async fn login_response(&self, username: &str, password: &str) -> Response {
        self.http
            .post(self.url("/login"))
            .json(&serde_json::json!({"username": username, "password": password}))
            .send()
            .await
            .expect("request is sent")
    }

    /// Signs in and returns the access token.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let response = self.login_response(username, password).await;
        let login: LoginResponse = expect_json(response, StatusCode::OK).await;

        login.access_token.expose().to_owned()
    }

    pub fn authorized(&self, builder: RequestBuilder, token: &str) -> RequestBuilder {
        builder.header("Authorization", format!("Bearer {token}"))
    }

    pub async fn register_response(&self, token: &str, public_key: &str) -> Response {
        self.authorized(self.http.post(self.url("/wireguard/config")), token)
            .json(&serde_json::json!({"public_key": public_key}))
            .send()
            .await
            .expect("request is sent")
    }

    /// Registers `public_key` and returns the allocated config.
    pub async fn register(&self, token: &str, public_key: &str) -> WireguardConfig {
        let response = self.register_response(token, public_key).await;

        expect_json(response, StatusCode::CREATED).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.authorized(self.http.get(self.url(path)), token)
            .send()
            .await
            .expect("request is sent")
    }

    pub async fn delete_config(&self, token: &str) -> Response {
        self.authorized(self.http.delete(self.url("/wireguard/config")), token)
            .send()
            .await
            .expect("request is sent")
    }

    pub async fn logout_response(&self, token: &str) -> Response {
        self.authorized(self.http.post(self.url("/logout")), token)
            .send()
            .await
            .expect("request is sent")
    }

    pub async fn logout(&self, token: &str) -> LogoutResponse {
        let response = self.logout_response(token).await;

        expect_json(response, StatusCode::OK).await
    }
}

/// Creates a user with `role` in `db` and returns the password.
pub async fn create_user(db: &Db, username: &str, role: Role) -> String {
    let password = format!("{username}-correct-horse");

    let user = NewUser {
        username: username.to_owned(),
        password: Password::new(password.clone()),
        display_name: None,
        email: None,
        role,
    };
    add_user(db, user).await.expect("user is created");

    password
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub async fn wait_until<F, Fut>(timeout: std::time::Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;

    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Returns the public keys of a wg-quick config file's peers, in base64.
pub fn config_file_keys(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("config file is readable");
    let file = wg_conf::parse(&text).expect("config file parses");

    file.peers
        .iter()
        .map(|peer| peer.public_key.to_base64())
        .collect()
}

/// Returns a new device public key in base64.
pub fn new_public_key() -> String {
    PrivateKey::generate().public_key().to_base64()
}

/// Checks the status and parses the body, printing the body when either is unexpected.
pub async fn expect_json<T: DeserializeOwned>(response: Response, expected: StatusCode) -> T {
    let status = response.status();
    let body = response.text().await.expect("body is readable");

    assert_eq!(status, expected, "unexpected status; body: {body}");
    serde_json::from_str(&body).unwrap_or_else(|error| panic!("invalid body {body:?}: {error}"))
}

/// Checks that `response` is an API error with `status` and `code`, and returns its message.
pub async fn expect_error(response: Response, status: StatusCode, code: &str) -> String {
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();

    let body: ErrorBody = expect_json(response, status).await;

    assert_eq!(content_type, "application/json");
    assert_eq!(body.error, code, "message: {}", body.message);
    assert!(!body.message.is_empty());
    body.message
}
