//! The `Capability` management service: install, status, uninstall (as a task), cancel.

use opni_metrics_core::uninstall::{UninstallOptions, UninstallTask};
use opni_metrics_core::{CapabilityName, ClusterId};
use opni_metrics_proto::IntoStatus;
use opni_metrics_proto::capability::v1 as pb_cap;
use opni_metrics_proto::capability::v1::capability_server::Capability;
use opni_metrics_proto::capability::v1::{
    CancelUninstallRequest, ClusterCapability, Details, InstallRequest, InstallResponse, InstallStatus, ListResponse,
    NodeCapabilityStatus, StatusRequest, TaskStatus, UninstallRequest, UninstallStatusRequest,
};
use opni_metrics_proto::common::v1 as pb;
use opni_metrics_proto::convert::{cluster_id, std_duration, wire_timestamp};
use tonic::{Request, Response, Status};

use super::errors::status;
use super::state::{State, now};
use super::sync::{Hub, StatusCache};
use super::uninstall::Uninstaller;

/// The `Capability` service.
#[derive(Debug, Clone)]
pub(crate) struct CapabilityService {
    state: State,
    hub: Hub,
    statuses: std::sync::Arc<StatusCache>,
    uninstaller: Uninstaller,
}

impl CapabilityService {
    /// The service.
    pub(crate) fn new(state: State, hub: Hub, statuses: std::sync::Arc<StatusCache>, uninstaller: Uninstaller) -> Self {
        Self { state, hub, statuses, uninstaller }
    }

    fn id(field: &str, s: &str) -> Result<ClusterId, Status> {
        cluster_id(field, s).map_err(Status::from)
    }
}

#[tonic::async_trait]
impl Capability for CapabilityService {
    async fn info(&self, _: Request<()>) -> Result<Response<Details>, Status> {
        Ok(Response::new(Details {
            name: CapabilityName::METRICS.into(),
            source: "opni-metrics-rs".into(),
            node_drivers: vec!["process".into(), "kubernetes".into()],
            cluster_driver: "external".into(),
        }))
    }

    async fn list(&self, _: Request<()>) -> Result<Response<ListResponse>, Status> {
        let metrics = CapabilityName::metrics();
        let items = self
            .state
            .clusters()
            .await
            .map_err(status)?
            .iter()
            .filter_map(|c| c.capability(&metrics).map(|e| ClusterCapability::new(&c.id, e)))
            .collect();
        Ok(Response::new(ListResponse { items }))
    }

    async fn install(&self, request: Request<InstallRequest>) -> Result<Response<InstallResponse>, Status> {
        let r = request.into_inner();
        let id = Self::id("cluster", &r.cluster)?;
        self.state.known_cluster(&id).await.map_err(status)?;
        let mut warnings = Vec::new();
        if !self.hub.is_connected(&id).await {
            warnings.push(format!("the agent of cluster {id} is not connected; it will sync when it connects"));
        }
        if let Some(why) = self.state.upstream().await.map_err(status)?.disabled_reason() {
            warnings.push(format!("{}; the node stays disabled until that changes", why.message()));
        }
        if !warnings.is_empty() && !r.ignore_warnings {
            return Ok(Response::new(InstallResponse {
                status: InstallStatus::Error.into(),
                message: format!("not installed: {} (set ignore_warnings to install anyway)", warnings.join("; ")),
            }));
        }
        let at = now();
        self.state.update_cluster(&id, |c| c.install(CapabilityName::metrics(), at)).await.map_err(status)?;
        let (code, message) = if warnings.is_empty() {
            (InstallStatus::Success, "installed".to_owned())
        } else {
            (InstallStatus::Warning, format!("installed with warnings: {}", warnings.join("; ")))
        };
        Ok(Response::new(InstallResponse { status: code.into(), message }))
    }

    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<NodeCapabilityStatus>, Status> {
        let id = Self::id("cluster", &request.into_inner().cluster)?;
        self.state.known_cluster(&id).await.map_err(status)?;
        let desired = self.state.desired(&id).await.map_err(status)?;
        // the newer of this replica's last report and the store's (written by whichever replica
        // the agent syncs with), so every replica answers alike
        let stored = self.state.status(&id).await.map_err(status)?;
        let (reported, at) = match (self.statuses.get(&id), stored) {
            (Some((_, at)), Some(st)) if st.reported_at > at => (Some(st.status), Some(st.reported_at)),
            (Some((s, at)), _) => (Some(s), Some(at)),
            (None, Some(st)) => (Some(st.status), Some(st.reported_at)),
            (None, None) => (None, None),
        };
        let mut reported = reported.unwrap_or_default();
        let rule_status = self.state.rule_status(&id).await.map_err(status)?;
        if let Some(r) = &rule_status {
            reported.set(rules_condition(r));
        }
        let rules = rule_status.map(|r| pb_cap::RuleSyncStatus {
            synced: r.synced,
            refused: r.refused,
            invalid: r.invalid,
            last_sync: Some(wire_timestamp(r.last_sync)),
            digest: r.digest,
            problems: r
                .problems
                .into_iter()
                .map(|p| pb_cap::RuleProblem { name: p.name, source: p.source, message: p.message, kind: p.kind })
                .collect(),
        });
        Ok(Response::new(NodeCapabilityStatus {
            enabled: desired.enabled,
            disabled_reasons: desired.disabled_reasons.iter().map(|r| pb::DisabledReason::from(*r) as i32).collect(),
            conditions: reported.conditions.iter().cloned().map(Into::into).collect(),
            last_sync: at.map(wire_timestamp),
            applied_digest: reported.applied_digest.map(|d| d.to_string()).unwrap_or_default(),
            desired_digest: desired.digest().to_string(),
            connected: self.hub.is_connected(&id).await,
            rules,
        }))
    }

