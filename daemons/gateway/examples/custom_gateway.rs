//! A custom gateway built from the library's parts:
//! - its own **authentication layer**: a tower layer in front of the agent services that admits
//!   only clusters on an allow-list and tells the services who the caller is
//!   ([`AgentIdentity`]);
//! - its own **cluster driver**: an upstream that is always installed and keeps a record of the
//!   tenant deletions it was asked for;
//! - the **in-memory store** of `opni-metrics-core`;
//! - the agent services served on **its own tonic server**, over the transport's mutual-TLS
//!   listener.
//!
//! Run it with `cargo run -p opni-metrics-gateway --example custom_gateway -- <upstream push URL>`;
//! it prints where agents connect and the CA they must trust, and serves until Ctrl-C. The
//! workspace test `tests/tests/custom_gateway.rs` runs a real agent against it.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use opni_metrics_core::ClusterId;
use opni_metrics_core::cluster::ClusterConfig;
use opni_metrics_core::driver::{AppState, ClusterDriver, ClusterStatus, DriverError};
use opni_metrics_core::node::UpstreamState;
use opni_metrics_core::store::MemoryStore;
use opni_metrics_core::uninstall::PurgeProgress;
use opni_metrics_gateway::auth::AgentIdentity;
use opni_metrics_gateway::{Gateway, GatewaySettings};
use opni_metrics_transport::Tasks;
use opni_metrics_transport::grpc::{PeerIdentity, tls_incoming};
use opni_metrics_transport::tls::TlsFiles;
use tokio::net::TcpListener;
use tower::{Layer, Service};

/// Admits agents whose verified certificate names an allowed cluster; `Join` (which has no
/// identity yet) passes.
#[derive(Clone, Debug)]
pub struct AllowList {
    allowed: Arc<HashSet<ClusterId>>,
}

impl AllowList {
    /// Admits `allowed`.
    pub fn new(allowed: impl IntoIterator<Item = ClusterId>) -> Self {
        Self { allowed: Arc::new(allowed.into_iter().collect()) }
    }
}

impl<S> Layer<S> for AllowList {
    type Service = AllowListService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AllowListService { inner, allowed: Arc::clone(&self.allowed) }
    }
}

/// The service of [`AllowList`].
#[derive(Clone, Debug)]
pub struct AllowListService<S> {
    inner: S,
    allowed: Arc<HashSet<ClusterId>>,
}

const JOIN: &str = "/opni.metrics.bootstrap.v1.Bootstrap/Join";

impl<S, B> Service<http::Request<B>> for AllowListService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if req.uri().path() != JOIN {
            // the transport's listener put the verified certificate's identity here
            let cluster = req.extensions().get::<PeerIdentity>().and_then(|p| p.cluster.clone().ok());
            match cluster {
                Some(c) if self.allowed.contains(&c) => {
                    req.extensions_mut().insert(AgentIdentity { cluster: c });
                }
                Some(c) => {
                    let refusal = tonic::Status::permission_denied(format!("cluster {c} is not on the allow-list"));
                    return Box::pin(async move { Ok(refusal.into_http()) });
                }
                None => {
                    let refusal = tonic::Status::unauthenticated("a client certificate naming a cluster is required");
                    return Box::pin(async move { Ok(refusal.into_http()) });
                }
            }
        }
        Box::pin(self.inner.call(req))
    }
}

/// An upstream that is always installed and running; tenant deletions are recorded and
/// reported done at once.
#[derive(Debug, Default)]
pub struct StaticUpstream {
    deleted: Mutex<Vec<ClusterId>>,
}

impl StaticUpstream {
    /// The tenants whose deletion was requested.
    pub fn deleted(&self) -> Vec<ClusterId> {
        self.deleted.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl ClusterDriver for StaticUpstream {
    fn apply<'a>(&'a self, _: &'a ClusterConfig) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async { Err(DriverError::Unsupported { driver: "static", operation: "install an upstream" }) })
    }

    fn status(&self) -> BoxFuture<'_, Result<ClusterStatus, DriverError>> {
        Box::pin(async {
            Ok(ClusterStatus {
                install_state: UpstreamState::Installed,
                app_state: AppState::Running,
                workloads: Vec::new(),
                warnings: Vec::new(),
                version: Some("static".into()),
            })
        })
    }

