//! The gateway's `RemoteWrite` service: the tenant comes from the caller's verified
//! certificate, the body goes upstream as it came.

use std::sync::Arc;

use opni_metrics_core::remote_write::{
    Checked, ForwardRequest, Limits, RequestHead, StatusOptions, Version, check, classify,
};
use opni_metrics_proto::remote::v1::remote_write_server::RemoteWrite;
use opni_metrics_proto::remote::v1::{Header, PushRequest, PushResponse, SyncRulesRequest, SyncRulesResponse};
use tonic::{Request, Response, Status};

use crate::admission::Admission;
use crate::forward::{ForwardService, forward};
use crate::metrics::GatewayMetrics;
use crate::rule_sync::RuleSync;

/// The `RemoteWrite` gRPC service.
#[derive(Clone)]
pub(crate) struct RemoteWriteService {
    forward: ForwardService,
    limits: Limits,
    status: StatusOptions,
    metrics: Arc<GatewayMetrics>,
    rules: RuleSync,
    admission: Arc<Admission>,
}

impl std::fmt::Debug for RemoteWriteService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteWriteService").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl RemoteWriteService {
    /// A service forwarding through `forward`.
    pub(crate) fn new(
        forward: ForwardService,
        limits: Limits,
        status: StatusOptions,
        metrics: Arc<GatewayMetrics>,
        rules: RuleSync,
        admission: Arc<Admission>,
    ) -> Self {
        Self { forward, limits, status, metrics, rules, admission }
    }

    fn refuse(&self, reason: &str) {
        self.metrics.refuse(reason);
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
        // the registry (in memory) says whether this identity may write: registered, not
        // revoked, the capability installed
        let tenant = self.admission.writer(&request).inspect_err(|s| {
            self.refuse(match s.code() {
                tonic::Code::Unauthenticated => "unauthenticated",
                tonic::Code::FailedPrecondition => "not_installed",
                tonic::Code::Unavailable => "registry_loading",
                _ => "not_registered",
            })
        })?;
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
            Some(ct) if http::HeaderValue::from_str(ct).is_err() => {
                return Err(Status::invalid_argument("content_type: not a header value"));
            }
            Some(ct) => ct.to_owned(),
            None => Version::V1.content_type().to_owned(),
        };
        let version_header = match (non_empty(&m.remote_write_version), version) {
            (Some(v), _) if http::HeaderValue::from_str(v).is_err() => {
                return Err(Status::invalid_argument("remote_write_version: not a header value"));
            }
            (Some(v), _) => v.to_owned(),
            (None, Version::V1) => "0.1.0".to_owned(),
            (None, Version::V2) => "2.0.0".to_owned(),
        };
        let req = ForwardRequest { tenant: tenant.clone(), body: m.body, content_type, version: Some(version_header) };
        match forward(&self.forward, req).await {
            Ok(r) => Ok(Response::new({
                self.metrics.written(&tenant, &r);
                PushResponse {
                    // the 429 → 503 option is the gateway's; every other rule is applied by the agent
                    http_status: u32::from(if r.status == 429 && self.status.rate_limit_as_503 {
                        503
                    } else {
                        r.status
                    }),
                    body: r.body,
                    headers: r.headers.into_iter().map(|(name, value)| Header { name, value }).collect(),
                }
            })),
            Err(e) => {
                let reply = classify(e.outcome(), &self.status);
                tracing::debug!(error = %e, "forwarding failed");
                Ok(local(reply.status, format!("{e}\n")))
            }
        }
    }

    async fn sync_rules(&self, request: Request<SyncRulesRequest>) -> Result<Response<SyncRulesResponse>, Status> {
        let (tenant, _) = self.admission.registered(&request)?;
        self.rules.sync(&tenant, request.into_inner()).await.map(Response::new)
    }
}
