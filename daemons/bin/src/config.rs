//! The daemons' config files: inert YAML data (camelCase keys, unknown keys refused), each
//! section validated into the libraries' settings.

pub mod agent;
pub mod gateway;
pub mod gateway_kube;
pub mod readers;
