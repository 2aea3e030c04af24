//! Rule sync on Kubernetes: `PrometheusRule` objects created, edited and deleted in the fake
//! API server appear, change and disappear at the Cortex-semantics test upstream's ruler, under
//! the agent certificate's tenant, in the synced namespace; a missing CRD is a reported
//! condition, not a crash; a user-loaded group in another namespace survives every sync; two
//! objects with a group of the same name never overwrite each other.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use opni_metrics_agent::{Agent, AgentSettings, IdentitySource};
use opni_metrics_core::registry::Cluster;
use opni_metrics_core::rules::SYNCED_NAMESPACE;
use opni_metrics_core::store::MemoryStore;
use opni_metrics_core::{CapabilityName, ClusterId};
use opni_metrics_gateway::state::now;
use opni_metrics_gateway::{Gateway, GatewaySettings};
use opni_metrics_tests::cortex::CortexUpstream;
use opni_metrics_tests::http::eventually;
use opni_metrics_tests::kube_fake::{FakeApiServer, ResourceType};
use opni_metrics_tests::pki::Pki;
use opni_metrics_transport::tls::TlsFiles;
use serde_json::json;

const T: Duration = Duration::from_secs(30);
const TENANT: &str = "k8s-cluster";

fn rule_type() -> ResourceType {
    ResourceType::namespaced("monitoring.coreos.com", "v1", "PrometheusRule", "prometheusrules")
}

fn rule(ns: &str, name: &str, expr: &str) -> DynamicObject {
    let ar = ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PrometheusRule"),
        "prometheusrules",
    );
    let mut o = DynamicObject::new(name, &ar).within(ns);
    o.data = json!({"spec": {"groups": [
        {"name": "shared-name", "rules": [{"record": "job:x:sum", "expr": expr}]},
    ]}});
    o
}

fn synced(cortex: &CortexUpstream) -> BTreeMap<String, String> {
    cortex.rules(TENANT).get(SYNCED_NAMESPACE).cloned().unwrap_or_default()
}

async fn until(cortex: &CortexUpstream, what: &str, check: impl Fn(&BTreeMap<String, String>) -> bool) {
    eventually(T, what, || async {
        let s = synced(cortex);
        if check(&s) { Ok(()) } else { Err(format!("{s:?}")) }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_rules_follow_the_api_server() {
    let fake = FakeApiServer::new();
    let cortex = CortexUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "rules");
    let files = |c: &opni_metrics_tests::pki::CertFiles| TlsFiles {
        cert: c.cert.clone(),
        key: c.key.clone(),
        ca: c.ca.clone(),
    };
    let mut s = GatewaySettings::default();
    s.data_dir = dir.path().join("gateway");
    s.listen = opni_metrics_gateway::Listen::ephemeral_loopback();
    s.grpc_tls = Some(files(&pki.gateway("gw")));
    s.upstream.url = format!("{}/api/v1/push", cortex.url()).parse().unwrap();
    let mut gw = Gateway::builder(s).store(Arc::new(MemoryStore::default())).build().await.unwrap();
    let addrs = gw.bind_and_serve().await.unwrap();
    let id = ClusterId::new(TENANT).unwrap();
    let mut c = Cluster::new(id.clone());
    c.install(CapabilityName::metrics(), now()).unwrap();
    gw.state().create_cluster(&c).await.unwrap();
    // a user's group in their own namespace
    cortex_load(&cortex, "team", "name: mine\nrules:\n- record: my:up\n  expr: up\n").await;

    let mut a = AgentSettings::default();
    a.listen = "127.0.0.1:0".parse().unwrap();
    a.gateway_address = addrs.grpc.to_string();
    a.identity = IdentitySource::Files(files(&pki.agent("agent", TENANT)));
    a.data_dir = dir.path().join("agent");
    a.rules.poll_interval = Duration::from_millis(200);
    let mut agent = Agent::builder(a).rule_discovery_client(fake.client("agent")).build().await.unwrap();
    agent.bind_and_serve().await.unwrap();

    // no PrometheusRule CRD: a condition at the gateway, nothing synced, nothing crashed
    let state = gw.state().clone();
    let status = eventually(T, "the missing CRD is reported", || async {
        match state.rule_status(&id).await.map_err(|e| e.to_string())? {
            Some(s) if s.problems.iter().any(|p| p.message.contains("CRD")) => Ok(s),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    assert_eq!(status.synced, 0);

    // the CRD appears; objects in two namespaces share a group name
    fake.register(rule_type());
    let api = |ns: &str| {
        Api::<DynamicObject>::namespaced_with(
            fake.client("test"),
            ns,
            &ApiResource::from_gvk_with_plural(
                &kube::api::GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PrometheusRule"),
                "prometheusrules",
            ),
        )
    };
    api("monitoring").create(&PostParams::default(), &rule("monitoring", "node", "sum(up)")).await.unwrap();
    api("apps").create(&PostParams::default(), &rule("apps", "node", "sum(up)")).await.unwrap();
    agent.reload_rules();
    until(&cortex, "both objects synced", |s| {
        s.contains_key("k8s:monitoring:node:shared-name") && s.contains_key("k8s:apps:node:shared-name")
    })
    .await;
    // the gateway records the outcome after its writes to the ruler
    eventually(T, "the status follows: no problem left", || async {
        match state.rule_status(&id).await.map_err(|e| e.to_string())? {
            Some(s) if s.problems.is_empty() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();

    // edited
    let patch = json!({"spec": {"groups": [{"name": "shared-name", "rules": [{"record": "job:x:sum", "expr": "sum by (job) (up)"}]}]}});
    api("apps").patch("node", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    until(&cortex, "the edit arrives", |s| s.get("k8s:apps:node:shared-name").is_some_and(|y| y.contains("by (job)")))
        .await;
    assert!(!synced(&cortex)["k8s:monitoring:node:shared-name"].contains("by (job)"), "the other object is untouched");

    // an invalid object is reported and skipped; the others stay
    let mut bad = rule("apps", "broken", "sum(up");
    bad.data["spec"]["groups"][0]["name"] = json!("broken");
    api("apps").create(&PostParams::default(), &bad).await.unwrap();
    eventually(T, "the invalid object is reported", || async {
        match state.rule_status(&id).await.map_err(|e| e.to_string())? {
            Some(s) if s.invalid == 1 && s.synced == 2 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();

    // deleted
    api("monitoring").delete("node", &DeleteParams::default()).await.unwrap();
    until(&cortex, "the deleted object's group disappears", |s| {
        s.len() == 1 && s.contains_key("k8s:apps:node:shared-name")
    })
    .await;
    assert!(cortex.rules(TENANT)["team"].contains_key("mine"), "a user-loaded group survives every sync");
    assert!(
        cortex.seen_at("/api/v1/rules").iter().all(|r| r.org_ids == [TENANT.to_owned()]),
        "every ruler call carried the certificate's tenant only"
    );

    agent.shutdown().await;
    gw.shutdown().await;
}

/// Loads a group as a user would (straight at the ruler API, under the tenant).
async fn cortex_load(cortex: &CortexUpstream, ns: &str, yaml: &str) {
    let r = opni_metrics_tests::http::send(
        http::Method::POST,
        &format!("{}/api/v1/rules/{ns}", cortex.url()),
        &[("X-Scope-OrgID", TENANT), ("content-type", "application/yaml")],
        yaml.to_owned(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 202);
}
