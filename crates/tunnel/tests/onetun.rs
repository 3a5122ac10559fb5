//! Interoperability: onetun 0.3 (a userspace WireGuard client built on boringtun and
//! smoltcp by another project) as a client of the hub.
//!
//! The test looks for the binary in `CAMWIRE_ONETUN`, then in `target/tools/bin/onetun`
//! (where `cargo install onetun --version ^0.3 --locked --root target/tools` puts it),
//! then on `PATH`. Without it the test prints why and passes, unless
//! `CAMWIRE_REQUIRE_ONETUN=1` is set.

#![cfg(not(feature = "mock-clock"))]

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use camwire_tunnel::PrivateKey;
use common::*;
use tokio::net::TcpStream;
use tokio::process::Command;

fn find_onetun() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CAMWIRE_ONETUN") {
        return Some(PathBuf::from(path));
    }
    let tools = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/tools/bin/onetun");
    if tools.is_file() {
        return Some(tools);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|directory| directory.join("onetun"))
            .find(|candidate| candidate.is_file())
    })
}

fn free_local_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind on loopback");
    listener.local_addr().expect("bound address").port()
}

#[tokio::test]
async fn onetun_client_reaches_http_target() {
    init_tracing();
    let Some(onetun) = find_onetun() else {
        let required = std::env::var("CAMWIRE_REQUIRE_ONETUN").is_ok_and(|value| value == "1");
        assert!(
            !required,
            "onetun is required (CAMWIRE_REQUIRE_ONETUN=1) but was not found"
        );
        println!(
            "SKIPPED onetun_client_reaches_http_target: onetun not found; install it with \
             `cargo install onetun --version ^0.3 --locked --root target/tools`"
        );
        return;
    };
    let hub = TestHub::start().await;
    let key = PrivateKey::generate();
    hub.hub
        .add_peer(key.public_key(), client_address(9))
        .expect("peer is new");
    let port = free_local_port();

    let mut child = Command::new(&onetun)
        .arg(format!("127.0.0.1:{port}:{HUB_ADDRESS}:{HTTP_PORT}"))
        .args(["--endpoint-addr", &hub.hub.local_addr().to_string()])
        .args(["--endpoint-public-key", &hub.hub.public_key().to_base64()])
        .args(["--private-key", key.to_base64().as_str()])
        .args(["--source-peer-ip", &client_address(9).to_string()])
        .args(["--keep-alive", "10"])
        .args(["--log", "warn"])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("onetun starts");

    let mut response = String::new();
    for _ in 0..50 {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await {
            let attempt = tokio::time::timeout(Duration::from_secs(5), http_get(&mut stream)).await;
            if let Ok(answer) = attempt {
                response = answer;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = child.kill().await;

    assert!(
        response.starts_with("HTTP/1.1 200 OK"),
        "response: {response:?}"
    );
    assert!(response.ends_with(HTTP_BODY), "response: {response:?}");
    let peers = hub.hub.peers();
    assert!(peers[0].last_handshake.is_some());
    assert!(hub.hub.stats().handshakes >= 1);
}
