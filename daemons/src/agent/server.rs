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

use super::config::AgentSettings;
use super::relay::Relay;
use crate::daemon::Ops;
use crate::grpc::{ChannelError, tls_channel};
use crate::http_server::{self, ServerOptions, text};
use crate::metrics::AgentMetrics;
use crate::tls::{TlsError, TlsFiles};

/// Why an agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// TLS files are unusable.
    #[error("gateway.tls")]
    Tls(#[from] TlsError),
    /// The gateway channel could not be set up.
    #[error("gateway")]
    Channel(#[from] ChannelError),
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
#[derive(Debug)]
pub struct RunningAgent {
    /// Where the HTTP listener is bound.
    pub addr: SocketAddr,
    /// Ops state.
    pub ops: Arc<Ops>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
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
    let tls = settings.tls.watch(Duration::from_secs(5), TlsFiles::client_config)?;
    let channel = tls_channel(&settings.gateway_address, &settings.gateway_server_name, tls, &settings.channel)?;
    let relay = Arc::new(Relay::new(channel, settings.relay, metrics));
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|source| StartError::Bind { addr: settings.listen, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: settings.listen, source })?;
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
    let (stop, mut stop_rx) = watch::channel(false);
    let opts = ServerOptions { header_read_timeout: settings.header_read_timeout, ..ServerOptions::default() };
    let task = tokio::spawn(http_server::serve(listener, handler, opts, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    ops.set_ready(true);
    tracing::info!(%addr, gateway = %settings.gateway_address, "agent ready");
    Ok(RunningAgent { addr, ops, stop, task })
}

impl RunningAgent {
    /// Stops accepting, drains in-flight requests, and returns when done.
    pub async fn shutdown(self) {
        self.ops.set_ready(false);
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
