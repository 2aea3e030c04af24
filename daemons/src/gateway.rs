//! The gateway: the `RemoteWrite` service and its upstream forwarder; (with the daemons
//! issue) sync, capability lifecycle and management APIs.

pub mod config;
pub mod remote_write;
pub mod server;

pub use config::{GatewayConfig, GatewaySettings};
pub use remote_write::RemoteWriteService;
pub use server::{RunningGateway, StartError, start};
