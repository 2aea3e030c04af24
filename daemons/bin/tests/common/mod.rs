//! Shared fixtures of the daemons' integration tests: certificates, an in-process gateway and
//! agent wired to a scriptable upstream.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use opni_metrics_core::duration::PromDuration;
use opni_metrics_core::store::Store;
use opni_metrics_daemons::config::agent::{AgentConfig, DriverKind};
use opni_metrics_daemons::config::gateway::GatewayConfig;
use opni_metrics_gateway::{Gateway, GatewaySettings};
use opni_metrics_tests::pki::{CertFiles, Pki};
use opni_metrics_tests::upstream::{Behaviour, Upstream};
use opni_metrics_transport::tls::TlsFiles;

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
    c.management.listen = "127.0.0.1:0".into();
    c.query.listen = "127.0.0.1:0".into();
    c.data_dir = certs.dir.path().join("gateway");
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
    // a dial (TCP, TLS and HTTP/2 handshakes of a debug build) on a loaded CI machine can take a
    // while; a gateway that is down refuses at once anyway
    c.gateway.connect_timeout = PromDuration::from_secs(5);
    c.remote_write.request_timeout = PromDuration::from_secs(5);
    c.driver.kind = DriverKind::None;
    c
}

/// A gateway built over `store` and serving on the settings' listeners, with its addresses.
pub struct RunningGateway {
    pub grpc_addr: std::net::SocketAddr,
    pub http_addr: std::net::SocketAddr,
    pub management_addr: std::net::SocketAddr,
    pub query_addr: std::net::SocketAddr,
    pub admin_token: String,
    pub ca_path: std::path::PathBuf,
    pub gateway: Gateway,
}

impl RunningGateway {
    pub async fn shutdown(self) {
        self.gateway.shutdown().await;
    }
    pub fn hub(&self) -> &opni_metrics_gateway::sync::Hub {
        self.gateway.hub()
    }
}

pub async fn start_gateway(settings: GatewaySettings, store: Arc<dyn Store>) -> RunningGateway {
    let mut gateway = Gateway::builder(settings).store(store).build().await.unwrap();
    let a = gateway.bind_and_serve().await.unwrap();
    RunningGateway {
        grpc_addr: a.grpc,
        http_addr: a.http,
        management_addr: a.management,
        query_addr: a.query,
        admin_token: gateway.admin_token().unwrap().to_owned(),
        ca_path: gateway.ca_path(),
        gateway,
    }
}

/// Waits until the gateway's `/readyz` says ready (its registry view loaded, among others):
/// a push before that is answered 503.
pub async fn wait_ready(gw: &RunningGateway) {
    let url = format!("http://{}/readyz", gw.http_addr);
    opni_metrics_tests::http::eventually(Duration::from_secs(20), "gateway ready", || async {
        let r = opni_metrics_tests::http::get(&url).await?;
        if r.status.is_success() { Ok(()) } else { Err(r.text()) }
    })
    .await
    .unwrap();
}

/// An agent serving on its settings' listener, with its address.
pub struct RunningAgent {
    pub addr: std::net::SocketAddr,
    pub sync: tokio::sync::watch::Receiver<opni_metrics_agent::sync_loop::SyncState>,
    pub agent: opni_metrics_agent::Agent,
}

impl RunningAgent {
    pub async fn shutdown(self) {
        self.agent.shutdown().await;
    }
}

