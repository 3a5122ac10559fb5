//! Byte streams over TCP connections inside the tunnel.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::core::ClientCore;
use crate::driver::{Shared, StackHost};
use crate::stack::{ConnectionError, ConnectionId, RecvOutcome};

/// One TCP connection in a core's stack, as a tokio byte stream.
pub(crate) struct StackStream<C: StackHost> {
    shared: Arc<Shared<C>>,
    id: ConnectionId,
}

impl<C: StackHost> StackStream<C> {
    pub fn new(shared: Arc<Shared<C>>, id: ConnectionId) -> Self {
        Self { shared, id }
    }

    pub fn id(&self) -> ConnectionId {
        self.id
    }

    fn stopped_error() -> io::Error {
        io::Error::new(io::ErrorKind::NotConnected, "the tunnel is stopped")
    }
}

fn to_io_error(error: ConnectionError) -> io::Error {
    let kind = match error {
        ConnectionError::Reset => io::ErrorKind::ConnectionReset,
        ConnectionError::WriteClosed => io::ErrorKind::BrokenPipe,
    };
    io::Error::new(kind, error)
}

impl<C: StackHost> AsyncRead for StackStream<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut core = this.shared.lock();
        if core.is_stopped() {
            return Poll::Ready(Err(Self::stopped_error()));
        }

        let stack = core.stack();
        match stack.recv(this.id, buffer.initialize_unfilled()) {
            Ok(RecvOutcome::Data(read)) => {
                drop(core);
                buffer.advance(read);
                // Reading opened the receive window; the driver may owe a window update.
                this.shared.wake.notify_one();
                Poll::Ready(Ok(()))
            }
            Ok(RecvOutcome::Pending) => {
                stack.register_recv_waker(this.id, context.waker());
                Poll::Pending
            }
            Ok(RecvOutcome::Finished) => Poll::Ready(Ok(())),
            Err(error) => Poll::Ready(Err(to_io_error(error))),
        }
    }
}

impl<C: StackHost> AsyncWrite for StackStream<C> {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut core = this.shared.lock();
        if core.is_stopped() {
            return Poll::Ready(Err(Self::stopped_error()));
        }

        let stack = core.stack();
        match stack.send(this.id, data) {
            Ok(0) => {
                stack.register_send_waker(this.id, context.waker());
                Poll::Pending
            }
            Ok(sent) => {
                drop(core);
                this.shared.wake.notify_one();
                Poll::Ready(Ok(sent))
            }
            Err(error) => Poll::Ready(Err(to_io_error(error))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Sends FIN once the queued data is out; reading goes on.
    fn poll_shutdown(self: Pin<&mut Self>, _context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.shared.lock().stack().shutdown_write(this.id);
        this.shared.wake.notify_one();
        Poll::Ready(Ok(()))
    }
}

impl<C: StackHost> Drop for StackStream<C> {
    fn drop(&mut self) {
        self.shared.lock().stack().release(self.id, Instant::now());
        self.shared.wake.notify_one();
    }
}

/// A TCP connection through a client tunnel, from [`crate::Tunnel::dial`].
///
/// Dropping it closes the connection gracefully (FIN); after the tunnel stops, reads
/// and writes fail with `NotConnected`.
pub struct TunnelStream {
    pub(crate) inner: StackStream<ClientCore>,
}

impl std::fmt::Debug for TunnelStream {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TunnelStream")
            .field("connection", &self.inner.id())
            .finish()
    }
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(context, buffer)
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(context, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }
}
