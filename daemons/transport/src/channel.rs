//! A gRPC channel to the gateway that sends each call straight into its HTTP/2 connection.
//!
//! tonic's `Channel` puts a `tower::buffer` in front of the connection, and hyper's HTTP/2
//! client hands every call to its connection task, which spawns one task to send the body and
//! one to wait for the answer: four tasks and as many wake-ups per call. [`GatewayChannel`]
//! drives the [`h2`] connection directly from the caller's task instead: the call queues its
//! `HEADERS` and, when the body is already there (every unary call), its whole body with
//! `END_STREAM` on the last `DATA` frame, then waits for the answer. The connection task writes
//! the frames together and wakes the caller once. A body that is not ready yet (a client
//! stream) is sent by a task of its own, within the stream's flow-control window.
//!
//! Behaviour, as the agent relies on it:
//! - connects lazily, on the first call, and again on the first call after the connection
//!   ended (a failure, the gateway's maximum connection age, a revocation);
//! - one dial at a time: calls that wait for a dial in progress share its outcome, so a
//!   gateway that is down fails them at once instead of queueing one dial per call;
//! - every new connection uses the TLS config current at that moment (renewed certificates);
//! - a PING every `keepalive_interval`; a gateway that does not answer within
//!   `keepalive_timeout` has its connection closed (its calls fail, the next call redials);
//! - a call that could not be sent (no connection, the connection closed or going away under
//!   it) or whose connection broke before the answer fails with `UNAVAILABLE`, which callers may
//!   retry; other HTTP/2 errors reach tonic, which maps them to their gRPC codes.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use h2::client::SendRequest;
use h2::{Ping, RecvStream, SendStream};
use http_body::{Body as _, Frame};
use http_body_util::BodyExt;
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
    /// The live connection, if any.
    current: Mutex<Option<Conn>>,
    /// Held while dialing; the number counts finished dials and the last one's failure.
    dial: tokio::sync::Mutex<(u64, Option<String>)>,
}

/// One connection: the handle that opens streams on it, and whether it is done with (its task
/// ended, or it refused a new stream).
#[derive(Clone)]
struct Conn {
    send: SendRequest<Bytes>,
    gone: Arc<AtomicBool>,
}

impl Conn {
    fn usable(&self) -> bool {
        !self.gone.load(Ordering::Acquire)
    }

    fn retire(&self) {
        self.gone.store(true, Ordering::Release);
    }
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
        let name = crate::grpc::server_name(server_name)?;
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
    /// The live connection, if there is one that can take a call.
    fn live(&self) -> Option<Conn> {
        let g = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        g.as_ref().filter(|c| c.usable()).cloned()
    }

    async fn connection(&self) -> Result<Conn, tonic::Status> {
        let seen = self.dial.try_lock().map(|g| g.0).ok();
        let mut dial = self.dial.lock().await;
        if let Some(c) = self.live() {
            return Ok(c);
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
            Ok(c) => {
                dial.1 = None;
                *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                let msg = format!("cannot connect to {}: {e}", self.target);
                dial.1 = Some(msg.clone());
                Err(tonic::Status::unavailable(msg))
            }
        }
    }

    async fn dial(&self) -> io::Result<Conn> {
        let tcp = TcpStream::connect(&self.target).await?;
        tcp.set_nodelay(true)?;
        let cfg = Arc::clone(&self.tls.borrow());
        let tls = tokio_rustls::TlsConnector::from(cfg).connect(self.name.clone(), tcp).await?;
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(crate::grpc::STREAM_WINDOW)
            .initial_connection_window_size(crate::grpc::CONNECTION_WINDOW)
            .handshake::<_, Bytes>(tls)
            .await
            .map_err(io::Error::other)?;
        let gone = Arc::new(AtomicBool::new(false));
        let (interval, timeout) = (self.opts.keepalive_interval, self.opts.keepalive_timeout);
        let (target, ended) = (self.target.clone(), Arc::clone(&gone));
        tokio::spawn(async move {
            if let Err(e) = drive(conn, interval, timeout, &ended).await {
                tracing::debug!(gateway = %target, error = %e, "gateway connection ended");
            }
        });
        Ok(Conn { send, gone })
    }
}

/// Runs a connection until it ends, with a PING every `interval` that must be answered within
/// `timeout`; a missed answer closes the connection, which fails its streams. `gone` is set
/// before the streams learn of the end, so a failed call never finds the connection live.
async fn drive<T>(
    mut conn: h2::client::Connection<T, Bytes>,
    interval: Duration,
    timeout: Duration,
    gone: &AtomicBool,
) -> Result<(), io::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let result = match conn.ping_pong() {
        None => (&mut conn).await.map_err(io::Error::other),
        Some(mut pings) => {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut awaiting: Option<tokio::time::Instant> = None;
            loop {
                let deadline = awaiting.unwrap_or_else(|| tokio::time::Instant::now() + interval);
                tokio::select! {
                    r = &mut conn => break r.map_err(io::Error::other),
                    _ = tick.tick(), if awaiting.is_none() => {
                        if let Err(e) = pings.send_ping(Ping::opaque()) {
                            break Err(io::Error::other(e));
                        }
                        awaiting = Some(tokio::time::Instant::now() + timeout);
                    }
                    r = std::future::poll_fn(|cx| pings.poll_pong(cx)), if awaiting.is_some() => {
                        if let Err(e) = r {
                            break Err(io::Error::other(e));
                        }
                        awaiting = None;
                    }
                    () = tokio::time::sleep_until(deadline), if awaiting.is_some() => {
                        break Err(io::Error::new(io::ErrorKind::TimedOut, "keep-alive PING not answered"));
                    }
                }
            }
        }
    };
    gone.store(true, Ordering::Release);
    drop(conn);
    result
}

