//! The tokio shell around a sans-IO core: it owns the UDP socket, sleeps until the
//! core's next deadline, and runs the core after every wake-up.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::UdpSocket;
use tokio::sync::{Notify, watch};

use crate::core::{ClientCore, Event, HubCore, TimeoutReason, Transmit};
use crate::stack::Stack;

/// Datagrams read from the socket per wake-up before the core runs. Larger batches
/// mean fewer TCP/IP stack polls per packet; smaller ones mean lower latency.
const RECEIVE_BATCH: usize = 64;

/// Room for one datagram. WireGuard datagrams of a 1420-byte MTU are at most 1452
/// bytes; larger ones are truncated by the kernel and then fail authentication.
const DATAGRAM_ROOM: usize = 4096;

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

/// Datagrams read in one batch, in one flat buffer.
struct ReceiveBatch {
    buffer: Vec<u8>,
    datagrams: Vec<(SocketAddr, usize)>,
}

impl ReceiveBatch {
    fn new() -> Self {
        Self {
            buffer: vec![0; RECEIVE_BATCH * DATAGRAM_ROOM],
            datagrams: Vec::with_capacity(RECEIVE_BATCH),
        }
    }

    /// Reads datagrams without blocking until the socket is empty or the batch full.
    fn fill(&mut self, socket: &UdpSocket) {
        while self.datagrams.len() < RECEIVE_BATCH {
            let start = self.datagrams.len() * DATAGRAM_ROOM;
            let room = &mut self.buffer[start..start + DATAGRAM_ROOM];
            match socket.try_recv_from(room) {
                Ok((len, source)) => self.datagrams.push((source, len)),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) => {
                    tracing::debug!(%error, "UDP receive failed");
                    return;
                }
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.datagrams
            .iter()
            .enumerate()
            .map(|(slot, (source, len))| {
                let start = slot * DATAGRAM_ROOM;
                (*source, &self.buffer[start..start + len])
            })
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
    let mut batch = ReceiveBatch::new();
    let mut transmits = Vec::new();
    let mut events = Vec::new();

    loop {
        let now = Instant::now();
        let deadline = {
            let mut core = shared.lock();
            for (source, datagram) in batch.iter() {
                core.handle_datagram(source, datagram, now);
            }
            core.handle_timeout(now);
            while let Some(transmit) = core.poll_transmit(now) {
                transmits.push(transmit);
            }
            while let Some(event) = core.poll_event() {
                events.push(event);
            }
            core.poll_timeout(now)
        };
        batch.datagrams.clear();

        for event in events.drain(..) {
            on_event(event);
        }
        for transmit in transmits.drain(..) {
            if !send(&socket, &transmit, &mut stop).await {
                return;
            }
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
            _ = socket.readable() => batch.fill(&socket),
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep_until(sleep_until.into()) => {}
        }
    }
}

/// Sends one datagram, waiting for room in the socket's send buffer. Returns false
/// when the stop signal came while waiting.
async fn send(socket: &UdpSocket, transmit: &Transmit, stop: &mut watch::Receiver<bool>) -> bool {
    loop {
        match socket.try_send_to(&transmit.payload, transmit.destination) {
            Ok(_) => return true,
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
