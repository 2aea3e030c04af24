//! The cluster registry model: clusters, their labels and their capability entries, and the
//! transitions of the capability lifecycle (install, mark for uninstall, cancel, remove).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::id::{CapabilityName, ClusterId, Timestamp};

/// The longest label key or value accepted.
pub const MAX_LABEL_LEN: usize = 63;

/// The most labels a cluster may carry.
pub const MAX_LABELS: usize = 64;

/// Why a registry transition or a cluster's data was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Install of a capability the cluster already has.
    #[error("capability {capability} is already installed on cluster {cluster}")]
    AlreadyInstalled {
        /// The cluster.
        cluster: ClusterId,
        /// The capability.
        capability: CapabilityName,
    },
    /// The capability is being uninstalled; the uninstall must finish or be canceled first.
    #[error("capability {capability} of cluster {cluster} is being uninstalled")]
    UninstallInProgress {
        /// The cluster.
        cluster: ClusterId,
        /// The capability.
        capability: CapabilityName,
    },
    /// The capability is not installed on the cluster.
    #[error("capability {capability} is not installed on cluster {cluster}")]
    NotInstalled {
        /// The cluster.
        cluster: ClusterId,
        /// The capability.
        capability: CapabilityName,
    },
    /// Cancel of an uninstall that is not in progress.
    #[error("capability {capability} of cluster {cluster} is not being uninstalled")]
    NotUninstalling {
        /// The cluster.
        cluster: ClusterId,
        /// The capability.
        capability: CapabilityName,
    },
    /// Delete of a cluster that still has capabilities.
    #[error("cluster {cluster} still has capabilities installed: {}", names(.capabilities))]
    CapabilitiesInstalled {
        /// The cluster.
        cluster: ClusterId,
        /// The capabilities still installed.
        capabilities: Vec<CapabilityName>,
    },
    /// A label key or value breaks the label rules.
    #[error("label {key:?}: {reason}")]
    InvalidLabel {
        /// The key of the refused label.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Too many labels.
    #[error("{count} labels given, at most {MAX_LABELS} are allowed")]
    TooManyLabels {
        /// How many were given.
        count: usize,
    },
}

fn names(c: &[CapabilityName]) -> String {
    c.iter().map(CapabilityName::as_str).collect::<Vec<_>>().join(", ")
}

/// One capability installed on a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CapabilityEntry {
    /// Which capability.
    pub name: CapabilityName,
    /// When it was installed.
    pub installed_at: Timestamp,
    /// Set while an uninstall is in progress: when it was requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_requested_at: Option<Timestamp>,
}

impl CapabilityEntry {
    /// Whether an uninstall is in progress.
    pub fn is_uninstalling(&self) -> bool {
        self.deletion_requested_at.is_some()
    }
}

/// A downstream cluster known to the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cluster {
    /// Its id, which is also its tenant.
    pub id: ClusterId,
    /// Free-form labels, validated by [`validate_labels`].
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The capabilities installed, at most one entry per name.
    #[serde(default)]
    pub capabilities: Vec<CapabilityEntry>,
}

impl Cluster {
    /// A cluster with no labels and no capabilities.
    pub fn new(id: ClusterId) -> Self {
        Self { id, labels: BTreeMap::new(), capabilities: Vec::new() }
    }

    /// The entry of `name`, if installed (including while it is being uninstalled).
    pub fn capability(&self, name: &CapabilityName) -> Option<&CapabilityEntry> {
        self.capabilities.iter().find(|c| &c.name == name)
    }

    fn capability_mut(&mut self, name: &CapabilityName) -> Option<&mut CapabilityEntry> {
        self.capabilities.iter_mut().find(|c| &c.name == name)
    }

