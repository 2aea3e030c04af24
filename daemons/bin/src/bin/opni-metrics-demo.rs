//! `opni-metrics-demo`: a complete local system with embedded defaults — a real Prometheus
//! remote-write receiver as the upstream, a gateway, an agent that joins with a bootstrap token
//! and runs a real Prometheus in agent mode, and the metrics capability installed — then it
//! shows the agent's metrics arriving upstream under the cluster's tenant. Ctrl-C stops it.

// configs read best as defaults plus the few changes
#![allow(clippy::field_reassign_with_default)]

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use opni_metrics_core::{CapabilityName, ClusterId, error_chain};
use opni_metrics_daemons::config::agent::AgentConfig;
use opni_metrics_daemons::config::gateway::GatewayConfig;
use opni_metrics_daemons::{LogFormat, init_logging, shutdown_signal};
use opni_metrics_gateway::cluster_driver::TenantDeletion;
use opni_metrics_gateway::state::now;

const CLUSTER: &str = "demo-cluster";

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn which(bin: &str) -> Option<PathBuf> {
    opni_metrics_daemons::search_path().into_iter().map(|d| d.join(bin)).find(|p| p.is_file())
}

/// Prometheus from `PATH`; installed from Debian's packages first when missing and this is
/// root on a machine with apt-get (as `.ci/test` does).
fn find_prometheus() -> Result<PathBuf> {
    if let Some(p) = which("prometheus") {
        return Ok(p);
    }
    let root = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")));
    if root && which("apt-get").is_some() {
        println!("prometheus is missing; installing it with apt-get (Debian package `prometheus`)…");
        let ok = |args: &[&str]| {
            std::process::Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if ok(&["update", "-qq"]) && ok(&["install", "-y", "-qq", "--no-install-recommends", "prometheus"]) {
            // the package starts its own service on the default port; the demo needs only the binary
            let _ = std::process::Command::new("systemctl").args(["stop", "prometheus"]).status();
            if let Some(p) = which("prometheus") {
                return Ok(p);
            }
        }
    }
    Err(anyhow!(
        "prometheus is not installed; install it with `sudo apt-get install -y prometheus` and run the demo again"
    ))
}

async fn http_get(url: &str) -> Result<(u16, String)> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let resp = client.get(url.parse()?).await?;
    let status = resp.status().as_u16();
    let body = http_body_util::BodyExt::collect(resp.into_body()).await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn wait_for(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("{what} did not happen within {limit:?}")
}

fn start_receiver(bin: &Path, dir: &Path, port: u16) -> Result<tokio::process::Child> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("prometheus.yml"), "global:\n  scrape_interval: 1h\n")?;
    let log = std::fs::File::create(dir.join("prometheus.log"))?;
    tokio::process::Command::new(bin)
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting the receiver prometheus")
}

