//! Every `TryFrom` conversion of a wire message (the gateway's and agent's inputs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use opni_metrics_core::access::{Role, RoleBinding};
use opni_metrics_core::cluster::ClusterConfig;
use opni_metrics_core::node::{Condition, NodeConfig, NodeStatus, SyncReply};
use opni_metrics_core::registry::Cluster;
use opni_metrics_core::spec::{LabelSelector, MetricsCapabilitySpec};
use opni_metrics_proto::{clusters, common, cortexops, node, rbac};
use prost::Message;

fn convert<W: Message + Default, C: TryFrom<W>>(bytes: &[u8]) {
    if let Ok(w) = W::decode(bytes) {
        let _ = C::try_from(w);
    }
}

fuzz_target!(|data: &[u8]| {
    convert::<common::v1::MetricsCapabilitySpec, MetricsCapabilitySpec>(data);
    convert::<common::v1::LabelSelector, LabelSelector>(data);
    convert::<common::v1::NodeConfig, NodeConfig>(data);
    convert::<common::v1::NodeStatus, NodeStatus>(data);
    convert::<common::v1::Condition, Condition>(data);
    convert::<node::v1::SyncResponse, SyncReply>(data);
    convert::<clusters::v1::Cluster, Cluster>(data);
    convert::<cortexops::v1::CapabilityBackendConfigSpec, ClusterConfig>(data);
    convert::<rbac::v1::Role, Role>(data);
    convert::<rbac::v1::RoleBinding, RoleBinding>(data);
});
