//! The embedding example (`daemons/gateway/examples/custom_gateway.rs`) runs for real: a real
//! agent joins its own tonic server over mutual TLS, syncs its node config, and relays a push
//! to the upstream under its tenant; a cluster off the allow-list is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code, unreachable_pub, missing_docs)]
#[path = "../../daemons/gateway/examples/custom_gateway.rs"]
mod custom_gateway;

use std::sync::Arc;
use std::time::Duration;

use opni_metrics_agent::{Agent, AgentSettings, IdentitySource};
use opni_metrics_core::node::{ConditionKind, ConditionStatus};
use opni_metrics_core::registry::Cluster;
use opni_metrics_core::{CapabilityName, ClusterId};
use opni_metrics_gateway::GatewaySettings;
use opni_metrics_gateway::state::now;
use opni_metrics_tests::http::push;
use opni_metrics_tests::pki::{CertFiles, Pki};
use opni_metrics_tests::upstream::{Behaviour, Upstream};
use opni_metrics_transport::tls::TlsFiles;
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(60);

fn files(c: &CertFiles) -> TlsFiles {
    TlsFiles { cert: c.cert.clone(), key: c.key.clone(), ca: c.ca.clone() }
}

async fn agent(cert: &CertFiles, gateway: std::net::SocketAddr, dir: &std::path::Path) -> Agent {
    let mut s = AgentSettings::default();
    s.listen = "127.0.0.1:0".parse().unwrap();
    s.gateway_address = gateway.to_string();
    s.identity = IdentitySource::Files(files(cert));
    s.data_dir = dir.to_owned();
    s.channel.connect_timeout = Duration::from_millis(500);
    let mut agent = Agent::builder(s).build().await.unwrap();
    agent.bind_and_serve().await.unwrap();
    agent
}

fn body() -> Vec<u8> {
    opni_metrics_tests::rw::encode(&opni_metrics_tests::rw::request(0, 3, 1_700_000_000_000, "custom_metric"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_agent_pushes_and_syncs_through_a_custom_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "custom");
    let upstream = Upstream::start(Behaviour::status(204)).await;
    let mut settings = GatewaySettings::default();
    settings.data_dir = dir.path().join("gateway");
    settings.upstream.url = upstream.url().parse().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let allowed = ClusterId::new("allowed").unwrap();
    let gw = custom_gateway::start(settings, files(&pki.gateway("gw")), vec![allowed.clone()], listener).await.unwrap();

    // the cluster exists with the capability installed: its node is enabled
    let state = gw.gateway.state();
    state.create_cluster(&Cluster::new(allowed.clone())).await.unwrap();
    state.update_cluster(&allowed, |c| c.install(CapabilityName::metrics(), now())).await.unwrap();
    let want = state.desired(&allowed).await.unwrap();
    assert!(want.enabled);

    let a = agent(&pki.agent("allowed", "allowed"), gw.addr, &dir.path().join("a")).await;

    // sync: the agent applies exactly the desired config and reports itself in sync
    let mut rx = a.sync_state();
    tokio::time::timeout(
        WAIT,
        rx.wait_for(|s| {
            s.connected
                && s.status.applied_digest == Some(want.digest())
                && s.status.get(ConditionKind::Synced).is_some_and(|c| c.status == ConditionStatus::True)
        }),
    )
    .await
    .expect("the agent synced in time")
    .unwrap();

    // push: answered by the upstream, which saw exactly one tenant, the certificate's
    let url = format!("http://{}/api/agent/push", a.addr().unwrap());
    let r = push(&url, body()).await.unwrap();
    assert_eq!(r.status, 204, "{r:?}");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].tenants, vec!["allowed".to_owned()]);
    assert_eq!(seen[0].samples, 3);

    // a cluster with a valid certificate but off the allow-list is refused by the embedder's
    // layer: Prometheus gets a retryable 503 and nothing reaches the upstream
    let other = agent(&pki.agent("other", "other"), gw.addr, &dir.path().join("b")).await;
    let url = format!("http://{}/api/agent/push", other.addr().unwrap());
    let r = push(&url, body()).await.unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(upstream.requests().len(), 1);
    assert!(!other.sync_state().borrow().connected);

    other.shutdown().await;
    a.shutdown().await;
    let upstream_driver = Arc::clone(&gw.upstream);
    gw.shutdown().await;
    assert!(upstream_driver.deleted().is_empty());
}
