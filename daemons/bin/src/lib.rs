//! The opni-metrics reference binaries' shared edge: config files, flags and environment,
//! logging, signals, exit codes, and the wiring from a validated config to the gateway and
//! agent libraries. This is the only crate with clap, anyhow, tracing-subscriber, and a
//! `k8s-openapi` version.
//!
//! # Example
//! ```
//! use opni_metrics_daemons::config::gateway::GatewayConfig;
//!
//! let cfg: GatewayConfig = serde_saphyr::from_str("upstream:\n  url: http://cortex:8080/api/v1/push\n")?;
//! let plan = cfg.validate()?;
//! assert_eq!(plan.settings.upstream.url.host(), Some("cortex"));
//! assert_eq!(opni_metrics_daemons::EXIT_CONFIG, 64);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;

pub mod cli;
pub mod config;
pub mod demo;

pub use opni_metrics_core::error_chain;

/// Exit code of a daemon refusing its configuration (`EX_USAGE`), before binding any port.
pub const EXIT_CONFIG: u8 = 64;
/// Exit code of a daemon that could not start for another reason (a port in use, an
/// unreadable store).
pub const EXIT_FAILURE: u8 = 1;

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid YAML for this daemon (the message names the field and line).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A value is invalid.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field (its YAML path, or the flag).
        field: String,
        /// Why.
        reason: String,
    },
}

impl ConfigError {
    /// An invalid value.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), reason: reason.into() }
    }
}

/// Reads a YAML config file, or the type's defaults when `path` is `None`.
///
/// # Errors
/// [`ConfigError`].
pub fn load_yaml<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T, ConfigError> {
    let Some(path) = path else { return Ok(T::default()) };
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    serde_saphyr::from_str(&text).map_err(|e| ConfigError::Parse { path: shown, message: e.to_string() })
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (coloured only on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Sets up `tracing` to stderr; `filter` uses `RUST_LOG` syntax (e.g. `info,opni=debug`).
pub fn init_logging(format: LogFormat, filter: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
    tracing::info!("shutdown requested; draining in-flight requests");
}

/// Why a daemon did not start: printed as one line, with its exit code.
#[derive(Debug)]
pub struct Refusal {
    code: u8,
    reason: String,
}

fn refusal_with<E: std::error::Error>(code: u8, context: &'static str) -> impl FnOnce(E) -> Refusal {
    move |e| {
        let chain = error_chain(&e);
        Refusal { code, reason: if context.is_empty() { chain } else { format!("{context}: {chain}") } }
    }
}

/// A configuration refusal ([`EXIT_CONFIG`]) prefixed with `context` (`""` for none); for
/// `map_err`.
pub fn refusal<E: std::error::Error>(context: &'static str) -> impl FnOnce(E) -> Refusal {
    refusal_with(EXIT_CONFIG, context)
}

/// A start failure that is not the configuration's fault ([`EXIT_FAILURE`]): a port in use,
/// an unreadable store, an unreachable gateway at join.
pub fn failure<E: std::error::Error>(context: &'static str) -> impl FnOnce(E) -> Refusal {
    refusal_with(EXIT_FAILURE, context)
}

/// A daemon's `main` after its flags: the config (or why not), then the runtime it asks for
/// (`default_workers` threads unless `runtime.workerThreads` says otherwise, thread names
/// `name`), then `run` on that runtime; the exit code of it all ([`exit`]).
pub fn run_daemon<C>(
    program: &str,
    name: &str,
    default_workers: usize,
    config: Result<C, ConfigError>,
    runtime: impl FnOnce(&C) -> config::RuntimeConfig,
    run: impl FnOnce(C) -> futures::future::BoxFuture<'static, Result<(), Refusal>>,
) -> std::process::ExitCode {
    let outcome = config.map_err(refusal("")).and_then(|cfg| {
        let rt = runtime(&cfg).build(name, default_workers).map_err(failure("cannot start the runtime"))?;
        rt.block_on(run(cfg))
    });
    exit(program, outcome)
}

/// The process exit code for a daemon's run: success, or the refusal printed as
/// `program: reason` with its code.
pub fn exit(program: &str, run: Result<(), Refusal>) -> std::process::ExitCode {
    match run {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(Refusal { code, reason }) => {
            tracing::error!("{reason}");
            eprintln!("{program}: {reason}");
            std::process::ExitCode::from(code)
        }
    }
}

/// A started daemon that can be stopped gracefully.
pub trait Running {
    /// Stops it, draining in-flight work.
    fn stop(self) -> futures::future::BoxFuture<'static, ()>;
    /// Re-reads what it reads from disk (SIGHUP); nothing by default.
    fn reload(&self) {}
}

impl Running for opni_metrics_gateway::Gateway {
    fn stop(self) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(self.shutdown())
    }
}

impl Running for opni_metrics_agent::Agent {
    fn stop(self) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(self.shutdown())
    }
    /// Re-reads the rule files.
    fn reload(&self) {
        tracing::info!("SIGHUP: reading the rule files again");
        self.reload_rules();
    }
}

