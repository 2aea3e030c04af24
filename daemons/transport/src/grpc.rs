//! gRPC over mutual TLS: a server-side stream of verified connections that carry the peer's
//! identity into every request, and a client channel that dials with our TLS config.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use opni_metrics_core::ClusterId;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

use crate::tls::IdentityError;

/// Who is on the other end of a connection, as its verified certificate says.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    /// The cluster named by the certificate's URI SAN, or why there is none.
    pub cluster: Result<ClusterId, IdentityError>,
    /// The peer's address.
    pub remote_addr: SocketAddr,
    /// When the peer's certificate stops being valid (`None` without a certificate). TLS checks
    /// validity once, at the handshake; [`PeerIdentity::cluster_of`] checks it on every
    /// request, so a long-lived connection does not outlive its certificate.
    pub not_after: Option<std::time::SystemTime>,
    /// The peer certificate's serial number, lowercase hex (`None` without a certificate), for
    /// checking it against a list of revoked serials.
    pub serial: Option<String>,
}

/// Whether [`Connections::close`] has cut a connection, and the waker of its reader.
#[derive(Debug, Default)]
struct Cut {
    cut: std::sync::atomic::AtomicBool,
    waker: futures::task::AtomicWaker,
}

impl Cut {
    fn is_cut(&self) -> bool {
        self.cut.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// The open connections of each cluster, so that the connections of an identity that was
/// revoked can be closed at once. Cheap to clone; share one between a listener
/// ([`tls_incoming_limited`]) and whoever revokes.
#[derive(Debug, Clone, Default)]
pub struct Connections {
    inner: Arc<std::sync::Mutex<std::collections::HashMap<ClusterId, Vec<std::sync::Weak<Cut>>>>>,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<ClusterId, Vec<std::sync::Weak<Cut>>>> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn track(&self, id: &ClusterId) -> Arc<Cut> {
        let cut = Arc::new(Cut::default());
        let mut m = self.lock();
        let list = m.entry(id.clone()).or_default();
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&cut));
        cut
    }

    /// Closes every open connection of `id`: its next read or write fails, which ends the
    /// connection and every call on it. Returns how many were open.
    pub fn close(&self, id: &ClusterId) -> usize {
        let list = self.lock().remove(id).unwrap_or_default();
        let mut n = 0;
        for c in list.iter().filter_map(std::sync::Weak::upgrade) {
            c.cut.store(true, std::sync::atomic::Ordering::Release);
            c.waker.wake();
            n += 1;
        }
        n
    }

    /// How many connections of `id` are open.
    pub fn count(&self, id: &ClusterId) -> usize {
        self.lock().get(id).map_or(0, |l| l.iter().filter(|w| w.strong_count() > 0).count())
    }
}

fn cut_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "the peer's identity was revoked")
}

impl PeerIdentity {
    /// The identity of a peer that presented `chain` (leaf first; empty without a client
    /// certificate), its leaf parsed once.
    pub fn new(chain: &[rustls_pki_types::CertificateDer<'_>], remote_addr: SocketAddr) -> Self {
        match crate::tls::Leaf::parse(chain) {
            Ok(leaf) => {
                Self { cluster: leaf.cluster, remote_addr, not_after: Some(leaf.not_after), serial: Some(leaf.serial) }
            }
            Err(e) => Self { cluster: Err(e), remote_addr, not_after: None, serial: None },
        }
    }

    /// The identity carried by a tonic request, as the server's connection layer put it there.
    ///
    /// # Errors
    /// `Unauthenticated` when the request carries no cluster identity, or its certificate has
    /// expired since the connection was made.
    pub fn cluster_of<T>(req: &tonic::Request<T>) -> Result<ClusterId, tonic::Status> {
        match req.extensions().get::<PeerIdentity>() {
            Some(PeerIdentity { cluster: Ok(_), not_after: Some(end), .. }) if std::time::SystemTime::now() >= *end => {
                let ago = std::time::SystemTime::now().duration_since(*end).unwrap_or_default().as_secs();
                Err(tonic::Status::unauthenticated(format!(
                    "the client certificate expired {ago} s ago; it must be renewed (or the agent join again)"
                )))
            }
            Some(PeerIdentity { cluster: Ok(id), .. }) => Ok(id.clone()),
            Some(PeerIdentity { cluster: Err(e), .. }) => Err(tonic::Status::unauthenticated(e.to_string())),
            None => Err(tonic::Status::unauthenticated("no client certificate")),
        }
    }
}

/// A TLS connection whose handshake (with client certificate) succeeded.
#[derive(Debug)]
pub struct TlsConn {
    inner: TlsStream<TcpStream>,
    identity: PeerIdentity,
    /// Set when the connection's cluster is revoked.
    cut: Option<Arc<Cut>>,
    /// The connection's slot under the connection cap, freed when it is dropped.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerIdentity;
    fn connect_info(&self) -> PeerIdentity {
        self.identity.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Some(c) = &self.cut {
            // registered before looking, so a cut made in between wakes this read
            c.waker.register(cx.waker());
            if c.is_cut() {
                return Poll::Ready(Err(cut_error()));
            }
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.cut.as_ref().is_some_and(|c| c.is_cut()) {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.cut.as_ref().is_some_and(|c| c.is_cut()) {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Limits of a TLS listener: what a stranger can make it spend before any identity is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct IncomingLimits {
    /// Longest TLS handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// Most handshakes in progress at once; connections beyond are closed at once. Default 256.
    pub max_handshakes: usize,
    /// Most handshakes in progress at once from one peer address (an IPv6 peer's /64 counts as
    /// one address); connections beyond are closed at once, so one host cannot hold every
    /// slot of `max_handshakes`. Default 64.
    pub max_handshakes_per_address: usize,
    /// Most open connections; connections beyond are closed at once. Default 10,000.
    pub max_connections: usize,
}

impl Default for IncomingLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 256,
            max_handshakes_per_address: 64,
            max_connections: 10_000,
        }
    }
}

/// Handshakes in progress per peer address. An entry lives only while its address has a
/// handshake in progress, so the map never holds more than `max_handshakes` entries.
#[derive(Debug, Default)]
struct AddressHandshakes {
    counts: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One handshake of an address in progress, given back when dropped.
struct AddressSlot {
    owner: Arc<AddressHandshakes>,
    key: std::net::IpAddr,
}

impl AddressHandshakes {
    /// What counts as one address: an IPv4 address (also when IPv4-mapped), an IPv6 /64.
    fn key(ip: std::net::IpAddr) -> std::net::IpAddr {
        use std::net::{IpAddr, Ipv6Addr};
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let s = v6.segments();
                    IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
                }
            },
        }
    }

