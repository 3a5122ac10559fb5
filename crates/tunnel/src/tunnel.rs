//! The client tunnel: a tokio driver around [`ClientCore`], with dialing, local port
//! forwards and a SOCKS5 proxy.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use camwire_api::{KeyError, WireguardConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::core::{ClientConfig, ClientCore, ConnectError, Event, TunnelState};
use crate::driver::{Shared, drive, to_system_time};
use crate::keys::{PrivateKey, PublicKey};
use crate::socks5::{self, NegotiationError, Reply};
use crate::stack::{ConnectProgress, TcpBuffers};
use crate::stream::{StackStream, TunnelStream};
use crate::tasks::{ShutdownReport, TaskSet};
use crate::udp::{self, DEFAULT_UDP_BUFFER_SIZE};

/// Buffer size of each direction when copying between a local socket and the tunnel.
const COPY_BUFFER: usize = 64 * 1024;

/// Settings of a client tunnel that do not come from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelOptions {
    pub tcp_buffers: TcpBuffers,
    /// Requested `SO_RCVBUF` and `SO_SNDBUF` of the UDP socket, in bytes.
    pub udp_buffer_size: usize,
    /// How long [`Tunnel::dial`] waits for the TCP handshake through the tunnel.
    pub connect_timeout: Duration,
    /// How long [`Tunnel::shutdown`] waits for tasks before aborting them.
    pub shutdown_timeout: Duration,
}

impl Default for TunnelOptions {
    fn default() -> Self {
        Self {
            tcp_buffers: TcpBuffers::default(),
            udp_buffer_size: DEFAULT_UDP_BUFFER_SIZE,
            connect_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(2),
        }
    }
}

/// A snapshot of a tunnel's state and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelStats {
    pub state: TunnelState,
    /// Wall-clock time of the last completed handshake.
    pub last_handshake: Option<SystemTime>,
    /// WireGuard datagram bytes and counts, handshakes and keepalives included.
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub rx_packets: u64,
    /// Decrypted packets dropped because their source was outside the allowed IPs.
    pub rejected_source_packets: u64,
    /// Datagrams that failed to parse or authenticate.
    pub invalid_datagrams: u64,
    /// Tasks of this tunnel still running (driver, listeners, forwarded connections).
    pub tasks: usize,
}

/// Error of a tunnel operation.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("invalid server public key: {0}")]
    InvalidServerKey(#[from] KeyError),
    #[error("failed to resolve the WireGuard endpoint {endpoint:?}: {source}")]
    ResolveEndpoint { endpoint: String, source: io::Error },
    #[error("WireGuard endpoint {0:?} resolved to no address")]
    EndpointNotFound(String),
    #[error("failed to bind the tunnel's UDP socket on {address}: {source}")]
    BindUdp {
        address: SocketAddr,
        source: io::Error,
    },
    #[error("failed to listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: io::Error,
    },
    #[error("address {0} is outside the tunnel's allowed IPs")]
    NotAllowed(SocketAddrV4),
    #[error("connection to {0} through the tunnel was refused or reset")]
    ConnectionRefused(SocketAddrV4),
    #[error("connection to {address} through the tunnel timed out after {timeout:?}")]
    ConnectTimedOut {
        address: SocketAddrV4,
        timeout: Duration,
    },
    #[error("the tunnel is stopped")]
    Stopped,
    #[error("the tunnel's TCP stack rejected the connection to {address}: {reason}")]
    Stack {
        address: SocketAddrV4,
        reason: String,
    },
}

/// State that the tunnel's tasks share.
struct Context {
    shared: Arc<Shared<ClientCore>>,
    tasks: TaskSet,
    stop: watch::Receiver<bool>,
    connect_timeout: Duration,
}

/// A client WireGuard tunnel running in this process, without a TUN device.
///
/// [`Tunnel::start`] binds the UDP socket and sends the first handshake; TCP
/// connections go through [`Tunnel::dial`], [`Tunnel::forward`] and
/// [`Tunnel::socks5`]. [`Tunnel::shutdown`] (or dropping the tunnel) stops every task,
/// closes every socket and zeroizes the private key.
pub struct Tunnel {
    context: Arc<Context>,
    stop: watch::Sender<bool>,
    local_addr: SocketAddr,
    server_public_key: PublicKey,
    shutdown_timeout: Duration,
}

