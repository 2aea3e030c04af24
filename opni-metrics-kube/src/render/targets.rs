//! Cortex targets and the workload plan: which targets run, with how many replicas, from
//! `spec.cortex.deploymentMode` and `spec.cortex.workloads`.

use crate::crd::monitoring_cluster::{CortexSpec, DeploymentMode, WorkloadSpec};

use super::{RenderError, WorkloadKind};

/// Cortex's HTTP port.
pub(crate) const HTTP_PORT: u16 = 8080;
/// Cortex's gRPC port.
pub(crate) const GRPC_PORT: u16 = 9095;
/// The memberlist gossip port.
pub(crate) const GOSSIP_PORT: u16 = 7946;
/// Volume size of a stateful target without `storageSize`.
pub(crate) const DEFAULT_STORAGE_SIZE: &str = "10Gi";

/// A Cortex target (`-target=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Target {
    All,
    Distributor,
    Ingester,
    Querier,
    QueryFrontend,
    StoreGateway,
    Compactor,
    Ruler,
    Alertmanager,
    Purger,
}

impl Target {
    /// The targets of highly-available mode, in a stable order.
    pub(crate) const HA: [Target; 9] = [
        Self::Distributor,
        Self::Ingester,
        Self::Querier,
        Self::QueryFrontend,
        Self::StoreGateway,
        Self::Compactor,
        Self::Ruler,
        Self::Alertmanager,
        Self::Purger,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Distributor => "distributor",
            Self::Ingester => "ingester",
            Self::Querier => "querier",
            Self::QueryFrontend => "query-frontend",
            Self::StoreGateway => "store-gateway",
            Self::Compactor => "compactor",
            Self::Ruler => "ruler",
            Self::Alertmanager => "alertmanager",
            Self::Purger => "purger",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        std::iter::once(Self::All).chain(Self::HA).find(|t| t.as_str() == s)
    }

    /// Stateful targets keep data (TSDB head and WAL, ring tokens, sync dirs) on a volume.
    pub(crate) fn workload_kind(self) -> WorkloadKind {
        match self {
            Self::Distributor | Self::Querier | Self::QueryFrontend | Self::Purger => WorkloadKind::Deployment,
            _ => WorkloadKind::StatefulSet,
        }
    }

    pub(crate) fn is_stateful(self) -> bool {
        self.workload_kind() == WorkloadKind::StatefulSet
    }

    /// Targets that may be scaled to 0 (left out) in highly-available mode.
    pub(crate) fn is_optional(self) -> bool {
        matches!(self, Self::Ruler | Self::Alertmanager | Self::Purger)
    }

    /// Replicas when `spec.cortex.workloads.<target>.replicas` is absent.
    pub(crate) fn default_replicas(self) -> u32 {
        match self {
            Self::All | Self::Compactor | Self::Purger => 1,
            Self::Distributor | Self::Querier | Self::QueryFrontend | Self::Ruler => 2,
            Self::Ingester | Self::StoreGateway | Self::Alertmanager => 3,
        }
    }

    /// Whether the target joins the memberlist gossip ring. The query-frontend and the purger
    /// use no ring, so they are left out of the gossip Service (joining them would only fail).
    pub(crate) fn gossips(self) -> bool {
        !matches!(self, Self::QueryFrontend | Self::Purger)
    }

    /// StatefulSets whose pods may start and stop together (`podManagementPolicy: Parallel`):
    /// ingesters and store-gateways coordinate through the ring, not through pod ordinals.
    pub(crate) fn parallel_pods(self) -> bool {
        matches!(self, Self::Ingester | Self::StoreGateway)
    }
}

/// One workload that will run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Planned<'a> {
    pub(crate) target: Target,
    pub(crate) replicas: u32,
    pub(crate) spec: Option<&'a WorkloadSpec>,
}

