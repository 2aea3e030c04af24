//! A minimal HTTP client for tests, and polling for observable conditions.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A pooled plain-HTTP client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends one request.
///
/// # Errors
/// Transport errors as text.
pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Reply, String> {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(body.into())).map_err(|e| e.to_string())?;
    let resp = client().request(req).await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Reply { status, headers, body })
}

/// GET `url`.
///
/// # Errors
/// Transport errors as text.
pub async fn get(url: &str) -> Result<Reply, String> {
    send(Method::GET, url, &[], Bytes::new()).await
}

/// POSTs a remote-write 1.0 body to `url`.
///
/// # Errors
/// Transport errors as text.
pub async fn push(url: &str, body: impl Into<Bytes>) -> Result<Reply, String> {
    send(
        Method::POST,
        url,
        &[
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "snappy"),
            ("x-prometheus-remote-write-version", "0.1.0"),
        ],
        body,
    )
    .await
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `limit`. This waits for a
/// condition observable only by asking (a process becoming ready, data arriving), never for
/// time itself.
///
/// # Errors
/// The last state description when `limit` passes.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let mut last = String::from("never checked");
    while start.elapsed() < limit {
        match check().await {
            Ok(v) => return Ok(v),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{what}: not reached within {limit:?}; last: {last}"))
}

/// Reads `name` (exact metric line prefix, e.g. `prometheus_remote_storage_samples_failed_total`)
/// from a Prometheus text exposition, summing every series of it.
pub fn metric_sum(exposition: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in exposition.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else { continue };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let value = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// A small HTTPS/1.1 client trusting one CA (one connection per request).
#[derive(Clone)]
pub struct TlsClient {
    config: std::sync::Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsClient")
    }
}

impl TlsClient {
    /// A client trusting the CA certificates in `ca` (PEM).
    pub fn new(ca: &std::path::Path) -> Self {
        let roots = opni_metrics_transport::tls::roots(ca).expect("CA");
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_root_certificates(std::sync::Arc::unwrap_or_clone(roots))
            .with_no_client_auth();
        Self { config: std::sync::Arc::new(config) }
    }

    /// GET `url` (`https://host:port/...`) with `headers`.
    ///
    /// # Errors
    /// Transport and TLS errors as text.
    pub async fn get(&self, url: &str, headers: &[(String, String)]) -> Result<Reply, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
        let host = uri.host().ok_or("no host")?.to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| e.to_string())?;
        let name = rustls_pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::clone(&self.config))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut b = Request::builder().method(Method::GET).uri(uri.path_and_query().map_or("/", |p| p.as_str()));
        b = b.header("host", format!("{host}:{port}"));
        for (k, v) in headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let req = b.body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Reply { status, headers, body })
    }
}
