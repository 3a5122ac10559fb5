//! The server killed with SIGKILL in the middle of sign-ins and sign-outs, then started
//! again on the same database and config file.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::Client;
use sqlx::Row;

use camwire_api::Role;
use camwire_server::db::{Db, Table};
use camwire_server::metrics::sample_value;

use crate::common::{Database, config_file_keys, create_user, new_public_key, wait_until};
use crate::process::{ServerProcess, login, logout, metrics, register};

const CLIENTS: usize = 20;
const POOL: &str = "10.30.0.0/24";
const POOL_SIZE: i64 = 253;

/// Signs in, registers and signs out until `stop`, ignoring failures: the server dies
/// under it.
async fn churn(base: String, username: String, stop: Arc<AtomicBool>) {
    let http = Client::new();
    let password = format!("{username}-correct-horse");

    while !stop.load(Ordering::Relaxed) {
        let Ok(token) = login(&http, &base, &username, &password).await else {
            return;
        };
        if register(&http, &base, &token, &new_public_key())
            .await
            .is_err()
        {
            return;
        }
        // Every other device keeps its peer, so that the crash leaves allocations behind.
        if rand::random::<bool>() && logout(&http, &base, &token).await.is_err() {
            return;
        }
    }
}

async fn peers_without_session(db: &Db) -> i64 {
    sqlx::query(
        "SELECT COUNT(*) AS count FROM peers \
         LEFT JOIN sessions ON sessions.id = peers.session_id WHERE sessions.id IS NULL",
    )
    .fetch_one(db.pool())
    .await
    .expect("query")
    .try_get("count")
    .expect("count")
}

on_both_databases!(killed_server_restarts_consistent);

async fn killed_server_restarts_consistent(database: Database) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let test_database = database.create(dir.path()).await;
    let db = Db::connect(&test_database.url)
        .await
        .expect("database opens");
    for index in 0..CLIENTS {
        create_user(&db, &format!("user{index}"), Role::User).await;
    }
    let wg_config = dir.path().join("wg0.conf");
    let arguments = ["--pool", POOL];
    let mut server = ServerProcess::spawn(&test_database.url, &wg_config, &arguments).await;

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|index| {
            tokio::spawn(churn(
                server.url.clone(),
                format!("user{index}"),
                Arc::clone(&stop),
            ))
        })
        .collect();

    // Kill it once it is busy: some dozens of peers allocated.
    let busy = wait_until(Duration::from_secs(60), || async {
        db.count_rows(Table::Peers).await.expect("count") >= 30
    })
    .await;
    server.kill().await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("client task ends");
    }
    assert!(busy, "the clients allocated too few peers before the kill");

    let server = ServerProcess::spawn(&test_database.url, &wg_config, &arguments).await;

    let peers = db.list_peers().await.expect("peers");
    let database_keys: BTreeSet<String> = peers
        .iter()
        .map(|peer| peer.public_key.to_base64())
        .collect();
    let file_keys: BTreeSet<String> = config_file_keys(&wg_config).into_iter().collect();
    assert_eq!(file_keys, database_keys, "config file and database differ");
    let text = metrics(&Client::new(), &server.url).await;
    assert_eq!(
        sample_value(&text, "camwire_hub_peers"),
        Some(peers.len() as u64),
        "the hub does not have the database's peers:\n{text}"
    );
    assert_eq!(peers_without_session(&db).await, 0);
    let held = db.count_rows(Table::Peers).await.expect("count");
    let free = db.count_rows(Table::FreeAddresses).await.expect("count");
    assert_eq!(held + free, POOL_SIZE, "an address leaked");
    assert_eq!(db.count_held_and_free().await.expect("count"), 0);

    // The restarted server hands out the lowest free address.
    let lowest = db.list_free_addresses().await.expect("free")[0];
    let http = Client::new();
    let token = login(&http, &server.url, "user0", "user0-correct-horse")
        .await
        .expect("signs in");
    let config = register(&http, &server.url, &token, &new_public_key())
        .await
        .expect("registers");
    assert_eq!(config.address.addr(), lowest);

    db.close().await;
}
