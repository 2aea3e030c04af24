//! The MonitoringCluster controller and the Lease elector against the in-process fake API
//! server, through the real kube client and kube-runtime's Controller.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic with the failure

use std::time::Duration;

use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use opni_metrics_kube::controller::{self, ControllerSettings};
use opni_metrics_kube::crd::MonitoringCluster;
use opni_metrics_kube::lease::{LeaseElector, LeaseSettings, while_leading};
use opni_metrics_tests::kube_fake::{FakeApiServer, Fault, ResourceType};
use serde_json::{Value, json};

const NS: &str = "opni-system";
const T: Duration = Duration::from_secs(30);

fn mc_type() -> ResourceType {
    ResourceType::monitoring_cluster()
}

fn cert_manager(fake: &FakeApiServer) {
    for t in ResourceType::cert_manager() {
        fake.register(t);
    }
}

fn settings() -> ControllerSettings {
    ControllerSettings { namespace: Some(NS.into()), ..ControllerSettings::default() }
}

async fn create_mc(fake: &FakeApiServer, spec: Value) {
    let api: Api<MonitoringCluster> = Api::namespaced(fake.client("admin"), NS);
    let mc: MonitoringCluster = serde_json::from_value(json!({
        "apiVersion": "metrics.opni.io/v1beta1", "kind": "MonitoringCluster",
        "metadata": { "name": "opni", "namespace": NS }, "spec": spec,
    }))
    .unwrap();
    api.create(&PostParams::default(), &mc).await.unwrap();
}

