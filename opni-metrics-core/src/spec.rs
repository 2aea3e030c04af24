//! The node spec (`MetricsCapabilitySpec`): what the gateway wants each agent's Prometheus to
//! look like, with validation and the normalisation that makes its digest canonical.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::duration::PromDuration;

/// The most entries any list in a spec may hold.
pub const MAX_LIST_LEN: usize = 256;

/// A field that failed validation — of a spec, a configuration or a component's settings: the
/// path of the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SpecError {
    /// The path of the field, e.g. `prometheus.queue.maxShards`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl SpecError {
    /// A failed field.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

/// The desired configuration of one agent's metrics collection.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MetricsCapabilitySpec {
    /// How the agent's Prometheus is deployed and configured.
    pub prometheus: PrometheusSpec,
    /// Discovery of alerting and recording rules to sync to the gateway.
    pub rules: RuleDiscovery,
}

/// Options of the Prometheus node driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PrometheusSpec {
    /// Container image (Kubernetes driver); `None` lets the driver pick its default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// How often targets are scraped.
    pub scrape_interval: PromDuration,
    /// Which ServiceMonitors are used; empty selects all.
    pub service_monitor_selector: LabelSelector,
    /// Which PodMonitors are used; empty selects all.
    pub pod_monitor_selector: LabelSelector,
    /// Which namespaces monitors are taken from; empty selects all.
    pub monitor_namespace_selector: LabelSelector,
    /// Namespaces to watch; empty means all. Order carries no meaning.
    pub namespaces: Vec<String>,
    /// Resource requests and limits of the Prometheus container.
    pub resources: Resources,
    /// Remote-write queue settings.
    pub queue: QueueConfig,
    /// Static scrape jobs (used by the process driver, added to discovered ones on Kubernetes).
    /// Order carries no meaning; names are unique.
    pub scrape_jobs: Vec<ScrapeJob>,
}

impl Default for PrometheusSpec {
    fn default() -> Self {
        Self {
            image: None,
            scrape_interval: PromDuration::from_secs(30),
            service_monitor_selector: LabelSelector::default(),
            pod_monitor_selector: LabelSelector::default(),
            monitor_namespace_selector: LabelSelector::default(),
            namespaces: Vec::new(),
            resources: Resources::default(),
            queue: QueueConfig::default(),
            scrape_jobs: Vec::new(),
        }
    }
}

/// A Kubernetes label selector.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LabelSelector {
    /// Labels that must equal the given values.
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements; their order carries no meaning.
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

impl LabelSelector {
    /// Whether `labels` satisfy the selector (an empty selector matches everything).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let value = labels.get(&e.key);
                match e.operator {
                    SelectorOperator::In => value.is_some_and(|v| e.values.contains(v)),
                    SelectorOperator::NotIn => value.is_none_or(|v| !e.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

/// One set-based requirement of a [`LabelSelector`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// The label key.
    pub key: String,
    /// The operator.
    pub operator: SelectorOperator,
    /// The values; non-empty for `In`/`NotIn`, empty otherwise. Order carries no meaning.
    #[serde(default)]
    pub values: Vec<String>,
}

/// Operators of a [`LabelSelectorRequirement`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SelectorOperator {
    /// The label's value is one of `values`.
    In,
    /// The label's value is none of `values`.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// Resource requests and limits.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Resources {
    /// Requested resources.
    pub requests: ResourceList,
    /// Resource limits.
    pub limits: ResourceList,
}

/// CPU and memory quantities in Kubernetes notation (`500m`, `1Gi`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ResourceList {
    /// CPU quantity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Memory quantity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// Prometheus remote-write queue settings (`queue_config`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Samples buffered per shard.
    pub capacity: u32,
    /// Minimum number of shards.
    pub min_shards: u32,
    /// Maximum number of shards (concurrent requests).
    pub max_shards: u32,
    /// Samples per request.
    pub max_samples_per_send: u32,
    /// Longest a sample waits in a shard before a request is sent.
    pub batch_send_deadline: PromDuration,
    /// Initial retry back-off.
    pub min_backoff: PromDuration,
    /// Largest retry back-off.
    pub max_backoff: PromDuration,
    /// Retry on HTTP 429 (the gateway answers 429 with `Retry-After` under rate limits).
    pub retry_on_rate_limit: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            min_shards: 1,
            max_shards: 50,
            max_samples_per_send: 2_000,
            batch_send_deadline: PromDuration::from_secs(5),
            min_backoff: PromDuration::from_millis(30),
            max_backoff: PromDuration::from_secs(5),
            retry_on_rate_limit: true,
        }
    }
}

