//! The controller's state machine: resume, serialized operations, and sign-out bounds.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use camwire_api::Password;
use camwire_client::{
    ApiOptions, Controller, CredentialStore, JsonFileStore, Phase, ServerOutcome, ServerStatus,
    SignOutOutcome,
};
use support::{Behavior, Counters, FakeCamwire, MemoryStoreHandle, SilentServer};

fn password() -> Password {
    Password::new(support::PASSWORD)
}

async fn signed_in_controller(server: &FakeCamwire) -> (Controller, MemoryStoreHandle) {
    support::init_logging();
    let store = MemoryStoreHandle::new();
    let controller = Controller::new(store.clone_arc(), support::options());
    controller.resume().await;
    controller
        .sign_in(&server.url, "alice", password())
        .await
        .expect("signs in");
    (controller, store)
}

#[tokio::test]
async fn sign_in_then_out_moves_through_phases() {
    let server = FakeCamwire::start().await;
    let store = MemoryStoreHandle::new();
    let controller = Controller::new(store.clone_arc(), support::options());
    assert_eq!(controller.snapshot().phase, Phase::Starting);

    let resumed = controller.resume().await;
    let signed_in = controller
        .sign_in(&server.url, "alice", password())
        .await
        .expect("signs in");
    let saved = store.load_credentials();
    let outcome = controller.sign_out().await;
    let signed_out = controller.snapshot();

    assert_eq!(resumed.phase, Phase::SignedOut);
    assert_eq!(signed_in.phase, Phase::SignedIn);
    assert_eq!(signed_in.server_status, ServerStatus::Confirmed);
    assert_eq!(
        signed_in
            .profile
            .as_ref()
            .map(|profile| profile.user.username.as_str()),
        Some("alice")
    );
    assert_eq!(
        saved.profile,
        signed_in.profile.clone().expect("has profile")
    );
    let SignOutOutcome::Completed(report) = outcome else {
        panic!("expected a completed sign-out, got {outcome:?}");
    };
    assert!(report.server_confirmed());
    assert_eq!(signed_out.phase, Phase::SignedOut);
    assert_eq!(signed_out.profile, None);
    assert_eq!(signed_out.server_url.as_deref(), Some(server.url.as_str()));
    let notice = signed_out.notice.expect("has a notice");
    assert_eq!(notice.kind, "confirmed");
    assert_eq!(notice.message, report.message());
    assert_eq!(store.store().entry(), None);
}

#[tokio::test]
async fn double_sign_out_runs_one_logout() {
    let server = FakeCamwire::start().await;
    let (controller, store) = signed_in_controller(&server).await;
    server.set_behavior(Behavior {
        logout_delay: Duration::from_millis(400),
        ..Behavior::default()
    });

    let (first, second) = tokio::join!(controller.sign_out(), controller.sign_out());

    assert_eq!(Counters::get(&server.counters().logout), 1);
    let SignOutOutcome::Completed(first_report) = &first else {
        panic!("first call did not sign out: {first:?}");
    };
    assert!(
        second == first || second == SignOutOutcome::AlreadySignedOut,
        "second call returned {second:?}"
    );
    assert!(first_report.server_confirmed());
    assert_eq!(store.store().entry(), None);
}

#[tokio::test]
async fn concurrent_sign_out_shares_report() {
    let server = FakeCamwire::start().await;
    let (controller, _store) = signed_in_controller(&server).await;
    server.set_behavior(Behavior {
        logout_delay: Duration::from_millis(400),
        ..Behavior::default()
    });

    let first = tokio::spawn({
        let controller = controller.clone();
        async move { controller.sign_out().await }
    });
    wait_for_phase(&controller, Phase::SigningOut).await;
    let second = controller.sign_out().await;
    let first = first.await.expect("first sign-out task");

    assert_eq!(Counters::get(&server.counters().logout), 1);
    assert_eq!(second, first);
    assert!(matches!(first, SignOutOutcome::Completed(_)), "{first:?}");

    let third = controller.sign_out().await;
    assert_eq!(third, SignOutOutcome::AlreadySignedOut);
    assert_eq!(Counters::get(&server.counters().logout), 1);
}

