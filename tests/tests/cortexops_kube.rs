//! CortexOps with the Kubernetes cluster driver against the in-process fake API server: the
//! gateway's `Install` writes the `MonitoringCluster`, its controller (run under the Lease)
//! renders the Cortex workloads, their readiness reaches `Status` and the upstream state; a
//! hand edit of the resource is re-asserted by the next `Install`; `Uninstall` removes it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use opni_metrics_core::node::UpstreamState;
use opni_metrics_core::store::MemoryStore;
use opni_metrics_gateway::kubernetes::KubernetesSettings;
use opni_metrics_gateway::{Gateway, GatewaySettings};
use opni_metrics_kube::crd::MonitoringCluster;
use opni_metrics_kube::lease::LeaseSettings;
use opni_metrics_proto::cortexops::v1 as pb;
use opni_metrics_proto::cortexops::v1::cortex_ops_client::CortexOpsClient;
use opni_metrics_tests::kube_fake::{FakeApiServer, ResourceType};
use serde_json::json;

const NS: &str = "opni-system";
const T: Duration = Duration::from_secs(30);

fn register(fake: &FakeApiServer) {
    fake.register(ResourceType::monitoring_cluster());
    for t in ResourceType::cert_manager() {
        fake.register(t);
    }
}

fn mc(fake: &FakeApiServer) -> Option<serde_json::Value> {
    fake.get("metrics.opni.io", "monitoringclusters", Some(NS), "opni")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_renders_cortex_readiness_reaches_status_uninstall_removes_it() {
    let fake = FakeApiServer::new();
    register(&fake);
    let dir = tempfile::tempdir().unwrap();
    let mut s = GatewaySettings::default();
    s.data_dir = dir.path().to_owned();
    s.listen = opni_metrics_gateway::Listen::ephemeral_loopback();
    s.upstream.status_interval = Duration::from_millis(50);
    let mut lease = LeaseSettings::new(NS, "opni-metrics-gateway", "gateway-0");
    lease.lease_duration = Duration::from_secs(2);
    lease.renew_deadline = Duration::from_secs(1);
    lease.retry_period = Duration::from_millis(200);
    let mut k = KubernetesSettings::new(fake.client("gateway"), NS);
    k.lease = Some(lease);
    let mut gw = Gateway::builder(s).store(Arc::new(MemoryStore::default())).kubernetes(k).build().await.unwrap();
    let addrs = gw.bind_and_serve().await.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", addrs.management))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let token: tonic::metadata::MetadataValue<_> = format!("Bearer {}", gw.admin_token().unwrap()).parse().unwrap();
    let mut client = CortexOpsClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", token.clone());
        Ok(r)
    });

    // nothing installed yet
    let st = client.status(()).await.unwrap().into_inner();
    assert_eq!(st.install_state, i32::from(pb::InstallState::NotInstalled), "{st:?}");

    // install: the MonitoringCluster is written, the controller renders the workload
    client.install(()).await.unwrap();
    let m = mc(&fake).expect("Install wrote the MonitoringCluster");
    assert_eq!(m["spec"]["cortex"]["enabled"], true);
    fake.wait_until(|s| s.get("apps", "statefulsets", Some(NS), "opni-cortex-all").is_some(), T).await;

    // readiness of the workload reaches CortexOps.Status and the upstream state
    let sts: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(fake.client("kubelet"), NS);
    let ready = json!({ "status": { "replicas": 1, "readyReplicas": 1 } });
    sts.patch_status("opni-cortex-all", &PatchParams::default(), &Patch::Merge(&ready)).await.unwrap();
    // the controller reports it on the MonitoringCluster, which Status reads
    fake.wait_until(
        |s| {
            s.get("metrics.opni.io", "monitoringclusters", Some(NS), "opni")
                .is_some_and(|m| m["status"]["workloadsReady"] == true)
        },
        T,
    )
    .await;
    let s = client.status(()).await.unwrap().into_inner();
    assert!(s.app_state == i32::from(pb::ApplicationState::Running) && s.workloads.iter().all(|w| w.ready), "{s:?}");
    assert_eq!(s.install_state, i32::from(pb::InstallState::Installed));
    assert!(!s.workloads.is_empty());
    let st = gw.state();
    opni_metrics_tests::wait::store_until(st.store().as_ref(), T, "the upstream state follows", || async {
        st.upstream().await.unwrap() == UpstreamState::Installed
    })
    .await
    .unwrap();

    // edited by hand (disabled: the controller removes the workloads): reported by Status,
    // re-asserted by the next Install (the controller renders them again)
    let mcs: Api<MonitoringCluster> = Api::namespaced(fake.client("kubectl"), NS);
    mcs.patch("opni", &PatchParams::default(), &Patch::Merge(&json!({ "spec": { "cortex": { "enabled": false } } })))
        .await
        .unwrap();
    let s = client.status(()).await.unwrap().into_inner();
    assert_eq!(s.install_state, i32::from(pb::InstallState::NotInstalled));
    client.install(()).await.unwrap();
    assert_eq!(mc(&fake).unwrap()["spec"]["cortex"]["enabled"], true);

    // the controller has caught up with the re-asserted spec (the fake API server, unlike a
    // real garbage collector, keeps a dependent written after its owner was deleted)
    fake.wait_until(
        |s| {
            s.get("metrics.opni.io", "monitoringclusters", Some(NS), "opni")
                .is_some_and(|m| m["status"]["observedGeneration"] == m["metadata"]["generation"])
        },
        T,
    )
    .await;

    // uninstall: the MonitoringCluster and, through its owner references, the workload go
    client.uninstall(()).await.unwrap();
    fake.wait_until(|s| s.get("metrics.opni.io", "monitoringclusters", Some(NS), "opni").is_none(), T).await;
    fake.wait_until(|s| s.get("apps", "statefulsets", Some(NS), "opni-cortex-all").is_none(), T).await;
    let s = client.status(()).await.unwrap().into_inner();
    assert_eq!(s.install_state, i32::from(pb::InstallState::NotInstalled));
    gw.shutdown().await;
}