    /// A slot for a handshake from `ip`, unless it already has `max` in progress.
    fn take(self: &Arc<Self>, ip: std::net::IpAddr, max: usize) -> Option<AddressSlot> {
        let key = Self::key(ip);
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = counts.entry(key).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot { owner: Arc::clone(self), key })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

impl IncomingLimits {
    /// The defaults with this handshake timeout.
    pub fn with_handshake_timeout(handshake_timeout: Duration) -> Self {
        Self { handshake_timeout, ..Self::default() }
    }
}

/// Accepts TCP connections on `listener` and completes TLS handshakes concurrently (each within
/// `handshake_timeout`), yielding verified connections. Failed handshakes are logged and
/// counted by `on_failure`, never yielded. The current config of `tls` is used for every new
/// connection, so reloaded certificates apply at once. The accept loop runs in `tasks`.
pub fn tls_incoming(
    tasks: &crate::Tasks,
    listener: TcpListener,
    tls: watch::Receiver<Arc<ServerConfig>>,
    handshake_timeout: Duration,
    on_failure: impl Fn(&str) + Send + Sync + 'static,
) -> ReceiverStream<Result<TlsConn, io::Error>> {
    tls_incoming_limited(
        tasks,
        listener,
        tls,
        IncomingLimits::with_handshake_timeout(handshake_timeout),
        Connections::default(),
        on_failure,
    )
}

/// [`tls_incoming`] with [`IncomingLimits`]: a connection over the connection cap, or arriving
/// while its address's or the listener's handshake cap is reached, is closed at once (counted
/// by `on_failure` as `connection_limit`, `address_handshake_limit` or `handshake_limit`), so a
/// flood of strangers costs a closed socket each, not memory or a queue. A connection holds its
/// slot until it is dropped. Connections with a cluster identity are tracked in `connections`,
/// which can close them.
pub fn tls_incoming_limited(
    tasks: &crate::Tasks,
    listener: TcpListener,
    tls: watch::Receiver<Arc<ServerConfig>>,
    limits: IncomingLimits,
    tracked: Connections,
    on_failure: impl Fn(&str) + Send + Sync + 'static,
) -> ReceiverStream<Result<TlsConn, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let on_failure = Arc::new(on_failure);
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let handshakes = Arc::new(tokio::sync::Semaphore::new(limits.max_handshakes));
    let per_address = Arc::new(AddressHandshakes::default());
    tasks.spawn("tls-accept", async move {
        loop {
            let (tcp, remote_addr) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let Ok(slot) = Arc::clone(&connections).try_acquire_owned() else {
                tracing::debug!(peer = %remote_addr, "connection limit reached; closing");
                on_failure("connection_limit");
                continue;
            };
            let Some(address_slot) = per_address.take(remote_addr.ip(), limits.max_handshakes_per_address) else {
                tracing::debug!(peer = %remote_addr, "handshake limit of the address reached; closing");
                on_failure("address_handshake_limit");
                continue;
            };
            let Ok(handshake) = Arc::clone(&handshakes).try_acquire_owned() else {
                tracing::debug!(peer = %remote_addr, "handshake limit reached; closing");
                on_failure("handshake_limit");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.borrow()));
            let tx = tx.clone();
            let on_failure = Arc::clone(&on_failure);
            let tracked = tracked.clone();
            tokio::spawn(async move {
                let result = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await;
                drop((handshake, address_slot));
                match result {
                    Ok(Ok(inner)) => {
                        let chain = inner.get_ref().1.peer_certificates().unwrap_or(&[]);
                        let identity = PeerIdentity::new(chain, remote_addr);
                        let cut = identity.cluster.as_ref().ok().map(|id| tracked.track(id));
                        let _ = tx.send(Ok(TlsConn { inner, identity, cut, _slot: slot })).await;
                    }
                    Ok(Err(e)) => {
                        tracing::info!(peer = %remote_addr, error = %e, "TLS handshake failed");
                        on_failure("handshake");
                    }
                    Err(_) => {
                        tracing::info!(peer = %remote_addr, "TLS handshake timed out");
                        on_failure("timeout");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Options of the agent's channel to the gateway.
#[derive(Debug, Clone)]
pub struct ChannelOptions {
    /// Dial timeout.
    pub connect_timeout: Duration,
    /// HTTP/2 PING interval; a peer silent for `keepalive_timeout` after a PING is dead.
    pub keepalive_interval: Duration,
    /// See `keepalive_interval`.
    pub keepalive_timeout: Duration,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a channel could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The address is not `host:port`.
    #[error("invalid gateway address {0:?}, expected host:port")]
    Address(String),
    /// The TLS server name is invalid.
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
}

/// HTTP/2 connection-level receive window of every agent↔gateway connection, both ends: a
/// burst of concurrent bodies flows without waiting for window updates.
pub const CONNECTION_WINDOW: u32 = 8 << 20;
/// HTTP/2 per-stream receive window, both ends: a body up to this size needs no window update.
pub const STREAM_WINDOW: u32 = 2 << 20;

/// `server_name` as the name TLS verifies the server by.
///
/// # Errors
/// [`ChannelError::ServerName`].
pub fn server_name(server_name: &str) -> Result<ServerName<'static>, ChannelError> {
    ServerName::try_from(server_name.to_owned()).map_err(|_| ChannelError::ServerName(server_name.to_owned()))
}

/// A lazily connecting channel to `addr` (`host:port`) over TLS with `tls`'s current config,
/// verifying the server as `server_name`. One HTTP/2 connection multiplexes every call;
/// it reconnects on demand after a failure, and fails calls at once while the peer is down.
///
/// # Errors
/// [`ChannelError`].
pub fn tls_channel(
    addr: &str,
    server_name: &str,
    tls: watch::Receiver<Arc<ClientConfig>>,
    opts: &ChannelOptions,
) -> Result<Channel, ChannelError> {
    let name = self::server_name(server_name)?;
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|_| ChannelError::Address(addr.to_owned()))?
        .connect_timeout(opts.connect_timeout)
        .http2_keep_alive_interval(opts.keepalive_interval)
        .keep_alive_timeout(opts.keepalive_timeout)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true)
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .initial_stream_window_size(Some(STREAM_WINDOW));
    let target = addr.to_owned();
    let connector = tower::service_fn(move |_: http::Uri| {
        let cfg = Arc::clone(&tls.borrow());
        let name = name.clone();
        let target = target.clone();
        async move {
            let tcp = TcpStream::connect(&target).await?;
            tcp.set_nodelay(true)?;
            let stream = tokio_rustls::TlsConnector::from(cfg).connect(name, tcp).await?;
            Ok::<_, io::Error>(TokioIo::new(stream))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_has_its_own_handshake_quota_given_back_on_drop() {
        let quota = Arc::new(AddressHandshakes::default());
        let a = [quota.take(ip("10.0.0.1"), 2), quota.take(ip("10.0.0.1"), 2)];
        assert!(a.iter().all(Option::is_some));
        assert!(quota.take(ip("10.0.0.1"), 2).is_none(), "a third from the same address");
        let other = quota.take(ip("10.0.0.2"), 2);
        assert!(other.is_some(), "another address is not affected");
        drop(a);
        assert!(quota.take(ip("10.0.0.1"), 2).is_some(), "slots come back when handshakes end");
        drop(other);
        assert_eq!(quota.counts.lock().unwrap().len(), 0, "no entry outlives its handshakes");
    }

    #[test]
    fn an_ipv6_slash_64_is_one_address_and_mapped_ipv4_is_ipv4() {
        let quota = Arc::new(AddressHandshakes::default());
        let _one = quota.take(ip("2001:db8:1:2::1"), 1).unwrap();
        assert!(quota.take(ip("2001:db8:1:2:ffff::9"), 1).is_none(), "same /64");
        assert!(quota.take(ip("2001:db8:1:3::1"), 1).is_some(), "another /64");
        let _v4 = quota.take(ip("192.0.2.7"), 1).unwrap();
        assert!(quota.take(ip("::ffff:192.0.2.7"), 1).is_none(), "IPv4-mapped is the IPv4 address");
    }
}
