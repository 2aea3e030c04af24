//! Rule discovery and sync: the agent finds alerting and recording rule groups (rule files
//! matched by the node spec's globs; `PrometheusRule` objects on Kubernetes), checks each one
//! (structure, durations, label names, and every `expr` with the `promql-parser` crate), gives
//! each valid group a collision-free name derived from its source
//! ([`synced_name`]), and sends the complete valid set to the gateway with
//! `RemoteWrite.SyncRules` when it changed (by digest) and periodically to heal drift.
//! Invalid groups are logged, counted and reported in the request, and never sent; the valid
//! ones still sync.
//!
//! Discovery runs while the node is enabled and `spec.rules.enabled` holds; it stops (leaving
//! the ruler as it is) otherwise. Files are re-read every poll interval and on
//! [`Agent::reload_rules`](crate::Agent::reload_rules) (the daemon calls it on SIGHUP).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use opni_metrics_core::backoff::{Backoff, Rng};
use opni_metrics_core::driver::{DriverError, NodeDriver};
use opni_metrics_core::node::{NodeConfig, NodeStatus};
use opni_metrics_core::rules::{
    MAX_GROUP_BYTES, MAX_GROUPS, MAX_SOURCE_BYTES, MAX_SYNC_BYTES, RuleFile, RuleGroup, RuleSource, set_digest,
    synced_name,
};
use opni_metrics_core::spec::RuleDiscovery;
use opni_metrics_proto::remote::v1::remote_write_client::RemoteWriteClient;
use opni_metrics_proto::remote::v1::{RuleGroup as WireGroup, RuleGroupError, SyncRulesRequest};
use opni_metrics_transport::Tasks;
use opni_metrics_transport::channel::GatewayChannel;
use tokio::sync::{Notify, watch};

use crate::metrics::AgentMetrics;

#[cfg(feature = "kubernetes")]
mod kube_watch;

/// Rule sync timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuleSyncSettings {
    /// How often rule files are read again. Default 10 s.
    pub poll_interval: Duration,
    /// How often the complete set is sent even when unchanged. Default 10 min.
    pub resync_interval: Duration,
}

impl Default for RuleSyncSettings {
    fn default() -> Self {
        Self { poll_interval: Duration::from_secs(10), resync_interval: Duration::from_secs(600) }
    }
}

/// What discovery found in one source: its groups, or why it could not be read.
pub(crate) type Found = (RuleSource, Result<Vec<RuleGroup>, String>);

/// The set to send.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Built {
    pub(crate) groups: Vec<WireGroup>,
    pub(crate) invalid: Vec<RuleGroupError>,
    pub(crate) digest: String,
}

/// Checks a PromQL expression with `promql-parser`.
pub(crate) fn check_promql(expr: &str) -> Result<(), String> {
    promql_parser::parser::parse(expr).map(|_| ()).map_err(|e| format!("invalid PromQL: {e}"))
}

/// Reads one rule file: size, UTF-8 and format checked.
pub(crate) fn read_file(path: &std::path::Path) -> Result<Vec<RuleGroup>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if meta.len() > MAX_SOURCE_BYTES as u64 {
        return Err(format!("{} bytes; rule files may have at most {MAX_SOURCE_BYTES}", meta.len()));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| format!("not UTF-8 (at byte {})", e.valid_up_to()))?;
    let file: RuleFile = serde_saphyr::from_str(text).map_err(|e| format!("not a Prometheus rule file: {e}"))?;
    Ok(file.groups)
}

/// Every file the globs match, read.
pub(crate) fn scan_files(globs: &[String]) -> Vec<Found> {
    let mut paths = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for g in globs {
        match glob::glob(g) {
            Ok(entries) => paths.extend(entries.filter_map(Result::ok).filter(|p| p.is_file())),
            Err(e) => out.push((RuleSource::File { path: g.clone() }, Err(format!("invalid glob: {e}")))),
        }
    }
    for p in paths {
        let groups = read_file(&p);
        out.push((RuleSource::File { path: p.display().to_string() }, groups));
    }
    out
}

