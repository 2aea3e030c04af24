//! The `CortexOps` management service: the upstream Cortex's configuration (active and
//! default, revisioned, with history, secrets redacted on every read), presets, dry runs, and
//! install / uninstall / status through the cluster driver.
//!
//! *Decisions.* `enabled` is changed only by `Install` and `Uninstall`: a `Set` keeps the
//! stored flag, so editing the configuration never installs or removes Cortex by accident. A
//! `Set` of an installed configuration is applied at once. `ResetConfiguration` copies the
//! default into the active configuration (keeping `enabled`); `ResetDefaultConfiguration`
//! returns the default to the built-in one.

use std::sync::Arc;

use opni_metrics_core::cluster::{ClusterConfig, Finding, Severity, presets};
use opni_metrics_core::driver::{AppState, ClusterDriver, ClusterStatus};
use opni_metrics_core::node::UpstreamState;
use opni_metrics_core::{CapabilityName, Revision};
use opni_metrics_proto::IntoStatus;
use opni_metrics_proto::convert::{ConvertError, cluster_config_unvalidated, cortex_wire_path, wire_timestamp};
use opni_metrics_proto::cortexops::v1 as pb;
use opni_metrics_proto::cortexops::v1::cortex_ops_server::CortexOps;
use tonic::{Request, Response, Status};

use crate::errors::status;
use crate::state::{State, Target};
use crate::upstream::UpstreamWatch;

/// The `CortexOps` service.
#[derive(Clone)]
pub(crate) struct CortexOpsService {
    state: State,
    driver: Arc<dyn ClusterDriver>,
    upstream: UpstreamWatch,
}

impl std::fmt::Debug for CortexOpsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CortexOpsService").finish_non_exhaustive()
    }
}

fn wire(config: &ClusterConfig, revision: Revision) -> pb::CapabilityBackendConfigSpec {
    let mut w = pb::CapabilityBackendConfigSpec::from(config.redacted());
    w.revision = Some(revision.0);
    w
}

fn target(t: i32) -> Result<Target, Status> {
    match pb::Target::try_from(t) {
        Ok(pb::Target::Active) => Ok(Target::Active),
        Ok(pb::Target::Default) => Ok(Target::Default),
        _ => Err(Status::invalid_argument("target: must be TARGET_ACTIVE or TARGET_DEFAULT")),
    }
}

fn findings_to_wire(findings: Vec<Finding>, config: &ClusterConfig) -> Vec<pb::ValidationError> {
    findings
        .into_iter()
        .map(|f| pb::ValidationError {
            severity: match f.severity {
                Severity::Error => pb::Severity::Error,
                Severity::Warning => pb::Severity::Warning,
            }
            .into(),
            field: cortex_wire_path(&f.field, &config.storage),
            message: f.message,
        })
        .collect()
}

fn install_state(s: UpstreamState) -> pb::InstallState {
    match s {
        UpstreamState::NotInstalled => pb::InstallState::NotInstalled,
        UpstreamState::Installing => pb::InstallState::Installing,
        UpstreamState::Installed | UpstreamState::Failing => pb::InstallState::Installed,
        UpstreamState::Uninstalling => pb::InstallState::Uninstalling,
        UpstreamState::Unknown => pb::InstallState::Unknown,
    }
}

fn app_state(s: AppState) -> pb::ApplicationState {
    match s {
        AppState::NotRunning => pb::ApplicationState::NotRunning,
        AppState::Pending => pb::ApplicationState::Pending,
        AppState::Running => pb::ApplicationState::Running,
        AppState::Failed => pb::ApplicationState::Failed,
    }
}

/// The incoming configuration of a set: converted and validated, `enabled` taken from the
/// stored one, redaction placeholders replaced by the stored secrets (a placeholder with no
/// secret behind it is refused, never stored as the secret).
fn incoming(spec: Option<pb::CapabilityBackendConfigSpec>, stored: &ClusterConfig) -> Result<ClusterConfig, Status> {
    let spec = spec.ok_or_else(|| Status::from(ConvertError::Missing { field: "spec".into() }))?;
    let mut c = ClusterConfig::try_from(spec).map_err(|e| Status::from(e.under("spec")))?;
    c.unredact_from(stored);
    if let Some(field) = c.unresolved_placeholder() {
        return Err(Status::invalid_argument(format!("spec.{}: {REDACTED_TEXT}", cortex_wire_path(field, &c.storage))));
    }
    c.enabled = stored.enabled;
    Ok(c)
}

