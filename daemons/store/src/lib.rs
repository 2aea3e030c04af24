//! Store backends of the opni-metrics gateway and their configuration.
//!
//! Two implementations of core's revisioned [`Store`] live here, both passing the shared
//! contract suite (`opni_metrics_core::store::contract`):
//! - `embedded::EmbeddedStore` (feature `redb`), the default: one redb file, state survives
//!   restarts, for a single gateway replica;
//! - `etcd::EtcdStore` (feature `etcd`): a real etcd cluster (v3 API), for several gateway
//!   replicas.
//!
//! [`StoreConfig`] is the inert configuration; [`StoreConfig::build`] turns it into a running
//! store.
//!
//! # Example
//! ```
//! # #[cfg(all(feature = "redb", feature = "etcd"))] {
//! use opni_metrics_store::StoreConfig;
//!
//! let cfg: StoreConfig = serde_json::from_str(
//!     r#"{"etcd": {"endpoints": ["10.0.0.1:2379", "10.0.0.2:2379"], "prefix": "/opni-metrics/"}}"#,
//! )?;
//! cfg.validate()?;
//! assert!(matches!(StoreConfig::default(), StoreConfig::Embedded(_)));
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::Arc;

use opni_metrics_core::store::Store;
use serde::{Deserialize, Serialize};

#[cfg(feature = "redb")]
pub mod embedded;
#[cfg(feature = "etcd")]
pub mod etcd;

#[cfg(feature = "redb")]
use embedded::{EmbeddedConfig, EmbeddedError, EmbeddedStore};
#[cfg(feature = "etcd")]
use etcd::{EtcdConfig, EtcdError, EtcdStore};

/// Which store the gateway keeps its state in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum StoreConfig {
    /// A single file on local disk (the default); for one gateway replica.
    #[cfg(feature = "redb")]
    Embedded(EmbeddedConfig),
    /// An etcd cluster; for several gateway replicas sharing state.
    #[cfg(feature = "etcd")]
    Etcd(EtcdConfig),
    /// In memory: nothing survives a restart (tests, demos, embedders with their own
    /// persistence).
    Memory,
}

impl Default for StoreConfig {
    #[cfg(feature = "redb")]
    fn default() -> Self {
        Self::Embedded(EmbeddedConfig::default())
    }
    #[cfg(not(feature = "redb"))]
    fn default() -> Self {
        Self::Memory
    }
}

/// Why a store could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The embedded store could not be opened.
    #[cfg(feature = "redb")]
    #[error("embedded store")]
    Embedded(#[from] EmbeddedError),
    /// The etcd configuration is invalid or its TLS files unreadable.
    #[cfg(feature = "etcd")]
    #[error("etcd store")]
    Etcd(#[from] EtcdError),
}

impl StoreConfig {
    /// Checks the configuration without touching the disk or the network.
    ///
    /// # Errors
    /// [`BuildError`] naming the offending setting.
    pub fn validate(&self) -> Result<(), BuildError> {
        match self {
            #[cfg(feature = "redb")]
            Self::Embedded(cfg) => cfg.validate()?,
            #[cfg(feature = "etcd")]
            Self::Etcd(cfg) => cfg.validate()?,
            Self::Memory => {}
        }
        Ok(())
    }

    /// Opens the store. The embedded store opens (or creates) its file now; the etcd store
    /// reads its TLS files now and connects on first use, so an etcd outage at startup is not
    /// fatal. Call it inside a Tokio runtime.
    ///
    /// # Errors
    /// [`BuildError`]: invalid configuration, an unusable store file, unreadable TLS files.
    pub fn build(&self) -> Result<Arc<dyn Store>, BuildError> {
        self.validate()?;
        Ok(match self {
            #[cfg(feature = "redb")]
            Self::Embedded(cfg) => Arc::new(EmbeddedStore::open(&cfg.path)?),
            #[cfg(feature = "etcd")]
            Self::Etcd(cfg) => Arc::new(EtcdStore::new(cfg)?),
            Self::Memory => Arc::new(opni_metrics_core::store::MemoryStore::default()),
        })
    }
}

#[cfg(all(test, feature = "redb", feature = "etcd"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn default_is_the_embedded_file() {
        let cfg: StoreConfig = serde_json::from_str(r#"{"embedded": {}}"#).unwrap();
        assert_eq!(cfg, StoreConfig::default());
        let StoreConfig::Embedded(e) = cfg else { unreachable!() };
        assert_eq!(e.path, std::path::PathBuf::from("./data/opni-metrics.redb"));
    }

    #[test]
    fn etcd_config_parses_with_defaults() {
        let cfg: StoreConfig =
            serde_json::from_str(r#"{"etcd": {"endpoints": ["127.0.0.1:2379"], "tls": {"ca": "/ca.pem"}}}"#).unwrap();
        let StoreConfig::Etcd(e) = &cfg else { unreachable!() };
        assert_eq!(e.prefix, etcd::DEFAULT_PREFIX);
        assert_eq!(e.tls.as_ref().and_then(|t| t.ca.clone()), Some("/ca.pem".into()));
        cfg.validate().unwrap();
    }

    #[test]
    fn unknown_fields_and_bad_settings_are_refused() {
        assert!(serde_json::from_str::<StoreConfig>(r#"{"embedded": {"file": "x"}}"#).is_err());
        assert!(serde_json::from_str::<StoreConfig>(r#"{"etcd": {"endpoints": [], "tls": {"crt": "x"}}}"#).is_err());
        let no_endpoints: StoreConfig = serde_json::from_str(r#"{"etcd": {"endpoints": []}}"#).unwrap();
        assert!(no_endpoints.validate().is_err());
        let cert_without_key: StoreConfig =
            serde_json::from_str(r#"{"etcd": {"endpoints": ["h:1"], "tls": {"cert": "c.pem"}}}"#).unwrap();
        assert!(cert_without_key.validate().is_err());
        let plain_with_tls: StoreConfig =
            serde_json::from_str(r#"{"etcd": {"endpoints": ["http://h:1"], "tls": {"ca": "c.pem"}}}"#).unwrap();
        assert!(plain_with_tls.validate().is_err());
        let empty_prefix: StoreConfig =
            serde_json::from_str(r#"{"etcd": {"endpoints": ["h:1"], "prefix": ""}}"#).unwrap();
        assert!(empty_prefix.validate().is_err());
    }
}
