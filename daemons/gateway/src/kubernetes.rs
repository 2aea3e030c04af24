//! The gateway on Kubernetes: the `MonitoringCluster` cluster driver, and its controller run
//! only on the replica holding the Lease.

use std::sync::Arc;

use opni_metrics_core::driver::ClusterDriver;
use opni_metrics_kube::cluster::KubeClusterDriver;
use opni_metrics_kube::controller::{self, ControllerSettings};
use opni_metrics_kube::lease::{LeaseElector, LeaseSettings, while_leading};
use opni_metrics_transport::Tasks;

/// Kubernetes settings of a gateway. The client is the embedder's (built with
/// `opni_metrics_kube::client`, or any other way), so this crate picks no Kubernetes version and
/// reads no kubeconfig itself.
#[derive(Clone)]
#[non_exhaustive]
pub struct KubernetesSettings {
    /// The API client.
    pub client: kube::Client,
    /// Namespace of the `MonitoringCluster`, its objects and the Lease.
    pub namespace: String,
    /// Name of the `MonitoringCluster` CortexOps writes.
    pub monitoring_cluster: String,
    /// Run the controller under this Lease; `None`: no controller in this process.
    pub lease: Option<LeaseSettings>,
}

impl std::fmt::Debug for KubernetesSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesSettings")
            .field("namespace", &self.namespace)
            .field("monitoring_cluster", &self.monitoring_cluster)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl KubernetesSettings {
    /// Settings for `client` in `namespace`, `MonitoringCluster` `opni`, no controller.
    pub fn new(client: kube::Client, namespace: impl Into<String>) -> Self {
        Self { client, namespace: namespace.into(), monitoring_cluster: "opni".into(), lease: None }
    }
}

/// The cluster driver (tenant deletion through `data`), and the elector and controller tasks.
pub(crate) fn start(
    k: KubernetesSettings,
    data: Arc<dyn ClusterDriver>,
    tasks: &Tasks,
) -> Result<Arc<dyn ClusterDriver>, opni_metrics_kube::Error> {
    let driver = KubeClusterDriver::new(k.client.clone(), k.namespace.clone(), k.monitoring_cluster.clone())
        .with_data_driver(data);
    if let Some(lease) = k.lease {
        let elector = LeaseElector::new(k.client.clone(), lease)?;
        let leading = elector.leading();
        // at shutdown the lease is released, so another replica takes over at once
        let shutdown = tasks.token().cancelled_owned();
        tasks.spawn_graceful("lease", elector.run_until(shutdown));
        let settings = ControllerSettings { namespace: Some(k.namespace), ..ControllerSettings::default() };
        let client = k.client;
        tasks.spawn("controller", while_leading(leading, move || controller::run(client.clone(), settings.clone())));
    }
    Ok(Arc::new(driver))
}
