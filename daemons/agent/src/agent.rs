//! [`Agent`]: built from settings and a node driver by [`AgentBuilder`], it hands out its
//! remote-write [`Relay`] for an embedder's own HTTP server or serves it itself, runs the sync
//! loop, and owns every task it starts.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, Response};
use http_body_util::Full;
use opni_metrics_core::driver::{DriverError, NodeDriver};
use opni_metrics_core::node::{NodeConfig, NodeStatus};
use opni_metrics_transport::Tasks;
use opni_metrics_transport::channel::GatewayChannel;
use opni_metrics_transport::grpc::ChannelError;
use opni_metrics_transport::http::{self as http_server, ServerOptions};
use opni_metrics_transport::metrics::{Metered, MetricsLayer};
use opni_metrics_transport::ops::Ops;
use opni_metrics_transport::tls::{TlsError, TlsFiles};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::{Layer, Service, ServiceExt};

use crate::identity::{self, JoinError};
use crate::metrics::AgentMetrics;
use crate::process_driver::{ProcessDriver, ProcessSettings};
use crate::relay::Relay;
use crate::rules::{RuleSyncer, RulesDriver};
use crate::settings::{AgentSettings, IdentitySource};
use crate::sync_loop::{self, SyncState};

/// The push paths: `/api/agent/push`, and as aliases `/api/v1/push` (Cortex's and Mimir's) and
/// `/api/v1/write` (Prometheus's receiver's), so a remote-write URL copied from either works.
pub const PUSH_PATHS: [&str; 3] = ["/api/agent/push", "/api/v1/push", "/api/v1/write"];

