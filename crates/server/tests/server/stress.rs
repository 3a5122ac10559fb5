//! 1,000 sign-in and sign-out cycles from 50 concurrent clients: on one server with
//! SQLite, and on two server processes sharing PostgreSQL. No address is ever held
//! twice, none leaks, and at the end the database, every replica's config file and
//! `/metrics` agree.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Client;
use sqlx::Row;

use camwire_api::Role;
use camwire_server::db::Db;
use camwire_server::metrics::sample_value;

use crate::common::{Database, config_file_keys, create_user, new_public_key, wait_until};
use crate::process::{ServerProcess, login, logout, metrics, register};

const CLIENTS: usize = 50;
const CYCLES_PER_CLIENT: usize = 20;
const POOL: &str = "10.20.0.0/24";
const POOL_SIZE: i64 = 253;

/// What the clients saw.
#[derive(Default)]
struct ClientView {
    /// Address to client, from the client receiving its allocation until it sends its
    /// sign-out. The real holding time contains that span, so two clients on one
    /// address here means that the server handed it out twice.
    holders: HashMap<Ipv4Addr, usize>,
    double_holds: Vec<String>,
    failures: Vec<String>,
    /// The peer each client keeps at the end: (public key, address).
    kept: BTreeSet<(String, Ipv4Addr)>,
}

/// Database checks taken while the clients run.
#[derive(Default, Debug)]
struct Snapshots {
    taken: usize,
    violations: Vec<String>,
}

async fn take_snapshot(db: &Db) -> Result<Option<String>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT \
            (SELECT COUNT(*) FROM peers) AS held, \
            (SELECT COUNT(*) FROM free_addresses) AS free, \
            (SELECT COUNT(*) FROM peers JOIN free_addresses \
                ON free_addresses.address = peers.address) AS held_and_free, \
            (SELECT COUNT(*) FROM (SELECT address FROM peers GROUP BY address \
                HAVING COUNT(*) > 1) AS duplicated) AS duplicated",
    )
    .fetch_one(db.pool())
    .await?;

    let held: i64 = row.try_get("held")?;
    let free: i64 = row.try_get("free")?;
    let held_and_free: i64 = row.try_get("held_and_free")?;
    let duplicated: i64 = row.try_get("duplicated")?;

    let consistent = held + free == POOL_SIZE && held_and_free == 0 && duplicated == 0;
    Ok((!consistent).then(|| {
        format!("held {held} free {free} held_and_free {held_and_free} duplicated {duplicated}")
    }))
}

async fn run_client(index: usize, bases: Arc<Vec<String>>, view: Arc<Mutex<ClientView>>) {
    let http = Client::new();
    let username = format!("user{index}");
    let password = format!("{username}-correct-horse");
    let record_failure = |error: String| {
        view.lock()
            .expect("view lock")
            .failures
            .push(format!("client {index}: {error}"));
    };

    for cycle in 0..=CYCLES_PER_CLIENT {
        // Spread the steps over the replicas, so that each sign-out usually happens on
        // another replica than the allocation.
        let first = &bases[(index + cycle) % bases.len()];
        let second = &bases[(index + cycle + 1) % bases.len()];

        let token = match login(&http, first, &username, &password).await {
            Ok(token) => token,
            Err(error) => return record_failure(error),
        };
        let key = new_public_key();
        let config = match register(&http, second, &token, &key).await {
            Ok(config) => config,
            Err(error) => return record_failure(error),
        };
        let address = config.address.addr();

        {
            let mut view = view.lock().expect("view lock");
            if let Some(other) = view.holders.insert(address, index) {
                view.double_holds.push(format!(
                    "{address} handed to client {index} while client {other} held it"
                ));
            }
        }

        // The last allocation stays, so that the end state has peers to compare.
        if cycle == CYCLES_PER_CLIENT {
            view.lock().expect("view lock").kept.insert((key, address));
            return;
        }

        view.lock().expect("view lock").holders.remove(&address);
        if let Err(error) = logout(&http, first, &token).await {
            return record_failure(error);
        }
    }
}

