//! Throughput bench: TCP goodput of bulk transfers over plain loopback TCP, through
//! Camwire's client tunnel and hub, and through onetun against the same hub. Each runs
//! without and with 20 ms of added round-trip time. It also measures handshake time
//! and CPU cost.
//!
//! Run: `cargo bench -p camwire-tunnel --bench throughput`. onetun is looked up like
//! the interoperability test does (`CAMWIRE_ONETUN`, `target/tools/bin/onetun`, `PATH`)
//! and skipped with a note when absent. Each transfer runs for about
//! `TRANSFER_TIME`, so the whole bench takes one to two minutes.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use camwire_api::WireguardConfig;
use camwire_tunnel::{Forward, Hub, HubConfig, PrivateKey, Tunnel, TunnelOptions, TunnelState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

const HUB_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 1);
const SINK_PORT: u16 = 9000;
const SOURCE_PORT: u16 = 9001;
/// How long the sender of each transfer keeps writing.
const TRANSFER_TIME: Duration = Duration::from_secs(3);
/// How long a transfer may take to drain after the sender stopped.
const DRAIN_LIMIT: Duration = Duration::from_secs(15);
const CHUNK: usize = 64 * 1024;
const HANDSHAKE_SAMPLES: usize = 20;
/// Added delay in each direction of the delayed runs.
const ONE_WAY_DELAY: Duration = Duration::from_millis(10);

/// Bytes received by the sink since the bench started; read around each upload.
static SINK_BYTES: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Upload,
    Download,
}

struct Measurement {
    mbit_per_second: f64,
    cpu_seconds_per_gigabyte: f64,
}

/// Process CPU time (user + system) from `/proc/self/stat`, the same counters that
/// `getrusage(RUSAGE_SELF)` reports, at clock-tick resolution.
fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    let Some(after_name) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return f64::NAN;
    };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of proc(5), counted after the ")" that ends field 2.
    let ticks: f64 = fields[11].parse::<f64>().unwrap_or(f64::NAN)
        + fields[12].parse::<f64>().unwrap_or(f64::NAN);
    ticks / 100.0
}

async fn sink_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind on loopback");
    let address = listener.local_addr().expect("bound address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = vec![0u8; CHUNK];
                while let Ok(read) = stream.read(&mut buffer).await {
                    if read == 0 {
                        break;
                    }
                    SINK_BYTES.fetch_add(read as u64, Ordering::Relaxed);
                }
            });
        }
    });
    address
}

async fn source_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind on loopback");
    let address = listener.local_addr().expect("bound address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let chunk = vec![0x5au8; CHUNK];
                let deadline = Instant::now() + TRANSFER_TIME;
                while Instant::now() < deadline {
                    if stream.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                let _ = stream.shutdown().await;
            });
        }
    });
    address
}

/// Transfers through `upload` or `download` (local TCP addresses that lead to the
/// sink or the source) and returns goodput and CPU cost.
async fn measure(direction: Direction, upload: SocketAddr, download: SocketAddr) -> Measurement {
    let cpu_before = process_cpu_seconds();
    let started = Instant::now();

    let bytes = match direction {
        Direction::Upload => {
            let before = SINK_BYTES.load(Ordering::Relaxed);
            let mut stream = TcpStream::connect(upload)
                .await
                .expect("upload path accepts");
            let _ = stream.set_nodelay(true);
            let chunk = vec![0xa5u8; CHUNK];
            let mut written = 0u64;
            while started.elapsed() < TRANSFER_TIME {
                stream
                    .write_all(&chunk)
                    .await
                    .expect("upload write succeeds");
                written += CHUNK as u64;
            }
            let _ = stream.shutdown().await;
            // Wait until the sink has everything, or the drain limit passed.
            let drain_deadline = Instant::now() + DRAIN_LIMIT;
            while SINK_BYTES.load(Ordering::Relaxed) - before < written
                && Instant::now() < drain_deadline
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            SINK_BYTES.load(Ordering::Relaxed) - before
        }
        Direction::Download => {
            let mut stream = TcpStream::connect(download)
                .await
                .expect("download path accepts");
            let mut buffer = vec![0u8; CHUNK];
            let mut total = 0u64;
            let limit = started + TRANSFER_TIME + DRAIN_LIMIT;
            loop {
                let remaining = limit.saturating_duration_since(Instant::now());
                match tokio::time::timeout(remaining, stream.read(&mut buffer)).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                    Ok(Ok(read)) => total += read as u64,
                }
            }
            total
        }
    };

    let elapsed = started.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds() - cpu_before;
    Measurement {
        mbit_per_second: bytes as f64 * 8.0 / elapsed / 1e6,
        cpu_seconds_per_gigabyte: cpu / (bytes as f64 / 1e9),
    }
}