async fn run() -> Result<()> {
    let prometheus = find_prometheus()?;
    init_logging(LogFormat::Text, "warn,opni_metrics_daemons=info,opni_metrics_gateway=info,opni_metrics_agent=info");
    let dir = std::env::current_dir()?.join(".demo");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    println!("opni-metrics demo — everything runs on 127.0.0.1, state in {}\n", dir.display());

    let recv_port = free_port()?;
    let mut receiver = start_receiver(&prometheus, &dir.join("receiver"), recv_port)?;
    let recv = format!("http://127.0.0.1:{recv_port}");
    wait_for("the receiver prometheus to become ready", Duration::from_secs(30), async || {
        http_get(&format!("{recv}/-/ready")).await.is_ok_and(|(s, _)| s == 200)
    })
    .await?;
    println!("  upstream   Prometheus remote-write receiver   {recv}");

    let mut gc = GatewayConfig::default();
    gc.data_dir = dir.join("gateway");
    gc.grpc.listen = "127.0.0.1:0".into();
    gc.http.listen = "127.0.0.1:0".into();
    gc.management.listen = "127.0.0.1:0".into();
    gc.upstream.url = format!("{recv}/api/v1/write");
    gc.upstream.tenant_deletion = TenantDeletion::Unsupported;
    let gw = opni_metrics_daemons::start_gateway(gc.validate().map_err(|e| anyhow!("{e}"))?)
        .await
        .map_err(|e| anyhow!("{e:?}"))?;
    let addrs = gw.addresses().context("the gateway is not serving")?;
    let admin_token = gw.admin_token().context("no admin token")?.to_owned();
    println!("  gateway    agents (gRPC, mTLS)                {}", addrs.grpc);
    println!("             management (gRPC, admin token)     {}", addrs.management);
    println!("             /metrics /healthz /readyz          http://{}", addrs.http);

    // a bootstrap token through the management API, as `opni-metrics tokens create` does
    let token = {
        use opni_metrics_proto::bootstrap::v1::{CreateTokenRequest, bootstrap_client::BootstrapClient};
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", addrs.management))?.connect().await?;
        let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {admin_token}").parse()?;
        let mut c = BootstrapClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", bearer.clone());
            Ok(r)
        });
        let req = CreateTokenRequest {
            ttl: Some(prost_types::Duration { seconds: 600, nanos: 0 }),
            max_uses: 1,
            labels: Default::default(),
        };
        c.create_token(req).await.map_err(|s| anyhow!("create token: {}", s.message()))?.into_inner().token
    };

    let mut ac = AgentConfig::default();
    ac.data_dir = dir.join("agent");
    ac.http.listen = "127.0.0.1:0".into();
    ac.gateway.address = addrs.grpc.to_string();
    ac.gateway.server_name = Some("localhost".into());
    ac.bootstrap.token = Some(token);
    ac.bootstrap.cluster_id = Some(CLUSTER.into());
    ac.bootstrap.ca_file = Some(gw.ca_path());
    ac.driver.prometheus_binary = prometheus;
    let agent = opni_metrics_daemons::start_agent(ac.validate().map_err(|e| anyhow!("{e}"))?)
        .await
        .map_err(|e| anyhow!("{e:?}"))?;
    let agent_addr = agent.addr().context("the agent is not serving")?;
    println!("  agent      joined as cluster {CLUSTER:<19} http://{agent_addr} (remote write at /api/agent/push)");

    // install the capability, as `opni-metrics capability install` does
    let id = ClusterId::new(CLUSTER)?;
    gw.state()
        .update_cluster(&id, |c| c.install(CapabilityName::metrics(), now()))
        .await
        .map_err(|e| anyhow!("{}", error_chain(&e)))?;
    println!("\ncapability `metrics` installed on {CLUSTER}; the agent starts its Prometheus…");

    let query = format!("{recv}/api/v1/query?query=up%7Bjob%3D%22opni-agent%22%7D");
    wait_for("the agent's metrics to arrive upstream", Duration::from_secs(90), async || {
        http_get(&query).await.is_ok_and(|(s, b)| s == 200 && b.contains("opni-agent"))
    })
    .await?;
    println!("\nmetrics are flowing: Prometheus (agent mode) -> agent -> gateway (mTLS, tenant {CLUSTER}) -> receiver");
    println!("\nlook (from this checkout, in another terminal):");
    println!("  curl '{recv}/api/v1/query?query=opni_agent_remote_write_requests_total'");
    println!("  curl -s http://{}/metrics | grep opni_gateway_remote_write", addrs.http);
    println!(
        "  cargo run -q -p opni-metrics-daemons --bin opni-metrics -- --address {} --token-file {} capability status {CLUSTER}",
        addrs.management,
        dir.join("gateway/admin.token").display()
    );
    println!("\nCtrl-C stops everything.");
    shutdown_signal().await;
    agent.shutdown().await;
    gw.shutdown().await;
    let _ = receiver.kill().await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("opni-metrics-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}
