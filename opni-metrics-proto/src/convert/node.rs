//! Node config, node status and the sync exchange: [`NodeConfig`], [`NodeStatus`],
//! [`Condition`], [`SyncReply`] and the parts of a `SyncRequest`.

use std::collections::BTreeSet;

use opni_metrics_core::digest::Digest;
use opni_metrics_core::node::{
    Condition, ConditionKind, ConditionStatus, DisabledReason, NodeConfig, NodeStatus, SyncReply,
};

use super::{ConvertError, convert_required, decode_enum, digest, digest_string, optional_digest};
use crate::common::v1 as pb;
use crate::node::v1 as pb_node;

impl TryFrom<pb::NodeConfig> for NodeConfig {
    type Error = ConvertError;

    /// Converts a config; its spec is validated.
    fn try_from(w: pb::NodeConfig) -> Result<Self, ConvertError> {
        Ok(Self {
            enabled: w.enabled,
            disabled_reasons: w
                .disabled_reasons
                .into_iter()
                .enumerate()
                .map(|(i, r)| decode_enum(&format!("disabledReasons[{i}]"), r, disabled_reason))
                .collect::<Result<_, _>>()?,
            spec: convert_required("spec", w.spec)?,
        })
    }
}

impl From<NodeConfig> for pb::NodeConfig {
    fn from(c: NodeConfig) -> Self {
        Self {
            enabled: c.enabled,
            disabled_reasons: c.disabled_reasons.into_iter().map(|r| pb::DisabledReason::from(r).into()).collect(),
            spec: Some(c.spec.into()),
        }
    }
}

/// The core reason of a wire one (`None` for `UNSPECIFIED`).
pub fn disabled_reason(w: pb::DisabledReason) -> Option<DisabledReason> {
    match w {
        pb::DisabledReason::Unspecified => None,
        pb::DisabledReason::CapabilityNotInstalled => Some(DisabledReason::CapabilityNotInstalled),
        pb::DisabledReason::UninstallInProgress => Some(DisabledReason::UninstallInProgress),
        pb::DisabledReason::UpstreamNotInstalled => Some(DisabledReason::UpstreamNotInstalled),
        pb::DisabledReason::UpstreamUnavailable => Some(DisabledReason::UpstreamUnavailable),
    }
}

impl From<DisabledReason> for pb::DisabledReason {
    fn from(r: DisabledReason) -> Self {
        match r {
            DisabledReason::CapabilityNotInstalled => Self::CapabilityNotInstalled,
            DisabledReason::UninstallInProgress => Self::UninstallInProgress,
            DisabledReason::UpstreamNotInstalled => Self::UpstreamNotInstalled,
            DisabledReason::UpstreamUnavailable => Self::UpstreamUnavailable,
        }
    }
}

impl TryFrom<pb::NodeStatus> for NodeStatus {
    type Error = ConvertError;

    /// Converts a status; a second condition of the same kind is refused.
    fn try_from(w: pb::NodeStatus) -> Result<Self, ConvertError> {
        let mut kinds = BTreeSet::new();
        let mut conditions = Vec::with_capacity(w.conditions.len());
        for (i, c) in w.conditions.into_iter().enumerate() {
            let c = Condition::try_from(c).map_err(|e| e.under(&format!("conditions[{i}]")))?;
            if !kinds.insert(c.kind) {
                return Err(ConvertError::Duplicate {
                    field: format!("conditions[{i}].kind"),
                    value: format!("{:?}", c.kind),
                });
            }
            conditions.push(c);
        }
        Ok(Self { applied_digest: optional_digest("appliedDigest", &w.applied_digest)?, conditions })
    }
}

