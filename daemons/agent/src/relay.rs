//! The agent's remote-write endpoint: checks each Prometheus request, relays it to the gateway
//! as one `Push` RPC and answers with the upstream's verdict under the status rules.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{ALLOW, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use opni_metrics_core::remote_write::{
    CheckError, Checked, Limits, Outcome, RequestHead, StatusOptions, Version, check, check_content_length,
    check_well_formed, classify, validate_body,
};
use opni_metrics_proto::remote::v1::remote_write_client::RemoteWriteClient;
use opni_metrics_proto::remote::v1::{PushRequest, PushResponse};
use opni_metrics_transport::channel::GatewayChannel;
use opni_metrics_transport::http::text;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::{AgentMetrics, BytesInFlight};

/// Settings of the relay.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RelaySettings {
    /// Body size limits.
    pub limits: Limits,
    /// Deadline of one relayed request, end to end (keep it below Prometheus's 30 s).
    pub request_timeout: Duration,
    /// Longest time a client may take to send a body.
    pub body_timeout: Duration,
    /// Most body bytes held in flight; beyond it requests are refused at once with 503.
    pub max_in_flight_bytes: usize,
    /// Decompress and check the protobuf structure of every body (costs CPU per sample).
    pub validate: bool,
    /// Status-rule options.
    pub status: StatusOptions,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            request_timeout: Duration::from_secs(20),
            body_timeout: Duration::from_secs(10),
            max_in_flight_bytes: 64 << 20,
            validate: false,
            status: StatusOptions { rate_limit_as_503: false, local_retry_after: Some(Duration::from_secs(1)) },
        }
    }
}

/// The relay: a `tower::Service` over HTTP requests to the push endpoint, each relayed to the
/// gateway as one `Push` call. Cheap to clone (clones share the in-flight budget and the
/// connection); no lock on the request path. Mount it on any hyper/axum server, or let
/// [`Agent::serve`](crate::Agent::serve) do it.
#[derive(Debug, Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: RemoteWriteClient<GatewayChannel>,
    settings: RelaySettings,
    in_flight: Arc<Semaphore>,
    metrics: Arc<AgentMetrics>,
}

impl<B> tower::Service<Request<B>> for Relay
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Full<Bytes>>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // refusals (in-flight budget) are answered per request, never by back-pressure
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { Ok(inner.relay(req).await) })
    }
}

fn header<B>(req: &Request<B>, name: http::header::HeaderName) -> Result<Option<&str>, ()> {
    match req.headers().get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| ()),
    }
}

impl Relay {
    /// A relay sending through `channel`, counting into `metrics`.
    pub fn new(channel: GatewayChannel, settings: RelaySettings, metrics: Arc<AgentMetrics>) -> Self {
        let max_msg = settings.limits.max_body_bytes + 64 * 1024;
        let client =
            RemoteWriteClient::new(channel).max_encoding_message_size(max_msg).max_decoding_message_size(1 << 20);
        let permits = settings.max_in_flight_bytes.clamp(1, Semaphore::MAX_PERMITS);
        Self { inner: Arc::new(Inner { client, settings, in_flight: Arc::new(Semaphore::new(permits)), metrics }) }
    }
}

impl Inner {
    fn refuse(&self, reason: &str, status: StatusCode, msg: impl Into<Bytes>) -> Response<Full<Bytes>> {
        self.metrics.refuse(reason);
        text(status, msg)
    }

