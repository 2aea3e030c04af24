//! The gateway's upstream forwarder: remote-write bodies go to a Cortex-compatible store as
//! they came, with exactly one tenant header, as a `tower::Service` over core's
//! [`ForwardRequest`] whose timeout, concurrency limit and metrics are layers.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderValue, USER_AGENT};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opni_metrics_core::error_chain;
use opni_metrics_core::remote_write::{ForwardError, ForwardRequest, ForwardResponse, is_relayed_header};
use opni_metrics_transport::metrics::{MetricsLayer, RequestMetrics};
use opni_metrics_transport::tls;
use rustls::RootCertStore;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};

pub use crate::settings::UpstreamSettings;

/// Why the upstream could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// A PEM file failed.
    #[error("upstream TLS")]
    Pem(#[from] tls::TlsError),
    /// rustls refused the configuration.
    #[error("upstream TLS configuration")]
    Rustls(#[from] rustls::Error),
    /// The URL scheme is neither http nor https.
    #[error("upstream URL {0} must be http:// or https://")]
    Scheme(Uri),
}

pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The bare forwarder (no limits): one POST per request on a pooled HTTP/1.1 or HTTP/2 client.
#[derive(Clone)]
pub struct Forwarder {
    client: HttpClient,
    settings: Arc<UpstreamSettings>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").field("url", &self.settings.url).finish_non_exhaustive()
    }
}

impl Forwarder {
    /// Builds the client.
    ///
    /// # Errors
    /// [`UpstreamError`].
    pub fn new(settings: UpstreamSettings) -> Result<Self, UpstreamError> {
        let client = upstream_client(&settings)?;
        Ok(Self::with_client(settings, client))
    }

    /// A forwarder on an existing client (shared with the other upstream calls).
    pub(crate) fn with_client(settings: UpstreamSettings, client: HttpClient) -> Self {
        Self { client, settings: Arc::new(settings) }
    }
}

/// The pooled HTTP/1.1 + HTTP/2 client for the upstream: `https` with the configured CA (the
/// system roots when none) and client certificate, or plain `http`. Every call to the upstream
/// (remote write, readiness, tenant deletion) goes through one like it.
///
/// # Errors
/// [`UpstreamError`].
pub(crate) fn upstream_client(settings: &UpstreamSettings) -> Result<HttpClient, UpstreamError> {
    match settings.url.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(UpstreamError::Scheme(settings.url.clone())),
    }
    let roots = match &settings.ca {
        Some(ca) => Arc::unwrap_or_clone(tls::roots(ca)?),
        // a plain-http upstream never uses TLS: the system roots would only take memory
        None if settings.url.scheme_str() == Some("http") => RootCertStore::empty(),
        None => {
            let mut roots = RootCertStore::empty();
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
            roots
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let tls = match &settings.client_cert {
        Some((cert, key)) => {
            builder.with_client_auth_cert(tls::read_certs("certificate", cert)?, tls::read_key(key)?)?
        }
        None => builder.with_no_client_auth(),
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(settings.timeout.min(Duration::from_secs(5))));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    // the timer drives HTTP/2 keep-alive PINGs: without it hyper panics on the first h2
    // connection (an https upstream that negotiates h2)
    let client = Client::builder(TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .build(https);
    Ok(client)
}

impl Service<ForwardRequest> for Forwarder {
    type Response = ForwardResponse;
    type Error = ForwardError;
    type Future = BoxFuture<'static, Result<ForwardResponse, ForwardError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ForwardError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ForwardRequest) -> Self::Future {
        let client = self.client.clone();
        let s = Arc::clone(&self.settings);
        Box::pin(async move {
            let mut builder = Request::builder()
                .method(Method::POST)
                .uri(s.url.clone())
                .header(
                    CONTENT_TYPE,
                    HeaderValue::from_str(&req.content_type)
                        .map_err(|_| ForwardError::Unreachable("content type is not a header value".into()))?,
                )
                .header(CONTENT_ENCODING, HeaderValue::from_static("snappy"))
                .header(
                    USER_AGENT,
                    HeaderValue::from_static(concat!("opni-metrics-gateway/", env!("CARGO_PKG_VERSION"))),
                );
            if let Some(v) = req.version {
                let v = HeaderValue::from_str(&v)
                    .map_err(|_| ForwardError::Unreachable("version is not a header value".into()))?;
                builder = builder.header("x-prometheus-remote-write-version", v);
            }
            let tenant = HeaderValue::from_str(req.tenant.as_str())
                .map_err(|_| ForwardError::Unreachable("tenant is not a valid header value".into()))?;
            builder = builder.header(s.tenant_header.clone(), tenant);
            let request = builder.body(Full::new(req.body)).map_err(|e| ForwardError::Unreachable(e.to_string()))?;
            let response = client.request(request).await.map_err(|e| ForwardError::Unreachable(error_chain(&e)))?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .filter(|(n, _)| is_relayed_header(n.as_str()))
                .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect();
            let body = read_capped(response.into_body(), s.max_response_body).await;
            Ok(ForwardResponse { status, body, headers })
        })
    }
}

/// Marks a body cut at the limit.
const TRUNCATED: &[u8] = b"... (truncated)";

/// Reads at most `max` bytes of `body`: a longer one (an upstream's large error page) is cut
/// there and marked, never turned into an error of its own; the rest is not read. A body that
/// fails midway keeps what arrived.
async fn read_capped<B>(body: B, max: usize) -> Bytes
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    let mut body = body;
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            out.extend_from_slice(b" (upstream response body unreadable)");
            break;
        };
        let Ok(data) = frame.into_data() else { continue };
        let room = max.saturating_sub(out.len());
        if data.len() > room {
            out.extend_from_slice(&data[..room]);
            out.extend_from_slice(TRUNCATED);
            break;
        }
        out.extend_from_slice(&data);
    }
    out.freeze()
}

