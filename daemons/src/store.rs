//! The gateway's store backends and their configuration.
//!
//! Two implementations of core's revisioned [`Store`] live here, both passing the shared
//! contract suite (`opni_metrics_core::store::contract`):
//! - [`embedded::EmbeddedStore`], the default: one redb file, state survives restarts, for a
//!   single gateway replica;
//! - [`etcd::EtcdStore`]: a real etcd cluster (v3 API), for several gateway replicas.
//!
//! [`StoreConfig`] is the inert configuration; [`StoreConfig::build`] turns it into a running
//! store.
//!
//! # Example
//! ```
//! use opni_metrics_daemons::store::StoreConfig;
//!
//! let cfg: StoreConfig = serde_json::from_str(
//!     r#"{"etcd": {"endpoints": ["10.0.0.1:2379", "10.0.0.2:2379"], "prefix": "/opni-metrics/"}}"#,
//! )?;
//! cfg.validate()?;
//! assert!(matches!(StoreConfig::default(), StoreConfig::Embedded(_)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::Arc;

use opni_metrics_core::store::Store;
use serde::{Deserialize, Serialize};

pub mod embedded;
pub mod etcd;

use embedded::{EmbeddedConfig, EmbeddedError, EmbeddedStore};
use etcd::{EtcdConfig, EtcdError, EtcdStore};

/// Which store the gateway keeps its state in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StoreConfig {
    /// A single file on local disk (the default); for one gateway replica.
    Embedded(EmbeddedConfig),
    /// An etcd cluster; for several gateway replicas sharing state.
    Etcd(EtcdConfig),
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self::Embedded(EmbeddedConfig::default())
    }
}

/// Why a store could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The embedded store could not be opened.
    #[error("embedded store")]
    Embedded(#[from] EmbeddedError),
    /// The etcd configuration is invalid or its TLS files unreadable.
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
            Self::Embedded(cfg) => cfg.validate()?,
            Self::Etcd(cfg) => cfg.validate()?,
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
            Self::Embedded(cfg) => Arc::new(EmbeddedStore::open(&cfg.path)?),
            Self::Etcd(cfg) => Arc::new(EtcdStore::new(cfg)?),
        })
    }
}

#[cfg(test)]
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
