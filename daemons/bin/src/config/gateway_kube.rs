//! The gateway's `kubernetes` config section: the upstream Cortex as a `MonitoringCluster`, its
//! controller and the Lease it runs under.

use std::path::PathBuf;

use opni_metrics_core::duration::PromDuration;
use opni_metrics_kube::lease::LeaseSettings;
use serde::Deserialize;

use crate::ConfigError;

/// The gateway on Kubernetes.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// A kubeconfig file; inferred when absent (in-cluster service account, `KUBECONFIG`).
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the MonitoringCluster, its objects and the Lease; the client's when absent.
    pub namespace: Option<String>,
    /// Name of the MonitoringCluster CortexOps writes.
    pub monitoring_cluster: String,
    /// Run the MonitoringCluster controller (only while holding the Lease).
    pub controller: bool,
    /// This replica's identity in the Lease (the pod name); the host name when absent.
    pub identity: Option<String>,
    /// The Lease.
    pub lease: LeaseConfig,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            namespace: None,
            monitoring_cluster: "opni".into(),
            controller: true,
            identity: None,
            lease: LeaseConfig::default(),
        }
    }
}

/// Leader election timing.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// How long a lease is valid after its last renewal.
    pub lease_duration: PromDuration,
    /// How long the leader keeps trying to renew before it stops (below `leaseDuration`).
    pub renew_deadline: PromDuration,
    /// Time between attempts.
    pub retry_period: PromDuration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            name: "opni-metrics-gateway".into(),
            lease_duration: PromDuration::from_secs(15),
            renew_deadline: PromDuration::from_secs(10),
            retry_period: PromDuration::from_secs(2),
        }
    }
}

/// The validated `kubernetes` section.
#[derive(Debug, Clone)]
pub struct KubePlan {
    /// A kubeconfig file; inferred when `None`.
    pub kubeconfig: Option<PathBuf>,
    /// The namespace; the client's default when `None`.
    pub namespace: Option<String>,
    /// Name of the `MonitoringCluster`.
    pub monitoring_cluster: String,
    /// The Lease the controller runs under (its namespace is filled in from the client's when
    /// empty); `None`: no controller.
    pub lease: Option<LeaseSettings>,
}

impl KubernetesConfig {
    /// The Kubernetes plan; `identity` is this replica's Lease identity when none is
    /// configured (the host name).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field.
    pub fn validate(&self, identity: impl FnOnce() -> String) -> Result<KubePlan, ConfigError> {
        if !opni_metrics_core::spec::is_dns_label(&self.monitoring_cluster) {
            return Err(ConfigError::invalid("kubernetes.monitoringCluster", "must be a DNS label"));
        }
        let lease = if self.controller {
            let mut l = LeaseSettings::new(
                self.namespace.clone().unwrap_or_default(),
                self.lease.name.clone(),
                self.identity.clone().unwrap_or_else(identity),
            );
            l.lease_duration = self.lease.lease_duration.as_duration();
            l.renew_deadline = self.lease.renew_deadline.as_duration();
            l.retry_period = self.lease.retry_period.as_duration();
            l.validate().map_err(|e| ConfigError::invalid("kubernetes.lease", e.to_string()))?;
            Some(l)
        } else {
            None
        };
        Ok(KubePlan {
            kubeconfig: self.kubeconfig.clone(),
            namespace: self.namespace.clone(),
            monitoring_cluster: self.monitoring_cluster.clone(),
            lease,
        })
    }
}
