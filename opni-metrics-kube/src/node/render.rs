//! The objects the node driver wants for a [`NodeConfig`]: a pure function, golden-tested.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ApiResource;
use opni_metrics_core::node::NodeConfig;
use opni_metrics_core::spec::{ResourceList, ScrapeJob};
use serde_json::{Value, json};

use crate::crd::prometheus::{CommonPrometheusFields, Prometheus, PrometheusAgent, QueueConfig, RemoteWriteSpec};
use crate::crd::{LabelSelector, LabelSelectorRequirement, SecretKeyRef};
use crate::error::Error;
use crate::{FIELD_MANAGER, MANAGED_BY_LABEL};

/// Label naming the agent an object belongs to (value: the driver's base name).
pub const AGENT_LABEL: &str = "metrics.opni.io/agent";
/// Key of the static scrape configs in the scrape-config Secret.
pub const SCRAPE_CONFIG_KEY: &str = "scrape-configs.yaml";

/// Which prometheus-operator resource runs Prometheus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Strategy {
    /// `PrometheusAgent` (`monitoring.coreos.com/v1alpha1`, prometheus-operator ≥ 0.64).
    #[default]
    PrometheusAgent,
    /// A `Prometheus` (`monitoring.coreos.com/v1`) with the `agent` feature, for older operators.
    Legacy,
}

/// The controller reference every namespaced object gets: the agent's Deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// `apps/v1`.
    pub api_version: String,
    /// `Deployment`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: String,
}

/// Fixed facts of one agent's deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    /// The agent's namespace; every namespaced object goes there.
    pub namespace: String,
    /// Base name of the objects (e.g. `opni-metrics-agent`).
    pub name: String,
    /// The agent Deployment, owner of the namespaced objects.
    pub owner: Option<Owner>,
    /// The agent's remote-write endpoint (its Service), e.g.
    /// `http://opni-metrics-agent.opni.svc:8080/api/v1/write`.
    pub remote_write_url: String,
    /// Which resource runs Prometheus.
    pub strategy: Strategy,
}

/// One object the node driver wants.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeObject {
    /// Its resource type.
    pub resource: ApiResource,
    /// Whether it lives in the agent namespace (else cluster-scoped).
    pub namespaced: bool,
    /// The full object.
    pub object: Value,
}

impl NodeObject {
    /// The object's name.
    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }
}

/// The resource type of `strategy`'s custom resource.
pub fn prometheus_resource(strategy: Strategy) -> ApiResource {
    match strategy {
        Strategy::PrometheusAgent => ApiResource::erase::<PrometheusAgent>(&()),
        Strategy::Legacy => ApiResource::erase::<Prometheus>(&()),
    }
}

pub(crate) fn service_account() -> ApiResource {
    ApiResource::erase::<k8s_openapi::api::core::v1::ServiceAccount>(&())
}
pub(crate) fn secret() -> ApiResource {
    ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&())
}
pub(crate) fn cluster_role() -> ApiResource {
    ApiResource::erase::<k8s_openapi::api::rbac::v1::ClusterRole>(&())
}
pub(crate) fn cluster_role_binding() -> ApiResource {
    ApiResource::erase::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>(&())
}

/// Names of the objects of `s`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The PrometheusAgent/Prometheus and its ServiceAccount.
    pub prometheus: String,
    /// The scrape-config Secret.
    pub scrape_secret: String,
    /// The ClusterRole and ClusterRoleBinding (cluster-scoped, so the namespace is in the name).
    pub cluster_role: String,
}

impl NodeSettings {
    /// The names of this agent's objects.
    pub fn names(&self) -> Names {
        Names {
            prometheus: format!("{}-prometheus", self.name),
            scrape_secret: format!("{}-prometheus-scrape", self.name),
            cluster_role: format!("{}-prometheus-{}", self.name, self.namespace),
        }
    }

    /// The label selector matching every object of this agent.
    pub fn selector(&self) -> String {
        format!("{MANAGED_BY_LABEL}={FIELD_MANAGER},{AGENT_LABEL}={}", self.name)
    }

    fn metadata(&self, name: &str, namespaced: bool) -> Value {
        let labels = json!({
            MANAGED_BY_LABEL: FIELD_MANAGER,
            AGENT_LABEL: self.name,
            "app.kubernetes.io/name": "prometheus",
            "app.kubernetes.io/part-of": "opni-metrics",
        });
        let mut m = json!({ "name": name, "labels": labels });
        if namespaced {
            m["namespace"] = json!(self.namespace);
            // Cluster-scoped objects cannot be owned by a namespaced one; the driver deletes them.
            if let Some(o) = &self.owner {
                m["ownerReferences"] = json!([{
                    "apiVersion": o.api_version, "kind": o.kind, "name": o.name, "uid": o.uid,
                    "controller": true, "blockOwnerDeletion": true,
                }]);
            }
        }
        m
    }
}

fn quantities(l: &ResourceList) -> Option<BTreeMap<String, Quantity>> {
    let mut m = BTreeMap::new();
    if let Some(c) = &l.cpu {
        m.insert("cpu".to_owned(), Quantity(c.clone()));
    }
    if let Some(c) = &l.memory {
        m.insert("memory".to_owned(), Quantity(c.clone()));
    }
    (!m.is_empty()).then_some(m)
}

