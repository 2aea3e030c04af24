//! The daemons' own metrics, served on `/metrics` in the Prometheus text format.

use std::time::Duration;

use opni_metrics_core::ClusterId;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::forward::{ForwardError, ForwardResponse};

/// Labels: cluster and HTTP status class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterCode {
    /// Cluster id (tenant).
    pub cluster: String,
    /// `2xx`, `4xx`, `5xx`, …
    pub code: String,
}

/// Label: cluster.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabel {
    /// Cluster id (tenant).
    pub cluster: String,
}

/// Label: a reason or kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// Why.
    pub reason: String,
}

/// Label: HTTP status class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Code {
    /// `2xx`, `4xx`, `5xx`, …
    pub code: String,
}

fn latency() -> Histogram {
    // 0.25 ms … ~8 s
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// `2xx`-style class of a status.
pub fn class(status: u16) -> String {
    format!("{}xx", status / 100)
}

/// The gateway's metrics.
#[derive(Debug)]
pub struct GatewayMetrics {
    /// Remote-write requests answered upstream, by cluster and upstream status class.
    pub requests: Family<ClusterCode, Counter>,
    /// Bytes (compressed, as received) forwarded, by cluster.
    pub bytes: Family<ClusterLabel, Counter>,
    /// Samples the upstream reported written (remote write 2.0 headers), by cluster.
    pub samples_written: Family<ClusterLabel, Counter>,
    /// Upstream request latency.
    pub upstream_duration: Histogram,
    /// Requests in flight upstream.
    pub upstream_in_flight: Gauge,
    /// Forwarding failures without an upstream answer, by kind.
    pub upstream_errors: Family<Reason, Counter>,
    /// Pushes refused by the gateway's own checks or auth, by reason.
    pub refused: Family<Reason, Counter>,
    /// Failed TLS handshakes, by kind.
    pub tls_failures: Family<Reason, Counter>,
}

impl GatewayMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            bytes: Family::default(),
            samples_written: Family::default(),
            upstream_duration: latency(),
            upstream_in_flight: Gauge::default(),
            upstream_errors: Family::default(),
            refused: Family::default(),
            tls_failures: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("opni_gateway");
        r.register("remote_write_requests", "Remote-write requests answered by the upstream", m.requests.clone());
        r.register("remote_write_bytes", "Compressed remote-write bytes forwarded", m.bytes.clone());
        r.register(
            "remote_write_samples_written",
            "Samples the upstream reported written (remote write 2.0)",
            m.samples_written.clone(),
        );
        r.register(
            "upstream_request_duration_seconds",
            "Latency of upstream remote-write requests",
            m.upstream_duration.clone(),
        );
        r.register(
            "upstream_in_flight_requests",
            "Remote-write requests in flight upstream",
            m.upstream_in_flight.clone(),
        );
        r.register("upstream_errors", "Forwarding failures without an upstream answer", m.upstream_errors.clone());
        r.register("remote_write_refused", "Pushes refused by the gateway", m.refused.clone());
        r.register("tls_handshake_failures", "Failed TLS handshakes", m.tls_failures.clone());
        m
    }

    /// Records one forward.
    pub fn record_forward(
        &self,
        tenant: &ClusterId,
        bytes: u64,
        r: &Result<ForwardResponse, ForwardError>,
        took: Duration,
    ) {
        let cluster = tenant.as_str().to_owned();
        self.upstream_duration.observe(took.as_secs_f64());
        match r {
            Ok(resp) => {
                self.requests.get_or_create(&ClusterCode { cluster: cluster.clone(), code: class(resp.status) }).inc();
                if (200..300).contains(&resp.status) {
                    self.bytes.get_or_create(&ClusterLabel { cluster: cluster.clone() }).inc_by(bytes);
                    let written: u64 = resp
                        .headers
                        .iter()
                        .filter(|(n, _)| n.eq_ignore_ascii_case("x-prometheus-remote-write-samples-written"))
                        .filter_map(|(_, v)| v.parse::<u64>().ok())
                        .sum();
                    if written > 0 {
                        self.samples_written.get_or_create(&ClusterLabel { cluster }).inc_by(written);
                    }
                }
            }
            Err(e) => {
                let reason = match e {
                    ForwardError::Timeout => "timeout",
                    ForwardError::Overloaded => "overloaded",
                    ForwardError::Unreachable(_) => "unreachable",
                };
                self.upstream_errors.get_or_create(&Reason { reason: reason.to_owned() }).inc();
            }
        }
    }
}

/// The agent's metrics.
#[derive(Debug)]
pub struct AgentMetrics {
    /// Remote-write requests answered, by status class.
    pub requests: Family<Code, Counter>,
    /// Compressed bytes relayed with a 2xx answer.
    pub bytes: Counter,
    /// End-to-end latency of relayed requests.
    pub duration: Histogram,
    /// Requests in flight.
    pub in_flight: Gauge,
    /// Bytes of request bodies held in flight.
    pub in_flight_bytes: Gauge,
    /// Requests refused locally, by reason.
    pub refused: Family<Reason, Counter>,
}

impl AgentMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            bytes: Counter::default(),
            duration: latency(),
            in_flight: Gauge::default(),
            in_flight_bytes: Gauge::default(),
            refused: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("opni_agent");
        r.register("remote_write_requests", "Remote-write requests answered", m.requests.clone());
        r.register("remote_write_bytes", "Compressed remote-write bytes relayed with a 2xx answer", m.bytes.clone());
        r.register("remote_write_duration_seconds", "Latency of relayed remote-write requests", m.duration.clone());
        r.register("remote_write_in_flight_requests", "Remote-write requests in flight", m.in_flight.clone());
        r.register("remote_write_in_flight_bytes", "Remote-write body bytes held in flight", m.in_flight_bytes.clone());
        r.register("remote_write_refused", "Remote-write requests refused by the agent", m.refused.clone());
        m
    }

    /// Counts a refusal.
    pub fn refuse(&self, reason: &str) {
        self.refused.get_or_create(&Reason { reason: reason.to_owned() }).inc();
    }
}

/// Renders `registry` in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}
