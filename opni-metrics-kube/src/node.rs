//! The node driver: runs the agent's local Prometheus through prometheus-operator.
//!
//! [`KubeNodeDriver`] implements core's [`NodeDriver`] by server-side applying the objects of
//! [`render::node_objects`] (a `PrometheusAgent`, or with [`Strategy::Legacy`] a `Prometheus`
//! in agent mode, its ServiceAccount, ClusterRole, ClusterRoleBinding and scrape-config Secret).
//! Namespaced objects are owner-referenced to the agent Deployment, so they go when the agent
//! goes; the two cluster-scoped RBAC objects cannot have a namespaced owner and are deleted by
//! [`NodeDriver::remove`] and on disable. Objects without our managed-by label are never touched,
//! so an existing kube-prometheus-stack keeps running beside us.
//!
//! [`KubeNodeDriver::guard`] watches our objects and re-applies the last config when one is
//! deleted or edited by hand.

pub mod render;

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use opni_metrics_core::driver::{DriverError, NodeDriver};
use opni_metrics_core::node::{Condition, ConditionKind, ConditionStatus, NodeConfig, NodeStatus};
use tokio::sync::{Notify, watch};

use render::prometheus_resource;
pub use render::{NodeObject, NodeSettings, Owner, Strategy, node_objects};

use crate::apply::{apply, delete_ours, get};
use crate::crd::prometheus::PrometheusStatus;
use crate::error::Error;

const PROMETHEUS_OPERATOR: &str = "install prometheus-operator (with the PrometheusAgent CRD, v0.64 or later), \
or set the agent's driver strategy to `legacy` for operators that only serve Prometheus";

/// The Kubernetes node driver.
pub struct KubeNodeDriver {
    client: Client,
    settings: NodeSettings,
    last: watch::Sender<Option<NodeConfig>>,
}

impl std::fmt::Debug for KubeNodeDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeNodeDriver").field("settings", &self.settings).finish_non_exhaustive()
    }
}

fn cond(kind: ConditionKind, status: ConditionStatus, reason: &str, message: impl Into<String>) -> Condition {
    Condition { kind, status, reason: reason.to_owned(), message: message.into() }
}

impl KubeNodeDriver {
    /// A driver writing through `client` as `settings` say.
    pub fn new(client: Client, settings: NodeSettings) -> Self {
        Self { client, settings, last: watch::Sender::new(None) }
    }