fn invalid(name: &str, source: &RuleSource, message: String) -> RuleGroupError {
    RuleGroupError { name: name.to_owned(), source: source.to_string(), message }
}

/// Checks, names and serialises what discovery found; the valid groups in name order.
pub(crate) fn build(found: &[Found]) -> Built {
    let mut groups: BTreeMap<String, WireGroup> = BTreeMap::new();
    let mut bad = Vec::new();
    let mut total = 0usize;
    for (source, result) in found {
        let list = match result {
            Ok(l) => l,
            Err(e) => {
                // a source that cannot be read: an entry without a group name
                bad.push(invalid("", source, e.clone()));
                continue;
            }
        };
        for (i, g) in list.iter().enumerate() {
            if list.iter().filter(|o| o.name == g.name).count() > 1 {
                bad.push(invalid(&g.name, source, format!("groups[{i}]: the group name is used twice in this source")));
                continue;
            }
            if let Err(e) = g.validate(&check_promql) {
                bad.push(invalid(&g.name, source, e.to_string()));
                continue;
            }
            let mut renamed = g.clone();
            renamed.name = synced_name(source, &g.name);
            let yaml = match serde_saphyr::to_string(&renamed) {
                Ok(y) => y,
                Err(e) => {
                    bad.push(invalid(&g.name, source, format!("cannot be serialised: {e}")));
                    continue;
                }
            };
            if yaml.len() > MAX_GROUP_BYTES {
                bad.push(invalid(
                    &g.name,
                    source,
                    format!("{} bytes; a group may have at most {MAX_GROUP_BYTES}", yaml.len()),
                ));
                continue;
            }
            if groups.len() >= MAX_GROUPS || total + yaml.len() > MAX_SYNC_BYTES {
                bad.push(invalid(&g.name, source, "over the limits of one sync (2000 groups, 8 MiB)".into()));
                continue;
            }
            total += yaml.len();
            groups.insert(
                renamed.name.clone(),
                WireGroup { name: renamed.name, source: source.to_string(), yaml: yaml.into_bytes().into() },
            );
        }
    }
    let digest = set_digest(groups.values().map(|g| (g.name.as_str(), &g.yaml[..]))).to_string();
    Built { groups: groups.into_values().collect(), invalid: bad, digest }
}

/// What the sync loop is told by the node driver.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Wanted {
    enabled: bool,
    discovery: RuleDiscovery,
}

/// The running rule sync: configure it from node configs, poke it to re-read.
#[derive(Clone)]
pub(crate) struct RuleSyncer {
    wanted: watch::Sender<Wanted>,
    reload: Arc<Notify>,
    kube_found: Arc<Mutex<Option<KubeFound>>>,
}

/// What the `PrometheusRule` watch holds.
#[derive(Debug, Clone, Default)]
pub(crate) struct KubeFound {
    /// Objects by namespace and name.
    pub(crate) objects: BTreeMap<(String, String), Result<Vec<RuleGroup>, String>>,
    /// A watch failure; with `crd_missing`, the set is empty for sure.
    pub(crate) error: Option<String>,
    /// Whether the failure is the CRD being absent (a condition; the set is empty then).
    pub(crate) crd_missing: bool,
    /// Whether the initial listing finished.
    pub(crate) ready: bool,
}

