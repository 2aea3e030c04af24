//! Round trips core → wire → core are exact, for every valid value; wire → core never panics
//! and, where it succeeds, wire → core → wire is exact too.

use opni_metrics_core::cluster::ClusterConfig;
use opni_metrics_core::node::{NodeConfig, NodeStatus, SyncReply, sync_decision};
use opni_metrics_core::registry::Cluster;
use opni_metrics_core::spec::MetricsCapabilitySpec;
use opni_metrics_core::testing as core_strategies;
use opni_metrics_proto::{clusters, common, cortexops, node};
use proptest::prelude::*;

#[path = "round_trip/strategies.rs"]
pub mod strategies;

proptest! {
    // The default (256 cases) unless PROPTEST_CASES asks for more; never fewer.
    #![proptest_config(ProptestConfig { cases: ProptestConfig::default().cases.max(256), ..ProptestConfig::default() })]

    #[test]
    fn generated_specs_are_valid(spec in strategies::spec()) {
        prop_assert_eq!(spec.validate(), Ok(()));
    }

    #[test]
    fn spec_round_trips(spec in strategies::spec()) {
        let wire = common::v1::MetricsCapabilitySpec::from(spec.clone());
        prop_assert_eq!(MetricsCapabilitySpec::try_from(wire).unwrap(), spec);
    }

    #[test]
    fn node_config_round_trips_with_its_digest(config in strategies::node_config()) {
        let wire = common::v1::NodeConfig::from(config.clone());
        let back = NodeConfig::try_from(wire).unwrap();
        prop_assert_eq!(back.digest(), config.digest());
        prop_assert_eq!(back, config);
    }

    #[test]
    fn sync_reply_round_trips(config in strategies::node_config(), up_to_date in any::<bool>()) {
        let current = config.digest();
        let reply = sync_decision(up_to_date.then_some(&current), &config);
        prop_assert_eq!(reply.clone() == SyncReply::UpToDate, up_to_date);
        let wire = node::v1::SyncResponse::from(reply.clone());
        prop_assert_eq!(SyncReply::try_from(wire).unwrap(), reply);
    }

    #[test]
    fn node_status_round_trips(status in strategies::node_status()) {
        let wire = common::v1::NodeStatus::from(status.clone());
        prop_assert_eq!(NodeStatus::try_from(wire).unwrap(), status.clone());
        let current = status.applied_digest;
        let request = node::v1::SyncRequest::new(current.as_ref(), status.clone());
        prop_assert_eq!(request.into_core().unwrap(), (current, status));
    }

    #[test]
    fn cluster_round_trips(cluster in strategies::cluster()) {
        let wire = clusters::v1::Cluster::from(cluster.clone());
        prop_assert_eq!(Cluster::try_from(wire).unwrap(), cluster);
    }

    #[test]
    fn cluster_config_round_trips(config in strategies::cluster_config()) {
        prop_assert_eq!(config.validate(), Ok(()));
        let wire = cortexops::v1::CapabilityBackendConfigSpec::from(config.clone());
        prop_assert_eq!(ClusterConfig::try_from(wire).unwrap(), config.clone());
        let redacted = cortexops::v1::CapabilityBackendConfigSpec::from(config.redacted());
        let mut written = ClusterConfig::try_from(redacted).unwrap();
        written.unredact_from(&config);
        prop_assert_eq!(written, config);
    }

    #[test]
    fn core_generated_values_round_trip(
        spec in core_strategies::spec(),
        config in core_strategies::node_config(),
        status in core_strategies::node_status(),
        cluster in core_strategies::cluster(),
    ) {
        prop_assert_eq!(MetricsCapabilitySpec::try_from(common::v1::MetricsCapabilitySpec::from(spec.clone())).unwrap(), spec);
        let reply = sync_decision(None, &config);
        prop_assert_eq!(SyncReply::try_from(node::v1::SyncResponse::from(reply.clone())).unwrap(), reply);
        prop_assert_eq!(NodeStatus::try_from(common::v1::NodeStatus::from(status.clone())).unwrap(), status);
        prop_assert_eq!(Cluster::try_from(clusters::v1::Cluster::from(cluster.clone())).unwrap(), cluster);
    }

    #[test]
    fn arbitrary_wire_status_converts_or_names_a_field(
        digest in prop_oneof![Just(String::new()), "[0-9a-f]{64}", "\\PC{0,70}"],
        raw in proptest::collection::vec((-1i32..8, -1i32..6, "\\PC{0,8}"), 0..6),
    ) {
        let wire = common::v1::NodeStatus {
            applied_digest: digest,
            conditions: raw
                .into_iter()
                .map(|(kind, status, reason)| common::v1::Condition { kind, status, reason, message: String::new() })
                .collect(),
        };
        match NodeStatus::try_from(wire.clone()) {
            Ok(status) => prop_assert_eq!(common::v1::NodeStatus::from(status), wire),
            Err(e) => prop_assert!(
                e.field() == "appliedDigest" || e.field().starts_with("conditions["),
                "unexpected field in {}", e
            ),
        }
    }
}
