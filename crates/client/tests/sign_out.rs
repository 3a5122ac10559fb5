//! Sign-out against a working server and against every server fault the product must survive.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use camwire_api::{CleanupStatus, Password};
use camwire_client::{
    ApiClient, ApiOptions, CredentialStore, JsonFileStore, MemoryStore, ServerOutcome, ServerUrl,
    Session, SignOutReport, StoreOutcome, UnreachableReason,
};
use support::{FakeCamwire, RawReplyServer, SilentServer};

/// Saves credentials for `url` in a fresh store and signs out of a session resumed from them.
async fn sign_out_from_saved_session(url: &str) -> (SignOutReport, MemoryStore) {
    support::init_logging();
    let store = MemoryStore::new();
    let credentials = support::credentials(url, "token-under-test");
    store.save(&credentials).expect("memory store saves");
    assert!(store.entry().is_some());

    let session = Session::resume(support::api(url), credentials);
    let report = session.sign_out(&store).await;
    (report, store)
}

fn assert_store_empty(store: &MemoryStore) {
    assert_eq!(store.entry(), None, "credentials are still stored");
    assert!(store.load().expect("memory store loads").is_none());
}

#[tokio::test]
async fn stopped_server_reports_connection_refused() {
    let url = support::stopped_server_url().await;

    let (report, store) = sign_out_from_saved_session(&url).await;

    assert_eq!(
        report.server,
        ServerOutcome::Unreachable {
            reason: UnreachableReason::ConnectionRefused
        }
    );
    assert_eq!(report.store, StoreOutcome::Cleared);
    assert!(
        report.message().contains("connection refused"),
        "{}",
        report.message()
    );
    assert!(
        report.message().contains("lease expires"),
        "{}",
        report.message()
    );
    assert_store_empty(&store);
}

#[tokio::test]
async fn server_error_500_is_reported() {
    let server = RawReplyServer::json(
        500,
        r#"{"error":"internal_error","message":"Database is down."}"#,
    )
    .await;

    let (report, store) = sign_out_from_saved_session(&server.url).await;

    assert!(
        matches!(
            report.server,
            ServerOutcome::ServerError {
                status: Some(500),
                ..
            }
        ),
        "{:?}",
        report.server
    );
    assert!(
        report.message().contains("HTTP 500"),
        "{}",
        report.message()
    );
    assert_store_empty(&store);
    assert_eq!(server.request_lines(), ["POST /logout HTTP/1.1"]);
}

#[tokio::test]
async fn plain_500_page_is_reported() {
    let server = RawReplyServer::start(
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\nConnection: close\r\n\r\noops!".to_vec(),
    )
    .await;

    let (report, store) = sign_out_from_saved_session(&server.url).await;

    assert!(
        matches!(
            report.server,
            ServerOutcome::ServerError {
                status: Some(500),
                ..
            }
        ),
        "{:?}",
        report.server
    );
    assert_store_empty(&store);
}

#[tokio::test]
async fn invalid_json_reply_is_server_error() {
    let server = RawReplyServer::json(200, "{\"message\": \"Signed out\", \"wireguard\": ").await;

    let (report, store) = sign_out_from_saved_session(&server.url).await;

    let ServerOutcome::ServerError { status, detail } = &report.server else {
        panic!("expected a server error, got {:?}", report.server);
    };
    assert_eq!(*status, Some(200));
    assert!(detail.contains("not the expected JSON"), "{detail}");
    assert_store_empty(&store);
}

#[tokio::test]
async fn garbage_bytes_reply_is_server_error() {
    let server =
        RawReplyServer::start(b"\x00\xff\x13garbage that is not HTTP\r\n\r\n".to_vec()).await;

    let (report, store) = sign_out_from_saved_session(&server.url).await;

    let ServerOutcome::ServerError {
        status: None,
        detail,
    } = &report.server
    else {
        panic!("expected a server error, got {:?}", report.server);
    };
    assert!(detail.contains("not valid HTTP"), "{detail}");
    assert!(
        report.message().contains("could not be read"),
        "{}",
        report.message()
    );
    assert_store_empty(&store);
}

#[tokio::test]
async fn silent_server_times_out_within_bound() {
    let server = SilentServer::start().await;
    let started = Instant::now();

    let (report, store) = sign_out_from_saved_session(&server.url).await;

    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(8),
        "sign-out took {elapsed:?} with a 5 s bound"
    );
    assert!(
        elapsed >= Duration::from_secs(4),
        "returned after {elapsed:?}, before the bound"
    );
    assert_eq!(
        report.server,
        ServerOutcome::Unreachable {
            reason: UnreachableReason::TimedOut {
                after: Duration::from_secs(5)
            }
        }
    );
    assert!(
        report.message().contains("no reply within 5 s"),
        "{}",
        report.message()
    );
    assert_eq!(server.accepted(), 1);
    assert_store_empty(&store);
}

#[tokio::test]
async fn rejected_token_401_is_reported() {
    let server = RawReplyServer::json(
        401,
        r#"{"error":"unauthorized","message":"Invalid or expired token."}"#,
    )
    .await;

    let (report, store) = sign_out_from_saved_session(&server.url).await;

    assert_eq!(report.server, ServerOutcome::TokenRejected);
    assert!(
        report.message().contains("no longer accepted"),
        "{}",
        report.message()
    );
    assert_store_empty(&store);
}

