//! `opni-metrics-gateway`: receives remote write from agents over mutual TLS and forwards it to
//! a Cortex-compatible store under each agent's tenant.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use opni_metrics_daemons::EXIT_CONFIG;
use opni_metrics_daemons::daemon::{LogFormat, error_chain, init_logging, load_yaml, shutdown_signal};
use opni_metrics_daemons::gateway::{self, GatewayConfig};
use opni_metrics_daemons::tls::TlsFiles;

/// The opni-metrics gateway.
///
/// Agents connect over gRPC with mutual TLS 1.3; each agent's tenant is the cluster id in its
/// client certificate (URI SAN `urn:opni-metrics:cluster:<id>`), never anything in the request.
/// Remote-write bodies are forwarded byte for byte to the upstream with exactly one tenant
/// header. Settings come from the YAML file, then environment variables, then flags (flags win).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// YAML config file (camelCase keys: grpc, http, upstream, remoteWrite, log).
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
    /// Check the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

fn config(args: &Args) -> Result<GatewayConfig, opni_metrics_daemons::daemon::ConfigError> {
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
    if let Some(v) = &args.upstream_url {
        c.upstream.url.clone_from(v);
    }
    if let Some(v) = &args.upstream_tenant_header {
        c.upstream.tenant_header.clone_from(v);
    }
    if let Some(v) = args.log_format {
        c.log.format = v;
    }
    if let Some(v) = &args.log_level {
        c.log.level.clone_from(v);
    }
    Ok(c)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("opni-metrics-gateway: {e}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let settings = match cfg.validate() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("opni-metrics-gateway: invalid configuration: {e}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    if args.check_config {
        println!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    init_logging(cfg.log.format, &cfg.log.level);
    let store = match settings.store.build() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("opni-metrics-gateway: cannot open the store: {}", error_chain(&e));
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let running = match gateway::start(settings, store).await {
        Ok(r) => r,
        Err(e) => {
            let msg = error_chain(&e);
            tracing::error!("cannot start: {msg}");
            eprintln!("opni-metrics-gateway: cannot start: {msg}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    shutdown_signal().await;
    running.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}
