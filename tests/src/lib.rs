//! Workspace-level tests, the test harness and the deterministic simulation.
//!
//! - [`sim::World`] runs a gateway's sync decision and one agent's `AgentSync` machine over a
//!   simulated, lossy network and a node driver that can fail — deterministic, no runtime, no
//!   sleeps. The convergence property tests drive it with random event sequences.
//! - [`pki`] makes certificates with rcgen; [`prometheus`] runs real Prometheus processes;
//!   [`upstream`] is a scriptable remote-write upstream; [`rw`] builds remote-write bodies;
//!   [`http`] is a small client; [`wait`] awaits a condition on a store's state. The daemons'
//!   end-to-end tests use them.
//! - [`kube_fake`] is an in-process fake Kubernetes API server for the controllers' tests (the real
//!   kube client and kube-runtime talk to it).
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
// Test harness: a panic is how a broken fixture reports itself.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod cortex;
pub mod crd_schema;
pub mod disk;
pub mod etcd;
pub mod http;
pub mod kube_fake;
pub mod oidc;
pub mod pki;
pub mod procstat;
pub mod prometheus;
pub mod proxy;
pub mod registry;
pub mod rw;
pub mod sim;
pub mod target;
pub mod upstream;
pub mod wait;
pub mod webdriver;
