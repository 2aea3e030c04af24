//! The `MonitoringCluster` controller: reconcile = [`render::desired_objects`] (pure) + forced
//! server-side apply of each object + pruning of what is no longer wanted + per-workload
//! readiness written to status. Idempotent; it never branches on what triggered it.
//!
//! Triggers: the MonitoringCluster itself and every object it controls (owner references), so a
//! workload deleted by hand is recreated and a field edited by hand is re-asserted at once.
//! No finalizer: every object rendered is namespaced and owner-referenced, so Kubernetes' garbage
//! collector removes it with the MonitoringCluster; there is no external state to clean up.
//! Objects of operators that are not installed (cert-manager, grafana-operator) are skipped and
//! reported as a `False` condition instead of failing the whole reconcile.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::apply::{apply, get, prune};
use crate::crd::monitoring_cluster::{MonitoringClusterStatus, WorkloadStatus};
use crate::crd::{Condition, MonitoringCluster};
use crate::error::Error;
use crate::render::{self, ObjectKind, RenderOptions, WorkloadKind};
use crate::{FIELD_MANAGER, MANAGED_BY_LABEL};

/// How often a healthy cluster is re-checked without any event.
const RESYNC: Duration = Duration::from_secs(300);
/// How often a cluster that is not ready yet is re-checked.
const NOT_READY_RESYNC: Duration = Duration::from_secs(10);
/// Delay after a failed reconcile.
const ERROR_REQUEUE: Duration = Duration::from_secs(5);

/// What the controller watches and renders with.
#[derive(Debug, Clone, Default)]
pub struct ControllerSettings {
    /// Only MonitoringClusters in this namespace; all namespaces when `None`.
    pub namespace: Option<String>,
    /// Rendering defaults (image).
    pub render: RenderOptions,
}

struct Context {
    client: Client,
    settings: ControllerSettings,
}

fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller until the stream of reconciles ends (it does not on its own).
pub async fn run(client: Client, settings: ControllerSettings) {
    let ns = settings.namespace.clone();
    let ns = ns.as_deref();
    let owned = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={FIELD_MANAGER}"));
    let ctx = Arc::new(Context { client: client.clone(), settings: settings.clone() });
    Controller::new(api::<MonitoringCluster>(&client, ns), watcher::Config::default())
        .owns(api::<StatefulSet>(&client, ns), owned.clone())
        .owns(api::<Deployment>(&client, ns), owned.clone())
        .owns(api::<Service>(&client, ns), owned.clone())
        .owns(api::<Secret>(&client, ns), owned.clone())
        .owns(api::<PodDisruptionBudget>(&client, ns), owned)
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            match r {
                Ok((o, _)) => tracing::debug!(object = %o.name, "reconciled"),
                Err(e) => tracing::warn!(error = %opni_metrics_core::error_chain(&e), "reconcile failed"),
            }
        })
        .await;
}

fn error_policy(mc: Arc<MonitoringCluster>, e: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(name = %mc.name_any(), error = %opni_metrics_core::error_chain(e), "reconcile failed; retrying");
    Action::requeue(ERROR_REQUEUE)
}

fn condition(type_: &str, ok: bool, reason: &str, message: impl Into<String>, generation: Option<i64>) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        last_transition_time: None,
        observed_generation: generation,
    }
}

