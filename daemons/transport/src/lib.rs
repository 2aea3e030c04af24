//! Transport for the opni-metrics gateway and agent: everything between a socket and a service.
//!
//! - [`tls`]: rustls configurations (TLS 1.3, mutual, ring only) from PEM files, reloaded when
//!   the files change; the cluster identity in an agent certificate's URI SAN.
//! - [`grpc`]: the mutual-TLS listener yielding verified connections that carry a
//!   [`grpc::PeerIdentity`] into every request, and tonic's client channel.
//! - [`channel`]: the agent's channel to the gateway, calls sent straight into the HTTP/2
//!   connection.
//! - [`http`]: a small HTTP/1.1 + h2c server for any `tower::Service`, with header timeout and
//!   graceful drain.
//! - [`ops`]: `/healthz`, `/readyz` and `/metrics`.
//! - [`metrics`]: one request-metrics layer for both remote-write hops.
//! - [`Tasks`]: the tracked, cancellable tasks every gateway or agent owns.
//!
//! Nothing here reads the environment or installs a global subscriber.
//!
//! # Example
//! ```
//! use opni_metrics_transport::ops::Ops;
//! use opni_metrics_transport::tls::{cluster_uri, CLUSTER_URI_PREFIX};
//! use opni_metrics_core::ClusterId;
//!
//! let id = ClusterId::new("prod-eu-1")?;
//! assert_eq!(cluster_uri(&id), format!("{CLUSTER_URI_PREFIX}prod-eu-1"));
//!
//! let ops = Ops::new(prometheus_client::registry::Registry::default());
//! assert_eq!(ops.route_or_404("/readyz").status(), 503);
//! ops.set_ready(true);
//! assert_eq!(ops.route_or_404("/readyz").status(), 200);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod channel;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod ops;
mod tasks;
pub mod tls;

pub use tasks::{Drained, Tasks};
