//! Bad requests get the JSON error body and change nothing in the database.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use reqwest::{Client, RequestBuilder, StatusCode};

use camwire_api::LoginResponse;
use camwire_server::db::unix_now;
use camwire_server::rate_limit::{DEFAULT_MAX_FAILURES_PER_ADDRESS, LoginLimits};

use crate::common::{Database, TestServer, expect_error, expect_json, new_public_key};

/// One bad request and the error it must get.
struct Case {
    name: &'static str,
    request: RequestBuilder,
    status: StatusCode,
    code: &'static str,
    /// Text that the message must contain.
    mentions: &'static str,
}

on_both_databases!(bad_requests_get_errors_and_change_nothing);

async fn bad_requests_get_errors_and_change_nothing(database: Database) {
    let server = TestServer::start(database).await;
    let password = server.add_user("alice").await;
    let token = server.login("alice", &password).await;
    let http = &server.http;
    let one_mebibyte = vec![b' '; 1 << 20];
    let unknown_token = "A".repeat(43);

    let cases = vec![
        Case {
            name: "malformed JSON",
            request: http
                .post(server.url("/login"))
                .header("content-type", "application/json")
                .body(r#"{"username": "alice", "password":"#),
            status: StatusCode::BAD_REQUEST,
            code: "malformed_request",
            mentions: r#"{"username": "alice", "password": "..."}"#,
        },
        Case {
            name: "wrong field types",
            request: http
                .post(server.url("/login"))
                .json(&serde_json::json!({"username": 5, "password": true})),
            status: StatusCode::BAD_REQUEST,
            code: "malformed_request",
            mentions: "invalid type",
        },
        Case {
            name: "missing field",
            request: http.post(server.url("/login")).json(&serde_json::json!({"username": "alice"})),
            status: StatusCode::BAD_REQUEST,
            code: "malformed_request",
            mentions: "missing field `password`",
        },
        Case {
            name: "missing content type",
            request: http
                .post(server.url("/login"))
                .body(r#"{"username": "alice", "password": "x"}"#),
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "unsupported_media_type",
            mentions: "Content-Type: application/json",
        },
        Case {
            name: "1 MiB login body",
            request: http
                .post(server.url("/login"))
                .header("content-type", "application/json")
                .body(one_mebibyte.clone()),
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "payload_too_large",
            mentions: "65536 bytes",
        },
        Case {
            name: "1 MiB key body",
            request: server
                .authorized(http.post(server.url("/wireguard/config")), &token)
                .header("content-type", "application/json")
                .body(one_mebibyte.clone()),
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "payload_too_large",
            mentions: "65536 bytes",
        },
        Case {
            name: "key not base64",
            request: server
                .authorized(http.post(server.url("/wireguard/config")), &token)
                .json(&serde_json::json!({"public_key": "not a key!"})),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_public_key",
            mentions: "\"not a key!\"",
        },
        Case {
            name: "key of 31 bytes",
            request: server
                .authorized(http.post(server.url("/wireguard/config")), &token)
                .json(&serde_json::json!({"public_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="})),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_public_key",
            mentions: "decodes to 31 bytes",
        },
        Case {
            name: "key of 33 bytes",
            request: server
                .authorized(http.post(server.url("/wireguard/config")), &token)
                .json(&serde_json::json!({"public_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"})),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_public_key",
            mentions: "decodes to 33 bytes",
        },
        Case {
            name: "all-zero key",
            request: server
                .authorized(http.post(server.url("/wireguard/config")), &token)
                .json(&serde_json::json!({"public_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="})),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_public_key",
            mentions: "zero",
        },
        Case {
            name: "key of wrong type",
            request: server
                .authorized(http.post(server.url("/wireguard/config")), &token)
                .json(&serde_json::json!({"public_key": 42})),
            status: StatusCode::BAD_REQUEST,
            code: "malformed_request",
            mentions: "public_key",
        },
        Case {
            name: "missing Authorization",
            request: http
                .post(server.url("/wireguard/config"))
                .json(&serde_json::json!({"public_key": new_public_key()})),
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            mentions: "missing Authorization header",
        },
        Case {
            name: "Authorization with another scheme",
            request: http
                .post(server.url("/wireguard/config"))
                .header("authorization", format!("Basic {token}"))
                .json(&serde_json::json!({"public_key": new_public_key()})),
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            mentions: "malformed Authorization header",
        },
        Case {
            name: "Authorization with a short token",
            request: http.get(server.url("/me")).header("authorization", "Bearer abc"),
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            mentions: "malformed Authorization header",
        },
        Case {
            name: "unknown token",
            request: server.authorized(http.post(server.url("/logout")), &unknown_token),
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            mentions: "invalid access token",
        },
        Case {
            name: "unknown token on delete",
            request: server.authorized(http.delete(server.url("/wireguard/config")), &unknown_token),
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            mentions: "invalid access token",
        },
        Case {
            name: "unknown user",
            request: http
                .post(server.url("/login"))
                .json(&serde_json::json!({"username": "mallory", "password": "x"})),
            status: StatusCode::UNAUTHORIZED,
            code: "invalid_credentials",
            mentions: "invalid user name or password",
        },
        Case {
            name: "wrong password",
            request: http
                .post(server.url("/login"))
                .json(&serde_json::json!({"username": "alice", "password": "wrong"})),
            status: StatusCode::UNAUTHORIZED,
            code: "invalid_credentials",
            mentions: "invalid user name or password",
        },
        Case {
            name: "unknown route",
            request: http.get(server.url("/wireguard")),
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            mentions: "GET /wireguard",
        },
        Case {
            name: "wrong method",
            request: http.put(server.url("/login")),
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "method_not_allowed",
            mentions: "PUT",
        },
    ];

    let before = server.counts().await;

    for case in cases {
        let response = case
            .request
            .send()
            .await
            .unwrap_or_else(|error| panic!("{}: {error}", case.name));
        let www_authenticate = response.headers().get("www-authenticate").cloned();

        let message = expect_error(response, case.status, case.code).await;

        assert!(message.contains(case.mentions), "{}: {message}", case.name);
        if case.status == StatusCode::UNAUTHORIZED {
            let header =
                www_authenticate.unwrap_or_else(|| panic!("{}: no WWW-Authenticate", case.name));
            assert!(
                header.as_bytes().starts_with(b"Bearer"),
                "{}: {header:?}",
                case.name
            );
        }
        assert_eq!(
            server.counts().await,
            before,
            "{} changed the database",
            case.name
        );
    }
}

on_both_databases!(wrong_method_lists_allowed_methods);

async fn wrong_method_lists_allowed_methods(database: Database) {
    let server = TestServer::start(database).await;

    let response = server
        .http
        .delete(server.url("/me"))
        .send()
        .await
        .expect("request is sent");

    let allow = response.headers().get("allow").cloned();
    expect_error(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    assert!(allow.is_some_and(|value| value.to_str().is_ok_and(|text| text.contains("GET"))));
}

on_both_databases!(expired_token_gets_401_and_keeps_peer);

async fn expired_token_gets_401_and_keeps_peer(database: Database) {
    let server = TestServer::start(database).await;
    let password = server.add_user("alice").await;
    let token = server.login("alice", &password).await;
    server.register(&token, &new_public_key()).await;
    sqlx::query("UPDATE sessions SET expires_at = $1")
        .bind(unix_now() - 1)
        .execute(server.db().pool())
        .await
        .expect("expiry is set");
    let before = server.counts().await;

    let me = server.get("/me", &token).await;
    let config = server.get("/wireguard/config", &token).await;
    let logout = server.logout_response(&token).await;

    let message = expect_error(me, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(message.contains("expired"), "{message}");
    expect_error(config, StatusCode::UNAUTHORIZED, "unauthorized").await;
    expect_error(logout, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_eq!(server.counts().await, before);
}

on_both_databases!(session_ttl_sets_token_expiry);

async fn session_ttl_sets_token_expiry(database: Database) {
    let server = TestServer::start_with(database, |config| {
        config.session_ttl = Duration::from_secs(3_600)
    })
    .await;
    let password = server.add_user("alice").await;

    let response = server.login_response("alice", &password).await;

    let login: LoginResponse = expect_json(response, StatusCode::OK).await;
    let lifetime = login.expires_at.timestamp() - unix_now();
    assert!((3_598..=3_600).contains(&lifetime), "{lifetime}");
}

on_both_databases!(repeated_wrong_passwords_are_rate_limited);

async fn repeated_wrong_passwords_are_rate_limited(database: Database) {
    let server = TestServer::start(database).await;
    let password = server.add_user("alice").await;

    for attempt in 0..10 {
        let response = server.login_response("alice", "wrong").await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}"
        );
    }

    // Blocked even with the right password, until the window has passed.
    let blocked = server.login_response("alice", &password).await;

    let retry_after = blocked
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<u64>().ok());
    expect_error(blocked, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert!(
        retry_after.is_some_and(|seconds| (1..=60).contains(&seconds)),
        "{retry_after:?}"
    );
    assert_eq!(server.counts().await.sessions, 0);
}

on_both_databases!(failures_from_one_ip_are_rate_limited);

async fn failures_from_one_ip_are_rate_limited(database: Database) {
    let server = TestServer::start(database).await;
    let password = server.add_user("alice").await;

    for index in 0..DEFAULT_MAX_FAILURES_PER_ADDRESS {
        let response = server.login_response(&format!("guess{index}"), "x").await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {index}"
        );
    }

    let blocked = server.login_response("alice", &password).await;

    expect_error(blocked, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
}

/// Returns an HTTP client whose connections come from the loopback address 127.0.0.`last_octet`.
fn client_from(last_octet: u8) -> Client {
    Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last_octet)))
        .build()
        .expect("HTTP client")
}

