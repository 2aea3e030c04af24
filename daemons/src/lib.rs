//! The opni-metrics daemons' shared wiring (skeleton; see the daemons and data-path issues).
//!
//! This crate will hold the `opni-metrics-gateway`, `opni-metrics-agent` and `opni-metrics`
//! binaries and their transport code: the HTTP remote-write endpoint, gRPC servers and clients,
//! TLS, the embedded and etcd stores and the process node driver. Until then the runnable demo
//! is the protocol simulation: `cargo run -p opni-metrics-tests --example converge`.
//!
//! # Example
//! ```
//! assert_eq!(opni_metrics_daemons::EXIT_CONFIG, 64);
//! ```

pub mod agent;
pub mod cli;
pub mod daemon;
pub mod forward;
pub mod gateway;
pub mod grpc;
pub mod http_server;
pub mod kube_client;
pub mod metrics;
pub mod store;
pub mod tls;

/// Exit code of a daemon refusing its configuration (`EX_USAGE`), before binding any port.
pub const EXIT_CONFIG: i32 = 64;
