//! The MonitoringCluster controller's "desired objects": pure functions from a [`MonitoringCluster`]
//! to the full Kubernetes objects that should exist for it. No I/O: the controller applies what
//! [`desired_objects`] returns (server-side apply) and prunes the objects it labelled
//! [`SELECTOR_LABEL`]`=<name>` that are no longer in the list.
//!
//! What is rendered, when `spec.cortex.enabled`:
//! - the Cortex config Secret `<mc>-cortex-config` (`cortex.yaml`: blocks storage, memberlist rings,
//!   mutual TLS on every HTTP and gRPC server and client; no secret values, only
//!   `${CORTEX_STORAGE_SECRET}` expanded by Cortex from the pod's environment);
//! - the workloads: one `-target=all` StatefulSet, or in highly-available mode one Deployment or
//!   StatefulSet per Cortex target (see [`workloads`]), their Services, and PodDisruptionBudgets;
//! - cert-manager `Issuer`s and `Certificate`s: a self-signed CA unless `spec.tls.issuerRef` names
//!   one, the Cortex serving certificate and the gateway's client certificate.
//!
//! When `spec.grafana.enabled`: a grafana-operator `Grafana` and a `GrafanaDatasource` that queries
//! through the gateway.
//!
//! # Example
//! ```
//! use opni_metrics_kube::crd::MonitoringCluster;
//! use opni_metrics_kube::render::{desired_objects, ObjectKind, RenderOptions};
//!
//! let mut mc = MonitoringCluster::new("opni", Default::default());
//! mc.metadata.namespace = Some("opni-system".into());
//! mc.metadata.uid = Some("00000000-0000-0000-0000-000000000001".into());
//! mc.spec.cortex.enabled = true;
//!
//! let objects = desired_objects(&mc, &RenderOptions::default()).unwrap();
//! let sts: Vec<_> = objects.iter().filter(|o| o.kind == ObjectKind::StatefulSet).collect();
//! assert_eq!(sts.len(), 1);
//! assert_eq!(sts[0].name(), "opni-cortex-all");
//! ```

mod cortex_config;
mod grafana;
mod meta;
mod names;
mod object;
mod retention;
mod services;
mod storage;
mod targets;
mod tls;
mod validate;
mod workloads;

#[cfg(test)]
mod tests;

use sha2::{Digest, Sha256};

use crate::crd::MonitoringCluster;

use self::meta::Ctx;
use self::names::Names;
use self::targets::{Plan, Target};

pub use self::object::{DesiredObject, ObjectKind};
pub use self::validate::validate;

/// The label on every rendered object naming the `MonitoringCluster` it belongs to; the value is
/// the MonitoringCluster's name. The controller prunes by it.
pub const SELECTOR_LABEL: &str = "metrics.opni.io/monitoring-cluster";

/// The pod annotation carrying [`config_digest`], so a config change rolls the pods.
pub const CONFIG_DIGEST_ANNOTATION: &str = "metrics.opni.io/config-digest";

/// Controller-wide rendering options.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// The Cortex image when `spec.cortex.image` is absent.
    pub default_image: String,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self { default_image: "quay.io/cortexproject/cortex:v1.19.0".to_owned() }
    }
}

/// Why rendering failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The spec is invalid; `field` is its path, e.g. `spec.cortex.config.retention`.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field path.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The MonitoringCluster lacks `metadata.name`, `metadata.namespace` or `metadata.uid`.
    #[error("monitoring cluster has no metadata.{0}")]
    MissingMetadata(&'static str),
    /// The Cortex config could not be written as YAML.
    #[error("rendering the cortex config")]
    Yaml(#[source] serde_saphyr::SerializeError),
    /// An object could not be converted to JSON.
    #[error("converting a rendered object to json")]
    Json(#[source] serde_json::Error),
}

impl RenderError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), reason: reason.into() }
    }
}

/// How a Cortex target runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    /// A stateless target (distributor, querier, query-frontend, purger).
    Deployment,
    /// A target with a persistent volume (all, ingester, store-gateway, compactor, ruler,
    /// alertmanager).
    StatefulSet,
}

impl WorkloadKind {
    /// `Deployment` or `StatefulSet`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
        }
    }
}

/// One Cortex workload the controller wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadRef {
    /// The Cortex target (`all`, `distributor`, …).
    pub target: String,
    /// Deployment or StatefulSet.
    pub kind: WorkloadKind,
    /// The object's name, `<mc>-cortex-<target>`.
    pub name: String,
    /// Replicas wanted (never 0: a target scaled to 0 is left out).
    pub replicas: u32,
}

