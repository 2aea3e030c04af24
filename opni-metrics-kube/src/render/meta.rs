//! Metadata every rendered object carries: namespace, labels and the controller owner reference.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::Serialize;

use crate::crd::{MonitoringCluster, MonitoringClusterSpec, monitoring_cluster};
use crate::{FIELD_MANAGER, MANAGED_BY_LABEL};

use super::names::Names;
use super::targets::Target;
use super::{DesiredObject, ObjectKind, RenderError, SELECTOR_LABEL};

pub(crate) const NAME_LABEL: &str = "app.kubernetes.io/name";
pub(crate) const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub(crate) const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// On the pods of targets that join the memberlist ring; the gossip Service selects it.
pub(crate) const GOSSIP_LABEL: &str = "metrics.opni.io/gossip-member";

/// Which application an object belongs to (`app.kubernetes.io/name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum App {
    Cortex,
    Grafana,
}

impl App {
    fn as_str(self) -> &'static str {
        match self {
            Self::Cortex => "cortex",
            Self::Grafana => "grafana",
        }
    }
}

/// What rendering needs from the MonitoringCluster: its identity and its spec.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub(crate) names: Names<'a>,
    pub(crate) uid: &'a str,
    pub(crate) spec: &'a MonitoringClusterSpec,
}

impl<'a> Ctx<'a> {
    /// # Errors
    /// Missing name, namespace or uid, or a name too long for the names derived from it.
    pub(crate) fn new(mc: &'a MonitoringCluster) -> Result<Self, RenderError> {
        let m = &mc.metadata;
        let name = m.name.as_deref().ok_or(RenderError::MissingMetadata("name"))?;
        let ns = m.namespace.as_deref().ok_or(RenderError::MissingMetadata("namespace"))?;
        let uid = m.uid.as_deref().ok_or(RenderError::MissingMetadata("uid"))?;
        if name.len() > Names::MAX_MC_NAME {
            return Err(RenderError::invalid(
                "metadata.name",
                format!("at most {} characters: object names are derived from it", Names::MAX_MC_NAME),
            ));
        }
        Ok(Self { names: Names { mc: name, ns }, uid, spec: &mc.spec })
    }

    /// The labels selecting a workload's pods (immutable on Deployments and StatefulSets, so
    /// deliberately few).
    pub(crate) fn selector(&self, target: Target) -> BTreeMap<String, String> {
        BTreeMap::from([
            (NAME_LABEL.to_owned(), App::Cortex.as_str().to_owned()),
            (INSTANCE_LABEL.to_owned(), self.names.mc.to_owned()),
            (COMPONENT_LABEL.to_owned(), target.as_str().to_owned()),
        ])
    }

    /// The labels of every object of `app`, with `app.kubernetes.io/component` when given.
    pub(crate) fn labels(&self, app: App, component: Option<&str>) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([
            (MANAGED_BY_LABEL.to_owned(), FIELD_MANAGER.to_owned()),
            (NAME_LABEL.to_owned(), app.as_str().to_owned()),
            (INSTANCE_LABEL.to_owned(), self.names.mc.to_owned()),
            (SELECTOR_LABEL.to_owned(), self.names.mc.to_owned()),
        ]);
        if let Some(c) = component {
            labels.insert(COMPONENT_LABEL.to_owned(), c.to_owned());
        }
        labels
    }

    /// The labels of a Cortex workload's pods and objects.
    pub(crate) fn target_labels(&self, target: Target) -> BTreeMap<String, String> {
        let mut labels = self.labels(App::Cortex, Some(target.as_str()));
        if target.gossips() {
            labels.insert(GOSSIP_LABEL.to_owned(), "true".to_owned());
        }
        labels
    }

    /// Name, namespace, labels and the owner reference.
    pub(crate) fn meta(&self, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.names.ns.to_owned()),
            labels: Some(labels),
            owner_references: Some(vec![self.owner()]),
            ..ObjectMeta::default()
        }
    }

    /// The one controller reference to the MonitoringCluster: deleting it garbage-collects
    /// everything rendered (PVCs excepted; StatefulSets do not own them).
    fn owner(&self) -> OwnerReference {
        OwnerReference {
            api_version: format!("{}/{}", monitoring_cluster::GROUP, monitoring_cluster::VERSION),
            kind: "MonitoringCluster".to_owned(),
            name: self.names.mc.to_owned(),
            uid: self.uid.to_owned(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }
}

/// Serializes a typed object into a [`DesiredObject`].
pub(crate) fn desired(kind: ObjectKind, object: &impl Serialize) -> Result<DesiredObject, RenderError> {
    Ok(DesiredObject { kind, object: serde_json::to_value(object).map_err(RenderError::Json)? })
}
