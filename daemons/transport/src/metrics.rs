//! Request metrics as one `tower` layer, shared by both remote-write hops (the agent's relay and
//! the gateway's upstream forwarder), and the text rendering of a registry.
//!
//! [`RequestMetrics`] counts answered requests by labels and status class, relayed bytes, and
//! times them; its in-flight gauge is held by an [`InFlight`] guard, so a request whose future
//! is dropped (client gone, deadline) still decrements it.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use opni_metrics_core::remote_write::{ForwardError, ForwardRequest, ForwardResponse, status_class};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tower::{Layer, Service};

/// A label set: ordered `(name, value)` pairs.
pub type Labels = Vec<(String, String)>;

/// What the metrics layer reads from a request.
pub trait ObservedRequest {
    /// The labels the request is counted under (besides `code`), e.g. `cluster`.
    fn labels(&self) -> Labels;
    /// Payload bytes, counted when the answer is a 2xx.
    fn bytes(&self) -> u64;
}

/// What the metrics layer reads from a response.
pub trait ObservedResponse {
    /// The HTTP status it carries.
    fn status(&self) -> u16;
}

impl ObservedRequest for ForwardRequest {
    fn labels(&self) -> Labels {
        vec![("cluster".to_owned(), self.tenant.as_str().to_owned())]
    }
    fn bytes(&self) -> u64 {
        self.body.len() as u64
    }
}

impl ObservedResponse for ForwardResponse {
    fn status(&self) -> u16 {
        self.status
    }
}

impl<B> ObservedRequest for http::Request<B> {
    fn labels(&self) -> Labels {
        Vec::new()
    }
    fn bytes(&self) -> u64 {
        self.headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl<B> ObservedResponse for http::Response<B> {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

/// An error's label value (the `reason` of the errors counter).
pub trait ObservedError {
    /// A short, stable kind.
    fn kind(&self) -> &'static str;
}

impl ObservedError for ForwardError {
    fn kind(&self) -> &'static str {
        ForwardError::kind(self)
    }
}

impl ObservedError for std::convert::Infallible {
    fn kind(&self) -> &'static str {
        match *self {}
    }
}

/// The latency buckets of every duration histogram: 0.25 ms … about 8 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// Metrics of one request path.
#[derive(Debug)]
pub struct RequestMetrics {
    /// Answered requests by labels and `code` (status class).
    pub requests: Family<Labels, Counter>,
    /// Payload bytes of requests answered 2xx, by labels.
    pub bytes: Family<Labels, Counter>,
    /// Requests that ended without an answer, by `reason`.
    pub errors: Family<Labels, Counter>,
    /// Latency of every request.
    pub duration: Histogram,
    /// Requests in flight.
    pub in_flight: Gauge,
}

/// Metric names and help texts of a [`RequestMetrics`], under the registry's prefix.
#[derive(Debug, Clone, Copy)]
pub struct RequestMetricNames {
    /// Counter of answered requests.
    pub requests: (&'static str, &'static str),
    /// Counter of payload bytes.
    pub bytes: (&'static str, &'static str),
    /// Counter of failures without an answer.
    pub errors: (&'static str, &'static str),
    /// Histogram of latency (name ends in `_seconds`).
    pub duration: (&'static str, &'static str),
    /// Gauge of requests in flight.
    pub in_flight: (&'static str, &'static str),
}

impl RequestMetrics {
    /// Creates the metrics and registers them in `registry` under `names`.
    pub fn register(registry: &mut Registry, names: RequestMetricNames) -> Arc<Self> {
        let m = Self {
            requests: Family::default(),
            bytes: Family::default(),
            errors: Family::default(),
            duration: latency_histogram(),
            in_flight: Gauge::default(),
        };
        registry.register(names.requests.0, names.requests.1, m.requests.clone());
        registry.register(names.bytes.0, names.bytes.1, m.bytes.clone());
        registry.register(names.errors.0, names.errors.1, m.errors.clone());
        registry.register(names.duration.0, names.duration.1, m.duration.clone());
        registry.register(names.in_flight.0, names.in_flight.1, m.in_flight.clone());
        Arc::new(m)
    }

    /// Holds one in-flight request until the guard is dropped.
    pub fn in_flight(self: &Arc<Self>) -> InFlight {
        self.in_flight.inc();
        InFlight { gauge: self.in_flight.clone() }
    }

