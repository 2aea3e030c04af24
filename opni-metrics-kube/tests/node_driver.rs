//! The Kubernetes node driver against the in-process fake API server (real kube client).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic with the failure

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use opni_metrics_core::driver::{DriverError, NodeDriver};
use opni_metrics_core::node::{ConditionKind, ConditionStatus, NodeConfig};
use opni_metrics_core::spec::MetricsCapabilitySpec;
use opni_metrics_kube::node::render::prometheus_resource;
use opni_metrics_kube::node::{KubeNodeDriver, NodeSettings, Owner, Strategy};
use opni_metrics_tests::kube_fake::{FakeApiServer, ResourceType};
use serde_json::json;

const NS: &str = "opni-agent";
const T: Duration = Duration::from_secs(20);

fn prometheus_agent_type() -> ResourceType {
    ResourceType {
        group: "monitoring.coreos.com".into(),
        version: "v1alpha1".into(),
        kind: "PrometheusAgent".into(),
        plural: "prometheusagents".into(),
        namespaced: true,
        status_subresource: true,
    }
}

fn settings(strategy: Strategy) -> NodeSettings {
    NodeSettings {
        namespace: NS.into(),
        name: "opni-metrics-agent".into(),
        owner: Some(Owner {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "opni-metrics-agent".into(),
            uid: "deployment-uid".into(),
        }),
        remote_write_url: "http://opni-metrics-agent.opni-agent.svc:8080/api/v1/write".into(),
        strategy,
    }
}

fn config(interval_secs: u64) -> NodeConfig {
    let mut spec = MetricsCapabilitySpec::default();
    spec.prometheus.scrape_interval = opni_metrics_core::duration::PromDuration::from_secs(interval_secs);
    NodeConfig::enabled(spec)
}

fn agent(fake: &FakeApiServer, name: &str) -> Option<serde_json::Value> {
    fake.get("monitoring.coreos.com", "prometheusagents", Some(NS), name)
}

#[tokio::test]
async fn enable_update_disable_lifecycle() {
    let fake = FakeApiServer::new();
    fake.register(prometheus_agent_type());
    let driver = KubeNodeDriver::new(fake.client("agent"), settings(Strategy::PrometheusAgent));

    driver.apply(&config(30)).await.unwrap();
    let cr = agent(&fake, "opni-metrics-agent-prometheus").expect("PrometheusAgent created");
    assert_eq!(cr["spec"]["scrapeInterval"], "30s");
    assert_eq!(cr["spec"]["remoteWrite"][0]["url"], "http://opni-metrics-agent.opni-agent.svc:8080/api/v1/write");
    assert_eq!(cr["spec"]["remoteWrite"][0]["queueConfig"]["retryOnRateLimit"], true);
    // the measured defaults (docs/operations.md, "Tune the remote-write path")
    let q = &cr["spec"]["remoteWrite"][0]["queueConfig"];
    assert_eq!((&q["maxSamplesPerSend"], &q["capacity"], &q["maxShards"]), (&2000.into(), &10_000.into(), &50.into()));
    assert_eq!(cr["spec"]["serviceAccountName"], "opni-metrics-agent-prometheus");
    assert_eq!(cr["metadata"]["ownerReferences"][0]["uid"], "deployment-uid");
    assert!(fake.get("", "serviceaccounts", Some(NS), "opni-metrics-agent-prometheus").is_some());
    assert!(fake.get("", "secrets", Some(NS), "opni-metrics-agent-prometheus-scrape").is_some());
    let role = "opni-metrics-agent-prometheus-opni-agent";
    assert!(fake.get("rbac.authorization.k8s.io", "clusterroles", None, role).is_some());
    let binding = fake.get("rbac.authorization.k8s.io", "clusterrolebindings", None, role).unwrap();
    assert_eq!(binding["subjects"][0]["namespace"], NS);

    // a spec change updates the same object in place
    let uid = cr["metadata"]["uid"].clone();
    driver.apply(&config(15)).await.unwrap();
    let cr = agent(&fake, "opni-metrics-agent-prometheus").unwrap();
    assert_eq!(cr["metadata"]["uid"], uid);
    assert_eq!(cr["spec"]["scrapeInterval"], "15s");
    assert_eq!(cr["metadata"]["generation"], 2);

    // disabled: everything goes, the cluster-scoped RBAC included
    let status = driver.apply(&NodeConfig { enabled: false, ..config(15) }).await.unwrap();
    assert_eq!(status.get(ConditionKind::PrometheusReady).unwrap().reason, "Disabled");
    assert!(agent(&fake, "opni-metrics-agent-prometheus").is_none());
    assert!(fake.get("", "serviceaccounts", Some(NS), "opni-metrics-agent-prometheus").is_none());
    assert!(fake.get("", "secrets", Some(NS), "opni-metrics-agent-prometheus-scrape").is_none());
    assert!(fake.get("rbac.authorization.k8s.io", "clusterroles", None, role).is_none());
    assert!(fake.get("rbac.authorization.k8s.io", "clusterrolebindings", None, role).is_none());
}

