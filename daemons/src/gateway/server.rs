//! Starting and stopping a gateway: listeners, gRPC services, the ops endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use opni_metrics_proto::remote::v1::remote_write_server::RemoteWriteServer;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use opni_metrics_core::driver::ClusterDriver;
use opni_metrics_core::node::UpstreamState;
use opni_metrics_core::store::Store;
use opni_metrics_proto::bootstrap::v1::bootstrap_server::BootstrapServer;
use opni_metrics_proto::capability::v1::capability_server::CapabilityServer;
use opni_metrics_proto::clusters::v1::clusters_server::ClustersServer;
use opni_metrics_proto::node::v1::node_sync_server::NodeSyncServer;
use opni_metrics_proto::nodeconfig::v1::node_configuration_server::NodeConfigurationServer;

use super::bootstrap::BootstrapService;
use super::ca::{Ca, CaError};
use super::capability::CapabilityService;
use super::cluster_driver::ExternalCluster;
use super::clusters::ClustersService;
use super::config::GatewaySettings;
use super::nodeconfig::NodeConfigService;
use super::remote_write::RemoteWriteService;
use super::state::{State, StateError};
use super::sync::{Hub, NodeSyncService, StatusCache, watch_store};
use super::uninstall::Uninstaller;
use crate::daemon::Ops;
use crate::forward::{Forwarder, UpstreamError, stack};
use crate::grpc::tls_incoming;
use crate::http_server::{self, ServerOptions, text};
use crate::metrics::{GatewayMetrics, Reason};
use crate::tls::{TlsError, TlsFiles};

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
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
    /// No Kubernetes client could be built.
    #[error("kubernetes")]
    Kube(#[from] crate::kube_client::KubeClientError),
    /// The Kubernetes parts could not be set up.
    #[error("kubernetes")]
    KubeSetup(#[from] opni_metrics_kube::Error),
    /// The embedded CA failed.
    #[error("embedded CA")]
    Ca(#[from] CaError),
    /// A file failed.
    #[error("{path}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The state could not be read.
    #[error("state")]
    State(#[from] StateError),
}

/// A running gateway.
#[derive(Debug)]
pub struct RunningGateway {
    /// Where the agent-facing gRPC listener is bound.
    pub grpc_addr: SocketAddr,
    /// Where the ops HTTP listener is bound.
    pub http_addr: SocketAddr,
    /// Where the management gRPC listener is bound.
    pub management_addr: SocketAddr,
    /// The admin bearer token for the management listener.
    pub admin_token: String,
    /// The CA agents must trust (PEM file).
    pub ca_path: std::path::PathBuf,
    /// Ops state (metrics registry, readiness).
    pub ops: Arc<Ops>,
    /// The sync hub.
    pub hub: Hub,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Lease elector and controller: stopped, not drained, on shutdown.
    background: Vec<JoinHandle<()>>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })
}

fn admin_token(path: &std::path::Path) -> Result<String, StartError> {
    let io = |source| StartError::Io { path: path.to_owned(), source };
    if let Ok(t) = std::fs::read_to_string(path) {
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
    let token: String = b.iter().map(|x| format!("{x:02x}")).collect();
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(io)?;
    f.write_all(token.as_bytes()).map_err(io)?;
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
            let io = |path: &std::path::Path| {
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

/// Starts a gateway over `store`; it serves until [`RunningGateway::shutdown`].
///
/// # Errors
/// [`StartError`]: nothing is left running.
pub async fn start(settings: GatewaySettings, store: Arc<dyn Store>) -> Result<RunningGateway, StartError> {
    let mut registry = Registry::default();
    let metrics = Arc::new(GatewayMetrics::register(&mut registry));
    let ops = Ops::new(registry);
    let forward = stack(Forwarder::new(settings.upstream.clone())?, Arc::clone(&metrics));
    let ca = Arc::new(Ca::load_or_create(&settings.data_dir.join("pki"))?);
    let serving = serving_files(&settings, &ca)?;
    let tls = serving.watch(Duration::from_secs(5), |f| f.server_config_with(true))?;
    let admin_token = admin_token(&settings.admin_token_file)?;
    let grpc_listener = bind(settings.grpc_listen).await?;
    let http_listener = bind(settings.http_listen).await?;
    let mgmt_listener = bind(settings.management_listen).await?;
    let local = |l: &TcpListener, addr| l.local_addr().map_err(|source| StartError::Bind { addr, source });
    let grpc_addr = local(&grpc_listener, settings.grpc_listen)?;
    let http_addr = local(&http_listener, settings.http_listen)?;
    let management_addr = local(&mgmt_listener, settings.management_listen)?;

    // state, sync and lifecycle
    let state = State::new(store, UpstreamState::Installed);
    let hub = Hub::start(settings.sync, u64::from(grpc_addr.port()) ^ 0x5eed);
    watch_store(state.clone(), hub.clone());
    let statuses = Arc::new(StatusCache::default());
    statuses.start_writer(state.clone());
    let external: Arc<dyn ClusterDriver> = Arc::new(ExternalCluster::new(
        &settings.upstream.url,
        settings.upstream.tenant_header.clone(),
        settings.tenant_deletion,
    ));
    let mut background = Vec::new();
    let driver = match &settings.kubernetes {
        None => external,
        Some(k) => {
            let (driver, tasks) = kubernetes(k, external).await?;
            background = tasks;
            driver
        }
    };
    let uninstaller = Uninstaller::new(state.clone(), hub.clone(), driver);
    uninstaller.resume_all().await?;

    let failures = Arc::clone(&metrics);
    let incoming = tls_incoming(grpc_listener, tls, settings.handshake_timeout, move |kind| {
        failures.tls_failures.get_or_create(&Reason { reason: kind.to_owned() }).inc();
    });
    let max_msg = settings.limits.max_body_bytes + 64 * 1024;
    let remote = RemoteWriteServer::new(RemoteWriteService::new(forward, settings.limits, settings.status, metrics))
        .max_decoding_message_size(max_msg)
        .max_encoding_message_size(max_msg);
    let node_sync = NodeSyncServer::new(NodeSyncService::new(state.clone(), hub.clone(), Arc::clone(&statuses)));
    let join =
        BootstrapServer::new(BootstrapService::new(state.clone(), Arc::clone(&ca), true, settings.cert_validity));
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<RemoteWriteServer<RemoteWriteService>>().await;
    health_reporter.set_serving::<NodeSyncServer<NodeSyncService>>().await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(opni_metrics_proto::FILE_DESCRIPTOR_SET)
            .build_v1()
    };

    let (stop, stop_rx) = watch::channel(false);
    let until_stop = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let grpc = tonic::transport::Server::builder()
        .max_connection_age(settings.max_connection_age)
        .max_connection_age_grace(Duration::from_secs(30))
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(4096))
        .initial_connection_window_size(Some(8 << 20))
        .initial_stream_window_size(Some(2 << 20))
        .add_service(remote)
        .add_service(node_sync)
        .add_service(join)
        .add_service(health.clone())
        .add_service(reflection()?)
        .serve_with_incoming_shutdown(incoming, until_stop(stop_rx.clone()));
    let grpc_task = tokio::spawn(async move {
        if let Err(e) = grpc.await {
            tracing::error!(error = %e, "agent-facing gRPC server failed");
        }
    });

    let check = admin_check(admin_token.clone());
    let mgmt = tonic::transport::Server::builder()
        .add_service(CapabilityServer::with_interceptor(
            CapabilityService::new(state.clone(), hub.clone(), statuses, uninstaller),
            check.clone(),
        ))
        .add_service(NodeConfigurationServer::with_interceptor(NodeConfigService::new(state.clone()), check.clone()))
        .add_service(ClustersServer::with_interceptor(ClustersService::new(state.clone()), check.clone()))
        .add_service(BootstrapServer::with_interceptor(
            BootstrapService::new(state, ca.clone(), false, settings.cert_validity),
            check,
        ))
        .add_service(health)
        .add_service(reflection()?)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(mgmt_listener),
            until_stop(stop_rx.clone()),
        );
    let mgmt_task = tokio::spawn(async move {
        if let Err(e) = mgmt.await {
            tracing::error!(error = %e, "management gRPC server failed");
        }
    });

    let ops_for_http = Arc::clone(&ops);
    let handler: http_server::Handler = Arc::new(move |req: http::Request<hyper::body::Incoming>| {
        let ops = Arc::clone(&ops_for_http);
        Box::pin(async move {
            ops.route(req.uri().path())
                .unwrap_or_else(|| text(http::StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n")))
        }) as futures::future::BoxFuture<'static, http::Response<Full<Bytes>>>
    });
    let http_task =
        tokio::spawn(http_server::serve(http_listener, handler, ServerOptions::default(), until_stop(stop_rx)));
    ops.set_ready(true);
    tracing::info!(%grpc_addr, %http_addr, %management_addr, upstream = %settings.upstream.url, "gateway ready");
    Ok(RunningGateway {
        grpc_addr,
        http_addr,
        management_addr,
        admin_token,
        ca_path: ca.cert_path(),
        ops,
        hub,
        stop,
        tasks: vec![grpc_task, mgmt_task, http_task],
        background,
    })
}

/// The Kubernetes cluster driver, and the MonitoringCluster controller run under the Lease.
async fn kubernetes(
    k: &super::config::KubernetesConfig,
    external: Arc<dyn ClusterDriver>,
) -> Result<(Arc<dyn ClusterDriver>, Vec<tokio::task::JoinHandle<()>>), StartError> {
    use opni_metrics_kube::cluster::KubeClusterDriver;
    use opni_metrics_kube::controller::{self, ControllerSettings};
    use opni_metrics_kube::lease::{LeaseElector, LeaseSettings, while_leading};
    let client = crate::kube_client::client(k.kubeconfig.as_deref()).await?;
    let namespace = k.namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned());
    let driver = KubeClusterDriver::new(client.clone(), namespace.clone(), k.monitoring_cluster.clone())
        .with_data_driver(external);
    let mut tasks = Vec::new();
    if k.controller {
        let identity = k.identity.clone().unwrap_or_else(crate::daemon::host_name);
        let elector = LeaseElector::new(
            client.clone(),
            LeaseSettings {
                namespace: namespace.clone(),
                name: k.lease.name.clone(),
                identity,
                lease_duration: k.lease.lease_duration.as_duration(),
                renew_deadline: k.lease.renew_deadline.as_duration(),
                retry_period: k.lease.retry_period.as_duration(),
            },
        )?;
        let leading = elector.leading();
        tasks.push(tokio::spawn(elector.run()));
        let settings = ControllerSettings { namespace: Some(namespace), ..ControllerSettings::default() };
        tasks.push(tokio::spawn(while_leading(leading, move || controller::run(client.clone(), settings.clone()))));
    }
    Ok((Arc::new(driver), tasks))
}

/// The management interceptor: `authorization: Bearer <admin token>`.
fn admin_check(token: String) -> impl Fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    let expected = format!("Bearer {token}");
    move |req: tonic::Request<()>| {
        let given = req.metadata().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
        let ok = given.len() == expected.len()
            && given.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        if ok { Ok(req) } else { Err(tonic::Status::unauthenticated("management calls need the admin bearer token")) }
    }
}

impl RunningGateway {
    /// Stops accepting, drains in-flight requests, and returns when everything has stopped.
    pub async fn shutdown(mut self) {
        self.ops.set_ready(false);
        for t in &self.background {
            t.abort();
        }
        let _ = self.stop.send(true);
        self.hub.close_all().await;
        let drain = async {
            for t in &mut self.tasks.iter_mut() {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(30), drain).await.is_err() {
            tracing::warn!("connections did not drain within 30s; closing them");
            for t in &self.tasks {
                t.abort();
            }
        }
    }
}
