//! Sign-in, allocation and sign-out over real HTTP.

use std::net::Ipv4Addr;

use reqwest::StatusCode;

use camwire_api::{CleanupStatus, LogoutResponse, User, WireguardCleanup, WireguardConfig};

use crate::common::{Database, TestServer, expect_error, expect_json, new_public_key};

on_both_databases!(signout_scenario_reuses_freed_address);

async fn signout_scenario_reuses_freed_address(database: Database) {
    let server = TestServer::start(database).await;
    let alice_password = server.add_user("alice").await;
    let bob_password = server.add_user("bob").await;

    // Alice signs in and registers a key.
    let alice_token = server.login("alice", &alice_password).await;
    let alice_key = new_public_key();
    let alice_config = server.register(&alice_token, &alice_key).await;

    assert_eq!(alice_config.address.to_string(), "10.13.0.2/32");
    assert_eq!(alice_config.server_address, Ipv4Addr::new(10, 13, 0, 1));
    assert_eq!(
        alice_config.allowed_ips,
        ["10.13.0.0/16".parse().expect("CIDR")]
    );
    assert_eq!(alice_config.persistent_keepalive, 25);
    let hub_addr = server
        .server()
        .hub_addr()
        .expect("the default back end runs a hub");
    assert_eq!(alice_config.endpoint, hub_addr.to_string());

    let peers = server.db().list_peers().await.expect("peers");
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].public_key.to_base64(), alice_key);
    assert_eq!(peers[0].address, Ipv4Addr::new(10, 13, 0, 2));

    let file = server.wg_config_file();
    assert_eq!(file.peers.len(), 1);
    assert_eq!(file.peers[0].public_key.to_base64(), alice_key);
    assert_eq!(
        file.peers[0].allowed_ips,
        ["10.13.0.2/32".parse().expect("CIDR")]
    );

    // She signs out: the peer, its file section and the session are gone.
    let logout = server.logout(&alice_token).await;

    assert_eq!(logout.session_invalidated, Some(true));
    let cleanup = logout.wireguard.expect("cleanup is reported");
    assert_eq!(cleanup.status, CleanupStatus::Revoked);
    assert_eq!(cleanup.released_address, Some(Ipv4Addr::new(10, 13, 0, 2)));
    assert!(cleanup.peer_removed);
    assert_eq!(cleanup.detail, None);

    assert!(server.db().list_peers().await.expect("peers").is_empty());
    assert!(!server.wg_config_text().contains(&alice_key));
    assert!(server.wg_config_file().peers.is_empty());

    let old_token = server.get("/me", &alice_token).await;
    expect_error(old_token, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // Bob gets the freed address, and Alice a new one.
    let bob_token = server.login("bob", &bob_password).await;
    let bob_config = server.register(&bob_token, &new_public_key()).await;
    assert_eq!(bob_config.address.addr(), Ipv4Addr::new(10, 13, 0, 2));

    let alice_again = server.login("alice", &alice_password).await;
    let alice_second = server.register(&alice_again, &new_public_key()).await;
    assert_eq!(alice_second.address.addr(), Ipv4Addr::new(10, 13, 0, 3));
}

on_both_databases!(logout_without_peer_reports_not_configured);

async fn logout_without_peer_reports_not_configured(database: Database) {
    let server = TestServer::start(database).await;
    let password = server.add_user("alice").await;
    let token = server.login("alice", &password).await;

    let logout = server.logout(&token).await;

    assert_eq!(logout.session_invalidated, Some(true));
    assert_eq!(
        logout.wireguard,
        Some(WireguardCleanup {
            status: CleanupStatus::NotConfigured,
            released_address: None,
            peer_removed: false,
            detail: None,
        })
    );
    assert_eq!(server.counts().await.sessions, 0);
}

on_both_databases!(second_logout_gets_401);