    async fn uninstall(&self, request: Request<UninstallRequest>) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        let id = Self::id("cluster", &r.cluster)?;
        let delay = match r.initial_delay {
            Some(d) => std_duration("initial_delay", &d).map_err(Status::from)?,
            None => std::time::Duration::ZERO,
        };
        let options = UninstallOptions::new(r.delete_stored_data, delay).map_err(|e| e.into_status())?;
        let (cluster, _) = self.state.known_cluster(&id).await.map_err(status)?;
        match cluster.capability(&CapabilityName::metrics()) {
            None => return Err(Status::not_found(format!("the metrics capability is not installed on cluster {id}"))),
            Some(e) if e.is_uninstalling() => {
                return Err(Status::failed_precondition(format!("cluster {id} is already being uninstalled")));
            }
            Some(_) => {}
        }
        let task = UninstallTask::new(id, CapabilityName::metrics(), options, now());
        match self.uninstaller.start(task).await {
            Ok(()) => {}
            Err(crate::uninstall::StartError::Running(id)) => {
                return Err(Status::failed_precondition(format!("cluster {id} is already being uninstalled")));
            }
            Err(crate::uninstall::StartError::State(e)) => return Err(status(e)),
        }
        Ok(Response::new(()))
    }

    async fn uninstall_status(&self, request: Request<UninstallStatusRequest>) -> Result<Response<TaskStatus>, Status> {
        let id = Self::id("cluster", &request.into_inner().cluster)?;
        match self.state.task(&id).await.map_err(status)? {
            Some(t) => Ok(Response::new(t.into())),
            None => Err(Status::not_found(format!("no uninstall task for cluster {id}"))),
        }
    }

    async fn cancel_uninstall(&self, request: Request<CancelUninstallRequest>) -> Result<Response<()>, Status> {
        let id = Self::id("cluster", &request.into_inner().cluster)?;
        match self.uninstaller.cancel(&id).await.map_err(status)? {
            Some(Ok(())) => Ok(Response::new(())),
            Some(Err(e)) => Err(e.into_status()),
            None => Err(Status::failed_precondition(format!("no uninstall of cluster {id} is running"))),
        }
    }
}

/// The `RulesSynced` condition of a cluster's last rule sync.
fn rules_condition(r: &crate::rule_sync::RuleSyncStatus) -> opni_metrics_core::node::Condition {
    use opni_metrics_core::node::{Condition, ConditionKind, ConditionStatus};
    let ok = r.refused == 0 && r.invalid == 0;
    let mut c =
        Condition::new(ConditionKind::RulesSynced, if ok { ConditionStatus::True } else { ConditionStatus::False });
    c.reason = if ok { "Synced".into() } else { "SomeGroupsNotSynced".into() };
    c.message = format!("{} synced, {} refused, {} invalid", r.synced, r.refused, r.invalid);
    if let Some(p) = r.problems.first() {
        let what = if p.name.is_empty() { p.source.clone() } else { format!("{} ({})", p.name, p.source) };
        c.message.push_str(&format!("; first: {what}: {}", p.message));
    }
    c
}