impl RuleSyncer {
    /// Starts the sync task (idle until a config enables it).
    pub(crate) fn start(
        channel: GatewayChannel,
        settings: RuleSyncSettings,
        #[cfg(feature = "kubernetes")] kube: Option<kube::Client>,
        metrics: Arc<AgentMetrics>,
        tasks: &Tasks,
    ) -> Self {
        let (wanted, rx) = watch::channel(Wanted::default());
        let reload = Arc::new(Notify::new());
        let me = Self { wanted, reload: Arc::clone(&reload), kube_found: Arc::default() };
        #[cfg(feature = "kubernetes")]
        let kube = kube.map(|c| kube_watch::Watcher::new(c, Arc::clone(&me.kube_found), Arc::clone(&reload)));
        #[cfg(not(feature = "kubernetes"))]
        let kube: Option<()> = None;
        let found = Arc::clone(&me.kube_found);
        let stop = tasks.token();
        tasks.spawn("rule-sync", async move {
            tokio::select! {
                () = run(channel, settings, rx, reload, kube, found, metrics) => {}
                () = stop.cancelled() => {}
            }
        });
        me
    }

    /// Applies a node config: discovery runs while it is enabled with rules enabled.
    pub(crate) fn configure(&self, config: &NodeConfig) {
        let w = Wanted { enabled: config.enabled && config.spec.rules.enabled, discovery: config.spec.rules.clone() };
        self.wanted.send_if_modified(|cur| {
            if *cur == w {
                false
            } else {
                *cur = w;
                true
            }
        });
    }

    /// Reads the sources again now.
    pub(crate) fn reload(&self) {
        self.reload.notify_one();
    }
}

#[cfg(feature = "kubernetes")]
type KubeWatcher = kube_watch::Watcher;
#[cfg(not(feature = "kubernetes"))]
type KubeWatcher = ();

/// Gathers what every source holds now; `None` while the Kubernetes watch cannot say (a
/// failure other than a missing CRD, or the first listing not done), so nothing is deleted on
/// a transient error.
fn gather(discovery: &RuleDiscovery, kube: Option<&Arc<Mutex<Option<KubeFound>>>>) -> Option<Vec<Found>> {
    let mut found = scan_files(&discovery.file_globs);
    if let Some(k) = kube {
        let guard = k.lock().unwrap_or_else(PoisonError::into_inner);
        let k = guard.as_ref()?;
        if k.crd_missing {
            let msg = k.error.clone().unwrap_or_else(|| "the PrometheusRule CRD is not installed".into());
            found.push((RuleSource::Kubernetes { namespace: String::new(), name: String::new() }, Err(msg)));
        } else if k.error.is_some() || !k.ready {
            return None;
        } else {
            for ((ns, name), groups) in &k.objects {
                found.push((RuleSource::Kubernetes { namespace: ns.clone(), name: name.clone() }, groups.clone()));
            }
        }
    }
    Some(found)
}

