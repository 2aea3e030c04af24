//! Typed subsets of grafana-operator v5's `Grafana` and `GrafanaDatasource`
//! (`grafana.integreatly.org/v1beta1`).

use std::collections::BTreeMap;

use kube::CustomResource;
use serde::{Deserialize, Serialize};

use super::{Condition, LabelSelector};

/// `Grafana` spec subset.
#[derive(CustomResource, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[kube(
    group = "grafana.integreatly.org",
    version = "v1beta1",
    kind = "Grafana",
    plural = "grafanas",
    namespaced,
    status = "GrafanaStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct GrafanaSpec {
    /// Grafana version (image tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `grafana.ini`, section → key → value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, BTreeMap<String, String>>,
    /// An Ingress for the public hostname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<serde_json::Value>,
}

/// What grafana-operator reports.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrafanaStatus {
    /// `complete` once Grafana runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_status: Option<String>,
    /// Grafana's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// `GrafanaDatasource` spec subset.
#[derive(CustomResource, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[kube(
    group = "grafana.integreatly.org",
    version = "v1beta1",
    kind = "GrafanaDatasource",
    plural = "grafanadatasources",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct GrafanaDatasourceSpec {
    /// Which Grafana instances get the datasource.
    pub instance_selector: LabelSelector,
    /// The datasource.
    pub datasource: Datasource,
}

/// A Grafana datasource definition.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Datasource {
    /// Display name.
    pub name: String,
    /// Plugin type (`prometheus`).
    #[serde(rename = "type")]
    pub type_: String,
    /// `proxy` (Grafana's backend calls the URL).
    pub access: String,
    /// The URL.
    pub url: String,
    /// The default datasource.
    #[serde(default)]
    pub is_default: bool,
    /// Plugin settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_data: Option<serde_json::Value>,
}
