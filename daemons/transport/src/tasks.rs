//! Task lifecycle: every task a gateway or agent spawns is tracked, stoppable and joinable.
//!
//! [`Tasks`] is a cheap-to-clone handle over one [`JoinSet`] and one [`CancellationToken`].
//! [`Tasks::spawn`] runs a future until it finishes or the token is cancelled;
//! [`Tasks::shutdown`] cancels the token and joins every task within a deadline, aborting the
//! ones still running after it; [`Tasks::abort_all`] (what an owner calls when it is dropped)
//! aborts them at once.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A set of tracked tasks sharing one cancellation token.
#[derive(Debug, Clone, Default)]
pub struct Tasks {
    set: Arc<Mutex<JoinSet<()>>>,
    token: CancellationToken,
}

/// How a [`Tasks::shutdown`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Tasks that ended by themselves after the cancellation.
    pub joined: usize,
    /// Tasks aborted because the deadline passed.
    pub aborted: usize,
}

impl Tasks {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The token cancelled at shutdown; a task that must finish work before it stops (drain
    /// connections, release a lease) waits on it itself and is spawned with
    /// [`Tasks::spawn_graceful`].
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Whether shutdown has begun.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Runs `fut` until it ends or shutdown begins, whichever comes first. Must be called
    /// within a Tokio runtime.
    pub fn spawn<F>(&self, name: &'static str, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let token = self.token.clone();
        self.spawn_graceful(name, async move {
            let _ = token.run_until_cancelled(fut).await;
        });
    }

    /// Runs `fut` to its end; it is expected to watch [`Tasks::token`] and finish promptly
    /// after cancellation (it is aborted if it outlives the shutdown deadline). Once shutdown has
    /// begun nothing new starts: the future is dropped unstarted.
    pub fn spawn_graceful<F>(&self, name: &'static str, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut set = self.set.lock().unwrap_or_else(PoisonError::into_inner);
        // reap finished tasks so a long-lived set does not accumulate them
        while let Some(r) = set.try_join_next() {
            report(r);
        }
        if self.token.is_cancelled() {
            tracing::debug!(task = name, "not starting a task during shutdown");
            return;
        }
        set.spawn(async move {
            fut.await;
            tracing::trace!(task = name, "task ended");
        });
    }

    /// How many tasks are still tracked (finished ones may be counted until reaped).
    pub fn len(&self) -> usize {
        self.set.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether no task is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cancels the token, then joins every task for up to `deadline`, and aborts and joins
    /// whatever is left. A task that panicked is logged.
    pub async fn shutdown(&self, deadline: Duration) -> Drained {
        self.token.cancel();
        let mut set = std::mem::take(&mut *self.set.lock().unwrap_or_else(PoisonError::into_inner));
        let mut joined = 0;
        let drained = tokio::time::timeout(deadline, async {
            while let Some(r) = set.join_next().await {
                report(r);
                joined += 1;
            }
        })
        .await;
        let mut aborted = 0;
        if drained.is_err() {
            set.abort_all();
            while let Some(r) = set.join_next().await {
                match r {
                    Err(e) if e.is_cancelled() => aborted += 1,
                    r => {
                        report(r);
                        joined += 1;
                    }
                }
            }
        }
        Drained { joined, aborted }
    }

    /// Cancels the token and aborts every task at once (for `Drop` of an owner).
    pub fn abort_all(&self) {
        self.token.cancel();
        self.set.lock().unwrap_or_else(PoisonError::into_inner).abort_all();
    }
}

/// Logs a task that panicked (the others ended as they should).
fn report(r: Result<(), tokio::task::JoinError>) {
    if let Err(e) = r
        && e.is_panic()
    {
        tracing::error!(error = %e, "a task panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn shutdown_joins_cooperative_tasks_and_aborts_stuck_ones() {
        let tasks = Tasks::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // stopped by the token
        tasks.spawn("forever", futures::future::pending());
        // graceful: finishes its work after the token fires
        let token = tasks.token();
        tasks.spawn_graceful("graceful", async move {
            token.cancelled().await;
            let _ = tx.send(());
        });
        // ignores the token
        tasks.spawn_graceful("stuck", futures::future::pending());
        let d = tasks.shutdown(Duration::from_secs(5)).await;
        assert_eq!(d, Drained { joined: 2, aborted: 1 });
        assert!(rx.await.is_ok());
        assert!(tasks.is_empty());
        // nothing starts after shutdown
        tasks.spawn("late", futures::future::pending());
        assert!(tasks.is_empty());
    }

    #[tokio::test]
    async fn abort_all_drops_the_futures() {
        let tasks = Tasks::new();
        let held = Arc::new(());
        let h = Arc::clone(&held);
        let (started_tx, started) = tokio::sync::oneshot::channel();
        tasks.spawn_graceful("holder", async move {
            let _h = h;
            let _ = started_tx.send(());
            futures::future::pending::<()>().await;
        });
        started.await.ok();
        assert_eq!(Arc::strong_count(&held), 2);
        tasks.abort_all();
        let _ = tasks.shutdown(Duration::from_secs(1)).await;
        assert_eq!(Arc::strong_count(&held), 1);
    }
}
