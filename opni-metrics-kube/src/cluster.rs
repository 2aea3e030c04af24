//! The cluster driver (gateway side): the CortexOps configuration is stored as the
//! `MonitoringCluster` custom resource, and its status is read back from it.
//!
//! Storage secrets never go into the custom resource: [`KubeClusterDriver`] writes them to a
//! Secret (`<name>-storage-credentials`) and the resource refers to it. Only the fields the
//! CortexOps configuration carries are applied; anything else an operator sets on the resource
//! by hand (limits, log level, TLS issuer, image) belongs to another field manager and is kept.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use kube::Client;
use kube::api::{Api, DeleteParams};
use opni_metrics_core::ClusterId;
use opni_metrics_core::cluster::{ClusterConfig, DeploymentMode, Storage};
use opni_metrics_core::driver::{AppState, ClusterDriver, ClusterStatus, DriverError, WorkloadStatus};
use opni_metrics_core::node::UpstreamState;
use opni_metrics_core::uninstall::PurgeProgress;
use serde_json::{Value, json};

use crate::apply::apply;
use crate::crd::MonitoringCluster;
use crate::crd::monitoring_cluster::{GROUP, VERSION};
use crate::error::{Error, is_not_found};
use crate::node::render::secret;
use crate::{FIELD_MANAGER, MANAGED_BY_LABEL};

/// The Kubernetes cluster driver.
#[derive(Clone)]
pub struct KubeClusterDriver {
    client: Client,
    namespace: String,
    name: String,
    data: Option<Arc<dyn ClusterDriver>>,
}

impl std::fmt::Debug for KubeClusterDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeClusterDriver").field("namespace", &self.namespace).field("name", &self.name).finish()
    }
}

const OUR_CRD: &str = "apply deploy/crds (the MonitoringCluster CRD of opni-metrics)";

impl KubeClusterDriver {
    /// A driver for the MonitoringCluster `name` in `namespace`. Tenant data deletion is
    /// delegated to `data` (a driver that calls the deployed Cortex's purger API), when given.
    pub fn new(client: Client, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { client, namespace: namespace.into(), name: name.into(), data: None }
    }

    /// Delegates tenant data deletion to `data`.
    #[must_use]
    pub fn with_data_driver(mut self, data: Arc<dyn ClusterDriver>) -> Self {
        self.data = Some(data);
        self
    }

    fn credentials_name(&self) -> String {
        format!("{}-storage-credentials", self.name)
    }

    fn labels(&self) -> Value {
        json!({ MANAGED_BY_LABEL: FIELD_MANAGER, "app.kubernetes.io/part-of": "opni-metrics" })
    }

    /// The MonitoringCluster fields `config` owns, and the credentials Secret it needs.
    fn render(&self, config: &ClusterConfig) -> (Value, Option<Value>) {
        let creds = self.credentials_name();
        let key_ref = |key: &str| json!({ "name": creds, "key": key });
        let (backend, block, secret_data) = match &config.storage {
            Storage::Filesystem { directory } => {
                // CortexOps names an absolute directory; the resource takes one inside the data volume
                let relative = directory.trim_start_matches('/');
                let relative = if relative.is_empty() { "blocks" } else { relative };
                ("filesystem", json!({ "directory": relative }), None)
            }
            Storage::S3 { endpoint, bucket, region, access_key_id, secret_access_key } => {
                let mut b = json!({
                    "endpoint": endpoint, "bucket": bucket, "accessKeyId": access_key_id,
                    "secretAccessKey": key_ref("secretAccessKey"),
                });
                if !region.is_empty() {
                    b["region"] = json!(region);
                }
                ("s3", b, Some(("secretAccessKey", secret_access_key)))
            }
            Storage::Gcs { bucket, service_account } => (
                "gcs",
                json!({ "bucket": bucket, "serviceAccount": key_ref("serviceAccount") }),
                Some(("serviceAccount", service_account)),
            ),
            Storage::Azure { account_name, account_key, container } => (
                "azure",
                json!({ "accountName": account_name, "container": container, "accountKey": key_ref("accountKey") }),
                Some(("accountKey", account_key)),
            ),
            Storage::Swift { auth_url, username, password, container } => (
                "swift",
                json!({ "authUrl": auth_url, "username": username, "container": container,
                        "password": key_ref("password") }),
                Some(("password", password)),
            ),
        };
        let workloads: serde_json::Map<String, Value> = config
            .workloads
            .iter()
            .map(|(k, w)| {
                let mut v = json!({});
                if let Some(r) = w.replicas {
                    v["replicas"] = json!(r);
                }
                if !w.extra_args.is_empty() {
                    v["extraArgs"] = json!(w.extra_args);
                }
                (k.clone(), v)
            })
            .collect();
        let mut grafana = json!({ "enabled": config.grafana.enabled });
        if let Some(v) = &config.grafana.version {
            grafana["version"] = json!(v);
        }
        if let Some(h) = &config.grafana.hostname {
            grafana["hostname"] = json!(h);
        }
        let mc = json!({
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "kind": "MonitoringCluster",
            "metadata": { "name": self.name, "namespace": self.namespace, "labels": self.labels() },
            "spec": {
                "cortex": {
                    "enabled": config.enabled,
                    "deploymentMode": match config.mode {
                        DeploymentMode::AllInOne => "allInOne",
                        DeploymentMode::HighlyAvailable => "highlyAvailable",
                    },
                    "workloads": workloads,
                    "config": {
                        "storage": { "backend": backend, backend: block },
                        "retention": config.retention.to_string(),
                    },
                },
                "grafana": grafana,
            },
        });
        let secret = secret_data.map(|(key, value)| {
            json!({
                "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": { "name": creds, "namespace": self.namespace, "labels": self.labels() },
                "stringData": { key: value },
            })
        });
        (mc, secret)
    }

