//! The capability uninstall task, sans-IO and resumable.
//!
//! Steps: mark the capability for uninstall (which disables the node) → wait the initial delay
//! → optionally request deletion of the tenant's stored data and poll it with back-off → remove
//! the capability. Cancel, or a failure, restores the capability and re-syncs the agent.
//!
//! The runner persists the task after every [`UninstallTask::handle`] *before* performing the
//! returned effects (write-ahead), and performs effects idempotently. After a restart it loads
//! the task and performs [`UninstallTask::resume`]'s effects; the task then continues exactly as
//! if never interrupted. Times are wall-clock [`Timestamp`]s, since they outlive the process.
//!
//! # Guarantees
//! - States move only `Pending → Running → {Completed | Failed | Canceled}`; a terminal state is
//!   final and reached once.
//! - `RestoreCapability` is emitted exactly when the task ends `Failed` or `Canceled`, and is
//!   always followed by `NotifyAgent`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backoff::Backoff;
use crate::id::{CapabilityName, ClusterId, Timestamp};

/// Most log entries kept; older ones are dropped (the first entry is always kept).
pub const MAX_LOG_ENTRIES: usize = 256;

/// Consecutive data-deletion errors after which the task fails.
pub const MAX_PURGE_ERRORS: u32 = 10;

/// Longest accepted initial delay.
pub const MAX_INITIAL_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a task operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// The task has already ended.
    #[error("the uninstall task has already ended ({state:?})")]
    AlreadyEnded {
        /// Its final state.
        state: TaskState,
    },
    /// The capability is already being removed; cancel is no longer possible.
    #[error("the capability is already being removed; the uninstall can no longer be canceled")]
    TooLateToCancel,
    /// The initial delay is too long.
    #[error("initialDelay: {}s exceeds the maximum of {}s", .given.as_secs(), MAX_INITIAL_DELAY.as_secs())]
    InitialDelayTooLong {
        /// What was given.
        given: Duration,
    },
}

/// The lifecycle state of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TaskState {
    /// Created, not started.
    Pending,
    /// In progress.
    Running,
    /// Finished: the capability is gone.
    Completed,
    /// Gave up; the capability was restored.
    Failed,
    /// Canceled; the capability was restored.
    Canceled,
}

impl TaskState {
    /// Whether the state is final.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Canceled)
    }
}

/// Options given at `Uninstall`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UninstallOptions {
    /// Delete the tenant's stored data upstream before removing the capability.
    pub delete_stored_data: bool,
    /// Wait this long (milliseconds) after disabling the node, e.g. to let queues drain.
    pub initial_delay_ms: u64,
}

impl UninstallOptions {
    /// Validated options.
    ///
    /// # Errors
    /// [`TaskError::InitialDelayTooLong`].
    pub fn new(delete_stored_data: bool, initial_delay: Duration) -> Result<Self, TaskError> {
        if initial_delay > MAX_INITIAL_DELAY {
            return Err(TaskError::InitialDelayTooLong { given: initial_delay });
        }
        let initial_delay_ms = u64::try_from(initial_delay.as_millis()).unwrap_or(u64::MAX);
        Ok(Self { delete_stored_data, initial_delay_ms })
    }
}

/// Severity of a log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LogLevel {
    /// Progress.
    Info,
    /// Something to look at; the task goes on.
    Warn,
    /// The task failed.
    Error,
}

/// One log entry of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogEntry {
    /// When.
    pub at: Timestamp,
    /// Severity.
    pub level: LogLevel,
    /// What happened.
    pub message: String,
}

/// A state change and its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Transition {
    /// The new state.
    pub state: TaskState,
    /// When it was entered.
    pub at: Timestamp,
}

/// Where a running task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "step")]
pub enum Step {
    /// Waiting for `Start`.
    NotStarted,
    /// The capability is being marked for uninstall.
    DisableNode,
    /// Waiting until `until`.
    InitialDelay {
        /// End of the delay.
        until: Timestamp,
    },
    /// Deletion of stored data is being requested.
    RequestPurge {
        /// Consecutive errors so far.
        errors: u32,
        /// Do not try before this time.
        not_before: Timestamp,
    },
    /// Deletion was requested; polling its progress.
    AwaitPurge {
        /// Consecutive errors so far.
        errors: u32,
        /// Polls so far.
        polls: u32,
        /// Next poll time.
        next_poll: Timestamp,
    },
    /// The capability is being removed.
    RemoveCapability,
    /// Nothing more to do.
    Done,
}

/// Progress of the deletion of a tenant's data, as the cluster driver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeProgress {
    /// Still deleting.
    InProgress,
    /// All data deleted.
    Done,
}

