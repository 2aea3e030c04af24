//! The opni-metrics agent as a library.
//!
//! An [`Agent`] receives Prometheus remote write and relays each request to the gateway as one
//! gRPC call over mutual TLS, answering only once the gateway and its upstream answered
//! ([`Relay`], a `tower::Service<http::Request<B>>`). It joins the gateway with a bootstrap
//! token, runs the sync loop (core's state machine) and keeps the local Prometheus as the
//! gateway wants through a node driver: the process driver, the Kubernetes driver (feature
//! `kubernetes`), or the embedder's own [`NodeDriver`](opni_metrics_core::driver::NodeDriver).
//!
//! Build one with [`Agent::builder`]; then [`Agent::serve`] it on a listener, or mount
//! [`Agent::relay`] on your own HTTP server and call [`Agent::start_sync`]. Every task it
//! starts belongs to it: [`Agent::shutdown`] drains and joins them, dropping it aborts them.
//! The agent never depends on the gateway crate.
//!
//! # Example
//! ```
//! use opni_metrics_agent::{Agent, AgentSettings, IdentitySource, JoinSettings};
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let mut settings = AgentSettings::default();
//! settings.data_dir = std::env::temp_dir().join(format!("opni-agent-doc-{}", std::process::id()));
//! // no identity yet and no token to join with: a clear error, nothing left running
//! settings.identity = IdentitySource::Join(JoinSettings::default());
//! let err = Agent::builder(settings).build().await.unwrap_err();
//! assert!(opni_metrics_core::error_chain(&err).contains("no bootstrap token"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod agent;
pub mod identity;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod metrics;
pub mod process_driver;
pub mod relay;
pub mod rules;
pub mod settings;
pub mod sync_loop;

pub use agent::{Agent, AgentBuilder, NoDriver, PUSH_PATHS, ProcessOptions, StartError};
pub use relay::{Relay, RelaySettings};
pub use rules::RuleSyncSettings;
pub use settings::{AgentSettings, IdentitySource, JoinSettings};