/// Starts a UDP relay between one client and the hub that delays every datagram by
/// `one_way` in each direction. Returns the address that the client should use.
async fn delay_relay(hub: SocketAddr, one_way: Duration) -> SocketAddr {
    let front = Arc::new(bind_udp());
    let back = Arc::new(bind_udp());
    let address = front.local_addr().expect("bound address");
    let (to_hub, mut to_hub_queue) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let (to_client, mut to_client_queue) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let client = Arc::new(std::sync::Mutex::new(None::<SocketAddr>));

    let receiver = Arc::clone(&front);
    let client_seen = Arc::clone(&client);
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 65_536];
        while let Ok((len, from)) = receiver.recv_from(&mut buffer).await {
            *client_seen.lock().expect("lock") = Some(from);
            let _ = to_hub.send((Instant::now() + one_way, buffer[..len].to_vec()));
        }
    });
    let receiver = Arc::clone(&back);
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 65_536];
        while let Ok((len, _)) = receiver.recv_from(&mut buffer).await {
            let _ = to_client.send((Instant::now() + one_way, buffer[..len].to_vec()));
        }
    });
    tokio::spawn(async move {
        while let Some((due, datagram)) = to_hub_queue.recv().await {
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
            let _ = back.send_to(&datagram, hub).await;
        }
    });
    tokio::spawn(async move {
        while let Some((due, datagram)) = to_client_queue.recv().await {
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
            let destination = *client.lock().expect("lock");
            if let Some(destination) = destination {
                let _ = front.send_to(&datagram, destination).await;
            }
        }
    });
    address
}

fn bind_udp() -> UdpSocket {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .expect("UDP socket");
    let _ = socket.set_recv_buffer_size(8 << 20);
    let _ = socket.set_send_buffer_size(8 << 20);
    socket.set_nonblocking(true).expect("non-blocking");
    socket
        .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .expect("bind on loopback");
    UdpSocket::from_std(socket.into()).expect("tokio socket")
}

fn client_config(hub: &Hub, endpoint: SocketAddr, address: Ipv4Addr) -> WireguardConfig {
    WireguardConfig {
        address: ipnet::Ipv4Net::new(address, 32).expect("valid prefix"),
        server_address: HUB_ADDRESS,
        server_public_key: hub.public_key().to_base64(),
        endpoint: endpoint.to_string(),
        allowed_ips: vec!["10.13.0.0/16".parse().expect("valid network")],
        persistent_keepalive: 25,
        expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
    }
}

async fn wait_connected(tunnel: &Tunnel) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tunnel.stats().state != TunnelState::Connected {
        assert!(Instant::now() < deadline, "handshake did not complete");
        tokio::task::yield_now().await;
    }
}

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

/// Measures both directions through a Camwire tunnel whose endpoint is `endpoint`.
async fn run_camwire(hub: &Hub, endpoint: SocketAddr, host: u8) -> (Measurement, Measurement) {
    let key = PrivateKey::generate();
    let address = Ipv4Addr::new(10, 13, 0, host);
    hub.add_peer(key.public_key(), address)
        .expect("peer is new");
    let tunnel = Tunnel::start(
        &client_config(hub, endpoint, address),
        key.clone(),
        TunnelOptions::default(),
    )
    .await
    .expect("tunnel starts");
    wait_connected(&tunnel).await;
    let any: SocketAddr = "127.0.0.1:0".parse().expect("valid address");
    let upload = tunnel
        .forward(any, SocketAddrV4::new(HUB_ADDRESS, SINK_PORT))
        .await
        .expect("forward");
    let download = tunnel
        .forward(any, SocketAddrV4::new(HUB_ADDRESS, SOURCE_PORT))
        .await
        .expect("forward");

    let up = measure(Direction::Upload, upload, download).await;
    let down = measure(Direction::Download, upload, download).await;

    tunnel.shutdown().await;
    hub.remove_peer(&key.public_key());
    (up, down)
}

