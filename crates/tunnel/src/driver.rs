//! The tokio shell around a sans-IO core: it owns the UDP socket, sleeps until the
//! core's next deadline, and runs the core after every wake-up.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use quinn_udp::{RecvMeta, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, watch};

use crate::core::{ClientCore, Event, HubCore, TimeoutReason, Transmit};
use crate::stack::Stack;

/// Receive buffers per `recvmmsg` call.
const RECEIVE_BUFFERS: usize = quinn_udp::BATCH_SIZE;

/// Room for one receive buffer, enough for any UDP datagram. With UDP GRO (Linux) the
/// kernel coalesces datagrams of one sender into one buffer of up to 64 KiB.
const RECEIVE_BUFFER_ROOM: usize = 64 * 1024;

/// Largest UDP payload sent with one GSO call, the kernel's limit for one UDP message.
const MAX_GSO_BYTES: usize = 65_000;

/// Shortest sleep between two runs of the core, so that a deadline that is already
/// due cannot make the driver spin.
const MIN_SLEEP: Duration = Duration::from_millis(1);

/// A core shared by its driver task and the streams of its connections.
pub(crate) struct Shared<C> {
    core: Mutex<C>,
    /// Wakes the driver after an application read, write or close.
    pub wake: Notify,
}

impl<C> Shared<C> {
    pub fn new(core: C) -> Arc<Self> {
        Arc::new(Self {
            core: Mutex::new(core),
            wake: Notify::new(),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, C> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A core whose TCP connections streams can read and write.
pub(crate) trait StackHost: Send + 'static {
    fn stack(&mut self) -> &mut Stack;
    fn is_stopped(&self) -> bool;
}

/// The inputs and outputs of a sans-IO core, as the driver loop calls them.
pub(crate) trait Driven: StackHost {
    fn handle_datagram(&mut self, source: SocketAddr, datagram: &[u8], now: Instant);
    fn handle_timeout(&mut self, now: Instant);
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit>;
    fn poll_event(&mut self) -> Option<Event>;
    fn poll_timeout(&mut self, now: Instant) -> Option<(Instant, TimeoutReason)>;
}

impl StackHost for ClientCore {
    fn stack(&mut self) -> &mut Stack {
        ClientCore::stack(self)
    }

    fn is_stopped(&self) -> bool {
        ClientCore::is_stopped(self)
    }
}

impl Driven for ClientCore {
    fn handle_datagram(&mut self, _source: SocketAddr, datagram: &[u8], now: Instant) {
        ClientCore::handle_datagram(self, datagram, now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        ClientCore::handle_timeout(self, now);
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        ClientCore::poll_transmit(self, now)
    }

    fn poll_event(&mut self) -> Option<Event> {
        ClientCore::poll_event(self)
    }

    fn poll_timeout(&mut self, now: Instant) -> Option<(Instant, TimeoutReason)> {
        ClientCore::poll_timeout(self, now)
    }
}

impl StackHost for HubCore {
    fn stack(&mut self) -> &mut Stack {
        HubCore::stack(self)
    }

    fn is_stopped(&self) -> bool {
        HubCore::is_stopped(self)
    }
}

impl Driven for HubCore {
    fn handle_datagram(&mut self, source: SocketAddr, datagram: &[u8], now: Instant) {
        HubCore::handle_datagram(self, source, datagram, now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        HubCore::handle_timeout(self, now);
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        HubCore::poll_transmit(self, now)
    }

    fn poll_event(&mut self) -> Option<Event> {
        HubCore::poll_event(self)
    }

    fn poll_timeout(&mut self, now: Instant) -> Option<(Instant, TimeoutReason)> {
        HubCore::poll_timeout(self, now)
    }
}

/// Datagrams read with one `recvmmsg`, each buffer holding one or more datagrams of
/// one sender (GRO).
struct ReceiveBatch {
    buffers: Vec<Vec<u8>>,
    meta: Vec<RecvMeta>,
    filled: usize,
}

impl ReceiveBatch {
    fn new() -> Self {
        Self {
            buffers: (0..RECEIVE_BUFFERS)
                .map(|_| vec![0; RECEIVE_BUFFER_ROOM])
                .collect(),
            meta: vec![RecvMeta::default(); RECEIVE_BUFFERS],
            filled: 0,
        }
    }

    /// Reads what the socket has without blocking, up to one batch.
    fn fill(&mut self, socket: &UdpSocket, state: &UdpSocketState) {
        let mut slices: Vec<IoSliceMut<'_>> = self
            .buffers
            .iter_mut()
            .map(|buffer| IoSliceMut::new(buffer))
            .collect();
        let meta = &mut self.meta;
        let result = socket.try_io(Interest::READABLE, || {
            state.recv(socket.into(), &mut slices, meta)
        });

        self.filled = match result {
            Ok(count) => count,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => 0,
            Err(error) => {
                tracing::debug!(%error, "UDP receive failed");
                0
            }
        };
    }

    /// Returns the datagrams of the batch, with GRO buffers split at their stride.
    fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.meta[..self.filled]
            .iter()
            .zip(&self.buffers)
            .flat_map(|(meta, buffer)| {
                let received = &buffer[..meta.len];
                // `chunks` yields nothing for an empty datagram, which still counts as one.
                let empty = received.is_empty().then_some(received);
                received
                    .chunks(meta.stride.max(1))
                    .chain(empty)
                    .map(move |datagram| (meta.addr, datagram))
            })
    }

    fn clear(&mut self) {
        self.filled = 0;
    }
}

/// Outgoing datagrams, sent in runs of equal-sized datagrams to one destination with
/// one GSO call each where the platform supports it.
struct SendQueue {
    transmits: Vec<Transmit>,
    segments: Vec<u8>,
}

impl SendQueue {
    fn new() -> Self {
        Self {
            transmits: Vec::new(),
            segments: Vec::with_capacity(MAX_GSO_BYTES),
        }
    }

    /// Sends every queued datagram. Returns false when the stop signal came while
    /// waiting for room in the socket's send buffer.
    async fn flush(
        &mut self,
        socket: &UdpSocket,
        state: &UdpSocketState,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let max_segments = state.max_gso_segments().max(1);
        let mut next = 0;

        while next < self.transmits.len() {
            let first = &self.transmits[next];
            let segment_size = first.payload.len();
            let run = self.transmits[next..]
                .iter()
                .take(max_segments.min(MAX_GSO_BYTES / segment_size.max(1)).max(1))
                .enumerate()
                .take_while(|(position, transmit)| {
                    // Every datagram of a GSO run has the same size, except a shorter last one.
                    *position == 0
                        || (transmit.destination == first.destination
                            && transmit.payload.len() <= segment_size
                            && self.transmits[next + position - 1].payload.len() == segment_size)
                })
                .count();

            self.segments.clear();
            for transmit in &self.transmits[next..next + run] {
                self.segments.extend_from_slice(&transmit.payload);
            }
            let transmit = quinn_udp::Transmit {
                destination: first.destination,
                ecn: None,
                contents: &self.segments,
                segment_size: (run > 1).then_some(segment_size),
                src_ip: None,
            };
            if !send(socket, state, &transmit, stop).await {
                return false;
            }
            next += run;
        }

        self.transmits.clear();
        true
    }
}

/// Runs `shared`'s core on `socket` until `stop` turns true. `on_event` gets every
/// event of the core, called outside the core's lock.
pub(crate) async fn drive<C: Driven>(
    shared: Arc<Shared<C>>,
    socket: UdpSocket,
    mut stop: watch::Receiver<bool>,
    mut on_event: impl FnMut(Event),
) {
    let state = match UdpSocketState::new((&socket).into()) {
        Ok(state) => state,
        Err(error) => {
            tracing::error!(%error, "failed to set up the UDP socket; the driver ends and no datagram is sent or received");
            return;
        }
    };
    let mut batch = ReceiveBatch::new();
    let mut queue = SendQueue::new();
    let mut events = Vec::new();

    loop {
        let now = Instant::now();
        let deadline = {
            let mut core = shared.lock();
            for (source, datagram) in batch.datagrams() {
                core.handle_datagram(source, datagram, now);
            }
            core.handle_timeout(now);
            while let Some(transmit) = core.poll_transmit(now) {
                queue.transmits.push(transmit);
            }
            while let Some(event) = core.poll_event() {
                events.push(event);
            }
            core.poll_timeout(now)
        };
        batch.clear();

        for event in events.drain(..) {
            on_event(event);
        }
        if !queue.flush(&socket, &state, &mut stop).await {
            return;
        }

        // Sleep until the next datagram, application request or deadline.
        let sleep_until = match deadline {
            Some((at, reason)) => {
                tracing::trace!(?reason, delay = ?at.saturating_duration_since(now), "driver sleeps");
                at.max(now + MIN_SLEEP)
            }
            None => now + Duration::from_secs(3600),
        };
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            _ = socket.readable() => batch.fill(&socket, &state),
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep_until(sleep_until.into()) => {}
        }
    }
}

/// Sends one UDP message (one datagram, or several with GSO), waiting for room in the
/// socket's send buffer. Returns false when the stop signal came while waiting.
async fn send(
    socket: &UdpSocket,
    state: &UdpSocketState,
    transmit: &quinn_udp::Transmit<'_>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    loop {
        // quinn-udp 0.5's `UdpSocketState::send` logs and drops failed datagrams (at most
        // one log line per minute), and turns GSO off for later calls after EIO or EINVAL.
        match socket.try_io(Interest::WRITABLE, || state.send(socket.into(), transmit)) {
            Ok(()) => return true,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => {
                tracing::debug!(%error, destination = %transmit.destination, "UDP send failed");
                return true;
            }
        }

        tokio::select! {
            _ = stop.changed() => return false,
            _ = socket.writable() => {}
        }
    }
}

/// Converts a time of the monotonic clock into wall-clock time, against one anchor
/// pair taken on first use, so that the same instant always converts the same way.
pub(crate) fn to_system_time(instant: Instant) -> SystemTime {
    static ANCHOR: OnceLock<(Instant, SystemTime)> = OnceLock::new();
    let (anchor_instant, anchor_time) = *ANCHOR.get_or_init(|| (Instant::now(), SystemTime::now()));

    match instant.checked_duration_since(anchor_instant) {
        Some(after) => anchor_time + after,
        None => anchor_time - anchor_instant.duration_since(instant),
    }
}