/// Inputs of the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Begin.
    Start,
    /// The capability is marked for uninstall (the node is disabled).
    NodeDisabled,
    /// Time passed.
    Tick,
    /// The data-deletion request was accepted, or failed.
    PurgeRequested(Result<(), String>),
    /// A poll of data deletion answered, or failed.
    PurgePolled(Result<PurgeProgress, String>),
    /// The capability was removed from the cluster.
    CapabilityRemoved,
    /// The runner cannot perform the current step for a reason that will not heal.
    Fatal(String),
}

/// Effects the runner performs (idempotently), in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Mark the capability for uninstall in the registry (disables the node); answer
    /// [`Input::NodeDisabled`].
    MarkForUninstall,
    /// Send the cluster's agent `SyncNow`.
    NotifyAgent,
    /// Ask the upstream to delete the tenant's data; answer [`Input::PurgeRequested`].
    RequestPurge,
    /// Ask how far data deletion is; answer [`Input::PurgePolled`].
    PollPurge,
    /// Remove the capability from the registry; answer [`Input::CapabilityRemoved`].
    RemoveCapability,
    /// Undo the mark for uninstall (the capability is fully installed again).
    RestoreCapability,
    /// Deliver [`Input::Tick`] at (or after) this time.
    WakeAt(Timestamp),
}

/// An uninstall task. Serialise it to persist it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UninstallTask {
    /// The cluster.
    pub cluster: ClusterId,
    /// The capability being uninstalled.
    pub capability: CapabilityName,
    /// The options it was started with.
    pub options: UninstallOptions,
    /// Lifecycle state.
    pub state: TaskState,
    /// Current step.
    pub step: Step,
    /// Log, oldest first, at most [`MAX_LOG_ENTRIES`].
    pub logs: Vec<LogEntry>,
    /// State transitions, oldest first.
    pub transitions: Vec<Transition>,
    /// Steps completed so far.
    pub steps_done: u32,
}

/// Progress as steps done out of steps planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Steps done.
    pub current: u32,
    /// Steps planned.
    pub total: u32,
}

fn poll_backoff() -> Backoff {
    Backoff { base: Duration::from_secs(1), max: Duration::from_secs(60), jitter: 0.0 }
}

impl UninstallTask {
    /// A pending task created at `now`.
    pub fn new(cluster: ClusterId, capability: CapabilityName, options: UninstallOptions, now: Timestamp) -> Self {
        Self {
            cluster,
            capability,
            options,
            state: TaskState::Pending,
            step: Step::NotStarted,
            logs: Vec::new(),
            transitions: vec![Transition { state: TaskState::Pending, at: now }],
            steps_done: 0,
        }
    }

    /// Steps done and planned.
    pub fn progress(&self) -> Progress {
        let delay = u32::from(self.options.initial_delay_ms > 0);
        let purge = u32::from(self.options.delete_stored_data);
        let total = 2 + delay + purge;
        Progress { current: self.steps_done.min(total), total }
    }

    /// The effects to perform after loading a persisted task (idempotent re-issue of the
    /// current step).
    pub fn resume(&self) -> Vec<Effect> {
        if self.state.is_terminal() {
            return Vec::new();
        }
        match self.step {
            Step::NotStarted | Step::Done => Vec::new(),
            Step::DisableNode => vec![Effect::MarkForUninstall, Effect::NotifyAgent],
            Step::InitialDelay { until } => vec![Effect::WakeAt(until)],
            Step::RequestPurge { not_before, .. } => vec![Effect::WakeAt(not_before)],
            Step::AwaitPurge { next_poll, .. } => vec![Effect::WakeAt(next_poll)],
            Step::RemoveCapability => vec![Effect::RemoveCapability],
        }
    }

    /// Cancels the task at `now`.
    ///
    /// # Errors
    /// [`TaskError::AlreadyEnded`], or [`TaskError::TooLateToCancel`] once removal has begun.
    pub fn cancel(&mut self, now: Timestamp) -> Result<Vec<Effect>, TaskError> {
        if self.state.is_terminal() {
            return Err(TaskError::AlreadyEnded { state: self.state });
        }
        if self.step == Step::RemoveCapability {
            return Err(TaskError::TooLateToCancel);
        }
        let marked = !matches!(self.step, Step::NotStarted);
        self.log(now, LogLevel::Warn, "uninstall canceled");
        self.finish(now, TaskState::Canceled);
        Ok(if marked { vec![Effect::RestoreCapability, Effect::NotifyAgent] } else { Vec::new() })
    }