/// A static scrape job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScrapeJob {
    /// The job name (the `job` label); unique within a spec.
    pub name: String,
    /// `host:port` targets; order carries no meaning.
    pub targets: Vec<String>,
    /// The metrics path; `/metrics` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_path: Option<String>,
    /// Overrides the spec's scrape interval for this job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_interval: Option<PromDuration>,
}

/// Which alerting/recording rules the agent discovers and syncs to the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RuleDiscovery {
    /// Whether rule discovery runs.
    pub enabled: bool,
    /// Namespaces searched for `PrometheusRule` objects; empty means all.
    pub namespaces: Vec<String>,
    /// Rule files (globs) read by the process driver.
    pub file_globs: Vec<String>,
}

impl Default for RuleDiscovery {
    fn default() -> Self {
        Self { enabled: true, namespaces: Vec::new(), file_globs: Vec::new() }
    }
}

impl MetricsCapabilitySpec {
    /// Checks every field.
    ///
    /// # Errors
    /// The first [`SpecError`] found, naming the field by its path.
    pub fn validate(&self) -> Result<(), SpecError> {
        let p = &self.prometheus;
        if let Some(image) = &p.image
            && (image.is_empty() || image.len() > 512 || image.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(SpecError::new(
                "prometheus.image",
                "must be a non-empty image reference without spaces, at most 512 bytes",
            ));
        }
        let si = p.scrape_interval.as_millis();
        if !(1_000..=3_600_000).contains(&si) {
            return Err(SpecError::new(
                "prometheus.scrapeInterval",
                format!("{} is outside 1s..1h", p.scrape_interval),
            ));
        }
        validate_selector("prometheus.serviceMonitorSelector", &p.service_monitor_selector)?;
        validate_selector("prometheus.podMonitorSelector", &p.pod_monitor_selector)?;
        validate_selector("prometheus.monitorNamespaceSelector", &p.monitor_namespace_selector)?;
        validate_namespaces("prometheus.namespaces", &p.namespaces)?;
        for (kind, list) in [("requests", &p.resources.requests), ("limits", &p.resources.limits)] {
            for (name, q) in [("cpu", &list.cpu), ("memory", &list.memory)] {
                if let Some(q) = q
                    && !is_quantity(q)
                {
                    return Err(SpecError::new(
                        format!("prometheus.resources.{kind}.{name}"),
                        format!("{q:?} is not a Kubernetes quantity like 500m, 2 or 1Gi"),
                    ));
                }
            }
        }
        validate_queue(&p.queue)?;
        validate_jobs(&p.scrape_jobs)?;
        validate_namespaces("rules.namespaces", &self.rules.namespaces)?;
        check_len("rules.fileGlobs", self.rules.file_globs.len())?;
        for (i, g) in self.rules.file_globs.iter().enumerate() {
            if g.is_empty() || g.contains('\0') {
                return Err(SpecError::new(format!("rules.fileGlobs[{i}]"), "must be a non-empty path pattern"));
            }
        }
        Ok(())
    }