pub async fn start_agent(c: &AgentConfig) -> RunningAgent {
    let agent = opni_metrics_daemons::start_agent(c.validate().unwrap()).await.unwrap();
    RunningAgent { addr: agent.addr().unwrap(), sync: agent.sync_state(), agent }
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

    pub async fn start_with(
        behaviour: Behaviour,
        gw: impl FnOnce(&mut GatewayConfig),
        ag: impl FnOnce(&mut AgentConfig),
    ) -> Self {
        let certs = certs();
        let upstream = Upstream::start(behaviour).await;
        let mut gc = gateway_config(&certs, &upstream.url());
        gw(&mut gc);
        // the agent's cluster is registered with the capability installed, as after
        // `clusters create` and `capability install`
        let store = opni_metrics_tests::registry::store_with(&[CLUSTER]).await;
        let gateway = start_gateway(gc.validate().unwrap().settings, store).await;
        wait_ready(&gateway).await;
        let mut ac = agent_config(&certs.agent, &gateway.grpc_addr.to_string());
        ag(&mut ac);
        let agent = start_agent(&ac).await;
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

/// A daemon binary running as a child process (killed on drop).
pub struct Daemon {
    pub child: tokio::process::Child,
    pub ready_url: String,
}

impl Drop for Daemon {
    /// SIGTERM, so the daemon stops what it started (an agent stops its Prometheus).
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        }
    }
}

impl Daemon {
    /// The gateway binary with the config file `config`, once `http://127.0.0.1:<http>/<probe>`
    /// answers 2xx.
    pub async fn gateway_with_config(config: &std::path::Path, http: u16, probe: &str) -> Self {
        Self::spawn(
            env!("CARGO_BIN_EXE_opni-metrics-gateway"),
            vec![format!("--config={}", config.display())],
            format!("http://127.0.0.1:{http}/{probe}"),
        )
        .await
    }

    /// Spawns `bin` with `args` and waits until `ready_url` answers 2xx.
    pub async fn spawn_raw(bin: &str, args: Vec<String>, ready_url: String) -> Self {
        Self::spawn(bin, args, ready_url).await
    }

    async fn spawn(bin: &str, args: Vec<String>, ready_url: String) -> Self {
        let child = tokio::process::Command::new(bin)
            .args(&args)
            .env("OPNI_GATEWAY_LOG_LEVEL", "warn")
            .env("OPNI_AGENT_LOG_LEVEL", "warn")
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let d = Self { child, ready_url };
        let url = d.ready_url.clone();
        opni_metrics_tests::http::eventually(WAIT, "daemon ready", || async {
            match opni_metrics_tests::http::get(&url).await {
                Ok(r) if r.status.is_success() => Ok(()),
                Ok(r) => Err(r.status.to_string()),
                Err(e) => Err(e),
            }
        })
        .await
        .unwrap();
        d
    }

    /// The gateway binary on fixed ports, with CLUSTER registered and its capability installed
    /// (through the CLI, as an operator does for an agent given certificate files).
    pub async fn gateway(certs: &Certs, grpc_port: u16, http_port: u16, upstream_url: &str) -> Self {
        let mgmt = opni_metrics_tests::prometheus::free_port();
        let data = certs.dir.path().join(format!("gateway-{grpc_port}"));
        let args = vec![
            format!("--grpc-listen=127.0.0.1:{grpc_port}"),
            format!("--http-listen=127.0.0.1:{http_port}"),
            format!("--tls-cert={}", certs.gateway.cert.display()),
            format!("--tls-key={}", certs.gateway.key.display()),
            format!("--tls-ca={}", certs.gateway.ca.display()),
            format!("--upstream-url={upstream_url}"),
            format!("--data-dir={}", data.display()),
            format!("--management-listen=127.0.0.1:{mgmt}"),
            "--query-listen=127.0.0.1:0".into(),
        ];
        let d = Self::spawn(
            env!("CARGO_BIN_EXE_opni-metrics-gateway"),
            args,
            format!("http://127.0.0.1:{http_port}/readyz"),
        )
        .await;
        let cli = std::path::Path::new(env!("CARGO_BIN_EXE_opni-metrics"));
        opni_metrics_tests::registry::install_with_cli(
            cli.parent().unwrap(),
            &format!("127.0.0.1:{mgmt}"),
            &data.join("admin.token"),
            CLUSTER,
        )
        .await
        .unwrap();
        d
    }

