//! The gateway: remote-write forwarding, sync over the wire, the capability lifecycle,
//! bootstrap and the management APIs.

pub mod bootstrap;
pub mod ca;
pub mod capability;
pub mod cluster_driver;
pub mod clusters;
pub mod config;
pub mod errors;
pub mod nodeconfig;
pub mod remote_write;
pub mod server;
pub mod state;
pub mod sync;
pub mod uninstall;

pub use config::{GatewayConfig, GatewaySettings};
pub use remote_write::RemoteWriteService;
pub use server::{RunningGateway, StartError, start};
