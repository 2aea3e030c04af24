//! The external cluster driver against a real socket: readiness and Cortex's purger API over
//! HTTPS with a client certificate (the push path's TLS settings), and readiness flips driving
//! a real agent's enablement through the gateway.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use opni_metrics_agent::{Agent, AgentSettings, IdentitySource};
use opni_metrics_core::ClusterId;
use opni_metrics_core::driver::{AppState, ClusterDriver};
use opni_metrics_core::node::{DisabledReason, UpstreamState};
use opni_metrics_core::registry::Cluster;
use opni_metrics_core::store::MemoryStore;
use opni_metrics_core::uninstall::PurgeProgress;
use opni_metrics_core::{CapabilityName, digest::Digest};
use opni_metrics_gateway::cluster_driver::ExternalCluster;
use opni_metrics_gateway::state::now;
use opni_metrics_gateway::{Gateway, GatewaySettings, UpstreamSettings};
use opni_metrics_tests::pki::{CertFiles, Pki};
use opni_metrics_tests::upstream::{Behaviour, Upstream};
use opni_metrics_transport::tls::TlsFiles;

fn files(c: &CertFiles) -> TlsFiles {
    TlsFiles { cert: c.cert.clone(), key: c.key.clone(), ca: c.ca.clone() }
}

fn https_settings(upstream: &Upstream, pki: &Pki, client: Option<&CertFiles>) -> UpstreamSettings {
    let mut u = UpstreamSettings::default();
    u.url = format!("https://localhost:{}/api/v1/push", upstream.addr.port()).parse().unwrap();
    u.ca = Some(pki.ca_path().to_owned());
    u.client_cert = client.map(|c| (c.cert.clone(), c.key.clone()));
    u
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_purge_go_over_https_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "up");
    // the upstream requires a client certificate signed by the CA
    let server = files(&pki.gateway("cortex")).server_config().unwrap();
    let upstream = Upstream::start_tls(Behaviour::status(204), server).await;
    let client = pki.agent("gateway-client", "unused");
    let driver = ExternalCluster::new(&https_settings(&upstream, &pki, Some(&client))).unwrap();

    let s = driver.status().await.unwrap();
    assert_eq!((s.install_state, s.app_state), (UpstreamState::Installed, AppState::Running), "{s:?}");
    upstream.set_ready(false);
    let s = driver.status().await.unwrap();
    assert_eq!(s.app_state, AppState::Failed);
    assert!(s.warnings[0].contains("503"), "{:?}", s.warnings);

    let tenant = ClusterId::new("c1").unwrap();
    driver.delete_tenant_data(&tenant).await.unwrap();
    assert_eq!(upstream.purged(), vec!["c1".to_owned()]);
    assert_eq!(driver.tenant_deletion_status(&tenant).await.unwrap(), PurgeProgress::InProgress);
    assert_eq!(driver.tenant_deletion_status(&tenant).await.unwrap(), PurgeProgress::Done);

    // remote write takes the same client: over h2 with the certificate, one tenant header
    let forwarder =
        opni_metrics_gateway::forward::Forwarder::new(https_settings(&upstream, &pki, Some(&client))).unwrap();
    let req = opni_metrics_core::remote_write::ForwardRequest {
        tenant: tenant.clone(),
        body: opni_metrics_tests::rw::encode(&opni_metrics_tests::rw::request(0, 2, 1_700_000_000_000, "m")).into(),
        content_type: "application/x-protobuf".into(),
        version: Some("0.1.0".into()),
    };
    let r = tower::ServiceExt::oneshot(forwarder, req).await.unwrap();
    assert_eq!(r.status, 204);
    let seen = upstream.requests();
    assert_eq!((seen.len(), seen[0].tenants.clone(), seen[0].samples), (1, vec!["c1".to_owned()], 2));

    // without the client certificate the upstream refuses the handshake: a failed upstream,
    // and a purge that fails rather than pretends
    let anonymous = ExternalCluster::new(&https_settings(&upstream, &pki, None)).unwrap();
    assert_eq!(anonymous.status().await.unwrap().app_state, AppState::Failed);
    assert!(anonymous.delete_tenant_data(&tenant).await.is_err());
    assert_eq!(upstream.purged().len(), 1);

    // an upstream without the readiness path is not a failing one: it keeps the fleet enabled,
    // with a warning saying readiness is not checked
    let mut no_ready = https_settings(&upstream, &pki, Some(&client));
    no_ready.ready_path = "/no-such-path".into();
    upstream.set(Behaviour::status(404));
    let s = ExternalCluster::new(&no_ready).unwrap().status().await.unwrap();
    assert_eq!(s.app_state, AppState::Running);
    assert!(s.warnings[0].contains("readiness is not checked"), "{:?}", s.warnings);
}

/// Waits until the agent has applied `want` and reported itself in sync.
async fn agent_applies(agent: &Agent, want: Digest) {
    let mut rx = agent.sync_state();
    tokio::time::timeout(Duration::from_secs(60), rx.wait_for(|s| s.status.applied_digest == Some(want)))
        .await
        .expect("the agent applied the desired config in time")
        .unwrap();
}

/// Waits until the node's desired config has `enabled == want` (the status poller writes the
/// upstream state; the store watch tells the agent): checked after every store change.
async fn desired_becomes(gw: &Gateway, id: &ClusterId, want: bool) -> opni_metrics_core::node::NodeConfig {
    let st = gw.state();
    opni_metrics_tests::wait::store_until(
        st.store().as_ref(),
        Duration::from_secs(30),
        "the desired state",
        || async { st.desired(id).await.unwrap().enabled == want },
    )
    .await
    .unwrap();
    st.desired(id).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_is_disabled_while_the_upstream_fails_and_re_enabled_after() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "flip");
    let upstream = Upstream::start(Behaviour::status(204)).await;
    let mut s = GatewaySettings::default();
    s.data_dir = dir.path().join("gateway");
    s.listen = opni_metrics_gateway::Listen::ephemeral_loopback();
    s.grpc_tls = Some(files(&pki.gateway("gw")));
    s.upstream.url = upstream.url().parse().unwrap();
    s.upstream.status_interval = Duration::from_millis(50);
    s.upstream.failing_grace = Duration::from_millis(200);
    let mut gw = Gateway::builder(s).store(Arc::new(MemoryStore::default())).build().await.unwrap();
    let addrs = gw.bind_and_serve().await.unwrap();
    let id = ClusterId::new("c1").unwrap();
    gw.state().create_cluster(&Cluster::new(id.clone())).await.unwrap();
    gw.state().update_cluster(&id, |c| c.install(CapabilityName::metrics(), now())).await.unwrap();

    let mut a = AgentSettings::default();
    a.listen = "127.0.0.1:0".parse().unwrap();
    a.gateway_address = addrs.grpc.to_string();
    a.identity = IdentitySource::Files(files(&pki.agent("c1", "c1")));
    a.data_dir = dir.path().join("agent");
    let mut agent = Agent::builder(a).build().await.unwrap();
    agent.bind_and_serve().await.unwrap();

    let on = desired_becomes(&gw, &id, true).await;
    agent_applies(&agent, on.digest()).await;

    upstream.set_ready(false);
    let off = desired_becomes(&gw, &id, false).await;
    assert_eq!(off.disabled_reasons, vec![DisabledReason::UpstreamUnavailable]);
    agent_applies(&agent, off.digest()).await;

    upstream.set_ready(true);
    let back = desired_becomes(&gw, &id, true).await;
    assert_eq!(back.digest(), on.digest());
    agent_applies(&agent, back.digest()).await;

    agent.shutdown().await;
    gw.shutdown().await;
}
