//! Two gateway binaries against the fake Kubernetes API server (through a generated kubeconfig),
//! as in production: one holds the Lease and runs the `MonitoringCluster` controller; when it
//! stops, it releases the Lease and the other takes over and reconciles.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::Daemon;
use kube::api::{Api, Patch, PatchParams};
use opni_metrics_kube::crd::MonitoringCluster;
use opni_metrics_tests::kube_fake::{FakeApiServer, FakeState, ResourceType};
use opni_metrics_tests::prometheus::free_port;
use serde_json::json;

const NS: &str = "opni-system";
const T: Duration = Duration::from_secs(30);

struct Replica {
    proc: Option<Daemon>,
    mgmt: u16,
    dir: std::path::PathBuf,
}

async fn start(name: &str, root: &Path, kubeconfig: &Path) -> Replica {
    let (grpc, http, mgmt) = (free_port(), free_port(), free_port());
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "dataDir: {data}\ngrpc: {{listen: 127.0.0.1:{grpc}}}\nhttp: {{listen: 127.0.0.1:{http}}}\nmanagement: {{listen: 127.0.0.1:{mgmt}}}\nquery: {{listen: 127.0.0.1:0}}\nupstream: {{url: http://127.0.0.1:9/api/v1/push}}\nkubernetes:\n  kubeconfig: {kubeconfig}\n  namespace: {NS}\n  identity: {name}\n  lease: {{leaseDuration: 4s, renewDeadline: 3s, retryPeriod: 500ms}}\nlog: {{level: warn}}\n",
            data = dir.join("gw").display(),
            kubeconfig = kubeconfig.display(),
        ),
    )
    .unwrap();
    let proc = Daemon::gateway_with_config(&config, http, "healthz").await;
    Replica { proc: Some(proc), mgmt, dir }
}

fn holder_of(lease: Option<&serde_json::Value>) -> Option<&str> {
    lease.and_then(|l| l["spec"]["holderIdentity"].as_str()).filter(|h| !h.is_empty())
}

fn holder(fake: &FakeApiServer) -> Option<String> {
    holder_of(fake.get("coordination.k8s.io", "leases", Some(NS), "opni-metrics-gateway").as_ref()).map(str::to_owned)
}

/// [`holder`], inside a condition of the fake's (which holds its lock).
fn holder_in(state: &FakeState) -> Option<&str> {
    holder_of(state.get("coordination.k8s.io", "leases", Some(NS), "opni-metrics-gateway"))
}

/// Waits until the Lease holder satisfies `ok` (polling: the fake's own wait holds its lock).
async fn holder_until(fake: &FakeApiServer, what: &str, ok: impl Fn(Option<&str>) -> bool) -> Option<String> {
    opni_metrics_tests::http::eventually(T, what, || async {
        let h = holder(fake);
        if ok(h.as_deref()) { Ok(h) } else { Err(format!("holder {h:?}")) }
    })
    .await
    .unwrap()
}

async fn cli(r: &Replica, args: &[&str]) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_opni-metrics"))
        .arg(format!("--address=127.0.0.1:{}", r.mgmt))
        .arg(format!("--token-file={}", r.dir.join("gw").join("admin.token").display()))
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_binaries_one_lease_one_controller() {
    let fake = FakeApiServer::new();
    fake.register(ResourceType::monitoring_cluster());
    for t in ResourceType::cert_manager() {
        fake.register(t);
    }
    let served = fake.serve().await.unwrap();
    let root = tempfile::tempdir().unwrap();
    let kubeconfig = root.path().join("kubeconfig");
    std::fs::write(&kubeconfig, served.kubeconfig_yaml(NS)).unwrap();
    let mut a = start("gw-a", root.path(), &kubeconfig).await;
    let mut b = start("gw-b", root.path(), &kubeconfig).await;

    // one of them holds the Lease, and keeps it over several lease durations
    let first = holder_until(&fake, "a holder", |h| h.is_some()).await.unwrap();
    let steady = fake.holds_throughout(|s| holder_in(s) == Some(first.as_str()), Duration::from_secs(9));
    assert!(steady.await, "one holder throughout, but now {:?}", holder(&fake));

    // its controller renders what CortexOps installs (asked through either replica)
    let (leader, other) = if first == "gw-a" { (&mut a, &mut b) } else { (&mut b, &mut a) };
    cli(other, &["cortex", "install", "--no-wait"]).await;
    fake.wait_until(|s| s.get("apps", "statefulsets", Some(NS), "opni-cortex-all").is_some(), T).await;

    // the holder stops (SIGTERM): it releases the Lease, the other takes it and reconciles
    let stopped = tokio::time::Instant::now();
    assert!(leader.proc.take().unwrap().terminate().await.success());
    let second = if first == "gw-a" { "gw-b" } else { "gw-a" };
    holder_until(&fake, "the other holds the Lease", |h| h == Some(second)).await;
    eprintln!("the Lease changed hands {:?} after the holder was told to stop", stopped.elapsed());
    let mcs: Api<MonitoringCluster> = Api::namespaced(fake.client("kubectl"), NS);
    mcs.patch("opni", &PatchParams::default(), &Patch::Merge(&json!({ "spec": { "cortex": { "enabled": false } } })))
        .await
        .unwrap();
    fake.wait_until(|s| s.get("apps", "statefulsets", Some(NS), "opni-cortex-all").is_none(), T).await;
    drop(other.proc.take());
}
