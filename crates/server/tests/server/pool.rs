//! The lowest-free rule and exhaustion, on a /29 pool of five client addresses.

use std::net::Ipv4Addr;

use reqwest::StatusCode;

use camwire_api::WireguardConfig;

use crate::common::{Database, TestServer, expect_error, new_public_key};

fn address(last_octet: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 13, 0, last_octet)
}

async fn tiny_pool_server(database: Database) -> (TestServer, String) {
    let server = TestServer::start_with(database, |config| {
        config.pool = "10.13.0.0/29".parse().expect("CIDR")
    })
    .await;
    let password = server.add_user("alice").await;
    (server, password)
}

on_both_databases!(exhausted_pool_gets_503_until_a_logout);

async fn exhausted_pool_gets_503_until_a_logout(database: Database) {
    let (server, password) = tiny_pool_server(database).await;
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

on_both_databases!(freed_middle_addresses_are_reused_lowest_first);

async fn freed_middle_addresses_are_reused_lowest_first(database: Database) {
    let (server, password) = tiny_pool_server(database).await;
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

on_both_databases!(pool_layout_excludes_server_and_broadcast);

async fn pool_layout_excludes_server_and_broadcast(database: Database) {
    let (server, _password) = tiny_pool_server(database).await;

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

on_both_databases!(concurrent_registrations_get_distinct_addresses);

async fn concurrent_registrations_get_distinct_addresses(database: Database) {
    let (server, password) = tiny_pool_server(database).await;
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

on_both_databases!(full_pool_cycles_a_hundred_times);

async fn full_pool_cycles_a_hundred_times(database: Database) {
    let (server, password) = tiny_pool_server(database).await;
    let mut holders: Vec<(String, Ipv4Addr)> = Vec::new();
    for expected in 2..=6 {
        let token = server.login("alice", &password).await;
        let config = server.register(&token, &new_public_key()).await;
        assert_eq!(config.address.addr(), address(expected));
        holders.push((token, config.address.addr()));
    }

    for round in 0..100 {
        let waiting = server.login("alice", &password).await;
        let exhausted = server.register_response(&waiting, &new_public_key()).await;
        expect_error(
            exhausted,
            StatusCode::SERVICE_UNAVAILABLE,
            "address_pool_exhausted",
        )
        .await;

        // A different holder signs out each round; its address is the next one handed out.
        let (token, freed) = holders.remove(round % holders.len());
        let logout = server.logout(&token).await;
        let cleanup = logout.wireguard.expect("cleanup is reported");
        assert_eq!(cleanup.released_address, Some(freed), "round {round}");

        let config = server.register(&waiting, &new_public_key()).await;
        assert_eq!(config.address.addr(), freed, "round {round}");
        holders.push((waiting, freed));
    }

    let counts = server.counts().await;
    assert_eq!(counts.peers, 5);
    assert_eq!(counts.free_addresses, 0);
    assert_eq!(
        counts.sessions, 5,
        "every 503 left its session usable, every logout ended one"
    );
    assert_eq!(server.wg_config_file().peers.len(), 5);
}
