//! Workspace-level tests and the deterministic simulation used by them and by the demo.
//!
//! [`sim::World`] runs a gateway's sync decision and one agent's [`AgentSync`] machine over a
//! simulated, lossy network and a node driver that can fail — deterministic, no runtime, no
//! sleeps. The convergence property tests drive it with random event sequences.
//!
//! # Example
//! ```
//! use opni_metrics_tests::sim::World;
//!
//! let mut world = World::new(7);
//! world.connect();
//! world.change_desired(3, true);
//! let report = world.settle().expect("converges");
//! assert!(world.converged());
//! assert!(report.syncs >= 1);
//! ```
//!
//! [`AgentSync`]: opni_metrics_core::sync::AgentSync

pub mod sim;
