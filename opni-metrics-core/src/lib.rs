//! Runtime-agnostic domain model of opni-metrics.
//!
//! This crate decides; the daemons and drivers do. It never reads a clock, spawns, sleeps or
//! touches the network: time and I/O come in as inputs or through traits, so everything here is
//! deterministic and testable without a runtime.
//!
//! - [`access`]: roles, role bindings, API keys and which tenants a reader may read.
//! - [`id`]: validated identifiers ([`ClusterId`] is also the Cortex tenant).
//! - [`registry`]: clusters and the capability lifecycle transitions.
//! - [`spec`], [`digest`], [`node`]: the node spec, its canonical digest, the desired-state
//!   function and the gateway's sync decision.
//! - [`sync`]: the agent's sync state machine (inputs in, effects out).
//! - [`uninstall`]: the resumable uninstall task state machine.
//! - [`rules`]: rule groups synced to the upstream ruler, their checks and names.
//! - [`remote_write`]: request checks and the status rules of the forwarding path.
//! - [`store`]: the revisioned key-value [`Store`](store::Store) trait, an in-memory store and
//!   (feature `contract`) the contract suite every store passes.
//! - [`driver`]: the [`NodeDriver`](driver::NodeDriver) and
//!   [`ClusterDriver`](driver::ClusterDriver) traits; [`cluster`]: the CortexOps configuration.
//! - [`backoff`], [`duration`]: small building blocks.
//! - `testing` (feature `testing`): proptest strategies for valid domain values.
//!
//! # Example
//! ```
//! use opni_metrics_core::{id::*, node::*, registry::Cluster, spec::MetricsCapabilitySpec};
//!
//! let mut cluster = Cluster::new(ClusterId::new("downstream-1")?);
//! cluster.install(CapabilityName::metrics(), Timestamp(0))?;
//! let default_spec = MetricsCapabilitySpec::default();
//! let desired = desired_config(
//!     cluster.capability(&CapabilityName::metrics()),
//!     None,
//!     &default_spec,
//!     UpstreamState::Installed,
//! );
//! assert!(desired.enabled);
//! // An agent that has applied nothing yet must update; one with the digest is up to date.
//! assert!(matches!(sync_decision(None, &desired), SyncReply::NeedsUpdate { .. }));
//! assert_eq!(sync_decision(Some(&desired.digest()), &desired), SyncReply::UpToDate);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod access;
pub mod backoff;
pub mod cluster;
pub mod digest;
pub mod driver;
pub mod duration;
pub mod id;
pub mod node;
pub mod promql;
pub mod registry;
pub mod remote_write;
pub mod rules;
pub mod spec;
pub mod store;
pub mod sync;
pub mod uninstall;

pub use id::{CapabilityName, ClusterId, Revision, Timestamp};

#[cfg(feature = "testing")]
pub mod testing;

/// `e` and its sources, joined with `: ` (one line for logs and refusals).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}
