//! Runs uninstall tasks: drives core's [`UninstallTask`] state machine, persisting it after
//! every step (write-ahead), performing its effects idempotently, and resuming unfinished tasks
//! when the gateway starts.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opni_metrics_core::driver::{ClusterDriver, DriverError};
use opni_metrics_core::registry::RegistryError;
use opni_metrics_core::uninstall::{Effect, Input, TaskError, UninstallTask};
use opni_metrics_core::{CapabilityName, ClusterId, Timestamp};
use opni_metrics_transport::Tasks;
use tokio::sync::{mpsc, oneshot};

use super::state::{State, StateError, now};
use super::sync::Hub;

type CancelReply = oneshot::Sender<Result<(), TaskError>>;

/// Starts, resumes and cancels uninstall tasks.
#[derive(Clone)]
pub(crate) struct Uninstaller {
    state: State,
    hub: Hub,
    driver: Arc<dyn ClusterDriver>,
    tasks: Tasks,
    running: Arc<Mutex<HashMap<ClusterId, mpsc::Sender<CancelReply>>>>,
}

impl std::fmt::Debug for Uninstaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uninstaller").finish_non_exhaustive()
    }
}

impl Uninstaller {
    /// A runner performing effects through `state`, `hub` and `driver`; tasks run in `tasks`.
    pub(crate) fn new(state: State, hub: Hub, driver: Arc<dyn ClusterDriver>, tasks: Tasks) -> Self {
        Self { state, hub, driver, tasks, running: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// Persists a new task and starts it.
    ///
    /// # Errors
    /// Store errors.
    pub(crate) async fn start(&self, task: UninstallTask) -> Result<(), StateError> {
        self.state.put_task(&task).await?;
        self.spawn(task);
        Ok(())
    }

    /// Resumes every unfinished task (at gateway start).
    ///
    /// # Errors
    /// Store errors.
    pub(crate) async fn resume_all(&self) -> Result<usize, StateError> {
        let mut n = 0;
        for t in self.state.tasks().await? {
            if !t.state.is_terminal() {
                tracing::info!(cluster = %t.cluster, "resuming uninstall task");
                self.spawn(t);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Whether a task for `id` is running in this gateway.
    pub(crate) fn is_running(&self, id: &ClusterId) -> bool {
        self.running.lock().unwrap_or_else(PoisonError::into_inner).get(id).is_some_and(|tx| !tx.is_closed())
    }

    /// Cancels the running task of `id`.
    ///
    /// # Errors
    /// The task's refusal, or `None` when no task runs.
    pub(crate) async fn cancel(&self, id: &ClusterId) -> Option<Result<(), TaskError>> {
        let tx = self.running.lock().unwrap_or_else(PoisonError::into_inner).get(id).cloned()?;
        let (reply, rx) = oneshot::channel();
        tx.send(reply).await.ok()?;
        rx.await.ok()
    }

    fn spawn(&self, task: UninstallTask) {
        let (tx, rx) = mpsc::channel(1);
        self.running.lock().unwrap_or_else(PoisonError::into_inner).insert(task.cluster.clone(), tx);
        let this = self.clone();
        self.tasks.spawn("uninstall", async move {
            let id = task.cluster.clone();
            this.drive(task, rx).await;
            this.running.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        });
    }

    async fn persist(&self, task: &UninstallTask) {
        // retry until stored: effects must never run ahead of the persisted task
        while let Err(e) = self.state.put_task(task).await {
            tracing::warn!(cluster = %task.cluster, error = %e, "cannot persist uninstall task; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn drive(&self, mut task: UninstallTask, mut cancel: mpsc::Receiver<CancelReply>) {
        let mut effects: VecDeque<Effect> = if task.step == opni_metrics_core::uninstall::Step::NotStarted {
            task.handle(now(), Input::Start)
        } else {
            task.resume()
        }
        .into();
        self.persist(&task).await;
        let mut wake: Option<Timestamp> = None;
        loop {
            while let Some(e) = effects.pop_front() {
                match self.perform(&task, e).await {
                    Ok(Some(input)) => {
                        let more = task.handle(now(), input);
                        self.persist(&task).await;
                        effects.extend(more);
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
            let delay = until.since(now());
            tokio::select! {
                () = tokio::time::sleep(delay) => {
                    let fx = task.handle(now(), Input::Tick);
                    self.persist(&task).await;
                    effects.extend(fx);
                    if effects.is_empty() && !task.state.is_terminal() {
                        // nothing scheduled: re-issue the current step (e.g. after a store error)
                        effects.extend(task.resume());
                    }
                }
                Some(reply) = cancel.recv() => {
                    match task.cancel(now()) {
                        Ok(fx) => {
                            self.persist(&task).await;
                            effects.extend(fx);
                            let _ = reply.send(Ok(()));
                        }
                        Err(e) => { let _ = reply.send(Err(e)); }
                    }
                }
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