/// Signs in as `username` through `http` and returns the status.
async fn login_status(
    server: &TestServer,
    http: &Client,
    username: &str,
    password: &str,
) -> StatusCode {
    http.post(server.url("/login"))
        .json(&serde_json::json!({"username": username, "password": password}))
        .send()
        .await
        .expect("request is sent")
        .status()
}

on_both_databases!(wrong_passwords_block_only_their_address);

async fn wrong_passwords_block_only_their_address(database: Database) {
    let server = TestServer::start(database).await;
    let password = server.add_user("bob").await;
    let attacker = client_from(1);
    let owner = client_from(2);
    for attempt in 0..10 {
        let status = login_status(&server, &attacker, "bob", "wrong").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }

    let from_attacker = login_status(&server, &attacker, "bob", &password).await;
    let from_owner = login_status(&server, &owner, "bob", &password).await;

    assert_eq!(from_attacker, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(from_owner, StatusCode::OK);
}

on_both_databases!(guesses_from_many_addresses_block_the_user_name);

async fn guesses_from_many_addresses_block_the_user_name(database: Database) {
    let server = TestServer::start_with(database, |config| {
        config.login_limits = LoginLimits {
            max_failures_per_pair: 2,
            max_failures_per_address: 10,
            max_failures_per_username: 4,
            window: Duration::from_secs(60),
        };
    })
    .await;
    let bob_password = server.add_user("bob").await;
    let alice_password = server.add_user("alice").await;
    for last_octet in 1..=4 {
        let status = login_status(&server, &client_from(last_octet), "bob", "wrong").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "127.0.0.{last_octet}");
    }

    let bob = login_status(&server, &client_from(5), "bob", &bob_password).await;
    let alice = login_status(&server, &client_from(5), "alice", &alice_password).await;

    assert_eq!(bob, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(alice, StatusCode::OK);
}

on_both_databases!(healthz_answers_ok);

async fn healthz_answers_ok(database: Database) {
    let server = TestServer::start(database).await;

    let response = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("request is sent");

    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.expect("JSON body");
    assert_eq!(body, serde_json::json!({"status": "ok"}));
}