#[tokio::test]
async fn sign_in_during_sign_out_waits_for_it() {
    let server = FakeCamwire::start().await;
    let (controller, store) = signed_in_controller(&server).await;
    let first_key = store.load_credentials().private_key.public_key();
    server.set_behavior(Behavior {
        logout_delay: Duration::from_millis(400),
        ..Behavior::default()
    });

    let sign_out = tokio::spawn({
        let controller = controller.clone();
        async move { controller.sign_out().await }
    });
    wait_for_phase(&controller, Phase::SigningOut).await;
    let signed_in = controller.sign_in(&server.url, "alice", password()).await;
    let sign_out = sign_out.await.expect("sign-out task");

    assert!(
        matches!(sign_out, SignOutOutcome::Completed(_)),
        "{sign_out:?}"
    );
    let snapshot = signed_in.expect("sign-in after sign-out succeeds");
    assert_eq!(snapshot.phase, Phase::SignedIn);
    assert_eq!(
        server.events(),
        ["login", "register_key", "logout", "login", "register_key"]
    );
    assert_eq!(Counters::get(&server.counters().register_key), 2);
    assert_eq!(server.live_sessions(), 1);
    let second_key = store.load_credentials().private_key.public_key();
    assert_ne!(first_key, second_key);
}

#[tokio::test]
async fn sign_in_while_signed_in_is_rejected() {
    let server = FakeCamwire::start().await;
    let (controller, _store) = signed_in_controller(&server).await;

    let error = controller
        .sign_in(&server.url, "bob", password())
        .await
        .expect_err("already signed in");

    assert_eq!(
        error.to_string(),
        "already signed in as alice; log out first"
    );
    assert_eq!(Counters::get(&server.counters().login), 1);
}

#[tokio::test]
async fn resume_confirms_saved_session() {
    support::init_logging();
    let server = FakeCamwire::start().await;
    let credentials = server.credentials("token-saved", 2);
    let store = MemoryStoreHandle::new();
    store.store().save(&credentials).expect("saves");
    let controller = Controller::new(store.clone_arc(), support::options());

    let snapshot = controller.resume().await;

    assert_eq!(snapshot.phase, Phase::SignedIn);
    assert_eq!(snapshot.server_status, ServerStatus::Confirmed);
    assert_eq!(
        snapshot
            .profile
            .expect("has profile")
            .wireguard
            .address
            .to_string(),
        "10.13.0.2/32"
    );
    assert_eq!(Counters::get(&server.counters().me), 1);
    assert_eq!(Counters::get(&server.counters().get_config), 1);
    assert_eq!(Counters::get(&server.counters().login), 0);
}

#[tokio::test]
async fn resume_with_rejected_token_signs_out() {
    support::init_logging();
    let server = FakeCamwire::start().await;
    let store = MemoryStoreHandle::new();
    store
        .store()
        .save(&support::credentials(&server.url, "token-revoked"))
        .expect("saves");
    let controller = Controller::new(store.clone_arc(), support::options());

    let snapshot = controller.resume().await;

    assert_eq!(snapshot.phase, Phase::SignedOut);
    assert_eq!(snapshot.profile, None);
    assert_eq!(
        snapshot.notice.expect("has a notice").kind,
        "session_expired"
    );
    assert_eq!(store.store().entry(), None);
}

#[tokio::test]
async fn resume_offline_keeps_cached_profile_and_retries() {
    support::init_logging();
    let url = support::stopped_server_url().await;
    let credentials = support::credentials(&url, "token-offline");
    let public_key = credentials.private_key.public_key();
    let store = MemoryStoreHandle::new();
    store.store().save(&credentials).expect("saves");
    let controller = Controller::new(store.clone_arc(), support::options());

    let offline = controller.resume().await;

    assert_eq!(offline.phase, Phase::SignedIn);
    assert_eq!(offline.profile.as_ref(), Some(&credentials.profile));
    let ServerStatus::Unreachable { message } = &offline.server_status else {
        panic!("expected unreachable, got {:?}", offline.server_status);
    };
    assert!(
        message.starts_with("Server not reachable: connection refused"),
        "{message}"
    );
    assert!(
        store.store().entry().is_some(),
        "the offline session was dropped"
    );

    let address = url.trim_start_matches("http://");
    let server = FakeCamwire::start_on(address).await;
    server.insert_session("token-offline", Some((public_key.to_base64(), 2)));
    let online = controller.resume().await;

    assert_eq!(online.phase, Phase::SignedIn);
    assert_eq!(online.server_status, ServerStatus::Confirmed);
    assert_eq!(Counters::get(&server.counters().me), 1);
}

