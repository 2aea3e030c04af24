//! Runs uninstall tasks: drives core's [`UninstallTask`] state machine, persisting it after
//! every step (write-ahead, compare-and-put), performing its effects idempotently.
//!
//! Tasks run only on the leader (every replica when there is no election: one replica). The
//! leader runs every unfinished task in the store and each new one as the store watch shows it,
//! so a task started through any replica runs, and a new leader resumes what the old one left.
//! Cancelling is a compare-and-put of the task record from whichever replica is asked; the
//! runner, finding the record changed under it, adopts it (and stops when it has ended).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use opni_metrics_core::driver::{ClusterDriver, DriverError};
use opni_metrics_core::registry::RegistryError;
use opni_metrics_core::store::WatchEvent;
use opni_metrics_core::uninstall::{Effect, Input, TaskError, UninstallTask};
use opni_metrics_core::{CapabilityName, ClusterId, Revision, Timestamp};
use opni_metrics_transport::Tasks;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::state::{State, StateError, TASKS, now};
use super::sync::Hub;

/// Starts, resumes and cancels uninstall tasks.
#[derive(Clone)]
pub(crate) struct Uninstaller {
    state: State,
    hub: Hub,
    driver: Arc<dyn ClusterDriver>,
    tasks: Tasks,
    /// The clusters whose task this replica runs (each stopped by its term's token).
    running: Arc<Mutex<HashSet<ClusterId>>>,
    leading: watch::Receiver<bool>,
}

impl std::fmt::Debug for Uninstaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uninstaller").finish_non_exhaustive()
    }
}

/// Why [`Uninstaller::start`] did not start a task.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// An unfinished task exists.
    #[error("cluster {0} is already being uninstalled")]
    Running(ClusterId),
    /// The store failed.
    #[error(transparent)]
    State(#[from] StateError),
}

impl Uninstaller {
    /// A runner performing effects through `state`, `hub` and `driver`; tasks run in `tasks`
    /// while `leading` is true.
    pub(crate) fn new(
        state: State,
        hub: Hub,
        driver: Arc<dyn ClusterDriver>,
        tasks: Tasks,
        leading: watch::Receiver<bool>,
    ) -> Self {
        Self { state, hub, driver, tasks, running: Arc::new(Mutex::new(HashSet::new())), leading }
    }

    /// Persists a new task (refused while an unfinished one exists); the leader's runner sees
    /// it through its watch and runs it, under its term of leadership.
    ///
    /// # Errors
    /// [`StartError`].
    pub(crate) async fn start(&self, task: UninstallTask) -> Result<(), StartError> {
        loop {
            let at = match self.state.task_at(&task.cluster).await? {
                Some((t, _)) if !t.state.is_terminal() => return Err(StartError::Running(task.cluster.clone())),
                Some((_, rev)) => rev,
                None => Revision::ZERO,
            };
            if self.state.put_task_at(&task, at).await?.is_some() {
                return Ok(());
            }
        }
    }

