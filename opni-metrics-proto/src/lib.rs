//! Wire APIs of opni-metrics: the `.proto` files under `proto/`, the prost messages and tonic
//! clients and servers generated from them, and the conversions between wire messages and
//! [`opni_metrics_core`] types.
//!
//! - One module per protobuf package, `opni.metrics.<area>.v1` → [`node::v1`], [`remote::v1`],
//!   and so on. Generated types stay at the edge: daemons convert them to core types at once.
//! - [`convert`]: `TryFrom<wire> for core` (validating: identifiers, digests, enums, the node
//!   spec) and `From<core> for wire`, with one error type, [`ConvertError`], whose variants name
//!   the offending field by its path.
//! - [`status`]: the one place where errors become [`tonic::Status`].
//! - [`FILE_DESCRIPTOR_SET`]: every file compiled here, for gRPC server reflection.
//!
//! # Example
//! ```
//! use opni_metrics_core::node::{NodeConfig, SyncReply, sync_decision};
//! use opni_metrics_core::spec::MetricsCapabilitySpec;
//! use opni_metrics_proto::{common, node, ConvertError};
//!
//! // Gateway: the core's decision goes on the wire.
//! let desired = NodeConfig::enabled(MetricsCapabilitySpec::default());
//! let response = node::v1::SyncResponse::from(sync_decision(None, &desired));
//!
//! // Agent: back to core types, spec validated and digest checked on the way.
//! let reply = SyncReply::try_from(response.clone())?;
//! assert_eq!(reply, SyncReply::NeedsUpdate { digest: desired.digest(), config: desired.clone() });
//!
//! // A bad field is named by its path.
//! let mut bad = common::v1::NodeConfig::from(desired);
//! if let Some(queue) = bad.spec.as_mut().and_then(|s| s.prometheus.as_mut()).and_then(|p| p.queue.as_mut()) {
//!     queue.min_shards = 0;
//! }
//! let err = NodeConfig::try_from(bad).unwrap_err();
//! assert_eq!(err.field(), "spec.prometheus.queue.minShards");
//! assert_eq!(tonic::Status::from(err).code(), tonic::Code::InvalidArgument);
//! # Ok::<(), ConvertError>(())
//! ```

pub mod convert;
pub mod status;

pub use convert::ConvertError;
pub use status::IntoStatus;

/// The encoded `google.protobuf.FileDescriptorSet` of every `.proto` file of this crate and
/// their imports (well-known types included), for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/opni_metrics_descriptor.bin"));

/// Messages shared by several services: node spec, node config, node status.
pub mod common {
    /// Package `opni.metrics.common.v1`.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]
    pub mod v1 {
        tonic::include_proto!("opni.metrics.common.v1");
    }
}

/// `NodeSync`: agents learn the config the gateway wants them to apply.
pub mod node {
    /// Package `opni.metrics.node.v1`.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]
    pub mod v1 {
        tonic::include_proto!("opni.metrics.node.v1");
    }
}

/// `RemoteWrite`: agents relay remote-write requests and discovered rules.
pub mod remote {
    /// Package `opni.metrics.remote.v1`.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]
    pub mod v1 {
        tonic::include_proto!("opni.metrics.remote.v1");
    }
}

/// `Capability`: install, inspect and uninstall the metrics capability.
pub mod capability {
    /// Package `opni.metrics.capability.v1`.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]
    pub mod v1 {
        tonic::include_proto!("opni.metrics.capability.v1");
    }
}

/// `NodeConfiguration`: the default node spec and per-node overrides.
pub mod nodeconfig {
    /// Package `opni.metrics.nodeconfig.v1`.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]
    pub mod v1 {
        tonic::include_proto!("opni.metrics.nodeconfig.v1");
    }
}

/// `CortexOps`: configure, install and inspect the upstream Cortex.
pub mod cortexops {
    /// Package `opni.metrics.cortexops.v1`.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]
    pub mod v1 {
        tonic::include_proto!("opni.metrics.cortexops.v1");

        /// What secret fields read as; writing it back keeps the stored secret.
        pub use opni_metrics_core::cluster::REDACTED;
    }
}

/// `CortexAdmin`: typed clients of the upstream Cortex's HTTP APIs.
pub mod cortexadmin {
    /// Package `opni.metrics.cortexadmin.v1`.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]
    pub mod v1 {
        tonic::include_proto!("opni.metrics.cortexadmin.v1");
    }
}

/// `Clusters`: the downstream clusters known to the gateway.
pub mod clusters {
    /// Package `opni.metrics.clusters.v1`.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]
    pub mod v1 {
        tonic::include_proto!("opni.metrics.clusters.v1");
    }
}

/// `Bootstrap`: bootstrap tokens and joining new agents.
pub mod bootstrap {
    /// Package `opni.metrics.bootstrap.v1`.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]
    pub mod v1 {
        tonic::include_proto!("opni.metrics.bootstrap.v1");
    }
}

/// `Rbac`: roles, role bindings and API keys of readers.
pub mod rbac {
    /// Package `opni.metrics.rbac.v1`.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]
    pub mod v1 {
        tonic::include_proto!("opni.metrics.rbac.v1");
    }
}