/// The in-cluster HTTPS URLs the gateway calls Cortex at (mutual TLS with the
/// `<mc>-gateway-client` certificate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CortexEndpoints {
    /// Remote-write push: the distributor's `/api/v1/push`.
    pub push: String,
    /// The Prometheus query API base: the query-frontend's `/prometheus`.
    pub query: String,
    /// The purger's base URL (tenant deletion lives under `/purger/`); `None` when the purger is
    /// scaled to 0.
    pub purger: Option<String>,
    /// A readiness URL (`/ready` of the distributor, or of the all-in-one service).
    pub ready: String,
}

/// Everything the controller should apply for `mc`, ordered by kind then name.
///
/// # Errors
/// [`RenderError::MissingMetadata`] without name, namespace or uid; [`RenderError::Invalid`] when
/// [`validate`] rejects the spec or the name is too long for the names derived from it.
pub fn desired_objects(mc: &MonitoringCluster, opts: &RenderOptions) -> Result<Vec<DesiredObject>, RenderError> {
    let ctx = Ctx::new(mc)?;
    validate(&mc.spec)?;
    let mut out = Vec::new();
    if mc.spec.cortex.enabled {
        let plan = Plan::new(&mc.spec.cortex)?;
        let config = cortex_config::render(&ctx, &plan)?;
        let digest = hex_sha256(&config);
        out.push(cortex_config::secret(&ctx, config)?);
        let svcs = services::specs(&ctx.names, &plan);
        out.extend(services::render(&ctx, &svcs)?);
        out.extend(workloads::render(&ctx, &plan, opts, &digest)?);
        out.extend(services::disruption_budgets(&ctx, &plan)?);
        out.extend(tls::render(&ctx, &svcs)?);
    }
    if mc.spec.grafana.enabled {
        out.extend(grafana::render(&ctx)?);
    }
    out.sort_by(|a, b| (a.kind, a.name()).cmp(&(b.kind, b.name())));
    Ok(out)
}

/// The Cortex workloads wanted for `mc`, ordered by name; empty when Cortex is disabled.
///
/// # Errors
/// [`RenderError::MissingMetadata`] without a name; [`RenderError::Invalid`] for an invalid
/// `spec.cortex.workloads`.
pub fn workloads(mc: &MonitoringCluster) -> Result<Vec<WorkloadRef>, RenderError> {
    let name = mc.metadata.name.as_deref().ok_or(RenderError::MissingMetadata("name"))?;
    if !mc.spec.cortex.enabled {
        return Ok(Vec::new());
    }
    let names = Names { mc: name, ns: mc.metadata.namespace.as_deref().unwrap_or_default() };
    let plan = Plan::new(&mc.spec.cortex)?;
    let mut out: Vec<_> = plan
        .workloads
        .iter()
        .map(|w| WorkloadRef {
            target: w.target.as_str().to_owned(),
            kind: w.target.workload_kind(),
            name: names.workload(w.target),
            replicas: w.replicas,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The SHA-256 (lowercase hex) of the rendered `cortex.yaml`, as stamped on the pods in the
/// [`CONFIG_DIGEST_ANNOTATION`] annotation.
///
/// # Errors
/// As [`desired_objects`]; the Cortex part of the spec is checked even when Cortex is disabled.
pub fn config_digest(mc: &MonitoringCluster) -> Result<String, RenderError> {
    let ctx = Ctx::new(mc)?;
    validate::cortex(&mc.spec.cortex)?;
    let plan = Plan::new(&mc.spec.cortex)?;
    Ok(hex_sha256(&cortex_config::render(&ctx, &plan)?))
}

/// The URLs the gateway uses to reach this Cortex. In all-in-one mode every URL is on the one
/// `<mc>-cortex` service. An invalid `spec.cortex.workloads` is read as the defaults.
pub fn endpoints(mc: &MonitoringCluster) -> CortexEndpoints {
    let names = Names {
        mc: mc.metadata.name.as_deref().unwrap_or_default(),
        ns: mc.metadata.namespace.as_deref().unwrap_or_default(),
    };
    let plan = Plan::new(&mc.spec.cortex).unwrap_or_else(|_| Plan::defaults(mc.spec.cortex.deployment_mode));
    let base = |t: Target| format!("https://{}:{}", names.host(&names.service_for(&plan, t)), targets::HTTP_PORT);
    CortexEndpoints {
        push: format!("{}/api/v1/push", base(Target::Distributor)),
        query: format!("{}/prometheus", base(Target::QueryFrontend)),
        purger: plan.runs(Target::Purger).then(|| base(Target::Purger)),
        ready: format!("{}/ready", base(Target::Distributor)),
    }
}

fn hex_sha256(s: &str) -> String {
    use std::fmt::Write as _;
    Sha256::digest(s.as_bytes()).iter().fold(String::with_capacity(64), |mut acc, b| {
        let _ = write!(acc, "{b:02x}");
        acc
    })
}
