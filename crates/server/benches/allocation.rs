//! Sign-in and allocation latency with the address pool empty and 90 % full, and
//! sign-in throughput at 50 concurrent clients, on SQLite and on PostgreSQL.
//!
//! Run with `cargo bench -p camwire-server --bench allocation`. PostgreSQL runs when
//! `CAMWIRE_TEST_POSTGRES_URL` names a server on which the benchmark may create a
//! database; otherwise it is skipped with a note. The pool is a /16 (65,533 client
//! addresses); the 90 % fill is inserted into the database directly.
//!
//! The server runs in this process on a loopback port, with `MemoryBackend`, which
//! applies peers in memory: the figures show the database and the pool, not a
//! WireGuard back end's cost.

use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use reqwest::{Client, StatusCode};

use camwire_api::{LoginResponse, Password, Role};
use camwire_server::backend::{MemoryBackend, PeerBackend};
use camwire_server::config::BackendChoice;
use camwire_server::db::{Db, DbKind, unix_now};
use camwire_server::users::{NewUser, add_user};
use camwire_server::{RunningServer, ServerConfig, start};
use camwire_tunnel::PrivateKey;

const POOL: &str = "10.13.0.0/16";
const POOL_SIZE: usize = 65_533;
const FULL_SHARE: f64 = 0.9;
const LATENCY_SAMPLES: usize = 300;
/// Unmeasured cycles before each measurement, so that caches and the query planner settle.
const WARM_UP_CYCLES: usize = 30;
const CLIENTS: usize = 50;
const CYCLES_PER_CLIENT: usize = 20;
/// Rows per INSERT of the fill.
const FILL_CHUNK: usize = 500;
const POSTGRES_URL_VARIABLE: &str = "CAMWIRE_TEST_POSTGRES_URL";

/// Latency figures of one pool state, in milliseconds.
struct Latencies {
    sign_in_and_allocation: Vec<f64>,
    allocation: Vec<f64>,
}

struct Row {
    database: &'static str,
    pool: &'static str,
    latencies: Latencies,
    sign_ins_per_second: f64,
}

fn percentile(samples: &[f64], share: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let index = ((sorted.len() as f64 - 1.0) * share).round() as usize;
    sorted[index]
}

async fn start_server(database_url: &str, dir: &std::path::Path) -> RunningServer {
    let backend: Arc<dyn PeerBackend> = Arc::new(MemoryBackend::new());
    let mut config = ServerConfig::new(database_url);
    config.listen = "127.0.0.1:0".parse().expect("socket address");
    config.pool = POOL.parse().expect("CIDR");
    config.wg_config_path = dir.join("wg0.conf");
    config.backend = BackendChoice::Provided(backend);

    start(config).await.expect("server starts")
}

async fn login(http: &Client, base: &str, username: &str) -> String {
    let response = http
        .post(format!("{base}/login"))
        .json(&serde_json::json!({"username": username, "password": "bench-password"}))
        .send()
        .await
        .expect("login is sent");
    assert_eq!(response.status(), StatusCode::OK);
    let login: LoginResponse = response.json().await.expect("login body");
    login.access_token.expose().to_owned()
}

async fn register(http: &Client, base: &str, token: &str) {
    let key = PrivateKey::generate().public_key().to_base64();
    let response = http
        .post(format!("{base}/wireguard/config"))
        .bearer_auth(token)
        .json(&serde_json::json!({"public_key": key}))
        .send()
        .await
        .expect("register is sent");
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "{:?}",
        response.text().await
    );
}

async fn logout(http: &Client, base: &str, token: &str) {
    let response = http
        .post(format!("{base}/logout"))
        .bearer_auth(token)
        .send()
        .await
        .expect("logout is sent");
    assert_eq!(response.status(), StatusCode::OK);
}

