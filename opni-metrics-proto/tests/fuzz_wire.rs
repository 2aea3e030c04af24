//! Every `TryFrom` conversion of a wire message, fed whatever arbitrary bytes decode to: it
//! converts or names what is wrong, and never panics. Runs on stable in CI (a bounded number of
//! cases); `fuzz/` holds cargo-fuzz targets for longer runs.
#![allow(clippy::unwrap_used)]

use opni_metrics_core::access::{Role, RoleBinding};
use opni_metrics_core::cluster::ClusterConfig;
use opni_metrics_core::node::{Condition, NodeConfig, NodeStatus, SyncReply};
use opni_metrics_core::registry::Cluster;
use opni_metrics_core::spec::{LabelSelector, MetricsCapabilitySpec};
use opni_metrics_proto::{clusters, common, cortexops, node, rbac};
use proptest::prelude::*;
use prost::Message;

/// Decodes `bytes` as `W` and converts it; the conversion's outcome is irrelevant, only that
/// it returns.
fn convert<W, C>(bytes: &[u8]) -> bool
where
    W: Message + Default,
    C: TryFrom<W>,
{
    match W::decode(bytes) {
        Ok(w) => {
            let _ = C::try_from(w);
            true
        }
        Err(_) => false,
    }
}

fn every_conversion(bytes: &[u8]) {
    convert::<common::v1::MetricsCapabilitySpec, MetricsCapabilitySpec>(bytes);
    convert::<common::v1::LabelSelector, LabelSelector>(bytes);
    convert::<common::v1::NodeConfig, NodeConfig>(bytes);
    convert::<common::v1::NodeStatus, NodeStatus>(bytes);
    convert::<common::v1::Condition, Condition>(bytes);
    convert::<node::v1::SyncResponse, SyncReply>(bytes);
    convert::<clusters::v1::Cluster, Cluster>(bytes);
    convert::<cortexops::v1::CapabilityBackendConfigSpec, ClusterConfig>(bytes);
    convert::<rbac::v1::Role, Role>(bytes);
    convert::<rbac::v1::RoleBinding, RoleBinding>(bytes);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_a_conversion(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        every_conversion(&bytes);
    }
}

/// The committed corpus (`fuzz/corpus/wire/`), also replayed here so a crash found by a long
/// fuzzing run stays a regression test.
#[test]
fn the_committed_corpus_replays() {
    let dir = &format!(
        "{}/../fuzz/corpus/wire",
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned())
    );
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        every_conversion(&std::fs::read(entry.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n > 0, "the corpus is empty");
}
