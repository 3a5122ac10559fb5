//! Sign-in: the happy path, half-made sessions that must be logged out again, hostile replies,
//! and the same checks of replies when a saved session is confirmed.

mod support;

use std::sync::Arc;

use camwire_api::{Password, WireguardConfig};
use camwire_client::{
    ApiError, Confirmation, Controller, ControllerError, JsonFileStore, Phase, Route, Session,
    SignInError, SignInStep, UnreachableReason,
};
use support::{Behavior, Counters, FakeCamwire, RawReplyServer};

fn password() -> Password {
    Password::new(support::PASSWORD)
}

#[tokio::test]
async fn sign_in_registers_new_key_and_loads_profile() {
    support::init_logging();
    let server = FakeCamwire::start().await;

    let session = Session::sign_in(support::api(&server.url), "alice", &password())
        .await
        .expect("signs in");

    let profile = session.profile();
    assert_eq!(profile.user.username, "alice");
    assert_eq!(profile.wireguard.address.to_string(), "10.13.0.2/32");
    assert_eq!(
        server.registered_keys(),
        [session.credentials().private_key.public_key().to_base64()]
    );
    assert_eq!(session.credentials().server_url.to_string(), server.url);
    assert_eq!(Counters::get(&server.counters().login), 1);
    assert_eq!(Counters::get(&server.counters().register_key), 1);
    assert_eq!(Counters::get(&server.counters().me), 1);
    assert_eq!(Counters::get(&server.counters().logout), 0);
}

#[tokio::test]
async fn wrong_password_is_named_and_needs_no_logout() {
    support::init_logging();
    let server = FakeCamwire::start().await;

    let error = Session::sign_in(support::api(&server.url), "alice", &Password::new("wrong"))
        .await
        .expect_err("wrong password");

    assert_eq!(error, SignInError::InvalidCredentials);
    assert_eq!(error.to_string(), "wrong user name or password");
    assert_eq!(Counters::get(&server.counters().register_key), 0);
    assert_eq!(Counters::get(&server.counters().logout), 0);
}