    /// Looks up the agent Deployment `name` in `namespace`, the owner of the namespaced objects.
    ///
    /// # Errors
    /// [`Error::Invalid`] if it does not exist, [`Error::Api`] if it cannot be read.
    pub async fn resolve_owner(client: &Client, namespace: &str, name: &str) -> Result<Owner, Error> {
        let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), namespace);
        let d = deployments
            .get_opt(name)
            .await
            .map_err(Error::api(format!("get Deployment {namespace}/{name}")))?
            .ok_or_else(|| Error::Invalid {
                field: "driver.ownerDeployment".into(),
                reason: format!("Deployment {namespace}/{name} not found"),
            })?;
        Ok(Owner {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: name.to_owned(),
            uid: d.metadata.uid.unwrap_or_default(),
        })
    }

    /// The driver's fixed settings.
    pub fn settings(&self) -> &NodeSettings {
        &self.settings
    }

    async fn apply_config(&self, config: &NodeConfig) -> Result<NodeStatus, Error> {
        let objects = node_objects(config, &self.settings)?;
        if objects.is_empty() {
            self.remove_all().await?;
            self.last.send_replace(Some(config.clone()));
            let mut s = NodeStatus::default();
            s.set(cond(ConditionKind::PrometheusReady, ConditionStatus::False, "Disabled", "the node is disabled"));
            return Ok(s);
        }
        let ns = self.settings.namespace.as_str();
        for o in &objects {
            apply(&self.client, &o.resource, o.namespaced.then_some(ns), &o.object, PROMETHEUS_OPERATOR).await?;
        }
        // a strategy switch leaves the other kind behind: remove it (a missing CRD counts as gone)
        let other = match self.settings.strategy {
            Strategy::PrometheusAgent => Strategy::Legacy,
            Strategy::Legacy => Strategy::PrometheusAgent,
        };
        delete_ours(&self.client, &prometheus_resource(other), Some(ns), &self.settings.names().prometheus).await?;
        self.last.send_replace(Some(config.clone()));
        self.read_status().await
    }

    async fn remove_all(&self) -> Result<(), Error> {
        let ns = Some(self.settings.namespace.as_str());
        let n = self.settings.names();
        for strategy in [Strategy::PrometheusAgent, Strategy::Legacy] {
            delete_ours(&self.client, &prometheus_resource(strategy), ns, &n.prometheus).await?;
        }
        delete_ours(&self.client, &render::secret(), ns, &n.scrape_secret).await?;
        delete_ours(&self.client, &render::cluster_role_binding(), None, &n.cluster_role).await?;
        delete_ours(&self.client, &render::cluster_role(), None, &n.cluster_role).await?;
        delete_ours(&self.client, &render::service_account(), ns, &n.prometheus).await?;
        Ok(())
    }

    async fn read_status(&self) -> Result<NodeStatus, Error> {
        let mut s = NodeStatus::default();
        let res = prometheus_resource(self.settings.strategy);
        let name = self.settings.names().prometheus;
        let c = match get(&self.client, &res, Some(&self.settings.namespace), &name).await? {
            None => cond(
                ConditionKind::PrometheusReady,
                ConditionStatus::False,
                "NotFound",
                format!("{} {}/{name} does not exist", res.kind, self.settings.namespace),
            ),
            Some(o) => prometheus_ready(&o),
        };
        s.set(c);
        Ok(s)
    }

    /// Watches this agent's objects and re-applies the last enabled config whenever one of them
    /// changes or disappears (deleted or edited by hand). Runs until dropped. A re-apply that
    /// changes nothing is a no-op on the API server and produces no further event.
    pub async fn guard(self: Arc<Self>) {
        let notify = Arc::new(Notify::new());
        let selector = self.settings.selector();
        let ns = self.settings.namespace.clone();
        let mut resources = vec![
            (prometheus_resource(self.settings.strategy), true),
            (render::secret(), true),
            (render::service_account(), true),
            (render::cluster_role(), false),
            (render::cluster_role_binding(), false),
        ];
        let streams = resources.drain(..).map(|(res, namespaced)| {
            let api: Api<DynamicObject> = if namespaced {
                Api::namespaced_with(self.client.clone(), &ns, &res)
            } else {
                Api::all_with(self.client.clone(), &res)
            };
            watcher(api, watcher::Config::default().labels(&selector)).default_backoff().boxed()
        });
        let mut events = futures::stream::select_all(streams);
        let reapply = {
            let me = Arc::clone(&self);
            let notify = Arc::clone(&notify);
            async move {
                loop {
                    notify.notified().await;
                    let config = me.last.borrow().clone();
                    if let Some(config) = config.filter(|c| c.enabled) {
                        match me.apply_config(&config).await {
                            Ok(_) => tracing::debug!("re-asserted the agent's Prometheus objects"),
                            Err(e) => tracing::warn!(error = %e, "re-applying the agent's Prometheus objects failed"),
                        }
                    }
                }
            }
        };
        let watch = async move {
            while let Some(ev) = events.next().await {
                match ev {
                    Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
                        notify.notify_one();
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "watching the agent's objects"),
                }
            }
        };
        futures::future::join(reapply, watch).await;
    }
}

/// `PrometheusReady` from prometheus-operator's `Available` condition.
fn prometheus_ready(o: &DynamicObject) -> Condition {
    let status: Option<PrometheusStatus> = o.data.get("status").and_then(|s| serde_json::from_value(s.clone()).ok());
    let available = status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Available"));
    match available {
        None => cond(
            ConditionKind::PrometheusReady,
            ConditionStatus::Unknown,
            "Pending",
            "prometheus-operator has not reported on the Prometheus yet",
        ),
        Some(c) => {
            let st = match c.status.as_str() {
                "True" => ConditionStatus::True,
                "False" => ConditionStatus::False,
                _ => ConditionStatus::Unknown,
            };
            let reason = if c.reason.is_empty() { "Available".to_owned() } else { c.reason.clone() };
            cond(ConditionKind::PrometheusReady, st, &reason, c.message.clone())
        }
    }
}

impl NodeDriver for KubeNodeDriver {
    fn apply<'a>(&'a self, config: &'a NodeConfig) -> BoxFuture<'a, Result<NodeStatus, DriverError>> {
        async move { self.apply_config(config).await.map_err(DriverError::from) }.boxed()
    }

    fn remove(&self) -> BoxFuture<'_, Result<(), DriverError>> {
        async move {
            self.last.send_replace(None);
            self.remove_all().await.map_err(DriverError::from)
        }
        .boxed()
    }

    fn status(&self) -> BoxFuture<'_, Result<NodeStatus, DriverError>> {
        async move { self.read_status().await.map_err(DriverError::from) }.boxed()
    }
}
