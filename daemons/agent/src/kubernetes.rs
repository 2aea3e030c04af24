//! The Kubernetes node driver of an agent: a prometheus-operator `PrometheusAgent` (or legacy
//! `Prometheus`) kept as the gateway wants, with its drift guard.

use std::sync::Arc;

use opni_metrics_core::driver::NodeDriver;
use opni_metrics_kube::node::{KubeNodeDriver, NodeSettings, Strategy};
use opni_metrics_transport::Tasks;

/// Settings of the Kubernetes node driver. The client is the embedder's, so this crate picks
/// no Kubernetes version and reads no kubeconfig itself.
#[derive(Clone)]
#[non_exhaustive]
pub struct KubeDriverSettings {
    /// The API client.
    pub client: kube::Client,
    /// Namespace of the Prometheus objects.
    pub namespace: String,
    /// Base name of the objects (and the agent's Service).
    pub name: String,
    /// The agent's Deployment, which owns the namespaced objects.
    pub owner_deployment: Option<String>,
    /// Where Prometheus remote-writes; default `http://<name>.<namespace>.svc:<port>/api/agent/push`.
    pub remote_write_url: Option<String>,
    /// `PrometheusAgent` or legacy `Prometheus`.
    pub strategy: Strategy,
}

impl std::fmt::Debug for KubeDriverSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeDriverSettings")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}

impl KubeDriverSettings {
    /// Settings for `client` in `namespace`, objects named `opni-metrics-agent`.
    pub fn new(client: kube::Client, namespace: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
            name: "opni-metrics-agent".into(),
            owner_deployment: None,
            remote_write_url: None,
            strategy: Strategy::PrometheusAgent,
        }
    }
}

/// The driver, with its drift guard running in `tasks`.
pub(crate) async fn start(
    k: KubeDriverSettings,
    port: u16,
    tasks: &Tasks,
) -> Result<Arc<dyn NodeDriver>, opni_metrics_kube::Error> {
    let owner = match &k.owner_deployment {
        Some(d) => Some(KubeNodeDriver::resolve_owner(&k.client, &k.namespace, d).await?),
        None => None,
    };
    let remote_write_url = k
        .remote_write_url
        .clone()
        .unwrap_or_else(|| format!("http://{}.{}.svc:{port}{}", k.name, k.namespace, crate::PUSH_PATHS[0]));
    let driver = Arc::new(KubeNodeDriver::new(
        k.client,
        NodeSettings { namespace: k.namespace, name: k.name, owner, remote_write_url, strategy: k.strategy },
    ));
    tasks.spawn("kube-drift-guard", Arc::clone(&driver).guard());
    Ok(driver)
}
