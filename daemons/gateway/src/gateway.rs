//! [`Gateway`]: built from settings and parts by [`GatewayBuilder`], it hands out its gRPC
//! services for an embedder's own servers or serves them itself, and owns every task it starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use opni_metrics_core::driver::ClusterDriver;
use opni_metrics_core::node::UpstreamState;
use opni_metrics_core::remote_write::{ForwardError, ForwardRequest, ForwardResponse};
use opni_metrics_core::store::Store;
use opni_metrics_proto::bootstrap::v1::bootstrap_server::BootstrapServer;
use opni_metrics_proto::capability::v1::capability_server::CapabilityServer;
use opni_metrics_proto::clusters::v1::clusters_server::ClustersServer;
use opni_metrics_proto::node::v1::node_sync_server::NodeSyncServer;
use opni_metrics_proto::nodeconfig::v1::node_configuration_server::NodeConfigurationServer;
use opni_metrics_proto::remote::v1::remote_write_server::RemoteWriteServer;
use opni_metrics_transport::Tasks;
use opni_metrics_transport::grpc::{IncomingLimits, tls_incoming, tls_incoming_limited};
use opni_metrics_transport::http::{self as http_server, ServerOptions};
use opni_metrics_transport::ops::Ops;
use opni_metrics_transport::tls::{TlsError, TlsFiles};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service};

use crate::auth::{AdminToken, Authenticator, interceptor, require_identity};
use crate::bootstrap::BootstrapService;
use crate::ca::{Ca, CaError};
use crate::capability::CapabilityService;
use crate::cluster_driver::ExternalCluster;
use crate::clusters::ClustersService;
use crate::cortex_api::CortexApi;
use crate::cortexadmin::CortexAdminService;
use crate::cortexops::CortexOpsService;
use crate::forward::HttpClient;
use crate::forward::{ForwardService, Forwarder, UpstreamError, stack};
use crate::metrics::GatewayMetrics;
use crate::nodeconfig::NodeConfigService;
use crate::query::QueryProxy;
use crate::rbac::RbacService;
use crate::readers::Readers;
use crate::remote_write::RemoteWriteService;
use crate::rule_sync::RuleSync;
use crate::settings::ListenerTls;
use crate::settings::{GatewaySettings, Listen};
use crate::state::{State, StateError};
use crate::sync::{Hub, NodeSyncService, StatusCache, os_seed, watch_store};
use crate::uninstall::Uninstaller;
use crate::upstream::UpstreamWatch;
use opni_metrics_proto::cortexadmin::v1::cortex_admin_server::CortexAdminServer;
use opni_metrics_proto::cortexops::v1::cortex_ops_server::CortexOpsServer;
use opni_metrics_proto::rbac::v1::rbac_server::RbacServer;

