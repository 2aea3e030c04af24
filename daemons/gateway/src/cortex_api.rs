//! The upstream Cortex's HTTP APIs as one client: tenant header, deadline, answer size limit,
//! and answers mapped to gRPC statuses. `CortexAdmin` and rule sync use it.

use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use opni_metrics_core::ClusterId;
use serde_json::Value;
use tonic::Status;

use crate::forward::HttpClient;
use crate::settings::UpstreamApis;

/// The largest upstream answer read.
const MAX_ANSWER: usize = 32 << 20;

/// A client of the upstream's read, ruler and status APIs.
#[derive(Clone)]
pub(crate) struct CortexApi {
    client: HttpClient,
    /// Where each API lives.
    pub(crate) apis: UpstreamApis,
    tenant_header: HeaderName,
    timeout: Duration,
}

impl CortexApi {
    pub(crate) fn new(client: HttpClient, apis: UpstreamApis, tenant_header: HeaderName, timeout: Duration) -> Self {
        Self { client, apis, tenant_header, timeout }
    }

    /// One request with `tenants` in the tenant header (none: no header); the answer's body, or
    /// the status its HTTP status maps to.
    pub(crate) async fn call(
        &self,
        method: Method,
        url: &str,
        tenants: &[ClusterId],
        body: Option<(&'static str, Bytes)>,
    ) -> Result<Bytes, Status> {
        let mut b = Request::builder().method(method).uri(url).header(ACCEPT, "application/json");
        if !tenants.is_empty() {
            let org: Vec<&str> = tenants.iter().map(ClusterId::as_str).collect();
            b = b.header(&self.tenant_header, org.join("|"));
        }
        let (ct, body) = body.unwrap_or(("", Bytes::new()));
        if !ct.is_empty() {
            b = b.header(CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        let req = b.body(Full::new(body)).map_err(|e| Status::invalid_argument(format!("request: {e}")))?;
        let work = async {
            let resp =
                self.client.request(req).await.map_err(|e| {
                    Status::unavailable(format!("upstream {url}: {}", opni_metrics_core::error_chain(&e)))
                })?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| Status::unavailable(format!("upstream {url}: reading the answer: {e}")))?
                .to_bytes();
            if status.is_success() { Ok(body) } else { Err(upstream_status(status.as_u16(), url, &body)) }
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| Status::deadline_exceeded(format!("upstream {url} did not answer in time")))?
    }

    /// A GET answered with JSON.
    pub(crate) async fn get_json(&self, url: &str, tenants: &[ClusterId]) -> Result<Value, Status> {
        let b = self.call(Method::GET, url, tenants, None).await?;
        serde_json::from_slice(&b).map_err(|e| Status::unavailable(format!("upstream {url}: not JSON: {e}")))
    }
}

/// The status for an upstream answer that is not 2xx.
pub(crate) fn upstream_status(code: u16, url: &str, body: &[u8]) -> Status {
    let text = String::from_utf8_lossy(&body[..body.len().min(1024)]).trim().to_owned();
    let msg = format!("upstream {url} answered {code}: {text}");
    match code {
        400 | 422 => Status::invalid_argument(msg),
        404 => Status::not_found(msg),
        429 => Status::resource_exhausted(msg),
        401 | 403 => Status::failed_precondition(format!("{msg} (the gateway's upstream credentials were refused)")),
        501 => Status::unimplemented(msg),
        408 | 504 => Status::deadline_exceeded(msg),
        _ => Status::unavailable(msg),
    }
}
