//! The lowest-free rule and exhaustion, on a /29 pool of five client addresses.

use std::net::Ipv4Addr;

use reqwest::StatusCode;

use camwire_api::WireguardConfig;

use crate::common::{TestServer, expect_error, new_public_key};

fn address(last_octet: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 13, 0, last_octet)
}

async fn tiny_pool_server() -> (TestServer, String) {
    let server =
        TestServer::start_with(|config| config.pool = "10.13.0.0/29".parse().expect("CIDR")).await;
    let password = server.add_user("alice").await;
    (server, password)
}

#[tokio::test]
async fn exhausted_pool_gets_503_until_a_logout() {
    let (server, password) = tiny_pool_server().await;
    let mut tokens = Vec::new();
    for expected in 2..=6 {
        let token = server.login("alice", &password).await;
        let config = server.register(&token, &new_public_key()).await;
        assert_eq!(config.address.addr(), address(expected));
        tokens.push(token);
    }
    let sixth = server.login("alice", &password).await;
    let before = server.counts().await;

    let exhausted = server.register_response(&sixth, &new_public_key()).await;

    let message = expect_error(
        exhausted,
        StatusCode::SERVICE_UNAVAILABLE,
        "address_pool_exhausted",
    )
    .await;
    assert!(message.contains("10.13.0.0/29"), "{message}");
    assert_eq!(server.counts().await, before);
    assert_eq!(before.free_addresses, 0);

    // The third device signs out; the sixth gets exactly its address.
    server.logout(&tokens[2]).await;
    let config = server.register(&sixth, &new_public_key()).await;
    assert_eq!(config.address.addr(), address(4));
}

#[tokio::test]
async fn freed_middle_addresses_are_reused_lowest_first() {
    let (server, password) = tiny_pool_server().await;
    let mut tokens = Vec::new();
    for _ in 0..4 {
        let token = server.login("alice", &password).await;
        server.register(&token, &new_public_key()).await;
        tokens.push(token);
    }

    // Free .4, then .3: the lowest comes back first whatever the order of release.
    server
        .delete_config(&tokens[2])
        .await
        .error_for_status()
        .expect("released");
    server
        .delete_config(&tokens[1])
        .await
        .error_for_status()
        .expect("released");
    let free = server
        .db()
        .list_free_addresses()
        .await
        .expect("free addresses");
    assert_eq!(free, [address(3), address(4), address(6)]);

    let mut handed_out = Vec::new();
    for token in [&tokens[2], &tokens[1]] {
        handed_out.push(
            server
                .register(token, &new_public_key())
                .await
                .address
                .addr(),
        );
    }
    let fifth = server.login("alice", &password).await;
    handed_out.push(
        server
            .register(&fifth, &new_public_key())
            .await
            .address
            .addr(),
    );

    assert_eq!(handed_out, [address(3), address(4), address(6)]);
}

#[tokio::test]
async fn pool_layout_excludes_server_and_broadcast() {
    let (server, _password) = tiny_pool_server().await;

    let free = server
        .db()
        .list_free_addresses()
        .await
        .expect("free addresses");
    let file = server.wg_config_file();

    assert_eq!(
        free,
        [address(2), address(3), address(4), address(5), address(6)]
    );
    assert_eq!(
        file.interface.address,
        Some("10.13.0.1/29".parse().expect("CIDR"))
    );
}

#[tokio::test]
async fn concurrent_registrations_get_distinct_addresses() {
    let (server, password) = tiny_pool_server().await;
    let mut tokens = Vec::new();
    for _ in 0..7 {
        tokens.push(server.login("alice", &password).await);
    }

    let keys: Vec<String> = tokens.iter().map(|_| new_public_key()).collect();
    let requests = tokens
        .iter()
        .zip(&keys)
        .map(|(token, key)| server.register_response(token, key));
    let responses = futures::future::join_all(requests).await;

    let mut created = Vec::new();
    let mut exhausted = 0;
    for response in responses {
        match response.status() {
            StatusCode::CREATED => {
                let config: WireguardConfig = response.json().await.expect("JSON body");
                created.push(config.address.addr());
            }
            StatusCode::SERVICE_UNAVAILABLE => exhausted += 1,
            other => panic!("unexpected status {other}: {:?}", response.text().await),
        }
    }
    created.sort();

    assert_eq!(
        created,
        [address(2), address(3), address(4), address(5), address(6)]
    );
    assert_eq!(exhausted, 2);
    assert_eq!(server.wg_config_file().peers.len(), 5);
}