async fn second_logout_gets_401(database: Database) {
    let server = TestServer::start(database).await;
    let password = server.add_user("alice").await;
    let token = server.login("alice", &password).await;
    server.register(&token, &new_public_key()).await;
    server.logout(&token).await;

    let second = server.logout_response(&token).await;

    let www_authenticate = second.headers().get("www-authenticate").cloned();
    expect_error(second, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(www_authenticate.is_some_and(|value| value.as_bytes().starts_with(b"Bearer")));
}

on_both_databases!(logout_of_one_device_keeps_the_other);

async fn logout_of_one_device_keeps_the_other(database: Database) {
    let server = TestServer::start(database).await;
    let password = server.add_user("alice").await;
    let laptop = server.login("alice", &password).await;
    let phone = server.login("alice", &password).await;
    let laptop_key = new_public_key();
    let phone_key = new_public_key();
    server.register(&laptop, &laptop_key).await;
    let phone_config = server.register(&phone, &phone_key).await;

    server.logout(&laptop).await;

    let me = server.get("/me", &phone).await;
    let user: User = expect_json(me, StatusCode::OK).await;
    assert_eq!(user.username, "alice");

    let still_configured = server.get("/wireguard/config", &phone).await;
    let config: WireguardConfig = expect_json(still_configured, StatusCode::OK).await;
    assert_eq!(config.address, phone_config.address);

    let peers = server.db().list_peers().await.expect("peers");
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].public_key.to_base64(), phone_key);

    let file = server.wg_config_text();
    assert!(file.contains(&phone_key));
    assert!(!file.contains(&laptop_key));
    assert_eq!(server.counts().await.sessions, 1);
}

on_both_databases!(other_users_token_never_frees_a_peer);

async fn other_users_token_never_frees_a_peer(database: Database) {
    let server = TestServer::start(database).await;
    let alice_password = server.add_user("alice").await;
    let bob_password = server.add_user("bob").await;
    let alice = server.login("alice", &alice_password).await;
    let bob = server.login("bob", &bob_password).await;
    let alice_key = new_public_key();
    server.register(&alice, &alice_key).await;

    // Bob has no peer: his requests free nothing of Alice's.
    let deleted = server.delete_config(&bob).await;
    let cleanup: WireguardCleanup = expect_json(deleted, StatusCode::OK).await;
    assert_eq!(cleanup.status, CleanupStatus::NotConfigured);

    let logout = server.logout(&bob).await;
    assert_eq!(
        logout.wireguard.map(|cleanup| cleanup.status),
        Some(CleanupStatus::NotConfigured)
    );

    let peers = server.db().list_peers().await.expect("peers");
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].public_key.to_base64(), alice_key);
    assert!(server.wg_config_text().contains(&alice_key));

    let alice_config = server.get("/wireguard/config", &alice).await;
    expect_json::<WireguardConfig>(alice_config, StatusCode::OK).await;
}

on_both_databases!(delete_config_keeps_the_session);

async fn delete_config_keeps_the_session(database: Database) {
    let server = TestServer::start(database).await;
    let password = server.add_user("alice").await;
    let token = server.login("alice", &password).await;
    let key = new_public_key();
    server.register(&token, &key).await;

    let deleted = server.delete_config(&token).await;

    let cleanup: WireguardCleanup = expect_json(deleted, StatusCode::OK).await;
    assert_eq!(cleanup.status, CleanupStatus::Revoked);
    assert_eq!(cleanup.released_address, Some(Ipv4Addr::new(10, 13, 0, 2)));
    assert!(!server.wg_config_text().contains(&key));

    let me = server.get("/me", &token).await;
    expect_json::<User>(me, StatusCode::OK).await;

    let config = server.get("/wireguard/config", &token).await;
    expect_error(config, StatusCode::NOT_FOUND, "not_configured").await;

    let again = server.register(&token, &new_public_key()).await;
    assert_eq!(again.address.addr(), Ipv4Addr::new(10, 13, 0, 2));
}

on_both_databases!(get_config_returns_the_allocation);

async fn get_config_returns_the_allocation(database: Database) {
    let server = TestServer::start(database).await;
    let password = server.add_user("alice").await;
    let token = server.login("alice", &password).await;

    let before = server.get("/wireguard/config", &token).await;
    expect_error(before, StatusCode::NOT_FOUND, "not_configured").await;

    let registered = server.register(&token, &new_public_key()).await;
    let fetched = server.get("/wireguard/config", &token).await;

    let fetched: WireguardConfig = expect_json(fetched, StatusCode::OK).await;
    assert_eq!(fetched, registered);
}

