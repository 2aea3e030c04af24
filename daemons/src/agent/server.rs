//! Starting and stopping an agent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use futures::future::BoxFuture;
use opni_metrics_core::driver::{DriverError, NodeDriver};
use opni_metrics_core::node::{NodeConfig, NodeStatus};

use super::config::{AgentSettings, DriverKind};
use super::identity;
use super::process_driver::{ProcessDriver, ProcessSettings};
use super::relay::Relay;
use super::sync_loop::{self, SyncState};
use crate::daemon::Ops;
use crate::grpc::{ChannelError, tls_channel};
use crate::http_server::{self, ServerOptions, text};
use crate::metrics::AgentMetrics;
use crate::tls::{TlsError, TlsFiles};

/// Why an agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Joining the gateway failed.
    #[error("join")]
    Join(#[from] super::identity::JoinError),
    /// TLS files are unusable.
    #[error("gateway.tls")]
    Tls(#[from] TlsError),
    /// The gateway channel could not be set up.
    #[error("gateway")]
    Channel(#[from] ChannelError),
    /// The Kubernetes driver could not be set up.
    #[error("driver.kubernetes")]
    Kube(#[from] crate::kube_client::KubeClientError),
    /// The Kubernetes driver's owner could not be resolved.
    #[error("driver.kubernetes")]
    KubeDriver(#[from] opni_metrics_kube::Error),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A running agent.
pub struct RunningAgent {
    /// Where the HTTP listener is bound.
    pub addr: SocketAddr,
    /// Ops state.
    pub ops: Arc<Ops>,
    /// The sync loop's published state.
    pub sync: watch::Receiver<SyncState>,
    driver: Arc<dyn NodeDriver>,
    remove_on_shutdown: bool,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    sync_task: JoinHandle<()>,
}

impl std::fmt::Debug for RunningAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningAgent").field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// The driver of `DriverKind::None`: applies nothing, reports nothing.
#[derive(Debug, Clone, Copy)]
pub struct NoDriver;

impl NodeDriver for NoDriver {
    fn apply<'a>(&'a self, _: &'a NodeConfig) -> BoxFuture<'a, Result<NodeStatus, DriverError>> {
        Box::pin(async { Ok(NodeStatus::default()) })
    }
    fn remove(&self) -> BoxFuture<'_, Result<(), DriverError>> {
        Box::pin(async { Ok(()) })
    }
    fn status(&self) -> BoxFuture<'_, Result<NodeStatus, DriverError>> {
        Box::pin(async { Ok(NodeStatus::default()) })
    }
}

/// The push paths: `/api/agent/push`, and `/api/v1/push` as an alias.
pub const PUSH_PATHS: [&str; 2] = ["/api/agent/push", "/api/v1/push"];

/// Starts an agent; it serves until [`RunningAgent::shutdown`].
///
/// # Errors
/// [`StartError`].
pub async fn start(settings: AgentSettings) -> Result<RunningAgent, StartError> {
    let mut registry = Registry::default();
    let metrics = Arc::new(AgentMetrics::register(&mut registry));
    let ops = Ops::new(registry);
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|source| StartError::Bind { addr: settings.listen, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: settings.listen, source })?;
    let files = match &settings.tls {
        Some(f) => f.clone(),
        None => {
            let b = &settings.bootstrap;
            identity::ensure(
                &settings.data_dir.join("identity"),
                &settings.gateway_address,
                &settings.gateway_server_name,
                b.token.as_deref(),
                b.cluster_id.as_deref(),
                b.ca_file.as_deref(),
            )
            .await?
        }
    };
    let tls = files.watch(Duration::from_secs(5), TlsFiles::client_config)?;
    let channel = tls_channel(&settings.gateway_address, &settings.gateway_server_name, tls, &settings.channel)?;
    let relay = Arc::new(Relay::new(channel.clone(), settings.relay, metrics));
    let driver: Arc<dyn NodeDriver> = match settings.driver.kind {
        DriverKind::Process => Arc::new(ProcessDriver::start(ProcessSettings {
            binary: settings.driver.prometheus_binary.clone(),
            dir: settings.data_dir.join("prometheus"),
            push_url: format!("http://{addr}{}", PUSH_PATHS[0]),
            agent_addr: addr.to_string(),
            ready_timeout: settings.driver.ready_timeout.as_duration(),
        })),
        DriverKind::Kubernetes => kube_driver(&settings, addr).await?,
        DriverKind::None => Arc::new(NoDriver),
    };
    // Prometheus run by an operator outlives agent restarts; a child process does not
    let remove_on_shutdown = settings.driver.kind == DriverKind::Process;
    let ops_h = Arc::clone(&ops);
    let handler: http_server::Handler = Arc::new(move |req: http::Request<hyper::body::Incoming>| {
        let relay = Arc::clone(&relay);
        let ops = Arc::clone(&ops_h);
        Box::pin(async move {
            let path = req.uri().path();
            if PUSH_PATHS.contains(&path) {
                relay.handle(req).await
            } else {
                ops.route(path).unwrap_or_else(|| text(StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n")))
            }
        }) as futures::future::BoxFuture<'static, http::Response<Full<Bytes>>>
    });
    let (stop, stop_rx) = watch::channel(false);
    let opts = ServerOptions { header_read_timeout: settings.header_read_timeout, ..ServerOptions::default() };
    let mut http_stop = stop_rx.clone();
    let task = tokio::spawn(http_server::serve(listener, handler, opts, async move {
        let _ = http_stop.wait_for(|s| *s).await;
    }));
    let (sync_tx, sync_rx) = watch::channel(SyncState::default());
    let sync_task = tokio::spawn(sync_loop::run(channel, Arc::clone(&driver), sync_tx, stop_rx));
    // ready once connected to the gateway
    let ready_ops = Arc::clone(&ops);
    let mut ready_rx = sync_rx.clone();
    tokio::spawn(async move {
        loop {
            let connected = ready_rx.borrow_and_update().connected;
            ready_ops.set_ready(connected);
            if ready_rx.changed().await.is_err() {
                return;
            }
        }
    });
    tracing::info!(%addr, gateway = %settings.gateway_address, "agent started");
    Ok(RunningAgent { addr, ops, sync: sync_rx, driver, remove_on_shutdown, stop, task, sync_task })
}

impl RunningAgent {
    /// Stops accepting, drains in-flight requests, stops the sync loop and the local
    /// Prometheus (it keeps its WAL), and returns when done.
    pub async fn shutdown(self) {
        self.ops.set_ready(false);
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let _ = self.sync_task.await;
        if self.remove_on_shutdown
            && let Err(e) = self.driver.remove().await
        {
            tracing::warn!(error = %e, "stopping prometheus failed");
        }
    }
}

/// The Kubernetes node driver, with its drift guard running.
async fn kube_driver(settings: &AgentSettings, addr: std::net::SocketAddr) -> Result<Arc<dyn NodeDriver>, StartError> {
    use opni_metrics_kube::node::{KubeNodeDriver, NodeSettings};
    let k = &settings.driver.kubernetes;
    let client = crate::kube_client::client(k.kubeconfig.as_deref()).await?;
    let namespace = k.namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned());
    let owner = match &k.owner_deployment {
        Some(d) => Some(KubeNodeDriver::resolve_owner(&client, &namespace, d).await?),
        None => None,
    };
    let remote_write_url = k
        .remote_write_url
        .clone()
        .unwrap_or_else(|| format!("http://{}.{namespace}.svc:{}{}", k.name, addr.port(), PUSH_PATHS[0]));
    let driver = Arc::new(KubeNodeDriver::new(
        client,
        NodeSettings { namespace, name: k.name.clone(), owner, remote_write_url, strategy: k.strategy },
    ));
    tokio::spawn(Arc::clone(&driver).guard());
    Ok(driver)
}
