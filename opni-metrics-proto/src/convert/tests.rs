//! Bad input is refused with the error that names the field.

use opni_metrics_core::digest::Digest;
use opni_metrics_core::duration::PromDuration;
use opni_metrics_core::id::Timestamp;
use opni_metrics_core::node::{
    Condition, ConditionKind, ConditionStatus, DisabledReason, NodeConfig, NodeStatus, SyncReply, sync_decision,
};
use opni_metrics_core::registry::{CapabilityEntry, Cluster};
use opni_metrics_core::spec::MetricsCapabilitySpec;

use super::*;
use crate::clusters::v1 as pb_clusters;
use crate::common::v1 as pb;
use crate::node::v1 as pb_node;

fn wire_config() -> pb::NodeConfig {
    NodeConfig::enabled(MetricsCapabilitySpec::default()).into()
}

fn prometheus(c: &mut pb::NodeConfig) -> &mut pb::PrometheusSpec {
    c.spec.as_mut().and_then(|s| s.prometheus.as_mut()).unwrap()
}

fn queue(c: &mut pb::NodeConfig) -> &mut pb::QueueConfig {
    prometheus(c).queue.as_mut().unwrap()
}

fn field_of<T: std::fmt::Debug>(r: Result<T, ConvertError>) -> (String, ConvertError) {
    let e = r.unwrap_err();
    (e.field().to_owned(), e)
}

mod cortexops;
mod registry;
mod time;
mod uninstall;

#[test]
fn paths_join_with_dots_and_brackets() {
    assert_eq!(join("spec", "prometheus.queue"), "spec.prometheus.queue");
    assert_eq!(join("conditions", "[0].kind"), "conditions[0].kind");
    assert_eq!(join("", "kind"), "kind");
    assert_eq!(join("config", ""), "config");
    let e = ConvertError::missing("minBackoff").under("queue").under("prometheus");
    assert_eq!(e.field(), "prometheus.queue.minBackoff");
    assert_eq!(e.to_string(), "prometheus.queue.minBackoff: missing");
}

#[test]
fn unspecified_and_unknown_enums_are_refused() {
    let status = pb::NodeStatus {
        applied_digest: String::new(),
        conditions: vec![
            pb::Condition {
                kind: pb::ConditionKind::Applied.into(),
                status: pb::ConditionStatus::True.into(),
                ..Default::default()
            },
            pb::Condition { kind: pb::ConditionKind::Synced.into(), status: 0, ..Default::default() },
        ],
    };
    let e = NodeStatus::try_from(status.clone()).unwrap_err();
    assert_eq!(e, ConvertError::UnspecifiedEnum { field: "conditions[1].status".into() });
    assert_eq!(e.to_string(), "conditions[1].status: unspecified");

    let mut unknown = status;
    unknown.conditions[0].kind = 99;
    assert_eq!(
        NodeStatus::try_from(unknown).unwrap_err(),
        ConvertError::UnknownEnum { field: "conditions[0].kind".into(), value: 99 }
    );

    let mut config = wire_config();
    config.disabled_reasons = vec![pb::DisabledReason::UpstreamNotInstalled.into(), 0];
    assert_eq!(
        NodeConfig::try_from(config).unwrap_err(),
        ConvertError::UnspecifiedEnum { field: "disabledReasons[1]".into() }
    );

    let mut config = wire_config();
    prometheus(&mut config).pod_monitor_selector = Some(pb::LabelSelector {
        match_labels: Default::default(),
        match_expressions: vec![pb::LabelSelectorRequirement { key: "app".into(), operator: 0, values: vec![] }],
    });
    let (field, e) = field_of(NodeConfig::try_from(config));
    assert_eq!(field, "spec.prometheus.podMonitorSelector.matchExpressions[0].operator");
    assert!(matches!(e, ConvertError::UnspecifiedEnum { .. }));

    let response = pb_node::SyncResponse { result: 0, config: None, digest: String::new() };
    assert_eq!(SyncReply::try_from(response).unwrap_err(), ConvertError::UnspecifiedEnum { field: "result".into() });
}

