//! Tracking of the tokio tasks that a tunnel or hub spawns, so that shutdown can
//! prove every one of them ended.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;

/// How long [`TaskSet::shutdown`] waits, after its bound, for aborted tasks to end.
const ABORT_GRACE: Duration = Duration::from_millis(100);

/// Tasks of all tunnels and hubs in this process that have not ended yet.
static LIVE_TASKS: AtomicUsize = AtomicUsize::new(0);

/// Returns how many tasks of Camwire tunnels and hubs are alive in this process.
///
/// A task counts until its future has returned or been dropped after an abort.
pub fn live_tasks() -> usize {
    LIVE_TASKS.load(Ordering::SeqCst)
}

/// Outcome of a bounded shutdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Tasks that returned by themselves after the stop signal.
    pub ended: usize,
    /// Tasks still running when the time bound passed, which were aborted.
    pub aborted: usize,
}

/// The tasks of one tunnel or hub.
#[derive(Clone, Default)]
pub(crate) struct TaskSet {
    inner: Arc<TaskSetInner>,
}

#[derive(Default)]
struct TaskSetInner {
    handles: Mutex<Handles>,
    live: Arc<AtomicUsize>,
}

#[derive(Default)]
struct Handles {
    running: Vec<JoinHandle<()>>,
    closed: bool,
}

/// Decrements the live counters when a task's future ends or is dropped.
struct LiveGuard(Arc<AtomicUsize>);

impl LiveGuard {
    fn new(live: Arc<AtomicUsize>) -> Self {
        live.fetch_add(1, Ordering::SeqCst);
        LIVE_TASKS.fetch_add(1, Ordering::SeqCst);
        Self(live)
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
        LIVE_TASKS.fetch_sub(1, Ordering::SeqCst);
    }
}

impl TaskSet {
    /// Spawns `future` as a task of this set; after [`Self::shutdown`] began, the
    /// future is dropped instead.
    pub fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        let mut handles = self.lock();
        if handles.closed {
            return;
        }

        let guard = LiveGuard::new(Arc::clone(&self.inner.live));
        let handle = tokio::spawn(async move {
            let _guard = guard;
            future.await;
        });
        handles.running.retain(|handle| !handle.is_finished());
        handles.running.push(handle);
    }

    /// Tasks of this set that have not ended yet.
    pub fn live(&self) -> usize {
        self.inner.live.load(Ordering::SeqCst)
    }

    /// Waits up to `bound` for every task to end (the caller has sent the stop
    /// signal), then aborts the rest and returns within [`ABORT_GRACE`] more, even if an
    /// aborted task cannot run to end (its runtime is blocked).
    pub async fn shutdown(&self, bound: Duration) -> ShutdownReport {
        let deadline = tokio::time::Instant::now() + bound;
        let mut report = ShutdownReport::default();

        loop {
            let running = {
                let mut handles = self.lock();
                handles.closed = true;
                std::mem::take(&mut handles.running)
            };
            if running.is_empty() {
                return report;
            }

            for mut handle in running {
                match tokio::time::timeout_at(deadline, &mut handle).await {
                    Ok(_) => report.ended += 1,
                    Err(_) => {
                        handle.abort();
                        // An aborted task ends at its next poll. When its runtime is blocked
                        // that poll never comes, so the wait is bounded too.
                        let _ = tokio::time::timeout_at(deadline + ABORT_GRACE, handle).await;
                        report.aborted += 1;
                    }
                }
            }
        }
    }

    /// Aborts every task without waiting, for `Drop`.
    pub fn abort_all(&self) {
        let mut handles = self.lock();
        handles.closed = true;
        for handle in handles.running.drain(..) {
            handle.abort();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Handles> {
        self.inner
            .handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
