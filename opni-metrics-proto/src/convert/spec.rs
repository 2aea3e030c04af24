//! The node spec: [`MetricsCapabilitySpec`] and its nested types.
//!
//! Only the whole spec is validated ([`MetricsCapabilitySpec::validate`]): the conversions of
//! nested types are structural, so a caller assembling a spec from parts validates it once.

use opni_metrics_core::spec::{
    LabelSelector, LabelSelectorRequirement, MetricsCapabilitySpec, PrometheusSpec, QueueConfig, ResourceList,
    Resources, RuleDiscovery, ScrapeJob, SelectorOperator,
};

use super::{ConvertError, convert_required, decode_enum, prom_duration, required, wire_duration};
use crate::common::v1 as pb;

impl TryFrom<pb::MetricsCapabilitySpec> for MetricsCapabilitySpec {
    type Error = ConvertError;

    /// Converts and validates a spec.
    fn try_from(w: pb::MetricsCapabilitySpec) -> Result<Self, ConvertError> {
        let spec = Self {
            prometheus: convert_required("prometheus", w.prometheus)?,
            rules: w.rules.map(RuleDiscovery::from).ok_or_else(|| ConvertError::missing("rules"))?,
        };
        spec.validate().map_err(|e| ConvertError::spec("", e))?;
        Ok(spec)
    }
}

impl From<MetricsCapabilitySpec> for pb::MetricsCapabilitySpec {
    fn from(s: MetricsCapabilitySpec) -> Self {
        Self { prometheus: Some(s.prometheus.into()), rules: Some(s.rules.into()) }
    }
}

impl TryFrom<pb::PrometheusSpec> for PrometheusSpec {
    type Error = ConvertError;