impl From<NodeStatus> for pb::NodeStatus {
    fn from(s: NodeStatus) -> Self {
        Self {
            applied_digest: digest_string(s.applied_digest.as_ref()),
            conditions: s.conditions.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::Condition> for Condition {
    type Error = ConvertError;

    fn try_from(w: pb::Condition) -> Result<Self, ConvertError> {
        Ok(Self {
            kind: decode_enum("kind", w.kind, condition_kind)?,
            status: decode_enum("status", w.status, condition_status)?,
            reason: w.reason,
            message: w.message,
        })
    }
}

impl From<Condition> for pb::Condition {
    fn from(c: Condition) -> Self {
        Self {
            kind: pb::ConditionKind::from(c.kind).into(),
            status: pb::ConditionStatus::from(c.status).into(),
            reason: c.reason,
            message: c.message,
        }
    }
}

fn condition_kind(w: pb::ConditionKind) -> Option<ConditionKind> {
    match w {
        pb::ConditionKind::Unspecified => None,
        pb::ConditionKind::Applied => Some(ConditionKind::Applied),
        pb::ConditionKind::PrometheusReady => Some(ConditionKind::PrometheusReady),
        pb::ConditionKind::RemoteWriteHealthy => Some(ConditionKind::RemoteWriteHealthy),
        pb::ConditionKind::Synced => Some(ConditionKind::Synced),
        pb::ConditionKind::RulesSynced => Some(ConditionKind::RulesSynced),
    }
}

impl From<ConditionKind> for pb::ConditionKind {
    fn from(k: ConditionKind) -> Self {
        match k {
            ConditionKind::Applied => Self::Applied,
            ConditionKind::PrometheusReady => Self::PrometheusReady,
            ConditionKind::RemoteWriteHealthy => Self::RemoteWriteHealthy,
            ConditionKind::Synced => Self::Synced,
            ConditionKind::RulesSynced => Self::RulesSynced,
        }
    }
}

fn condition_status(w: pb::ConditionStatus) -> Option<ConditionStatus> {
    match w {
        pb::ConditionStatus::Unspecified => None,
        pb::ConditionStatus::True => Some(ConditionStatus::True),
        pb::ConditionStatus::False => Some(ConditionStatus::False),
        pb::ConditionStatus::Unknown => Some(ConditionStatus::Unknown),
    }
}

impl From<ConditionStatus> for pb::ConditionStatus {
    fn from(s: ConditionStatus) -> Self {
        match s {
            ConditionStatus::True => Self::True,
            ConditionStatus::False => Self::False,
            ConditionStatus::Unknown => Self::Unknown,
        }
    }
}

impl TryFrom<pb_node::SyncResponse> for SyncReply {
    type Error = ConvertError;

    /// Converts a sync answer. With `NEEDS_UPDATE` the config is validated and its digest
    /// recomputed: a digest that differs from the one sent is refused, so an agent never records
    /// a digest that does not describe what it applies.
    fn try_from(w: pb_node::SyncResponse) -> Result<Self, ConvertError> {
        let result = decode_enum("result", w.result, |r: pb_node::SyncResult| {
            (r != pb_node::SyncResult::Unspecified).then_some(r)
        })?;
        if result == pb_node::SyncResult::NeedsUpdate {
            let (config, digest) = verified(w.config, &w.digest)?;
            return Ok(Self::NeedsUpdate { config, digest });
        }
        const CONTEXT: &str = "when result is UP_TO_DATE";
        if w.config.is_some() {
            return Err(ConvertError::Unexpected { field: "config".to_owned(), context: CONTEXT });
        }
        if !w.digest.is_empty() {
            return Err(ConvertError::Unexpected { field: "digest".to_owned(), context: CONTEXT });
        }
        Ok(Self::UpToDate)
    }
}

impl From<SyncReply> for pb_node::SyncResponse {
    fn from(r: SyncReply) -> Self {
        match r {
            SyncReply::UpToDate => {
                Self { result: pb_node::SyncResult::UpToDate.into(), config: None, digest: String::new() }
            }
            SyncReply::NeedsUpdate { config, digest } => Self {
                result: pb_node::SyncResult::NeedsUpdate.into(),
                config: Some(config.into()),
                digest: digest.to_string(),
            },
        }
    }
}

/// A config sent with its digest: converted and validated, the digest recomputed and a
/// mismatch refused, so an agent never records a digest that does not describe what it
/// applies.
fn verified(config: Option<pb::NodeConfig>, sent: &str) -> Result<(NodeConfig, Digest), ConvertError> {
    let config: NodeConfig = convert_required("config", config)?;
    let sent = digest("digest", sent)?;
    let computed = config.digest();
    if sent != computed {
        return Err(ConvertError::DigestMismatch { field: "digest".to_owned(), sent, computed });
    }
    Ok((config, sent))
}

impl pb_node::SyncNow {
    /// A `SyncNow` for the `metrics` capability, offering a config and its digest when given
    /// (the digest must be the config's: the receiver refuses a mismatch).
    pub fn metrics(offer: Option<(NodeConfig, Digest)>) -> Self {
        let (config, digest) = match offer {
            Some((c, d)) => (Some(c.into()), d.to_string()),
            None => (None, String::new()),
        };
        Self { capabilities: vec![opni_metrics_core::CapabilityName::METRICS.to_owned()], config, digest }
    }

    /// The offered config and its digest, `None` without an offer.
    ///
    /// # Errors
    /// An invalid config, a digest that is not one or does not match the config, or only one of
    /// the two set.
    pub fn offer(self) -> Result<Option<(NodeConfig, Digest)>, ConvertError> {
        match (self.config, self.digest.is_empty()) {
            (None, true) => Ok(None),
            (None, false) => {
                Err(ConvertError::Unexpected { field: "digest".to_owned(), context: "when config is unset" })
            }
            (config, _) => verified(config, &self.digest).map(Some),
        }
    }
}

impl pb_node::SyncRequest {
    /// A sync call from an agent that holds the config of digest `current` (`None` if it holds
    /// none) and reports `status`.
    pub fn new(current: Option<&Digest>, status: NodeStatus) -> Self {
        Self { current_digest: digest_string(current), status: Some(status.into()) }
    }

    /// The digest the agent holds and its status; an unset status is an empty one.
    ///
    /// # Errors
    /// [`ConvertError`] naming the field, for a malformed digest or status.
    pub fn into_core(self) -> Result<(Option<Digest>, NodeStatus), ConvertError> {
        let current = optional_digest("currentDigest", &self.current_digest)?;
        let status = match self.status {
            None => NodeStatus::default(),
            Some(s) => NodeStatus::try_from(s).map_err(|e| e.under("status"))?,
        };
        Ok((current, status))
    }
}