    /// Starts the runner: while this replica leads, it runs every unfinished task, and each new
    /// one the store watch shows; when it stops leading, its tasks stop (each where its record
    /// says, for the next leader to resume).
    pub(crate) fn run(&self) {
        let this = self.clone();
        let stop = self.tasks.token();
        self.tasks.spawn("uninstall-runner", async move {
            let mut leading = this.leading.clone();
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    r = leading.wait_for(|l| *l) => if r.is_err() { return },
                }
                tracing::info!("leading: running uninstall tasks");
                let term = stop.child_token();
                let lost = async {
                    // a closed channel never changes again (no election): this replica leads on
                    if leading.wait_for(|l| !*l).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    () = this.follow(term.clone()) => {}
                    () = lost => {}
                    () = stop.cancelled() => {}
                }
                term.cancel();
                this.running.lock().unwrap_or_else(PoisonError::into_inner).clear();
                if stop.is_cancelled() {
                    return;
                }
                tracing::warn!("no longer leading: uninstall tasks stopped here");
            }
        });
    }

    /// Runs the store's unfinished tasks, then each one written later, until `term` ends.
    async fn follow(&self, term: CancellationToken) {
        loop {
            let listing = match self.state.store().list(TASKS).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list uninstall tasks; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            for kv in &listing.items {
                self.adopt(&kv.key, &kv.value, kv.revision, &term);
            }
            let mut events = match self.state.store().watch(TASKS, listing.revision).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch uninstall tasks; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            while let Some(ev) = events.next().await {
                match ev {
                    Ok(WatchEvent::Put(kv)) => self.adopt(&kv.key, &kv.value, kv.revision, &term),
                    Ok(WatchEvent::Delete { .. }) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "uninstall task watch failed; listing again");
                        break;
                    }
                }
            }
        }
    }

    /// Runs the task in a record, unless it has ended or already runs here.
    fn adopt(&self, key: &str, value: &[u8], rev: Revision, term: &CancellationToken) {
        let task: UninstallTask = match serde_json::from_slice(value) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(key, error = %e, "unreadable uninstall task");
                return;
            }
        };
        if task.state.is_terminal() || term.is_cancelled() {
            return;
        }
        let stop = term.child_token();
        if !self.running.lock().unwrap_or_else(PoisonError::into_inner).insert(task.cluster.clone()) {
            return;
        }
        tracing::info!(cluster = %task.cluster, "running uninstall task");
        let this = self.clone();
        self.tasks.spawn("uninstall", async move {
            let id = task.cluster.clone();
            tokio::select! {
                () = this.drive(task, rev) => {}
                () = stop.cancelled() => {}
            }
            this.running.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        });
    }

    /// Cancels the unfinished task of `id`, from any replica: a compare-and-put of its record,
    /// then the cancel's own effects (restoring the capability).
    ///
    /// # Errors
    /// The task's refusal, or `None` when there is no unfinished task.
    pub(crate) async fn cancel(&self, id: &ClusterId) -> Result<Option<Result<(), TaskError>>, StateError> {
        loop {
            let Some((mut task, rev)) = self.state.task_at(id).await? else { return Ok(None) };
            if task.state.is_terminal() {
                return Ok(None);
            }
            let effects = match task.cancel(now()) {
                Ok(fx) => fx,
                Err(e) => return Ok(Some(Err(e))),
            };
            if self.state.put_task_at(&task, rev).await?.is_none() {
                continue; // the runner moved on meanwhile: look again
            }
            for e in effects {
                let _ = self.perform(&task, e).await;
            }
            return Ok(Some(Ok(())));
        }
    }

    /// Persists `task` over revision `at`; returns the new revision, or the record that
    /// replaced it (written by a cancel elsewhere).
    async fn persist(&self, task: &UninstallTask, at: Revision) -> Result<Revision, Option<(UninstallTask, Revision)>> {
        // retry until stored: effects must never run ahead of the persisted task
        loop {
            match self.state.put_task_at(task, at).await {
                Ok(Some(rev)) => return Ok(rev),
                Ok(None) => loop {
                    match self.state.task_at(&task.cluster).await {
                        Ok(current) => return Err(current),
                        Err(e) => {
                            tracing::warn!(cluster = %task.cluster, error = %e, "cannot read uninstall task; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                },
                Err(e) => {
                    tracing::warn!(cluster = %task.cluster, error = %e, "cannot persist uninstall task; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn drive(&self, mut task: UninstallTask, mut rev: Revision) {
        let mut effects: VecDeque<Effect> = if task.step == opni_metrics_core::uninstall::Step::NotStarted {
            task.handle(now(), Input::Start)
        } else {
            task.resume()
        }
        .into();
        // after each change: persist, or adopt what replaced the record (a cancel elsewhere)
        macro_rules! persist {
            () => {
                match self.persist(&task, rev).await {
                    Ok(r) => rev = r,
                    Err(Some((current, r))) if !current.state.is_terminal() => {
                        task = current;
                        rev = r;
                        effects = task.resume().into();
                    }
                    Err(_) => {
                        tracing::info!(cluster = %task.cluster, "uninstall task ended elsewhere (cancelled)");
                        return;
                    }
                }
            };
        }
        persist!();
        let mut wake: Option<Timestamp> = None;
        loop {
            while let Some(e) = effects.pop_front() {
                match self.perform(&task, e).await {
                    Ok(Some(input)) => {
                        let more = task.handle(now(), input);
                        effects.extend(more);
                        persist!();
                    }
                    Ok(None) => {}
                    Err(Wake(t)) => wake = Some(wake.map_or(t, |w| w.min(t))),
                }
            }
            if task.state.is_terminal() {
                tracing::info!(cluster = %task.cluster, state = ?task.state, "uninstall task ended");
                return;
            }
            let until = wake.take().unwrap_or_else(|| now().after(Duration::from_secs(1)));
            tokio::time::sleep(until.since(now())).await;
            let fx = task.handle(now(), Input::Tick);
            effects.extend(fx);
            persist!();
            if effects.is_empty() && !task.state.is_terminal() {
                // nothing scheduled: re-issue the current step (e.g. after a store error)
                effects.extend(task.resume());
            }
        }
    }

    /// Performs one effect; returns the input it produces, or asks to wake at a time.
    async fn perform(&self, task: &UninstallTask, e: Effect) -> Result<Option<Input>, Wake> {
        let id = &task.cluster;
        let metrics = CapabilityName::metrics();
        let retry = || Wake(now().after(Duration::from_secs(1)));
        match e {
            Effect::MarkForUninstall => {
                let r = self
                    .state
                    .update_cluster(id, |c| match c.mark_for_uninstall(&metrics, now()) {
                        Ok(()) | Err(RegistryError::UninstallInProgress { .. }) => Ok(()),
                        Err(e) => Err(e),
                    })
                    .await;
                match r {
                    Ok(()) => Ok(Some(Input::NodeDisabled)),
                    Err(e @ (StateError::UnknownCluster(_) | StateError::Registry(_))) => {
                        Ok(Some(Input::Fatal(e.to_string())))
                    }
                    Err(e) => {
                        tracing::warn!(cluster = %id, error = %e, "cannot disable the node; retrying");
                        Err(retry())
                    }
                }
            }
            Effect::NotifyAgent => {
                self.hub.notify(Some(id.clone())).await;
                Ok(None)
            }
            Effect::RequestPurge => Ok(Some(match self.driver.delete_tenant_data(id).await {
                Ok(()) => Input::PurgeRequested(Ok(())),
                Err(e @ (DriverError::Unsupported { .. } | DriverError::MissingPrerequisite { .. })) => {
                    Input::Fatal(e.to_string())
                }
                Err(e) => Input::PurgeRequested(Err(opni_metrics_core::error_chain(&e))),
            })),
            Effect::PollPurge => Ok(Some(Input::PurgePolled(
                self.driver.tenant_deletion_status(id).await.map_err(|e| opni_metrics_core::error_chain(&e)),
            ))),
            Effect::RemoveCapability => {
                let r = self
                    .state
                    .update_cluster(id, |c| match c.remove(&metrics) {
                        Ok(_) | Err(RegistryError::NotInstalled { .. }) => Ok(()),
                        Err(e) => Err(e),
                    })
                    .await;
                match r {
                    Ok(()) | Err(StateError::UnknownCluster(_)) => Ok(Some(Input::CapabilityRemoved)),
                    Err(e) => {
                        tracing::warn!(cluster = %id, error = %e, "cannot remove the capability; retrying");
                        Err(retry())
                    }
                }
            }
            Effect::RestoreCapability => {
                // the task has ended: keep trying until the capability is restored
                loop {
                    let r = self
                        .state
                        .update_cluster(id, |c| match c.cancel_uninstall(&metrics) {
                            Ok(())
                            | Err(RegistryError::NotUninstalling { .. } | RegistryError::NotInstalled { .. }) => Ok(()),
                            Err(e) => Err(e),
                        })
                        .await;
                    match r {
                        Ok(()) | Err(StateError::UnknownCluster(_)) => return Ok(None),
                        Err(e) => {
                            tracing::warn!(cluster = %id, error = %e, "cannot restore the capability; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }
            Effect::WakeAt(t) => Err(Wake(t)),
        }
    }
}

/// "Come back at this time" from [`Uninstaller::perform`].
struct Wake(Timestamp);