on_both_databases!(second_registration_on_session_conflicts);

async fn second_registration_on_session_conflicts(database: Database) {
    let server = TestServer::start(database).await;
    let password = server.add_user("alice").await;
    let token = server.login("alice", &password).await;
    server.register(&token, &new_public_key()).await;
    let before = server.counts().await;

    let second = server.register_response(&token, &new_public_key()).await;

    let message = expect_error(second, StatusCode::CONFLICT, "already_configured").await;
    assert!(message.contains("10.13.0.2"), "{message}");
    assert_eq!(server.counts().await, before);
}

on_both_databases!(key_of_another_session_conflicts);

async fn key_of_another_session_conflicts(database: Database) {
    let server = TestServer::start(database).await;
    let alice_password = server.add_user("alice").await;
    let bob_password = server.add_user("bob").await;
    let alice = server.login("alice", &alice_password).await;
    let bob = server.login("bob", &bob_password).await;
    let key = new_public_key();
    server.register(&alice, &key).await;
    let before = server.counts().await;

    let reused = server.register_response(&bob, &key).await;

    expect_error(reused, StatusCode::CONFLICT, "public_key_in_use").await;
    assert_eq!(server.counts().await, before);
}

on_both_databases!(server_key_is_rejected_as_peer_key);

async fn server_key_is_rejected_as_peer_key(database: Database) {
    let server = TestServer::start(database).await;
    let password = server.add_user("alice").await;
    let token = server.login("alice", &password).await;
    let server_key = server.server().state().server_public_key().to_base64();

    let response = server.register_response(&token, &server_key).await;

    let message = expect_error(response, StatusCode::BAD_REQUEST, "invalid_public_key").await;
    assert!(message.contains("server's own public key"), "{message}");
}

on_both_databases!(failed_config_write_reports_failed_and_frees_address);

async fn failed_config_write_reports_failed_and_frees_address(database: Database) {
    let server = TestServer::start(database).await;
    let password = server.add_user("alice").await;
    let token = server.login("alice", &password).await;
    let key = new_public_key();
    server.register(&token, &key).await;

    // A directory where the config writer puts its temporary file makes every write fail.
    let blocker = server.dir.path().join(".wg0.conf.tmp");
    std::fs::create_dir(&blocker).expect("blocking directory");

    let logout = server.logout(&token).await;

    let cleanup = logout.wireguard.expect("cleanup is reported");
    assert_eq!(logout.session_invalidated, Some(true));
    assert_eq!(cleanup.status, CleanupStatus::Failed);
    assert!(!cleanup.peer_removed);
    assert_eq!(cleanup.released_address, Some(Ipv4Addr::new(10, 13, 0, 2)));
    assert!(
        cleanup
            .detail
            .is_some_and(|detail| detail.contains("retries"))
    );

    let pending = server
        .db()
        .list_pending_removals()
        .await
        .expect("pending removals");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].to_base64(), key);
    assert!(server.db().list_peers().await.expect("peers").is_empty());
    assert_eq!(server.counts().await.sessions, 0);
    assert!(
        server.wg_config_text().contains(&key),
        "the failed write left the old file"
    );

    // Once writes work again, the next allocation rewrites the file without the old peer.
    std::fs::remove_dir(&blocker).expect("unblock");
    let bob_password = server.add_user("bob").await;
    let bob = server.login("bob", &bob_password).await;
    let bob_key = new_public_key();
    let bob_config = server.register(&bob, &bob_key).await;

    assert_eq!(bob_config.address.addr(), Ipv4Addr::new(10, 13, 0, 2));
    let file = server.wg_config_text();
    assert!(!file.contains(&key));
    assert!(file.contains(&bob_key));
}

on_both_databases!(failed_config_write_rolls_back_allocation);