fn scrape_configs(jobs: &[ScrapeJob]) -> Value {
    let mut jobs: Vec<&ScrapeJob> = jobs.iter().collect();
    jobs.sort_by(|a, b| a.name.cmp(&b.name));
    Value::Array(
        jobs.into_iter()
            .map(|j| {
                let mut targets = j.targets.clone();
                targets.sort();
                let mut v = json!({ "job_name": j.name, "static_configs": [{ "targets": targets }] });
                if let Some(p) = &j.metrics_path {
                    v["metrics_path"] = json!(p);
                }
                if let Some(i) = j.scrape_interval {
                    v["scrape_interval"] = json!(i.to_string());
                }
                v
            })
            .collect(),
    )
}

fn to_value(context: &str, v: &impl serde::Serialize) -> Result<Value, Error> {
    serde_json::to_value(v).map_err(|source| Error::Serde { context: context.to_owned(), source })
}

/// The objects an enabled `config` needs, in apply order (ServiceAccount, RBAC, scrape Secret,
/// then the custom resource). A disabled config needs none.
///
/// # Errors
/// [`Error::Serde`] if an object cannot be encoded (not expected), [`Error::Invalid`] if the
/// scrape configs cannot be written as YAML.
pub fn node_objects(config: &NodeConfig, s: &NodeSettings) -> Result<Vec<NodeObject>, Error> {
    if !config.enabled {
        return Ok(Vec::new());
    }
    let p = &config.spec.prometheus;
    let n = s.names();
    let sa = json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": s.metadata(&n.prometheus, true),
    });
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": s.metadata(&n.cluster_role, false),
        "rules": [
            { "apiGroups": [""], "resources": ["nodes", "nodes/metrics", "services", "endpoints", "pods"],
              "verbs": ["get", "list", "watch"] },
            { "apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"] },
            { "apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": ["get", "list", "watch"] },
            { "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"] },
            { "nonResourceURLs": ["/metrics", "/metrics/cadvisor"], "verbs": ["get"] },
        ],
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": s.metadata(&n.cluster_role, false),
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": n.cluster_role },
        "subjects": [{ "kind": "ServiceAccount", "name": n.prometheus, "namespace": s.namespace }],
    });
    let scrape_yaml = serde_saphyr::to_string(&scrape_configs(&p.scrape_jobs)).map_err(|e| Error::Invalid {
        field: "spec.prometheus.scrapeJobs".into(),
        reason: format!("cannot be written as YAML: {e}"),
    })?;
    let scrape = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": s.metadata(&n.scrape_secret, true),
        "stringData": { SCRAPE_CONFIG_KEY: scrape_yaml },
    });

    // prometheus-operator: an absent selector selects nothing, `{}` everything; ours: empty = all.
    let mut ns_selector = LabelSelector::from(&p.monitor_namespace_selector);
    if !p.namespaces.is_empty() {
        let mut values = p.namespaces.clone();
        values.sort();
        ns_selector.match_expressions.push(LabelSelectorRequirement {
            key: "kubernetes.io/metadata.name".into(),
            operator: "In".into(),
            values,
        });
    }
    let q = &p.queue;
    let common = CommonPrometheusFields {
        image: p.image.clone(),
        replicas: Some(1),
        service_account_name: Some(n.prometheus.clone()),
        scrape_interval: Some(p.scrape_interval.to_string()),
        service_monitor_selector: Some(LabelSelector::from(&p.service_monitor_selector)),
        service_monitor_namespace_selector: Some(ns_selector.clone()),
        pod_monitor_selector: Some(LabelSelector::from(&p.pod_monitor_selector)),
        pod_monitor_namespace_selector: Some(ns_selector),
        remote_write: vec![RemoteWriteSpec {
            url: s.remote_write_url.clone(),
            name: Some("opni-metrics".into()),
            remote_timeout: Some("30s".into()),
            queue_config: Some(QueueConfig {
                capacity: saturate(q.capacity),
                min_shards: saturate(q.min_shards),
                max_shards: saturate(q.max_shards),
                max_samples_per_send: saturate(q.max_samples_per_send),
                batch_send_deadline: q.batch_send_deadline.to_string(),
                min_backoff: q.min_backoff.to_string(),
                max_backoff: q.max_backoff.to_string(),
                // the gateway answers 429 with Retry-After under rate limits: always retry
                retry_on_rate_limit: true,
            }),
        }],
        additional_scrape_configs: Some(SecretKeyRef { name: n.scrape_secret.clone(), key: SCRAPE_CONFIG_KEY.into() }),
        resources: {
            let r = ResourceRequirements {
                requests: quantities(&p.resources.requests),
                limits: quantities(&p.resources.limits),
                ..Default::default()
            };
            (r.requests.is_some() || r.limits.is_some()).then_some(r)
        },
        pod_metadata: None,
        enable_features: match s.strategy {
            Strategy::PrometheusAgent => Vec::new(),
            Strategy::Legacy => vec!["agent".into()],
        },
    };
    let res = prometheus_resource(s.strategy);
    let cr = json!({
        "apiVersion": res.api_version, "kind": res.kind,
        "metadata": s.metadata(&n.prometheus, true),
        "spec": to_value("prometheus spec", &common)?,
    });
    Ok(vec![
        NodeObject { resource: service_account(), namespaced: true, object: sa },
        NodeObject { resource: cluster_role(), namespaced: false, object: role },
        NodeObject { resource: cluster_role_binding(), namespaced: false, object: binding },
        NodeObject { resource: secret(), namespaced: true, object: scrape },
        NodeObject { resource: res, namespaced: true, object: cr },
    ])
}

fn saturate(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}
