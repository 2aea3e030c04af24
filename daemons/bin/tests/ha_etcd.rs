//! Two gateway processes on one real etcd: one leads (runs the uninstall tasks), both serve;
//! an agent connected to one is "connected" through the other; a change through one reaches the
//! agent on the other; a cancel through the non-leader works; an etcd restart is survived; the
//! leader killed mid-uninstall is replaced and the task completes, while pushes through the other
//! replica go on without a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{BearerAuth, CLUSTER, Daemon, WAIT, agent_config, certs, management_channel, start_agent};
use opni_metrics_proto::capability::v1::capability_client::CapabilityClient;
use opni_metrics_proto::capability::v1::{
    CancelUninstallRequest, StatusRequest, TaskState, UninstallRequest, UninstallStatusRequest,
};
use opni_metrics_tests::etcd::Etcd;
use opni_metrics_tests::http::{eventually, get, metric_sum, push};
use opni_metrics_tests::prometheus::free_port;
use opni_metrics_tests::upstream::{Behaviour, Upstream};

struct Replica {
    proc: Option<Daemon>,
    grpc: u16,
    http: u16,
    mgmt: u16,
    dir: PathBuf,
}

impl Replica {
    async fn start(name: &str, root: &Path, certs: &common::Certs, etcd: &Etcd, upstream: &str) -> Self {
        let (grpc, http, mgmt) = (free_port(), free_port(), free_port());
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let tls = opni_metrics_tests::pki::CertFiles::tls_yaml;
        let config = dir.join("gateway.yaml");
        std::fs::write(
            &config,
            format!(
                "dataDir: {data}\ngrpc: {{listen: 127.0.0.1:{grpc}, tls: {tls}}}\nhttp: {{listen: 127.0.0.1:{http}}}\nmanagement: {{listen: 127.0.0.1:{mgmt}}}\nquery: {{listen: 127.0.0.1:0}}\nupstream: {{url: {upstream}}}\nstore:\n  etcd:\n    endpoints: [{etcd}]\n    prefix: /ha/\nelection: {{ttl: 3s}}\nlog: {{level: warn}}\n",
                data = dir.join("gw").display(),
                tls = tls(&certs.gateway),
                etcd = etcd.client_url(),
            ),
        )
        .unwrap();
        let proc = Daemon::gateway_with_config(&config, http, "readyz").await;
        Self { proc: Some(proc), grpc, http, mgmt, dir }
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("gw").join("admin.token")).unwrap().trim().to_owned()
    }

    async fn capability(
        &self,
    ) -> CapabilityClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, BearerAuth>> {
        let addr = format!("127.0.0.1:{}", self.mgmt).parse().unwrap();
        CapabilityClient::with_interceptor(management_channel(addr).await, BearerAuth(self.token()))
    }

    async fn leads(&self) -> Option<bool> {
        let m = get(&format!("http://127.0.0.1:{}/metrics", self.http)).await.ok()?.text();
        metric_sum(&m, "opni_gateway_leader").map(|v| v == 1.0)
    }

    async fn register(&self, cluster: &str) {
        let cli = Path::new(env!("CARGO_BIN_EXE_opni-metrics"));
        opni_metrics_tests::registry::install_with_cli(
            cli.parent().unwrap(),
            &format!("127.0.0.1:{}", self.mgmt),
            &self.dir.join("gw").join("admin.token"),
            cluster,
        )
        .await
        .unwrap();
    }

    async fn task_state(&self, cluster: &str) -> Option<TaskState> {
        let s =
            self.capability().await.uninstall_status(UninstallStatusRequest { cluster: cluster.into() }).await.ok()?;
        TaskState::try_from(s.into_inner().state).ok()
    }
}

/// Which of the two leads, once exactly one does.
async fn leader(replicas: &[&Replica]) -> usize {
    eventually(WAIT, "exactly one leader", || async {
        let mut leading = Vec::new();
        for (i, r) in replicas.iter().enumerate() {
            if r.leads().await == Some(true) {
                leading.push(i);
            }
        }
        if leading.len() == 1 { Ok(leading[0]) } else { Err(format!("leaders: {leading:?}")) }
    })
    .await
    .unwrap()
}