impl Tunnel {
    /// Starts a tunnel to the server that `config` describes. Returns once the UDP
    /// socket is bound and the first handshake initiation is queued; the state is
    /// [`TunnelState::Connecting`] until the server's handshake response arrives.
    pub async fn start(
        config: &WireguardConfig,
        private_key: PrivateKey,
        options: TunnelOptions,
    ) -> Result<Tunnel, TunnelError> {
        let server_public_key = PublicKey::from_base64(&config.server_public_key)?;
        let endpoint = resolve(&config.endpoint).await?;
        let bind_address = match endpoint {
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
        };
        let socket = udp::bind(bind_address, options.udp_buffer_size).map_err(|source| {
            TunnelError::BindUdp {
                address: bind_address,
                source,
            }
        })?;
        let local_addr = socket.local_addr().map_err(|source| TunnelError::BindUdp {
            address: bind_address,
            source,
        })?;

        let core = ClientCore::new(
            ClientConfig {
                private_key,
                server_public_key,
                endpoint,
                address: config.address.addr(),
                server_address: config.server_address,
                allowed_ips: config.allowed_ips.clone(),
                persistent_keepalive: Some(config.persistent_keepalive),
                tcp_buffers: options.tcp_buffers,
            },
            Instant::now(),
        );
        let shared = Shared::new(core);
        let (stop_sender, stop) = watch::channel(false);
        let context = Arc::new(Context {
            shared: Arc::clone(&shared),
            tasks: TaskSet::default(),
            stop: stop.clone(),
            connect_timeout: options.connect_timeout,
        });

        let peer = server_public_key.fingerprint();
        tracing::info!(%peer, %endpoint, address = %config.address, "tunnel started");
        context
            .tasks
            .spawn(drive(shared, socket, stop, move |event| {
                log_event(&peer, event)
            }));

        Ok(Tunnel {
            context,
            stop: stop_sender,
            local_addr,
            server_public_key,
            shutdown_timeout: options.shutdown_timeout,
        })
    }

    /// Opens a TCP connection to `remote` inside the tunnel.
    pub async fn dial(&self, remote: SocketAddrV4) -> Result<TunnelStream, TunnelError> {
        dial(&self.context, remote).await
    }

    /// Forwards TCP connections accepted on `local` to `remote` inside the tunnel,
    /// and returns the bound address (useful with port 0).
    pub async fn forward(
        &self,
        local: SocketAddr,
        remote: SocketAddrV4,
    ) -> Result<SocketAddr, TunnelError> {
        if !self.context.is_allowed(remote) {
            return Err(TunnelError::NotAllowed(remote));
        }
        let (listener, bound) = listen(local).await?;

        let context = Arc::clone(&self.context);
        self.context.tasks.spawn(async move {
            accept_loop(context, listener, move |context, stream| {
                forward_connection(context, stream, remote)
            })
            .await;
        });
        tracing::info!(%bound, %remote, "port forward started");
        Ok(bound)
    }

    /// Starts a SOCKS5 proxy (RFC 1928, no authentication) on `local` whose CONNECT
    /// requests go through the tunnel, and returns the bound address.
    pub async fn socks5(&self, local: SocketAddr) -> Result<SocketAddr, TunnelError> {
        let (listener, bound) = listen(local).await?;

        let context = Arc::clone(&self.context);
        self.context.tasks.spawn(async move {
            accept_loop(context, listener, socks5_connection).await;
        });
        tracing::info!(%bound, "SOCKS5 proxy started");
        Ok(bound)
    }

    pub fn stats(&self) -> TunnelStats {
        let core = self.context.shared.lock();
        let counters = core.counters();
        TunnelStats {
            state: core.state(),
            last_handshake: core.last_handshake().map(to_system_time),
            tx_bytes: counters.tx_bytes,
            rx_bytes: counters.rx_bytes,
            tx_packets: counters.tx_packets,
            rx_packets: counters.rx_packets,
            rejected_source_packets: core.rejected_source_packets(),
            invalid_datagrams: core.invalid_datagrams(),
            tasks: self.context.tasks.live(),
        }
    }

    /// Returns the local address of the tunnel's UDP socket.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn server_public_key(&self) -> PublicKey {
        self.server_public_key
    }

    /// Stops the tunnel: every task ends (aborted after the shutdown timeout), every
    /// socket closes, open [`TunnelStream`]s fail, and the private key is zeroized.
    pub async fn shutdown(self) -> ShutdownReport {
        self.stop_core();
        let report = self.context.tasks.shutdown(self.shutdown_timeout).await;
        tracing::info!(
            peer = %self.server_public_key.fingerprint(),
            ended = report.ended,
            aborted = report.aborted,
            "tunnel stopped"
        );
        report
    }

    fn stop_core(&self) {
        let _ = self.stop.send(true);
        self.context.shared.lock().stop();
        self.context.shared.wake.notify_one();
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.stop_core();
        self.context.tasks.abort_all();
    }
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Tunnel")
            .field("server", &self.server_public_key.fingerprint())
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Context {
    fn is_allowed(&self, remote: SocketAddrV4) -> bool {
        let core = self.shared.lock();
        core.allowed_ips()
            .iter()
            .any(|network| network.contains(remote.ip()))
    }
}

async fn resolve(endpoint: &str) -> Result<SocketAddr, TunnelError> {
    let mut addresses =
        tokio::net::lookup_host(endpoint)
            .await
            .map_err(|source| TunnelError::ResolveEndpoint {
                endpoint: endpoint.to_owned(),
                source,
            })?;
    addresses
        .next()
        .ok_or_else(|| TunnelError::EndpointNotFound(endpoint.to_owned()))
}

async fn listen(local: SocketAddr) -> Result<(TcpListener, SocketAddr), TunnelError> {
    let listen_error = |source| TunnelError::Listen {
        address: local,
        source,
    };
    let listener = TcpListener::bind(local).await.map_err(listen_error)?;
    let bound = listener.local_addr().map_err(listen_error)?;
    Ok((listener, bound))
}