#[tokio::test]
async fn logout_sends_bearer_token() {
    let server = RawReplyServer::json(200, r#"{"message":"Signed out."}"#).await;

    let (report, _store) = sign_out_from_saved_session(&server.url).await;

    let heads = server.request_heads();
    assert_eq!(heads.len(), 1);
    assert!(
        heads[0]
            .to_ascii_lowercase()
            .contains("authorization: bearer token-under-test"),
        "{}",
        heads[0]
    );
    assert_eq!(
        report.server,
        ServerOutcome::Confirmed {
            session_invalidated: None,
            wireguard: None
        }
    );
    assert_eq!(
        report.message(),
        "Signed out. The server confirmed the sign-out."
    );
}

#[tokio::test]
async fn dns_failure_is_named() {
    support::init_logging();
    let options = ApiOptions {
        dns_resolver: Some(Arc::new(FailingResolver)),
        ..ApiOptions::default()
    };
    let url = "http://camwire.invalid:8080";
    let api =
        ApiClient::new(ServerUrl::parse(url).expect("valid"), options).expect("client starts");
    let store = MemoryStore::new();
    let credentials = support::credentials(url, "token-under-test");
    store.save(&credentials).expect("saves");

    let report = Session::resume(api, credentials).sign_out(&store).await;

    assert_eq!(
        report.server,
        ServerOutcome::Unreachable {
            reason: UnreachableReason::DnsLookupFailed {
                host: "camwire.invalid".into()
            }
        }
    );
    assert!(
        report
            .message()
            .contains("camwire.invalid could not be resolved"),
        "{}",
        report.message()
    );
    assert_store_empty(&store);
}

/// Fake resolver that fails every lookup, because a real lookup failure would need a query
/// to a resolver outside this machine.
struct FailingResolver;

impl reqwest::dns::Resolve for FailingResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let message = format!("no address for {}", name.as_str());
        Box::pin(async move { Err(message.into()) })
    }
}

#[tokio::test]
async fn confirmed_sign_out_frees_address_and_empties_file() {
    support::init_logging();
    let server = FakeCamwire::start().await;
    let folder = tempfile::tempdir().expect("temporary folder");
    let path = folder.path().join("credentials.json");
    let store = JsonFileStore::new(&path);
    let session = Session::sign_in(
        support::api(&server.url),
        "alice",
        &Password::new(support::PASSWORD),
    )
    .await
    .expect("signs in");
    let token = session.credentials().access_token.expose().to_owned();
    store.save(session.credentials()).expect("saves");
    assert!(
        std::fs::read_to_string(&path)
            .expect("file exists")
            .contains(&token)
    );

    let report = session.sign_out(&store).await;

    let ServerOutcome::Confirmed {
        wireguard: Some(cleanup),
        session_invalidated,
    } = &report.server
    else {
        panic!("expected confirmation, got {:?}", report.server);
    };
    assert_eq!(cleanup.status, CleanupStatus::Revoked);
    assert_eq!(
        cleanup.released_address,
        Some("10.13.0.2".parse().expect("address"))
    );
    assert_eq!(*session_invalidated, Some(true));
    assert_eq!(
        report.message(),
        "Signed out. The server ended the session and released the VPN address 10.13.0.2."
    );
    assert_eq!(server.live_sessions(), 0);
    let on_disk = std::fs::read_to_string(&path).expect("file still exists");
    assert_eq!(on_disk.trim(), "{}");
    assert!(JsonFileStore::new(&path).load().expect("loads").is_none());
}

#[tokio::test]
async fn failed_store_clear_is_reported() {
    support::init_logging();
    let url = support::stopped_server_url().await;
    let folder = tempfile::tempdir().expect("temporary folder");
    let store_folder = folder.path().join("app");
    let store = JsonFileStore::new(store_folder.join("credentials.json"));
    let credentials = support::credentials(&url, "token-under-test");
    store.save(&credentials).expect("saves");

    // Replacing the store's folder by a plain file makes every later write fail.
    std::fs::remove_dir_all(&store_folder).expect("remove folder");
    std::fs::write(&store_folder, b"not a folder").expect("create file");
    let report = Session::resume(support::api(&url), credentials)
        .sign_out(&store)
        .await;

    assert!(
        matches!(report.store, StoreOutcome::Failed { .. }),
        "{:?}",
        report.store
    );
    assert!(!report.store_cleared());
    assert!(
        report
            .message()
            .contains("could not write the credential store"),
        "{}",
        report.message()
    );
    assert!(
        matches!(report.server, ServerOutcome::Unreachable { .. }),
        "{:?}",
        report.server
    );
}

#[tokio::test]
async fn long_cleanup_detail_is_cut() {
    let detail = format!("peer removal failed\\n{}", "x".repeat(500_000));
    let body = format!(
        r#"{{"message":"Signed out.","session_invalidated":true,"wireguard":{{"status":"failed","released_address":"10.13.0.2","peer_removed":false,"detail":"{detail}"}}}}"#
    );
    let server = RawReplyServer::json(200, &body).await;

    let (report, store) = sign_out_from_saved_session(&server.url).await;

    let ServerOutcome::Confirmed {
        wireguard: Some(cleanup),
        ..
    } = &report.server
    else {
        panic!("expected confirmation, got {:?}", report.server);
    };
    let detail = cleanup.detail.as_deref().expect("detail is kept");
    assert_eq!(detail.chars().count(), 301, "{detail}");
    assert!(detail.starts_with("peer removal failedxxx"), "{detail}");
    assert!(detail.ends_with('…'), "{detail}");
    assert!(
        report.message().len() < 600,
        "the message is {} bytes",
        report.message().len()
    );
    assert_store_empty(&store);
}