async fn reconcile(mc: Arc<MonitoringCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let client = &ctx.client;
    let name = mc.name_any();
    let ns = mc.namespace().ok_or_else(|| Error::Invalid {
        field: "metadata.namespace".into(),
        reason: "a MonitoringCluster is namespaced".into(),
    })?;
    let generation = mc.metadata.generation;
    if mc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let mut conditions = Vec::new();

    if let Err(e) = render::validate(&mc.spec) {
        conditions.push(condition("Reconciled", false, "InvalidSpec", e.to_string(), generation));
        write_status(client, &mc, MonitoringClusterStatus { conditions, ..current_status(&mc) }).await?;
        // nothing changes until the spec does
        return Ok(Action::await_change());
    }
    let desired = render::desired_objects(&mc, &ctx.settings.render)
        .map_err(|e| Error::Invalid { field: "spec".into(), reason: e.to_string() })?;

    // apply; operators that are missing skip their objects and say so
    let mut missing: BTreeMap<&'static str, String> = BTreeMap::new();
    let mut applied: BTreeMap<ObjectKind, Vec<String>> = BTreeMap::new();
    for d in &desired {
        let Some(obj_name) = d.object["metadata"]["name"].as_str() else { continue };
        let provider = d.kind.needs_crd().unwrap_or("a built-in resource");
        match apply(client, &d.kind.api_resource(), Some(&ns), &d.object, provider).await {
            Ok(_) => applied.entry(d.kind).or_default().push(obj_name.to_owned()),
            Err(Error::MissingCrd { what }) if d.kind.needs_crd().is_some() => {
                // keep a missing operator's objects in the keep-list: nothing to prune there anyway
                applied.entry(d.kind).or_default().push(obj_name.to_owned());
                missing.entry(operator_condition(d.kind)).or_insert(what);
            }
            Err(e) => return Err(e),
        }
    }
    // prune what is ours, labelled for this cluster and no longer wanted
    let selector = format!("{MANAGED_BY_LABEL}={FIELD_MANAGER},{}={name}", render::SELECTOR_LABEL);
    for kind in ObjectKind::ALL {
        let keep: Vec<&str> = applied.get(&kind).map(|v| v.iter().map(String::as_str).collect()).unwrap_or_default();
        let deleted = prune(client, &kind.api_resource(), Some(&ns), &selector, &keep).await?;
        for d in deleted {
            tracing::info!(kind = ?kind, name = %d, cluster = %name, "removed an object no longer wanted");
        }
    }

    // readiness of each workload
    let mut workloads = Vec::new();
    for w in render::workloads(&mc).map_err(|e| Error::Invalid { field: "spec".into(), reason: e.to_string() })? {
        let (ready, message) = workload_ready(client, &ns, &w).await?;
        workloads.push(WorkloadStatus {
            name: w.target.clone(),
            kind: match w.kind {
                WorkloadKind::Deployment => "Deployment",
                WorkloadKind::StatefulSet => "StatefulSet",
            }
            .to_owned(),
            desired: w.replicas,
            ready,
            message,
        });
    }
    let workloads_ready = !workloads.is_empty() && workloads.iter().all(|w| w.ready >= w.desired);
    conditions.push(condition("Reconciled", true, "Applied", "", generation));
    let not_ready: Vec<&str> = workloads.iter().filter(|w| w.ready < w.desired).map(|w| w.name.as_str()).collect();
    conditions.push(if !mc.spec.cortex.enabled {
        condition("Ready", false, "Disabled", "cortex is disabled", generation)
    } else if workloads_ready {
        condition("Ready", true, "WorkloadsReady", "", generation)
    } else {
        condition("Ready", false, "WorkloadsNotReady", format!("waiting for {}", not_ready.join(", ")), generation)
    });
    for (type_, what) in ["CertManagerAvailable", "GrafanaOperatorAvailable"].map(|t| (t, missing.get(t))) {
        let wanted = match type_ {
            "CertManagerAvailable" => mc.spec.cortex.enabled,
            _ => mc.spec.grafana.enabled,
        };
        if wanted {
            conditions.push(match what {
                Some(w) => condition(type_, false, "CrdMissing", format!("missing CRD: {w}"), generation),
                None => condition(type_, true, "Installed", "", generation),
            });
        }
    }
    let status = MonitoringClusterStatus {
        observed_generation: generation,
        workloads_ready,
        workloads,
        conditions,
        version: mc.spec.cortex.enabled.then(|| image_tag(&mc, &ctx.settings.render)),
        config_digest: if mc.spec.cortex.enabled {
            Some(
                render::config_digest(&mc)
                    .map_err(|e| Error::Invalid { field: "spec".into(), reason: e.to_string() })?,
            )
        } else {
            None
        },
    };
    write_status(client, &mc, status).await?;
    Ok(Action::requeue(if workloads_ready || !mc.spec.cortex.enabled { RESYNC } else { NOT_READY_RESYNC }))
}

fn operator_condition(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Grafana | ObjectKind::GrafanaDatasource => "GrafanaOperatorAvailable",
        _ => "CertManagerAvailable",
    }
}

fn image_tag(mc: &MonitoringCluster, opts: &RenderOptions) -> String {
    let image = mc.spec.cortex.image.as_deref().unwrap_or(&opts.default_image);
    image.rsplit_once(':').filter(|(_, t)| !t.contains('/')).map_or("latest", |(_, t)| t).to_owned()
}

fn current_status(mc: &MonitoringCluster) -> MonitoringClusterStatus {
    mc.status.clone().unwrap_or_default()
}

async fn workload_ready(client: &Client, ns: &str, w: &render::WorkloadRef) -> Result<(u32, String), Error> {
    let res = match w.kind {
        WorkloadKind::Deployment => ObjectKind::Deployment,
        WorkloadKind::StatefulSet => ObjectKind::StatefulSet,
    };
    let Some(o) = get(client, &res.api_resource(), Some(ns), &w.name).await? else {
        return Ok((0, "not created yet".into()));
    };
    let ready = o.data["status"]["readyReplicas"].as_u64().map_or(0, |r| u32::try_from(r).unwrap_or(u32::MAX));
    let message = if ready >= w.replicas { String::new() } else { format!("{ready}/{} replicas ready", w.replicas) };
    Ok((ready, message))
}

/// Writes `status` unless it equals the stored one; a condition keeps its transition time while
/// its status does not change.
async fn write_status(
    client: &Client,
    mc: &MonitoringCluster,
    mut status: MonitoringClusterStatus,
) -> Result<(), Error> {
    let old = current_status(mc);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    for c in &mut status.conditions {
        c.last_transition_time = old
            .conditions
            .iter()
            .find(|o| o.type_ == c.type_ && o.status == c.status)
            .and_then(|o| o.last_transition_time.clone())
            .or_else(|| Some(now.clone()));
    }
    if status == old {
        return Ok(());
    }
    let ns = mc.namespace().unwrap_or_default();
    let api: Api<MonitoringCluster> = Api::namespaced(client.clone(), &ns);
    let patch = json!({
        "apiVersion": MonitoringCluster::api_version(&()),
        "kind": MonitoringCluster::kind(&()),
        "status": status,
    });
    api.patch_status(&mc.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(Error::api(format!("write status of MonitoringCluster {ns}/{}", mc.name_any())))?;
    Ok(())
}
