//! The opni-metrics gateway as a library.
//!
//! A [`Gateway`] forwards remote write from authenticated agents to a Cortex-compatible
//! upstream under each agent's tenant, owns the desired state of every cluster (capability,
//! node configuration, upstream state) in a [`Store`](opni_metrics_core::store::Store), tells
//! agents to sync when it changes, and serves the management APIs.
//!
//! Build one with [`Gateway::builder`]: settings plus parts, each replaceable — the store,
//! the cluster driver, the upstream forwarder and layers around it, the management
//! authenticator, the metrics registry. Then either [`Gateway::serve`] it on listeners of its
//! own, or mount [`Gateway::agent_services`] and [`Gateway::management_services`] on your
//! own tonic servers. Every task it starts belongs to it: [`Gateway::shutdown`] drains and
//! joins them, dropping it aborts them.
//!
//! Features: `redb` and `etcd` (the stores of `opni-metrics-store`), `kubernetes` (the
//! `MonitoringCluster` driver and controller). See `docs/embedding.md`.
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use opni_metrics_core::store::MemoryStore;
//! use opni_metrics_gateway::{Gateway, GatewaySettings};
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let dir = std::env::temp_dir().join(format!("opni-doc-{}", std::process::id()));
//! let mut settings = GatewaySettings::default();
//! settings.data_dir = dir.clone();
//! let gateway = Gateway::builder(settings)
//!     .store(Arc::new(MemoryStore::default()))
//!     .build()
//!     .await?;
//! // mount these on your own tonic server, or call `serve`
//! let _agent_facing = gateway.agent_services();
//! let _management = gateway.management_services();
//! assert!(gateway.admin_token().is_some());
//! gateway.shutdown().await;
//! # std::fs::remove_dir_all(dir).ok();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod admission;
pub mod auth;
mod bootstrap;
pub mod budget;
pub mod ca;
mod capability;
pub mod cluster_driver;
mod clusters;
pub mod console;
mod cortex_api;
pub mod cortexadmin;
mod cortexops;
mod errors;
pub mod forward;
mod gateway;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod metrics;
mod nodeconfig;
pub mod query;
mod rbac;
pub mod readers;
mod remote_write;
pub mod rule_sync;
pub mod settings;
pub mod state;
pub mod sync;
mod uninstall;
mod upstream;

pub use gateway::{Addresses, Campaign, Gateway, GatewayBuilder, Listeners, StartError};
pub use settings::{GatewaySettings, Listen, UpstreamSettings};

/// The stores of `opni-metrics-store` (features `redb`, `etcd`).
pub use opni_metrics_store as store;
