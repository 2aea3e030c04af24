//! The gateway's own metrics (prefix `opni_gateway_`), served on `/metrics`.

use std::sync::Arc;

use opni_metrics_core::ClusterId;
use opni_metrics_core::remote_write::ForwardResponse;
use opni_metrics_transport::metrics::{Labels, RequestMetricNames, RequestMetrics};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The gateway's metrics.
#[derive(Debug)]
pub struct GatewayMetrics {
    /// The upstream hop: requests by cluster and status class, bytes, errors, latency,
    /// in flight.
    pub upstream: Arc<RequestMetrics>,
    /// Samples the upstream reported written (remote write 2.0 headers), by cluster.
    pub samples_written: Family<Labels, Counter>,
    /// Pushes refused by the gateway's own checks or auth, by reason.
    pub refused: Family<Labels, Counter>,
    /// Failed TLS handshakes, by kind.
    pub tls_failures: Family<Labels, Counter>,
    /// Query proxy requests, by endpoint and HTTP status code.
    pub query_requests: Family<Labels, Counter>,
    /// Query proxy latency until the response headers, by endpoint.
    pub query_duration: Family<Labels, Histogram, fn() -> Histogram>,
    /// Reader authentication failures, by reason.
    pub reader_auth_failures: Family<Labels, Counter>,
    /// Rule groups of each cluster's last sync, by state (synced, refused, invalid).
    pub rule_groups: Family<Labels, Gauge>,
    /// When each cluster's rules last synced (seconds since the epoch).
    pub rule_sync_last: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Rule syncs by cluster and result (ok, partial).
    pub rule_syncs: Family<Labels, Counter>,
    /// Body bytes held by pushes in flight upstream (the in-flight budget's use).
    pub budget_in_flight_bytes: Gauge,
    /// Pushes refused by the in-flight budgets, by which (global_bytes, tenant_bytes,
    /// tenant_requests).
    pub budget_refusals: Family<Labels, Counter>,
    /// 1 while this replica leads (runs the uninstall tasks), else 0.
    pub leader: Gauge,
}

fn query_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The names of the upstream hop's metrics.
const UPSTREAM: RequestMetricNames = RequestMetricNames {
    requests: ("remote_write_requests", "Remote-write requests answered by the upstream"),
    bytes: ("remote_write_bytes", "Compressed remote-write bytes forwarded with a 2xx answer"),
    errors: ("upstream_errors", "Forwarding failures without an upstream answer"),
    duration: ("upstream_request_duration_seconds", "Latency of upstream remote-write requests"),
    in_flight: ("upstream_in_flight_requests", "Remote-write requests in flight upstream"),
};

fn reason(r: &str) -> Labels {
    vec![("reason".to_owned(), r.to_owned())]
}

