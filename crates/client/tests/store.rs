//! Credential stores: persistence, file safety, and damaged contents that must read as signed out.

mod support;

use std::sync::Arc;

use camwire_client::{Controller, CredentialStore, JsonFileStore, MemoryStore, Phase};
use serde_json::json;

fn store_in_temp_folder() -> (tempfile::TempDir, JsonFileStore) {
    let folder = tempfile::tempdir().expect("temporary folder");
    let store = JsonFileStore::new(folder.path().join("nested").join("credentials.json"));
    (folder, store)
}

#[test]
fn file_store_round_trips_credentials() {
    let (_folder, store) = store_in_temp_folder();
    let credentials = support::credentials("http://127.0.0.1:8080", "token-round-trip");

    store.save(&credentials).expect("saves");
    let loaded = JsonFileStore::new(store.path())
        .load()
        .expect("loads")
        .expect("has credentials");

    assert_eq!(loaded.access_token, credentials.access_token);
    assert_eq!(
        loaded.private_key.public_key(),
        credentials.private_key.public_key()
    );
    assert_eq!(loaded.profile, credentials.profile);
    assert_eq!(loaded.server_url, credentials.server_url);
}

#[test]
fn file_store_document_has_documented_shape() {
    let (_folder, store) = store_in_temp_folder();
    let credentials = support::credentials("http://127.0.0.1:8080", "token-shape");

    store.save(&credentials).expect("saves");
    let document: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.path()).expect("reads")).expect("valid JSON");

    let session = &document["session"];
    assert_eq!(session["format"], json!(1));
    assert_eq!(session["server_url"], json!("http://127.0.0.1:8080"));
    assert_eq!(session["access_token"], json!("token-shape"));
    assert_eq!(
        session["private_key"],
        json!(credentials.private_key.to_base64().as_str())
    );
    assert_eq!(session["user"]["username"], json!("alice"));
    assert_eq!(session["wireguard"]["address"], json!("10.13.0.2/32"));
}

#[cfg(unix)]
#[test]
fn file_store_is_private_and_tidy() {
    use std::os::unix::fs::PermissionsExt as _;
    let (_folder, store) = store_in_temp_folder();
    let credentials = support::credentials("http://127.0.0.1:8080", "token-private");

    store.save(&credentials).expect("saves");
    store.save(&credentials).expect("saves again");
    store.clear().expect("clears");

    let mode = std::fs::metadata(store.path())
        .expect("exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode is {:o}", mode & 0o777);
    let folder = store.path().parent().expect("has a folder");
    let folder_mode = std::fs::metadata(folder)
        .expect("exists")
        .permissions()
        .mode();
    assert_eq!(
        folder_mode & 0o077,
        0,
        "folder mode is {:o}",
        folder_mode & 0o777
    );
    let names: Vec<String> = std::fs::read_dir(folder)
        .expect("lists")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names, ["credentials.json"]);
}

#[test]
fn file_store_clear_persists() {
    let (_folder, store) = store_in_temp_folder();
    store
        .save(&support::credentials(
            "http://127.0.0.1:8080",
            "token-to-clear",
        ))
        .expect("saves");

    store.clear().expect("clears");

    let text = std::fs::read_to_string(store.path()).expect("file exists");
    assert_eq!(text.trim(), "{}");
    assert!(!text.contains("token-to-clear"));
    assert!(
        JsonFileStore::new(store.path())
            .load()
            .expect("loads")
            .is_none()
    );
}

#[test]
fn missing_file_reads_as_signed_out() {
    let (_folder, store) = store_in_temp_folder();

    assert!(store.load().expect("loads").is_none());
    assert!(!store.path().exists(), "loading created the file");
}

#[test]
fn damaged_files_read_as_signed_out() {
    support::init_logging();
    let valid = {
        let credentials = support::credentials("http://127.0.0.1:8080", "token-damaged");
        serde_json::to_string(&json!({"session": credentials.to_json()})).expect("serializes")
    };
    let truncated = valid[..valid.len() / 2].to_owned();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("whitespace", b"  \n".to_vec()),
        ("all NUL bytes", vec![0u8; 4096]),
        ("truncated JSON", truncated.into_bytes()),
        ("not UTF-8", vec![0xff, 0xfe, 0x00, 0x7b]),
        ("JSON array", b"[1, 2, 3]".to_vec()),
        ("JSON string", b"\"session\"".to_vec()),
        ("unknown keys only", br#"{"theme": "dark"}"#.to_vec()),
        (
            "session of unknown shape",
            br#"{"session": {"token": "abc"}}"#.to_vec(),
        ),
        ("session not an object", br#"{"session": 42}"#.to_vec()),
        (
            "session of a future format",
            br#"{"session": {"format": 2}}"#.to_vec(),
        ),
        ("cleared store", b"{}".to_vec()),
    ];

    for (name, bytes) in cases {
        let (_folder, store) = store_in_temp_folder();
        std::fs::create_dir_all(store.path().parent().expect("has a folder"))
            .expect("creates folder");
        std::fs::write(store.path(), &bytes).expect("writes");

        let loaded = store.load();

        assert!(matches!(loaded, Ok(None)), "{name}: {loaded:?}");
    }
}

#[test]
fn damaged_file_is_replaced_by_next_save() {
    let (_folder, store) = store_in_temp_folder();
    std::fs::create_dir_all(store.path().parent().expect("has a folder")).expect("creates folder");
    std::fs::write(store.path(), vec![0u8; 100]).expect("writes");
    let credentials = support::credentials("http://127.0.0.1:8080", "token-after-damage");

    store.save(&credentials).expect("saves over damage");

    let loaded = store.load().expect("loads").expect("has credentials");
    assert_eq!(loaded.access_token, credentials.access_token);
}

#[test]
fn memory_store_ignores_damaged_entry() {
    let store = MemoryStore::with_entry(json!({"format": 1, "server_url": "htp://nope"}));

    assert!(store.load().expect("loads").is_none());
}

#[tokio::test]
async fn controller_starts_signed_out_on_damaged_store() {
    support::init_logging();
    let folder = tempfile::tempdir().expect("temporary folder");
    let path = folder.path().join("credentials.json");
    std::fs::write(&path, b"{\"session\": {\"format\": 1, \"access_tok").expect("writes");
    let controller = Controller::new(Arc::new(JsonFileStore::new(&path)), support::options());

    let snapshot = controller.resume().await;

    assert_eq!(snapshot.phase, Phase::SignedOut);
    assert_eq!(snapshot.profile, None);
}

#[test]
fn debug_output_hides_secrets() {
    let credentials = support::credentials("http://127.0.0.1:8080", "token-debug-check");
    let key = credentials.private_key.to_base64();
    let store = MemoryStore::new();
    store.save(&credentials).expect("saves");
    let session =
        camwire_client::Session::resume(support::api("http://127.0.0.1:8080"), credentials.clone());

    let printed = [
        format!("{credentials:?}"),
        format!("{credentials:#?}"),
        format!("{session:?}"),
        format!("{:?}", support::api("http://127.0.0.1:8080")),
        format!("{store:?}"),
    ];

    for text in printed {
        assert!(!text.contains("token-debug-check"), "token leaked: {text}");
        assert!(!text.contains(key.as_str()), "private key leaked: {text}");
    }
}
