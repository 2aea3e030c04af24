//! The gateway's `RemoteWrite` service: the tenant comes from the caller's verified
//! certificate, the body goes upstream as it came.

use std::sync::Arc;

use http::HeaderValue;
use opni_metrics_core::remote_write::{Checked, Limits, RequestHead, StatusOptions, Version, check, classify};
use opni_metrics_proto::remote::v1::remote_write_server::RemoteWrite;
use opni_metrics_proto::remote::v1::{Header, PushRequest, PushResponse, SyncRulesRequest, SyncRulesResponse};
use tonic::{Request, Response, Status};

use crate::forward::{ForwardRequest, ForwardService, forward};
use crate::grpc::PeerIdentity;
use crate::metrics::{GatewayMetrics, Reason};

/// The `RemoteWrite` gRPC service.
#[derive(Clone)]
pub struct RemoteWriteService {
    forward: ForwardService,
    limits: Limits,
    status: StatusOptions,
    metrics: Arc<GatewayMetrics>,
}

impl std::fmt::Debug for RemoteWriteService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteWriteService").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl RemoteWriteService {
    /// A service forwarding through `forward`.
    pub fn new(forward: ForwardService, limits: Limits, status: StatusOptions, metrics: Arc<GatewayMetrics>) -> Self {
        Self { forward, limits, status, metrics }
    }

    fn refuse(&self, reason: &str) {
        self.metrics.refused.get_or_create(&Reason { reason: reason.to_owned() }).inc();
    }
}

fn local(status: u16, msg: String) -> Response<PushResponse> {
    Response::new(PushResponse {
        http_status: u32::from(status),
        body: msg.into(),
        headers: vec![Header { name: "content-type".into(), value: "text/plain; charset=utf-8".into() }],
    })
}

fn non_empty(s: &str) -> Option<&str> {
    if s.is_empty() { None } else { Some(s) }
}

#[tonic::async_trait]
impl RemoteWrite for RemoteWriteService {
    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushResponse>, Status> {
        let tenant = PeerIdentity::cluster_of(&request).inspect_err(|_| self.refuse("unauthenticated"))?;
        let m = request.into_inner();
        let head =
            RequestHead { content_type: non_empty(&m.content_type), content_encoding: non_empty(&m.content_encoding) };
        let version = match check(&head, &m.body, &self.limits) {
            Err(e) => {
                self.refuse("check");
                return Ok(local(e.status(), format!("{e}\n")));
            }
            Ok(Checked::Empty) => return Ok(local(204, String::new())),
            Ok(Checked::Body { version, .. }) => version,
        };
        let content_type = match head.content_type {
            Some(ct) => {
                HeaderValue::from_str(ct).map_err(|_| Status::invalid_argument("content_type: not a header value"))?
            }
            None => HeaderValue::from_static(Version::V1.content_type()),
        };
        let version_header = match (non_empty(&m.remote_write_version), version) {
            (Some(v), _) => Some(
                HeaderValue::from_str(v)
                    .map_err(|_| Status::invalid_argument("remote_write_version: not a header value"))?,
            ),
            (None, Version::V1) => Some(HeaderValue::from_static("0.1.0")),
            (None, Version::V2) => Some(HeaderValue::from_static("2.0.0")),
        };
        let req = ForwardRequest { tenant, body: m.body, content_type, version: version_header };
        match forward(&self.forward, req).await {
            Ok(r) => Ok(Response::new(PushResponse {
                // the 429 → 503 option is the gateway's; every other rule is applied by the agent
                http_status: u32::from(if r.status == 429 && self.status.rate_limit_as_503 { 503 } else { r.status }),
                body: r.body,
                headers: r.headers.into_iter().map(|(name, value)| Header { name, value }).collect(),
            })),
            Err(e) => {
                let reply = classify(e.outcome(), &self.status);
                tracing::debug!(error = %e, "forwarding failed");
                Ok(local(reply.status, format!("{e}\n")))
            }
        }
    }

    async fn sync_rules(&self, request: Request<SyncRulesRequest>) -> Result<Response<SyncRulesResponse>, Status> {
        let _tenant = PeerIdentity::cluster_of(&request)?;
        Err(Status::unimplemented("rule sync is not implemented by this gateway yet"))
    }
}