async fn run(
    channel: GatewayChannel,
    settings: RuleSyncSettings,
    mut wanted: watch::Receiver<Wanted>,
    reload: Arc<Notify>,
    kube: Option<KubeWatcher>,
    kube_found: Arc<Mutex<Option<KubeFound>>>,
    metrics: Arc<AgentMetrics>,
) {
    let client =
        RemoteWriteClient::new(channel).max_decoding_message_size(16 << 20).max_encoding_message_size(16 << 20);
    let backoff = Backoff { base: Duration::from_millis(500), max: Duration::from_secs(30), jitter: 0.3 };
    let mut rng = Rng::new(u64::from(std::process::id()));
    // what was last sent (the valid set's digest and the invalid reports) and when
    let mut last_sent: Option<(String, Vec<RuleGroupError>, tokio::time::Instant)> = None;
    let mut last_reported: Option<Built> = None;
    let mut failures = 0u32;
    #[cfg_attr(not(feature = "kubernetes"), allow(unused_mut, unused_variables))]
    let mut watch_task: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let w = wanted.borrow_and_update().clone();
        #[cfg(feature = "kubernetes")]
        if let Some(k) = &kube {
            if let Some(t) = watch_task.take() {
                t.abort();
            }
            *kube_found.lock().unwrap_or_else(PoisonError::into_inner) = None;
            if w.enabled {
                watch_task = Some(k.spawn(w.discovery.namespaces.clone()));
            }
        }
        if !w.enabled {
            last_sent = None;
            last_reported = None;
            if wanted.changed().await.is_err() {
                return;
            }
            continue;
        }
        // discovery runs until the wanted state changes
        loop {
            let mut wait = settings.poll_interval;
            let kube_ref = kube.as_ref().map(|_| &kube_found);
            if let Some(found) = gather(&w.discovery, kube_ref) {
                let built = build(&found);
                if last_reported.as_ref() != Some(&built) {
                    for e in &built.invalid {
                        tracing::warn!(source = %e.source, group = %e.name, reason = %e.message, "rule group not synced");
                    }
                    metrics.rule_groups(built.groups.len(), built.invalid.len());
                    last_reported = Some(built.clone());
                }
                // the invalid reports count too: they are what capability status shows
                let due = match &last_sent {
                    // nothing configured and nothing sent yet by this agent: nothing to say
                    // (agents of upstreams without a ruler never call it)
                    None => !(found.is_empty() && built.groups.is_empty()),
                    Some((d, inv, at)) => {
                        *d != built.digest || *inv != built.invalid || at.elapsed() >= settings.resync_interval
                    }
                };
                if due {
                    let req = SyncRulesRequest {
                        groups: built.groups.clone(),
                        invalid: built.invalid.clone(),
                        digest: built.digest.clone(),
                    };
                    let mut r = tonic::Request::new(req);
                    r.set_timeout(Duration::from_secs(60));
                    match client.clone().sync_rules(r).await {
                        Ok(resp) => {
                            let resp = resp.into_inner();
                            failures = 0;
                            metrics.rule_sync(if resp.errors.is_empty() { "ok" } else { "partial" });
                            for e in &resp.errors {
                                tracing::warn!(group = %e.name, reason = %e.message, "the gateway refused a rule group");
                            }
                            tracing::info!(
                                groups = built.groups.len(),
                                applied = resp.applied,
                                unchanged = resp.unchanged,
                                deleted = resp.deleted,
                                refused = resp.errors.len(),
                                invalid = built.invalid.len(),
                                "rules synced"
                            );
                            last_sent =
                                Some((built.digest.clone(), built.invalid.clone(), tokio::time::Instant::now()));
                        }
                        Err(s) => {
                            failures = failures.saturating_add(1);
                            metrics.rule_sync("failed");
                            wait = backoff.delay(failures, rng.next_u64());
                            if matches!(s.code(), tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition) {
                                // the whole set was refused, or the upstream has no ruler: try
                                // again when the set changes or at the resync interval
                                last_sent =
                                    Some((built.digest.clone(), built.invalid.clone(), tokio::time::Instant::now()));
                                wait = settings.poll_interval;
                            }
                            tracing::warn!(code = ?s.code(), error = %s.message(), retry_in = ?wait, "rule sync failed");
                        }
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = reload.notified() => {}
                r = wanted.changed() => {
                    if r.is_err() {
                        return;
                    }
                    break;
                }
            }
        }
    }
}

/// A node driver that also steers rule sync: every config it applies configures the syncer.
pub(crate) struct RulesDriver {
    pub(crate) inner: Arc<dyn NodeDriver>,
    pub(crate) syncer: RuleSyncer,
}

impl NodeDriver for RulesDriver {
    fn apply<'a>(&'a self, config: &'a NodeConfig) -> BoxFuture<'a, Result<NodeStatus, DriverError>> {
        Box::pin(async move {
            self.syncer.configure(config);
            self.inner.apply(config).await
        })
    }
    fn remove(&self) -> BoxFuture<'_, Result<(), DriverError>> {
        self.inner.remove()
    }
    fn status(&self) -> BoxFuture<'_, Result<NodeStatus, DriverError>> {
        self.inner.status()
    }
}

#[cfg(test)]
mod tests;
