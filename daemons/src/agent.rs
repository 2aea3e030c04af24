//! The agent: the remote-write relay; (with the daemons issue) the sync loop and node driver.

pub mod config;
pub mod relay;
pub mod server;

pub use config::{AgentConfig, AgentSettings};
pub use relay::{Relay, RelaySettings};
pub use server::{RunningAgent, StartError, start};