async fn dial(context: &Context, remote: SocketAddrV4) -> Result<TunnelStream, TunnelError> {
    let id = {
        let mut core = context.shared.lock();
        core.connect(remote).map_err(|error| match error {
            ConnectError::NotAllowed(address) => TunnelError::NotAllowed(address),
            ConnectError::Stopped => TunnelError::Stopped,
            ConnectError::Stack(reason) => TunnelError::Stack {
                address: remote,
                reason: reason.to_string(),
            },
        })?
    };
    // From here on the stream owns the connection and closes it when dropped.
    let stream = StackStream::new(Arc::clone(&context.shared), id);
    context.shared.wake.notify_one();

    let established = std::future::poll_fn(|task| {
        let mut core = context.shared.lock();
        if core.is_stopped() {
            return std::task::Poll::Ready(Err(TunnelError::Stopped));
        }
        let stack = core.stack();
        match stack.connect_progress(id) {
            ConnectProgress::Established => std::task::Poll::Ready(Ok(())),
            ConnectProgress::Failed => {
                std::task::Poll::Ready(Err(TunnelError::ConnectionRefused(remote)))
            }
            ConnectProgress::Connecting => {
                stack.register_send_waker(id, task.waker());
                std::task::Poll::Pending
            }
        }
    });

    match tokio::time::timeout(context.connect_timeout, established).await {
        Ok(Ok(())) => Ok(TunnelStream { inner: stream }),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(TunnelError::ConnectTimedOut {
            address: remote,
            timeout: context.connect_timeout,
        }),
    }
}

/// Accepts connections until the tunnel stops, each handled by its own task.
async fn accept_loop<F, Fut>(context: Arc<Context>, listener: TcpListener, handle: F)
where
    F: Fn(Arc<Context>, TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut stop = context.stop.clone();
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::debug!(%error, "accept failed");
                continue;
            }
        };
        tracing::debug!(%peer, "accepted local connection");

        let connection = handle(Arc::clone(&context), stream);
        let mut stop = context.stop.clone();
        context.tasks.spawn(async move {
            tokio::select! {
                _ = stop.changed() => {}
                () = connection => {}
            }
        });
    }
}

async fn forward_connection(context: Arc<Context>, mut local: TcpStream, remote: SocketAddrV4) {
    let _ = local.set_nodelay(true);
    let mut tunnel = match dial(&context, remote).await {
        Ok(tunnel) => tunnel,
        Err(error) => {
            tracing::debug!(%error, "port forward failed to connect");
            return;
        }
    };
    copy_both_ways(&mut local, &mut tunnel, remote).await;
}

async fn socks5_connection(context: Arc<Context>, mut local: TcpStream) {
    let _ = local.set_nodelay(true);
    let remote = match socks5::negotiate(&mut local).await {
        Ok(remote) => remote,
        Err(NegotiationError::Io(error)) => {
            tracing::debug!(%error, "SOCKS5 negotiation failed");
            return;
        }
        Err(error) => {
            tracing::debug!(%error, "SOCKS5 request rejected");
            let _ = local.shutdown().await;
            return;
        }
    };

    let (code, tunnel) = match dial(&context, remote).await {
        Ok(tunnel) => (Reply::Succeeded, Some(tunnel)),
        Err(TunnelError::NotAllowed(_)) => (Reply::NotAllowedByRuleset, None),
        Err(TunnelError::ConnectionRefused(_)) => (Reply::ConnectionRefused, None),
        Err(TunnelError::ConnectTimedOut { .. }) => (Reply::HostUnreachable, None),
        Err(_) => (Reply::GeneralFailure, None),
    };
    if socks5::reply(&mut local, code).await.is_err() {
        return;
    }
    let Some(mut tunnel) = tunnel else {
        tracing::debug!(%remote, ?code, "SOCKS5 CONNECT failed");
        let _ = local.shutdown().await;
        return;
    };
    copy_both_ways(&mut local, &mut tunnel, remote).await;
}

async fn copy_both_ways(local: &mut TcpStream, tunnel: &mut TunnelStream, remote: SocketAddrV4) {
    let result =
        tokio::io::copy_bidirectional_with_sizes(local, tunnel, COPY_BUFFER, COPY_BUFFER).await;
    match result {
        Ok((sent, received)) => {
            tracing::debug!(%remote, sent, received, "forwarded connection closed")
        }
        Err(error) => tracing::debug!(%remote, %error, "forwarded connection failed"),
    }
}

fn log_event(peer: &str, event: Event) {
    match event {
        Event::HandshakeCompleted { first: true, .. } => {
            tracing::info!(%peer, "handshake completed, tunnel connected");
        }
        Event::HandshakeCompleted { first: false, .. } => {
            tracing::debug!(%peer, "handshake completed (rekey)");
        }
        Event::SessionExpired { .. } => {
            tracing::info!(%peer, "WireGuard session expired; the next connection starts a new handshake");
        }
        Event::ConnectionAccepted { .. } => {}
    }
}
