//! Shared fixtures of the daemons' integration tests: certificates, an in-process gateway and
//! agent wired to a scriptable upstream.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use opni_metrics_core::duration::PromDuration;
use opni_metrics_daemons::agent::{self, AgentConfig, RunningAgent};
use opni_metrics_daemons::gateway::{self, GatewayConfig, RunningGateway};
use opni_metrics_daemons::tls::TlsFiles;
use opni_metrics_tests::pki::{CertFiles, Pki};
use opni_metrics_tests::upstream::{Behaviour, Upstream};

pub const CLUSTER: &str = "cluster-a";

pub fn files(c: &CertFiles) -> TlsFiles {
    TlsFiles { cert: c.cert.clone(), key: c.key.clone(), ca: c.ca.clone() }
}

/// Certificates in a temp dir: one CA, the gateway's cert and an agent cert for CLUSTER.
pub struct Certs {
    pub dir: tempfile::TempDir,
    pub pki: Pki,
    pub gateway: CertFiles,
    pub agent: CertFiles,
}

pub fn certs() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "test");
    let gateway = pki.gateway("gateway");
    let agent = pki.agent("agent", CLUSTER);
    Certs { dir, pki, gateway, agent }
}

pub fn gateway_config(certs: &Certs, upstream_url: &str) -> GatewayConfig {
    let mut c = GatewayConfig::default();
    c.grpc.listen = "127.0.0.1:0".into();
    c.http.listen = "127.0.0.1:0".into();
    c.grpc.tls = Some(files(&certs.gateway));
    c.upstream.url = upstream_url.into();
    c.upstream.timeout = PromDuration::from_secs(2);
    c
}

pub fn agent_config(agent_cert: &CertFiles, gateway_addr: &str) -> AgentConfig {
    let mut c = AgentConfig::default();
    c.http.listen = "127.0.0.1:0".into();
    c.gateway.address = gateway_addr.into();
    c.gateway.server_name = Some("localhost".into());
    c.gateway.tls = Some(files(agent_cert));
    c.gateway.connect_timeout = PromDuration::from_millis(500);
    c.remote_write.request_timeout = PromDuration::from_secs(5);
    c
}

/// Gateway + agent in-process, in front of a scriptable upstream.
pub struct Stack {
    pub certs: Certs,
    pub upstream: Upstream,
    pub gateway: Option<RunningGateway>,
    pub agent: RunningAgent,
}

impl Stack {
    pub async fn start(behaviour: Behaviour) -> Self {
        Self::start_with(behaviour, |_| {}, |_| {}).await
    }

    pub async fn start_with(behaviour: Behaviour, gw: impl FnOnce(&mut GatewayConfig), ag: impl FnOnce(&mut AgentConfig)) -> Self {
        let certs = certs();
        let upstream = Upstream::start(behaviour).await;
        let mut gc = gateway_config(&certs, &upstream.url());
        gw(&mut gc);
        let gateway = gateway::start(gc.validate().unwrap()).await.unwrap();
        let mut ac = agent_config(&certs.agent, &gateway.grpc_addr.to_string());
        ag(&mut ac);
        let agent = agent::start(ac.validate().unwrap()).await.unwrap();
        Self { certs, upstream, gateway: Some(gateway), agent }
    }

    pub fn push_url(&self) -> String {
        format!("http://{}/api/agent/push", self.agent.addr)
    }
}

pub fn body(series: usize) -> Vec<u8> {
    opni_metrics_tests::rw::encode(&opni_metrics_tests::rw::request(0, series, 1_700_000_000_000, "test_metric"))
}

pub const WAIT: Duration = Duration::from_secs(60);
