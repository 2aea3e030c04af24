//! Roles, role bindings and API key records.

use opni_metrics_core::access::{ApiKeyRecord, Role, RoleBinding, Subject};

use super::{ConvertError, cluster_id, wire_timestamp};
use crate::rbac::v1 as pb;

impl TryFrom<pb::Role> for Role {
    type Error = ConvertError;

    /// Converts and validates; the error names the field and the rule.
    fn try_from(w: pb::Role) -> Result<Self, ConvertError> {
        let clusters = w
            .cluster_ids
            .into_iter()
            .enumerate()
            .map(|(i, c)| cluster_id(&format!("clusterIds[{i}]"), c))
            .collect::<Result<Vec<_>, _>>()?;
        let selector = w.selector.map(TryInto::try_into).transpose().map_err(|e: ConvertError| e.under("selector"))?;
        Role::new(&w.name, clusters, selector).map_err(|e| ConvertError::InvalidSpec {
            field: "role".to_owned(),
            reason: opni_metrics_core::error_chain(&e),
        })
    }
}

impl From<Role> for pb::Role {
    fn from(r: Role) -> Self {
        Self {
            name: r.name,
            cluster_ids: r.clusters.into_iter().map(String::from).collect(),
            selector: r.selector.map(Into::into),
        }
    }
}

impl TryFrom<pb::RoleBinding> for RoleBinding {
    type Error = ConvertError;

    /// Converts and validates subjects (`user:NAME` or `group:NAME`).
    fn try_from(w: pb::RoleBinding) -> Result<Self, ConvertError> {
        let subjects = w
            .subjects
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.parse::<Subject>().map_err(|e| ConvertError::InvalidSpec {
                    field: format!("subjects[{i}]"),
                    reason: opni_metrics_core::error_chain(&e),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        RoleBinding::new(&w.name, &w.role, subjects).map_err(|e| ConvertError::InvalidSpec {
            field: "roleBinding".to_owned(),
            reason: opni_metrics_core::error_chain(&e),
        })
    }
}

impl From<RoleBinding> for pb::RoleBinding {
    fn from(b: RoleBinding) -> Self {
        Self { name: b.name, role: b.role, subjects: b.subjects.iter().map(ToString::to_string).collect() }
    }
}

impl From<&ApiKeyRecord> for pb::ApiKeyInfo {
    /// The public part only: never the hash.
    fn from(k: &ApiKeyRecord) -> Self {
        Self {
            id: k.id.clone(),
            name: k.name.clone(),
            subject: k.subject.clone(),
            groups: k.groups.iter().cloned().collect(),
            created: Some(wire_timestamp(k.created_at)),
        }
    }
}