/// Measures sign-in plus allocation, and the allocation request alone, one client at a
/// time. Each cycle signs out again, so the pool's fill stays the same.
async fn measure_latencies(base: &str) -> Latencies {
    let http = Client::new();
    let mut latencies = Latencies {
        sign_in_and_allocation: Vec::with_capacity(LATENCY_SAMPLES),
        allocation: Vec::with_capacity(LATENCY_SAMPLES),
    };

    for cycle in 0..WARM_UP_CYCLES {
        let token = login(&http, base, &format!("bench{}", cycle % CLIENTS)).await;
        register(&http, base, &token).await;
        logout(&http, base, &token).await;
    }

    for sample in 0..LATENCY_SAMPLES {
        let username = format!("bench{}", sample % CLIENTS);

        let started = Instant::now();
        let token = login(&http, base, &username).await;
        let signed_in = Instant::now();
        register(&http, base, &token).await;
        let allocated = Instant::now();
        logout(&http, base, &token).await;

        latencies
            .sign_in_and_allocation
            .push((allocated - started).as_secs_f64() * 1e3);
        latencies
            .allocation
            .push((allocated - signed_in).as_secs_f64() * 1e3);
    }

    latencies
}

/// Runs `CLIENTS` clients that each sign in, allocate and sign out `CYCLES_PER_CLIENT`
/// times, and returns the sign-ins per second.
async fn measure_throughput(base: &str) -> f64 {
    let started = Instant::now();

    let clients: Vec<_> = (0..CLIENTS)
        .map(|index| {
            let base = base.to_owned();
            tokio::spawn(async move {
                let http = Client::new();
                let username = format!("bench{index}");
                for _ in 0..CYCLES_PER_CLIENT {
                    let token = login(&http, &base, &username).await;
                    register(&http, &base, &token).await;
                    logout(&http, &base, &token).await;
                }
            })
        })
        .collect();
    for client in clients {
        client.await.expect("client ends");
    }

    (CLIENTS * CYCLES_PER_CLIENT) as f64 / started.elapsed().as_secs_f64()
}

/// Fills the pool to `FULL_SHARE` with peers inserted directly: one filler user, one
/// session per peer, the lowest addresses taken out of the free table.
async fn fill_pool(db: &Db) -> usize {
    let count = (POOL_SIZE as f64 * FULL_SHARE) as usize;
    let user = add_user(
        db,
        NewUser {
            username: "filler".into(),
            password: Password::new("filler-password"),
            display_name: None,
            email: None,
            role: Role::User,
        },
    )
    .await
    .expect("filler user");
    let now = unix_now();
    let first_client = u32::from(std::net::Ipv4Addr::new(10, 13, 0, 2));

    let mut transaction = db.pool().begin().await.expect("transaction");
    for chunk_start in (0..count).step_by(FILL_CHUNK) {
        let chunk: Vec<usize> = (chunk_start..(chunk_start + FILL_CHUNK).min(count)).collect();

        let session_rows: Vec<String> = chunk
            .iter()
            .map(|index| format!("('fill-s{index}', $1, 'fill-h{index}', $2, $3)"))
            .collect();
        sqlx::query(&format!(
            "INSERT INTO sessions (id, user_id, token_hash, created_at, expires_at) VALUES {}",
            session_rows.join(", ")
        ))
        .bind(&user.id)
        .bind(now)
        .bind(now + 86_400)
        .execute(&mut *transaction)
        .await
        .expect("sessions are inserted");

        let mut peer_rows = Vec::with_capacity(chunk.len());
        for index in &chunk {
            let mut key = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut key);
            let address = i64::from(first_client) + *index as i64;
            peer_rows.push(format!(
                "('fill-p{index}', 'fill-s{index}', $1, '{}', {address}, $2)",
                STANDARD.encode(key)
            ));
        }
        sqlx::query(&format!(
            "INSERT INTO peers (id, session_id, user_id, public_key, address, created_at) VALUES {}",
            peer_rows.join(", ")
        ))
        .bind(&user.id)
        .bind(now)
        .execute(&mut *transaction)
        .await
        .expect("peers are inserted");
    }

    let last = i64::from(first_client) + count as i64 - 1;
    sqlx::query("DELETE FROM free_addresses WHERE address >= $1 AND address <= $2")
        .bind(i64::from(first_client))
        .bind(last)
        .execute(&mut *transaction)
        .await
        .expect("free rows are deleted");
    transaction.commit().await.expect("fill commits");

    // PostgreSQL's autovacuum vacuums and analyzes a pool that fills over days. The bulk
    // fill does the same at once, so that the measurement does not walk the 59,000 dead
    // index entries of the deleted free rows.
    let maintenance = match db.kind() {
        DbKind::Postgres => "VACUUM ANALYZE",
        DbKind::Sqlite => "ANALYZE",
    };
    sqlx::query(maintenance)
        .execute(db.pool())
        .await
        .expect("maintenance runs");

    count
}