    async fn relay<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if req.method() != Method::POST {
            let mut r = self.refuse("method", StatusCode::METHOD_NOT_ALLOWED, "remote write needs POST\n");
            r.headers_mut().insert(ALLOW, HeaderValue::from_static("POST"));
            return r;
        }
        let (Ok(content_type), Ok(content_encoding)) = (header(&req, CONTENT_TYPE), header(&req, CONTENT_ENCODING))
        else {
            return self.refuse(
                "headers",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type and Content-Encoding must be ASCII\n",
            );
        };
        let (content_type, content_encoding) = (content_type.map(str::to_owned), content_encoding.map(str::to_owned));
        let head = RequestHead { content_type: content_type.as_deref(), content_encoding: content_encoding.as_deref() };
        let limits = &self.settings.limits;
        // headers first, before reading a byte of the body
        if let Err(e) = check(&head, &[], limits) {
            return self.refused(&e);
        }
        let declared = match header(&req, CONTENT_LENGTH) {
            Ok(None) => None,
            Ok(Some(v)) => match v.parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => return self.refuse("headers", StatusCode::BAD_REQUEST, "invalid Content-Length\n"),
            },
            Err(()) => return self.refuse("headers", StatusCode::BAD_REQUEST, "invalid Content-Length\n"),
        };
        if let Err(e) = check_content_length(declared, limits) {
            return self.refused(&e);
        }
        // bounded in-flight bytes: refuse at once rather than queue
        let reserve = declared.map_or(limits.max_body_bytes, |n| usize::try_from(n).unwrap_or(usize::MAX)).max(1);
        let Some(held) = self.reserve(reserve) else { return self.over_budget() };
        let resp = self.read_and_forward(req, content_type, content_encoding, limits, reserve).await;
        drop(held);
        resp
    }

    /// Takes `n` bytes from the in-flight budget (and its gauge) until the result is dropped;
    /// `None` when they are not available now.
    fn reserve(&self, n: usize) -> Option<(OwnedSemaphorePermit, BytesInFlight)> {
        let k = u32::try_from(n.max(1)).ok()?;
        let permit = Arc::clone(&self.in_flight).try_acquire_many_owned(k).ok()?;
        Some((permit, BytesInFlight::new(&self.metrics.in_flight_bytes, n)))
    }

    /// The answer when the in-flight budget is spent: 503 with `Retry-After`, at once.
    fn over_budget(&self) -> Response<Full<Bytes>> {
        let mut r =
            self.refuse("in_flight_bytes", StatusCode::SERVICE_UNAVAILABLE, "agent is at its in-flight byte limit\n");
        r.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
        r
    }

    async fn read_and_forward<B>(
        &self,
        req: Request<B>,
        content_type: Option<String>,
        content_encoding: Option<String>,
        limits: &Limits,
        reserved: usize,
    ) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let version =
            req.headers().get("x-prometheus-remote-write-version").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = match tokio::time::timeout(
            self.settings.body_timeout,
            // never more than was reserved from the budget (the declared length, or the limit)
            Limited::new(req.into_body(), reserved.min(limits.max_body_bytes)).collect(),
        )
        .await
        {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                let e =
                    CheckError::BodyTooLarge { len: limits.max_body_bytes as u64 + 1, limit: limits.max_body_bytes };
                return self.refused(&e);
            }
            Ok(Err(e)) => {
                return self.refuse("body", StatusCode::BAD_REQUEST, format!("reading the body failed: {e}\n"));
            }
            Err(_) => return self.refuse("body", StatusCode::SERVICE_UNAVAILABLE, "the body did not arrive in time\n"),
        };
        let head = RequestHead { content_type: content_type.as_deref(), content_encoding: content_encoding.as_deref() };
        let (protocol, decoded_len) = match check(&head, &body, limits) {
            Err(e) => return self.refused(&e),
            Ok(Checked::Empty) => return text(StatusCode::NO_CONTENT, Bytes::new()),
            Ok(Checked::Body { version, decoded_len }) => (version, decoded_len),
        };
        if self.settings.validate {
            // the decompressed copy counts against the in-flight budget while it exists
            let Some(held) = self.reserve(decoded_len) else { return self.over_budget() };
            let checked = validate(&body, protocol);
            drop(held);
            if let Err(msg) = checked {
                return self.refuse("invalid", StatusCode::BAD_REQUEST, msg);
            }
        }
        let push = PushRequest {
            body,
            content_type: content_type.unwrap_or_default(),
            content_encoding: content_encoding.unwrap_or_default(),
            remote_write_version: version.unwrap_or_default(),
        };
        let deadline = self.settings.request_timeout;
        let started = tokio::time::Instant::now();
        let mut result = self.push_once(push.clone(), deadline).await;
        // a call the connection dropped before the gateway answered (a connection reaching its
        // maximum age sends GOAWAY; a call racing it is refused unprocessed) is tried once
        // more, on a new connection, within the same deadline: remote write is idempotent,
        // and this is the retry Prometheus would make, without its backoff
        if let Err(s) = &result
            && retryable(s)
        {
            let left = deadline.saturating_sub(started.elapsed());
            if !left.is_zero() {
                tracing::debug!(code = ?s.code(), message = s.message(), "push lost with its connection; retrying once");
                result = self.push_once(push, left).await;
            }
        }
        match result {
            Ok(r) => self.answer(r.into_inner()),
            Err(status) => self.grpc_failure(&status),
        }
    }

    async fn push_once(
        &self,
        push: PushRequest,
        deadline: Duration,
    ) -> Result<tonic::Response<PushResponse>, tonic::Status> {
        let mut rpc = tonic::Request::new(push);
        rpc.set_timeout(deadline);
        let mut client = self.client.clone();
        match tokio::time::timeout(deadline, client.push(rpc)).await {
            Ok(r) => r,
            Err(_) => Err(tonic::Status::deadline_exceeded("gateway did not answer in time")),
        }
    }

    fn refused(&self, e: &CheckError) -> Response<Full<Bytes>> {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
        self.refuse("check", status, format!("{e}\n"))
    }

    fn answer(&self, r: PushResponse) -> Response<Full<Bytes>> {
        let upstream = u16::try_from(r.http_status).unwrap_or(502);
        let reply = classify(Outcome::Response { status: upstream }, &self.settings.status);
        let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let mut resp = if reply.pass_through {
            let mut resp = Response::new(Full::new(r.body));
            *resp.status_mut() = status;
            resp
        } else {
            let detail = String::from_utf8_lossy(&r.body[..r.body.len().min(512)]).into_owned();
            text(status, format!("upstream answered {upstream}: {detail}\n"))
        };
        for h in r.headers {
            if !reply.pass_through && h.name.eq_ignore_ascii_case("content-type") {
                continue;
            }
            if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_str(&h.value)) {
                resp.headers_mut().insert(n, v);
            }
        }
        if let Some(after) = reply.retry_after
            && !resp.headers().contains_key(RETRY_AFTER)
            && (reply.status == 429 || reply.status == 503)
        {
            resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from(after.as_secs().max(1)));
        }
        resp
    }

    fn grpc_failure(&self, s: &tonic::Status) -> Response<Full<Bytes>> {
        use tonic::Code;
        let outcome = match s.code() {
            Code::DeadlineExceeded => Outcome::Timeout,
            // the gateway's own deadline ends a call as cancelled ("Timeout expired"); any other
            // cancellation is the connection going away (a gateway shutting down): unreachable
            Code::Cancelled if s.message().contains("Timeout expired") => Outcome::Timeout,
            Code::OutOfRange => {
                // the gateway's message limit is below this agent's body limit
                return self.refuse(
                    "gateway_refused",
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("gateway refused the request size: {}\n", s.message()),
                );
            }
            Code::InvalidArgument => {
                return self.refuse(
                    "gateway_refused",
                    StatusCode::BAD_REQUEST,
                    format!("gateway refused the request: {}\n", s.message()),
                );
            }
            Code::Unauthenticated | Code::PermissionDenied => {
                tracing::error!(code = ?s.code(), message = s.message(), "the gateway refused this agent's identity");
                Outcome::Unreachable
            }
            _ => Outcome::Unreachable,
        };
        let reply = classify(outcome, &self.settings.status);
        let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let mut resp = text(status, format!("gateway unavailable: {}\n", s.message()));
        if let Some(after) = reply.retry_after {
            resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from(after.as_secs().max(1)));
        }
        resp
    }
}

/// Whether a failed call ended with its connection rather than with an answer: cancelled by
/// the transport (not by a deadline) or unavailable.
fn retryable(s: &tonic::Status) -> bool {
    match s.code() {
        tonic::Code::Cancelled => !s.message().contains("Timeout expired"),
        tonic::Code::Unavailable => true,
        _ => false,
    }
}

/// The optional deep check: decompress (within the checked declared size), walk the protobuf
/// structure, then check what the remote-write specification of `version` says a receiver must
/// refuse; the answer names the first problem.
fn validate(body: &[u8], version: Version) -> Result<(), String> {
    let raw = snap::raw::Decoder::new().decompress_vec(body).map_err(|e| format!("corrupt snappy body: {e}\n"))?;
    check_well_formed(&raw).map_err(|e| format!("body is not a protobuf message: {e}\n"))?;
    validate_body(&raw, version).map_err(|e| format!("invalid remote-write request: {e}\n"))
}