const REDACTED_TEXT: &str =
    "the redaction placeholder stands for a stored secret, and none of this backend is stored: give the secret";

fn stale(t: Target, given: Revision, current: Revision) -> Status {
    crate::state::StateError::Stale { what: t.describe().into(), given, current }.into_status()
}

/// Attempts of a read-modify-write without a caller's revision before giving up.
const ATTEMPTS: usize = 5;

impl CortexOpsService {
    pub(crate) fn new(state: State, driver: Arc<dyn ClusterDriver>, upstream: UpstreamWatch) -> Self {
        Self { state, driver, upstream }
    }

    async fn current(&self, t: Target) -> Result<(ClusterConfig, Revision), Status> {
        match t {
            Target::Active => self.state.cortex_active().await,
            Target::Default => self.state.cortex_default().await,
        }
        .map_err(status)
    }

    /// A configuration now, or at an earlier revision from the history.
    async fn read(
        &self,
        t: Target,
        revision: Option<u64>,
    ) -> Result<Response<pb::CapabilityBackendConfigSpec>, Status> {
        let (now, rev) = self.current(t).await?;
        let Some(want) = revision.filter(|r| *r != rev.0) else { return Ok(Response::new(wire(&now, rev))) };
        let history = self.state.cortex_history(t).await.map_err(status)?;
        match history.into_iter().find(|h| h.revision.0 == want) {
            Some(h) => Ok(Response::new(wire(&h.config.unwrap_or_default(), h.revision))),
            None => Err(Status::not_found(format!("revision {want} is not in the configuration's history"))),
        }
    }

    async fn set(&self, t: Target, spec: Option<pb::CapabilityBackendConfigSpec>) -> Result<pb::SetResponse, Status> {
        let expected = spec.as_ref().and_then(|s| s.revision).map(Revision);
        // every write compares against the revision it read, so `enabled` and the secrets it
        // carries over are never stale; without a caller's revision a lost race is retried
        for _ in 0..ATTEMPTS {
            let (stored, rev) = self.current(t).await?;
            let config = incoming(spec.clone(), &stored)?;
            if let Some(r) = expected
                && r != rev
            {
                return Err(stale(t, r, rev));
            }
            if config == stored && rev != Revision::ZERO {
                if t == Target::Active && config.enabled {
                    // idempotent: a retry after a failed apply applies again
                    self.apply(&config).await?;
                }
                return Ok(pb::SetResponse { revision: rev.0, changed: false });
            }
            let new = match self.state.put_cortex_config(t, &config, Some(rev)).await {
                Ok(r) => r,
                Err(crate::state::StateError::Stale { .. }) if expected.is_none() => continue,
                Err(e) => return Err(status(e)),
            };
            if t == Target::Active && config.enabled {
                self.apply(&config).await?;
            }
            return Ok(pb::SetResponse { revision: new.0, changed: true });
        }
        Err(Status::aborted("the configuration kept changing during the write; try again"))
    }

    async fn apply(&self, config: &ClusterConfig) -> Result<(), Status> {
        let r = self.driver.apply(config).await;
        // whatever happened, the upstream state follows the driver at once
        self.upstream.refresh().await;
        r.map_err(|e| {
            let s = e.into_status();
            Status::new(s.code(), format!("the configuration is stored, but applying it failed: {}", s.message()))
        })
    }

    async fn clusters_with_capability(&self) -> Result<Vec<String>, Status> {
        let metrics = CapabilityName::metrics();
        Ok(self
            .state
            .clusters()
            .await
            .map_err(status)?
            .into_iter()
            .filter(|c| c.capability(&metrics).is_some())
            .map(|c| c.id.to_string())
            .collect())
    }
}

