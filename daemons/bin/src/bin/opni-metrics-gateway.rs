//! `opni-metrics-gateway`: receives remote write from agents over mutual TLS and forwards it to
//! a Cortex-compatible store under each agent's tenant.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use opni_metrics_daemons::config::gateway::GatewayConfig;
use opni_metrics_daemons::{LogFormat, Refusal, load_yaml, refusal, serve};
use opni_metrics_transport::tls::TlsFiles;

/// The opni-metrics gateway.
///
/// Agents connect over gRPC with mutual TLS 1.3; each agent's tenant is the cluster id in its
/// client certificate (URI SAN `urn:opni-metrics:cluster:<id>`), never anything in the request.
/// Remote-write bodies are forwarded byte for byte to the upstream with exactly one tenant
/// header. Settings come from the YAML file, then environment variables, then flags (flags win).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// YAML config file (camelCase keys: grpc, http, management, query, readers, upstream,
    /// remoteWrite, store, kubernetes, log).
    #[arg(long, short = 'c', env = "OPNI_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// Agent-facing gRPC listen address (grpc.listen).
    #[arg(long, env = "OPNI_GATEWAY_GRPC_LISTEN")]
    grpc_listen: Option<String>,
    /// Ops HTTP listen address for /metrics, /healthz, /readyz (http.listen).
    #[arg(long, env = "OPNI_GATEWAY_HTTP_LISTEN")]
    http_listen: Option<String>,
    /// Server certificate, PEM (grpc.tls.cert).
    #[arg(long, env = "OPNI_GATEWAY_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// Server key, PEM (grpc.tls.key).
    #[arg(long, env = "OPNI_GATEWAY_TLS_KEY", requires_all = ["tls_cert", "tls_ca"])]
    tls_key: Option<PathBuf>,
    /// CA bundle that signs agent certificates, PEM (grpc.tls.ca).
    #[arg(long, env = "OPNI_GATEWAY_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// Data directory: embedded store, CA, admin token (dataDir).
    #[arg(long, env = "OPNI_GATEWAY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Management gRPC listen address, loopback only (management.listen).
    #[arg(long, env = "OPNI_GATEWAY_MANAGEMENT_LISTEN")]
    management_listen: Option<String>,
    /// Query proxy listen address, the Prometheus API for Grafana (query.listen).
    #[arg(long, env = "OPNI_GATEWAY_QUERY_LISTEN")]
    query_listen: Option<String>,
    /// OpenID Connect issuer whose tokens readers may present (readers.oidc.issuer).
    #[arg(long, env = "OPNI_GATEWAY_OIDC_ISSUER", requires = "oidc_audience")]
    oidc_issuer: Option<String>,
    /// Audience (client id) reader tokens must carry (readers.oidc.audience).
    #[arg(long, env = "OPNI_GATEWAY_OIDC_AUDIENCE", requires = "oidc_issuer")]
    oidc_audience: Option<String>,
    /// Upstream push URL, e.g. http://cortex:8080/api/v1/push (upstream.url).
    #[arg(long, env = "OPNI_GATEWAY_UPSTREAM_URL")]
    upstream_url: Option<String>,
    /// Header carrying the tenant upstream (upstream.tenantHeader).
    #[arg(long, env = "OPNI_GATEWAY_UPSTREAM_TENANT_HEADER")]
    upstream_tenant_header: Option<String>,
    /// Log format (log.format).
    #[arg(long, env = "OPNI_GATEWAY_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter in RUST_LOG syntax, e.g. info or debug (log.level).
    #[arg(long, env = "OPNI_GATEWAY_LOG_LEVEL")]
    log_level: Option<String>,
    /// Largest HTTP/2 frame accepted from agents, bytes (grpc.maxFrameSize).
    #[arg(long, env = "OPNI_GATEWAY_GRPC_MAX_FRAME_SIZE")]
    grpc_max_frame_size: Option<u32>,
    /// Threads running the gateway's tasks, 0 for one per CPU; default one per CPU (runtime.workerThreads).
    #[arg(long, env = "OPNI_GATEWAY_WORKER_THREADS")]
    worker_threads: Option<usize>,
    /// Check the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

fn config(args: &Args) -> Result<GatewayConfig, opni_metrics_daemons::ConfigError> {
    let mut c: GatewayConfig = load_yaml(args.config.as_deref())?;
    if let Some(v) = &args.grpc_listen {
        c.grpc.listen.clone_from(v);
    }
    if let Some(v) = &args.http_listen {
        c.http.listen.clone_from(v);
    }
    if let (Some(cert), Some(key), Some(ca)) = (&args.tls_cert, &args.tls_key, &args.tls_ca) {
        c.grpc.tls = Some(TlsFiles { cert: cert.clone(), key: key.clone(), ca: ca.clone() });
    }
    if let Some(v) = &args.data_dir {
        c.data_dir.clone_from(v);
    }
    if let Some(v) = &args.management_listen {
        c.management.listen.clone_from(v);
    }
    if let Some(v) = &args.query_listen {
        c.query.listen.clone_from(v);
    }
    if let (Some(issuer), Some(audience)) = (&args.oidc_issuer, &args.oidc_audience) {
        let o = c
            .readers
            .oidc
            .get_or_insert_with(|| opni_metrics_daemons::config::readers::OidcConfig::new(issuer, audience));
        o.issuer.clone_from(issuer);
        o.audience.clone_from(audience);
    }
    if let Some(v) = &args.upstream_url {
        c.upstream.url.clone_from(v);
    }
    if let Some(v) = &args.upstream_tenant_header {
        c.upstream.tenant_header.clone_from(v);
    }
    if let Some(v) = args.grpc_max_frame_size {
        c.grpc.max_frame_size = v;
    }
    if let Some(v) = args.worker_threads {
        c.runtime.worker_threads = Some(v);
    }
    c.log.override_with(args.log_format, args.log_level.as_ref());
    Ok(c)
}

async fn run(check_config: bool, cfg: GatewayConfig) -> Result<(), Refusal> {
    let plan = cfg.validate().map_err(refusal("invalid configuration"))?;
    serve(check_config, &cfg.log, || Box::pin(opni_metrics_daemons::start_gateway(plan))).await
}

fn main() -> ExitCode {
    let args = Args::parse();
    let check_config = args.check_config;
    opni_metrics_daemons::run_daemon(
        "opni-metrics-gateway",
        "gateway",
        0,
        config(&args),
        |c: &GatewayConfig| c.runtime,
        |c| Box::pin(run(check_config, c)),
    )
}
