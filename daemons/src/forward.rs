//! The gateway's upstream forwarder: remote-write bodies go to a Cortex-compatible store as
//! they came, with exactly one tenant header, as a `tower::Service` whose timeout, concurrency
//! limit and metrics are layers.

use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opni_metrics_core::ClusterId;
use opni_metrics_core::remote_write::Outcome;
use rustls::RootCertStore;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::daemon::error_chain;
use crate::metrics::GatewayMetrics;
use crate::tls;

/// Response headers passed back from the upstream (besides `Content-Type`).
pub fn is_relayed_header(name: &str) -> bool {
    const PREFIX: &str = "x-prometheus-remote-write-";
    const SUFFIX: &str = "-written";
    name.eq_ignore_ascii_case("retry-after")
        || name.eq_ignore_ascii_case("content-type")
        || (name.len() > PREFIX.len() + SUFFIX.len()
            && name.get(..PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
            && name.get(name.len() - SUFFIX.len()..).is_some_and(|s| s.eq_ignore_ascii_case(SUFFIX)))
}

/// Upstream settings.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// Full push URL, e.g. `http://cortex:8080/api/v1/push`.
    pub url: Uri,
    /// Header carrying the tenant (`X-Scope-OrgID` for Cortex and Mimir).
    pub tenant_header: HeaderName,
    /// Per-request deadline, including reading the response.
    pub timeout: Duration,
    /// Most requests in flight upstream; more are refused at once (503).
    pub max_concurrency: usize,
    /// CA bundle for an `https` upstream; the system roots when absent.
    pub ca: Option<PathBuf>,
    /// Client certificate and key for mutual TLS to the upstream.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Largest upstream response body relayed (longer ones are cut).
    pub max_response_body: usize,
}

/// Why the upstream could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// A PEM file failed.
    #[error("upstream TLS")]
    Pem(#[from] crate::tls::TlsError),
    /// rustls refused the configuration.
    #[error("upstream TLS configuration")]
    Rustls(#[from] rustls::Error),
    /// The URL scheme is neither http nor https.
    #[error("upstream URL {0} must be http:// or https://")]
    Scheme(Uri),
}

/// A request to forward.
#[derive(Debug, Clone)]
pub struct ForwardRequest {
    /// The tenant, from the agent's verified identity.
    pub tenant: ClusterId,
    /// The snappy-compressed body, as received.
    pub body: Bytes,
    /// Content-Type as sent by Prometheus (validated).
    pub content_type: HeaderValue,
    /// `X-Prometheus-Remote-Write-Version`, if sent.
    pub version: Option<HeaderValue>,
}

/// The upstream's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardResponse {
    /// HTTP status.
    pub status: u16,
    /// Body (cut at the configured limit).
    pub body: Bytes,
    /// Relayed headers ([`is_relayed_header`]).
    pub headers: Vec<(String, String)>,
}

/// Why forwarding failed before an answer came.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// The deadline passed.
    #[error("upstream did not answer within the deadline")]
    Timeout,
    /// Too many requests in flight upstream.
    #[error("gateway is at its upstream concurrency limit")]
    Overloaded,
    /// Connecting or talking to the upstream failed.
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
}

impl ForwardError {
    /// The outcome for the status rules.
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Timeout => Outcome::Timeout,
            Self::Overloaded => Outcome::Overloaded,
            Self::Unreachable(_) => Outcome::Unreachable,
        }
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

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
        match settings.url.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(UpstreamError::Scheme(settings.url.clone())),
        }
        let roots = match &settings.ca {
            Some(ca) => Arc::unwrap_or_clone(tls::roots(ca)?),
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
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .build(https);
        Ok(Self { client, settings: Arc::new(settings) })
    }
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
                .header(CONTENT_TYPE, req.content_type)
                .header(CONTENT_ENCODING, HeaderValue::from_static("snappy"))
                .header(
                    USER_AGENT,
                    HeaderValue::from_static(concat!("opni-metrics-gateway/", env!("CARGO_PKG_VERSION"))),
                );
            if let Some(v) = req.version {
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
            let body = match Limited::new(response.into_body(), s.max_response_body).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => Bytes::from_static(b"(upstream response body unreadable or too long)"),
            };
            Ok(ForwardResponse { status, body, headers })
        })
    }
}

/// The forwarder with its layers, cheap to clone (clones share the limits and the pool).
pub type ForwardService = BoxCloneSyncService<ForwardRequest, ForwardResponse, ForwardError>;

/// Stacks metrics, load shedding at the concurrency limit, and the deadline on `forwarder`.
pub fn stack(forwarder: Forwarder, metrics: Arc<GatewayMetrics>) -> ForwardService {
    let timeout = forwarder.settings.timeout;
    let limit = forwarder.settings.max_concurrency.max(1);
    let svc = ServiceBuilder::new()
        .layer_fn(move |inner| Metered { inner, metrics: Arc::clone(&metrics) })
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

/// The metrics layer: counts requests, bytes and outcomes by tenant, and times them.
#[derive(Clone)]
struct Metered<S> {
    inner: S,
    metrics: Arc<GatewayMetrics>,
}

impl<S> Service<ForwardRequest> for Metered<S>
where
    S: Service<ForwardRequest, Response = ForwardResponse, Error = ForwardError> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = ForwardResponse;
    type Error = ForwardError;
    type Future = BoxFuture<'static, Result<ForwardResponse, ForwardError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ForwardError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: ForwardRequest) -> Self::Future {
        let metrics = Arc::clone(&self.metrics);
        let tenant = req.tenant.clone();
        let bytes = req.body.len() as u64;
        let start = Instant::now();
        metrics.upstream_in_flight.inc();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            metrics.upstream_in_flight.dec();
            metrics.record_forward(&tenant, bytes, &r, start.elapsed());
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_headers() {
        for ok in [
            "Retry-After",
            "X-Prometheus-Remote-Write-Samples-Written",
            "x-prometheus-remote-write-histograms-written",
            "content-type",
        ] {
            assert!(is_relayed_header(ok), "{ok}");
        }
        for no in
            ["X-Scope-OrgID", "set-cookie", "x-prometheus-remote-write-version", "x-prometheus-remote-write--written"]
        {
            assert!(!is_relayed_header(no), "{no}");
        }
    }
}
