//! `opni-metrics-demo`: a complete local system with embedded defaults — a real Prometheus
//! remote-write receiver as the upstream, a gateway, an agent that joins with a bootstrap token
//! and runs a real Prometheus in agent mode, and the metrics capability installed — then it
//! shows the agent's metrics arriving upstream under the cluster's tenant. Ctrl-C stops it.

// configs read best as defaults plus the few changes
#![allow(clippy::field_reassign_with_default)]

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use opni_metrics_core::{CapabilityName, ClusterId, error_chain};
use opni_metrics_daemons::config::agent::AgentConfig;
use opni_metrics_daemons::config::gateway::GatewayConfig;
use opni_metrics_daemons::demo::{find_prometheus, free_port, http_get, start_receiver, wait_for};
use opni_metrics_daemons::{LogFormat, init_logging, shutdown_signal};
use opni_metrics_gateway::cluster_driver::TenantDeletion;
use opni_metrics_gateway::state::now;

const CLUSTER: &str = "demo-cluster";

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
    gc.query.listen = "127.0.0.1:0".into();
    gc.upstream.url = format!("{recv}/api/v1/write");
    // a Prometheus receiver serves its query API at /api/v1 (Cortex at /prometheus/api/v1)
    gc.upstream.query_url = Some(recv.clone());
    gc.upstream.tenant_deletion = TenantDeletion::Unsupported;
    // the upstream is a Prometheus receiver: its readiness is /-/ready
    gc.upstream.ready_path = "/-/ready".into();
    let gw = opni_metrics_daemons::start_gateway(gc.validate().map_err(|e| anyhow!("{e}"))?)
        .await
        .map_err(|e| anyhow!("{e:?}"))?;
    let addrs = gw.addresses().context("the gateway is not serving")?;
    let admin_token = gw.admin_token().context("no admin token")?.to_owned();
    println!("  gateway    agents (gRPC, mTLS)                {}", addrs.grpc);
    println!("             management (gRPC, admin token)     {}", addrs.management);
    println!("             query proxy (Prometheus API)       http://{}/prometheus", addrs.query);
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

    // a reader: a role for the demo cluster, bound to an API key, as `opni-metrics rbac` and
    // `opni-metrics keys create` do
    let key = {
        use opni_metrics_proto::rbac::v1::{CreateApiKeyRequest, Role, RoleBinding, rbac_client::RbacClient};
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", addrs.management))?.connect().await?;
        let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {admin_token}").parse()?;
        let mut c = RbacClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", bearer.clone());
            Ok(r)
        });
        let fail = |what: &'static str| move |s: tonic::Status| anyhow!("{what}: {}", s.message());
        c.create_role(Role { name: "demo".into(), cluster_ids: vec![CLUSTER.into()], selector: None })
            .await
            .map_err(fail("create role"))?;
        let subjects = vec!["user:apikey:demo-reader".into()];
        c.create_role_binding(RoleBinding { name: "demo-reader".into(), role: "demo".into(), subjects })
            .await
            .map_err(fail("create role binding"))?;
        let req = CreateApiKeyRequest { name: "demo-reader".into(), subject: String::new(), groups: vec![] };
        c.create_api_key(req).await.map_err(fail("create API key"))?.into_inner().key
    };
    let proxied = format!("http://{}/prometheus/api/v1/query?query=up", addrs.query);
    let (status, body) = opni_metrics_daemons::demo::http_get_with(&proxied, &format!("Bearer {key}")).await?;
    anyhow::ensure!(status == 200 && body.contains("opni-agent"), "the query proxy answered {status}: {body}");
    println!("the query proxy answers for API key `demo-reader` (role `demo`: cluster {CLUSTER})");
    let console = format!("http://{}/console/", addrs.query);
    let (status, body) = opni_metrics_daemons::demo::http_get(&format!("{console}login")).await?;
    anyhow::ensure!(status == 200 && body.contains("Sign in"), "the console answered {status}");
    println!(
        "the admin console is at {console}: sign in with the admin token ({}) as admin, or the API key as a reader",
        dir.join("gateway/admin.token").display()
    );
    println!("\nlook (from this checkout, in another terminal):");
    println!("  curl '{recv}/api/v1/query?query=opni_agent_remote_write_requests_total'");
    println!("  curl -s http://{}/metrics | grep opni_gateway_remote_write", addrs.http);
    println!("  curl -H 'Authorization: Bearer {key}' '{proxied}'");
    println!(
        "  cargo run -q -p opni-metrics-daemons --bin opni-metrics -- --address {} --api-key {key} query 'sum by (job) (up)'",
        addrs.management
    );
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
