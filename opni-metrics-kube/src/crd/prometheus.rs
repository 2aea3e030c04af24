//! Typed subsets of prometheus-operator's `PrometheusAgent` (`monitoring.coreos.com/v1alpha1`)
//! and `Prometheus` (`monitoring.coreos.com/v1`): only the fields the node driver sets or reads.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use super::{Condition, LabelSelector, SecretKeyRef};

/// The fields `PrometheusAgent` and `Prometheus` share that we use.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommonPrometheusFields {
    /// Container image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Replicas (one per downstream cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// The ServiceAccount Prometheus runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Default scrape interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_interval: Option<String>,
    /// ServiceMonitors to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_monitor_selector: Option<LabelSelector>,
    /// Namespaces ServiceMonitors are taken from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_monitor_namespace_selector: Option<LabelSelector>,
    /// PodMonitors to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_monitor_selector: Option<LabelSelector>,
    /// Namespaces PodMonitors are taken from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_monitor_namespace_selector: Option<LabelSelector>,
    /// Remote-write endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_write: Vec<RemoteWriteSpec>,
    /// Static scrape configs from a Secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_scrape_configs: Option<SecretKeyRef>,
    /// Resource requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Labels and annotations of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_metadata: Option<PodMetadata>,
    /// Prometheus feature flags (`--enable-feature`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enable_features: Vec<String>,
}

/// Pod labels and annotations.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMetadata {
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// One remote-write endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteWriteSpec {
    /// The endpoint.
    pub url: String,
    /// Name of the queue in metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Timeout of one request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_timeout: Option<String>,
    /// Queue settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_config: Option<QueueConfig>,
}

/// `queueConfig` of a remote-write endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueConfig {
    /// Samples buffered per shard.
    pub capacity: i32,
    /// Minimum shards.
    pub min_shards: i32,
    /// Maximum shards.
    pub max_shards: i32,
    /// Samples per request.
    pub max_samples_per_send: i32,
    /// Longest a sample waits in a shard.
    pub batch_send_deadline: String,
    /// Initial retry back-off.
    pub min_backoff: String,
    /// Largest retry back-off.
    pub max_backoff: String,
    /// Retry on HTTP 429.
    pub retry_on_rate_limit: bool,
}

/// What prometheus-operator reports.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusStatus {
    /// Running pods.
    #[serde(default)]
    pub replicas: i32,
    /// Available pods.
    #[serde(default)]
    pub available_replicas: i32,
    /// Unavailable pods.
    #[serde(default)]
    pub unavailable_replicas: i32,
    /// `Available` and `Reconciled`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// `PrometheusAgent` spec subset.
#[derive(CustomResource, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[kube(
    group = "monitoring.coreos.com",
    version = "v1alpha1",
    kind = "PrometheusAgent",
    plural = "prometheusagents",
    namespaced,
    status = "PrometheusStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusAgentSpec {
    /// The shared fields.
    #[serde(flatten)]
    pub common: CommonPrometheusFields,
}

/// `Prometheus` spec subset (the legacy strategy runs it in agent mode).
#[derive(CustomResource, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[kube(
    group = "monitoring.coreos.com",
    version = "v1",
    kind = "Prometheus",
    plural = "prometheuses",
    namespaced,
    status = "PrometheusStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSpec {
    /// The shared fields.
    #[serde(flatten)]
    pub common: CommonPrometheusFields,
}