#[test]
fn bad_digests_are_refused() {
    let status = pb::NodeStatus { applied_digest: "abc".into(), conditions: vec![] };
    let e = NodeStatus::try_from(status.clone()).unwrap_err();
    assert!(matches!(&e, ConvertError::InvalidDigest { field, .. } if field == "appliedDigest"), "{e}");

    let request = pb_node::SyncRequest { current_digest: "A".repeat(64), status: Some(status) };
    let (field, _) = field_of(request.clone().into_core());
    assert_eq!(field, "currentDigest");
    let request = pb_node::SyncRequest { current_digest: String::new(), ..request };
    let (field, _) = field_of(request.into_core());
    assert_eq!(field, "status.appliedDigest");

    assert_eq!(optional_digest("d", "").unwrap(), None);
    assert_eq!(digest("d", ""), Err(ConvertError::missing("d")));
    let d = Digest::from_bytes([7; 32]);
    assert_eq!(optional_digest("d", &digest_string(Some(&d))).unwrap(), Some(d));
    assert_eq!(digest_string(None), "");
}

#[test]
fn sync_request_parts_round_trip() {
    let mut status = NodeStatus { applied_digest: Some(Digest::from_bytes([1; 32])), conditions: vec![] };
    status.set(Condition::new(ConditionKind::Applied, ConditionStatus::True));
    let current = Digest::from_bytes([2; 32]);
    let request = pb_node::SyncRequest::new(Some(&current), status.clone());
    assert_eq!(request.into_core().unwrap(), (Some(current), status));
    let empty = pb_node::SyncRequest { current_digest: String::new(), status: None };
    assert_eq!(empty.into_core().unwrap(), (None, NodeStatus::default()));
}

#[test]
fn duplicate_condition_kinds_are_refused() {
    let c = |status: ConditionStatus| pb::Condition::from(Condition::new(ConditionKind::Synced, status));
    let status = pb::NodeStatus {
        applied_digest: String::new(),
        conditions: vec![c(ConditionStatus::True), c(ConditionStatus::False)],
    };
    assert_eq!(
        NodeStatus::try_from(status).unwrap_err(),
        ConvertError::Duplicate { field: "conditions[1].kind".into(), value: "Synced".into() }
    );
}

#[test]
fn invalid_specs_are_refused_with_the_spec_path() {
    let mut config = wire_config();
    queue(&mut config).min_shards = 0;
    let e = NodeConfig::try_from(config).unwrap_err();
    assert_eq!(
        e,
        ConvertError::InvalidSpec {
            field: "spec.prometheus.queue.minShards".into(),
            reason: "must be at least 1".into()
        }
    );
    assert_eq!(e.to_string(), "spec.prometheus.queue.minShards: must be at least 1");

    let mut config = wire_config();
    prometheus(&mut config).scrape_interval = Some(wire_duration(PromDuration::from_millis(500)));
    let (field, _) = field_of(NodeConfig::try_from(config));
    assert_eq!(field, "spec.prometheus.scrapeInterval");

    let mut spec = pb::MetricsCapabilitySpec::from(MetricsCapabilitySpec::default());
    if let Some(p) = spec.prometheus.as_mut() {
        p.scrape_jobs = vec![
            pb::ScrapeJob { name: "a".into(), targets: vec!["localhost:9100".into()], ..Default::default() },
            pb::ScrapeJob { name: "b".into(), targets: vec!["nohost".into()], ..Default::default() },
        ];
    }
    let (field, e) = field_of(MetricsCapabilitySpec::try_from(spec));
    assert_eq!(field, "prometheus.scrapeJobs[1].targets[0]");
    assert!(matches!(e, ConvertError::InvalidSpec { .. }));
}

#[test]
fn required_messages_are_named_when_missing() {
    let mut config = wire_config();
    config.spec = None;
    assert_eq!(NodeConfig::try_from(config).unwrap_err(), ConvertError::missing("spec"));

    let mut config = wire_config();
    prometheus(&mut config).queue = None;
    assert_eq!(NodeConfig::try_from(config).unwrap_err(), ConvertError::missing("spec.prometheus.queue"));

    let mut config = wire_config();
    queue(&mut config).max_backoff = None;
    assert_eq!(NodeConfig::try_from(config).unwrap_err(), ConvertError::missing("spec.prometheus.queue.maxBackoff"));

    let mut config = wire_config();
    if let Some(s) = config.spec.as_mut() {
        s.rules = None;
    }
    assert_eq!(NodeConfig::try_from(config).unwrap_err(), ConvertError::missing("spec.rules"));

    // Unset selectors and resources are empty ones.
    let mut config = wire_config();
    let p = prometheus(&mut config);
    p.service_monitor_selector = None;
    p.resources = None;
    assert_eq!(NodeConfig::try_from(config).unwrap(), NodeConfig::enabled(MetricsCapabilitySpec::default()));
}