async fn failed_config_write_rolls_back_allocation(database: Database) {
    let server = TestServer::start(database).await;
    let password = server.add_user("alice").await;
    let token = server.login("alice", &password).await;
    let before = server.counts().await;
    let file_before = server.wg_config_text();
    std::fs::create_dir(server.dir.path().join(".wg0.conf.tmp")).expect("blocking directory");

    let response = server.register_response(&token, &new_public_key()).await;

    let message = expect_error(
        response,
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
    )
    .await;
    assert!(
        !message.contains("wg0.conf"),
        "internal details leaked: {message}"
    );
    assert_eq!(server.counts().await, before);
    assert_eq!(server.wg_config_text(), file_before);
}

on_both_databases!(racing_registrations_on_one_session_conflict);

async fn racing_registrations_on_one_session_conflict(database: Database) {
    let server = TestServer::start(database).await;
    let password = server.add_user("alice").await;
    let token = server.login("alice", &password).await;
    let free_before = server.counts().await.free_addresses;
    let keys: Vec<String> = (0..6).map(|_| new_public_key()).collect();

    let requests = keys.iter().map(|key| server.register_response(&token, key));
    let statuses: Vec<StatusCode> = futures::future::join_all(requests)
        .await
        .iter()
        .map(|response| response.status())
        .collect();

    let created = statuses
        .iter()
        .filter(|status| **status == StatusCode::CREATED)
        .count();
    let conflicts = statuses
        .iter()
        .filter(|status| **status == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, conflicts), (1, 5), "{statuses:?}");

    let counts = server.counts().await;
    assert_eq!(counts.peers, 1);
    assert_eq!(
        counts.free_addresses,
        free_before - 1,
        "rolled-back allocations are free again"
    );
    assert_eq!(server.wg_config_file().peers.len(), 1);
}

on_both_databases!(racing_registrations_of_one_key_conflict);

async fn racing_registrations_of_one_key_conflict(database: Database) {
    let server = TestServer::start(database).await;
    let password = server.add_user("alice").await;
    let mut tokens = Vec::new();
    for _ in 0..6 {
        tokens.push(server.login("alice", &password).await);
    }
    let key = new_public_key();

    let requests = tokens
        .iter()
        .map(|token| server.register_response(token, &key));
    let responses = futures::future::join_all(requests).await;

    let mut created = 0;
    for response in responses {
        match response.status() {
            StatusCode::CREATED => created += 1,
            _ => {
                expect_error(response, StatusCode::CONFLICT, "public_key_in_use").await;
            }
        }
    }
    assert_eq!(created, 1);
    assert_eq!(server.counts().await.peers, 1);
    assert_eq!(server.wg_config_file().peers.len(), 1);
}

on_both_databases!(register_racing_logout_gets_401);

/// Sends `POST /wireguard/config` and `POST /logout` with one token at once, round after
/// round. When the sign-out ends the session while the registration runs, the
/// registration must get 401 like any request with an ended session.
async fn register_racing_logout_gets_401(database: Database) {
    const ROUNDS: usize = 60;
    let server = TestServer::start(database).await;
    let password = server.add_user("alice").await;
    let free_before = server.counts().await.free_addresses;
    let mut registered = 0;
    let mut rejected = 0;

    for round in 0..ROUNDS {
        let token = server.login("alice", &password).await;
        let key = new_public_key();

        let (register, logout) = tokio::join!(
            server.register_response(&token, &key),
            server.logout_response(&token),
        );

        let logout: LogoutResponse = expect_json(logout, StatusCode::OK).await;
        match register.status() {
            StatusCode::CREATED => {
                registered += 1;
                let cleanup = logout.wireguard.expect("cleanup is reported");
                assert_eq!(cleanup.status, CleanupStatus::Revoked, "round {round}");
            }
            _ => {
                rejected += 1;
                expect_error(register, StatusCode::UNAUTHORIZED, "unauthorized").await;
            }
        }
        let counts = server.counts().await;
        assert_eq!(counts.sessions, 0, "round {round}");
        assert_eq!(counts.peers, 0, "round {round}");
        assert_eq!(counts.free_addresses, free_before, "round {round}");
    }

    assert_eq!(registered + rejected, ROUNDS);
    assert!(server.wg_config_file().peers.is_empty());
    assert!(server.hub().peers().is_empty());
}