/// Whether a failed call or stream ended with its connection rather than with the gateway's
/// answer: the connection broke, or the gateway refused the stream unprocessed.
fn connection_lost(e: &h2::Error) -> bool {
    e.is_io() || e.is_go_away() || e.reason() == Some(h2::Reason::REFUSED_STREAM)
}

fn unavailable(e: &h2::Error) -> Box<dyn std::error::Error + Send + Sync> {
    tonic::Status::unavailable(format!("gateway connection lost: {e}")).into()
}

/// Waits until `conn` can open a stream.
async fn ready(conn: &Conn) -> Result<SendRequest<Bytes>, h2::Error> {
    conn.send.clone().ready().await
}

impl tower::Service<http::Request<Body>> for GatewayChannel {
    type Response = http::Response<ResponseBody>;
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
            let conn = match live {
                Some(c) => c,
                None => shared.connection().await?,
            };
            let (conn, mut send) = match ready(&conn).await {
                Ok(s) => (conn, s),
                Err(_) => {
                    // the connection ended or is going away: one fresh one, then give up
                    conn.retire();
                    let fresh = shared.connection().await?;
                    let send = ready(&fresh).await.map_err(|e| {
                        fresh.retire();
                        unavailable(&e)
                    })?;
                    (fresh, send)
                }
            };
            let (head, body) = req.into_parts();
            let eos = body.is_end_stream();
            let (answer, stream) = send.send_request(http::Request::from_parts(head, ()), eos).map_err(|e| {
                if connection_lost(&e) {
                    conn.retire();
                }
                unavailable(&e)
            })?;
            if !eos {
                send_body(body, stream);
            }
            let response = answer.await.map_err(|e| if connection_lost(&e) { unavailable(&e) } else { e.into() })?;
            Ok(response.map(|recv| ResponseBody { recv, data_done: false, done: false }))
        })
    }
}

/// Sends `body` on `stream`: what the body has now at once, the last frame with `END_STREAM`
/// when the body ends there (a unary call's one message); the rest, if any, from a task.
fn send_body(mut body: Body, mut stream: SendStream<Bytes>) {
    let mut held: Option<Bytes> = None;
    loop {
        match body.frame().now_or_never() {
            Some(None) => {
                let _ = stream.send_data(held.take().unwrap_or_default(), true);
                return;
            }
            Some(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    if let Some(previous) = held.replace(data)
                        && stream.send_data(previous, false).is_err()
                    {
                        return;
                    }
                }
                Err(frame) => {
                    if let Some(previous) = held.take()
                        && stream.send_data(previous, false).is_err()
                    {
                        return;
                    }
                    if let Ok(trailers) = frame.into_trailers() {
                        let _ = stream.send_trailers(trailers);
                    }
                    return;
                }
            },
            Some(Some(Err(_))) => {
                stream.send_reset(h2::Reason::CANCEL);
                return;
            }
            None => {
                if let Some(previous) = held.take()
                    && stream.send_data(previous, false).is_err()
                {
                    return;
                }
                tokio::spawn(pump(body, stream));
                return;
            }
        }
    }
}

/// Sends the rest of a streaming body as it comes, each chunk once the stream has some send
/// window (so at most one chunk waits beyond the window); stops when the gateway resets the
/// stream.
async fn pump(mut body: Body, mut stream: SendStream<Bytes>) {
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = std::future::poll_fn(|cx| stream.poll_reset(cx)) => return,
        };
        match frame {
            None => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if !data.is_empty() {
                        stream.reserve_capacity(data.len());
                        while stream.capacity() == 0 {
                            match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
                                Some(Ok(_)) => {}
                                Some(Err(_)) | None => return,
                            }
                        }
                    }
                    if stream.send_data(data, false).is_err() {
                        return;
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        let _ = stream.send_trailers(trailers);
                    }
                    return;
                }
            },
            Some(Err(_)) => {
                stream.send_reset(h2::Reason::CANCEL);
                return;
            }
        }
    }
}

/// The body of a gateway's answer: its `DATA` (each chunk's flow-control window given back as
/// it is read), then its trailers (the gRPC status).
#[derive(Debug)]
pub struct ResponseBody {
    recv: RecvStream,
    data_done: bool,
    done: bool,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => self.data_done = true,
            }
        }
        let trailers = ready!(self.recv.poll_trailers(cx));
        self.done = true;
        match trailers {
            Ok(Some(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.recv.is_end_stream()
    }
}