#[test]
fn sync_responses_are_checked() {
    let config = NodeConfig {
        enabled: false,
        disabled_reasons: vec![DisabledReason::CapabilityNotInstalled],
        spec: MetricsCapabilitySpec::default(),
    };
    let good = pb_node::SyncResponse::from(sync_decision(None, &config));
    assert_eq!(
        SyncReply::try_from(good.clone()).unwrap(),
        SyncReply::NeedsUpdate { digest: config.digest(), config: config.clone() }
    );

    let other = Digest::from_bytes([9; 32]);
    let mismatch = pb_node::SyncResponse { digest: other.to_string(), ..good.clone() };
    assert_eq!(
        SyncReply::try_from(mismatch).unwrap_err(),
        ConvertError::DigestMismatch { field: "digest".into(), sent: other, computed: config.digest() }
    );

    let no_config = pb_node::SyncResponse { config: None, ..good.clone() };
    assert_eq!(SyncReply::try_from(no_config).unwrap_err(), ConvertError::missing("config"));
    let no_digest = pb_node::SyncResponse { digest: String::new(), ..good.clone() };
    assert_eq!(SyncReply::try_from(no_digest).unwrap_err(), ConvertError::missing("digest"));

    let mut bad_spec = good.clone();
    if let Some(q) = bad_spec
        .config
        .as_mut()
        .and_then(|c| c.spec.as_mut())
        .and_then(|s| s.prometheus.as_mut())
        .and_then(|p| p.queue.as_mut())
    {
        q.max_shards = 0;
    }
    let (field, _) = field_of(SyncReply::try_from(bad_spec));
    assert_eq!(field, "config.spec.prometheus.queue.maxShards");

    let up_to_date = pb_node::SyncResponse::from(SyncReply::UpToDate);
    assert_eq!(SyncReply::try_from(up_to_date.clone()).unwrap(), SyncReply::UpToDate);
    let with_config = pb_node::SyncResponse { config: good.config.clone(), ..up_to_date.clone() };
    let e = SyncReply::try_from(with_config).unwrap_err();
    assert_eq!(e.to_string(), "config: must be unset when result is UP_TO_DATE");
    let with_digest = pb_node::SyncResponse { digest: good.digest, ..up_to_date };
    assert!(
        matches!(SyncReply::try_from(with_digest), Err(ConvertError::Unexpected { ref field, .. }) if field == "digest")
    );
}

#[test]
fn descriptor_set_holds_every_service() {
    use prost::Message as _;
    let fds = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).unwrap();
    let services: Vec<String> =
        fds.file.iter().flat_map(|f| f.service.iter().map(move |s| format!("{}.{}", f.package(), s.name()))).collect();
    for want in [
        "opni.metrics.node.v1.NodeSync",
        "opni.metrics.remote.v1.RemoteWrite",
        "opni.metrics.capability.v1.Capability",
        "opni.metrics.nodeconfig.v1.NodeConfiguration",
        "opni.metrics.cortexops.v1.CortexOps",
        "opni.metrics.cortexadmin.v1.CortexAdmin",
        "opni.metrics.clusters.v1.Clusters",
        "opni.metrics.bootstrap.v1.Bootstrap",
    ] {
        assert!(services.iter().any(|s| s == want), "{want} missing from {services:?}");
    }
    assert!(fds.file.iter().any(|f| f.name() == "google/protobuf/timestamp.proto"), "imports are included");
}

#[test]
fn optional_revisions_become_preconditions() {
    use opni_metrics_core::id::Revision;
    use opni_metrics_core::store::Precondition;
    assert_eq!(precondition(None), Precondition::None);
    assert_eq!(precondition(Some(0)), Precondition::Absent);
    assert_eq!(precondition(Some(7)), Precondition::Revision(Revision(7)));
}