async fn bench_database(database: &'static str, url: &str) -> Vec<Row> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = Db::connect(url).await.expect("database opens");
    for index in 0..CLIENTS {
        let user = NewUser {
            username: format!("bench{index}"),
            password: Password::new("bench-password"),
            display_name: None,
            email: None,
            role: Role::User,
        };
        add_user(&db, user).await.expect("bench user");
    }

    let mut rows = Vec::new();

    let server = start_server(url, dir.path()).await;
    let latencies = measure_latencies(&server.url()).await;
    let sign_ins_per_second = measure_throughput(&server.url()).await;
    server.shutdown().await.expect("server stops");
    rows.push(Row {
        database,
        pool: "empty",
        latencies,
        sign_ins_per_second,
    });

    let filled = fill_pool(&db).await;
    let server = start_server(url, dir.path()).await;
    let figures = server
        .db()
        .pool_figures(server.state().pool())
        .await
        .expect("pool figures");
    assert_eq!(figures.allocated as usize, filled);
    let latencies = measure_latencies(&server.url()).await;
    let sign_ins_per_second = measure_throughput(&server.url()).await;
    server.shutdown().await.expect("server stops");
    rows.push(Row {
        database,
        pool: "90 % full",
        latencies,
        sign_ins_per_second,
    });

    db.close().await;
    rows
}

async fn create_postgres_database(server_url: &str, name: &str) -> String {
    use sqlx::Connection;

    sqlx::any::install_default_drivers();
    let mut connection = sqlx::AnyConnection::connect(server_url)
        .await
        .expect("PostgreSQL server is reachable");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut connection)
        .await
        .expect("database is created");
    connection.close().await.expect("connection closes");

    let (base, _) = server_url.rsplit_once('/').expect("URL ends in /DATABASE");
    format!("{base}/{name}")
}

async fn drop_postgres_database(server_url: &str, name: &str) {
    use sqlx::Connection;

    let mut connection = sqlx::AnyConnection::connect(server_url)
        .await
        .expect("PostgreSQL server is reachable");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut connection)
        .await
        .expect("database is dropped");
    connection.close().await.expect("connection closes");
}

fn print_table(rows: &[Row]) {
    println!(
        "| database | pool | sign-in + allocation median (ms) | p99 (ms) | allocation request median (ms) | p99 (ms) | sign-ins/s, {CLIENTS} clients |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for row in rows {
        let both = &row.latencies.sign_in_and_allocation;
        let allocation = &row.latencies.allocation;
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.2} | {:.2} | {:.0} |",
            row.database,
            row.pool,
            percentile(both, 0.5),
            percentile(both, 0.99),
            percentile(allocation, 0.5),
            percentile(allocation, 0.99),
            row.sign_ins_per_second
        );
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    runtime.block_on(async {
        let mut rows = Vec::new();

        let dir = tempfile::tempdir().expect("temporary directory");
        let sqlite_url = format!("sqlite://{}", dir.path().join("bench.db").display());
        rows.extend(bench_database("SQLite", &sqlite_url).await);

        match std::env::var(POSTGRES_URL_VARIABLE) {
            Ok(server_url) if !server_url.is_empty() => {
                let name = format!("camwire_bench_{}", uuid::Uuid::new_v4().simple());
                let url = create_postgres_database(&server_url, &name).await;
                rows.extend(bench_database("PostgreSQL", &url).await);
                drop_postgres_database(&server_url, &name).await;
            }
            _ => println!("PostgreSQL skipped: {POSTGRES_URL_VARIABLE} is not set"),
        }

        print_table(&rows);
        println!(
            "{LATENCY_SAMPLES} sequential samples per row; throughput from {} sign-in, allocation and sign-out cycles",
            CLIENTS * CYCLES_PER_CLIENT
        );
    });
}
