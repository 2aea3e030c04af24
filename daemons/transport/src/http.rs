//! A small HTTP/1.1 + HTTP/2 (h2c) server with a header read timeout and graceful shutdown
//! that drains in-flight requests.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::{Service, ServiceExt};

/// Server options.
#[derive(Debug, Clone, Copy)]
pub struct ServerOptions {
    /// Longest time a client may take to send the request headers; also bounds the first
    /// bytes of a connection (before HTTP/1 and HTTP/2 are told apart) and an idle HTTP/1
    /// keep-alive connection's wait for its next request.
    pub header_read_timeout: Duration,
    /// Longest time in-flight requests get to finish after shutdown begins.
    pub drain_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 PING interval on an idle connection; a peer that does not answer within
    /// `http2_keepalive_timeout` is disconnected.
    pub http2_keepalive_interval: Duration,
    /// See `http2_keepalive_interval`.
    pub http2_keepalive_timeout: Duration,
    /// Most open connections; more are closed at once.
    pub max_connections: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            max_concurrent_streams: 1024,
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(10),
            max_connections: 4096,
        }
    }
}

/// The HTTP/2 client preface; a connection starting differently is HTTP/1.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits until `tcp` has sent enough to tell HTTP/1 from HTTP/2 (the server then applies its own
/// timeouts); `false` if it did not within `limit` or closed.
async fn first_bytes(tcp: &tokio::net::TcpStream, limit: Duration) -> bool {
    let work = async {
        let mut buf = [0u8; 24];
        loop {
            let n = match tcp.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            // decided once the bytes differ from the HTTP/2 preface, or all of it arrived
            if buf[..n] != H2_PREFACE[..n] || n >= H2_PREFACE.len() {
                return true;
            }
            // a partial preface: wait for more without spinning
            if tcp.readable().await.is_err() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(limit, work).await.unwrap_or(false)
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// Serves `service` on `listener` until `shutdown` resolves, then stops accepting and waits
/// up to the drain timeout for in-flight requests. Each request is one `oneshot` call on a
/// clone of `service`.
pub async fn serve<S, B>(listener: TcpListener, service: S, opts: ServerOptions, shutdown: impl Future<Output = ()>)
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_with_tls(listener, None, service, opts, shutdown).await;
}

/// The peer address of the connection a request came on, in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemotePeer(pub std::net::SocketAddr);

/// Like [`serve`], over TLS with the current config of `tls` for each new connection
/// (handshakes run concurrently, each within the header read timeout). `None` serves plain
/// text. Each request carries its connection's [`RemotePeer`].
pub async fn serve_with_tls<S, B>(
    listener: TcpListener,
    tls: Option<watch::Receiver<Arc<ServerConfig>>>,
    service: S,
    opts: ServerOptions,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(opts.header_read_timeout).keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(opts.max_concurrent_streams)
        .keep_alive_interval(opts.http2_keepalive_interval)
        .keep_alive_timeout(opts.http2_keepalive_timeout);
    let builder = Arc::new(builder);
    let slots = Arc::new(tokio::sync::Semaphore::new(opts.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(%peer, "connection limit reached; closing");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let service = service.clone();
        let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(RemotePeer(peer));
            service.clone().oneshot(req)
        });
        let watcher = graceful.watcher();
        let builder = Arc::clone(&builder);
        let acceptor = tls.as_ref().map(|t| tokio_rustls::TlsAcceptor::from(Arc::clone(&t.borrow())));
        let handshake = opts.header_read_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            // a connection that sends nothing (or trickles the protocol preface) is closed
            // before the server's own header timeout could start
            if acceptor.is_none() && !first_bytes(&tcp, handshake).await {
                tracing::debug!(%peer, "no request within the header read timeout; closing");
                return;
            }
            let result = match acceptor {
                None => watcher.watch(builder.serve_connection(TokioIo::new(tcp), svc).into_owned()).await,
                Some(a) => match tokio::time::timeout(handshake, a.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        watcher.watch(builder.serve_connection(TokioIo::new(stream), svc).into_owned()).await
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(opts.drain_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!("in-flight requests did not finish within the drain timeout");
    }
}
