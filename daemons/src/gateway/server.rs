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

use super::config::GatewaySettings;
use super::remote_write::RemoteWriteService;
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
}

/// A running gateway.
#[derive(Debug)]
pub struct RunningGateway {
    /// Where the agent-facing gRPC listener is bound.
    pub grpc_addr: SocketAddr,
    /// Where the ops HTTP listener is bound.
    pub http_addr: SocketAddr,
    /// Ops state (metrics registry, readiness).
    pub ops: Arc<Ops>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })
}

/// Starts a gateway; it serves until [`RunningGateway::shutdown`].
///
/// # Errors
/// [`StartError`]: nothing is left running.
pub async fn start(settings: GatewaySettings) -> Result<RunningGateway, StartError> {
    let mut registry = Registry::default();
    let metrics = Arc::new(GatewayMetrics::register(&mut registry));
    let ops = Ops::new(registry);
    let forward = stack(Forwarder::new(settings.upstream.clone())?, Arc::clone(&metrics));
    let tls = settings.grpc_tls.watch(Duration::from_secs(5), TlsFiles::server_config)?;
    let grpc_listener = bind(settings.grpc_listen).await?;
    let http_listener = bind(settings.http_listen).await?;
    let grpc_addr =
        grpc_listener.local_addr().map_err(|source| StartError::Bind { addr: settings.grpc_listen, source })?;
    let http_addr =
        http_listener.local_addr().map_err(|source| StartError::Bind { addr: settings.http_listen, source })?;

    let failures = Arc::clone(&metrics);
    let incoming = tls_incoming(grpc_listener, tls, settings.handshake_timeout, move |kind| {
        failures.tls_failures.get_or_create(&Reason { reason: kind.to_owned() }).inc();
    });
    let max_msg = settings.limits.max_body_bytes + 64 * 1024;
    let remote = RemoteWriteServer::new(RemoteWriteService::new(forward, settings.limits, settings.status, metrics))
        .max_decoding_message_size(max_msg)
        .max_encoding_message_size(max_msg);
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<RemoteWriteServer<RemoteWriteService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(opni_metrics_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;

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
        .add_service(health)
        .add_service(reflection)
        .serve_with_incoming_shutdown(incoming, until_stop(stop_rx.clone()));
    let grpc_task = tokio::spawn(async move {
        if let Err(e) = grpc.await {
            tracing::error!(error = %e, "gRPC server failed");
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
    tracing::info!(%grpc_addr, %http_addr, upstream = %settings.upstream.url, "gateway ready");
    Ok(RunningGateway { grpc_addr, http_addr, ops, stop, tasks: vec![grpc_task, http_task] })
}

impl RunningGateway {
    /// Stops accepting, drains in-flight requests, and returns when everything has stopped.
    pub async fn shutdown(self) {
        self.ops.set_ready(false);
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
