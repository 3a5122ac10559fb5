//! Server-supplied strings in the client's logs: a hostile server must not be able to add
//! log lines of its own by sending line breaks.

mod support;

use camwire_api::Password;
use camwire_client::{MemoryStore, Session, SignInError, SignInStep, TunnelSettings};
use support::{Behavior, FakeCamwire, LogCapture};

/// Text that a forged log line starts with.
const FORGED: &str = "2026-01-01T00:00:00.000000Z  INFO camwire_client: FORGED";

#[track_caller]
fn assert_no_forged_line(logs: &str) {
    assert!(
        !logs.lines().any(|line| line.starts_with(FORGED)),
        "a server string started a log line of its own:\n{logs}"
    );
}

#[tokio::test]
async fn user_id_line_break_is_rejected() {
    let (capture, _guard) = LogCapture::start();
    let server = FakeCamwire::start().await;
    server.set_behavior(Behavior {
        login_user_patch: Some(|user| user.id = format!("id-alice\n{FORGED}")),
        ..Behavior::default()
    });

    let error = Session::sign_in(
        support::api(&server.url),
        "alice",
        &Password::new(support::PASSWORD),
    )
    .await
    .expect_err("the user id contains a line break");

    let SignInError::InvalidReply { step, error: field } = &error else {
        panic!("expected an invalid reply, got {error:?}");
    };
    assert_eq!(*step, SignInStep::Login);
    assert_eq!(field.field, "id");
    assert!(!error.to_string().contains('\n'), "{error}");
    assert_no_forged_line(&capture.text());
}

#[tokio::test]
async fn stored_endpoint_is_logged_escaped() {
    let (capture, _guard) = LogCapture::start();
    let url = support::stopped_server_url().await;
    let mut credentials = support::credentials(&url, "token-under-test");
    // The invalid key makes the start fail before the endpoint is resolved, so no lookup of
    // this host name leaves the machine.
    credentials.profile.wireguard.server_public_key = "AAAA".to_owned();
    credentials.profile.wireguard.endpoint = format!("127.0.0.1:9\n{FORGED}");
    let mut session = Session::resume(support::api(&url), credentials);

    session.ensure_tunnel(&TunnelSettings::default()).await;

    let logs = capture.text();
    assert!(
        logs.contains("the tunnel could not start"),
        "the start failure was not logged:\n{logs}"
    );
    assert!(logs.contains("\\n2026-01-01"), "{logs}");
    assert_no_forged_line(&logs);
    session.stop_tunnel().await;
}

#[tokio::test]
async fn sign_out_logs_user_id_escaped() {
    let (capture, _guard) = LogCapture::start();
    let url = support::stopped_server_url().await;
    let mut credentials = support::credentials(&url, "token-under-test");
    credentials.profile.user.id = format!("id-alice\n{FORGED}");
    let session = Session::resume(support::api(&url), credentials);

    let report = session.sign_out(&MemoryStore::new()).await;

    let logs = capture.text();
    assert!(report.store_cleared());
    assert!(logs.contains("stopped the tunnel"), "{logs}");
    assert!(logs.contains("id-alice\\n2026-01-01"), "{logs}");
    assert_no_forged_line(&logs);
}