/// Calls `reload` on every SIGHUP until the future is dropped.
async fn reload_on_hangup(running: &impl Running) {
    #[cfg(unix)]
    if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        while hup.recv().await.is_some() {
            running.reload();
        }
    }
    futures::future::pending::<()>().await;
}

/// What every daemon main does after validating its configuration: with `--check-config`
/// says so and returns; otherwise sets up logging, starts, serves until SIGTERM or SIGINT and
/// shuts down gracefully; SIGHUP asks it to [reload](Running::reload).
///
/// # Errors
/// The start's [`Refusal`].
pub async fn serve<R: Running>(
    check_config: bool,
    log: &config::gateway::LogConfig,
    start: impl FnOnce() -> futures::future::BoxFuture<'static, Result<R, Refusal>>,
) -> Result<(), Refusal> {
    if check_config {
        println!("configuration is valid");
        return Ok(());
    }
    init_logging(log.format, &log.level);
    let running = start().await?;
    tokio::select! {
        () = shutdown_signal() => {}
        () = reload_on_hangup(&running) => {}
    }
    running.stop().await;
    tracing::info!("stopped");
    Ok(())
}

/// This host's name (`HOSTNAME`, else the kernel's), for identities such as a Lease holder.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_owned()))
        .unwrap_or_else(|| "opni-metrics-gateway".to_owned())
}

/// The directories of `PATH`, where the process driver looks for a bare binary name.
pub fn search_path() -> Vec<std::path::PathBuf> {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default()
}