async fn wait_state(r: &Replica, cluster: &str, want: TaskState) {
    eventually(WAIT, "task state", || async {
        match r.task_state(cluster).await {
            Some(s) if s == want => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_etcd() {
    let mut etcd = Etcd::start().await;
    let certs = certs();
    let upstream = Upstream::start(Behaviour::status(204)).await;
    let root = certs.dir.path().to_owned();
    let a = Replica::start("a", &root, &certs, &etcd, &upstream.url()).await;
    let b = Replica::start("b", &root, &certs, &etcd, &upstream.url()).await;
    let l = leader(&[&a, &b]).await;
    let (leader_r, other) = if l == 0 { (&a, &b) } else { (&b, &a) };

    // an agent on the replica that does not lead; registered through the leader
    leader_r.register(CLUSTER).await;
    let agent = start_agent(&agent_config(&certs.agent, &format!("127.0.0.1:{}", other.grpc))).await;
    let url = format!("http://{}/api/agent/push", agent.addr);
    common::push_until_ok(&url).await;
    // "connected" through the replica that does not hold the agent's stream
    eventually(WAIT, "connected through the leader", || async {
        let s = leader_r
            .capability()
            .await
            .status(StatusRequest { cluster: CLUSTER.into() })
            .await
            .map_err(|e| e.to_string())?;
        if s.get_ref().connected { Ok(()) } else { Err("not connected".to_owned()) }
    })
    .await
    .unwrap();

    // a change through one replica reaches the agent on the other, and its report comes back
    // through the store
    let status = || async {
        leader_r.capability().await.status(StatusRequest { cluster: CLUSTER.into() }).await.unwrap().into_inner()
    };
    let before = status().await.desired_digest;
    let spec = root.join("spec.yaml");
    std::fs::write(&spec, "prometheus:\n  scrapeInterval: 7s\n").unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_opni-metrics"))
        .arg(format!("--address=127.0.0.1:{}", leader_r.mgmt))
        .arg(format!("--token-file={}", leader_r.dir.join("gw").join("admin.token").display()))
        .args(["node-config", "set", CLUSTER, "-f"])
        .arg(&spec)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually(WAIT, "the agent on the other replica applied the change", || async {
        let s = status().await;
        if s.desired_digest != before && s.applied_digest == s.desired_digest {
            Ok(())
        } else {
            Err(format!("desired {} applied {}", s.desired_digest, s.applied_digest))
        }
    })
    .await
    .unwrap();

    // a cancel through the replica that does not lead (the leader runs the task)
    for c in ["ha-cancel", "ha-kill"] {
        leader_r.register(c).await;
    }
    other
        .capability()
        .await
        .uninstall(UninstallRequest {
            cluster: "ha-cancel".into(),
            delete_stored_data: false,
            initial_delay: Some(prost_types::Duration { seconds: 600, nanos: 0 }),
        })
        .await
        .unwrap();
    wait_state(leader_r, "ha-cancel", TaskState::Running).await;
    other.capability().await.cancel_uninstall(CancelUninstallRequest { cluster: "ha-cancel".into() }).await.unwrap();
    wait_state(leader_r, "ha-cancel", TaskState::Canceled).await;
    let st = leader_r.capability().await.status(StatusRequest { cluster: "ha-cancel".into() }).await;
    assert!(st.is_ok(), "the capability is back: {st:?}");

    // an etcd restart: both replicas come back to serving, still one leader
    etcd.restart().await;
    common::push_until_ok(&url).await;
    let l2 = leader(&[&a, &b]).await;
    let (leader_r, other) = if l2 == 0 { (&a, &b) } else { (&b, &a) };
    // the agent (again) on the replica that does not lead now
    agent.shutdown().await;
    let agent = start_agent(&agent_config(&certs.agent, &format!("127.0.0.1:{}", other.grpc))).await;
    let url = format!("http://{}/api/agent/push", agent.addr);
    common::push_until_ok(&url).await;

    // the leader dies mid-uninstall; pushes through the other replica go on meanwhile
    leader_r
        .capability()
        .await
        .uninstall(UninstallRequest {
            cluster: "ha-kill".into(),
            delete_stored_data: false,
            // long enough that the task is still waiting when the test sees it running and
            // kills the leader, on a loaded machine too
            initial_delay: Some(prost_types::Duration { seconds: 8, nanos: 0 }),
        })
        .await
        .unwrap();
    wait_state(other, "ha-kill", TaskState::Running).await;
    // pushes go on, paced like a scraping Prometheus, until the survivor has finished the task
    let (done, mut finished) = tokio::sync::watch::channel(false);
    let pushing = tokio::spawn({
        let url = url.clone();
        async move {
            let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
            let mut pace = tokio::time::interval(Duration::from_millis(20));
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = finished.wait_for(|d| *d) => return statuses,
                    _ = pace.tick() => {}
                }
                let s = push(&url, common::body(5)).await.map(|r| r.status.as_u16()).unwrap_or(0);
                *statuses.entry(s).or_default() += 1;
            }
        }
    });
    let killed_at = tokio::time::Instant::now();
    let (mut a, mut b) = (a, b);
    let survivor = if l2 == 0 {
        a.proc.take().unwrap().kill().await;
        &b
    } else {
        b.proc.take().unwrap().kill().await;
        &a
    };
    eventually(WAIT, "the survivor leads", || async {
        if survivor.leads().await == Some(true) { Ok(()) } else { Err("not yet".to_owned()) }
    })
    .await
    .unwrap();
    eprintln!("takeover after the leader was killed: {:?}", killed_at.elapsed());
    wait_state(survivor, "ha-kill", TaskState::Completed).await;
    done.send_replace(true);
    let statuses = pushing.await.unwrap();
    eprintln!("pushes through the other replica during the leader change: {statuses:?}");
    assert_eq!(statuses.keys().copied().collect::<Vec<_>>(), [204], "{statuses:?}");
    agent.shutdown().await;
    let _ = (&mut a, &mut b);
}