    fn uninstall(&self) -> BoxFuture<'_, Result<(), DriverError>> {
        Box::pin(async { Err(DriverError::Unsupported { driver: "static", operation: "uninstall an upstream" }) })
    }

    fn delete_tenant_data<'a>(&'a self, tenant: &'a ClusterId) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async move {
            self.deleted.lock().unwrap_or_else(PoisonError::into_inner).push(tenant.clone());
            Ok(())
        })
    }

    fn tenant_deletion_status<'a>(&'a self, _: &'a ClusterId) -> BoxFuture<'a, Result<PurgeProgress, DriverError>> {
        Box::pin(async { Ok(PurgeProgress::Done) })
    }
}

/// A running custom gateway.
#[derive(Debug)]
pub struct Running {
    /// The gateway (state, hub, shutdown).
    pub gateway: Gateway,
    /// The cluster driver it was given.
    pub upstream: Arc<StaticUpstream>,
    /// Where agents connect.
    pub addr: SocketAddr,
    /// The agent-facing server task.
    tasks: Tasks,
}

impl Running {
    /// Stops the server, then the gateway.
    pub async fn shutdown(self) {
        self.tasks.shutdown(Duration::from_secs(10)).await;
        self.gateway.shutdown().await;
    }
}

/// Builds the gateway and serves its agent services on `listener` over mutual TLS with
/// `tls` (the server certificate, and the CA that signs agent certificates), admitting only
/// the `allowed` clusters.
///
/// # Errors
/// Building the gateway or loading the TLS files failed.
pub async fn start(
    settings: GatewaySettings,
    tls: TlsFiles,
    allowed: Vec<ClusterId>,
    listener: TcpListener,
) -> Result<Running, Box<dyn std::error::Error + Send + Sync>> {
    let upstream = Arc::new(StaticUpstream::default());
    let gateway = Gateway::builder(settings)
        .store(Arc::new(MemoryStore::default()))
        .cluster_driver(Arc::clone(&upstream) as Arc<dyn ClusterDriver>)
        .build()
        .await?;
    let addr = listener.local_addr()?;
    let tasks = Tasks::new();
    let config = tls.watch(Duration::from_secs(5), |f| f.server_config_with(true), &tasks)?;
    let incoming = tls_incoming(&tasks, listener, config, Duration::from_secs(10), |kind| {
        tracing::info!(kind, "TLS handshake failed");
    });
    let server = tonic::transport::Server::builder()
        .layer(AllowList::new(allowed))
        .add_routes(gateway.agent_services())
        .serve_with_incoming_shutdown(incoming, tasks.token().cancelled_owned());
    tasks.spawn_graceful("agent-server", async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "agent server failed");
        }
    });
    Ok(Running { gateway, upstream, addr, tasks })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let upstream_url = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:9009/api/v1/push".into());
    let dir = std::env::temp_dir().join("opni-custom-gateway");
    let mut settings = GatewaySettings::default();
    settings.data_dir = dir.clone();
    settings.upstream.url = upstream_url.parse()?;
    // the embedded CA issues the serving certificate and signs agents at Join
    let ca = opni_metrics_gateway::ca::Ca::load_or_create(&dir.join("pki"))?;
    let tls = ca.server_files(&["localhost".into(), "127.0.0.1".into()])?;
    let listener = TcpListener::bind("127.0.0.1:9090").await?;
    let running = start(settings, tls, vec![ClusterId::new("example")?], listener).await?;
    println!("agents connect to {} trusting {}", running.addr, ca.cert_path().display());
    tokio::signal::ctrl_c().await?;
    running.shutdown().await;
    Ok(())
}