    fn record(&self, mut labels: Labels, bytes: u64, status: Result<u16, &'static str>, started: Instant) {
        self.duration.observe(started.elapsed().as_secs_f64());
        match status {
            Ok(status) => {
                if (200..300).contains(&status) {
                    self.bytes.get_or_create(&labels).inc_by(bytes);
                }
                labels.push(("code".to_owned(), status_class(status).to_owned()));
                self.requests.get_or_create(&labels).inc();
            }
            Err(kind) => {
                self.errors.get_or_create(&vec![("reason".to_owned(), kind.to_owned())]).inc();
            }
        }
    }
}

/// Decrements an in-flight gauge when dropped.
#[derive(Debug)]
pub struct InFlight {
    gauge: Gauge,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The layer: wraps a service in [`Metered`].
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    metrics: Arc<RequestMetrics>,
}

impl MetricsLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: Arc<RequestMetrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metered<S>;
    fn layer(&self, inner: S) -> Metered<S> {
        Metered { inner, metrics: Arc::clone(&self.metrics) }
    }
}

/// A service whose requests are counted and timed.
#[derive(Debug, Clone)]
pub struct Metered<S> {
    inner: S,
    metrics: Arc<RequestMetrics>,
}

impl<S, Req> Service<Req> for Metered<S>
where
    S: Service<Req>,
    S::Future: Send + 'static,
    S::Response: ObservedResponse,
    S::Error: ObservedError,
    Req: ObservedRequest,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let metrics = Arc::clone(&self.metrics);
        let labels = req.labels();
        let bytes = req.bytes();
        let started = Instant::now();
        let guard = metrics.in_flight();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            drop(guard);
            metrics.record(
                labels,
                bytes,
                r.as_ref().map(ObservedResponse::status).map_err(ObservedError::kind),
                started,
            );
            r
        })
    }
}

/// Renders `registry` in the OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bytes::Bytes;
    use opni_metrics_core::ClusterId;
    use tower::ServiceExt;

    const NAMES: RequestMetricNames = RequestMetricNames {
        requests: ("requests", "r"),
        bytes: ("bytes", "b"),
        errors: ("errors", "e"),
        duration: ("duration_seconds", "d"),
        in_flight: ("in_flight_requests", "i"),
    };

    fn req() -> ForwardRequest {
        ForwardRequest {
            tenant: ClusterId::new("c1").unwrap(),
            body: Bytes::from_static(b"12345"),
            content_type: "application/x-protobuf".into(),
            version: None,
        }
    }

    #[tokio::test]
    async fn counts_answers_bytes_and_errors() {
        let mut registry = Registry::default();
        let m = RequestMetrics::register(&mut registry, NAMES);
        let ok = tower::service_fn(|_: ForwardRequest| async {
            Ok::<_, ForwardError>(ForwardResponse { status: 204, body: Bytes::new(), headers: vec![] })
        });
        MetricsLayer::new(Arc::clone(&m)).layer(ok).oneshot(req()).await.unwrap();
        let bad = tower::service_fn(|_: ForwardRequest| async { Err::<ForwardResponse, _>(ForwardError::Timeout) });
        MetricsLayer::new(Arc::clone(&m)).layer(bad).oneshot(req()).await.unwrap_err();
        let text = render(&registry);
        assert!(text.contains("requests_total{cluster=\"c1\",code=\"2xx\"} 1"), "{text}");
        assert!(text.contains("bytes_total{cluster=\"c1\"} 5"), "{text}");
        assert!(text.contains("errors_total{reason=\"timeout\"} 1"), "{text}");
        assert!(text.contains("duration_seconds_count 2"), "{text}");
        assert_eq!(m.in_flight.get(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_request_leaves_no_gauge_drift() {
        let mut registry = Registry::default();
        let m = RequestMetrics::register(&mut registry, NAMES);
        let (entered_tx, entered) = tokio::sync::oneshot::channel::<()>();
        let entered_tx = std::sync::Mutex::new(Some(entered_tx));
        let hang = tower::service_fn(move |_: ForwardRequest| {
            if let Some(tx) = entered_tx.lock().unwrap().take() {
                let _ = tx.send(());
            }
            async { futures::future::pending::<Result<ForwardResponse, ForwardError>>().await }
        });
        let call = MetricsLayer::new(Arc::clone(&m)).layer(hang).oneshot(req());
        let task = tokio::spawn(call);
        entered.await.unwrap();
        assert_eq!(m.in_flight.get(), 1);
        task.abort();
        let _ = task.await;
        assert_eq!(m.in_flight.get(), 0);
    }
}