/// Measures both directions through onetun whose endpoint is `endpoint`.
async fn run_onetun(
    onetun: &PathBuf,
    hub: &Hub,
    endpoint: SocketAddr,
    host: u8,
) -> (Measurement, Measurement) {
    let key = PrivateKey::generate();
    let address = Ipv4Addr::new(10, 13, 0, host);
    hub.add_peer(key.public_key(), address)
        .expect("peer is new");
    let upload_port = free_local_port();
    let download_port = free_local_port();
    let mut child = tokio::process::Command::new(onetun)
        .arg(format!("127.0.0.1:{upload_port}:{HUB_ADDRESS}:{SINK_PORT}"))
        .arg(format!(
            "127.0.0.1:{download_port}:{HUB_ADDRESS}:{SOURCE_PORT}"
        ))
        .args(["--endpoint-addr", &endpoint.to_string()])
        .args(["--endpoint-public-key", &hub.public_key().to_base64()])
        .args(["--private-key", key.to_base64().as_str()])
        .args(["--source-peer-ip", &address.to_string()])
        .args(["--keep-alive", "10"])
        .args(["--log", "error"])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("onetun starts");

    // onetun handshakes only once a connection needs the tunnel, so a one-byte
    // connection to the sink starts it.
    let upload = SocketAddr::from((Ipv4Addr::LOCALHOST, upload_port));
    let download = SocketAddr::from((Ipv4Addr::LOCALHOST, download_port));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut probe = loop {
        if let Ok(stream) = TcpStream::connect(upload).await {
            break stream;
        }
        assert!(Instant::now() < deadline, "onetun did not listen");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let _ = probe.write_all(b"x").await;
    while hub
        .peers()
        .iter()
        .all(|peer| peer.public_key != key.public_key() || peer.last_handshake.is_none())
    {
        assert!(
            Instant::now() < deadline,
            "onetun did not complete a handshake"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(probe);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let up = measure(Direction::Upload, upload, download).await;
    let down = measure(Direction::Download, upload, download).await;

    let _ = child.kill().await;
    hub.remove_peer(&key.public_key());
    (up, down)
}

async fn handshake_median(hub: &Hub) -> Duration {
    let mut samples = Vec::with_capacity(HANDSHAKE_SAMPLES);
    for sample in 0..HANDSHAKE_SAMPLES {
        let key = PrivateKey::generate();
        let address = Ipv4Addr::new(10, 13, 1, sample as u8 + 1);
        hub.add_peer(key.public_key(), address)
            .expect("peer is new");
        let started = Instant::now();
        let tunnel = Tunnel::start(
            &client_config(hub, hub.local_addr(), address),
            key.clone(),
            TunnelOptions::default(),
        )
        .await
        .expect("tunnel starts");
        wait_connected(&tunnel).await;
        samples.push(started.elapsed());
        tunnel.shutdown().await;
        hub.remove_peer(&key.public_key());
    }
    samples.sort();
    samples[samples.len() / 2]
}

fn row(label: &str, result: Option<&(Measurement, Measurement)>, with_cpu: bool) {
    match result {
        Some((up, down)) if with_cpu => println!(
            "| {label} | {:.0} | {:.0} | {:.1} | {:.1} |",
            up.mbit_per_second,
            down.mbit_per_second,
            up.cpu_seconds_per_gigabyte,
            down.cpu_seconds_per_gigabyte
        ),
        Some((up, down)) => println!(
            "| {label} | {:.0} | {:.0} | | |",
            up.mbit_per_second, down.mbit_per_second
        ),
        None => println!("| {label} | n/a | n/a | | |"),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sink = sink_server().await;
    let source = source_server().await;
    let hub = Hub::bind(HubConfig::new(
        "127.0.0.1:0".parse().expect("valid address"),
        PrivateKey::generate(),
        HUB_ADDRESS,
        "10.13.0.0/16".parse().expect("valid network"),
        vec![
            Forward {
                port: SINK_PORT,
                target: sink,
            },
            Forward {
                port: SOURCE_PORT,
                target: source,
            },
        ],
    ))
    .await
    .expect("hub binds");
    let onetun = find_onetun();

    eprintln!("plain loopback TCP ...");
    let plain_up = measure(Direction::Upload, sink, source).await;
    let plain_down = measure(Direction::Download, sink, source).await;
    let plain = (plain_up, plain_down);

    eprintln!("Camwire tunnel ...");
    let camwire = run_camwire(&hub, hub.local_addr(), 2).await;
    eprintln!("onetun ...");
    let onetun_result = match &onetun {
        Some(path) => Some(run_onetun(path, &hub, hub.local_addr(), 3).await),
        None => None,
    };

    eprintln!("Camwire tunnel, 20 ms RTT ...");
    let relay = delay_relay(hub.local_addr(), ONE_WAY_DELAY).await;
    let camwire_delayed = run_camwire(&hub, relay, 4).await;
    eprintln!("onetun, 20 ms RTT ...");
    let onetun_delayed = match &onetun {
        Some(path) => {
            let relay = delay_relay(hub.local_addr(), ONE_WAY_DELAY).await;
            Some(run_onetun(path, &hub, relay, 5).await)
        }
        None => None,
    };

    eprintln!("handshakes ...");
    let handshake = handshake_median(&hub).await;

    println!();
    println!(
        "Transfers of {} s each way; goodput at the receiver; CPU is the whole bench process",
        TRANSFER_TIME.as_secs()
    );
    println!("(tunnel, hub and both TCP endpoints) per GB moved.");
    println!();
    println!("| path | upload Mbit/s | download Mbit/s | upload CPU s/GB | download CPU s/GB |");
    println!("|---|---|---|---|---|");
    row("(a) plain loopback TCP", Some(&plain), true);
    row("(b) Camwire tunnel -> hub -> forward", Some(&camwire), true);
    row("(c) onetun -> hub -> forward", onetun_result.as_ref(), true);
    row(
        "(b) Camwire, 20 ms added RTT",
        Some(&camwire_delayed),
        false,
    );
    row(
        "(c) onetun, 20 ms added RTT",
        onetun_delayed.as_ref(),
        false,
    );
    println!();
    if onetun.is_none() {
        println!("onetun was not found, so its rows are n/a.");
    }
    println!(
        "Handshake time (Tunnel::start to connected, median of {HANDSHAKE_SAMPLES}): {:.2} ms",
        handshake.as_secs_f64() * 1e3
    );

    hub.shutdown().await;
}