/// Why an agent could not be built or start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Joining the gateway failed.
    #[error("join")]
    Join(#[from] JoinError),
    /// TLS files are unusable.
    #[error("gateway.tls")]
    Tls(#[from] TlsError),
    /// The gateway channel could not be set up.
    #[error("gateway")]
    Channel(#[from] ChannelError),
    /// The Kubernetes driver could not be set up.
    #[cfg(feature = "kubernetes")]
    #[error("driver.kubernetes")]
    Kube(#[from] opni_metrics_kube::Error),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A setting cannot work.
    #[error("invalid settings")]
    Settings(#[from] opni_metrics_core::spec::SpecError),
    /// [`Agent::serve`] or [`Agent::start_sync`] was called twice.
    #[error("the agent is already running")]
    AlreadyRunning,
}

/// Options of the process node driver (a child `prometheus` in agent mode).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProcessOptions {
    /// The `prometheus` binary. Default `prometheus`, looked up in `search_path`.
    pub binary: PathBuf,
    /// Longest wait for Prometheus to become ready after a (re)start. Default 30 s.
    pub ready_timeout: Duration,
    /// Directories searched for a bare binary name (the caller's `PATH`). Default none.
    pub search_path: Vec<PathBuf>,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        Self { binary: PathBuf::from("prometheus"), ready_timeout: Duration::from_secs(30), search_path: Vec::new() }
    }
}

/// The driver of an agent without one: applies nothing, reports nothing (Prometheus is
/// managed elsewhere; the agent only relays).
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

enum DriverChoice {
    Custom(Arc<dyn NodeDriver>),
    Process(ProcessOptions),
    #[cfg(feature = "kubernetes")]
    Kubernetes(crate::kubernetes::KubeDriverSettings),
}

/// Builds an [`Agent`]. Every part has a default: no node driver ([`NoDriver`]), metrics in a
/// registry of the agent's own.
#[must_use = "a builder does nothing until built"]
pub struct AgentBuilder {
    settings: AgentSettings,
    driver: DriverChoice,
    metrics: Option<Arc<AgentMetrics>>,
    #[cfg(feature = "kubernetes")]
    rules_client: Option<kube::Client>,
    keeper: Option<Arc<dyn identity::IdentityKeeper>>,
}

impl std::fmt::Debug for AgentBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentBuilder").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl AgentBuilder {
    /// The embedder's own node driver.
    pub fn node_driver(mut self, driver: Arc<dyn NodeDriver>) -> Self {
        self.driver = DriverChoice::Custom(driver);
        self
    }

    /// Runs Prometheus as a child process (its files in `<data_dir>/prometheus`); it is
    /// stopped (keeping its WAL) when the agent shuts down.
    pub fn process_driver(mut self, options: ProcessOptions) -> Self {
        self.driver = DriverChoice::Process(options);
        self
    }

    /// Keeps a prometheus-operator resource as the gateway wants; it outlives the agent.
    #[cfg(feature = "kubernetes")]
    pub fn kubernetes_driver(mut self, settings: crate::kubernetes::KubeDriverSettings) -> Self {
        self.driver = DriverChoice::Kubernetes(settings);
        self
    }

    /// Keeps a joined identity with `keeper` too (e.g. [`identity::SecretKeeper`], a Kubernetes
    /// Secret), so that it survives the loss of the data directory: restored from it at start,
    /// kept in it after joining and after each renewal. Ignored for an identity from files.
    pub fn identity_keeper(mut self, keeper: Arc<dyn identity::IdentityKeeper>) -> Self {
        self.keeper = Some(keeper);
        self
    }

    /// Discovers `PrometheusRule` objects with `client` (the Kubernetes driver's client is used
    /// when that driver is chosen; this is for agents with another driver).
    #[cfg(feature = "kubernetes")]
    pub fn rule_discovery_client(mut self, client: kube::Client) -> Self {
        self.rules_client = Some(client);
        self
    }

    /// Registers the agent's metrics in the embedder's `registry` (default: a registry of the
    /// agent's own, served on `/metrics` by [`Agent::serve`]).
    pub fn metrics(mut self, registry: &mut Registry) -> Self {
        self.metrics = Some(AgentMetrics::register(registry));
        self
    }

    /// Builds the agent: its identity (joining the gateway first if needed), the TLS reload
    /// task, the renewal of a joined identity and the lazily connecting channel. Starts no
    /// sync and binds nothing yet.
    ///
    /// # Errors
    /// [`StartError`]; nothing is left running.
    pub async fn build(self) -> Result<Agent, StartError> {
        let s = self.settings;
        s.validate()?;
        let tasks = Tasks::new();
        let own_registry = self.metrics.is_none();
        let mut registry = Registry::default();
        let metrics = self.metrics.unwrap_or_else(|| AgentMetrics::register(&mut registry));
        let ops = Ops::new(if own_registry { registry } else { Registry::default() });
        let reload = Arc::new(tokio::sync::Notify::new());
        let built = async {
            let (files, renews) = match &s.identity {
                IdentitySource::Files(f) => (f.clone(), false),
                IdentitySource::Join(j) => (
                    identity::ensure(
                        &s.data_dir.join("identity"),
                        &s.gateway_address,
                        &s.gateway_server_name,
                        j,
                        self.keeper.as_deref(),
                    )
                    .await?,
                    true,
                ),
            };
            let tls =
                files.watch_triggered(Duration::from_secs(5), TlsFiles::client_config, &tasks, Arc::clone(&reload))?;
            let channel = GatewayChannel::new(&s.gateway_address, &s.gateway_server_name, tls, &s.channel)?;
            Ok::<_, StartError>((channel, renews))
        }
        .await;
        let channel = match built {
            Ok((c, renews)) => {
                if renews {
                    // the identity the agent got at Join it keeps renewed itself
                    let m = Arc::clone(&metrics);
                    tasks.spawn(
                        "certificate-renewal",
                        identity::keep_renewed(
                            s.data_dir.join("identity"),
                            c.clone(),
                            reload,
                            self.keeper.clone(),
                            move |e| m.renewal(e),
                        ),
                    );
                }
                c
            }
            Err(e) => {
                tasks.abort_all();
                return Err(e);
            }
        };
        let relay = MetricsLayer::new(Arc::clone(&metrics.relay)).layer(Relay::new(
            channel.clone(),
            s.relay,
            Arc::clone(&metrics),
        ));
        let (sync_tx, sync_rx) = watch::channel(SyncState::default());
        Ok(Agent {
            settings: s,
            metrics,
            rules: None,
            #[cfg(feature = "kubernetes")]
            rules_client: self.rules_client,
            relay,
            ops,
            channel,
            pending: Some((self.driver, sync_tx)),
            running_driver: None,
            sync_rx,
            sync_stop: tasks.token().child_token(),
            tasks,
            addr: None,
        })
    }
}

/// A built agent. Dropping it aborts every task it started; [`Agent::shutdown`] stops them
/// gracefully.
pub struct Agent {
    settings: AgentSettings,
    metrics: Arc<AgentMetrics>,
    /// Rule discovery and sync, once started.
    rules: Option<RuleSyncer>,
    /// The client for `PrometheusRule` discovery, until started.
    #[cfg(feature = "kubernetes")]
    rules_client: Option<kube::Client>,
    relay: Metered<Relay>,
    ops: Arc<Ops>,
    channel: GatewayChannel,
    /// What [`Agent::start_sync`] starts (the node driver, the sync loop's state sender);
    /// `None` once started.
    pending: Option<(DriverChoice, watch::Sender<SyncState>)>,
    /// The started driver, and whether shutdown removes what it runs.
    running_driver: Option<(Arc<dyn NodeDriver>, bool)>,
    sync_rx: watch::Receiver<SyncState>,
    tasks: Tasks,
    /// Stops the sync loop (and with it new applies) before the rest at shutdown.
    sync_stop: tokio_util::sync::CancellationToken,
    addr: Option<SocketAddr>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// The agent's HTTP routes: the push paths go to the relay, the rest to the ops endpoints.
#[derive(Clone)]
struct Routes {
    relay: Metered<Relay>,
    ops: Arc<Ops>,
}

impl Service<Request<hyper::body::Incoming>> for Routes {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Full<Bytes>>, Infallible>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<hyper::body::Incoming>) -> Self::Future {
        if PUSH_PATHS.contains(&req.uri().path()) {
            Box::pin(self.relay.clone().oneshot(req))
        } else {
            let resp = self.ops.route_or_404(req.uri().path());
            Box::pin(async move { Ok(resp) })
        }
    }
}

impl Agent {
    /// A builder over `settings`.
    pub fn builder(settings: AgentSettings) -> AgentBuilder {
        AgentBuilder {
            settings,
            driver: DriverChoice::Custom(Arc::new(NoDriver)),
            metrics: None,
            #[cfg(feature = "kubernetes")]
            rules_client: None,
            keeper: None,
        }
    }

    /// The remote-write relay with its metrics layer, a `tower::Service<http::Request<B>>`
    /// for the embedder's own server. Call [`Agent::start_sync`] too.
    pub fn relay(&self) -> Metered<Relay> {
        self.relay.clone()
    }

    /// Serves the push paths and the ops endpoints on `listener`, then starts the node driver
    /// and the sync loop with Prometheus pointed at this listener.
    ///
    /// # Errors
    /// [`StartError`].
    pub async fn serve(&mut self, listener: TcpListener) -> Result<SocketAddr, StartError> {
        if self.addr.is_some() || self.pending.is_none() {
            return Err(StartError::AlreadyRunning);
        }
        let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: self.settings.listen, source })?;
        let routes = Routes { relay: self.relay.clone(), ops: Arc::clone(&self.ops) };
        let opts = ServerOptions {
            header_read_timeout: self.settings.header_read_timeout,
            max_connections: self.settings.max_connections,
            http2_keepalive_interval: self.settings.http2_keepalive_interval,
            http2_keepalive_timeout: self.settings.http2_keepalive_timeout,
            drain_timeout: self.settings.drain_timeout,
            ..ServerOptions::default()
        };
        let stop = self.tasks.token().cancelled_owned();
        self.tasks.spawn_graceful("http", http_server::serve(listener, routes, opts, stop));
        self.addr = Some(addr);
        self.start_sync(addr, format!("http://{addr}{}", PUSH_PATHS[0])).await?;
        tracing::info!(%addr, gateway = %self.settings.gateway_address, "agent started");
        Ok(addr)
    }

    /// Binds [`AgentSettings::listen`] and [`Agent::serve`]s on it.
    ///
    /// # Errors
    /// [`StartError`].
    pub async fn bind_and_serve(&mut self) -> Result<SocketAddr, StartError> {
        let addr = self.settings.listen;
        let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
        self.serve(listener).await
    }

    /// Starts the node driver (Prometheus remote-writes to `push_url`; `addr` is the agent's
    /// own address, scraped for its metrics) and the sync loop. [`Agent::serve`] calls it; an
    /// embedder serving [`Agent::relay`] itself calls it once.
    ///
    /// # Errors
    /// [`StartError`]: the driver could not be set up; [`StartError::AlreadyRunning`].
    pub async fn start_sync(&mut self, addr: SocketAddr, push_url: String) -> Result<(), StartError> {
        let Some((choice, sync_tx)) = self.pending.take() else {
            return Err(StartError::AlreadyRunning);
        };
        #[cfg(feature = "kubernetes")]
        let kube_client = match &choice {
            DriverChoice::Kubernetes(k) => Some(k.client.clone()),
            _ => self.rules_client.take(),
        };
        let (driver, remove_on_shutdown): (Arc<dyn NodeDriver>, bool) = match choice {
            DriverChoice::Custom(d) => (d, false),
            DriverChoice::Process(o) => (
                Arc::new(ProcessDriver::start(
                    ProcessSettings {
                        binary: o.binary,
                        dir: self.settings.data_dir.join("prometheus"),
                        push_url,
                        agent_addr: addr.to_string(),
                        ready_timeout: o.ready_timeout,
                        search_path: o.search_path,
                    },
                    &self.tasks,
                )),
                // a child process does not outlive the agent
                true,
            ),
            // Prometheus run by an operator outlives agent restarts
            #[cfg(feature = "kubernetes")]
            DriverChoice::Kubernetes(k) => (crate::kubernetes::start(k, addr.port(), &self.tasks).await?, false),
        };
        let syncer = RuleSyncer::start(
            self.channel.clone(),
            self.settings.rules,
            #[cfg(feature = "kubernetes")]
            kube_client,
            Arc::clone(&self.metrics),
            &self.tasks,
        );
        let driver: Arc<dyn NodeDriver> = Arc::new(RulesDriver { inner: driver, syncer: syncer.clone() });
        self.rules = Some(syncer);
        self.running_driver = Some((Arc::clone(&driver), remove_on_shutdown));
        let token = self.sync_stop.clone();
        self.tasks.spawn("sync-loop", sync_loop::run(self.channel.clone(), driver, sync_tx, token));
        // ready while connected to the gateway
        let ops = Arc::clone(&self.ops);
        let mut rx = self.sync_rx.clone();
        self.tasks.spawn("readiness", async move {
            loop {
                let connected = rx.borrow_and_update().connected;
                ops.set_ready(connected);
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(())
    }

    /// Reads the rule sources again now (the daemon calls it on SIGHUP); a no-op before
    /// [`Agent::start_sync`].
    pub fn reload_rules(&self) {
        if let Some(r) = &self.rules {
            r.reload();
        }
    }

    /// The sync loop's published state (connected, conditions, applied digest).
    pub fn sync_state(&self) -> watch::Receiver<SyncState> {
        self.sync_rx.clone()
    }

    /// The ops state (`/metrics`, `/healthz`, `/readyz`).
    pub fn ops(&self) -> &Arc<Ops> {
        &self.ops
    }

    /// Where [`Agent::serve`] listens.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Stops accepting, drains in-flight requests, stops the sync loop and, for the process
    /// driver, the local Prometheus (it keeps its WAL), and returns when every task has ended.
    pub async fn shutdown(mut self) {
        self.ops.set_ready(false);
        // order matters: first no new applies; then the local Prometheus stops while the relay
        // still serves, so what it flushes on SIGTERM reaches the gateway; then the rest
        self.sync_stop.cancel();
        if let Some((driver, remove)) = self.running_driver.take()
            && remove
            && let Err(e) = driver.remove().await
        {
            tracing::warn!(error = %e, "stopping prometheus failed");
        }
        let d = self.tasks.shutdown(self.settings.drain_timeout).await;
        if d.aborted > 0 {
            tracing::warn!(aborted = d.aborted, "some work did not finish within the drain timeout");
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}
