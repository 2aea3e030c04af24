//! proptest strategies that generate valid domain values (feature `testing`).
//!
//! Every value generated passes its `validate()`; vocabularies are small so that collisions
//! (equal keys, duplicate entries) are exercised.

use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

use crate::digest::Digest;
use crate::duration::PromDuration;
use crate::id::{CapabilityName, ClusterId, Timestamp};
use crate::node::{Condition, ConditionKind, ConditionStatus, DisabledReason, NodeConfig, NodeStatus};
use crate::registry::{CapabilityEntry, Cluster};
use crate::spec::{
    LabelSelector, LabelSelectorRequirement, MetricsCapabilitySpec, PrometheusSpec, QueueConfig, ResourceList,
    Resources, RuleDiscovery, ScrapeJob, SelectorOperator,
};

fn word() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "app", "team", "prod", "kube-system", "x1"]).prop_map(str::to_owned)
}

fn label_key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["app", "team", "app.kubernetes.io/name", "tier"]).prop_map(str::to_owned)
}

/// Valid label selectors.
pub fn selector() -> impl Strategy<Value = LabelSelector> {
    let req = (label_key(), 0u8..4, vec(word(), 1..4)).prop_map(|(key, op, values)| {
        let operator =
            [SelectorOperator::In, SelectorOperator::NotIn, SelectorOperator::Exists, SelectorOperator::DoesNotExist]
                [op as usize];
        let values = if op < 2 { values } else { Vec::new() };
        LabelSelectorRequirement { key, operator, values }
    });
    (btree_map(label_key(), word(), 0..3), vec(req, 0..3))
        .prop_map(|(match_labels, match_expressions)| LabelSelector { match_labels, match_expressions })
}

fn quantity() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop::sample::select(vec!["100m", "1", "0.5", "512Mi", "2Gi"]).prop_map(str::to_owned))
}

fn millis(range: std::ops::RangeInclusive<u64>) -> impl Strategy<Value = PromDuration> {
    range.prop_map(PromDuration::from_millis)
}

/// Valid queue configs.
pub fn queue() -> impl Strategy<Value = QueueConfig> {
    (1u32..10, 0u32..100, 1u32..5000, 0u32..5000, millis(1..=10_000), millis(1..=1000), 0u64..10_000, any::<bool>())
        .prop_map(
            |(
                min_shards,
                extra_shards,
                max_samples_per_send,
                extra_cap,
                batch_send_deadline,
                min_backoff,
                extra_backoff,
                retry_on_rate_limit,
            )| QueueConfig {
                capacity: max_samples_per_send + extra_cap,
                min_shards,
                max_shards: min_shards + extra_shards,
                max_samples_per_send,
                batch_send_deadline,
                min_backoff,
                max_backoff: PromDuration::from_millis(min_backoff.as_millis() + extra_backoff),
                retry_on_rate_limit,
            },
        )
}

/// Valid scrape job lists (unique names).
pub fn scrape_jobs() -> impl Strategy<Value = Vec<ScrapeJob>> {
    let target = (prop::sample::select(vec!["127.0.0.1", "node-exporter", "[::1]"]), 1u16..10)
        .prop_map(|(h, p)| format!("{h}:{}", 9000 + p));
    let job =
        (vec(target, 1..4), prop::option::of(Just("/metrics".to_owned())), prop::option::of(millis(1_000..=60_000)));
    btree_map(prop::sample::select(vec!["node", "self", "app", "db"]), job, 0..4).prop_map(|jobs| {
        jobs.into_iter()
            .map(|(name, (targets, metrics_path, scrape_interval))| ScrapeJob {
                name: name.to_owned(),
                targets,
                metrics_path,
                scrape_interval,
            })
            .collect()
    })
}

