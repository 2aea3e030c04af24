//! Kubernetes integration of opni-metrics.
//!
//! - [`client`]: a client from a kubeconfig file or inferred (in-cluster, `KUBECONFIG`).
//! - [`crd`]: our `MonitoringCluster` CRD and typed subsets of the third-party resources we
//!   write (prometheus-operator, grafana-operator, cert-manager).
//! - [`cluster`]: the cluster driver (gateway side): CortexOps configuration ⇄ `MonitoringCluster`.
//! - [`controller`]: the `MonitoringCluster` controller (Cortex workloads, certificates, Grafana).
//! - [`lease`]: leader election with a `coordination.k8s.io` Lease.
//! - [`node`]: the node driver (agent side): Prometheus through prometheus-operator.
//! - [`render`]: the controller's pure "desired objects" of a `MonitoringCluster` (Cortex config,
//!   workloads, Services, certificates, Grafana).
//!
//! Every object this crate writes is server-side applied with one field manager,
//! [`FIELD_MANAGER`], and labelled [`MANAGED_BY_LABEL`]`=`[`FIELD_MANAGER`]; objects without
//! that label are never changed or deleted.
//!
//! # Example
//! ```
//! use kube::CustomResourceExt;
//! use opni_metrics_kube::crd::MonitoringCluster;
//!
//! let crd = MonitoringCluster::crd();
//! assert_eq!(crd.spec.group, "metrics.opni.io");
//! assert_eq!(opni_metrics_kube::FIELD_MANAGER, "opni-metrics");
//! ```

mod apply;
pub mod client;
pub mod cluster;
pub mod controller;
pub mod crd;
pub mod error;
pub mod lease;
pub mod node;
pub mod render;
pub mod secret;

pub use error::Error;

/// The server-side-apply field manager of every object opni-metrics writes.
pub const FIELD_MANAGER: &str = "opni-metrics";

/// The label marking objects opni-metrics owns (`app.kubernetes.io/managed-by`).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