    fn try_from(w: pb::PrometheusSpec) -> Result<Self, ConvertError> {
        let scrape_interval = required("scrapeInterval", w.scrape_interval)?;
        Ok(Self {
            image: w.image,
            scrape_interval: prom_duration("scrapeInterval", &scrape_interval)?,
            service_monitor_selector: selector_or_empty("serviceMonitorSelector", w.service_monitor_selector)?,
            pod_monitor_selector: selector_or_empty("podMonitorSelector", w.pod_monitor_selector)?,
            monitor_namespace_selector: selector_or_empty("monitorNamespaceSelector", w.monitor_namespace_selector)?,
            namespaces: w.namespaces,
            resources: w.resources.map(Resources::from).unwrap_or_default(),
            queue: convert_required("queue", w.queue)?,
            scrape_jobs: w
                .scrape_jobs
                .into_iter()
                .enumerate()
                .map(|(i, job)| ScrapeJob::try_from(job).map_err(|e| e.under(&format!("scrapeJobs[{i}]"))))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl From<PrometheusSpec> for pb::PrometheusSpec {
    fn from(p: PrometheusSpec) -> Self {
        Self {
            image: p.image,
            scrape_interval: Some(wire_duration(p.scrape_interval)),
            service_monitor_selector: Some(p.service_monitor_selector.into()),
            pod_monitor_selector: Some(p.pod_monitor_selector.into()),
            monitor_namespace_selector: Some(p.monitor_namespace_selector.into()),
            namespaces: p.namespaces,
            resources: Some(p.resources.into()),
            queue: Some(p.queue.into()),
            scrape_jobs: p.scrape_jobs.into_iter().map(Into::into).collect(),
        }
    }
}

/// An optional selector: unset is the empty selector, which selects everything.
fn selector_or_empty(field: &str, w: Option<pb::LabelSelector>) -> Result<LabelSelector, ConvertError> {
    match w {
        None => Ok(LabelSelector::default()),
        Some(w) => LabelSelector::try_from(w).map_err(|e| e.under(field)),
    }
}

impl TryFrom<pb::LabelSelector> for LabelSelector {
    type Error = ConvertError;

    fn try_from(w: pb::LabelSelector) -> Result<Self, ConvertError> {
        let match_expressions = w
            .match_expressions
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let field = format!("matchExpressions[{i}].operator");
                Ok(LabelSelectorRequirement {
                    operator: decode_enum(&field, e.operator, selector_operator)?,
                    key: e.key,
                    values: e.values,
                })
            })
            .collect::<Result<_, ConvertError>>()?;
        Ok(Self { match_labels: w.match_labels, match_expressions })
    }
}

impl From<LabelSelector> for pb::LabelSelector {
    fn from(s: LabelSelector) -> Self {
        Self {
            match_labels: s.match_labels,
            match_expressions: s
                .match_expressions
                .into_iter()
                .map(|e| pb::LabelSelectorRequirement {
                    key: e.key,
                    operator: pb::SelectorOperator::from(e.operator).into(),
                    values: e.values,
                })
                .collect(),
        }
    }
}

fn selector_operator(w: pb::SelectorOperator) -> Option<SelectorOperator> {
    match w {
        pb::SelectorOperator::Unspecified => None,
        pb::SelectorOperator::In => Some(SelectorOperator::In),
        pb::SelectorOperator::NotIn => Some(SelectorOperator::NotIn),
        pb::SelectorOperator::Exists => Some(SelectorOperator::Exists),
        pb::SelectorOperator::DoesNotExist => Some(SelectorOperator::DoesNotExist),
    }
}

impl From<SelectorOperator> for pb::SelectorOperator {
    fn from(o: SelectorOperator) -> Self {
        match o {
            SelectorOperator::In => Self::In,
            SelectorOperator::NotIn => Self::NotIn,
            SelectorOperator::Exists => Self::Exists,
            SelectorOperator::DoesNotExist => Self::DoesNotExist,
        }
    }
}

impl From<pb::Resources> for Resources {
    fn from(w: pb::Resources) -> Self {
        Self {
            requests: w.requests.map(ResourceList::from).unwrap_or_default(),
            limits: w.limits.map(ResourceList::from).unwrap_or_default(),
        }
    }
}

impl From<Resources> for pb::Resources {
    fn from(r: Resources) -> Self {
        Self { requests: Some(r.requests.into()), limits: Some(r.limits.into()) }
    }
}

impl From<pb::ResourceList> for ResourceList {
    fn from(w: pb::ResourceList) -> Self {
        Self { cpu: w.cpu, memory: w.memory }
    }
}

impl From<ResourceList> for pb::ResourceList {
    fn from(r: ResourceList) -> Self {
        Self { cpu: r.cpu, memory: r.memory }
    }
}

impl TryFrom<pb::QueueConfig> for QueueConfig {
    type Error = ConvertError;

    fn try_from(w: pb::QueueConfig) -> Result<Self, ConvertError> {
        let duration = |field: &str, d: Option<prost_types::Duration>| prom_duration(field, &required(field, d)?);
        Ok(Self {
            capacity: w.capacity,
            min_shards: w.min_shards,
            max_shards: w.max_shards,
            max_samples_per_send: w.max_samples_per_send,
            batch_send_deadline: duration("batchSendDeadline", w.batch_send_deadline)?,
            min_backoff: duration("minBackoff", w.min_backoff)?,
            max_backoff: duration("maxBackoff", w.max_backoff)?,
            retry_on_rate_limit: w.retry_on_rate_limit,
        })
    }
}

impl From<QueueConfig> for pb::QueueConfig {
    fn from(q: QueueConfig) -> Self {
        Self {
            capacity: q.capacity,
            min_shards: q.min_shards,
            max_shards: q.max_shards,
            max_samples_per_send: q.max_samples_per_send,
            batch_send_deadline: Some(wire_duration(q.batch_send_deadline)),
            min_backoff: Some(wire_duration(q.min_backoff)),
            max_backoff: Some(wire_duration(q.max_backoff)),
            retry_on_rate_limit: q.retry_on_rate_limit,
        }
    }
}

impl TryFrom<pb::ScrapeJob> for ScrapeJob {
    type Error = ConvertError;

    fn try_from(w: pb::ScrapeJob) -> Result<Self, ConvertError> {
        Ok(Self {
            name: w.name,
            targets: w.targets,
            metrics_path: w.metrics_path,
            scrape_interval: w.scrape_interval.map(|d| prom_duration("scrapeInterval", &d)).transpose()?,
        })
    }
}

impl From<ScrapeJob> for pb::ScrapeJob {
    fn from(j: ScrapeJob) -> Self {
        Self {
            name: j.name,
            targets: j.targets,
            metrics_path: j.metrics_path,
            scrape_interval: j.scrape_interval.map(wire_duration),
        }
    }
}

impl From<pb::RuleDiscovery> for RuleDiscovery {
    fn from(w: pb::RuleDiscovery) -> Self {
        Self { enabled: w.enabled, namespaces: w.namespaces, file_globs: w.file_globs }
    }
}

impl From<RuleDiscovery> for pb::RuleDiscovery {
    fn from(r: RuleDiscovery) -> Self {
        Self { enabled: r.enabled, namespaces: r.namespaces, file_globs: r.file_globs }
    }
}
