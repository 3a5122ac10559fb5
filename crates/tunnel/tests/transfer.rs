//! 10 MB transfers through a port forward to and from a slow reader, compared by
//! SHA-256, with small and large TCP buffers inside the tunnel.

#![cfg(not(feature = "mock-clock"))]

mod common;

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use camwire_tunnel::{Forward, TcpBuffers, TunnelOptions};
use common::*;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TRANSFER_LEN: usize = 10 * 1000 * 1000;
const SINK_PORT: u16 = 9000;
const SOURCE_PORT: u16 = 9001;

/// Reads in 16 KiB chunks with a 1 ms pause after each, about 16 MB/s at most, so
/// that the sender's buffers fill and TCP's flow control has to work.
async fn slow_digest<R: AsyncRead + Unpin>(reader: &mut R) -> ([u8; 32], usize) {
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut total = 0;
    loop {
        let read = reader.read(&mut chunk).await.expect("read succeeds");
        if read == 0 {
            return (hasher.finalize().into(), total);
        }
        hasher.update(&chunk[..read]);
        total += read;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Deterministic data that no compression or pattern could fake.
fn payload() -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..TRANSFER_LEN)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Starts a service that reads everything slowly, then replies with its SHA-256.
async fn slow_sink() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind on loopback");
    let address = listener.local_addr().expect("bound address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (digest, _) = slow_digest(&mut stream).await;
                let _ = stream.write_all(&digest).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    address
}

/// Starts a service that sends the payload and closes.
async fn source(data: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind on loopback");
    let address = listener.local_addr().expect("bound address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = stream.write_all(data).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    address
}

async fn transfer_both_ways(buffers: TcpBuffers) {
    let data: &'static [u8] = Box::leak(payload().into_boxed_slice());
    let expected: [u8; 32] = Sha256::digest(data).into();
    let extra = vec![
        Forward {
            port: SINK_PORT,
            target: slow_sink().await,
        },
        Forward {
            port: SOURCE_PORT,
            target: source(data).await,
        },
    ];
    let hub = TestHub::start_with(buffers, extra).await;
    let options = TunnelOptions {
        tcp_buffers: buffers,
        ..TunnelOptions::default()
    };
    let (tunnel, _key) = hub.connect_client(client_address(2), options).await;
    let any_port: SocketAddr = "127.0.0.1:0".parse().expect("valid address");
    let upload = tunnel
        .forward(any_port, SocketAddrV4::new(HUB_ADDRESS, SINK_PORT))
        .await
        .expect("forward binds");
    let download = tunnel
        .forward(any_port, SocketAddrV4::new(HUB_ADDRESS, SOURCE_PORT))
        .await
        .expect("forward binds");

    let mut up = TcpStream::connect(upload).await.expect("forward accepts");
    up.write_all(data).await.expect("upload is written");
    up.shutdown().await.expect("FIN is sent");
    let mut uploaded_digest = [0u8; 32];
    up.read_exact(&mut uploaded_digest)
        .await
        .expect("sink answers with its digest");

    let mut down = TcpStream::connect(download).await.expect("forward accepts");
    let (downloaded_digest, downloaded_len) = slow_digest(&mut down).await;

    assert_eq!(uploaded_digest, expected, "upload arrived changed");
    assert_eq!(downloaded_len, TRANSFER_LEN);
    assert_eq!(downloaded_digest, expected, "download arrived changed");
    tunnel.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_10mb_small_buffers() {
    init_tracing();
    let small = TcpBuffers {
        receive: 8 * 1024,
        send: 8 * 1024,
    };
    tokio::time::timeout(Duration::from_secs(120), transfer_both_ways(small))
        .await
        .expect("transfer finishes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_10mb_large_buffers() {
    let large = TcpBuffers {
        receive: 4 << 20,
        send: 4 << 20,
    };
    tokio::time::timeout(Duration::from_secs(120), transfer_both_ways(large))
        .await
        .expect("transfer finishes");
}