/// Valid node specs.
pub fn spec() -> impl Strategy<Value = MetricsCapabilitySpec> {
    let resources = (quantity(), quantity(), quantity(), quantity()).prop_map(|(a, b, c, d)| Resources {
        requests: ResourceList { cpu: a, memory: b },
        limits: ResourceList { cpu: c, memory: d },
    });
    let prometheus = (
        prop::option::of(
            prop::sample::select(vec!["quay.io/prometheus/prometheus:v3.5.0", "prom/prometheus"])
                .prop_map(str::to_owned),
        ),
        millis(1_000..=3_600_000),
        (selector(), selector(), selector()),
        vec(word().prop_filter("namespace", |w| crate::spec::is_dns_label(w)), 0..4),
        resources,
        queue(),
        scrape_jobs(),
    )
        .prop_map(|(image, scrape_interval, (s, p, n), namespaces, resources, queue, scrape_jobs)| {
            PrometheusSpec {
                image,
                scrape_interval,
                service_monitor_selector: s,
                pod_monitor_selector: p,
                monitor_namespace_selector: n,
                namespaces,
                resources,
                queue,
                scrape_jobs,
            }
        });
    let rules =
        (any::<bool>(), vec(Just("monitoring".to_owned()), 0..2), vec(Just("/etc/rules/*.yaml".to_owned()), 0..2))
            .prop_map(|(enabled, namespaces, file_globs)| RuleDiscovery { enabled, namespaces, file_globs });
    (prometheus, rules).prop_map(|(prometheus, rules)| MetricsCapabilitySpec { prometheus, rules })
}

/// Valid node configs.
pub fn node_config() -> impl Strategy<Value = NodeConfig> {
    let reason = prop::sample::select(vec![
        DisabledReason::CapabilityNotInstalled,
        DisabledReason::UninstallInProgress,
        DisabledReason::UpstreamNotInstalled,
        DisabledReason::UpstreamUnavailable,
    ]);
    (spec(), prop::collection::btree_set(reason, 0..3)).prop_map(|(spec, reasons)| NodeConfig {
        enabled: reasons.is_empty(),
        disabled_reasons: reasons.into_iter().collect(),
        spec,
    })
}

/// Digests.
pub fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 32]>().prop_map(Digest::from_bytes)
}

/// Node statuses (at most one condition per kind).
pub fn node_status() -> impl Strategy<Value = NodeStatus> {
    let kind = prop::sample::select(vec![
        ConditionKind::Applied,
        ConditionKind::PrometheusReady,
        ConditionKind::RemoteWriteHealthy,
        ConditionKind::Synced,
        ConditionKind::RulesSynced,
    ]);
    let status = prop::sample::select(vec![ConditionStatus::True, ConditionStatus::False, ConditionStatus::Unknown]);
    let cond = (kind, status, "[A-Za-z]{0,8}", "\\PC{0,20}").prop_map(|(kind, status, reason, message)| Condition {
        kind,
        status,
        reason,
        message,
    });
    (prop::option::of(digest()), vec(cond, 0..5)).prop_map(|(applied_digest, conds)| {
        let mut s = NodeStatus { applied_digest, conditions: Vec::new() };
        for c in conds {
            s.set(c);
        }
        s
    })
}

/// Valid cluster ids.
pub fn cluster_id() -> impl Strategy<Value = ClusterId> {
    "[A-Za-z0-9][A-Za-z0-9!_.*'()-]{0,40}".prop_filter_map("reserved", |s| ClusterId::new(s).ok())
}

/// Valid clusters.
pub fn cluster() -> impl Strategy<Value = Cluster> {
    let entry = (0u64..1 << 40, prop::option::of(0u64..1 << 40)).prop_map(|(i, d)| CapabilityEntry {
        name: CapabilityName::metrics(),
        installed_at: Timestamp(i),
        deletion_requested_at: d.map(Timestamp),
    });
    let labels: BoxedStrategy<BTreeMap<String, String>> =
        btree_map(prop::sample::select(vec!["env", "team", "region"]).prop_map(str::to_owned), word(), 0..3).boxed();
    (cluster_id(), labels, prop::option::of(entry)).prop_map(|(id, labels, entry)| Cluster {
        id,
        labels,
        capabilities: entry.into_iter().collect(),
    })
}
