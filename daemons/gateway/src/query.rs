//! The query proxy: the Prometheus HTTP API under `/prometheus/api/v1/` for Grafana and other
//! clients, forwarded to the upstream's query frontend under exactly the tenants the caller may
//! read.
//!
//! Per request: the endpoint is checked against the read-only API; the bearer credential is
//! authenticated ([`Readers`]); the caller's tenants are read from its role bindings; with none
//! the answer is 403 and nothing is forwarded. The upstream request carries the query string
//! and (POST) form body unchanged, a small set of content headers, and one `X-Scope-OrgID`
//! set by the gateway (tenants joined with `|`): nothing else the caller sent, so neither its
//! own `X-Scope-OrgID` nor its credential reaches the upstream. The response streams back as
//! it arrives, cut off past the size limit or the timeout. Errors of the proxy itself are
//! Prometheus API error JSON.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::forward::HttpClient;
use crate::metrics::GatewayMetrics;
use crate::readers::{ReaderError, Readers};
use crate::settings::{QuerySettings, UpstreamApis};

/// The path prefix served.
pub const PREFIX: &str = "/prometheus/api/v1/";

/// The body of the proxy's answers.
pub type ProxyBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Endpoints forwarded, and whether they take POST.
const ENDPOINTS: &[(&str, bool)] = &[
    ("query", true),
    ("query_range", true),
    ("series", true),
    ("labels", true),
    ("metadata", false),
    ("query_exemplars", true),
    ("rules", false),
    ("alerts", false),
    ("status/buildinfo", false),
];

/// Request headers passed to the upstream.
const REQUEST_HEADERS: &[HeaderName] =
    &[header::ACCEPT, header::ACCEPT_ENCODING, header::CONTENT_TYPE, header::USER_AGENT];
/// Response headers passed back.
const RESPONSE_HEADERS: &[HeaderName] = &[
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::CONTENT_LENGTH,
    header::CACHE_CONTROL,
    header::VARY,
    header::WARNING,
    header::RETRY_AFTER,
];

/// The query proxy as a `tower::Service` over HTTP requests.
#[derive(Clone)]
pub struct QueryProxy {
    inner: Arc<Inner>,
}

struct Inner {
    readers: Readers,
    client: HttpClient,
    apis: UpstreamApis,
    tenant_header: HeaderName,
    settings: QuerySettings,
    metrics: Arc<GatewayMetrics>,
}

impl std::fmt::Debug for QueryProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryProxy").field("upstream", &self.inner.apis.query).finish_non_exhaustive()
    }
}

fn error(status: StatusCode, kind: &str, msg: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "status": "error", "errorType": kind, "error": msg }).to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