    /// Installs `name`.
    ///
    /// # Errors
    /// [`RegistryError::AlreadyInstalled`], or [`RegistryError::UninstallInProgress`] while an
    /// uninstall of it runs.
    pub fn install(&mut self, name: CapabilityName, now: Timestamp) -> Result<(), RegistryError> {
        match self.capability(&name) {
            Some(e) if e.is_uninstalling() => {
                Err(RegistryError::UninstallInProgress { cluster: self.id.clone(), capability: name })
            }
            Some(_) => Err(RegistryError::AlreadyInstalled { cluster: self.id.clone(), capability: name }),
            None => {
                self.capabilities.push(CapabilityEntry { name, installed_at: now, deletion_requested_at: None });
                Ok(())
            }
        }
    }

    /// Marks `name` for uninstall at `now`: the node is disabled from then on.
    ///
    /// # Errors
    /// [`RegistryError::NotInstalled`], or [`RegistryError::UninstallInProgress`] if already
    /// marked.
    pub fn mark_for_uninstall(&mut self, name: &CapabilityName, now: Timestamp) -> Result<(), RegistryError> {
        let cluster = self.id.clone();
        match self.capability_mut(name) {
            None => Err(RegistryError::NotInstalled { cluster, capability: name.clone() }),
            Some(e) if e.is_uninstalling() => {
                Err(RegistryError::UninstallInProgress { cluster, capability: name.clone() })
            }
            Some(e) => {
                e.deletion_requested_at = Some(now);
                Ok(())
            }
        }
    }

    /// Cancels a pending uninstall of `name`: the capability is fully installed again.
    ///
    /// # Errors
    /// [`RegistryError::NotInstalled`] or [`RegistryError::NotUninstalling`].
    pub fn cancel_uninstall(&mut self, name: &CapabilityName) -> Result<(), RegistryError> {
        let cluster = self.id.clone();
        match self.capability_mut(name) {
            None => Err(RegistryError::NotInstalled { cluster, capability: name.clone() }),
            Some(e) if !e.is_uninstalling() => {
                Err(RegistryError::NotUninstalling { cluster, capability: name.clone() })
            }
            Some(e) => {
                e.deletion_requested_at = None;
                Ok(())
            }
        }
    }

    /// Removes `name` at the end of its uninstall.
    ///
    /// # Errors
    /// [`RegistryError::NotInstalled`], or [`RegistryError::NotUninstalling`] when it was never
    /// marked for uninstall (removal always goes through the uninstall task).
    pub fn remove(&mut self, name: &CapabilityName) -> Result<CapabilityEntry, RegistryError> {
        let cluster = self.id.clone();
        let Some(index) = self.capabilities.iter().position(|c| &c.name == name) else {
            return Err(RegistryError::NotInstalled { cluster, capability: name.clone() });
        };
        if !self.capabilities[index].is_uninstalling() {
            return Err(RegistryError::NotUninstalling { cluster, capability: name.clone() });
        }
        Ok(self.capabilities.remove(index))
    }

    /// Checks that the cluster may be deleted.
    ///
    /// # Errors
    /// [`RegistryError::CapabilitiesInstalled`] while any capability is installed, even one
    /// being uninstalled.
    pub fn ensure_deletable(&self) -> Result<(), RegistryError> {
        if self.capabilities.is_empty() {
            Ok(())
        } else {
            Err(RegistryError::CapabilitiesInstalled {
                cluster: self.id.clone(),
                capabilities: self.capabilities.iter().map(|c| c.name.clone()).collect(),
            })
        }
    }

    /// Replaces the labels after validating them.
    ///
    /// # Errors
    /// [`RegistryError::InvalidLabel`] or [`RegistryError::TooManyLabels`].
    pub fn set_labels(&mut self, labels: BTreeMap<String, String>) -> Result<(), RegistryError> {
        validate_labels(&labels)?;
        self.labels = labels;
        Ok(())
    }
}

