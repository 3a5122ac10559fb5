//! Restarts on the same files keep every piece of state; the config file follows the database.

use std::net::Ipv4Addr;

use reqwest::StatusCode;

use camwire_api::{User, WireguardConfig};
use camwire_server::wg_conf;

use crate::common::{Database, TestServer, expect_json, new_public_key};

on_both_databases!(restart_keeps_state_and_rewrites_config);

async fn restart_keeps_state_and_rewrites_config(database: Database) {
    let mut server = TestServer::start(database).await;
    let password = server.add_user("alice").await;
    let laptop = server.login("alice", &password).await;
    let phone = server.login("alice", &password).await;
    let laptop_key = new_public_key();
    let phone_key = new_public_key();
    let laptop_config = server.register(&laptop, &laptop_key).await;
    server.register(&phone, &phone_key).await;
    let counts = server.counts().await;

    // Damage the file: drop the peers and add one the database does not know.
    let stray_key = new_public_key();
    let original = server.wg_config_file();
    let private_key = original.interface.private_key.to_base64();
    let damaged = format!(
        "[Interface]\nPrivateKey = {}\n\n[Peer]\nPublicKey = {stray_key}\nAllowedIPs = 10.13.0.99/32\n",
        private_key.as_str()
    );
    std::fs::write(server.wg_config_path(), damaged).expect("config file is writable");

    server.restart().await;

    assert_eq!(server.counts().await, counts);

    let login = server.login_response("alice", &password).await;
    assert_eq!(login.status(), StatusCode::OK);

    let me = server.get("/me", &laptop).await;
    expect_json::<User>(me, StatusCode::OK).await;

    let fetched = server.get("/wireguard/config", &laptop).await;
    let fetched: WireguardConfig = expect_json(fetched, StatusCode::OK).await;
    // The restarted hub has a new port (port 0 in the config); everything else stays.
    let hub_addr = server
        .server()
        .hub_addr()
        .expect("the default back end runs a hub");
    assert_eq!(
        fetched,
        WireguardConfig {
            endpoint: hub_addr.to_string(),
            ..laptop_config
        }
    );

    let file = server.wg_config_file();
    let keys: Vec<String> = file
        .peers
        .iter()
        .map(|peer| peer.public_key.to_base64())
        .collect();
    assert_eq!(keys, [laptop_key, phone_key]);
    assert_eq!(
        file.interface.private_key.public_key(),
        original.interface.private_key.public_key()
    );
    let hub_port = server.server().hub_addr().map(|addr| addr.port());
    assert!(hub_port.is_some(), "the default back end runs a hub");
    assert_eq!(file.interface.listen_port, hub_port);
    assert!(!server.wg_config_text().contains(&stray_key));
}

on_both_databases!(restart_with_lost_config_file_keeps_allocations);

async fn restart_with_lost_config_file_keeps_allocations(database: Database) {
    let mut server = TestServer::start(database).await;
    let password = server.add_user("alice").await;
    let token = server.login("alice", &password).await;
    let key = new_public_key();
    server.register(&token, &key).await;
    std::fs::remove_file(server.wg_config_path()).expect("config file is removable");

    server.restart().await;

    let file = server.wg_config_file();
    assert_eq!(file.peers.len(), 1);
    assert_eq!(file.peers[0].public_key.to_base64(), key);
}

on_both_databases!(unparsable_config_file_stops_start);

async fn unparsable_config_file_stops_start(database: Database) {
    let server = TestServer::start(database).await;
    std::fs::write(
        server.wg_config_path(),
        "[Interface]\nPrivateKey = broken\n",
    )
    .expect("writable");

    let result = camwire_server::start(server.config.clone()).await;

    let message = result.err().expect("start fails").to_string();
    assert!(message.contains("wg0.conf"), "{message}");
    assert!(message.contains("line 2"), "{message}");
    assert!(message.contains("move it away"), "{message}");
}

on_both_databases!(larger_pool_keeps_allocations_and_adds_addresses);

async fn larger_pool_keeps_allocations_and_adds_addresses(database: Database) {
    let mut server = TestServer::start_with(database, |config| {
        config.pool = "10.13.0.0/29".parse().expect("CIDR")
    })
    .await;
    let password = server.add_user("alice").await;
    let first = server.login("alice", &password).await;
    let second = server.login("alice", &password).await;
    server.register(&first, &new_public_key()).await;
    server.register(&second, &new_public_key()).await;

    server
        .restart_with(|config| config.pool = "10.13.0.0/28".parse().expect("CIDR"))
        .await;

    let free = server
        .db()
        .list_free_addresses()
        .await
        .expect("free addresses");
    assert_eq!(free.len(), 13 - 2);
    assert_eq!(free.first(), Some(&Ipv4Addr::new(10, 13, 0, 4)));
    assert_eq!(free.last(), Some(&Ipv4Addr::new(10, 13, 0, 14)));

    let third = server.login("alice", &password).await;
    let config = server.register(&third, &new_public_key()).await;
    assert_eq!(config.address.addr(), Ipv4Addr::new(10, 13, 0, 4));
    assert_eq!(config.allowed_ips, ["10.13.0.0/28".parse().expect("CIDR")]);
}

on_both_databases!(address_outside_new_pool_is_not_reused);

async fn address_outside_new_pool_is_not_reused(database: Database) {
    let mut server = TestServer::start(database).await;
    let password = server.add_user("alice").await;
    let token = server.login("alice", &password).await;
    server.register(&token, &new_public_key()).await;

    server
        .restart_with(|config| config.pool = "10.14.0.0/29".parse().expect("CIDR"))
        .await;
    let logout = server.logout(&token).await;

    let cleanup = logout.wireguard.expect("cleanup is reported");
    assert_eq!(cleanup.released_address, Some(Ipv4Addr::new(10, 13, 0, 2)));
    let free = server
        .db()
        .list_free_addresses()
        .await
        .expect("free addresses");
    assert_eq!(free.len(), 5);
    assert!(
        free.iter()
            .all(|address| address.octets()[..3] == [10, 14, 0]),
        "{free:?}"
    );
    assert!(
        wg_conf::parse(&server.wg_config_text())
            .expect("parses")
            .peers
            .is_empty()
    );
}

on_both_databases!(config_file_is_private_and_parses);

async fn config_file_is_private_and_parses(database: Database) {
    let server = TestServer::start(database).await;
    let password = server.add_user("alice").await;
    let token = server.login("alice", &password).await;
    let key = new_public_key();
    server.register(&token, &key).await;

    let file = server.wg_config_file();

    assert_eq!(file.peers.len(), 1);
    assert_eq!(file.peers[0].public_key.to_base64(), key);
    assert_eq!(
        file.interface.private_key.public_key(),
        server.server().state().server_public_key()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;

        let metadata = std::fs::metadata(server.wg_config_path()).expect("metadata");
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    }
}