/// Why a gateway could not be built or start serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A setting cannot work.
    #[error("invalid settings")]
    Settings(#[from] opni_metrics_core::spec::SpecError),
    /// No store was given to the builder.
    #[error("no store: call GatewayBuilder::store")]
    NoStore,
    /// TLS files are unusable.
    #[error("grpc.tls")]
    Tls(#[from] TlsError),
    /// The upstream client could not be built.
    #[error("upstream")]
    Upstream(#[from] UpstreamError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// gRPC reflection could not be set up.
    #[error("grpc reflection")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The Kubernetes parts could not be set up.
    #[cfg(feature = "kubernetes")]
    #[error("kubernetes")]
    Kube(#[from] opni_metrics_kube::Error),
    /// The embedded CA failed.
    #[error("embedded CA")]
    Ca(#[from] CaError),
    /// A file failed.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The state could not be read.
    #[error("state")]
    State(#[from] StateError),
    /// [`Gateway::serve`] was called twice.
    #[error("the gateway is already serving")]
    AlreadyServing,
}

mod builder;
pub use builder::{Campaign, GatewayBuilder};

/// The listeners of [`Gateway::serve`].
#[derive(Debug)]
pub struct Listeners {
    /// Agent-facing gRPC over mutual TLS.
    pub grpc: TcpListener,
    /// Ops HTTP.
    pub http: TcpListener,
    /// Management gRPC.
    pub management: TcpListener,
    /// The query proxy (HTTP).
    pub query: TcpListener,
}

impl Listeners {
    /// Binds the addresses of `listen`.
    ///
    /// # Errors
    /// [`StartError::Bind`] naming the address.
    pub async fn bind(listen: &Listen) -> Result<Self, StartError> {
        Ok(Self {
            grpc: bind(listen.grpc).await?,
            http: bind(listen.http).await?,
            management: bind(listen.management).await?,
            query: bind(listen.query).await?,
        })
    }
}

/// Where a serving gateway listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// Agent-facing gRPC.
    pub grpc: SocketAddr,
    /// Ops HTTP.
    pub http: SocketAddr,
    /// Management gRPC.
    pub management: SocketAddr,
    /// The query proxy.
    pub query: SocketAddr,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })
}

/// A built gateway. Dropping it aborts every task it started; [`Gateway::shutdown`] stops
/// them gracefully.
pub struct Gateway {
    settings: GatewaySettings,
    state: State,
    hub: Hub,
    /// Desired state in memory, for `Sync`.
    view: Arc<crate::sync::StateView>,
    admission: Arc<crate::admission::Admission>,
    connections: opni_metrics_transport::grpc::Connections,
    statuses: Arc<StatusCache>,
    uninstaller: Uninstaller,
    driver: Arc<dyn ClusterDriver>,
    upstream: UpstreamWatch,
    ca: Arc<Ca>,
    metrics: Arc<GatewayMetrics>,
    ops: Arc<Ops>,
    forward: ForwardService,
    authenticator: Arc<dyn Authenticator>,
    admin_token: Option<String>,
    readers: Readers,
    client: HttpClient,
    tasks: Tasks,
    serving: Option<Addresses>,
    ingest: crate::console::IngestHistory,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("serving", &self.serving).finish_non_exhaustive()
    }
}

impl Gateway {
    /// A builder over `settings`.
    pub fn builder(settings: GatewaySettings) -> GatewayBuilder {
        GatewayBuilder::new(settings)
    }

    /// The agent-facing services: `RemoteWrite`, `NodeSync` and `Bootstrap` (only `Join`).
    /// Mount them on a server whose connections carry an identity: the transport's
    /// mutual-TLS listener ([`tls_incoming`]) or a layer of the embedder's that inserts an
    /// [`AgentIdentity`](crate::auth::AgentIdentity) into each request.
    pub fn agent_services(&self) -> Routes {
        let max_msg = self.settings.limits.max_body_bytes + 64 * 1024;
        // the identity is checked on the request's headers, before its message is read
        let remote = RemoteWriteServer::new(RemoteWriteService::new(
            self.forward.clone(),
            self.settings.limits,
            self.settings.status,
            Arc::clone(&self.metrics),
            RuleSync::new(self.cortex_api(), self.state.clone(), Arc::clone(&self.metrics)),
            Arc::clone(&self.admission),
        ))
        .max_decoding_message_size(max_msg)
        .max_encoding_message_size(max_msg);
        let remote = InterceptedService::new(remote, require_identity);
        let node_sync = InterceptedService::new(
            NodeSyncServer::new(
                NodeSyncService::new(self.hub.clone(), Arc::clone(&self.statuses), Arc::clone(&self.view))
                    .with_stream_age(self.settings.max_connection_age),
            ),
            require_identity,
        );
        let join = BootstrapServer::new(
            BootstrapService::new(self.state.clone(), Arc::clone(&self.ca), true, self.settings.cert_validity)
                .with_join_rate(self.settings.join_rate_per_minute)
                .with_admission(Arc::clone(&self.admission)),
        )
        .max_decoding_message_size(64 * 1024);
        Routes::new(remote).add_service(node_sync).add_service(join)
    }

    /// The management services (`Capability`, `NodeConfiguration`, `CortexOps`, `Clusters`,
    /// `Bootstrap`, `Rbac`), each behind the [`Authenticator`], and `CortexAdmin`, which admits
    /// admins and readers (API keys, OpenID Connect tokens) and checks each call's tenants
    /// against the caller's role bindings.
    pub fn management_services(&self) -> Routes {
        let check = interceptor(Arc::clone(&self.authenticator));
        let state = &self.state;
        let admin = CortexAdminService::new(self.readers.clone(), self.cortex_api(), self.forward.clone());
        Routes::new(CapabilityServer::with_interceptor(
            CapabilityService::new(
                state.clone(),
                self.hub.clone(),
                Arc::clone(&self.statuses),
                self.uninstaller.clone(),
            ),
            check.clone(),
        ))
        .add_service(NodeConfigurationServer::with_interceptor(NodeConfigService::new(state.clone()), check.clone()))
        .add_service(CortexOpsServer::with_interceptor(
            CortexOpsService::new(state.clone(), Arc::clone(&self.driver), self.upstream.clone()),
            check.clone(),
        ))
        .add_service(ClustersServer::with_interceptor(ClustersService::new(state.clone()), check.clone()))
        .add_service(BootstrapServer::with_interceptor(
            BootstrapService::new(state.clone(), Arc::clone(&self.ca), false, self.settings.cert_validity),
            check.clone(),
        ))
        .add_service(RbacServer::with_interceptor(RbacService::new(state.clone()), check))
        .add_service(CortexAdminServer::new(admin).max_encoding_message_size(64 << 20))
    }

    /// The query proxy as a `tower::Service` over HTTP requests, for an embedder's own HTTP
    /// server ([`Gateway::serve`] serves it on [`Listeners::query`]).
    pub fn query_proxy(&self) -> QueryProxy {
        QueryProxy::new(
            self.readers.clone(),
            self.client.clone(),
            self.settings.upstream.apis(),
            self.settings.upstream.tenant_header.clone(),
            self.settings.query.clone(),
            Arc::clone(&self.metrics),
        )
    }

    /// The admin console as a `tower::Service` over HTTP requests (paths under `/console/`),
    /// for an embedder's own HTTP server; [`Gateway::serve`] serves it on [`Listeners::query`]
    /// unless [`ConsoleSettings::enabled`](crate::console::ConsoleSettings) is off. `grpc` is the
    /// agent-facing address printed in join commands when the settings name none.
    pub fn console(&self, grpc: SocketAddr) -> crate::console::Console {
        let s = &self.settings;
        let backend = crate::console::Backend {
            state: self.state.clone(),
            capability: CapabilityService::new(
                self.state.clone(),
                self.hub.clone(),
                Arc::clone(&self.statuses),
                self.uninstaller.clone(),
            ),
            cortexops: CortexOpsService::new(self.state.clone(), Arc::clone(&self.driver), self.upstream.clone()),
            bootstrap: BootstrapService::new(self.state.clone(), Arc::clone(&self.ca), false, s.cert_validity),
            api: self.cortex_api(),
            ca_path: self.ca.cert_path(),
            join_address: s.console.join_address.clone().unwrap_or_else(|| grpc.to_string()),
        };
        let sampler = crate::console::Sampler {
            started: std::sync::atomic::AtomicBool::new(false),
            history: self.ingest.clone(),
            api: self.cortex_api(),
            state: self.state.clone(),
            metrics: Arc::clone(&self.metrics),
            interval: s.console.sample_interval,
            tasks: self.tasks.clone(),
        };
        crate::console::Console::new(
            s.console.clone(),
            self.readers.clone(),
            Arc::clone(&self.authenticator),
            backend,
            self.ingest.clone(),
            sampler,
        )
    }

    fn cortex_api(&self) -> CortexApi {
        CortexApi::new(
            self.client.clone(),
            self.settings.upstream.apis(),
            self.settings.upstream.tenant_header.clone(),
            self.settings.query.timeout,
        )
    }

    /// Who reads: reader authentication and tenant resolution, for an embedder's own read
    /// endpoints.
    pub fn readers(&self) -> &Readers {
        &self.readers
    }

    /// Serves the agent services over mutual TLS on `listeners.grpc` (with health and
    /// reflection), the management services on `listeners.management`, and the ops endpoints
    /// on `listeners.http`; then reports ready. The servers run until [`Gateway::shutdown`].
    ///
    /// # Errors
    /// [`StartError`]: TLS files, reflection; [`StartError::AlreadyServing`] the second time.
    pub async fn serve(&mut self, listeners: Listeners) -> Result<Addresses, StartError> {
        if self.serving.is_some() {
            return Err(StartError::AlreadyServing);
        }
        let s = &self.settings;
        let local = |l: &TcpListener| {
            l.local_addr().map_err(|source| StartError::Bind { addr: SocketAddr::from(([0, 0, 0, 0], 0)), source })
        };
        let addrs = Addresses {
            grpc: local(&listeners.grpc)?,
            http: local(&listeners.http)?,
            management: local(&listeners.management)?,
            query: local(&listeners.query)?,
        };
        let serving = serving_files(s, &self.ca)?;
        let tls = serving.watch(Duration::from_secs(5), |f| f.server_config_with(true), &self.tasks)?;
        let metrics = Arc::clone(&self.metrics);
        let mut limits = IncomingLimits::with_handshake_timeout(s.handshake_timeout);
        limits.max_handshakes = s.max_handshakes;
        limits.max_handshakes_per_address = s.max_handshakes_per_address;
        limits.max_connections = s.max_connections;
        let incoming =
            tls_incoming_limited(&self.tasks, listeners.grpc, tls, limits, self.connections.clone(), move |kind| {
                metrics.tls_failure(kind)
            });
        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter.set_serving::<RemoteWriteServer<RemoteWriteService>>().await;
        health_reporter.set_serving::<NodeSyncServer<NodeSyncService>>().await;
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(opni_metrics_proto::FILE_DESCRIPTOR_SET)
                .build_v1()
        };
        let token = self.tasks.token();
        let agent = tonic::transport::Server::builder()
            .timeout(s.rpc_timeout)
            // no max_connection_age_grace: with one, tonic 0.14 skips the graceful GOAWAY at
            // max_connection_age and only closes the connection, in-flight calls and all,
            // after age + grace
            .max_connection_age(s.max_connection_age)
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .max_concurrent_streams(Some(4096))
            .initial_connection_window_size(Some(opni_metrics_transport::grpc::CONNECTION_WINDOW))
            .initial_stream_window_size(Some(opni_metrics_transport::grpc::STREAM_WINDOW))
            .max_frame_size(Some(s.max_frame_size))
            .add_routes(self.agent_services())
            .add_service(health.clone())
            .add_service(reflection()?)
            .serve_with_incoming_shutdown(incoming, token.clone().cancelled_owned());
        self.tasks.spawn_graceful("grpc-agent", async move {
            if let Err(e) = agent.await {
                tracing::error!(error = %e, "agent-facing gRPC server failed");
            }
        });
        let mgmt = tonic::transport::Server::builder()
            .add_routes(self.management_services())
            .add_service(health)
            .add_service(reflection()?);
        match &s.management_tls {
            None => {
                let server = mgmt.serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listeners.management),
                    token.clone().cancelled_owned(),
                );
                self.tasks.spawn_graceful("grpc-management", async move {
                    if let Err(e) = server.await {
                        tracing::error!(error = %e, "management gRPC server failed");
                    }
                });
            }
            Some(m) => {
                let files = TlsFiles { cert: m.cert.clone(), key: m.key.clone(), ca: m.client_ca.clone() };
                let tls = files.watch(Duration::from_secs(5), |f| f.server_config_with(true), &self.tasks)?;
                let metrics = Arc::clone(&self.metrics);
                let incoming = tls_incoming(&self.tasks, listeners.management, tls, s.handshake_timeout, move |kind| {
                    metrics.tls_failure(kind);
                });
                let server = mgmt.serve_with_incoming_shutdown(incoming, token.clone().cancelled_owned());
                self.tasks.spawn_graceful("grpc-management", async move {
                    if let Err(e) = server.await {
                        tracing::error!(error = %e, "management gRPC server failed");
                    }
                });
            }
        }
        let query_tls = match &s.query.tls {
            ListenerTls::None => None,
            ListenerTls::Gateway => {
                let files = serving_files(s, &self.ca)?;
                Some(files.watch(Duration::from_secs(5), TlsFiles::server_config_without_client_auth, &self.tasks)?)
            }
            ListenerTls::Files { cert, key } => {
                let files = TlsFiles { cert: cert.clone(), key: key.clone(), ca: cert.clone() };
                Some(files.watch(Duration::from_secs(5), TlsFiles::server_config_without_client_auth, &self.tasks)?)
            }
        };
        let query_opts = ServerOptions { drain_timeout: s.drain_timeout, ..ServerOptions::default() };
        let console = s.console.enabled.then(|| self.console(addrs.grpc));
        self.tasks.spawn_graceful(
            "http-query",
            http_server::serve_with_tls(
                listeners.query,
                query_tls,
                QueryListener { proxy: self.query_proxy(), console },
                query_opts,
                token.clone().cancelled_owned(),
            ),
        );
        let ops = Arc::clone(&self.ops);
        let handler = tower::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let resp = ops.route_or_404(req.uri().path());
            async move { Ok::<_, std::convert::Infallible>(resp) }
        });
        let opts = ServerOptions { drain_timeout: s.drain_timeout, ..ServerOptions::default() };
        self.tasks
            .spawn_graceful("http-ops", http_server::serve(listeners.http, handler, opts, token.cancelled_owned()));
        self.ops.set_ready(true);
        self.serving = Some(addrs);
        tracing::info!(grpc = %addrs.grpc, http = %addrs.http, management = %addrs.management,
            query = %addrs.query, upstream = %s.upstream.url, "gateway ready");
        Ok(addrs)
    }

    /// Binds [`GatewaySettings::listen`] and [`Gateway::serve`]s on it.
    ///
    /// # Errors
    /// [`StartError`].
    pub async fn bind_and_serve(&mut self) -> Result<Addresses, StartError> {
        let listeners = Listeners::bind(&self.settings.listen).await?;
        self.serve(listeners).await
    }

    /// Where the gateway serves, once [`Gateway::serve`] succeeded.
    pub fn addresses(&self) -> Option<Addresses> {
        self.serving
    }

    /// The admin bearer token, when the default [`AdminToken`] authenticator is in use.
    pub fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    /// The CA certificate file agents must trust (or pin) to join.
    pub fn ca_path(&self) -> PathBuf {
        self.ca.cert_path()
    }

    /// The ops state (`/metrics`, `/healthz`, `/readyz`).
    pub fn ops(&self) -> &Arc<Ops> {
        &self.ops
    }

    /// Resolves once the registry view has been loaded from the store (which follows
    /// [`Gateway::bind_and_serve`] by a moment; until then the gateway is not ready).
    pub async fn registry_loaded(&self) {
        self.view.loaded().await;
    }

    /// The sync hub.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Typed access to the gateway's state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The settings it was built with.
    pub fn settings(&self) -> &GatewaySettings {
        &self.settings
    }

    /// Stops accepting, ends the agents' notification streams, drains in-flight requests for
    /// up to the drain timeout, and returns when every task has stopped.
    pub async fn shutdown(self) {
        self.ops.set_ready(false);
        let d = self.tasks.shutdown(self.settings.drain_timeout).await;
        if d.aborted > 0 {
            tracing::warn!(aborted = d.aborted, "some work did not finish within the drain timeout");
        }
        // store work whose futures the stopped tasks dropped still finishes: wait for it, so the
        // store is free (an embedded file can be opened again) when this returns
        self.state.store().quiesce().await;
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

fn admin_token(path: &Path) -> Result<String, StartError> {
    let io = |source| StartError::Io { path: path.to_owned(), source };
    if let Ok(t) = std::fs::read_to_string(path) {
        // a token others can read is refused, not silently used
        crate::ca::check_private(path, 0o077)?;
        let t = t.trim().to_owned();
        if !t.is_empty() {
            return Ok(t);
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut b = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| StartError::Io { path: path.to_owned(), source: std::io::Error::other("no randomness") })?;
    let token = opni_metrics_core::digest::hex(&b);
    crate::ca::write_private(path, &token).map_err(|e| match e {
        CaError::Io { path, source } => StartError::Io { path, source },
        e => StartError::Ca(e),
    })?;
    Ok(token)
}

/// Files for the agent-facing listener: the operator's, with the embedded CA added to the
/// client CA bundle (agents joined through `Join` carry its certificates), or the embedded
/// CA's own.
fn serving_files(settings: &GatewaySettings, ca: &Ca) -> Result<TlsFiles, StartError> {
    match &settings.grpc_tls {
        None => Ok(ca.server_files(&settings.server_names)?),
        Some(files) => {
            let bundle = settings.data_dir.join("pki").join("client-ca-bundle.pem");
            let io = |path: &Path| {
                let path = path.to_owned();
                move |source| StartError::Io { path, source }
            };
            let mut pem = std::fs::read_to_string(&files.ca).map_err(io(&files.ca))?;
            pem.push('\n');
            pem.push_str(ca.cert_pem());
            std::fs::write(&bundle, pem).map_err(io(&bundle))?;
            Ok(TlsFiles { cert: files.cert.clone(), key: files.key.clone(), ca: bundle })
        }
    }
}

/// The query listener: the console under `/console/`, the query proxy elsewhere.
#[derive(Clone)]
struct QueryListener {
    proxy: QueryProxy,
    console: Option<crate::console::Console>,
}

impl tower::Service<http::Request<hyper::body::Incoming>> for QueryListener {
    type Response = http::Response<crate::query::ProxyBody>;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        use http_body_util::BodyExt as _;
        match &mut self.console {
            Some(console) if crate::console::Console::owns(req.uri().path()) => {
                let fut = console.call(req);
                Box::pin(async move {
                    let r = fut.await?;
                    Ok(r.map(|b| b.map_err(|e: std::convert::Infallible| match e {}).boxed_unsync()))
                })
            }
            _ => self.proxy.call(req),
        }
    }
}