impl Planned<'_> {
    pub(crate) fn extra_args(&self) -> &[String] {
        self.spec.map(|s| s.extra_args.as_slice()).unwrap_or_default()
    }

    pub(crate) fn storage_size(&self) -> &str {
        self.spec.and_then(|s| s.storage_size.as_deref()).unwrap_or(DEFAULT_STORAGE_SIZE)
    }
}

/// The workloads that will run (targets with 0 replicas left out), in [`Target`] order.
#[derive(Debug, Clone)]
pub(crate) struct Plan<'a> {
    pub(crate) mode: DeploymentMode,
    pub(crate) workloads: Vec<Planned<'a>>,
}

impl<'a> Plan<'a> {
    /// # Errors
    /// An unknown target, a target of the other mode, `replicas: 0` on a required target, or a
    /// `storageSize` on a stateless one.
    pub(crate) fn new(cortex: &'a CortexSpec) -> Result<Self, RenderError> {
        let mode = cortex.deployment_mode;
        for (name, spec) in &cortex.workloads {
            let field = format!("spec.cortex.workloads.{name}");
            let target = Target::parse(name).ok_or_else(|| RenderError::invalid(&field, "unknown Cortex target"))?;
            match mode {
                DeploymentMode::AllInOne if target != Target::All => {
                    return Err(RenderError::invalid(
                        field,
                        "only `all` can be set in allInOne mode; the other targets run inside it",
                    ));
                }
                DeploymentMode::HighlyAvailable if target == Target::All => {
                    return Err(RenderError::invalid(field, "`all` is only valid in allInOne mode"));
                }
                _ => {}
            }
            if spec.replicas == Some(0) && !target.is_optional() {
                return Err(RenderError::invalid(
                    format!("{field}.replicas"),
                    "this target is required; only ruler, alertmanager and purger can be scaled to 0",
                ));
            }
            if spec.storage_size.is_some() && !target.is_stateful() {
                return Err(RenderError::invalid(
                    format!("{field}.storageSize"),
                    "this target is stateless and has no volume",
                ));
            }
        }
        let targets: &[Target] = match mode {
            DeploymentMode::AllInOne => &[Target::All],
            DeploymentMode::HighlyAvailable => &Target::HA,
        };
        let workloads = targets
            .iter()
            .map(|&target| {
                let spec = cortex.workloads.get(target.as_str());
                let replicas = spec.and_then(|s| s.replicas).unwrap_or_else(|| target.default_replicas());
                Planned { target, replicas, spec }
            })
            .filter(|p| p.replicas > 0)
            .collect();
        Ok(Self { mode, workloads })
    }

    /// The plan of an empty `spec.cortex.workloads`.
    pub(crate) fn defaults(mode: DeploymentMode) -> Plan<'static> {
        let workloads = match mode {
            DeploymentMode::AllInOne => vec![Planned { target: Target::All, replicas: 1, spec: None }],
            DeploymentMode::HighlyAvailable => Target::HA
                .iter()
                .map(|&target| Planned { target, replicas: target.default_replicas(), spec: None })
                .collect(),
        };
        Plan { mode, workloads }
    }

    pub(crate) fn is_ha(&self) -> bool {
        self.mode == DeploymentMode::HighlyAvailable
    }

    /// Replicas of the workload running `target`: the `all` workload in all-in-one mode (Cortex
    /// 1.19's `all` includes every target we deploy, alertmanager and purger too); `None` when
    /// the target does not run.
    pub(crate) fn replicas(&self, target: Target) -> Option<u32> {
        let wanted = if self.is_ha() { target } else { Target::All };
        self.workloads.iter().find(|w| w.target == wanted).map(|w| w.replicas)
    }

    pub(crate) fn runs(&self, target: Target) -> bool {
        self.replicas(target).is_some()
    }

    /// A ring's replication factor: 3, or fewer when fewer replicas serve the ring (a factor
    /// above the replica count fails every quorum).
    pub(crate) fn replication_factor(&self, target: Target) -> u32 {
        self.replicas(target).unwrap_or(1).clamp(1, 3)
    }
}
