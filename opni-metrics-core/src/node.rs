//! Node configuration and status: the desired-state function and the gateway's sync decision.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::registry::CapabilityEntry;
use crate::spec::MetricsCapabilitySpec;

/// Domain-separation prefix of node-config digests; bump only with a deliberate format change.
pub const NODE_CONFIG_DIGEST_DOMAIN: &str = "opni.metrics.node-config.v1";

/// Why a node is disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DisabledReason {
    /// The cluster does not have the capability.
    CapabilityNotInstalled,
    /// The capability is being uninstalled.
    UninstallInProgress,
    /// The upstream (Cortex) is not installed, or is being uninstalled.
    UpstreamNotInstalled,
    /// The upstream (Cortex) is installed but has been failing its readiness checks for longer
    /// than the gateway's grace period.
    UpstreamUnavailable,
}

impl DisabledReason {
    /// A sentence for operators.
    pub fn message(self) -> &'static str {
        match self {
            Self::CapabilityNotInstalled => "the metrics capability is not installed on this cluster",
            Self::UninstallInProgress => "the metrics capability is being uninstalled",
            Self::UpstreamNotInstalled => "the metrics backend (Cortex) is not installed",
            Self::UpstreamUnavailable => "the metrics backend (Cortex) is installed but failing",
        }
    }
}

/// Install state of the upstream (Cortex-compatible) store, as the cluster driver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum UpstreamState {
    /// Not installed.
    NotInstalled,
    /// Being installed or updated.
    Installing,
    /// Installed.
    Installed,
    /// Being uninstalled.
    Uninstalling,
    /// Status could not be read.
    Unknown,
    /// Installed, but failing its readiness checks beyond the gateway's grace period.
    Failing,
}

impl UpstreamState {
    /// Whether agents should run while the upstream is in this state. `Installing` and `Unknown`
    /// keep agents running: Prometheus's WAL rides out a short outage, while switching every
    /// agent off on a transient status error would drop data and churn every cluster.
    pub fn allows_agents(self) -> bool {
        self.disabled_reason().is_none()
    }

    /// Why agents are disabled in this state, if they are.
    pub fn disabled_reason(self) -> Option<DisabledReason> {
        match self {
            Self::Installed | Self::Installing | Self::Unknown => None,
            Self::Failing => Some(DisabledReason::UpstreamUnavailable),
            Self::NotInstalled | Self::Uninstalling => Some(DisabledReason::UpstreamNotInstalled),
        }
    }
}

/// The configuration an agent should apply: computed, never stored as a copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeConfig {
    /// Whether the agent's Prometheus should run.
    pub enabled: bool,
    /// Why it is disabled; empty when enabled. Sorted, no duplicates.
    #[serde(default)]
    pub disabled_reasons: Vec<DisabledReason>,
    /// The spec to apply when enabled.
    pub spec: MetricsCapabilitySpec,
}

impl NodeConfig {
    /// An enabled config with `spec`.
    pub fn enabled(spec: MetricsCapabilitySpec) -> Self {
        Self { enabled: true, disabled_reasons: Vec::new(), spec }
    }

    /// The canonical digest (status is not part of a config, so never part of its digest).
    pub fn digest(&self) -> Digest {
        let canonical = NodeConfig {
            enabled: self.enabled,
            disabled_reasons: {
                let mut r = self.disabled_reasons.clone();
                r.sort();
                r.dedup();
                r
            },
            spec: self.spec.normalized(),
        };
        // Serialising plain data to a serde_json::Value cannot fail: every map key is a string.
        match Digest::of_canonical(NODE_CONFIG_DIGEST_DOMAIN, &canonical) {
            Ok(d) => d,
            Err(_) => Digest::from_bytes([0; 32]),
        }
    }
}

/// The desired state of one node.
///
/// `entry` is the cluster's `metrics` capability entry (if installed); `node_override` the
/// per-node spec if one is set, else `default_spec` applies; `upstream` the install state of the
/// store. A node is enabled only when the capability is installed, not being uninstalled, and
/// the upstream allows agents ([`UpstreamState::allows_agents`]).
pub fn desired_config(
    entry: Option<&CapabilityEntry>,
    node_override: Option<&MetricsCapabilitySpec>,
    default_spec: &MetricsCapabilitySpec,
    upstream: UpstreamState,
) -> NodeConfig {
    let mut reasons = Vec::new();
    match entry {
        None => reasons.push(DisabledReason::CapabilityNotInstalled),
        Some(e) if e.is_uninstalling() => reasons.push(DisabledReason::UninstallInProgress),
        Some(_) => {}
    }
    reasons.extend(upstream.disabled_reason());
    NodeConfig {
        enabled: reasons.is_empty(),
        disabled_reasons: reasons,
        spec: node_override.unwrap_or(default_spec).clone(),
    }
}

/// The gateway's answer to a `Sync`.
#[allow(clippy::large_enum_variant)] // a short-lived message; boxing buys nothing
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncReply {
    /// The agent's digest matches the desired config.
    UpToDate,
    /// The agent must apply `config`, whose digest is `digest`.
    NeedsUpdate {
        /// The desired config.
        config: NodeConfig,
        /// Its digest.
        digest: Digest,
    },
}

/// The gateway's sync decision for an agent that reports `current` as its applied digest.
pub fn sync_decision(current: Option<&Digest>, desired: &NodeConfig) -> SyncReply {
    SyncReply::decide(current, desired.clone(), desired.digest())
}