impl GatewayMetrics {
    /// Creates the metrics and registers them in `registry` under `opni_gateway_`.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let r = registry.sub_registry_with_prefix("opni_gateway");
        let upstream = RequestMetrics::register(r, UPSTREAM);
        let m = Self {
            upstream,
            samples_written: Family::default(),
            refused: Family::default(),
            tls_failures: Family::default(),
            query_requests: Family::default(),
            query_duration: Family::new_with_constructor(query_histogram as fn() -> Histogram),
            reader_auth_failures: Family::default(),
            rule_groups: Family::default(),
            rule_sync_last: Family::default(),
            rule_syncs: Family::default(),
            budget_in_flight_bytes: Gauge::default(),
            leader: Gauge::default(),
            budget_refusals: Family::default(),
        };
        r.register(
            "remote_write_samples_written",
            "Samples the upstream reported written (remote write 2.0)",
            m.samples_written.clone(),
        );
        r.register("remote_write_refused", "Pushes refused by the gateway", m.refused.clone());
        r.register("tls_handshake_failures", "Failed TLS handshakes", m.tls_failures.clone());
        r.register("query_requests", "Query proxy requests by endpoint and status code", m.query_requests.clone());
        r.register(
            "query_request_duration_seconds",
            "Query proxy latency until the upstream's response headers",
            m.query_duration.clone(),
        );
        r.register("reader_auth_failures", "Refused reader credentials by reason", m.reader_auth_failures.clone());
        r.register("rule_groups", "Rule groups of each cluster's last rule sync by state", m.rule_groups.clone());
        r.register(
            "rule_sync_last_timestamp_seconds",
            "When each cluster's rules last synced",
            m.rule_sync_last.clone(),
        );
        r.register("rule_syncs", "Rule syncs by cluster and result", m.rule_syncs.clone());
        r.register(
            "remote_write_in_flight_bytes",
            "Body bytes of pushes in flight upstream",
            m.budget_in_flight_bytes.clone(),
        );
        r.register("remote_write_budget_refusals", "Pushes refused by an in-flight budget", m.budget_refusals.clone());
        r.register("leader", "1 while this replica leads (runs the uninstall tasks)", m.leader.clone());
        Arc::new(m)
    }

    /// Counts a refused push.
    pub fn refuse(&self, why: &str) {
        self.refused.get_or_create(&reason(why)).inc();
    }

    /// Counts a query proxy answer.
    pub fn query(&self, endpoint: &str, code: u16, seconds: Option<f64>) {
        let l = vec![("endpoint".to_owned(), endpoint.to_owned())];
        if let Some(s) = seconds {
            self.query_duration.get_or_create(&l).observe(s);
        }
        let mut l = l;
        l.push(("code".to_owned(), code.to_string()));
        self.query_requests.get_or_create(&l).inc();
    }

    /// Records a cluster's rule sync.
    pub fn rule_sync(&self, cluster: &ClusterId, s: &crate::rule_sync::RuleSyncStatus) {
        let c = ("cluster".to_owned(), cluster.as_str().to_owned());
        for (state, n) in [("synced", s.synced), ("refused", s.refused), ("invalid", s.invalid)] {
            self.rule_groups.get_or_create(&vec![c.clone(), ("state".to_owned(), state.to_owned())]).set(i64::from(n));
        }
        self.rule_sync_last.get_or_create(&vec![c.clone()]).set(s.last_sync.as_millis() as f64 / 1000.0);
        let result = if s.refused == 0 && s.invalid == 0 { "ok" } else { "partial" };
        self.rule_syncs.get_or_create(&vec![c, ("result".to_owned(), result.to_owned())]).inc();
    }

    /// Counts a refused reader credential.
    pub fn reader_refused(&self, why: &str) {
        self.reader_auth_failures.get_or_create(&reason(why)).inc();
    }

    /// Counts a failed handshake.
    pub fn tls_failure(&self, kind: &str) {
        self.tls_failures.get_or_create(&reason(kind)).inc();
    }

    /// Counts what a 2xx answer reported written.
    pub fn written(&self, tenant: &ClusterId, r: &ForwardResponse) {
        let n = r.samples_written();
        if (200..300).contains(&r.status) && n > 0 {
            self.samples_written.get_or_create(&vec![("cluster".to_owned(), tenant.as_str().to_owned())]).inc_by(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The alerts shipped in `deploy/gateway/self-monitoring/prometheusrule.yaml` read only
    /// metrics the gateway exports (a renamed metric would silence its alert for good).
    #[test]
    fn the_shipped_alerts_read_only_metrics_the_gateway_exports() {
        let mut registry = Registry::default();
        let m = GatewayMetrics::register(&mut registry);
        // a family is in the exposition once it has a series
        let none = Labels::new();
        for f in [
            &m.samples_written,
            &m.refused,
            &m.tls_failures,
            &m.query_requests,
            &m.reader_auth_failures,
            &m.rule_syncs,
            &m.budget_refusals,
        ] {
            f.get_or_create(&none).inc();
        }
        m.rule_groups.get_or_create(&none).set(1);
        m.rule_sync_last.get_or_create(&none).set(1.0);
        m.query_duration.get_or_create(&none).observe(0.1);
        let text = opni_metrics_transport::metrics::render(&registry);
        let mut declared: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .map(str::to_owned)
            .collect();
        // the upstream hop's families are the transport's (declared once they have series)
        for (name, _) in [UPSTREAM.requests, UPSTREAM.bytes, UPSTREAM.errors, UPSTREAM.duration, UPSTREAM.in_flight] {
            declared.push(format!("opni_gateway_{name}"));
        }
        let path = std::path::Path::new(
            &std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
        )
        .join("../../deploy/gateway/self-monitoring/prometheusrule.yaml");
        let rules = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut read = 0;
        for (at, _) in rules.match_indices("opni_gateway_") {
            let name: String =
                rules[at..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
            let known = declared.iter().any(|d| {
                name == *d || ["_total", "_bucket", "_sum", "_count"].iter().any(|s| name == format!("{d}{s}"))
            });
            assert!(known, "the alerts read {name}, which the gateway does not export; it exports {declared:?}");
            read += 1;
        }
        assert!(read >= 6, "{read} metric references");
    }
}
