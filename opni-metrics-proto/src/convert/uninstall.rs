//! The uninstall task as the `Capability.UninstallStatus` answer: [`UninstallTask`] →
//! `TaskStatus`. Task status is output only, so there is no conversion back.

use std::collections::BTreeMap;

use opni_metrics_core::duration::PromDuration;
use opni_metrics_core::uninstall::{LogEntry, LogLevel, TaskState, Transition, UninstallTask};

use super::wire_timestamp;
use crate::capability::v1 as pb;

impl From<UninstallTask> for pb::TaskStatus {
    /// The task's state, progress, log and transitions; `metadata` holds `cluster`,
    /// `capability`, `deleteStoredData` (`true`/`false`) and `initialDelay` (a Prometheus
    /// duration such as `5m`).
    fn from(t: UninstallTask) -> Self {
        let progress = t.progress();
        let metadata = BTreeMap::from([
            ("cluster".to_owned(), t.cluster.to_string()),
            ("capability".to_owned(), t.capability.to_string()),
            ("deleteStoredData".to_owned(), t.options.delete_stored_data.to_string()),
            ("initialDelay".to_owned(), PromDuration::from_millis(t.options.initial_delay_ms).to_string()),
        ]);
        Self {
            state: pb::TaskState::from(t.state).into(),
            progress: Some(pb::Progress { current: progress.current.into(), total: progress.total.into() }),
            logs: t.logs.into_iter().map(Into::into).collect(),
            transitions: t.transitions.into_iter().map(Into::into).collect(),
            metadata,
        }
    }
}

impl From<TaskState> for pb::TaskState {
    fn from(s: TaskState) -> Self {
        match s {
            TaskState::Pending => Self::Pending,
            TaskState::Running => Self::Running,
            TaskState::Completed => Self::Completed,
            TaskState::Failed => Self::Failed,
            TaskState::Canceled => Self::Canceled,
        }
    }
}

impl From<LogLevel> for pb::LogLevel {
    fn from(l: LogLevel) -> Self {
        match l {
            LogLevel::Info => Self::Info,
            LogLevel::Warn => Self::Warn,
            LogLevel::Error => Self::Error,
        }
    }
}

impl From<LogEntry> for pb::LogEntry {
    fn from(e: LogEntry) -> Self {
        Self { timestamp: Some(wire_timestamp(e.at)), level: pb::LogLevel::from(e.level).into(), msg: e.message }
    }
}

impl From<Transition> for pb::StateTransition {
    fn from(t: Transition) -> Self {
        Self { state: pb::TaskState::from(t.state).into(), timestamp: Some(wire_timestamp(t.at)) }
    }
}