impl SyncReply {
    /// [`sync_decision`] with the desired config's digest already known (`digest` must be
    /// `desired.digest()`).
    pub fn decide(current: Option<&Digest>, desired: NodeConfig, digest: Digest) -> Self {
        if current == Some(&digest) { Self::UpToDate } else { Self::NeedsUpdate { config: desired, digest } }
    }
}

/// Kinds of condition an agent reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ConditionKind {
    /// The last config was applied by the node driver.
    Applied,
    /// Prometheus is running and healthy.
    PrometheusReady,
    /// Remote write reaches the gateway.
    RemoteWriteHealthy,
    /// The agent is in sync with the gateway.
    Synced,
    /// Rule discovery works.
    RulesSynced,
}

/// Whether a condition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ConditionStatus {
    /// It holds.
    True,
    /// It does not hold.
    False,
    /// Not known.
    Unknown,
}

/// A condition reported by an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// Which condition.
    pub kind: ConditionKind,
    /// Whether it holds.
    pub status: ConditionStatus,
    /// A short machine-friendly reason (`CamelCase`), may be empty.
    #[serde(default)]
    pub reason: String,
    /// A sentence for operators, may be empty.
    #[serde(default)]
    pub message: String,
}

impl Condition {
    /// A condition with no reason or message.
    pub fn new(kind: ConditionKind, status: ConditionStatus) -> Self {
        Self { kind, status, reason: String::new(), message: String::new() }
    }
}

/// What an agent reports about itself on each `Sync`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeStatus {
    /// The digest of the config the node driver last applied successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_digest: Option<Digest>,
    /// Current conditions, at most one per kind.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

impl NodeStatus {
    /// Sets (replaces) the condition of `c.kind`.
    pub fn set(&mut self, c: Condition) {
        match self.conditions.iter_mut().find(|x| x.kind == c.kind) {
            Some(x) => *x = c,
            None => {
                self.conditions.push(c);
                self.conditions.sort_by_key(|c| c.kind);
            }
        }
    }

    /// The condition of `kind`, if reported.
    pub fn get(&self, kind: ConditionKind) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{CapabilityName, Timestamp};

    fn entry(uninstalling: bool) -> CapabilityEntry {
        CapabilityEntry {
            name: CapabilityName::metrics(),
            installed_at: Timestamp(1),
            deletion_requested_at: uninstalling.then_some(Timestamp(2)),
        }
    }

    #[test]
    fn desired_state_table() {
        let d = MetricsCapabilitySpec::default();
        let mut o = d.clone();
        o.prometheus.queue.max_shards = 7;
        let on = desired_config(Some(&entry(false)), None, &d, UpstreamState::Installed);
        assert!(on.enabled && on.disabled_reasons.is_empty() && on.spec == d);
        let ov = desired_config(Some(&entry(false)), Some(&o), &d, UpstreamState::Unknown);
        assert!(ov.enabled);
        assert_eq!(ov.spec.prometheus.queue.max_shards, 7);
        let off = desired_config(None, None, &d, UpstreamState::NotInstalled);
        assert!(!off.enabled);
        assert_eq!(
            off.disabled_reasons,
            vec![DisabledReason::CapabilityNotInstalled, DisabledReason::UpstreamNotInstalled]
        );
        let un = desired_config(Some(&entry(true)), None, &d, UpstreamState::Installed);
        assert_eq!(un.disabled_reasons, vec![DisabledReason::UninstallInProgress]);
        let up = desired_config(Some(&entry(false)), None, &d, UpstreamState::Uninstalling);
        assert_eq!(up.disabled_reasons, vec![DisabledReason::UpstreamNotInstalled]);
        let failing = desired_config(Some(&entry(false)), None, &d, UpstreamState::Failing);
        assert!(!failing.enabled);
        assert_eq!(failing.disabled_reasons, vec![DisabledReason::UpstreamUnavailable]);
    }

    #[test]
    fn sync_decision_compares_digests() {
        let c = NodeConfig::enabled(MetricsCapabilitySpec::default());
        let d = c.digest();
        assert_eq!(sync_decision(Some(&d), &c), SyncReply::UpToDate);
        assert!(matches!(sync_decision(None, &c), SyncReply::NeedsUpdate { digest, .. } if digest == d));
        let mut c2 = c.clone();
        c2.enabled = false;
        assert_ne!(c2.digest(), d);
        assert!(matches!(sync_decision(Some(&d), &c2), SyncReply::NeedsUpdate { .. }));
    }

    #[test]
    fn digest_ignores_reason_order() {
        let mut a = NodeConfig::enabled(MetricsCapabilitySpec::default());
        a.enabled = false;
        a.disabled_reasons = vec![DisabledReason::UpstreamNotInstalled, DisabledReason::CapabilityNotInstalled];
        let mut b = a.clone();
        b.disabled_reasons.reverse();
        assert_eq!(a.digest(), b.digest());
    }

    #[test]
    fn status_conditions_replace_by_kind() {
        let mut s = NodeStatus::default();
        s.set(Condition::new(ConditionKind::Synced, ConditionStatus::False));
        s.set(Condition::new(ConditionKind::Applied, ConditionStatus::True));
        s.set(Condition::new(ConditionKind::Synced, ConditionStatus::True));
        assert_eq!(s.conditions.len(), 2);
        assert_eq!(s.conditions[0].kind, ConditionKind::Applied);
        assert_eq!(s.get(ConditionKind::Synced).unwrap().status, ConditionStatus::True);
    }
}