#[tokio::test]
async fn resume_without_allocation_requests_new_one() {
    support::init_logging();
    let server = FakeCamwire::start().await;
    let credentials = support::credentials(&server.url, "token-lapsed");
    let old_key = credentials.private_key.public_key();
    server.insert_session("token-lapsed", None);
    let store = MemoryStoreHandle::new();
    store.store().save(&credentials).expect("saves");
    let controller = Controller::new(store.clone_arc(), support::options());

    let snapshot = controller.resume().await;

    assert_eq!(snapshot.phase, Phase::SignedIn);
    assert_eq!(snapshot.server_status, ServerStatus::Confirmed);
    let saved = store.load_credentials();
    assert_ne!(saved.private_key.public_key(), old_key);
    assert_eq!(
        server.registered_keys(),
        [saved.private_key.public_key().to_base64()]
    );
}

#[tokio::test]
async fn sign_out_interrupts_slow_resume_check() {
    support::init_logging();
    let server = SilentServer::start().await;
    let folder = tempfile::tempdir().expect("temporary folder");
    let path = folder.path().join("credentials.json");
    let store = Arc::new(JsonFileStore::new(&path));
    store
        .save(&support::credentials(&server.url, "token-black-hole"))
        .expect("saves");
    let controller = Controller::new(store, ApiOptions::default());
    let resume = tokio::spawn({
        let controller = controller.clone();
        async move { controller.resume().await }
    });
    wait_for_status(&controller, ServerStatus::Checking).await;
    let started = Instant::now();

    let outcome = controller.sign_out().await;

    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(8),
        "sign-out took {elapsed:?} with a 5 s bound"
    );
    let SignOutOutcome::Completed(report) = outcome else {
        panic!("expected a completed sign-out, got {outcome:?}");
    };
    assert!(
        matches!(report.server, ServerOutcome::Unreachable { .. }),
        "{:?}",
        report.server
    );
    assert_eq!(controller.snapshot().phase, Phase::SignedOut);
    assert_eq!(
        std::fs::read_to_string(&path).expect("file exists").trim(),
        "{}"
    );
    let resumed = resume.await.expect("resume task");
    assert_eq!(
        resumed.phase,
        Phase::SignedIn,
        "resume returns the state it ended in"
    );
}

#[tokio::test]
async fn snapshot_carries_no_secret() {
    let server = FakeCamwire::start().await;
    let (controller, store) = signed_in_controller(&server).await;
    let credentials = store.load_credentials();

    let printed = format!("{:?} {:?}", controller.snapshot(), controller);

    assert!(
        !printed.contains(credentials.access_token.expose()),
        "{printed}"
    );
    assert!(
        !printed.contains(credentials.private_key.to_base64().as_str()),
        "{printed}"
    );
}

async fn wait_for_phase(controller: &Controller, phase: Phase) {
    let mut updates = controller.subscribe();
    tokio::time::timeout(
        Duration::from_secs(5),
        updates.wait_for(|snapshot| snapshot.phase == phase),
    )
    .await
    .expect("phase reached in time")
    .expect("controller alive");
}

async fn wait_for_status(controller: &Controller, status: ServerStatus) {
    let mut updates = controller.subscribe();
    tokio::time::timeout(
        Duration::from_secs(5),
        updates.wait_for(|snapshot| snapshot.server_status == status),
    )
    .await
    .expect("status reached in time")
    .expect("controller alive");
}
