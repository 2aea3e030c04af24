//! The driver traits: how a node's Prometheus and the upstream Cortex are actually deployed.
//!
//! Implementations live outside core: the Kubernetes drivers in `opni-metrics-kube`, the process
//! node driver and the external cluster driver in the daemons.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::cluster::ClusterConfig;
use crate::id::ClusterId;
use crate::node::{NodeConfig, NodeStatus, UpstreamState};
use crate::uninstall::PurgeProgress;

/// Driver failures.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// Something the driver needs is missing (a CRD, a binary); retrying will not help until
    /// an operator acts.
    #[error("missing prerequisite: {what}")]
    MissingPrerequisite {
        /// What is missing, e.g. `the PrometheusAgent CRD (monitoring.coreos.com/v1alpha1)`.
        what: String,
    },
    /// The config cannot be applied by this driver.
    #[error("{field}: {reason}")]
    Invalid {
        /// The offending field.
        field: String,
        /// Why.
        reason: String,
    },
    /// The operation is not supported by this driver.
    #[error("not supported by the {driver} driver: {operation}")]
    Unsupported {
        /// The driver.
        driver: &'static str,
        /// The operation.
        operation: &'static str,
    },
    /// A transient failure (API server, process start, network); retry with back-off.
    #[error("{context}")]
    Transient {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Deploys an agent's local Prometheus as its [`NodeConfig`] says.
pub trait NodeDriver: Send + Sync {
    /// Makes the deployment match `config` (idempotent; `enabled: false` removes it) and
    /// returns the resulting conditions.
    fn apply<'a>(&'a self, config: &'a NodeConfig) -> BoxFuture<'a, Result<NodeStatus, DriverError>>;

    /// Removes everything the driver created.
    fn remove(&self) -> BoxFuture<'_, Result<(), DriverError>>;

    /// Current health as conditions (e.g. `PrometheusReady`).
    fn status(&self) -> BoxFuture<'_, Result<NodeStatus, DriverError>>;
}

/// Whether the upstream's workloads run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AppState {
    /// Nothing runs.
    NotRunning,
    /// Starting or rolling.
    Pending,
    /// All workloads ready.
    Running,
    /// Some workload failed.
    Failed,
}

/// Readiness of one upstream workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    /// Workload (target) name, e.g. `ingester`.
    pub name: String,
    /// Ready replicas.
    pub ready: u32,
    /// Desired replicas.
    pub desired: u32,
    /// Details, may be empty.
    pub message: String,
}

/// Status of the upstream store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Install state.
    pub install_state: UpstreamState,
    /// Workload state.
    pub app_state: AppState,
    /// Per-workload readiness.
    pub workloads: Vec<WorkloadStatus>,
    /// Things an operator should look at.
    pub warnings: Vec<String>,
    /// Version of the upstream, if known.
    pub version: Option<String>,
}

/// Installs, inspects and uninstalls the upstream (Cortex-compatible) store.
pub trait ClusterDriver: Send + Sync {
    /// Installs or updates the upstream to match `config`.
    fn apply<'a>(&'a self, config: &'a ClusterConfig) -> BoxFuture<'a, Result<(), DriverError>>;

    /// Current status.
    fn status(&self) -> BoxFuture<'_, Result<ClusterStatus, DriverError>>;

    /// Uninstalls the upstream.
    fn uninstall(&self) -> BoxFuture<'_, Result<(), DriverError>>;

    /// Requests deletion of every sample of `tenant` (Cortex's tenant-deletion API).
    fn delete_tenant_data<'a>(&'a self, tenant: &'a ClusterId) -> BoxFuture<'a, Result<(), DriverError>>;

    /// Progress of a deletion requested with [`ClusterDriver::delete_tenant_data`].
    fn tenant_deletion_status<'a>(&'a self, tenant: &'a ClusterId)
    -> BoxFuture<'a, Result<PurgeProgress, DriverError>>;
}
