//! A gRPC channel to the gateway that sends each call straight into its HTTP/2 connection.
//!
//! tonic's `Channel` puts a `tower::buffer` in front of the connection: every call is handed to
//! a worker task through a queue, and its answer comes back through another, which costs one
//! more task wake-up (often a cross-thread one) per call. [`GatewayChannel`] holds the
//! connection's `SendRequest` handle instead and calls it from the caller's own task; h2
//! multiplexes concurrent calls over the one connection as before.
//!
//! Behaviour, as the agent relies on it:
//! - connects lazily, on the first call, and again on the first call after the connection
//!   ended (a failure, the gateway's maximum connection age, a revocation);
//! - one dial at a time: calls that wait for a dial in progress share its outcome, so a
//!   gateway that is down fails them at once instead of queueing one dial per call;
//! - every new connection uses the TLS config current at that moment (renewed certificates);
//! - a call that could not be sent (no connection, or the connection closed under it) fails
//!   with `UNAVAILABLE`, which callers may retry; other HTTP/2 errors reach tonic, which maps
//!   them to their gRPC codes.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tonic::body::Body;

use crate::grpc::{ChannelError, ChannelOptions};

/// A cloneable gRPC channel over one mutual-TLS HTTP/2 connection, without a dispatch task
/// (see the [module docs](self)). Use it with any tonic client: `FooClient::new(channel)`.
#[derive(Clone)]
pub struct GatewayChannel {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for GatewayChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayChannel").field("target", &self.shared.target).finish_non_exhaustive()
    }
}

struct Shared {
    target: String,
    authority: http::uri::Authority,
    name: ServerName<'static>,
    tls: watch::Receiver<Arc<ClientConfig>>,
    opts: ChannelOptions,
    /// The live connection's handle, if any.
    current: Mutex<Option<SendRequest<Body>>>,
    /// Held while dialing; the number counts finished dials and the last one's failure.
    dial: tokio::sync::Mutex<(u64, Option<String>)>,
}

impl GatewayChannel {
    /// A channel to `addr` (`host:port`) verifying the server as `server_name`, with `tls`'s
    /// config at each dial. Nothing is dialed until the first call.
    ///
    /// # Errors
    /// [`ChannelError`]: an address that is not `host:port`, an invalid server name.
    pub fn new(
        addr: &str,
        server_name: &str,
        tls: watch::Receiver<Arc<ClientConfig>>,
        opts: &ChannelOptions,
    ) -> Result<Self, ChannelError> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| ChannelError::ServerName(server_name.to_owned()))?;
        let authority: http::uri::Authority = addr.parse().map_err(|_| ChannelError::Address(addr.to_owned()))?;
        if authority.port_u16().is_none() {
            return Err(ChannelError::Address(addr.to_owned()));
        }
        Ok(Self {
            shared: Arc::new(Shared {
                target: addr.to_owned(),
                authority,
                name,
                tls,
                opts: opts.clone(),
                current: Mutex::new(None),
                dial: tokio::sync::Mutex::new((0, None)),
            }),
        })
    }

    /// Whether a connection is up now (no dial is made).
    pub fn is_connected(&self) -> bool {
        self.shared.live().is_some()
    }
}

impl Shared {
    /// The live connection's handle, if there is one that can take a call.
    fn live(&self) -> Option<SendRequest<Body>> {
        let g = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        g.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    async fn connection(&self) -> Result<SendRequest<Body>, tonic::Status> {
        let seen = self.dial.try_lock().map(|g| g.0).ok();
        let mut dial = self.dial.lock().await;
        if let Some(s) = self.live() {
            return Ok(s);
        }
        // a dial finished while this call waited for the lock: share its failure
        if seen.is_none_or(|n| n != dial.0)
            && let Some(e) = &dial.1
        {
            return Err(tonic::Status::unavailable(e.clone()));
        }
        let result = tokio::time::timeout(self.opts.connect_timeout, self.dial())
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")));
        dial.0 += 1;
        match result {
            Ok(s) => {
                dial.1 = None;
                *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(s.clone());
                Ok(s)
            }
            Err(e) => {
                let msg = format!("cannot connect to {}: {e}", self.target);
                dial.1 = Some(msg.clone());
                Err(tonic::Status::unavailable(msg))
            }
        }
    }

    async fn dial(&self) -> io::Result<SendRequest<Body>> {
        let tcp = TcpStream::connect(&self.target).await?;
        tcp.set_nodelay(true)?;
        let cfg = Arc::clone(&self.tls.borrow());
        let tls = tokio_rustls::TlsConnector::from(cfg).connect(self.name.clone(), tcp).await?;
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(self.opts.keepalive_interval)
            .keep_alive_timeout(self.opts.keepalive_timeout)
            .keep_alive_while_idle(true)
            .initial_connection_window_size(8 << 20)
            .initial_stream_window_size(2 << 20)
            .handshake(TokioIo::new(tls))
            .await
            .map_err(io::Error::other)?;
        let target = self.target.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(gateway = %target, error = %e, "gateway connection ended");
            }
        });
        Ok(send)
    }
}

impl tower::Service<http::Request<Body>> for GatewayChannel {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // a connection is made (or found down) per call: readiness never waits
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        parts.authority = Some(self.shared.authority.clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        match http::Uri::from_parts(parts) {
            Ok(uri) => *req.uri_mut() = uri,
            Err(e) => return Box::pin(async move { Err(e.into()) }),
        }
        let live = self.shared.live();
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let mut send = match live {
                Some(s) => s,
                None => shared.connection().await?,
            };
            if send.ready().await.is_err() {
                // the connection ended since it was looked up: one fresh one, then give up
                send = shared.connection().await?;
            }
            send.send_request(req).await.map_err(|e| {
                if e.is_closed() || e.is_canceled() {
                    tonic::Status::unavailable(format!("gateway connection lost: {e}")).into()
                } else {
                    e.into()
                }
            })
        })
    }
}
