//! Strategies generating valid core values, from small vocabularies so that keys collide and
//! lists hold duplicates often. `opni_metrics_core::testing` is a second, independent generator.

use std::collections::BTreeMap;

use opni_metrics_core::cluster::{ClusterConfig, DeploymentMode, Grafana, Storage, Workload};
use opni_metrics_core::digest::Digest;
use opni_metrics_core::duration::PromDuration;
use opni_metrics_core::id::{CapabilityName, ClusterId, Timestamp};
use opni_metrics_core::node::{Condition, ConditionKind, ConditionStatus, DisabledReason, NodeConfig, NodeStatus};
use opni_metrics_core::registry::{CapabilityEntry, Cluster};
use opni_metrics_core::spec::{
    LabelSelector, LabelSelectorRequirement, MetricsCapabilitySpec, PrometheusSpec, QueueConfig, ResourceList,
    Resources, RuleDiscovery, ScrapeJob, SelectorOperator,
};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};

const NAMESPACES: &[&str] = &["default", "kube-system", "monitoring", "team-a", "ns1"];
const LABEL_KEYS: &[&str] = &["app", "team", "example.com/tier", "app.kubernetes.io/name", "k8s-app"];
const LABEL_VALUES: &[&str] = &["", "web", "v1.2", "x-y_z", "Prod"];
const QUANTITIES: &[&str] = &["100m", "1", "0.5", "2Gi", "512Mi", "1e3"];
const JOB_NAMES: &[&str] = &["node", "app", "kube_state:metrics", "job-1", "a.b"];
const SCRAPE_TARGETS: &[&str] = &["localhost:9100", "10.0.0.1:8080", "[::1]:9090", "node-exporter.monitoring.svc:9100"];
const PATHS: &[&str] = &["/metrics", "/federate", "/api/v1/metrics"];
const GLOBS: &[&str] = &["/etc/prometheus/rules/*.yaml", "rules/**/*.yml", "alerts.yml"];
const IMAGES: &[&str] = &["prom/prometheus:v3.1.0", "quay.io/prometheus/prometheus@sha256:abc", "registry:5000/p:1"];

fn strings(vocab: &'static [&'static str], max: usize) -> impl Strategy<Value = Vec<String>> {
    vec(select(vocab).prop_map(str::to_owned), 0..=max)
}

fn millis(range: std::ops::RangeInclusive<u64>) -> impl Strategy<Value = PromDuration> {
    range.prop_map(PromDuration::from_millis)
}

/// A valid label selector.
pub fn label_selector() -> impl Strategy<Value = LabelSelector> {
    let requirement =
        (select(LABEL_KEYS), any::<u8>(), vec(select(LABEL_VALUES), 1..=3)).prop_map(|(key, op, values)| {
            let operator = match op % 4 {
                0 => SelectorOperator::In,
                1 => SelectorOperator::NotIn,
                2 => SelectorOperator::Exists,
                _ => SelectorOperator::DoesNotExist,
            };
            let values = match operator {
                SelectorOperator::In | SelectorOperator::NotIn => values.into_iter().map(str::to_owned).collect(),
                SelectorOperator::Exists | SelectorOperator::DoesNotExist => Vec::new(),
            };
            LabelSelectorRequirement { key: key.to_owned(), operator, values }
        });
    (
        btree_map(select(LABEL_KEYS).prop_map(str::to_owned), select(LABEL_VALUES).prop_map(str::to_owned), 0..=3),
        vec(requirement, 0..=3),
    )
        .prop_map(|(match_labels, match_expressions)| LabelSelector { match_labels, match_expressions })
}

fn resource_list() -> impl Strategy<Value = ResourceList> {
    let q = || proptest::option::of(select(QUANTITIES).prop_map(str::to_owned));
    (q(), q()).prop_map(|(cpu, memory)| ResourceList { cpu, memory })
}

/// Valid queue settings: `min_shards <= max_shards`, `capacity >= max_samples_per_send`,
/// `min_backoff <= max_backoff`, everything above zero.
pub fn queue_config() -> impl Strategy<Value = QueueConfig> {
    (
        1u32..=100,
        0u32..=1_000,
        1u32..=100_000,
        0u32..=100_000,
        1u64..=60_000,
        1u64..=10_000,
        0u64..=60_000,
        any::<bool>(),
    )
        .prop_map(
            |(min_shards, extra_shards, mps, extra_capacity, deadline, min_backoff, extra_backoff, retry)| {
                QueueConfig {
                    capacity: mps + extra_capacity,
                    min_shards,
                    max_shards: min_shards + extra_shards,
                    max_samples_per_send: mps,
                    batch_send_deadline: PromDuration::from_millis(deadline),
                    min_backoff: PromDuration::from_millis(min_backoff),
                    max_backoff: PromDuration::from_millis(min_backoff + extra_backoff),
                    retry_on_rate_limit: retry,
                }
            },
        )
}

