//! The uninstall task status.

use opni_metrics_core::uninstall::{UninstallOptions, UninstallTask};

use super::*;
use crate::capability::v1 as pb_cap;

#[test]
fn task_status_carries_state_progress_and_options() {
    let options = UninstallOptions::new(true, std::time::Duration::from_secs(300)).unwrap();
    let cluster = cluster_id("cluster", "c1").unwrap();
    let task = UninstallTask::new(cluster, opni_metrics_core::CapabilityName::metrics(), options, Timestamp(5_000));
    let progress = task.progress();
    let status = pb_cap::TaskStatus::from(task);
    assert_eq!(status.state(), pb_cap::TaskState::Pending);
    assert_eq!(
        status.progress,
        Some(pb_cap::Progress { current: progress.current.into(), total: progress.total.into() })
    );
    assert_eq!(status.transitions.len(), 1);
    assert_eq!(status.transitions[0].state(), pb_cap::TaskState::Pending);
    assert_eq!(status.transitions[0].timestamp, Some(prost_types::Timestamp { seconds: 5, nanos: 0 }));
    assert_eq!(status.metadata.get("cluster").map(String::as_str), Some("c1"));
    assert_eq!(status.metadata.get("deleteStoredData").map(String::as_str), Some("true"));
    assert_eq!(status.metadata.get("initialDelay").map(String::as_str), Some("5m"));
}