#[tokio::test]
async fn objects_it_does_not_own_are_never_touched() {
    let fake = FakeApiServer::new();
    fake.register(prometheus_agent_type());
    let client = fake.client("kube-prometheus-stack");
    let api: Api<DynamicObject> = Api::namespaced_with(client, NS, &prometheus_resource(Strategy::PrometheusAgent));
    // an existing Prometheus with the name ours would have, not labelled as ours
    let foreign: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "monitoring.coreos.com/v1alpha1", "kind": "PrometheusAgent",
        "metadata": { "name": "opni-metrics-agent-prometheus", "namespace": NS },
        "spec": { "scrapeInterval": "1m" },
    }))
    .unwrap();
    api.create(&PostParams::default(), &foreign).await.unwrap();
    let other: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "monitoring.coreos.com/v1alpha1", "kind": "PrometheusAgent",
        "metadata": { "name": "kps", "namespace": NS }, "spec": { "scrapeInterval": "1m" },
    }))
    .unwrap();
    api.create(&PostParams::default(), &other).await.unwrap();

    let driver = KubeNodeDriver::new(fake.client("agent"), settings(Strategy::PrometheusAgent));
    driver.apply(&NodeConfig { enabled: false, ..config(30) }).await.unwrap();
    driver.remove().await.unwrap();
    assert!(agent(&fake, "opni-metrics-agent-prometheus").is_some(), "an unlabelled object was deleted");
    assert_eq!(agent(&fake, "kps").unwrap()["spec"]["scrapeInterval"], "1m");
}

#[tokio::test]
async fn missing_operator_is_a_clear_error_and_heals_once_installed() {
    let fake = FakeApiServer::new();
    let driver = KubeNodeDriver::new(fake.client("agent"), settings(Strategy::PrometheusAgent));
    let err = driver.apply(&config(30)).await.unwrap_err();
    match &err {
        DriverError::MissingPrerequisite { what } => {
            assert!(what.contains("PrometheusAgent"), "{what}");
            assert!(what.contains("prometheus-operator"), "{what}");
        }
        other => panic!("expected a missing prerequisite, got {other:?}"),
    }
    // the operator is installed later: the next apply (the sync loop retries) succeeds
    fake.register(prometheus_agent_type());
    driver.apply(&config(30)).await.unwrap();
    assert!(agent(&fake, "opni-metrics-agent-prometheus").is_some());
}

#[tokio::test]
async fn legacy_strategy_writes_a_prometheus_in_agent_mode_and_switching_removes_the_other() {
    let fake = FakeApiServer::new();
    fake.register(prometheus_agent_type());
    fake.register(ResourceType {
        group: "monitoring.coreos.com".into(),
        version: "v1".into(),
        kind: "Prometheus".into(),
        plural: "prometheuses".into(),
        namespaced: true,
        status_subresource: true,
    });
    let modern = KubeNodeDriver::new(fake.client("agent"), settings(Strategy::PrometheusAgent));
    modern.apply(&config(30)).await.unwrap();
    let legacy = KubeNodeDriver::new(fake.client("agent"), settings(Strategy::Legacy));
    legacy.apply(&config(30)).await.unwrap();
    let p = fake.get("monitoring.coreos.com", "prometheuses", Some(NS), "opni-metrics-agent-prometheus").unwrap();
    assert_eq!(p["spec"]["enableFeatures"], json!(["agent"]));
    assert!(agent(&fake, "opni-metrics-agent-prometheus").is_none(), "the PrometheusAgent was left behind");
}

#[tokio::test]
async fn readiness_comes_from_the_operator_status() {
    let fake = FakeApiServer::new();
    fake.register(prometheus_agent_type());
    let driver = KubeNodeDriver::new(fake.client("agent"), settings(Strategy::PrometheusAgent));
    let s = driver.apply(&config(30)).await.unwrap();
    assert_eq!(s.get(ConditionKind::PrometheusReady).unwrap().status, ConditionStatus::Unknown);
    // prometheus-operator reports
    let api: Api<DynamicObject> =
        Api::namespaced_with(fake.client("prometheus-operator"), NS, &prometheus_resource(Strategy::PrometheusAgent));
    // (as the real operator writes it: the CRD schema requires each condition's transition time)
    let at = "2026-12-05T00:00:00Z";
    let status = json!({ "status": { "availableReplicas": 1, "conditions": [
        { "type": "Available", "status": "True", "reason": "", "message": "", "lastTransitionTime": at },
        { "type": "Reconciled", "status": "True", "lastTransitionTime": at } ] } });
    api.patch_status("opni-metrics-agent-prometheus", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    let s = driver.status().await.unwrap();
    assert_eq!(s.get(ConditionKind::PrometheusReady).unwrap().status, ConditionStatus::True);
}

#[tokio::test]
async fn guard_recreates_deleted_objects_and_reasserts_edited_fields() {
    let fake = FakeApiServer::new();
    fake.register(prometheus_agent_type());
    let driver = Arc::new(KubeNodeDriver::new(fake.client("agent"), settings(Strategy::PrometheusAgent)));
    driver.apply(&config(30)).await.unwrap();
    let guard = tokio::spawn(Arc::clone(&driver).guard());

    let api: Api<DynamicObject> =
        Api::namespaced_with(fake.client("kubectl"), NS, &prometheus_resource(Strategy::PrometheusAgent));
    // edited by hand: the guard takes the field back
    let edit = json!({ "spec": { "scrapeInterval": "5m" } });
    api.patch("opni-metrics-agent-prometheus", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    fake.wait_until(
        |s| {
            s.get("monitoring.coreos.com", "prometheusagents", Some(NS), "opni-metrics-agent-prometheus")
                .is_some_and(|o| o["spec"]["scrapeInterval"] == "30s")
        },
        T,
    )
    .await;
    // deleted by hand: the guard recreates it
    api.delete("opni-metrics-agent-prometheus", &Default::default()).await.unwrap();
    fake.wait_until(
        |s| s.get("monitoring.coreos.com", "prometheusagents", Some(NS), "opni-metrics-agent-prometheus").is_some(),
        T,
    )
    .await;
    guard.abort();
}
