//! `opni-metrics-agent`: receives Prometheus remote write and relays every request to the
//! gateway, answering only once the gateway and its upstream answered.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use opni_metrics_daemons::config::agent::{AgentConfig, DriverKind};
use opni_metrics_daemons::{LogFormat, Refusal, load_yaml, refusal, serve};
use opni_metrics_transport::tls::TlsFiles;

/// The opni-metrics agent.
///
/// Point Prometheus's remote_write at `http://<listen>/api/agent/push`. Each request is checked
/// (content type, snappy framing, declared size) and relayed to the gateway as one gRPC call over
/// mutual TLS; Prometheus gets the upstream's answer under the status rules (data errors pass
/// through, faults become a retryable 503). Settings come from the YAML file, then environment
/// variables, then flags (flags win).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// YAML config file (camelCase keys: http, gateway, remoteWrite, log).
    #[arg(long, short = 'c', env = "OPNI_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address for remote write, /metrics, /healthz, /readyz (http.listen).
    #[arg(long, env = "OPNI_AGENT_LISTEN")]
    listen: Option<String>,
    /// Gateway gRPC address host:port (gateway.address).
    #[arg(long, env = "OPNI_AGENT_GATEWAY")]
    gateway: Option<String>,
    /// Name the gateway's certificate must carry (gateway.serverName).
    #[arg(long, env = "OPNI_AGENT_GATEWAY_SERVER_NAME")]
    gateway_server_name: Option<String>,
    /// This agent's certificate, PEM (gateway.tls.cert).
    #[arg(long, env = "OPNI_AGENT_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// This agent's key, PEM (gateway.tls.key).
    #[arg(long, env = "OPNI_AGENT_TLS_KEY", requires_all = ["tls_cert", "tls_ca"])]
    tls_key: Option<PathBuf>,
    /// CA bundle that signs the gateway's certificate, PEM (gateway.tls.ca).
    #[arg(long, env = "OPNI_AGENT_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// Data directory: identity and Prometheus files (dataDir).
    #[arg(long, env = "OPNI_AGENT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Bootstrap token for the first join (bootstrap.token).
    #[arg(long, env = "OPNI_AGENT_BOOTSTRAP_TOKEN", hide_env_values = true)]
    bootstrap_token: Option<String>,
    /// Cluster id to join as (bootstrap.clusterId).
    #[arg(long, env = "OPNI_AGENT_CLUSTER_ID")]
    cluster_id: Option<String>,
    /// CA file that signs the gateway's certificate, for the first join (bootstrap.caFile).
    #[arg(long, env = "OPNI_AGENT_GATEWAY_CA")]
    gateway_ca: Option<PathBuf>,
    /// Instead of --gateway-ca: the pin of the gateway's CA, `sha256:<hex>` as `opni-metrics
    /// tokens create` prints it (bootstrap.caPin).
    #[arg(long, env = "OPNI_AGENT_GATEWAY_CA_PIN", conflicts_with = "gateway_ca")]
    gateway_ca_pin: Option<String>,
    /// Node driver: process (run prometheus) or none (relay only) (driver.kind).
    #[arg(long, env = "OPNI_AGENT_DRIVER", value_parser = ["process", "none"])]
    driver: Option<String>,
    /// The prometheus binary for the process driver (driver.prometheusBinary).
    #[arg(long, env = "OPNI_AGENT_PROMETHEUS")]
    prometheus_binary: Option<PathBuf>,
    /// Decompress and check every body's structure (remoteWrite.validate).
    #[arg(long, env = "OPNI_AGENT_VALIDATE")]
    validate: bool,
    /// Log format (log.format).
    #[arg(long, env = "OPNI_AGENT_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter in RUST_LOG syntax (log.level).
    #[arg(long, env = "OPNI_AGENT_LOG_LEVEL")]
    log_level: Option<String>,
    /// Threads running the agent's tasks, 0 for one per CPU; default 1 (runtime.workerThreads).
    #[arg(long, env = "OPNI_AGENT_WORKER_THREADS")]
    worker_threads: Option<usize>,
    /// Check the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

fn config(args: &Args) -> Result<AgentConfig, opni_metrics_daemons::ConfigError> {
    let mut c: AgentConfig = load_yaml(args.config.as_deref())?;
    if let Some(v) = &args.listen {
        c.http.listen.clone_from(v);
    }
    if let Some(v) = &args.gateway {
        c.gateway.address.clone_from(v);
    }
    if let Some(v) = &args.gateway_server_name {
        c.gateway.server_name = Some(v.clone());
    }
    if let (Some(cert), Some(key), Some(ca)) = (&args.tls_cert, &args.tls_key, &args.tls_ca) {
        c.gateway.tls = Some(TlsFiles { cert: cert.clone(), key: key.clone(), ca: ca.clone() });
    }
    if let Some(v) = &args.data_dir {
        c.data_dir.clone_from(v);
    }
    if let Some(v) = &args.bootstrap_token {
        c.bootstrap.token = Some(v.clone());
    }
    if let Some(v) = &args.cluster_id {
        c.bootstrap.cluster_id = Some(v.clone());
    }
    if let Some(v) = &args.gateway_ca {
        c.bootstrap.ca_file = Some(v.clone());
    }
    if let Some(v) = &args.gateway_ca_pin {
        c.bootstrap.ca_pin = Some(v.clone());
    }
    match args.driver.as_deref() {
        Some("none") => c.driver.kind = DriverKind::None,
        Some(_) => c.driver.kind = DriverKind::Process,
        None => {}
    }
    if let Some(v) = &args.prometheus_binary {
        c.driver.prometheus_binary.clone_from(v);
    }
    if args.validate {
        c.remote_write.validate = true;
    }
    if let Some(v) = args.worker_threads {
        c.runtime.worker_threads = Some(v);
    }
    c.log.override_with(args.log_format, args.log_level.as_ref());
    Ok(c)
}

async fn run(check_config: bool, cfg: AgentConfig) -> Result<(), Refusal> {
    let plan = cfg.validate().map_err(refusal("invalid configuration"))?;
    serve(check_config, &cfg.log, || Box::pin(opni_metrics_daemons::start_agent(plan))).await
}

fn main() -> ExitCode {
    let args = Args::parse();
    let check_config = args.check_config;
    opni_metrics_daemons::run_daemon(
        "opni-metrics-agent",
        "agent",
        1,
        config(&args),
        |c: &AgentConfig| c.runtime,
        |c| Box::pin(run(check_config, c)),
    )
}