/// The endpoint named by `path` (under [`PREFIX`]), as a metric label, if it is served.
fn endpoint(path: &str) -> Option<(&'static str, bool)> {
    let rest = path.strip_prefix(PREFIX)?;
    if let Some(&(e, post)) = ENDPOINTS.iter().find(|(e, _)| *e == rest) {
        return Some((e, post));
    }
    let name = rest.strip_prefix("label/")?.strip_suffix("/values")?;
    let ok = !name.is_empty()
        && name.len() <= 1024
        && !name.bytes().all(|b| b == b'.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'%' | b'-'));
    ok.then_some(("label_values", false))
}

impl QueryProxy {
    /// A proxy to `apis.query` over `client`.
    pub(crate) fn new(
        readers: Readers,
        client: HttpClient,
        apis: UpstreamApis,
        tenant_header: HeaderName,
        settings: QuerySettings,
        metrics: Arc<GatewayMetrics>,
    ) -> Self {
        Self { inner: Arc::new(Inner { readers, client, apis, tenant_header, settings, metrics }) }
    }

    /// Answers one request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let Some((name, post)) = endpoint(req.uri().path()) else {
            return error(StatusCode::NOT_FOUND, "bad_data", "not a Prometheus API endpoint served by this proxy");
        };
        let (resp, headers_at) = self.forward(req, post, name).await;
        let seconds = headers_at.map(|t| t.duration_since(started).as_secs_f64());
        self.inner.metrics.query(name, resp.status().as_u16(), seconds);
        resp
    }

    async fn forward<B>(&self, req: Request<B>, post: bool, name: &str) -> (Response<ProxyBody>, Option<Instant>)
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let s = &self.inner;
        let method = req.method().clone();
        if !(method == Method::GET || (post && method == Method::POST)) {
            let allowed = if post { "GET, POST" } else { "GET" };
            let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "bad_data", &format!("{name} takes {allowed}"));
            r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allowed));
            return (r, None);
        }
        let caller = match s.readers.authenticate(req.headers()).await {
            Ok(c) => c,
            Err(e) => {
                let status = if e.is_unauthenticated() {
                    s.metrics.reader_refused(reason(&e));
                    StatusCode::UNAUTHORIZED
                } else {
                    tracing::warn!(error = %opni_metrics_core::error_chain(&e), "reader authentication unavailable");
                    StatusCode::SERVICE_UNAVAILABLE
                };
                return (error(status, "unauthorized", &e.to_string()), None);
            }
        };
        let tenants = match s.readers.tenants(&crate::readers::Principal::Reader(caller.clone())).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %opni_metrics_core::error_chain(&e), "reading role bindings failed");
                return (error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "role bindings unavailable"), None);
            }
        };
        if tenants.is_empty() {
            return (
                error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    &format!("{} may read no cluster: no role binding grants it one", caller.subject),
                ),
                None,
            );
        }
        let org: Vec<&str> = tenants.iter().map(|t| t.as_str()).collect();
        let Ok(org) = HeaderValue::from_str(&org.join("|")) else {
            return (error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "tenant ids do not form a header"), None);
        };
        let (parts, body) = req.into_parts();
        let body = if method == Method::POST {
            match Limited::new(body, s.settings.max_request_bytes).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    let too_large = e.downcast_ref::<http_body_util::LengthLimitError>().is_some();
                    let (status, msg) = if too_large {
                        (
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!("body larger than {} bytes", s.settings.max_request_bytes),
                        )
                    } else {
                        (StatusCode::BAD_REQUEST, format!("reading the body: {e}"))
                    };
                    return (error(status, "bad_data", &msg), None);
                }
            }
        } else {
            Bytes::new()
        };
        let rest = parts.uri.path().strip_prefix(PREFIX).unwrap_or_default();
        let query = parts.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        let url = format!("{}/api/v1/{rest}{query}", s.apis.query);
        let mut up = Request::builder().method(method).uri(&url);
        for h in REQUEST_HEADERS {
            for v in parts.headers.get_all(h) {
                up = up.header(h, v);
            }
        }
        let Ok(mut up) = up.body(Full::new(body)) else {
            return (error(StatusCode::BAD_REQUEST, "bad_data", "the request does not form an upstream URL"), None);
        };
        up.headers_mut().insert(s.tenant_header.clone(), org);
        let deadline = Instant::now() + s.settings.timeout;
        let resp = match tokio::time::timeout_at(deadline, s.client.request(up)).await {
            Err(_) => {
                return (error(StatusCode::GATEWAY_TIMEOUT, "timeout", "the upstream did not answer in time"), None);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %opni_metrics_core::error_chain(&e), "query upstream failed");
                return (
                    error(StatusCode::BAD_GATEWAY, "unavailable", "the upstream query frontend is unreachable"),
                    None,
                );
            }
            Ok(Ok(r)) => r,
        };
        let at = Instant::now();
        let (parts, body) = resp.into_parts();
        let mut out = Response::new(
            Capped {
                inner: body,
                remaining: s.settings.max_response_bytes,
                deadline: Box::pin(tokio::time::sleep_until(deadline)),
            }
            .boxed_unsync(),
        );
        *out.status_mut() = parts.status;
        for h in RESPONSE_HEADERS {
            for v in parts.headers.get_all(h) {
                out.headers_mut().append(h, v.clone());
            }
        }
        (out, Some(at))
    }
}

fn reason(e: &ReaderError) -> &'static str {
    match e {
        ReaderError::Missing => "missing",
        ReaderError::Malformed(_) => "malformed",
        ReaderError::UnknownApiKey => "unknown_api_key",
        ReaderError::Token(_) => "token",
        ReaderError::NoIssuer => "no_issuer",
        _ => "other",
    }
}

impl tower::Service<Request<Incoming>> for QueryProxy {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<ProxyBody>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}

/// The upstream's response body, ended with an error past a size limit or a deadline (the
/// client sees a cut-off response, never a silently shortened one).
struct Capped {
    inner: Incoming,
    remaining: u64,
    deadline: Pin<Box<Sleep>>,
}

impl Body for Capped {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err("the query exceeded its timeout".into())));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    let n = d.len() as u64;
                    if n > self.remaining {
                        return Poll::Ready(Some(Err("the response exceeded the proxy's size limit".into())));
                    }
                    self.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            other => other.map(|o| o.map(|r| r.map_err(|e| Box::new(e) as Self::Error))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_read_api_is_served() {
        assert_eq!(endpoint("/prometheus/api/v1/query"), Some(("query", true)));
        assert_eq!(endpoint("/prometheus/api/v1/status/buildinfo"), Some(("status/buildinfo", false)));
        assert_eq!(endpoint("/prometheus/api/v1/label/job/values"), Some(("label_values", false)));
        assert_eq!(endpoint("/prometheus/api/v1/label/U__a_2e_b/values"), Some(("label_values", false)));
        for bad in [
            "/prometheus/api/v1/write",
            "/prometheus/api/v1/admin/tsdb/delete_series",
            "/prometheus/api/v1/label/../values",
            "/prometheus/api/v1/label/a/b/values",
            "/prometheus/api/v1/label//values",
            "/api/v1/query",
            "/prometheus/api/v1/query/",
        ] {
            assert_eq!(endpoint(bad), None, "{bad}");
        }
    }
}
