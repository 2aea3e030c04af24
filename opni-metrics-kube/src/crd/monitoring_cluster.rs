//! `MonitoringCluster` (`metrics.opni.io/v1beta1`): the upstream Cortex cluster and its Grafana,
//! as the gateway's CortexOps API configures them and the controller deploys them.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, SecretKeyRef};

/// API group of our resources.
pub const GROUP: &str = "metrics.opni.io";
/// API version of [`MonitoringCluster`].
pub const VERSION: &str = "v1beta1";

/// The desired upstream: Cortex (mode, workloads, config) and Grafana.
#[derive(CustomResource, Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "metrics.opni.io",
    version = "v1beta1",
    kind = "MonitoringCluster",
    plural = "monitoringclusters",
    shortname = "mc",
    namespaced,
    status = "MonitoringClusterStatus",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.cortex.deploymentMode"}"#,
    printcolumn = r#"{"name":"Ready","type":"boolean","jsonPath":".status.workloadsReady"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.version"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringClusterSpec {
    /// The Cortex cluster.
    #[serde(default)]
    pub cortex: CortexSpec,
    /// Grafana, deployed through grafana-operator.
    #[serde(default)]
    pub grafana: GrafanaSpec,
    /// Certificates for mutual TLS between the gateway and Cortex (cert-manager).
    #[serde(default)]
    pub tls: TlsSpec,
    /// Where the opni-metrics gateway runs (Grafana queries it; it calls Cortex).
    #[serde(default)]
    pub gateway: GatewayRef,
}

/// How Cortex is deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DeploymentMode {
    /// One all-in-one StatefulSet (`-target=all`).
    #[default]
    AllInOne,
    /// One Deployment or StatefulSet per Cortex component, replicated.
    HighlyAvailable,
}

/// The Cortex part of the spec.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CortexSpec {
    /// Whether Cortex is deployed; `false` removes every workload (stored data is kept).
    #[serde(default)]
    pub enabled: bool,
    /// All-in-one or highly available.
    #[serde(default)]
    pub deployment_mode: DeploymentMode,
    /// Container image; the controller's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Per-target settings by Cortex target name (`all`, `distributor`, `ingester`, `querier`,
    /// `query-frontend`, `store-gateway`, `compactor`, `ruler`, `alertmanager`, `purger`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub workloads: BTreeMap<String, WorkloadSpec>,
    /// Cortex configuration.
    #[serde(default)]
    pub config: CortexConfigSpec,
}

/// Settings of one Cortex target.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpec {
    /// Replicas; the mode's default when absent. In highly-available mode `0` leaves the target
    /// out (only for the optional targets `ruler`, `alertmanager` and `purger`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Extra command-line arguments appended to the target's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
    /// Size of the persistent volume of stateful targets (a Kubernetes quantity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_size: Option<String>,
}

/// The Cortex configuration we render.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CortexConfigSpec {
    /// Block storage.
    #[serde(default)]
    pub storage: StorageSpec,
    /// How long blocks are kept (a Prometheus duration such as `30d`); `0s` keeps them forever.
    #[serde(default = "default_retention")]
    pub retention: String,
    /// Per-tenant limits.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// Log level of every component.
    #[serde(default)]
    pub log_level: LogLevel,
}

fn default_retention() -> String {
    "30d".to_owned()
}

/// Cortex log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LogLevel {
    /// `debug`.
    Debug,
    /// `info`.
    #[default]
    Info,
    /// `warn`.
    Warn,
    /// `error`.
    Error,
}

impl LogLevel {
    /// The value Cortex's `-log.level` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// Per-tenant limits (Cortex `limits` block); absent fields keep Cortex's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitsSpec {
    /// Samples per second per tenant (`ingestion_rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingestion_rate: Option<u64>,
    /// Burst size (`ingestion_burst_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingestion_burst_size: Option<u64>,
    /// Active series per tenant across the cluster (`max_global_series_per_user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_global_series_per_user: Option<u64>,
    /// Label names per series (`max_label_names_per_series`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_label_names_per_series: Option<u32>,
}