/// Scrape jobs with unique names, in any order.
pub fn scrape_jobs() -> impl Strategy<Value = Vec<ScrapeJob>> {
    subsequence(JOB_NAMES, 0..=JOB_NAMES.len()).prop_shuffle().prop_flat_map(|names| {
        let n = names.len();
        let bodies = vec(
            (
                vec(select(SCRAPE_TARGETS).prop_map(str::to_owned), 1..=3),
                proptest::option::of(select(PATHS).prop_map(str::to_owned)),
                proptest::option::of(millis(1_000..=3_600_000)),
            ),
            n,
        );
        bodies.prop_map(move |bodies| {
            names
                .iter()
                .zip(bodies)
                .map(|(name, (targets, metrics_path, scrape_interval))| ScrapeJob {
                    name: (*name).to_owned(),
                    targets,
                    metrics_path,
                    scrape_interval,
                })
                .collect()
        })
    })
}

/// A valid node spec.
pub fn spec() -> impl Strategy<Value = MetricsCapabilitySpec> {
    let prometheus = (
        proptest::option::of(select(IMAGES).prop_map(str::to_owned)),
        millis(1_000..=3_600_000),
        (label_selector(), label_selector(), label_selector()),
        strings(NAMESPACES, 4),
        (resource_list(), resource_list()),
        queue_config(),
        scrape_jobs(),
    )
        .prop_map(|(image, scrape_interval, selectors, namespaces, (requests, limits), queue, scrape_jobs)| {
            PrometheusSpec {
                image,
                scrape_interval,
                service_monitor_selector: selectors.0,
                pod_monitor_selector: selectors.1,
                monitor_namespace_selector: selectors.2,
                namespaces,
                resources: Resources { requests, limits },
                queue,
                scrape_jobs,
            }
        });
    let rules = (any::<bool>(), strings(NAMESPACES, 3), strings(GLOBS, 3))
        .prop_map(|(enabled, namespaces, file_globs)| RuleDiscovery { enabled, namespaces, file_globs });
    (prometheus, rules).prop_map(|(prometheus, rules)| MetricsCapabilitySpec { prometheus, rules })
}

/// A node config with a valid spec (any combination of disabled reasons).
pub fn node_config() -> impl Strategy<Value = NodeConfig> {
    const REASONS: &[DisabledReason] = &[
        DisabledReason::CapabilityNotInstalled,
        DisabledReason::UninstallInProgress,
        DisabledReason::UpstreamNotInstalled,
    ];
    (any::<bool>(), subsequence(REASONS, 0..=REASONS.len()), spec())
        .prop_map(|(enabled, disabled_reasons, spec)| NodeConfig { enabled, disabled_reasons, spec })
}

/// Any digest.
pub fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 32]>().prop_map(Digest::from_bytes)
}

/// A node status with at most one condition per kind, in any order.
pub fn node_status() -> impl Strategy<Value = NodeStatus> {
    const KINDS: &[ConditionKind] = &[
        ConditionKind::Applied,
        ConditionKind::PrometheusReady,
        ConditionKind::RemoteWriteHealthy,
        ConditionKind::Synced,
        ConditionKind::RulesSynced,
    ];
    let status = select(&[ConditionStatus::True, ConditionStatus::False, ConditionStatus::Unknown][..]);
    let condition = move |kind| {
        (status.clone(), "[A-Za-z]{0,12}", "\\PC{0,40}").prop_map(move |(status, reason, message)| Condition {
            kind,
            status,
            reason,
            message,
        })
    };
    let conditions = subsequence(KINDS, 0..=KINDS.len())
        .prop_shuffle()
        .prop_flat_map(move |kinds| kinds.into_iter().map(&condition).collect::<Vec<_>>());
    (proptest::option::of(digest()), conditions)
        .prop_map(|(applied_digest, conditions)| NodeStatus { applied_digest, conditions })
}