    /// Handles one input at wall-clock time `now`. Inputs that do not fit the current step
    /// (duplicates, late answers) are ignored.
    pub fn handle(&mut self, now: Timestamp, input: Input) -> Vec<Effect> {
        if self.state.is_terminal() {
            return Vec::new();
        }
        match (self.step, input) {
            (_, Input::Fatal(e)) => self.fail(now, &e),
            (Step::NotStarted, Input::Start) => {
                self.set_state(now, TaskState::Running);
                self.log(now, LogLevel::Info, "disabling the node");
                self.step = Step::DisableNode;
                vec![Effect::MarkForUninstall, Effect::NotifyAgent]
            }
            (Step::DisableNode, Input::NodeDisabled) => {
                self.log(now, LogLevel::Info, "node disabled");
                self.steps_done += 1;
                if self.options.initial_delay_ms > 0 {
                    let until = now.after(Duration::from_millis(self.options.initial_delay_ms));
                    self.log(
                        now,
                        LogLevel::Info,
                        &format!("waiting {} ms before going on", self.options.initial_delay_ms),
                    );
                    self.step = Step::InitialDelay { until };
                    vec![Effect::WakeAt(until)]
                } else {
                    self.after_delay(now)
                }
            }
            (Step::InitialDelay { until }, Input::Tick) if now >= until => self.after_delay(now),
            (Step::RequestPurge { not_before, .. }, Input::Tick) if now >= not_before => vec![Effect::RequestPurge],
            (Step::RequestPurge { .. }, Input::PurgeRequested(Ok(()))) => {
                self.log(now, LogLevel::Info, "data deletion requested");
                self.await_purge(now, 0, 0)
            }
            (Step::RequestPurge { errors, .. }, Input::PurgeRequested(Err(e))) => {
                let errors = errors + 1;
                if errors >= MAX_PURGE_ERRORS {
                    return self.fail(now, &format!("data deletion request failed {errors} times, last: {e}"));
                }
                self.log(now, LogLevel::Warn, &format!("data deletion request failed: {e}"));
                let not_before = now.after(poll_backoff().delay(errors, 0));
                self.step = Step::RequestPurge { errors, not_before };
                vec![Effect::WakeAt(not_before)]
            }
            (Step::AwaitPurge { next_poll, .. }, Input::Tick) if now >= next_poll => vec![Effect::PollPurge],
            (Step::AwaitPurge { .. }, Input::PurgePolled(Ok(PurgeProgress::Done))) => {
                self.log(now, LogLevel::Info, "stored data deleted");
                self.steps_done += 1;
                self.remove(now)
            }
            (Step::AwaitPurge { polls, .. }, Input::PurgePolled(Ok(PurgeProgress::InProgress))) => {
                self.await_purge(now, 0, polls + 1)
            }
            (Step::AwaitPurge { errors, polls, .. }, Input::PurgePolled(Err(e))) => {
                let errors = errors + 1;
                if errors >= MAX_PURGE_ERRORS {
                    return self.fail(now, &format!("data deletion status failed {errors} times, last: {e}"));
                }
                self.log(now, LogLevel::Warn, &format!("data deletion status failed: {e}"));
                self.await_purge(now, errors, polls + 1)
            }
            (Step::RemoveCapability, Input::CapabilityRemoved) => {
                self.log(now, LogLevel::Info, "capability removed");
                self.steps_done += 1;
                self.step = Step::Done;
                self.finish(now, TaskState::Completed);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn after_delay(&mut self, now: Timestamp) -> Vec<Effect> {
        if self.options.initial_delay_ms > 0 {
            self.steps_done += 1;
        }
        if self.options.delete_stored_data {
            self.log(now, LogLevel::Info, "deleting stored data");
            self.step = Step::RequestPurge { errors: 0, not_before: now };
            vec![Effect::RequestPurge]
        } else {
            self.remove(now)
        }
    }

    fn await_purge(&mut self, now: Timestamp, errors: u32, polls: u32) -> Vec<Effect> {
        let next_poll = now.after(poll_backoff().delay(polls.max(errors) + 1, 0));
        self.step = Step::AwaitPurge { errors, polls, next_poll };
        vec![Effect::WakeAt(next_poll)]
    }

    fn remove(&mut self, now: Timestamp) -> Vec<Effect> {
        self.log(now, LogLevel::Info, "removing the capability");
        self.step = Step::RemoveCapability;
        vec![Effect::RemoveCapability]
    }

    fn fail(&mut self, now: Timestamp, e: &str) -> Vec<Effect> {
        let marked = !matches!(self.step, Step::NotStarted);
        self.log(now, LogLevel::Error, e);
        self.finish(now, TaskState::Failed);
        if marked { vec![Effect::RestoreCapability, Effect::NotifyAgent] } else { Vec::new() }
    }

    fn finish(&mut self, now: Timestamp, state: TaskState) {
        self.step = Step::Done;
        self.set_state(now, state);
    }

    fn set_state(&mut self, now: Timestamp, state: TaskState) {
        self.state = state;
        self.transitions.push(Transition { state, at: now });
    }

    fn log(&mut self, at: Timestamp, level: LogLevel, message: &str) {
        if self.logs.len() >= MAX_LOG_ENTRIES {
            self.logs.remove(1);
        }
        self.logs.push(LogEntry { at, level, message: message.to_owned() });
    }
}

#[cfg(test)]
mod tests;
