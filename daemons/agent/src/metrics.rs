//! The agent's own metrics (prefix `opni_agent_`), served on `/metrics`.

use std::sync::Arc;

use opni_metrics_transport::metrics::{Labels, RequestMetricNames, RequestMetrics};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The agent's metrics.
#[derive(Debug)]
pub struct AgentMetrics {
    /// The Prometheus-facing hop: requests by status class, bytes, latency, in flight.
    pub relay: Arc<RequestMetrics>,
    /// Bytes of request bodies held in flight.
    pub in_flight_bytes: Gauge,
    /// Requests refused locally, by reason.
    pub refused: Family<Labels, Counter>,
    /// Discovered rule groups by state (valid, invalid).
    pub rule_groups: Family<Labels, Gauge>,
    /// Rule syncs by result (ok, partial, failed).
    pub rule_syncs: Family<Labels, Counter>,
    /// When the agent's certificate expires (Unix seconds), for an identity it renews itself.
    pub certificate_expiry: Gauge,
    /// Certificate renewals by result (ok, failed).
    pub certificate_renewals: Family<Labels, Counter>,
}

const RELAY: RequestMetricNames = RequestMetricNames {
    requests: ("remote_write_requests", "Remote-write requests answered"),
    bytes: ("remote_write_bytes", "Compressed remote-write bytes relayed with a 2xx answer"),
    errors: ("remote_write_errors", "Remote-write requests that ended without an answer"),
    duration: ("remote_write_duration_seconds", "Latency of relayed remote-write requests"),
    in_flight: ("remote_write_in_flight_requests", "Remote-write requests in flight"),
};

impl AgentMetrics {
    /// Creates the metrics and registers them in `registry` under `opni_agent_`.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let r = registry.sub_registry_with_prefix("opni_agent");
        let relay = RequestMetrics::register(r, RELAY);
        let m = Self {
            relay,
            in_flight_bytes: Gauge::default(),
            refused: Family::default(),
            rule_groups: Family::default(),
            rule_syncs: Family::default(),
            certificate_expiry: Gauge::default(),
            certificate_renewals: Family::default(),
        };
        r.register("remote_write_in_flight_bytes", "Remote-write body bytes held in flight", m.in_flight_bytes.clone());
        r.register("remote_write_refused", "Remote-write requests refused by the agent", m.refused.clone());
        r.register("rule_groups", "Discovered rule groups by state", m.rule_groups.clone());
        r.register("rule_syncs", "Rule syncs with the gateway by result", m.rule_syncs.clone());
        r.register(
            "certificate_expiry_timestamp_seconds",
            "When the agent's client certificate expires (an identity the agent renews itself)",
            m.certificate_expiry.clone(),
        );
        r.register("certificate_renewals", "Client certificate renewals by result", m.certificate_renewals.clone());
        Arc::new(m)
    }

    /// Sets the discovered rule group counts.
    pub fn rule_groups(&self, valid: usize, invalid: usize) {
        for (state, n) in [("valid", valid), ("invalid", invalid)] {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            self.rule_groups.get_or_create(&vec![("state".to_owned(), state.to_owned())]).set(n);
        }
    }

    /// Counts a rule sync.
    pub fn rule_sync(&self, result: &str) {
        self.rule_syncs.get_or_create(&vec![("result".to_owned(), result.to_owned())]).inc();
    }

    /// Records what certificate renewal reported.
    pub fn renewal(&self, e: crate::identity::RenewEvent) {
        use crate::identity::RenewEvent;
        let result = match e {
            RenewEvent::Valid { until } => {
                let secs = until.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                self.certificate_expiry.set(i64::try_from(secs).unwrap_or(i64::MAX));
                return;
            }
            RenewEvent::Renewed => "ok",
            RenewEvent::Failed => "failed",
        };
        self.certificate_renewals.get_or_create(&vec![("result".to_owned(), result.to_owned())]).inc();
    }

    /// Counts a refusal.
    pub fn refuse(&self, reason: &str) {
        self.refused.get_or_create(&vec![("reason".to_owned(), reason.to_owned())]).inc();
    }
}

/// Holds in-flight body bytes until dropped, so a cancelled request leaves no drift.
#[derive(Debug)]
pub(crate) struct BytesInFlight {
    gauge: Gauge,
    n: i64,
}

impl BytesInFlight {
    pub(crate) fn new(gauge: &Gauge, n: usize) -> Self {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        gauge.inc_by(n);
        Self { gauge: gauge.clone(), n }
    }
}

impl Drop for BytesInFlight {
    fn drop(&mut self) {
        self.gauge.dec_by(self.n);
    }
}
