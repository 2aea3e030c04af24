//! The agent: the remote-write relay, joining the gateway, the sync loop and the node driver.

pub mod config;
pub mod identity;
pub mod process_driver;
pub mod relay;
pub mod server;
pub mod sync_loop;

pub use config::{AgentConfig, AgentSettings};
pub use relay::{Relay, RelaySettings};
pub use server::{RunningAgent, StartError, start};