    async fn apply_config(&self, config: &ClusterConfig) -> Result<(), Error> {
        config.validate().map_err(|e| Error::Invalid { field: e.field, reason: e.reason })?;
        let (mc, secret_obj) = self.render(config);
        if let Some(s) = &secret_obj {
            apply(&self.client, &secret(), Some(&self.namespace), s, "a built-in resource").await?;
        }
        apply(&self.client, &mc_resource(), Some(&self.namespace), &mc, OUR_CRD).await?;
        Ok(())
    }

    async fn read_status(&self) -> Result<ClusterStatus, Error> {
        let api: Api<MonitoringCluster> = Api::namespaced(self.client.clone(), &self.namespace);
        let mc = match api.get_opt(&self.name).await {
            Ok(mc) => mc,
            Err(e) if is_not_found(&e) => {
                return Err(Error::MissingCrd { what: format!("MonitoringCluster ({GROUP}/{VERSION}): {OUR_CRD}") });
            }
            Err(e) => return Err(Error::api(format!("get MonitoringCluster {}/{}", self.namespace, self.name))(e)),
        };
        Ok(status_of(mc.as_ref()))
    }

    async fn remove(&self) -> Result<(), Error> {
        let api: Api<MonitoringCluster> = Api::namespaced(self.client.clone(), &self.namespace);
        match api.delete(&self.name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(Error::api(format!("delete MonitoringCluster {}/{}", self.namespace, self.name))(e)),
        }
        crate::apply::delete_ours(&self.client, &secret(), Some(&self.namespace), &self.credentials_name()).await
    }
}

fn mc_resource() -> kube::api::ApiResource {
    kube::api::ApiResource::erase::<MonitoringCluster>(&())
}

/// What CortexOps reports for the resource `mc` (absent: not installed).
pub fn status_of(mc: Option<&MonitoringCluster>) -> ClusterStatus {
    let Some(mc) = mc.filter(|m| m.spec.cortex.enabled && m.metadata.deletion_timestamp.is_none()) else {
        let uninstalling = mc.is_some_and(|m| m.metadata.deletion_timestamp.is_some());
        return ClusterStatus {
            install_state: if uninstalling { UpstreamState::Uninstalling } else { UpstreamState::NotInstalled },
            app_state: AppState::NotRunning,
            workloads: Vec::new(),
            warnings: Vec::new(),
            version: None,
        };
    };
    let status = mc.status.clone().unwrap_or_default();
    let observed = status.observed_generation.is_some() && status.observed_generation == mc.metadata.generation;
    let failed = status.conditions.iter().any(|c| c.type_ == "Reconciled" && c.status == "False");
    let warnings: Vec<String> = status
        .conditions
        .iter()
        .filter(|c| c.status == "False" && c.type_ != "Ready")
        .map(|c| format!("{}: {}", c.type_, if c.message.is_empty() { &c.reason } else { &c.message }))
        .collect();
    let workloads: Vec<WorkloadStatus> = status
        .workloads
        .iter()
        .map(|w| WorkloadStatus {
            name: w.name.clone(),
            ready: w.ready,
            desired: w.desired,
            message: w.message.clone(),
        })
        .collect();
    let app_state = if failed {
        AppState::Failed
    } else if status.workloads_ready {
        AppState::Running
    } else if workloads.iter().any(|w| w.ready > 0) || observed {
        AppState::Pending
    } else {
        AppState::NotRunning
    };
    ClusterStatus {
        install_state: if observed && status.workloads_ready {
            UpstreamState::Installed
        } else {
            UpstreamState::Installing
        },
        app_state,
        workloads,
        warnings,
        version: status.version,
    }
}

impl ClusterDriver for KubeClusterDriver {
    fn apply<'a>(&'a self, config: &'a ClusterConfig) -> BoxFuture<'a, Result<(), DriverError>> {
        async move { self.apply_config(config).await.map_err(DriverError::from) }.boxed()
    }

    fn status(&self) -> BoxFuture<'_, Result<ClusterStatus, DriverError>> {
        async move { self.read_status().await.map_err(DriverError::from) }.boxed()
    }

    fn uninstall(&self) -> BoxFuture<'_, Result<(), DriverError>> {
        async move { self.remove().await.map_err(DriverError::from) }.boxed()
    }

    fn delete_tenant_data<'a>(&'a self, tenant: &'a ClusterId) -> BoxFuture<'a, Result<(), DriverError>> {
        match &self.data {
            Some(d) => d.delete_tenant_data(tenant),
            None => {
                async { Err(DriverError::Unsupported { driver: "kubernetes", operation: "tenant deletion" }) }.boxed()
            }
        }
    }

    fn tenant_deletion_status<'a>(
        &'a self,
        tenant: &'a ClusterId,
    ) -> BoxFuture<'a, Result<PurgeProgress, DriverError>> {
        match &self.data {
            Some(d) => d.tenant_deletion_status(tenant),
            None => {
                async { Err(DriverError::Unsupported { driver: "kubernetes", operation: "tenant deletion" }) }.boxed()
            }
        }
    }
}
