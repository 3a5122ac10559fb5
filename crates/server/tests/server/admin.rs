//! The `/admin` routes and `/metrics`.

use std::net::Ipv4Addr;

use reqwest::StatusCode;

use camwire_api::{AdminPeerList, AdminRevokeResponse, CleanupStatus, PoolStatus};
use camwire_server::metrics::sample_value;

use crate::common::{Database, TestServer, expect_error, expect_json, new_public_key};

async fn tiny_pool_server(database: Database) -> TestServer {
    TestServer::start_with(database, |config| {
        config.pool = "10.13.0.0/29".parse().expect("CIDR");
    })
    .await
}

on_both_databases!(admin_lists_peers_with_users);

async fn admin_lists_peers_with_users(database: Database) {
    let server = tiny_pool_server(database).await;
    let admin = server.admin_token().await;
    let password = server.add_user("alice").await;
    let laptop = server.login("alice", &password).await;
    let phone = server.login("alice", &password).await;
    let laptop_key = new_public_key();
    let phone_key = new_public_key();
    server.register(&laptop, &laptop_key).await;
    server.register(&phone, &phone_key).await;

    let response = server.get("/admin/peers", &admin).await;

    let list: AdminPeerList = expect_json(response, StatusCode::OK).await;
    assert_eq!(list.peers.len(), 2);
    assert_eq!(list.peers[0].address, Ipv4Addr::new(10, 13, 0, 2));
    assert_eq!(list.peers[0].public_key, laptop_key);
    assert_eq!(list.peers[0].username, "alice");
    assert_eq!(list.peers[1].address, Ipv4Addr::new(10, 13, 0, 3));
    assert_eq!(list.peers[1].public_key, phone_key);
    assert_ne!(list.peers[0].session_id, list.peers[1].session_id);
    assert_eq!(list.peers[0].last_handshake, None);
    // The embedded hub reports handshakes, so a peer without one is reclaimed a lease
    // after its allocation.
    let lease = chrono::Duration::from_std(server.config.lease_time).expect("lease fits");
    assert_eq!(
        list.peers[0].idle_expires_at,
        Some(list.peers[0].created_at + lease)
    );
    assert!(list.peers[0].expires_at > list.peers[0].created_at);
}

on_both_databases!(admin_revoke_ends_session_and_frees_address);

async fn admin_revoke_ends_session_and_frees_address(database: Database) {
    let server = tiny_pool_server(database).await;
    let admin = server.admin_token().await;
    let password = server.add_user("alice").await;
    let token = server.login("alice", &password).await;
    let key = new_public_key();
    server.register(&token, &key).await;
    let bystander = server.login("alice", &password).await;
    let bystander_key = new_public_key();
    server.register(&bystander, &bystander_key).await;
    let list: AdminPeerList =
        expect_json(server.get("/admin/peers", &admin).await, StatusCode::OK).await;
    let peer = list.peers[0].clone();
    assert_eq!(peer.public_key, key);

    let response = server
        .authorized(
            server
                .http
                .delete(server.url(&format!("/admin/peers/{}", peer.id))),
            &admin,
        )
        .send()
        .await
        .expect("request is sent");

    let revoked: AdminRevokeResponse = expect_json(response, StatusCode::OK).await;
    assert_eq!(revoked.peer_id, peer.id);
    assert_eq!(revoked.session_id, peer.session_id);
    assert!(revoked.session_revoked);
    assert_eq!(revoked.wireguard.status, CleanupStatus::Revoked);
    assert!(revoked.wireguard.peer_removed);
    assert_eq!(
        revoked.wireguard.released_address,
        Some(Ipv4Addr::new(10, 13, 0, 2))
    );

    let me = server.get("/me", &token).await;
    expect_error(me, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(!server.wg_config_text().contains(&key));
    assert!(server.wg_config_text().contains(&bystander_key));
    let free = server
        .db()
        .list_free_addresses()
        .await
        .expect("free addresses");
    assert_eq!(free.first(), Some(&Ipv4Addr::new(10, 13, 0, 2)));

    let again = server
        .authorized(
            server
                .http
                .delete(server.url(&format!("/admin/peers/{}", peer.id))),
            &admin,
        )
        .send()
        .await
        .expect("request is sent");
    expect_error(again, StatusCode::NOT_FOUND, "not_found").await;

    let metrics = server.metrics().await;
    assert_eq!(
        sample_value(&metrics, "camwire_releases_total{cause=\"admin\"}"),
        Some(1)
    );
}

on_both_databases!(admin_routes_reject_users_and_anonymous);

async fn admin_routes_reject_users_and_anonymous(database: Database) {
    let server = tiny_pool_server(database).await;
    let password = server.add_user("alice").await;
    let token = server.login("alice", &password).await;
    server.register(&token, &new_public_key()).await;
    let before = server.counts().await;

    for (method, path) in [
        ("GET", "/admin/peers"),
        ("GET", "/admin/pool"),
        ("DELETE", "/admin/peers/anything"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");

        let as_user = server
            .authorized(
                server.http.request(method.clone(), server.url(path)),
                &token,
            )
            .send()
            .await
            .expect("request is sent");
        let anonymous = server
            .http
            .request(method.clone(), server.url(path))
            .send()
            .await
            .expect("request is sent");

        let message = expect_error(as_user, StatusCode::FORBIDDEN, "forbidden").await;
        assert!(
            message.contains("administrators"),
            "{method} {path}: {message}"
        );
        expect_error(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    assert_eq!(server.counts().await, before);
}

on_both_databases!(admin_pool_and_metrics_count_allocations);

async fn admin_pool_and_metrics_count_allocations(database: Database) {
    let server = tiny_pool_server(database).await;
    let admin = server.admin_token().await;
    let password = server.add_user("alice").await;
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let token = server.login("alice", &password).await;
        server.register(&token, &new_public_key()).await;
        tokens.push(token);
    }
    server.logout(&tokens[0]).await;
    let wrong = server.login_response("alice", "wrong").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let pool: PoolStatus =
        expect_json(server.get("/admin/pool", &admin).await, StatusCode::OK).await;
    let metrics = server.metrics().await;

    assert_eq!(
        pool,
        PoolStatus {
            cidr: "10.13.0.0/29".parse().expect("CIDR"),
            size: 5,
            allocated: 2,
            free: 3,
            lowest_free: Some(Ipv4Addr::new(10, 13, 0, 2)),
        }
    );
    assert_eq!(sample_value(&metrics, "camwire_pool_size"), Some(5));
    assert_eq!(sample_value(&metrics, "camwire_pool_allocated"), Some(2));
    assert_eq!(sample_value(&metrics, "camwire_allocations_total"), Some(3));
    assert_eq!(
        sample_value(&metrics, "camwire_releases_total{cause=\"logout\"}"),
        Some(1)
    );
    assert_eq!(
        sample_value(&metrics, "camwire_sign_ins_total"),
        Some(4),
        "three users' and the admin's"
    );
    assert_eq!(
        sample_value(&metrics, "camwire_failed_sign_ins_total"),
        Some(1)
    );
}

#[tokio::test]
async fn metrics_use_the_exposition_content_type() {
    let server = TestServer::start(Database::Sqlite).await;

    let response = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("request is sent");

    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let text = response.text().await.expect("body");
    assert!(text.contains("# TYPE camwire_pool_size gauge"), "{text}");
}