/// The forwarder with its layers, cheap to clone (clones share the limits and the pool).
pub type ForwardService = BoxCloneSyncService<ForwardRequest, ForwardResponse, ForwardError>;

/// Stacks metrics (outermost, so shed and timed-out requests are counted), load shedding at
/// the concurrency limit, and the deadline on `forwarder`.
pub fn stack(forwarder: Forwarder, metrics: Arc<RequestMetrics>) -> ForwardService {
    let timeout = forwarder.settings.timeout;
    let limit = forwarder.settings.max_concurrency.max(1);
    let svc = ServiceBuilder::new()
        .layer(MetricsLayer::new(metrics))
        .map_err(|e: tower::BoxError| {
            if e.is::<tower::timeout::error::Elapsed>() {
                ForwardError::Timeout
            } else if e.is::<tower::load_shed::error::Overloaded>() {
                ForwardError::Overloaded
            } else {
                match e.downcast::<ForwardError>() {
                    Ok(f) => *f,
                    Err(e) => ForwardError::Unreachable(e.to_string()),
                }
            }
        })
        .load_shed()
        .concurrency_limit(limit)
        .timeout(timeout)
        .service(forwarder);
    BoxCloneSyncService::new(svc)
}

/// Forwards `req` through `svc`.
///
/// # Errors
/// [`ForwardError`].
pub async fn forward(svc: &ForwardService, req: ForwardRequest) -> Result<ForwardResponse, ForwardError> {
    svc.clone().oneshot(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_bodies_are_cut_and_marked() {
        let short = read_capped(Full::new(Bytes::from_static(b"out of order")), 64).await;
        assert_eq!(&short[..], b"out of order");
        let frames = futures::stream::iter(
            [&b"0123456789"[..], b"abcdefghij", b"never read"]
                .map(|d| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from_static(d)))),
        );
        let long = read_capped(http_body_util::StreamBody::new(frames), 15).await;
        assert_eq!(&long[..], b"0123456789abcde... (truncated)");
        let exact = read_capped(Full::new(Bytes::from_static(b"0123456789")), 10).await;
        assert_eq!(&exact[..], b"0123456789");
    }
}