/// A valid cluster id.
pub fn cluster_id() -> impl Strategy<Value = ClusterId> {
    "[A-Za-z0-9!_.*'()-]{1,40}".prop_filter_map("reserved", |s| ClusterId::new(s).ok())
}

/// A cluster with valid labels and at most one entry per capability.
pub fn cluster() -> impl Strategy<Value = Cluster> {
    const NAMES: &[&str] = &["metrics", "logs", "traces-2"];
    let entry = |name: &str| {
        let name = CapabilityName::new(name).unwrap_or_else(|_| CapabilityName::metrics());
        (any::<u64>(), proptest::option::of(any::<u64>())).prop_map(move |(installed, deleted)| CapabilityEntry {
            name: name.clone(),
            installed_at: Timestamp(installed),
            deletion_requested_at: deleted.map(Timestamp),
        })
    };
    let capabilities = subsequence(NAMES, 0..=NAMES.len())
        .prop_shuffle()
        .prop_flat_map(move |names| names.into_iter().map(entry).collect::<Vec<_>>());
    let labels = prop_oneof![
        Just(BTreeMap::new()),
        btree_map("[a-z0-9]([a-z0-9._-]{0,10}[a-z0-9])?", "[A-Za-z0-9._-]{0,20}", 1..=6),
    ];
    (cluster_id(), labels, capabilities).prop_map(|(id, labels, capabilities)| Cluster { id, labels, capabilities })
}

/// Valid storage settings for `mode` (filesystem only for all-in-one).
pub fn storage(mode: DeploymentMode) -> impl Strategy<Value = Storage> {
    const WORDS: &[&str] = &["a", "blocks", "s3.local:9000", "***REDACTED***", "key id"];
    let w = || select(WORDS).prop_map(str::to_owned);
    let object = prop_oneof![
        (w(), w(), prop_oneof![Just(String::new()), w()], w(), w()).prop_map(
            |(endpoint, bucket, region, access_key_id, secret_access_key)| Storage::S3 {
                endpoint,
                bucket,
                region,
                access_key_id,
                secret_access_key
            }
        ),
        (w(), w()).prop_map(|(bucket, service_account)| Storage::Gcs { bucket, service_account }),
        (w(), w(), w()).prop_map(|(account_name, account_key, container)| Storage::Azure {
            account_name,
            account_key,
            container
        }),
        (w(), w(), w(), w()).prop_map(|(auth_url, username, password, container)| Storage::Swift {
            auth_url,
            username,
            password,
            container
        }),
    ];
    let filesystem =
        select(&["/data", "/var/lib/cortex"][..]).prop_map(|d| Storage::Filesystem { directory: d.to_owned() });
    match mode {
        DeploymentMode::AllInOne => prop_oneof![filesystem, object].boxed(),
        DeploymentMode::HighlyAvailable => object.boxed(),
    }
}

/// A valid CortexOps configuration.
pub fn cluster_config() -> impl Strategy<Value = ClusterConfig> {
    let mode = prop_oneof![Just(DeploymentMode::AllInOne), Just(DeploymentMode::HighlyAvailable)];
    let workload = (
        proptest::option::of(0u32..=100),
        vec(select(&["-a=1", "--flag", "-ingester.max-series-per-user=0"][..]), 0..=2),
    )
        .prop_map(|(replicas, args)| Workload { replicas, extra_args: args.into_iter().map(str::to_owned).collect() });
    let grafana = (
        any::<bool>(),
        proptest::option::of(select(&["11.3.0", "latest"][..]).prop_map(str::to_owned)),
        proptest::option::of(select(&["grafana.example.com", "g"][..]).prop_map(str::to_owned)),
    )
        .prop_map(|(enabled, version, hostname)| Grafana { enabled, version, hostname });
    let retention = prop_oneof![Just(0u64), 7_200_000u64..=400 * 86_400_000].prop_map(PromDuration::from_millis);
    (
        mode,
        any::<bool>(),
        retention,
        btree_map(select(&opni_metrics_core::cluster::TARGETS[..]).prop_map(str::to_owned), workload, 0..=4),
        grafana,
    )
        .prop_flat_map(|(mode, enabled, retention, workloads, grafana)| {
            storage(mode).prop_map(move |storage| ClusterConfig {
                enabled,
                mode,
                storage,
                retention,
                workloads: workloads.clone(),
                grafana: grafana.clone(),
            })
        })
}
