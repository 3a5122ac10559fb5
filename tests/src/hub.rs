//! Checks against the server's embedded WireGuard hub and the app's live tunnel.
//!
//! The harness starts every server with its hub on the server's own free UDP port. The
//! server's admin API does not list the hub's peers, so these checks read the hub's figures
//! from `/metrics` (`camwire_hub_peers`, `camwire_hub_unknown_key_handshakes_total`) and make
//! real handshakes.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use camwire_api::WireguardConfig;
use camwire_tunnel::{PrivateKey, Tunnel, TunnelOptions};

use crate::driver::{AppSession, DEFAULT_WAIT};
use crate::server::ServerProcess;
use crate::world::StoredSession;

/// Time that a handshake with a key the hub does not know is given before the key counts
/// as rejected. A known key completes its handshake on loopback within milliseconds.
pub const REJECTED_HANDSHAKE_WAIT: Duration = Duration::from_secs(2);

/// Checks that the hub has as many peers as the database, so that it has the session's
/// peer whenever the database has it (which the scenarios check by key).
pub async fn ensure_peers_match_database(server: &ServerProcess) -> Result<()> {
    let database = crate::db::peers(&server.database_url()).await?.len();
    let hub = metric(server, "camwire_hub_peers").await?;
    ensure!(
        hub == u64::try_from(database)?,
        "the hub has {hub} peers and the database {database}"
    );
    Ok(())
}

/// Checks that the app's tunnel is connected to the hub and that the server's API replies
/// through it, as the profile view shows them.
pub async fn ensure_tunnel_live(app: &AppSession) -> Result<()> {
    let deadline = Instant::now() + DEFAULT_WAIT;
    loop {
        let state = app.data_kind("tunnel-state").await?;
        let server = app.data_kind("tunnel-server").await?;
        if state == "connected" && server == "answering" {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the tunnel is {state:?} and the server {server:?} after {DEFAULT_WAIT:?}, expected connected and answering");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks that the hub no longer completes a handshake with the ended session's key, and
/// that it saw the attempt as one from an unknown key.
pub async fn ensure_key_rejected(server: &ServerProcess, session: &StoredSession) -> Result<()> {
    let unknown_before = metric(server, "camwire_hub_unknown_key_handshakes_total").await?;
    let completed = handshake_completes(&session.wireguard, &session.private_key, REJECTED_HANDSHAKE_WAIT).await?;
    ensure!(!completed, "the hub still completes a handshake with the ended session's key");

    let unknown_after = metric(server, "camwire_hub_unknown_key_handshakes_total").await?;
    ensure!(
        unknown_after > unknown_before,
        "the hub did not count the old key's handshake as one from an unknown key, so the attempt may not have reached it"
    );
    Ok(())
}

/// Reads the value of the unlabelled sample `name` from the server's `GET /metrics`.
pub async fn metric(server: &ServerProcess, name: &str) -> Result<u64> {
    let text = server.metrics().await?;
    let value = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok());
    value.with_context(|| format!("GET /metrics has no sample {name}"))
}

/// Starts a client tunnel with `private_key` (base64) to the server that `wireguard`
/// describes, and returns whether a handshake completes within `wait`.
pub async fn handshake_completes(wireguard: &WireguardConfig, private_key: &str, wait: Duration) -> Result<bool> {
    let private_key = PrivateKey::from_base64(private_key).context("invalid private key")?;
    let tunnel = Tunnel::start(wireguard, private_key, TunnelOptions::default())
        .await
        .with_context(|| format!("failed to start a tunnel to {}", wireguard.endpoint))?;

    let deadline = Instant::now() + wait;
    let mut completed = false;
    while Instant::now() < deadline {
        if tunnel.stats().last_handshake.is_some() {
            completed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    tunnel.shutdown().await;
    Ok(completed)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use camwire_tunnel::{Hub, HubConfig};

    use super::*;

    async fn start_hub() -> Hub {
        let config = HubConfig::new(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            PrivateKey::generate(),
            Ipv4Addr::new(10, 13, 0, 1),
            "10.13.0.0/16".parse().expect("valid network"),
            Vec::new(),
        );
        Hub::bind(config).await.expect("the hub binds a loopback port")
    }

    fn client_config(hub: &Hub, address: &str) -> WireguardConfig {
        serde_json::from_value(serde_json::json!({
            "address": address,
            "server_address": "10.13.0.1",
            "server_public_key": hub.public_key().to_base64(),
            "endpoint": hub.local_addr().to_string(),
            "allowed_ips": ["10.13.0.0/16"],
            "persistent_keepalive": 25,
            "expires_at": "2030-01-01T00:00:00Z",
        }))
        .expect("valid WireGuard config")
    }

    #[tokio::test]
    async fn known_key_completes_handshake() {
        let hub = start_hub().await;
        let key = PrivateKey::generate();
        hub.add_peer(key.public_key(), Ipv4Addr::new(10, 13, 0, 2)).expect("peer added");

        let completed = handshake_completes(&client_config(&hub, "10.13.0.2/32"), &key.to_base64(), Duration::from_secs(5))
            .await
            .expect("tunnel starts");

        assert!(completed);
        hub.shutdown().await;
    }

    #[tokio::test]
    async fn removed_key_gets_no_handshake() {
        let hub = start_hub().await;
        let key = PrivateKey::generate();
        hub.add_peer(key.public_key(), Ipv4Addr::new(10, 13, 0, 2)).expect("peer added");
        assert!(hub.remove_peer(&key.public_key()));

        let completed = handshake_completes(&client_config(&hub, "10.13.0.2/32"), &key.to_base64(), REJECTED_HANDSHAKE_WAIT)
            .await
            .expect("tunnel starts");

        assert!(!completed);
        hub.shutdown().await;
    }
}