    /// The agent binary on a fixed port.
    pub async fn agent(certs: &Certs, port: u16, gateway: &str) -> Self {
        let args = vec![
            format!("--listen=127.0.0.1:{port}"),
            format!("--gateway={gateway}"),
            "--gateway-server-name=localhost".into(),
            format!("--tls-cert={}", certs.agent.cert.display()),
            format!("--tls-key={}", certs.agent.key.display()),
            format!("--tls-ca={}", certs.agent.ca.display()),
            "--driver=none".into(),
        ];
        Self::spawn(env!("CARGO_BIN_EXE_opni-metrics-agent"), args, format!("http://127.0.0.1:{port}/readyz")).await
    }

    /// SIGKILL: no draining, connections cut.
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }

    /// Waits for the process to exit.
    pub async fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().await.unwrap()
    }

    /// SIGTERM, then wait for a clean exit (keeps the handle).
    pub async fn terminate_ref(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().unwrap();
        std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap();
        self.child.wait().await.unwrap()
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().unwrap();
        std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap();
        self.child.wait().await.unwrap()
    }
}

/// The gateway binary started from a YAML config written to `dir/gateway.yaml` (state in
/// `dir/gw`).
pub struct GatewayProcess {
    pub proc: Daemon,
    pub grpc: u16,
    pub http: u16,
    pub mgmt: u16,
    pub dir: std::path::PathBuf,
}

impl GatewayProcess {
    /// Listens on `ports` (grpc, http, management; free ones when `None`) and a free query port,
    /// forwards to `upstream`; `management` is extra YAML inside `management:` (indented two
    /// spaces), `upstream_extra` inside `upstream:`, `extra` more top-level sections.
    pub async fn start(
        dir: &std::path::Path,
        upstream: &str,
        ports: Option<(u16, u16, u16)>,
        management: &str,
        upstream_extra: &str,
        extra: &str,
    ) -> Self {
        use opni_metrics_tests::prometheus::free_port;
        let (grpc, http, mgmt) = ports.unwrap_or_else(|| (free_port(), free_port(), free_port()));
        let config = dir.join("gateway.yaml");
        let state = dir.join("gw");
        std::fs::write(
            &config,
            format!(
                "dataDir: {}\ngrpc:\n  listen: 127.0.0.1:{grpc}\nhttp:\n  listen: 127.0.0.1:{http}\nmanagement:\n  listen: 127.0.0.1:{mgmt}\n{management}query:\n  listen: 127.0.0.1:0\nupstream:\n  url: {upstream}\n{upstream_extra}{extra}log:\n  level: warn\n",
                state.display()
            ),
        )
        .unwrap();
        let proc = Daemon::gateway_with_config(&config, http, "readyz").await;
        Self { proc, grpc, http, mgmt, dir: state }
    }
}

/// Adds `authorization: Bearer <credential>` to every call.
#[derive(Clone)]
pub struct BearerAuth(pub String);

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", format!("Bearer {}", self.0).parse().unwrap());
        Ok(r)
    }
}

/// A plain-text channel to a management listener.
pub async fn management_channel(addr: std::net::SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
}

/// The Cortex-semantics upstream with a real Prometheus receiver behind each of `tenants`
/// (keep the receivers alive as long as the upstream is used).
pub async fn cortex_with_receivers(
    tenants: &[&str],
) -> (opni_metrics_tests::cortex::CortexUpstream, Vec<opni_metrics_tests::prometheus::Prometheus>) {
    let cortex = opni_metrics_tests::cortex::CortexUpstream::start().await;
    let mut receivers = Vec::new();
    for t in tenants {
        let r = opni_metrics_tests::prometheus::Prometheus::receiver().await.unwrap();
        cortex.backend(t, &r.url());
        receivers.push(r);
    }
    (cortex, receivers)
}

