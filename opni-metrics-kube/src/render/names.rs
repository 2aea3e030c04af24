//! Names of everything rendered for one MonitoringCluster, in one place: objects, Services and
//! their DNS names, Secrets and the paths they are mounted at.

use super::targets::{Plan, Target};

/// Where the serving certificate Secret is mounted in Cortex pods.
pub(crate) const TLS_DIR: &str = "/etc/cortex/tls";
/// The certificate, key and CA files in [`TLS_DIR`] (cert-manager's Secret keys).
pub(crate) const TLS_CERT: &str = "/etc/cortex/tls/tls.crt";
pub(crate) const TLS_KEY: &str = "/etc/cortex/tls/tls.key";
pub(crate) const TLS_CA: &str = "/etc/cortex/tls/ca.crt";
/// The config file, mounted from the config Secret.
pub(crate) const CONFIG_FILE: &str = "/etc/cortex/cortex.yaml";
/// The config Secret's key.
pub(crate) const CONFIG_KEY: &str = "cortex.yaml";
/// The data volume of every Cortex pod.
pub(crate) const DATA_DIR: &str = "/data";
/// The environment variable carrying the storage credential, expanded by `-config.expand-env`.
pub(crate) const STORAGE_SECRET_ENV: &str = "CORTEX_STORAGE_SECRET";
/// How the config refers to it.
pub(crate) const STORAGE_SECRET_REF: &str = "${CORTEX_STORAGE_SECRET}";
/// Where GCS credentials are mounted (a JSON key file cannot go through `-config.expand-env`).
pub(crate) const GCS_CREDENTIALS_DIR: &str = "/etc/cortex/gcs";
pub(crate) const GCS_CREDENTIALS_NAME: &str = "credentials.json";

/// Names derived from the MonitoringCluster's name and namespace.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Names<'a> {
    pub(crate) mc: &'a str,
    pub(crate) ns: &'a str,
}

impl Names<'_> {
    /// The longest suffix we append, `-cortex-store-gateway` on a StatefulSet, must leave the
    /// name at most 52 characters (Kubernetes appends `-<10-char hash>` for the
    /// `controller-revision-hash` label, a 63-character label value).
    pub(crate) const MAX_MC_NAME: usize = 31;

    /// `<mc>-cortex`: the all-in-one Service and the prefix of every Cortex name.
    pub(crate) fn cortex(&self) -> String {
        format!("{}-cortex", self.mc)
    }

    /// `<mc>-cortex-<target>`: the Deployment or StatefulSet running `target`.
    pub(crate) fn workload(&self, target: Target) -> String {
        format!("{}-cortex-{}", self.mc, target.as_str())
    }

    /// The ClusterIP Service of a workload: `<mc>-cortex` in all-in-one mode.
    pub(crate) fn service(&self, target: Target) -> String {
        match target {
            Target::All => self.cortex(),
            t => self.workload(t),
        }
    }

    /// The headless Service of a workload (a StatefulSet's `serviceName`).
    pub(crate) fn headless(&self, target: Target) -> String {
        format!("{}-headless", self.service(target))
    }

    /// The Service that serves `target` under `plan`, running or not.
    pub(crate) fn service_for(&self, plan: &Plan<'_>, target: Target) -> String {
        self.service(if plan.is_ha() { target } else { Target::All })
    }

    /// `<mc>-cortex-gossip`: the headless Service every ring member joins through.
    pub(crate) fn gossip(&self) -> String {
        format!("{}-cortex-gossip", self.mc)
    }

    /// `<svc>.<ns>.svc`: the name clients use and certificates carry.
    pub(crate) fn host(&self, service: &str) -> String {
        format!("{service}.{}.svc", self.ns)
    }

    /// `<svc>.<ns>.svc.cluster.local`.
    pub(crate) fn fqdn(&self, service: &str) -> String {
        format!("{service}.{}.svc.cluster.local", self.ns)
    }

    pub(crate) fn config_secret(&self) -> String {
        format!("{}-cortex-config", self.mc)
    }

    /// The serving certificate and its Secret (also Cortex's client certificate between
    /// components).
    pub(crate) fn serving_cert(&self) -> String {
        format!("{}-cortex-serving", self.mc)
    }

    /// The gateway's client certificate and its Secret.
    pub(crate) fn gateway_client_cert(&self) -> String {
        format!("{}-gateway-client", self.mc)
    }

    /// The self-signed issuer that signs the CA.
    pub(crate) fn selfsigned_issuer(&self) -> String {
        format!("{}-selfsigned", self.mc)
    }

    /// The CA certificate, its Secret and the issuer signing with it.
    pub(crate) fn ca(&self) -> String {
        format!("{}-ca", self.mc)
    }

    pub(crate) fn grafana(&self) -> String {
        format!("{}-grafana", self.mc)
    }

    /// The Service grafana-operator v5 creates for a `Grafana` (`<name>-service`, port 3000).
    pub(crate) fn grafana_service(&self) -> String {
        format!("{}-grafana-service", self.mc)
    }

    pub(crate) fn datasource(&self) -> String {
        format!("{}-opni-metrics", self.mc)
    }
}
