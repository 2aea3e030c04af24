//! Clusters and their capability entries: [`Cluster`] and [`CapabilityEntry`].

use std::collections::BTreeSet;

use opni_metrics_core::id::ClusterId;
use opni_metrics_core::registry::{CapabilityEntry, Cluster, validate_labels};

use super::{ConvertError, capability_name, cluster_id, required, timestamp, wire_timestamp};
use crate::capability::v1 as pb_capability;
use crate::clusters::v1 as pb;

impl TryFrom<pb::Cluster> for Cluster {
    type Error = ConvertError;

    /// Converts a cluster: its id and labels are validated, and a capability may appear once.
    fn try_from(w: pb::Cluster) -> Result<Self, ConvertError> {
        let id = cluster_id("id", w.id)?;
        validate_labels(&w.labels)
            .map_err(|source| ConvertError::InvalidLabels { field: "labels".to_owned(), source })?;
        let mut names = BTreeSet::new();
        let mut capabilities = Vec::with_capacity(w.capabilities.len());
        for (i, c) in w.capabilities.into_iter().enumerate() {
            let entry = CapabilityEntry::try_from(c).map_err(|e| e.under(&format!("capabilities[{i}]")))?;
            if !names.insert(entry.name.clone()) {
                return Err(ConvertError::Duplicate {
                    field: format!("capabilities[{i}].name"),
                    value: entry.name.into(),
                });
            }
            capabilities.push(entry);
        }
        Ok(Self { id, labels: w.labels, capabilities })
    }
}

impl From<Cluster> for pb::Cluster {
    fn from(c: Cluster) -> Self {
        Self { id: c.id.into(), labels: c.labels, capabilities: c.capabilities.into_iter().map(Into::into).collect() }
    }
}

impl TryFrom<pb::CapabilityEntry> for CapabilityEntry {
    type Error = ConvertError;

    fn try_from(w: pb::CapabilityEntry) -> Result<Self, ConvertError> {
        Ok(Self {
            name: capability_name("name", w.name)?,
            installed_at: timestamp("installedAt", &required("installedAt", w.installed_at)?)?,
            deletion_requested_at: w.deletion_requested_at.map(|t| timestamp("deletionRequestedAt", &t)).transpose()?,
        })
    }
}

impl From<CapabilityEntry> for pb::CapabilityEntry {
    fn from(e: CapabilityEntry) -> Self {
        Self {
            name: e.name.into(),
            installed_at: Some(wire_timestamp(e.installed_at)),
            deletion_requested_at: e.deletion_requested_at.map(wire_timestamp),
        }
    }
}

impl pb_capability::ClusterCapability {
    /// The `Capability.List` entry of `cluster`'s capability `entry`.
    pub fn new(cluster: &ClusterId, entry: &CapabilityEntry) -> Self {
        Self {
            cluster: cluster.to_string(),
            installed_at: Some(wire_timestamp(entry.installed_at)),
            deletion_requested_at: entry.deletion_requested_at.map(wire_timestamp),
        }
    }
}