async fn patch_mc(fake: &FakeApiServer, patch: Value) {
    let api: Api<MonitoringCluster> = Api::namespaced(fake.client("admin"), NS);
    api.patch("opni", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

fn sts(fake: &FakeApiServer, name: &str) -> Option<Value> {
    fake.get("apps", "statefulsets", Some(NS), name)
}

async fn wait_sts(fake: &FakeApiServer, name: &'static str, pred: impl Fn(&Value) -> bool + Send + Sync + 'static) {
    fake.wait_until(move |s| s.get("apps", "statefulsets", Some(NS), name).is_some_and(&pred), T).await;
}

fn all_in_one() -> Value {
    json!({ "cortex": { "enabled": true, "deploymentMode": "allInOne",
        "config": { "storage": { "backend": "filesystem", "filesystem": { "directory": "blocks" } } } } })
}

#[tokio::test]
async fn reconciles_enable_change_handedit_delete_disable() {
    let fake = FakeApiServer::new();
    fake.register(mc_type());
    cert_manager(&fake);
    create_mc(&fake, all_in_one()).await;
    let ctl = tokio::spawn(controller::run(fake.client("controller"), settings()));

    // enable: the workload, its config and services exist
    wait_sts(&fake, "opni-cortex-all", |_| true).await;
    // certificates come last in apply order
    fake.wait_until(|s| s.get("cert-manager.io", "certificates", Some(NS), "opni-cortex-serving").is_some(), T).await;
    assert!(fake.get("", "secrets", Some(NS), "opni-cortex-config").is_some());
    assert!(fake.get("", "services", Some(NS), "opni-cortex").is_some());
    let uid = sts(&fake, "opni-cortex-all").unwrap()["metadata"]["uid"].clone();

    // spec change: updated in place
    patch_mc(&fake, json!({ "spec": { "cortex": { "workloads": { "all": { "extraArgs": ["-log.format=json"] } } } } }))
        .await;
    wait_sts(&fake, "opni-cortex-all", |o| o.to_string().contains("-log.format=json")).await;
    assert_eq!(sts(&fake, "opni-cortex-all").unwrap()["metadata"]["uid"], uid);

    // a field edited by hand is re-asserted
    let api: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(fake.client("kubectl"), NS);
    api.patch("opni-cortex-all", &PatchParams::default(), &Patch::Merge(&json!({ "spec": { "replicas": 7 } })))
        .await
        .unwrap();
    wait_sts(&fake, "opni-cortex-all", |o| o["spec"]["replicas"] == 1).await;

    // deleted by hand: recreated
    api.delete("opni-cortex-all", &DeleteParams::default()).await.unwrap();
    wait_sts(&fake, "opni-cortex-all", move |o| o["metadata"]["uid"] != uid).await;

    // readiness reaches the MonitoringCluster status
    let ready = json!({ "status": { "replicas": 1, "readyReplicas": 1 } });
    api.patch_status("opni-cortex-all", &PatchParams::default(), &Patch::Merge(&ready)).await.unwrap();
    fake.wait_until(
        |s| {
            s.get("metrics.opni.io", "monitoringclusters", Some(NS), "opni")
                .is_some_and(|o| o["status"]["workloadsReady"] == true)
        },
        T,
    )
    .await;

    // disable: the Cortex objects go
    patch_mc(&fake, json!({ "spec": { "cortex": { "enabled": false } } })).await;
    fake.wait_until(|s| s.get("apps", "statefulsets", Some(NS), "opni-cortex-all").is_none(), T).await;
    fake.wait_until(|s| s.get("", "secrets", Some(NS), "opni-cortex-config").is_none(), T).await;
    ctl.abort();
}

#[tokio::test]
async fn switching_to_highly_available_removes_the_targets_no_longer_wanted() {
    let fake = FakeApiServer::new();
    fake.register(mc_type());
    cert_manager(&fake);
    create_mc(&fake, all_in_one()).await;
    let ctl = tokio::spawn(controller::run(fake.client("controller"), settings()));
    wait_sts(&fake, "opni-cortex-all", |_| true).await;
    patch_mc(
        &fake,
        json!({ "spec": { "cortex": { "deploymentMode": "highlyAvailable", "workloads": null, "config": { "storage": {
            "backend": "s3", "filesystem": null, "s3": { "endpoint": "s3.example.com", "bucket": "b",
            "accessKeyId": "id", "secretAccessKey": { "name": "s3", "key": "secret" } } } } } } }),
    )
    .await;
    wait_sts(&fake, "opni-cortex-ingester", |_| true).await;
    fake.wait_until(|s| s.get("apps", "statefulsets", Some(NS), "opni-cortex-all").is_none(), T).await;
    assert!(fake.get("apps", "deployments", Some(NS), "opni-cortex-distributor").is_some());
    ctl.abort();
}

#[tokio::test]
async fn conflicts_on_write_are_retried() {
    let fake = FakeApiServer::new();
    fake.register(mc_type());
    cert_manager(&fake);
    fake.fail_next(Fault::new(409).method(http::Method::PATCH).plural("statefulsets").times(3));
    create_mc(&fake, all_in_one()).await;
    let ctl = tokio::spawn(controller::run(fake.client("controller"), settings()));
    wait_sts(&fake, "opni-cortex-all", |_| true).await;
    let conflicts = fake.requests().iter().filter(|r| r.path.contains("statefulsets") && r.status == 409).count();
    assert_eq!(conflicts, 3);
    ctl.abort();
}

#[tokio::test]
async fn missing_cert_manager_is_a_condition_and_the_rest_is_applied() {
    let fake = FakeApiServer::new();
    fake.register(mc_type());
    create_mc(&fake, all_in_one()).await;
    let ctl = tokio::spawn(controller::run(fake.client("controller"), settings()));
    wait_sts(&fake, "opni-cortex-all", |_| true).await;
    fake.wait_until(
        |s| {
            s.get("metrics.opni.io", "monitoringclusters", Some(NS), "opni").is_some_and(|o| {
                o["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["type"] == "CertManagerAvailable" && c["status"] == "False"))
            })
        },
        T,
    )
    .await;
    ctl.abort();
}

#[tokio::test]
async fn invalid_spec_is_reported_not_applied() {
    let fake = FakeApiServer::new();
    fake.register(mc_type());
    create_mc(&fake, json!({ "cortex": { "enabled": true, "workloads": { "ingestr": { "replicas": 1 } } } })).await;
    let ctl = tokio::spawn(controller::run(fake.client("controller"), settings()));
    fake.wait_until(
        |s| {
            s.get("metrics.opni.io", "monitoringclusters", Some(NS), "opni").is_some_and(|o| {
                o["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter().any(|c| c["reason"] == "InvalidSpec" && c["message"].to_string().contains("ingestr"))
                })
            })
        },
        T,
    )
    .await;
    assert!(fake.list("apps", "statefulsets").is_empty());
    ctl.abort();
}

/// Short enough for a takeover test, long enough that a leader on a busy CI machine (one
/// current-thread runtime also runs the fake API server and the reconciles) still renews in time.
fn lease(identity: &str) -> LeaseSettings {
    LeaseSettings {
        lease_duration: Duration::from_secs(5),
        renew_deadline: Duration::from_secs(4),
        retry_period: Duration::from_millis(300),
        ..LeaseSettings::new(NS, "opni-metrics-gateway", identity)
    }
}

fn candidate(
    fake: &FakeApiServer,
    id: &'static str,
) -> (tokio::task::JoinHandle<()>, tokio::sync::watch::Receiver<bool>) {
    let elector = LeaseElector::new(fake.client(id), lease(id)).unwrap();
    let leading = elector.leading();
    let client = fake.client(id);
    let task = tokio::spawn({
        let leading = leading.clone();
        async move {
            let run = while_leading(leading, move || controller::run(client.clone(), settings()));
            tokio::join!(elector.run(), run);
        }
    });
    (task, leading)
}

fn controller_writes(fake: &FakeApiServer, id: &str) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.identity == id && r.method != http::Method::GET && !r.path.contains("/leases"))
        .count()
}