    /// The same spec with every list whose order carries no meaning sorted and deduplicated,
    /// so equal specs have equal normal forms (and digests).
    #[must_use]
    pub fn normalized(&self) -> Self {
        let mut s = self.clone();
        let p = &mut s.prometheus;
        for sel in [&mut p.service_monitor_selector, &mut p.pod_monitor_selector, &mut p.monitor_namespace_selector] {
            normalize_selector(sel);
        }
        sort_dedup(&mut p.namespaces);
        for job in &mut p.scrape_jobs {
            sort_dedup(&mut job.targets);
        }
        p.scrape_jobs.sort_by(|a, b| a.name.cmp(&b.name));
        sort_dedup(&mut s.rules.namespaces);
        sort_dedup(&mut s.rules.file_globs);
        s
    }
}

fn sort_dedup(v: &mut Vec<String>) {
    v.sort();
    v.dedup();
}

fn normalize_selector(sel: &mut LabelSelector) {
    for e in &mut sel.match_expressions {
        sort_dedup(&mut e.values);
    }
    sel.match_expressions.sort();
    sel.match_expressions.dedup();
}

fn check_len(field: &str, len: usize) -> Result<(), SpecError> {
    if len > MAX_LIST_LEN {
        return Err(SpecError::new(field, format!("{len} entries, at most {MAX_LIST_LEN} are allowed")));
    }
    Ok(())
}

fn validate_queue(q: &QueueConfig) -> Result<(), SpecError> {
    let f = |name: &str| format!("prometheus.queue.{name}");
    if q.min_shards == 0 {
        return Err(SpecError::new(f("minShards"), "must be at least 1"));
    }
    if q.max_shards < q.min_shards {
        return Err(SpecError::new(f("maxShards"), format!("{} is below minShards {}", q.max_shards, q.min_shards)));
    }
    if q.max_shards > 10_000 {
        return Err(SpecError::new(f("maxShards"), "must be at most 10000"));
    }
    if !(1..=100_000).contains(&q.max_samples_per_send) {
        return Err(SpecError::new(f("maxSamplesPerSend"), "must be within 1..=100000"));
    }
    if q.capacity < q.max_samples_per_send {
        return Err(SpecError::new(
            f("capacity"),
            format!("{} is below maxSamplesPerSend {}", q.capacity, q.max_samples_per_send),
        ));
    }
    if q.batch_send_deadline.as_millis() == 0 {
        return Err(SpecError::new(f("batchSendDeadline"), "must be above zero"));
    }
    if q.min_backoff.as_millis() == 0 {
        return Err(SpecError::new(f("minBackoff"), "must be above zero"));
    }
    if q.max_backoff < q.min_backoff {
        return Err(SpecError::new(
            f("maxBackoff"),
            format!("{} is below minBackoff {}", q.max_backoff, q.min_backoff),
        ));
    }
    Ok(())
}

fn validate_jobs(jobs: &[ScrapeJob]) -> Result<(), SpecError> {
    check_len("prometheus.scrapeJobs", jobs.len())?;
    let mut names = BTreeSet::new();
    for (i, job) in jobs.iter().enumerate() {
        let f = |name: &str| format!("prometheus.scrapeJobs[{i}].{name}");
        if job.name.is_empty()
            || job.name.len() > 128
            || !job.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        {
            return Err(SpecError::new(f("name"), "must be 1 to 128 ASCII letters, digits, '-', '_', '.' or ':'"));
        }
        if !names.insert(job.name.as_str()) {
            return Err(SpecError::new(f("name"), format!("{:?} is used by another job", job.name)));
        }
        if job.targets.is_empty() {
            return Err(SpecError::new(f("targets"), "must name at least one host:port"));
        }
        check_len(&f("targets"), job.targets.len())?;
        for (t, target) in job.targets.iter().enumerate() {
            if !is_host_port(target) {
                return Err(SpecError::new(
                    format!("prometheus.scrapeJobs[{i}].targets[{t}]"),
                    format!("{target:?} is not host:port"),
                ));
            }
        }
        if let Some(path) = &job.metrics_path
            && (!path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(SpecError::new(f("metricsPath"), "must be an absolute URL path without spaces"));
        }
        if let Some(si) = job.scrape_interval
            && !(1_000..=3_600_000).contains(&si.as_millis())
        {
            return Err(SpecError::new(f("scrapeInterval"), format!("{si} is outside 1s..1h")));
        }
    }
    Ok(())
}