async fn run_cycles(database: Database, replicas: usize) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let test_database = database.create(dir.path()).await;
    let db = Db::connect(&test_database.url)
        .await
        .expect("database opens");
    for index in 0..CLIENTS {
        create_user(&db, &format!("user{index}"), Role::User).await;
    }

    let mut servers = Vec::new();
    for replica in 0..replicas {
        let wg_config = dir.path().join(format!("wg{replica}.conf"));
        let server = ServerProcess::spawn(&test_database.url, &wg_config, &["--pool", POOL]).await;
        servers.push(server);
    }
    let bases = Arc::new(
        servers
            .iter()
            .map(|server| server.url.clone())
            .collect::<Vec<_>>(),
    );

    // Snapshots of the database while the clients run.
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = {
        let db = db.clone();
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut snapshots = Snapshots::default();
            while !stop.load(Ordering::Relaxed) {
                match take_snapshot(&db).await {
                    Ok(None) => {}
                    Ok(Some(violation)) => snapshots.violations.push(violation),
                    Err(error) => snapshots
                        .violations
                        .push(format!("snapshot failed: {error}")),
                }
                snapshots.taken += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            snapshots
        })
    };

    let view = Arc::new(Mutex::new(ClientView::default()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|index| tokio::spawn(run_client(index, Arc::clone(&bases), Arc::clone(&view))))
        .collect();
    for client in clients {
        client.await.expect("client task ends");
    }
    stop.store(true, Ordering::Relaxed);
    let snapshots = monitor.await.expect("monitor ends");

    let view = Arc::try_unwrap(view)
        .ok()
        .expect("clients ended")
        .into_inner()
        .expect("view");
    let problems: Vec<String> = servers.iter().map(ServerProcess::problems).collect();
    assert!(
        view.failures.is_empty(),
        "failed requests: {:?}\nserver logs:\n{}",
        view.failures,
        problems.join("\n")
    );
    assert!(view.double_holds.is_empty(), "{:?}", view.double_holds);
    assert!(snapshots.taken >= 10, "only {} snapshots", snapshots.taken);
    assert!(
        snapshots.violations.is_empty(),
        "{:?}",
        snapshots.violations
    );
    assert_eq!(view.kept.len(), CLIENTS);

    // The database holds exactly the clients' final peers, and nothing leaked.
    let in_database: BTreeSet<(String, Ipv4Addr)> = db
        .list_peers()
        .await
        .expect("peers")
        .into_iter()
        .map(|peer| (peer.public_key.to_base64(), peer.address))
        .collect();
    assert_eq!(in_database, view.kept);
    assert_eq!(take_snapshot(&db).await.expect("snapshot"), None);

    // Every replica's back end converges on the same peers within its resync bounds.
    let expected_keys: BTreeSet<String> = view.kept.iter().map(|(key, _)| key.clone()).collect();
    for server in &servers {
        let converged = wait_until(Duration::from_secs(10), || async {
            config_file_keys(&server.wg_config)
                .into_iter()
                .collect::<BTreeSet<_>>()
                == expected_keys
        })
        .await;
        assert!(
            converged,
            "{} does not list the database's peers; log:\n{}",
            server.wg_config.display(),
            server.problems()
        );
    }

    // Every replica's hub has the same peers as its file.
    let http = Client::new();
    for server in &servers {
        let text = metrics(&http, &server.url).await;

        assert_eq!(
            sample_value(&text, "camwire_hub_peers"),
            Some(CLIENTS as u64),
            "{}:\n{text}",
            server.url
        );
    }

    // Gauges agree everywhere; counters add up over the replicas.
    let total_cycles = (CLIENTS * CYCLES_PER_CLIENT) as u64;
    let mut allocations = 0;
    let mut logouts = 0;
    let mut sign_ins = 0;
    for server in &servers {
        let text = metrics(&http, &server.url).await;
        let value =
            |name: &str| sample_value(&text, name).unwrap_or_else(|| panic!("{name}:\n{text}"));

        assert_eq!(value("camwire_pool_size"), POOL_SIZE as u64);
        assert_eq!(value("camwire_pool_allocated"), CLIENTS as u64);
        allocations += value("camwire_allocations_total");
        logouts += value("camwire_releases_total{cause=\"logout\"}");
        sign_ins += value("camwire_sign_ins_total");
    }
    assert_eq!(allocations, total_cycles + CLIENTS as u64);
    assert_eq!(logouts, total_cycles);
    assert_eq!(sign_ins, total_cycles + CLIENTS as u64);

    db.close().await;
    drop(servers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_cycles_on_sqlite() {
    run_cycles(Database::Sqlite, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_cycles_on_two_postgres_replicas() {
    let Some(database) = Database::postgres(module_path!()) else {
        return;
    };
    run_cycles(database, 2).await;
}
