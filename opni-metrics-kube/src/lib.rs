//! Kubernetes integration of opni-metrics (skeleton; see the Kubernetes issue).
//!
//! This crate will hold the CRD types (`MonitoringCluster`; typed prometheus-operator
//! `PrometheusAgent`/`Prometheus`; grafana-operator `Grafana`), the node driver implementing
//! [`opni_metrics_core::driver::NodeDriver`] by server-side apply, the cluster driver
//! implementing [`opni_metrics_core::driver::ClusterDriver`], the `MonitoringCluster`
//! controller, and Lease-based leader election.
//!
//! # Example
//! ```
//! // Every object this crate applies is owned by one field manager.
//! assert_eq!(opni_metrics_kube::FIELD_MANAGER, "opni-metrics");
//! ```

/// The server-side-apply field manager of every object opni-metrics writes.
pub const FIELD_MANAGER: &str = "opni-metrics";