fn is_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else { return false };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.chars().all(|c| c.is_ascii_alphanumeric() || "-._[]:".contains(c));
    host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
}

fn validate_selector(field: &str, sel: &LabelSelector) -> Result<(), SpecError> {
    check_len(&format!("{field}.matchLabels"), sel.match_labels.len())?;
    check_len(&format!("{field}.matchExpressions"), sel.match_expressions.len())?;
    for (k, v) in &sel.match_labels {
        if !is_label_key(k) {
            return Err(SpecError::new(format!("{field}.matchLabels"), format!("{k:?} is not a valid label key")));
        }
        if !is_label_value(v) {
            return Err(SpecError::new(
                format!("{field}.matchLabels.{k}"),
                format!("{v:?} is not a valid label value"),
            ));
        }
    }
    for (i, e) in sel.match_expressions.iter().enumerate() {
        let f = format!("{field}.matchExpressions[{i}]");
        if !is_label_key(&e.key) {
            return Err(SpecError::new(format!("{f}.key"), format!("{:?} is not a valid label key", e.key)));
        }
        match e.operator {
            SelectorOperator::In | SelectorOperator::NotIn if e.values.is_empty() => {
                return Err(SpecError::new(format!("{f}.values"), "must not be empty for In and NotIn"));
            }
            SelectorOperator::Exists | SelectorOperator::DoesNotExist if !e.values.is_empty() => {
                return Err(SpecError::new(format!("{f}.values"), "must be empty for Exists and DoesNotExist"));
            }
            _ => {}
        }
        check_len(&format!("{f}.values"), e.values.len())?;
        if let Some(v) = e.values.iter().find(|v| !is_label_value(v)) {
            return Err(SpecError::new(format!("{f}.values"), format!("{v:?} is not a valid label value")));
        }
    }
    Ok(())
}

fn validate_namespaces(field: &str, ns: &[String]) -> Result<(), SpecError> {
    check_len(field, ns.len())?;
    for (i, n) in ns.iter().enumerate() {
        if !is_dns_label(n) {
            return Err(SpecError::new(
                format!("{field}[{i}]"),
                format!("{n:?} is not a namespace name (DNS-1123 label)"),
            ));
        }
    }
    Ok(())
}

/// Whether `s` is a DNS-1123 label: 1..=63 lowercase letters, digits and `-`, alphanumeric at
/// both ends.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_label_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Whether `s` is a Kubernetes label key: an optional DNS-subdomain prefix and `/`, then a name.
pub fn is_label_key(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => {
            !prefix.is_empty() && prefix.len() <= 253 && prefix.split('.').all(is_dns_label) && is_label_name_part(name)
        }
        None => is_label_name_part(s),
    }
}

/// Whether `s` is a Kubernetes label value (may be empty).
pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_label_name_part(s)
}

/// Whether `s` is a Kubernetes resource quantity such as `100m`, `0.5`, `1Gi`, `1e3`.
pub fn is_quantity(s: &str) -> bool {
    let number_len = s.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
    let (number, suffix) = s.split_at(number_len);
    let digits = number.bytes().filter(u8::is_ascii_digit).count();
    if digits == 0 || number.matches('.').count() > 1 || s.len() > 64 {
        return false;
    }
    const SUFFIXES: [&str; 15] = ["", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi"];
    if SUFFIXES.contains(&suffix) || suffix == "Ei" {
        return true;
    }
    // decimal exponent: e3, E-2
    let exp = suffix.strip_prefix(['e', 'E']).unwrap_or("");
    let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
    !exp.is_empty() && exp.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests;
