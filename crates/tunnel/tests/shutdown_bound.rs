//! `Tunnel::shutdown` keeps its bound when the tunnel's tasks cannot run.
//!
//! A file of its own, because `live_tasks()` counts tunnels process-wide and the
//! restart test asserts exact counts.

mod common;

use std::time::Duration;

use camwire_tunnel::{PrivateKey, Tunnel, TunnelOptions};
use common::*;

/// A tunnel whose runtime is blocked cannot run its aborted tasks to their end, and
/// `shutdown` still returns within its timeout plus the abort grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_bounded_when_runtime_blocked() {
    let hub = TestHub::start().await;
    let key = PrivateKey::generate();
    hub.hub
        .add_peer(key.public_key(), client_address(2))
        .expect("peer is new");
    let config = hub.client_config(client_address(2));
    let blocked_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime builds");
    let options = TunnelOptions {
        shutdown_timeout: Duration::from_millis(200),
        ..TunnelOptions::default()
    };
    let tunnel = blocked_runtime
        .spawn(async move { Tunnel::start(&config, key, options).await })
        .await
        .expect("start task ends")
        .expect("tunnel starts");
    wait_connected(&tunnel).await;

    let (release, blocker) = std::sync::mpsc::channel::<()>();
    let (started, running) = tokio::sync::oneshot::channel();
    blocked_runtime.spawn(async move {
        let _ = started.send(());
        let _ = blocker.recv();
    });
    running.await.expect("blocker runs");

    let result = tokio::time::timeout(Duration::from_secs(3), tunnel.shutdown()).await;
    drop(release);
    blocked_runtime.shutdown_background();

    let report = result.expect("shutdown with a 200 ms timeout returns within 3 s");
    assert!(report.aborted > 0, "the blocked tasks are reported as aborted: {report:?}");
}
