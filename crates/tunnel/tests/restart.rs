//! Repeated start and shutdown against one hub. This file contains one test only,
//! because it checks the process-wide task counter.

#![cfg(not(feature = "mock-clock"))]

mod common;

use std::time::Duration;

use camwire_tunnel::{PrivateKey, Tunnel, TunnelOptions, live_tasks};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn hundred_restarts_leave_one_tunnel_and_peer() {
    init_tracing();
    let hub = TestHub::start().await;
    let hub_tasks = hub.hub.stats().tasks;
    assert_eq!(live_tasks(), hub_tasks);

    for round in 0..100 {
        let key = PrivateKey::generate();
        hub.hub
            .add_peer(key.public_key(), client_address(2))
            .expect("address is free again");
        let tunnel = Tunnel::start(
            &hub.client_config(client_address(2)),
            key.clone(),
            TunnelOptions::default(),
        )
        .await
        .expect("tunnel starts");
        wait_connected(&tunnel).await;
        let mut stream = tunnel.dial(echo_target()).await.expect("dial succeeds");
        stream.write_all(b"round").await.expect("write succeeds");
        let mut echoed = [0u8; 5];
        stream.read_exact(&mut echoed).await.expect("echo arrives");

        assert_eq!(hub.hub.peers().len(), 1, "round {round}");
        assert_eq!(tunnel.stats().tasks, 1, "round {round}");
        assert_eq!(live_tasks(), hub.hub.stats().tasks + 1, "round {round}");

        drop(stream);
        let report = tunnel.shutdown().await;
        assert_eq!(report.ended, 1, "round {round}");
        assert_eq!(report.aborted, 0, "round {round}");
        assert!(hub.hub.remove_peer(&key.public_key()), "round {round}");
        let settled = wait_until(Duration::from_secs(2), || live_tasks() == hub_tasks).await;
        assert!(
            settled,
            "round {round}: {} tasks alive, expected {hub_tasks}",
            live_tasks()
        );
    }

    assert!(hub.hub.peers().is_empty());
    assert_eq!(hub.hub.stats().connections, 0);
}