/// Installs the metrics capability on `cluster` through the management API (warnings ignored).
pub async fn install(gw: &RunningGateway, cluster: &str) {
    opni_metrics_proto::capability::v1::capability_client::CapabilityClient::with_interceptor(
        management_channel(gw.management_addr).await,
        BearerAuth(gw.admin_token.clone()),
    )
    .install(opni_metrics_proto::capability::v1::InstallRequest { cluster: cluster.into(), ignore_warnings: true })
    .await
    .unwrap();
}

/// Pushes to `url` until a push is answered 204 (the gateway admits a cluster as soon as its
/// registry view, fed by the store watch, has the install).
pub async fn push_until_ok(url: &str) {
    opni_metrics_tests::http::eventually(WAIT, "a push admitted", || async {
        let r = opni_metrics_tests::http::push(url, body(1)).await?;
        if r.status == 204 { Ok(()) } else { Err(format!("{} {}", r.status, r.text())) }
    })
    .await
    .unwrap();
}

/// A gateway whose embedded CA serves and signs (no `grpc.tls`), over a fresh memory store
/// (returned too), after `tweak` of its config.
pub async fn embedded_ca_gateway(
    certs: &Certs,
    upstream_url: &str,
    tweak: impl FnOnce(&mut GatewayConfig),
) -> (RunningGateway, Arc<dyn Store>) {
    let mut gc = gateway_config(certs, upstream_url);
    gc.grpc.tls = None;
    tweak(&mut gc);
    let store: Arc<dyn Store> = Arc::new(opni_metrics_core::store::MemoryStore::default());
    (start_gateway(gc.validate().unwrap().settings, Arc::clone(&store)).await, store)
}

/// A bootstrap token of `max_uses` uses, made through the management API.
pub async fn create_token(gw: &RunningGateway, max_uses: u32) -> opni_metrics_proto::bootstrap::v1::BootstrapToken {
    opni_metrics_proto::bootstrap::v1::bootstrap_client::BootstrapClient::with_interceptor(
        management_channel(gw.management_addr).await,
        BearerAuth(gw.admin_token.clone()),
    )
    .create_token(opni_metrics_proto::bootstrap::v1::CreateTokenRequest {
        ttl: None,
        max_uses,
        labels: Default::default(),
    })
    .await
    .unwrap()
    .into_inner()
}

/// The config of an agent that joins `gw` with `token` as `cluster` (generated when `None`),
/// verifying it with its CA file, and keeps its identity under `data_dir`.
pub fn joining_agent_config(
    certs: &Certs,
    gw: &RunningGateway,
    data_dir: &std::path::Path,
    token: &str,
    cluster: Option<&str>,
) -> AgentConfig {
    let mut ac = agent_config(&certs.agent, &gw.grpc_addr.to_string());
    ac.gateway.tls = None;
    ac.data_dir = data_dir.to_owned();
    ac.bootstrap.token = Some(token.to_owned());
    ac.bootstrap.cluster_id = cluster.map(str::to_owned);
    ac.bootstrap.ca_file = Some(gw.ca_path.clone());
    ac
}

/// A channel to `gw`'s agent listener presenting the identity in `files` (which never change).
pub fn identity_channel(gw: &RunningGateway, files: &TlsFiles) -> opni_metrics_transport::channel::GatewayChannel {
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(files.client_config().unwrap()));
    std::mem::forget(tx);
    opni_metrics_transport::channel::GatewayChannel::new(
        &gw.grpc_addr.to_string(),
        "localhost",
        rx,
        &opni_metrics_transport::grpc::ChannelOptions::default(),
    )
    .unwrap()
}

/// A one-series remote-write 1.0 `Push`, as the agent sends it.
pub fn push_request() -> opni_metrics_proto::remote::v1::PushRequest {
    opni_metrics_proto::remote::v1::PushRequest {
        body: snap::raw::Encoder::new().compress_vec(&body(1)).unwrap().into(),
        content_type: "application/x-protobuf".into(),
        content_encoding: "snappy".into(),
        ..Default::default()
    }
}
