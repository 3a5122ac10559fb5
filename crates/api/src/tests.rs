use super::*;
use serde_json::json;

#[test]
fn logout_response_from_older_server_parses() {
    let body = json!({"message": "Logged out"});

    let parsed: LogoutResponse = serde_json::from_value(body).expect("message-only body parses");

    assert_eq!(parsed.message, "Logged out");
    assert_eq!(parsed.session_invalidated, None);
    assert_eq!(parsed.wireguard, None);
}

#[test]
fn logout_response_uses_contract_field_names() {
    let response = LogoutResponse {
        message: "Signed out".into(),
        session_invalidated: Some(true),
        wireguard: Some(WireguardCleanup {
            status: CleanupStatus::NotConfigured,
            released_address: None,
            peer_removed: false,
            detail: None,
        }),
    };

    let value = serde_json::to_value(&response).expect("serializes");

    assert_eq!(
        value,
        json!({
            "message": "Signed out",
            "session_invalidated": true,
            "wireguard": {
                "status": "not_configured",
                "released_address": null,
                "peer_removed": false,
                "detail": null,
            }
        })
    );
}

#[test]
fn wireguard_config_round_trips_with_contract_names() {
    let body = json!({
        "address": "10.13.0.2/32",
        "server_address": "10.13.0.1",
        "server_public_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "endpoint": "vpn.example.com:51820",
        "allowed_ips": ["10.13.0.0/16"],
        "persistent_keepalive": 25,
        "expires_at": "2026-12-05T10:00:00Z",
    });

    let config: WireguardConfig = serde_json::from_value(body.clone()).expect("parses");

    assert_eq!(config.address.to_string(), "10.13.0.2/32");
    assert_eq!(config.server_address, Ipv4Addr::new(10, 13, 0, 1));
    assert_eq!(config.allowed_ips.len(), 1);
    assert_eq!(serde_json::to_value(&config).expect("serializes"), body);
}

#[test]
fn wireguard_config_rejects_address_that_is_not_ipv4() {
    let body = json!({
        "address": "not-an-address",
        "server_address": "10.13.0.1",
        "server_public_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "endpoint": "127.0.0.1:51820",
        "allowed_ips": [],
        "persistent_keepalive": 25,
        "expires_at": "2026-12-05T10:00:00Z",
    });

    let result = serde_json::from_value::<WireguardConfig>(body);

    assert!(result.is_err());
}

#[test]
fn login_response_parses_and_keeps_token_out_of_debug() {
    let body = json!({
        "access_token": "c2VjcmV0LXRva2Vu",
        "token_type": "bearer",
        "expires_at": "2026-12-05T10:00:00Z",
        "user": {
            "id": "7f1c",
            "username": "alice",
            "display_name": "Alice Liddell",
            "email": "alice@example.com",
            "role": "user",
        }
    });

    let login: LoginResponse = serde_json::from_value(body).expect("parses");
    let printed = format!("{login:?}");

    assert_eq!(login.access_token.expose(), "c2VjcmV0LXRva2Vu");
    assert_eq!(login.user.role, Role::User);
    assert!(
        !printed.contains("c2VjcmV0LXRva2Vu"),
        "token leaked into Debug: {printed}"
    );
    assert!(printed.contains("<redacted>"));
}

#[test]
fn login_request_keeps_password_out_of_debug() {
    let request = LoginRequest {
        username: "alice".into(),
        password: Password::new("hunter2"),
    };

    let printed = format!("{request:?}");

    assert!(
        !printed.contains("hunter2"),
        "password leaked into Debug: {printed}"
    );
}

#[test]
fn unknown_role_is_rejected() {
    let result = serde_json::from_value::<Role>(json!("root"));

    assert!(result.is_err());
}

#[test]
fn parse_key_accepts_wg_style_key() {
    let key = parse_key("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").expect("valid key");

    assert_eq!(key, [0u8; KEY_LEN]);
}

#[test]
fn parse_key_rejects_bad_values() {
    let cases = [
        ("not base64 at all!", "not base64"),
        ("AAAA", "decodes to 3 bytes"),
        ("", "decodes to 0 bytes"),
        (
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "decodes to 36 bytes",
        ),
    ];

    for (input, expected) in cases {
        let error = parse_key(input).expect_err(input);
        let message = error.to_string();
        assert!(message.contains(expected), "{input:?}: {message}");
    }
}

#[test]
fn parse_key_error_quotes_only_a_prefix() {
    let huge = "A".repeat(100_000);

    let message = parse_key(&huge).expect_err("too long").to_string();

    assert!(message.len() < 300, "message is {} bytes", message.len());
}

#[test]
fn fingerprint_is_first_eight_base64_characters() {
    assert_eq!(fingerprint(&[0u8; KEY_LEN]), "AAAAAAAA");
}

#[test]
fn admin_bodies_use_snake_case_names() {
    let status = PoolStatus {
        cidr: "10.13.0.0/29".parse().expect("CIDR"),
        size: 5,
        allocated: 1,
        free: 4,
        lowest_free: Some(Ipv4Addr::new(10, 13, 0, 3)),
    };

    let value = serde_json::to_value(&status).expect("serializes");

    assert_eq!(
        value,
        json!({
            "cidr": "10.13.0.0/29",
            "size": 5,
            "allocated": 1,
            "free": 4,
            "lowest_free": "10.13.0.3",
        })
    );
}

#[test]
fn admin_peer_round_trips() {
    let body = json!({
        "id": "p1",
        "user_id": "u1",
        "username": "alice",
        "session_id": "s1",
        "address": "10.13.0.2",
        "public_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "created_at": "2026-12-05T10:00:00Z",
        "last_handshake": null,
        "expires_at": "2026-12-06T10:00:00Z",
        "idle_expires_at": "2026-12-06T10:00:00Z",
    });

    let peer: AdminPeer = serde_json::from_value(body.clone()).expect("parses");

    assert_eq!(peer.address, Ipv4Addr::new(10, 13, 0, 2));
    assert_eq!(peer.last_handshake, None);
    assert_eq!(serde_json::to_value(&peer).expect("serializes"), body);
}