/// Object-storage backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum StorageBackend {
    /// A local volume (all-in-one only).
    #[default]
    Filesystem,
    /// S3 or S3-compatible.
    S3,
    /// Google Cloud Storage.
    Gcs,
    /// Azure Blob Storage.
    Azure,
    /// OpenStack Swift.
    Swift,
}

/// Block storage: `backend` names which of the backend blocks is used; that block must be set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// The backend in use.
    #[serde(default)]
    pub backend: StorageBackend,
    /// Filesystem settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FilesystemStorage>,
    /// S3 settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Storage>,
    /// GCS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<GcsStorage>,
    /// Azure settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureStorage>,
    /// Swift settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swift: Option<SwiftStorage>,
}

/// Filesystem storage.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FilesystemStorage {
    /// Directory inside the data volume.
    pub directory: String,
}

/// S3 storage; the secret key comes from a Secret.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Storage {
    /// Endpoint host (and port).
    pub endpoint: String,
    /// Bucket.
    pub bucket: String,
    /// Region, may be empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: SecretKeyRef,
    /// Plain HTTP to the endpoint (test setups only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

/// Google Cloud Storage; the service-account JSON comes from a Secret.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcsStorage {
    /// Bucket.
    pub bucket: String,
    /// The service account JSON.
    pub service_account: SecretKeyRef,
}

/// Azure Blob Storage; the account key comes from a Secret.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureStorage {
    /// Storage account name.
    pub account_name: String,
    /// Container.
    pub container: String,
    /// The account key.
    pub account_key: SecretKeyRef,
}

/// OpenStack Swift; the password comes from a Secret.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SwiftStorage {
    /// Keystone auth URL.
    pub auth_url: String,
    /// User name.
    pub username: String,
    /// Container.
    pub container: String,
    /// The password.
    pub password: SecretKeyRef,
}

/// Grafana, deployed through grafana-operator v5.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrafanaSpec {
    /// Whether Grafana is deployed.
    #[serde(default)]
    pub enabled: bool,
    /// Grafana version; grafana-operator's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Public hostname (Grafana's `root_url` and an Ingress host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// Certificates between the gateway and Cortex.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// A cert-manager issuer to sign with; absent, the controller creates a self-signed CA
    /// (a self-signed `Issuer`, a CA `Certificate` and a CA `Issuer`) for this cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
}

/// A reference to a cert-manager issuer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// Issuer name.
    pub name: String,
    /// `Issuer` or `ClusterIssuer`.
    #[serde(default = "default_issuer_kind")]
    pub kind: String,
}

fn default_issuer_kind() -> String {
    "Issuer".to_owned()
}

/// Where the gateway is reached inside the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRef {
    /// The gateway's Service name, in the MonitoringCluster's namespace.
    #[serde(default = "default_gateway_service")]
    pub service_name: String,
    /// The port of the gateway's query endpoint (Grafana's datasource).
    #[serde(default = "default_gateway_query_port")]
    pub query_port: u16,
}

impl Default for GatewayRef {
    fn default() -> Self {
        Self { service_name: default_gateway_service(), query_port: default_gateway_query_port() }
    }
}

fn default_gateway_service() -> String {
    "opni-metrics-gateway".to_owned()
}

fn default_gateway_query_port() -> u16 {
    8086
}

/// What the controller observed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringClusterStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Whether every workload is ready.
    #[serde(default)]
    pub workloads_ready: bool,
    /// Readiness of each workload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<WorkloadStatus>,
    /// Conditions: `Reconciled`, `Ready`, `CertManagerAvailable`, `GrafanaOperatorAvailable`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The Cortex version deployed (the image tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Digest of the rendered Cortex config (stamped on the pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<String>,
}

/// Readiness of one workload.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    /// The Cortex target.
    pub name: String,
    /// `Deployment` or `StatefulSet`.
    pub kind: String,
    /// Replicas wanted.
    pub desired: u32,
    /// Replicas ready.
    pub ready: u32,
    /// Why it is not ready, when it is not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}
