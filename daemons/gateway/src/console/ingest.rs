//! The last hour of ingestion per tenant, for the console's charts: Cortex's own statistics
//! (`/distributor/all_user_stats`: ingestion rate, active series) and the bytes this gateway
//! forwarded with a 2xx answer (its `opni_gateway_remote_write_bytes_total`), sampled on an
//! interval.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opni_metrics_core::ClusterId;
use serde_json::Value;

use crate::cortex_api::CortexApi;
use crate::metrics::GatewayMetrics;
use crate::state::State;

/// Points kept per tenant.
const POINTS: usize = 120;

/// One sample of one tenant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Point {
    /// Seconds since the epoch.
    pub(crate) at: i64,
    /// Cortex's ingestion rate, samples/s.
    pub(crate) ingest_rate: Option<f64>,
    /// Cortex's active series.
    pub(crate) series: Option<f64>,
    /// Compressed bytes/s this gateway forwarded with a 2xx answer.
    pub(crate) forwarded_rate: Option<f64>,
}

#[derive(Debug, Default)]
struct History {
    points: BTreeMap<ClusterId, VecDeque<Point>>,
    last_error: Option<String>,
    last_written: BTreeMap<ClusterId, (i64, u64)>,
}

/// The sampled history, shared by the sampler and the pages.
#[derive(Debug, Clone, Default)]
pub(crate) struct IngestHistory {
    inner: Arc<Mutex<History>>,
}

/// Starts the sampler the first time someone signs in to the console: a gateway whose console
/// is never used sends its upstream nothing for it.
pub(crate) struct Sampler {
    pub(crate) started: std::sync::atomic::AtomicBool,
    pub(crate) history: IngestHistory,
    pub(crate) api: CortexApi,
    pub(crate) state: State,
    pub(crate) metrics: Arc<GatewayMetrics>,
    pub(crate) interval: Duration,
    pub(crate) tasks: opni_metrics_transport::Tasks,
}

impl Sampler {
    /// Starts sampling, once.
    pub(crate) fn start(&self) {
        if self.started.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let run =
            self.history.clone().run(self.api.clone(), self.state.clone(), Arc::clone(&self.metrics), self.interval);
        self.tasks.spawn("console-ingest", run);
    }
}

impl IngestHistory {
    /// The points of `tenant`, oldest first.
    pub(crate) fn points(&self, tenant: &ClusterId) -> Vec<Point> {
        let h = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        h.points.get(tenant).map(|p| p.iter().copied().collect()).unwrap_or_default()
    }

    /// Why the last Cortex statistics could not be read, if they could not.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).last_error.clone()
    }

    /// Takes one sample now.
    pub(crate) async fn sample(&self, api: &CortexApi, state: &State, metrics: &GatewayMetrics) {
        let at = i64::try_from(crate::state::now().0 / 1000).unwrap_or(i64::MAX);
        let url = format!("{}/distributor/all_user_stats", api.apis.admin);
        let stats = api.get_json(&url, &[]).await;
        let clusters = state.clusters().await.unwrap_or_default();
        let mut h = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut cortex: BTreeMap<ClusterId, (Option<f64>, Option<f64>)> = BTreeMap::new();
        match stats {
            Ok(v) => {
                h.last_error = None;
                for u in v.as_array().into_iter().flatten() {
                    let Some(id) = u.get("userID").and_then(Value::as_str).and_then(|s| ClusterId::new(s).ok()) else {
                        continue;
                    };
                    let rate = u.get("ingestionRate").and_then(Value::as_f64);
                    let series = u.get("numSeries").and_then(Value::as_f64);
                    cortex.insert(id, (rate, series));
                }
            }
            Err(e) => h.last_error = Some(e.message().to_owned()),
        }
        for c in clusters {
            let labels = vec![("cluster".to_owned(), c.id.as_str().to_owned())];
            let written = metrics.upstream.bytes.get_or_create(&labels).get();
            let forwarded_rate = h.last_written.get(&c.id).and_then(|(t, n)| {
                let dt = at - t;
                (dt > 0).then(|| written.saturating_sub(*n) as f64 / dt as f64)
            });
            h.last_written.insert(c.id.clone(), (at, written));
            let (ingest_rate, series) = cortex.get(&c.id).copied().unwrap_or((None, None));
            let points = h.points.entry(c.id).or_default();
            points.push_back(Point { at, ingest_rate, series, forwarded_rate });
            while points.len() > POINTS {
                points.pop_front();
            }
        }
    }

    /// Samples every `interval` until dropped.
    pub(crate) async fn run(self, api: CortexApi, state: State, metrics: Arc<GatewayMetrics>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sample(&api, &state, &metrics).await;
        }
    }
}