#[tonic::async_trait]
impl CortexOps for CortexOpsService {
    async fn get_default_configuration(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::CapabilityBackendConfigSpec>, Status> {
        self.read(Target::Default, request.into_inner().revision).await
    }

    async fn set_default_configuration(
        &self,
        request: Request<pb::SetRequest>,
    ) -> Result<Response<pb::SetResponse>, Status> {
        Ok(Response::new(self.set(Target::Default, request.into_inner().spec).await?))
    }

    async fn reset_default_configuration(&self, request: Request<pb::ResetRequest>) -> Result<Response<()>, Status> {
        self.state.reset_cortex_default(request.into_inner().revision.map(Revision)).await.map_err(status)?;
        Ok(Response::new(()))
    }

    async fn get_configuration(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::CapabilityBackendConfigSpec>, Status> {
        self.read(Target::Active, request.into_inner().revision).await
    }

    async fn set_configuration(&self, request: Request<pb::SetRequest>) -> Result<Response<pb::SetResponse>, Status> {
        Ok(Response::new(self.set(Target::Active, request.into_inner().spec).await?))
    }

    async fn reset_configuration(&self, request: Request<pb::ResetRequest>) -> Result<Response<()>, Status> {
        let expected = request.into_inner().revision.map(Revision);
        for _ in 0..ATTEMPTS {
            let (active, rev) = self.state.cortex_active().await.map_err(status)?;
            if let Some(r) = expected
                && r != rev
            {
                return Err(stale(Target::Active, r, rev));
            }
            let (mut config, _) = self.state.cortex_default().await.map_err(status)?;
            config.enabled = active.enabled;
            let new = match self.state.put_cortex_config(Target::Active, &config, Some(rev)).await {
                Ok(r) => r,
                Err(crate::state::StateError::Stale { .. }) if expected.is_none() => continue,
                Err(e) => return Err(status(e)),
            };
            self.state.mark_reset(Target::Active, new).await;
            if config.enabled {
                self.apply(&config).await?;
            }
            return Ok(Response::new(()));
        }
        Err(Status::aborted("the configuration kept changing during the reset; try again"))
    }

    async fn status(&self, _: Request<()>) -> Result<Response<pb::InstallStatus>, Status> {
        let configured = self.state.cortex_config(Target::Active).await.map_err(status)?.is_some();
        let config_state =
            if configured { pb::ConfigurationState::Configured } else { pb::ConfigurationState::NotConfigured };
        // what the agents follow: the stored state, whichever replica wrote it
        let upstream = self.state.upstream().await.map_err(status)?;
        let s = self.driver.status().await.unwrap_or_else(|e| ClusterStatus {
            install_state: UpstreamState::Unknown,
            app_state: AppState::NotRunning,
            workloads: Vec::new(),
            warnings: vec![format!(
                "the cluster driver cannot read the status: {}",
                opni_metrics_core::error_chain(&e)
            )],
            version: None,
        });
        let mut warnings = s.warnings;
        if let Some(why) = upstream.disabled_reason() {
            warnings.push(format!("agents are disabled: {}", why.message()));
        }
        Ok(Response::new(pb::InstallStatus {
            config_state: config_state.into(),
            install_state: install_state(s.install_state).into(),
            app_state: app_state(s.app_state).into(),
            workloads: s
                .workloads
                .into_iter()
                .map(|w| pb::WorkloadStatus {
                    name: w.name,
                    kind: String::new(),
                    desired_replicas: w.desired,
                    ready_replicas: w.ready,
                    ready: w.ready >= w.desired && w.desired > 0,
                    message: w.message,
                })
                .collect(),
            warnings,
            version: s.version.unwrap_or_default(),
            metadata: [("upstreamState".to_owned(), format!("{upstream:?}"))].into_iter().collect(),
        }))
    }

    async fn install(&self, _: Request<()>) -> Result<Response<()>, Status> {
        let (mut config, _) = self.state.cortex_active().await.map_err(status)?;
        config
            .validate()
            .map_err(|e| Status::failed_precondition(format!("the active configuration is invalid: {e}")))?;
        config.enabled = true;
        // applied first: a driver that cannot install leaves the configuration as it was
        let r = self.driver.apply(&config).await;
        self.upstream.refresh().await;
        r.map_err(|e| {
            let s = e.into_status();
            Status::new(s.code(), format!("installing failed: {}", s.message()))
        })?;
        // then `enabled` is stored, on whatever configuration is current by now (a concurrent Set
        // wins its fields; it was applied by its own call)
        for _ in 0..ATTEMPTS {
            let (mut current, rev) = self.state.cortex_active().await.map_err(status)?;
            if current.enabled && rev != Revision::ZERO {
                return Ok(Response::new(()));
            }
            current.enabled = true;
            match self.state.put_cortex_config(Target::Active, &current, Some(rev)).await {
                Ok(_) => return Ok(Response::new(())),
                Err(crate::state::StateError::Stale { .. }) => continue,
                Err(e) => return Err(status(e)),
            }
        }
        Err(Status::aborted("installed, but the configuration kept changing while recording it; run install again"))
    }

    async fn uninstall(&self, _: Request<()>) -> Result<Response<()>, Status> {
        let users = self.clusters_with_capability().await?;
        if !users.is_empty() {
            let shown: Vec<_> = users.iter().take(5).map(String::as_str).collect();
            return Err(Status::failed_precondition(format!(
                "{} cluster(s) still have the metrics capability ({}{}); uninstall it from them first",
                users.len(),
                shown.join(", "),
                if users.len() > shown.len() { ", …" } else { "" }
            )));
        }
        let (mut config, rev) = self.state.cortex_active().await.map_err(status)?;
        if config.enabled {
            config.enabled = false;
            self.state.put_cortex_config(Target::Active, &config, Some(rev)).await.map_err(status)?;
        }
        let r = self.driver.uninstall().await;
        self.upstream.refresh().await;
        r.map_err(IntoStatus::into_status)?;
        Ok(Response::new(()))
    }

    async fn list_presets(&self, _: Request<()>) -> Result<Response<pb::PresetList>, Status> {
        let items = presets()
            .into_iter()
            .map(|p| pb::Preset {
                id: p.id.into(),
                display_name: p.display_name.into(),
                description: p.description.into(),
                notes: p.notes.into_iter().map(Into::into).collect(),
                spec: Some(p.config.redacted().into()),
            })
            .collect();
        Ok(Response::new(pb::PresetList { items }))
    }

    async fn dry_run(&self, request: Request<pb::DryRunRequest>) -> Result<Response<pb::DryRunResponse>, Status> {
        let r = request.into_inner();
        let t = target(r.target)?;
        let (current, rev) = self.current(t).await?;
        let (modified, mut findings) = match pb::Action::try_from(r.action) {
            Ok(pb::Action::Set) => {
                let spec = r.spec.ok_or_else(|| Status::invalid_argument("spec: required for ACTION_SET"))?;
                let expected = spec.revision;
                match cluster_config_unvalidated(spec) {
                    Ok(mut c) => {
                        c.unredact_from(&current);
                        c.enabled = current.enabled;
                        let mut f = findings_to_wire(c.findings(), &c);
                        if let Some(field) = c.unresolved_placeholder() {
                            f.insert(
                                0,
                                pb::ValidationError {
                                    severity: pb::Severity::Error.into(),
                                    field: cortex_wire_path(field, &c.storage),
                                    message: REDACTED_TEXT.into(),
                                },
                            );
                        }
                        if let Some(e) = expected.filter(|e| *e != rev.0) {
                            f.insert(0, stale_finding(e, rev));
                        }
                        (c, f)
                    }
                    Err(e) => (current.clone(), vec![structural(&e)]),
                }
            }
            Ok(pb::Action::Reset) => {
                let mut c = match t {
                    Target::Active => self.state.cortex_default().await.map_err(status)?.0,
                    Target::Default => ClusterConfig::default(),
                };
                c.enabled = current.enabled;
                let mut f = findings_to_wire(c.findings(), &c);
                if let Some(e) = r.revision.filter(|e| *e != rev.0) {
                    f.insert(0, stale_finding(e, rev));
                }
                (c, f)
            }
            _ => return Err(Status::invalid_argument("action: must be ACTION_SET or ACTION_RESET")),
        };
        findings.sort_by_key(|f| f.severity != i32::from(pb::Severity::Error));
        Ok(Response::new(pb::DryRunResponse {
            current: Some(wire(&current, rev)),
            modified: Some(pb::CapabilityBackendConfigSpec::from(modified.redacted())),
            validation_errors: findings,
        }))
    }

    async fn configuration_history(
        &self,
        request: Request<pb::ConfigurationHistoryRequest>,
    ) -> Result<Response<pb::ConfigurationHistoryResponse>, Status> {
        let r = request.into_inner();
        let t = target(r.target)?;
        let entries = self
            .state
            .cortex_history(t)
            .await
            .map_err(status)?
            .into_iter()
            .map(|h| pb::HistoryEntry {
                revision: h.revision.0,
                timestamp: Some(wire_timestamp(h.at)),
                spec: if r.include_values { h.config.map(|c| c.redacted().into()) } else { None },
                reset: h.reset,
            })
            .collect();
        Ok(Response::new(pb::ConfigurationHistoryResponse { entries }))
    }
}

fn stale_finding(given: u64, current: Revision) -> pb::ValidationError {
    pb::ValidationError {
        severity: pb::Severity::Error.into(),
        field: "revision".into(),
        message: format!("the configuration changed since revision {given}; it is now at revision {current}"),
    }
}

fn structural(e: &ConvertError) -> pb::ValidationError {
    pb::ValidationError {
        severity: pb::Severity::Error.into(),
        field: format!("spec.{}", e.field()),
        message: opni_metrics_core::error_chain(e),
    }
}
