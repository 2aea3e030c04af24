//! Counting the work running on the blocking pool, so [`Store::quiesce`] can wait for it.

use super::*;

/// Counts blocking operations; [`Store::quiesce`] waits for the count to reach zero.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    n: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One running operation, counted until dropped (inside the blocking closure, so it counts
/// the work, not the future).
pub(crate) struct Running(Arc<InFlight>);

impl InFlight {
    pub(crate) fn start(self: &Arc<Self>) -> Running {
        self.n.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Running(Arc::clone(self))
    }

    pub(super) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.n.load(std::sync::atomic::Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.n.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}
