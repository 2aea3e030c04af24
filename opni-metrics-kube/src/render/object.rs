//! [`DesiredObject`] and [`ObjectKind`]: what the controller applies, and the API resource of
//! each kind.

use kube::api::ApiResource;

/// One object the controller wants to exist.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredObject {
    /// Its kind.
    pub kind: ObjectKind,
    /// The full object: `apiVersion`, `kind`, `metadata` (name, namespace, labels,
    /// ownerReferences) and its `spec` or `data`.
    pub object: serde_json::Value,
}

impl DesiredObject {
    /// The object's `metadata.name` (empty if it has none, which rendered objects never lack).
    pub fn name(&self) -> &str {
        self.object.pointer("/metadata/name").and_then(serde_json::Value::as_str).unwrap_or_default()
    }
}

/// The kinds of object the controller renders, in apply order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// core/v1 `Secret`.
    Secret,
    /// core/v1 `Service`.
    Service,
    /// apps/v1 `StatefulSet`.
    StatefulSet,
    /// apps/v1 `Deployment`.
    Deployment,
    /// policy/v1 `PodDisruptionBudget`.
    PodDisruptionBudget,
    /// cert-manager.io/v1 `Issuer`.
    Issuer,
    /// cert-manager.io/v1 `Certificate`.
    Certificate,
    /// grafana.integreatly.org/v1beta1 `Grafana`.
    Grafana,
    /// grafana.integreatly.org/v1beta1 `GrafanaDatasource`.
    GrafanaDatasource,
}

impl ObjectKind {
    /// Every kind, in apply order.
    pub const ALL: [ObjectKind; 9] = [
        Self::Secret,
        Self::Service,
        Self::StatefulSet,
        Self::Deployment,
        Self::PodDisruptionBudget,
        Self::Issuer,
        Self::Certificate,
        Self::Grafana,
        Self::GrafanaDatasource,
    ];

    /// The API resource (group, version, apiVersion, kind, plural) for dynamic API calls.
    pub fn api_resource(self) -> ApiResource {
        use k8s_openapi::api::{apps::v1 as apps, core::v1 as core, policy::v1 as policy};

        use crate::crd::{cert_manager, grafana};
        match self {
            Self::Secret => ApiResource::erase::<core::Secret>(&()),
            Self::Service => ApiResource::erase::<core::Service>(&()),
            Self::StatefulSet => ApiResource::erase::<apps::StatefulSet>(&()),
            Self::Deployment => ApiResource::erase::<apps::Deployment>(&()),
            Self::PodDisruptionBudget => ApiResource::erase::<policy::PodDisruptionBudget>(&()),
            Self::Issuer => ApiResource::erase::<cert_manager::Issuer>(&()),
            Self::Certificate => ApiResource::erase::<cert_manager::Certificate>(&()),
            Self::Grafana => ApiResource::erase::<grafana::Grafana>(&()),
            Self::GrafanaDatasource => ApiResource::erase::<grafana::GrafanaDatasource>(&()),
        }
    }

    /// The third-party operator whose CRD this kind needs, for a condition message when it is
    /// not installed; `None` for built-in kinds.
    pub fn needs_crd(self) -> Option<&'static str> {
        match self {
            Self::Issuer | Self::Certificate => Some("cert-manager (cert-manager.io/v1)"),
            Self::Grafana | Self::GrafanaDatasource => Some("grafana-operator (grafana.integreatly.org/v1beta1)"),
            _ => None,
        }
    }
}