/// Validates cluster labels: at most [`MAX_LABELS`]; keys 1..=63 bytes and values 0..=63 bytes
/// of ASCII letters, digits, `-`, `_`, `.`, keys beginning and ending with a letter or digit.
///
/// # Errors
/// [`RegistryError::InvalidLabel`] naming the key, or [`RegistryError::TooManyLabels`].
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), RegistryError> {
    if labels.len() > MAX_LABELS {
        return Err(RegistryError::TooManyLabels { count: labels.len() });
    }
    for (k, v) in labels {
        let bad = |reason| Err(RegistryError::InvalidLabel { key: k.clone(), reason });
        if k.is_empty() || k.len() > MAX_LABEL_LEN {
            return bad("key must be 1 to 63 bytes");
        }
        if !k.chars().all(is_label_char) {
            return bad("key may only hold ASCII letters, digits, '-', '_' and '.'");
        }
        if !k.starts_with(|c: char| c.is_ascii_alphanumeric()) || !k.ends_with(|c: char| c.is_ascii_alphanumeric()) {
            return bad("key must begin and end with a letter or digit");
        }
        if v.len() > MAX_LABEL_LEN {
            return bad("value must be at most 63 bytes");
        }
        if !v.chars().all(is_label_char) {
            return bad("value may only hold ASCII letters, digits, '-', '_' and '.'");
        }
    }
    Ok(())
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Cluster {
        Cluster::new(ClusterId::new("c1").unwrap())
    }

    #[test]
    fn lifecycle_transitions() {
        let m = CapabilityName::metrics();
        let mut c = cluster();
        c.install(m.clone(), Timestamp(1)).unwrap();
        assert!(matches!(c.install(m.clone(), Timestamp(2)), Err(RegistryError::AlreadyInstalled { .. })));
        assert!(matches!(c.remove(&m), Err(RegistryError::NotUninstalling { .. })));
        assert!(matches!(c.cancel_uninstall(&m), Err(RegistryError::NotUninstalling { .. })));
        c.mark_for_uninstall(&m, Timestamp(3)).unwrap();
        assert!(matches!(c.mark_for_uninstall(&m, Timestamp(4)), Err(RegistryError::UninstallInProgress { .. })));
        assert!(matches!(c.install(m.clone(), Timestamp(4)), Err(RegistryError::UninstallInProgress { .. })));
        c.cancel_uninstall(&m).unwrap();
        assert_eq!(c.capability(&m).unwrap().deletion_requested_at, None);
        c.mark_for_uninstall(&m, Timestamp(5)).unwrap();
        let removed = c.remove(&m).unwrap();
        assert_eq!(removed.deletion_requested_at, Some(Timestamp(5)));
        assert!(matches!(c.remove(&m), Err(RegistryError::NotInstalled { .. })));
    }

    #[test]
    fn delete_refused_while_capability_installed() {
        let mut c = cluster();
        c.ensure_deletable().unwrap();
        c.install(CapabilityName::metrics(), Timestamp(1)).unwrap();
        let e = c.ensure_deletable().unwrap_err();
        assert_eq!(e.to_string(), "cluster c1 still has capabilities installed: metrics");
    }

    #[test]
    fn labels_are_validated_with_the_key_named() {
        let mut c = cluster();
        let mut l = BTreeMap::new();
        l.insert("env".to_owned(), "prod".to_owned());
        c.set_labels(l.clone()).unwrap();
        l.insert("-bad".to_owned(), "x".to_owned());
        let e = c.set_labels(l).unwrap_err();
        assert!(matches!(&e, RegistryError::InvalidLabel { key, .. } if key == "-bad"), "{e}");
        assert_eq!(c.labels.len(), 1, "labels unchanged after a refused update");
        let mut l = BTreeMap::new();
        l.insert("k".to_owned(), "has space".to_owned());
        assert!(validate_labels(&l).is_err());
        let many: BTreeMap<_, _> = (0..65).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(matches!(validate_labels(&many), Err(RegistryError::TooManyLabels { count: 65 })));
    }
}