#[tokio::test]
async fn exhausted_pool_logs_out_and_stores_nothing() {
    support::init_logging();
    let server = FakeCamwire::start().await;
    server.set_behavior(Behavior {
        pool_exhausted: true,
        ..Behavior::default()
    });
    let folder = tempfile::tempdir().expect("temporary folder");
    let path = folder.path().join("credentials.json");
    let controller = Controller::new(Arc::new(JsonFileStore::new(&path)), support::options());
    controller.resume().await;

    let error = controller
        .sign_in(&server.url, "alice", password())
        .await
        .expect_err("pool exhausted");

    assert!(
        matches!(
            error,
            ControllerError::SignIn(SignInError::AddressPoolExhausted)
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("address pool exhausted"),
        "{error}"
    );
    assert_eq!(
        Counters::get(&server.counters().logout),
        1,
        "the half-made session was not logged out"
    );
    assert_eq!(server.live_sessions(), 0);
    assert!(!path.exists(), "a failed sign-in wrote the store");
    assert_eq!(controller.snapshot().phase, Phase::SignedOut);
    assert_eq!(controller.snapshot().profile, None);
}

#[tokio::test]
async fn failed_profile_fetch_logs_out() {
    support::init_logging();
    let server = FakeCamwire::start().await;
    server.set_behavior(Behavior {
        me_status: Some(500),
        ..Behavior::default()
    });

    let error = Session::sign_in(support::api(&server.url), "alice", &password())
        .await
        .expect_err("GET /me fails");

    let SignInError::Step { step, source } = &error else {
        panic!("expected a step error, got {error:?}");
    };
    assert_eq!(*step, SignInStep::FetchProfile);
    assert_eq!(source.status(), Some(500));
    assert!(
        error.to_string().starts_with("loading the profile failed"),
        "{error}"
    );
    assert_eq!(Counters::get(&server.counters().logout), 1);
    assert_eq!(server.live_sessions(), 0);
}

#[tokio::test]
async fn every_sign_in_uses_a_new_key() {
    support::init_logging();
    let server = FakeCamwire::start().await;
    let store = support::MemoryStoreHandle::new();
    let controller = Controller::new(store.clone_arc(), support::options());

    controller
        .sign_in(&server.url, "alice", password())
        .await
        .expect("first sign-in");
    let first_key = store.load_credentials().private_key.public_key();
    controller.sign_out().await;
    controller
        .sign_in(&server.url, "alice", password())
        .await
        .expect("second sign-in");
    let second_key = store.load_credentials().private_key.public_key();

    let registered = server.registered_keys();
    assert_eq!(registered.len(), 2);
    assert_ne!(registered[0], registered[1]);
    assert_ne!(first_key, second_key);
    assert_eq!(registered[1], second_key.to_base64());
    assert_eq!(Counters::get(&server.counters().login), 2);
}

#[tokio::test]
async fn unreachable_server_error_names_url_and_cause() {
    support::init_logging();
    let url = support::stopped_server_url().await;
    let controller = Controller::new(
        Arc::new(camwire_client::MemoryStore::new()),
        support::options(),
    );

    let error = controller
        .sign_in(&url, "alice", password())
        .await
        .expect_err("refused");

    let message = error.to_string();
    assert!(
        message.starts_with("signing in failed: could not reach the server at"),
        "{message}"
    );
    assert!(message.contains(&url), "{message}");
    assert!(message.contains("connection refused"), "{message}");
}

#[tokio::test]
async fn invalid_url_is_rejected_before_any_request() {
    let controller = Controller::new(
        Arc::new(camwire_client::MemoryStore::new()),
        support::options(),
    );

    let error = controller
        .sign_in("localhost:8080", "alice", password())
        .await
        .expect_err("no scheme");

    assert!(
        matches!(error, ControllerError::InvalidServerUrl(_)),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("\"http://localhost:8080\""),
        "{error}"
    );
}

#[tokio::test]
async fn empty_fields_are_rejected() {
    let controller = Controller::new(
        Arc::new(camwire_client::MemoryStore::new()),
        support::options(),
    );

    let no_user = controller
        .sign_in("http://127.0.0.1:9", "  ", password())
        .await
        .expect_err("no user");
    let no_password = controller
        .sign_in("http://127.0.0.1:9", "alice", Password::new(""))
        .await
        .expect_err("no password");

    assert_eq!(no_user.to_string(), "enter your user name");
    assert_eq!(no_password.to_string(), "enter your password");
}

#[tokio::test]
async fn oversized_reply_is_rejected() {
    support::init_logging();
    let huge = format!("{{\"padding\":\"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let server = RawReplyServer::json(200, &huge).await;

    let error = Session::sign_in(support::api(&server.url), "alice", &password())
        .await
        .expect_err("too large");

    let SignInError::Step { source, .. } = &error else {
        panic!("expected a step error, got {error:?}");
    };
    assert!(
        matches!(
            source,
            ApiError::BodyTooLarge {
                limit: 1_048_576,
                ..
            }
        ),
        "{source:?}"
    );
}

#[tokio::test]
async fn oversized_chunked_reply_is_rejected() {
    support::init_logging();
    let mut reply =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    let chunk = "y".repeat(64 * 1024);
    for _ in 0..20 {
        reply.extend_from_slice(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes());
    }
    reply.extend_from_slice(b"0\r\n\r\n");
    let server = RawReplyServer::start(reply).await;

    let error = support::api(&server.url)
        .health()
        .await
        .expect_err("too large");

    assert!(matches!(error, ApiError::BodyTooLarge { .. }), "{error:?}");
}

#[tokio::test]
async fn hostile_login_replies_give_typed_errors() {
    support::init_logging();
    let cases: [(u16, &str); 6] = [
        (200, ""),
        (200, "null"),
        (200, r#"{"access_token": 5}"#),
        (
            200,
            r#"{"access_token":"t","token_type":"mac","expires_at":"2030-01-01T00:00:00Z","user":{}}"#,
        ),
        (200, "[1, 2, 3"),
        (418, "I'm a teapot"),
    ];

    for (status, body) in cases {
        let server = RawReplyServer::json(status, body).await;

        let error = Session::sign_in(support::api(&server.url), "alice", &password())
            .await
            .expect_err(body);

        let SignInError::Step {
            step: SignInStep::Login,
            source,
        } = &error
        else {
            panic!("{body:?}: expected a login step error, got {error:?}");
        };
        assert!(
            matches!(
                source,
                ApiError::InvalidBody { .. } | ApiError::UnexpectedStatus { status: 418, .. }
            ),
            "{body:?}: {source:?}"
        );
    }
}

#[tokio::test]
async fn server_message_is_cleaned_before_display() {
    support::init_logging();
    let message = format!("Maintenance\\n\\u001b[31mFAKE LOG LINE{}", "!".repeat(5000));
    let body = format!(r#"{{"error":"maintenance","message":"{message}"}}"#);
    let server = RawReplyServer::json(503, &body).await;

    let error = Session::sign_in(support::api(&server.url), "alice", &password())
        .await
        .expect_err("503");

    let text = error.to_string();
    assert!(!text.contains('\n'), "{text}");
    assert!(!text.contains('\u{1b}'), "{text}");
    assert!(text.len() < 600, "message is {} bytes", text.len());
}

#[tokio::test]
async fn connect_refused_is_typed() {
    let url = support::stopped_server_url().await;

    let error = support::api(&url).health().await.expect_err("refused");

    assert_eq!(
        error.unreachable_reason(),
        Some(&UnreachableReason::ConnectionRefused)
    );
}

#[tokio::test]
async fn rate_limit_passes_server_message() {
    support::init_logging();
    let server = RawReplyServer::json(
        429,
        r#"{"error":"rate_limited","message":"Too many attempts; retry in 30 s."}"#,
    )
    .await;

    let error = Session::sign_in(support::api(&server.url), "alice", &password())
        .await
        .expect_err("429");

    assert_eq!(
        error,
        SignInError::RateLimited {
            message: "Too many attempts; retry in 30 s.".into()
        }
    );
    assert!(error.to_string().contains("retry in 30 s"), "{error}");
}

/// Signs in through a controller with a file store, expects an invalid reply, and checks that
/// the half-made session was logged out and nothing was stored.
async fn sign_in_rejecting_reply(behavior: Behavior) -> SignInError {
    support::init_logging();
    let server = FakeCamwire::start().await;
    server.set_behavior(behavior);
    let folder = tempfile::tempdir().expect("temporary folder");
    let path = folder.path().join("credentials.json");
    let controller = Controller::new(Arc::new(JsonFileStore::new(&path)), support::options());
    controller.resume().await;

    let error = controller
        .sign_in(&server.url, "alice", password())
        .await
        .expect_err("the reply is invalid");

    let ControllerError::SignIn(error) = error else {
        panic!("expected a sign-in error, got {error:?}");
    };
    let text = error.to_string();
    assert!(
        text.starts_with("the server sent an invalid reply while"),
        "{text}"
    );
    assert!(text.ends_with("contact the server's operator"), "{text}");
    assert!(text.len() < 600, "the message is {} bytes", text.len());
    assert_eq!(
        Counters::get(&server.counters().logout),
        1,
        "the half-made session was not logged out"
    );
    assert_eq!(server.live_sessions(), 0);
    assert!(!path.exists(), "a failed sign-in wrote the store");
    assert_eq!(controller.snapshot().phase, Phase::SignedOut);
    assert_eq!(controller.snapshot().profile, None);
    error
}

#[track_caller]
fn assert_invalid_field(error: &SignInError, expected_step: SignInStep, expected_field: &str) {
    let SignInError::InvalidReply { step, error: field } = error else {
        panic!("expected an invalid reply, got {error:?}");
    };
    assert_eq!(*step, expected_step, "{error}");
    assert_eq!(field.field, expected_field, "{error}");
}

/// A change that the fake server makes to the WireGuard configs it sends.
type ConfigPatch = fn(&mut WireguardConfig);

#[tokio::test]
async fn unusable_wireguard_config_is_not_stored() {
    let cases: [(ConfigPatch, &str); 9] = [
        (
            |config| config.endpoint = format!("{}:51820", "a".repeat(800_000)),
            "endpoint",
        ),
        (
            |config| config.endpoint = "127.0.0.1".to_owned(),
            "endpoint",
        ),
        (
            |config| config.endpoint = "127.0.0.1:0".to_owned(),
            "endpoint",
        ),
        (
            |config| config.server_public_key = "AAAA".to_owned(),
            "server_public_key",
        ),
        (
            |config| config.address = "0.0.0.0/32".parse().expect("valid network"),
            "address",
        ),
        (
            |config| config.address = "224.0.0.5/32".parse().expect("valid network"),
            "address",
        ),
        (
            |config| config.address = "127.0.0.2/32".parse().expect("valid network"),
            "address",
        ),
        (
            |config| config.address = "10.13.0.0/16".parse().expect("valid network"),
            "address",
        ),
        (
            |config| config.allowed_ips = vec!["192.168.0.0/16".parse().expect("valid network")],
            "server_address",
        ),
    ];

    for (patch, field) in cases {
        let error = sign_in_rejecting_reply(Behavior {
            config_patch: Some(patch),
            ..Behavior::default()
        })
        .await;

        assert_invalid_field(&error, SignInStep::RegisterKey, field);
    }
}

#[tokio::test]
async fn profile_of_another_user_is_rejected() {
    let error = sign_in_rejecting_reply(Behavior {
        me_user_patch: Some(|user| user.id = "id-mallory".to_owned()),
        ..Behavior::default()
    })
    .await;

    assert_invalid_field(&error, SignInStep::FetchProfile, "id");
    assert!(error.to_string().contains("\"id-alice\""), "{error}");
}

#[tokio::test]
async fn oversized_profile_texts_are_rejected() {
    let cases: [(Behavior, SignInStep, &str); 4] = [
        (
            Behavior {
                login_user_patch: Some(|user| user.display_name = "x".repeat(900_000)),
                ..Behavior::default()
            },
            SignInStep::Login,
            "display_name",
        ),
        (
            Behavior {
                me_user_patch: Some(|user| user.display_name = "x".repeat(900_000)),
                ..Behavior::default()
            },
            SignInStep::FetchProfile,
            "display_name",
        ),
        (
            Behavior {
                me_user_patch: Some(|user| user.username = "x".repeat(257)),
                ..Behavior::default()
            },
            SignInStep::FetchProfile,
            "username",
        ),
        (
            Behavior {
                me_user_patch: Some(|user| user.email = format!("{}@example.com", "x".repeat(300))),
                ..Behavior::default()
            },
            SignInStep::FetchProfile,
            "email",
        ),
    ];

    for (behavior, step, field) in cases {
        let error = sign_in_rejecting_reply(behavior).await;

        assert_invalid_field(&error, step, field);
    }
}

#[tokio::test]
async fn confirm_rejects_unusable_config_and_keeps_profile() {
    support::init_logging();
    let server = FakeCamwire::start().await;
    let credentials = server.credentials("token-saved", 2);
    let saved_profile = credentials.profile.clone();
    let mut session = Session::resume(support::api(&server.url), credentials);
    server.set_behavior(Behavior {
        config_patch: Some(|config| config.endpoint = "127.0.0.1:0".to_owned()),
        ..Behavior::default()
    });

    let error = session.confirm().await.expect_err("the config is invalid");

    let ApiError::InvalidReply {
        route,
        error: field,
    } = &error
    else {
        panic!("expected an invalid reply, got {error:?}");
    };
    assert_eq!(*route, Route::WIREGUARD_CONFIG);
    assert_eq!(field.field, "endpoint");
    assert!(
        error.to_string().contains("contact the server's operator"),
        "{error}"
    );
    assert_eq!(session.profile(), &saved_profile);
}

#[tokio::test]
async fn confirm_rejects_profile_of_another_user() {
    support::init_logging();
    let server = FakeCamwire::start().await;
    let credentials = server.credentials("token-saved", 2);
    let saved_profile = credentials.profile.clone();
    let mut session = Session::resume(support::api(&server.url), credentials);
    server.set_behavior(Behavior {
        me_user_patch: Some(|user| user.id = "id-mallory".to_owned()),
        ..Behavior::default()
    });

    let error = session.confirm().await.expect_err("another user");

    let ApiError::InvalidReply {
        route,
        error: field,
    } = &error
    else {
        panic!("expected an invalid reply, got {error:?}");
    };
    assert_eq!(*route, Route::ME);
    assert_eq!(field.field, "id");
    assert_eq!(session.profile(), &saved_profile);
}

#[tokio::test]
async fn confirm_accepts_valid_replies() {
    support::init_logging();
    let server = FakeCamwire::start().await;
    let credentials = server.credentials("token-saved", 2);
    let mut session = Session::resume(support::api(&server.url), credentials);

    let confirmation = session.confirm().await.expect("confirms");

    assert_eq!(confirmation, Confirmation::Confirmed { changed: false });
}