/// Builds a gateway from a validated plan: opens the store, builds the Kubernetes client when
/// configured, and serves on the configured listeners.
///
/// # Errors
/// A [`Refusal`]: exit 1 for a store that cannot be opened or a port in use.
pub async fn start_gateway(plan: config::gateway::GatewayPlan) -> Result<opni_metrics_gateway::Gateway, Refusal> {
    let mut builder = opni_metrics_gateway::Gateway::builder(plan.settings);
    match &plan.store {
        // replicas on one etcd elect the one that runs the uninstall tasks
        opni_metrics_store::StoreConfig::Etcd(cfg) => {
            let etcd =
                Arc::new(opni_metrics_store::etcd::EtcdStore::new(cfg).map_err(failure("cannot open the store"))?);
            let replica = format!("{}-{}", host_name(), std::process::id());
            let es =
                opni_metrics_store::etcd::ElectionSettings::new("gateway", replica.clone()).with_ttl(plan.election_ttl);
            let election =
                opni_metrics_store::etcd::Election::new(Arc::clone(&etcd), es).map_err(failure("store.etcd"))?;
            let leading = election.leading();
            // which replica holds each agent's stream, in keys that go with the replica's lease
            let session = opni_metrics_store::etcd::Session::new(Arc::clone(&etcd), plan.election_ttl);
            let presence = opni_metrics_gateway::sync::SessionPresence::new(
                Arc::clone(&session),
                Arc::clone(&etcd) as Arc<dyn opni_metrics_core::store::Store>,
                replica,
            );
            builder = builder
                .store(etcd)
                .leader_election(leading, Box::new(move |stop| Box::pin(election.run(stop))))
                .presence(Arc::new(presence), Box::new(move |stop| Box::pin(session.run(stop))));
        }
        _ => builder = builder.store(plan.store.build().map_err(failure("cannot open the store"))?),
    }
    if let Some(k) = plan.kubernetes {
        let client = opni_metrics_kube::client::client(k.kubeconfig.as_deref()).await.map_err(failure("kubernetes"))?;
        let namespace = k.namespace.unwrap_or_else(|| client.default_namespace().to_owned());
        let mut ks = opni_metrics_gateway::kubernetes::KubernetesSettings::new(client, namespace.clone());
        ks.monitoring_cluster = k.monitoring_cluster;
        ks.lease = k.lease.map(|mut l| {
            if l.namespace.is_empty() {
                l.namespace = namespace;
            }
            l
        });
        builder = builder.kubernetes(ks);
    }
    let mut gateway = builder.build().await.map_err(failure("cannot start"))?;
    gateway.bind_and_serve().await.map_err(failure("cannot start"))?;
    Ok(gateway)
}

/// Builds an agent from a validated plan (joining the gateway if needed) with the configured
/// node driver, and serves on the configured listener.
///
/// # Errors
/// A [`Refusal`]: exit 1 for a failed join, a port in use or an unusable Kubernetes client.
pub async fn start_agent(plan: config::agent::AgentPlan) -> Result<opni_metrics_agent::Agent, Refusal> {
    use config::agent::DriverKind;
    let mut builder = opni_metrics_agent::Agent::builder(plan.settings);
    // one Kubernetes client and namespace, for the identity Secret and the node driver alike
    let k = &plan.driver.kubernetes;
    let kube = if plan.identity_secret.is_some() || plan.driver.kind == DriverKind::Kubernetes {
        let what = if plan.identity_secret.is_some() { "bootstrap.identitySecret" } else { "driver.kubernetes" };
        let client = opni_metrics_kube::client::client(k.kubeconfig.as_deref()).await.map_err(failure(what))?;
        let namespace = k.namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned());
        Some((client, namespace))
    } else {
        None
    };
    if let (Some(name), Some((client, namespace))) = (&plan.identity_secret, &kube) {
        builder = builder.identity_keeper(std::sync::Arc::new(opni_metrics_agent::identity::SecretKeeper::new(
            client.clone(),
            namespace.clone(),
            name,
        )));
    }
    match plan.driver.kind {
        DriverKind::None => {}
        DriverKind::Process => {
            let mut o = opni_metrics_agent::ProcessOptions::default();
            o.binary = plan.driver.prometheus_binary.clone();
            o.ready_timeout = plan.driver.ready_timeout.as_duration();
            o.search_path = search_path();
            builder = builder.process_driver(o);
        }
        // (the client was made above whenever the driver is Kubernetes)
        DriverKind::Kubernetes => {
            if let Some((client, namespace)) = kube {
                let mut ks = opni_metrics_agent::kubernetes::KubeDriverSettings::new(client, namespace);
                ks.name.clone_from(&k.name);
                ks.owner_deployment.clone_from(&k.owner_deployment);
                ks.remote_write_url.clone_from(&k.remote_write_url);
                ks.strategy = k.strategy;
                builder = builder.kubernetes_driver(ks);
            }
        }
    }
    let mut agent = builder.build().await.map_err(failure("cannot start"))?;
    agent.bind_and_serve().await.map_err(failure("cannot start"))?;
    Ok(agent)
}
