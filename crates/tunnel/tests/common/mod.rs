//! Helpers of the real-socket tests: a hub on loopback, client configurations for it,
//! and small TCP services (echo, HTTP) for its forwards to reach.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use camwire_api::WireguardConfig;
use camwire_tunnel::{
    Forward, Hub, HubConfig, PrivateKey, TcpBuffers, Tunnel, TunnelOptions, TunnelState,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub const HUB_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 1);
pub const ECHO_PORT: u16 = 7;
pub const HTTP_PORT: u16 = 80;
pub const HTTP_BODY: &str = "{\"status\":\"ok\"}";

/// Time within which a handshake over loopback must complete.
pub const CONNECT_BOUND: Duration = Duration::from_secs(10);

pub fn client_address(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 13, 0, host)
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A hub on loopback forwarding port 7 to an echo server and port 80 to an HTTP
/// responder, both on loopback too.
pub struct TestHub {
    pub hub: Hub,
    pub echo: SocketAddr,
    pub http: SocketAddr,
}

impl TestHub {
    pub async fn start() -> Self {
        Self::start_with_buffers(TcpBuffers::default()).await
    }

    pub async fn start_with_buffers(tcp_buffers: TcpBuffers) -> Self {
        Self::start_with(tcp_buffers, Vec::new()).await
    }

    /// Starts a hub with the echo and HTTP forwards plus `extra` ones.
    pub async fn start_with(tcp_buffers: TcpBuffers, extra: Vec<Forward>) -> Self {
        let echo = echo_server().await;
        let http = http_server().await;
        let mut forwards = vec![
            Forward {
                port: ECHO_PORT,
                target: echo,
            },
            Forward {
                port: HTTP_PORT,
                target: http,
            },
        ];
        forwards.extend(extra);
        let mut config = HubConfig::new(
            "127.0.0.1:0".parse().expect("valid address"),
            PrivateKey::generate(),
            HUB_ADDRESS,
            "10.13.0.0/16".parse().expect("valid network"),
            forwards,
        );
        config.tcp_buffers = tcp_buffers;
        let hub = Hub::bind(config).await.expect("hub binds on loopback");
        Self { hub, echo, http }
    }

    /// Returns the configuration that the server would hand a client with `address`.
    pub fn client_config(&self, address: Ipv4Addr) -> WireguardConfig {
        WireguardConfig {
            address: ipnet::Ipv4Net::new(address, 32).expect("valid prefix"),
            server_address: HUB_ADDRESS,
            server_public_key: self.hub.public_key().to_base64(),
            endpoint: self.hub.local_addr().to_string(),
            allowed_ips: vec!["10.13.0.0/16".parse().expect("valid network")],
            persistent_keepalive: 25,
            expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
        }
    }

    /// Adds a peer with a new key at `address` and starts a tunnel for it.
    pub async fn connect_client(
        &self,
        address: Ipv4Addr,
        options: TunnelOptions,
    ) -> (Tunnel, PrivateKey) {
        let key = PrivateKey::generate();
        self.hub
            .add_peer(key.public_key(), address)
            .expect("peer is new");
        let tunnel = Tunnel::start(&self.client_config(address), key.clone(), options)
            .await
            .expect("tunnel starts");
        wait_connected(&tunnel).await;
        (tunnel, key)
    }
}

pub fn echo_target() -> SocketAddrV4 {
    SocketAddrV4::new(HUB_ADDRESS, ECHO_PORT)
}

pub fn http_target() -> SocketAddrV4 {
    SocketAddrV4::new(HUB_ADDRESS, HTTP_PORT)
}

pub async fn wait_connected(tunnel: &Tunnel) {
    let connected = async {
        while tunnel.stats().state != TunnelState::Connected {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(CONNECT_BOUND, connected)
        .await
        .expect("handshake completes over loopback");
}

/// Polls `condition` every 10 ms until it holds, for at most `bound`.
pub async fn wait_until(bound: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + bound;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

pub async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind on loopback");
    let address = listener.local_addr().expect("bound address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = stream.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
                let _ = writer.shutdown().await;
            });
        }
    });
    address
}

/// Starts an HTTP/1.1 responder that replies to every request with 200 and [`HTTP_BODY`].
pub async fn http_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind on loopback");
    let address = listener.local_addr().expect("bound address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut chunk = [0u8; 1024];
                while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => request.extend_from_slice(&chunk[..read]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{HTTP_BODY}",
                    HTTP_BODY.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    address
}

/// Sends `GET /healthz` over `stream` and returns the whole response.
pub async fn http_get<S>(stream: &mut S) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: 10.13.0.1\r\nconnection: close\r\n\r\n")
        .await
        .expect("request is sent");
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .expect("response arrives in time")
    .expect("response is UTF-8");
    response
}