#[tokio::test]
async fn two_controllers_one_lease_only_the_holder_writes() {
    let fake = FakeApiServer::new();
    fake.register(mc_type());
    cert_manager(&fake);
    create_mc(&fake, all_in_one()).await;
    let (a, mut a_leading) = candidate(&fake, "a");
    a_leading.wait_for(|l| *l).await.unwrap();
    let (b, b_leading) = candidate(&fake, "b");
    wait_sts(&fake, "opni-cortex-all", |_| true).await;
    assert!(!*b_leading.borrow());
    assert!(controller_writes(&fake, "a") > 0);
    assert_eq!(controller_writes(&fake, "b"), 0, "the follower wrote");

    // the holder dies without releasing: after the lease expires the other takes over and writes
    a.abort();
    let mut b_leading = b_leading;
    tokio::time::timeout(T, b_leading.wait_for(|l| *l)).await.unwrap().unwrap();
    let api: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(fake.client("kubectl"), NS);
    api.delete("opni-cortex-all", &DeleteParams::default()).await.unwrap();
    fake.wait_until(|s| s.get("apps", "statefulsets", Some(NS), "opni-cortex-all").is_some(), T).await;
    assert!(controller_writes(&fake, "b") > 0);
    b.abort();
}

#[tokio::test]
async fn a_leader_that_cannot_renew_steps_down() {
    let fake = FakeApiServer::new();
    let elector = LeaseElector::new(fake.client("a"), lease("a")).unwrap();
    let mut leading = elector.leading();
    let task = tokio::spawn(elector.run());
    leading.wait_for(|l| *l).await.unwrap();
    // every Lease write from now on fails: the leader must stop within its renew deadline
    fake.fail_next(Fault::new(503).method(http::Method::PUT).plural("leases").times(1000));
    tokio::time::timeout(T, leading.wait_for(|l| !*l)).await.unwrap().unwrap();
    task.abort();
}

/// A candidate whose `leading` transitions are stamped with the (paused) clock.
fn elector(fake: &FakeApiServer, id: &str) -> (LeaseElector, tokio::sync::watch::Receiver<bool>) {
    let elector = LeaseElector::new(fake.client(id), lease(id)).unwrap();
    let leading = elector.leading();
    (elector, leading)
}

#[tokio::test(start_paused = true)]
async fn a_hung_api_server_cannot_keep_a_leader_leading() {
    let fake = FakeApiServer::new();
    let settings = lease("a");
    let (a, mut a_leading) = elector(&fake, "a");
    let a_task = tokio::spawn(a.run());
    a_leading.wait_for(|l| *l).await.unwrap();
    let (b, mut b_leading) = elector(&fake, "b");
    let b_task = tokio::spawn(b.run());

    // from now on every request of a's client stalls forever (no error, no answer)
    let stalled_at = tokio::time::Instant::now();
    fake.fail_next(Fault::hang().identity("a").times(1000));
    a_leading.wait_for(|l| !*l).await.unwrap();
    let a_stopped = tokio::time::Instant::now();
    b_leading.wait_for(|l| *l).await.unwrap();
    let b_started = tokio::time::Instant::now();

    // a's last renewal began before the stall, so it stops within renew_deadline of it, and
    // b, which needs the record unchanged for a whole lease duration, starts only after that
    assert!(
        a_stopped - stalled_at <= settings.renew_deadline,
        "a led {:?} into the stall (renew deadline {:?})",
        a_stopped - stalled_at,
        settings.renew_deadline
    );
    assert!(b_started > a_stopped, "b led from {b_started:?} while a led until {a_stopped:?}");
    assert!(fake.requests().iter().any(|r| r.identity == "a" && r.status == 0), "no request of a stalled");
    a_task.abort();
    b_task.abort();
}

#[tokio::test(start_paused = true)]
async fn shutdown_releases_the_lease_so_another_takes_over_at_once() {
    let fake = FakeApiServer::new();
    let settings = lease("a");
    let (a, mut a_leading) = elector(&fake, "a");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let a_task = tokio::spawn(a.run_until(async move {
        let _ = stopped.await;
    }));
    a_leading.wait_for(|l| *l).await.unwrap();
    let (b, mut b_leading) = elector(&fake, "b");
    let b_task = tokio::spawn(b.run());
    // b has seen a's record: without a release it would wait a whole lease duration
    fake.wait_until(|s| s.requests().iter().any(|r| r.identity == "b"), T).await;

    let stopping = tokio::time::Instant::now();
    stop.send(()).unwrap();
    a_task.await.unwrap();
    assert!(!*a_leading.borrow());
    let lease = fake.get("coordination.k8s.io", "leases", Some(NS), "opni-metrics-gateway").unwrap();
    assert!(lease["spec"]["holderIdentity"].is_null(), "not released: {lease}");
    b_leading.wait_for(|l| *l).await.unwrap();
    let waited = tokio::time::Instant::now() - stopping;
    assert!(waited < settings.lease_duration, "b waited {waited:?}, as long as an expiry");
    b_task.abort();
}
