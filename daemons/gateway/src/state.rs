//! The gateway's state in the store: typed, revisioned access to clusters, node configs, node
//! status, uninstall tasks and bootstrap tokens. Every read-modify-write is a compare-and-put
//! loop, so several gateways sharing one store never lose an update.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use opni_metrics_core::node::{NodeConfig, NodeStatus, UpstreamState, desired_config};
use opni_metrics_core::registry::{Cluster, RegistryError};
use opni_metrics_core::spec::MetricsCapabilitySpec;
use opni_metrics_core::store::{Precondition, Store, StoreError};
use opni_metrics_core::uninstall::UninstallTask;
use opni_metrics_core::{CapabilityName, ClusterId, Revision, Timestamp};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::bootstrap::StoredToken;

mod access;
mod cortex;
pub use access::AccessStateError;
pub use cortex::{HISTORY_LEN, HistoryRecord, Target};

/// Key prefix of clusters.
pub(crate) const CLUSTERS: &str = "clusters/";
/// Key of the default node spec.
pub(crate) const NODE_DEFAULT: &str = "nodeconfig/default";
/// Key prefix of per-node spec overrides.
pub(crate) const NODE_OVERRIDES: &str = "nodeconfig/node/";
/// Key prefix of reported node status.
pub(crate) const STATUS: &str = "status/";
/// Key prefix of uninstall tasks.
pub(crate) const TASKS: &str = "tasks/uninstall/";
/// Key prefix of bootstrap tokens.
pub(crate) const TOKENS: &str = "tokens/";
/// Key prefix of the last join of each cluster (for retried joins).
pub(crate) const JOINS: &str = "joins/";
/// Key prefix of the certificates issued to each cluster: `certs/<cluster>/<serial>`.
pub(crate) const ISSUED: &str = "certs/";
/// Key prefix of revoked certificate serials: `revoked/<serial>`.
pub(crate) const REVOKED: &str = "revoked/";

/// A certificate the gateway issued, or revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CertRecord {
    pub(crate) cluster: ClusterId,
    /// When it expires; a revocation is kept until then.
    pub(crate) not_after: Timestamp,
}
/// Key of the upstream state (what node enablement follows).
pub(crate) const UPSTREAM: &str = "upstream/state";
/// Key prefix of rule sync status.
pub(crate) const RULES: &str = "rules/status/";

/// State errors.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A registry rule refused the change.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The cluster is unknown.
    #[error("cluster {0} is not registered")]
    UnknownCluster(ClusterId),
    /// The cluster already exists.
    #[error("cluster {0} is already registered")]
    ClusterExists(ClusterId),
    /// A stale revision was given.
    #[error("{what} changed since revision {given}; it is now at revision {current}")]
    Stale {
        /// What.
        what: String,
        /// The revision the caller had.
        given: Revision,
        /// The current revision.
        current: Revision,
    },
}

/// Node status as persisted, with the time of the sync that reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredStatus {
    /// The status.
    pub status: NodeStatus,
    /// When it was reported (ms since the epoch).
    pub reported_at: Timestamp,
}

/// Wall-clock now.
pub fn now() -> Timestamp {
    Timestamp(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0))
}

fn decode<T: DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt { key: key.to_owned(), source: Box::new(e) })
}

fn encode<T: Serialize>(value: &T) -> Bytes {
    // plain data always serialises
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// Typed access to the gateway state.
#[derive(Clone)]
pub struct State {
    store: Arc<dyn Store>,
    upstream_default: UpstreamState,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").finish_non_exhaustive()
    }
}

impl State {
    /// State over `store`; `upstream_default` is the upstream state when none is stored (an
    /// external upstream is `Installed`).
    pub fn new(store: Arc<dyn Store>, upstream_default: UpstreamState) -> Self {
        Self { store, upstream_default }
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The upstream state assumed while none is stored.
    pub(crate) fn upstream_default(&self) -> UpstreamState {
        self.upstream_default
    }

    async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, Revision)>, StoreError> {
        match self.store.get(key).await? {
            Some(kv) => Ok(Some((decode(key, &kv.value)?, kv.revision))),
            None => Ok(None),
        }
    }

    async fn list<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<(String, T)>, StoreError> {
        let l = self.store.list(prefix).await?;
        l.items.into_iter().map(|kv| Ok((kv.key.clone(), decode(&kv.key, &kv.value)?))).collect()
    }

    /// A cluster and its revision.
    ///
    /// # Errors
    /// Store errors.
    pub async fn cluster(&self, id: &ClusterId) -> Result<Option<(Cluster, Revision)>, StateError> {
        Ok(self.get(&format!("{CLUSTERS}{id}")).await?)
    }

    /// Every cluster.
    ///
    /// # Errors
    /// Store errors.
    pub async fn clusters(&self) -> Result<Vec<Cluster>, StateError> {
        Ok(self.list::<Cluster>(CLUSTERS).await?.into_iter().map(|(_, c)| c).collect())
    }

    /// Registers a new cluster.
    ///
    /// # Errors
    /// [`StateError::ClusterExists`].
    pub async fn create_cluster(&self, cluster: &Cluster) -> Result<Revision, StateError> {
        let key = format!("{CLUSTERS}{}", cluster.id);
        match self.store.put(&key, encode(cluster), Precondition::Absent).await {
            Ok(r) => Ok(r),
            Err(StoreError::Conflict { .. }) => Err(StateError::ClusterExists(cluster.id.clone())),
            Err(e) => Err(e.into()),
        }
    }

    /// Applies `f` to a cluster with compare-and-put, retrying on concurrent changes.
    ///
    /// # Errors
    /// [`StateError::UnknownCluster`], `f`'s error, store errors.
    pub async fn update_cluster<T>(
        &self,
        id: &ClusterId,
        mut f: impl FnMut(&mut Cluster) -> Result<T, RegistryError>,
    ) -> Result<T, StateError> {
        let key = format!("{CLUSTERS}{id}");
        loop {
            let Some((mut c, rev)) = self.get::<Cluster>(&key).await? else {
                return Err(StateError::UnknownCluster(id.clone()));
            };
            let out = f(&mut c)?;
            match self.store.put(&key, encode(&c), Precondition::Revision(rev)).await {
                Ok(_) => return Ok(out),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Deletes a cluster that has no capability, with its node override and status.
    ///
    /// # Errors
    /// [`RegistryError::CapabilitiesInstalled`], unknown cluster, store errors.
    pub async fn delete_cluster(&self, id: &ClusterId) -> Result<(), StateError> {
        let key = format!("{CLUSTERS}{id}");
        loop {
            let Some((c, rev)) = self.get::<Cluster>(&key).await? else {
                return Err(StateError::UnknownCluster(id.clone()));
            };
            c.ensure_deletable()?;
            match self.store.delete(&key, Precondition::Revision(rev)).await {
                Ok(_) => break,
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        self.store.delete(&format!("{NODE_OVERRIDES}{id}"), Precondition::None).await?;
        self.store.delete(&format!("{STATUS}{id}"), Precondition::None).await?;
        self.store.delete(&format!("{JOINS}{id}"), Precondition::None).await?;
        self.revoke_issued(id).await?;
        Ok(())
    }

    /// Records a certificate issued to `cluster` (so that it can be revoked with the cluster).
    ///
    /// # Errors
    /// Store errors.
    pub(crate) async fn record_issued(
        &self,
        cluster: &ClusterId,
        serial: &str,
        not_after: Timestamp,
    ) -> Result<(), StateError> {
        let rec = CertRecord { cluster: cluster.clone(), not_after };
        self.store.put(&format!("{ISSUED}{cluster}/{serial}"), encode(&rec), Precondition::None).await?;
        // forget this cluster's expired certificates
        let at = now();
        for (key, old) in self.list::<CertRecord>(&format!("{ISSUED}{cluster}/")).await? {
            if old.not_after <= at {
                self.store.delete(&key, Precondition::None).await?;
            }
        }
        Ok(())
    }

    /// Revokes every unexpired certificate issued to `cluster` (their serials are refused from
    /// then on, even if a cluster of the same id joins again), and forgets expired revocations.
    async fn revoke_issued(&self, cluster: &ClusterId) -> Result<(), StateError> {
        let at = now();
        let prefix = format!("{ISSUED}{cluster}/");
        for (key, rec) in self.list::<CertRecord>(&prefix).await? {
            if rec.not_after > at
                && let Some(serial) = key.strip_prefix(&prefix)
            {
                self.store.put(&format!("{REVOKED}{serial}"), encode(&rec), Precondition::None).await?;
            }
            self.store.delete(&key, Precondition::None).await?;
        }
        for (key, rec) in self.list::<CertRecord>(REVOKED).await? {
            if rec.not_after <= at {
                self.store.delete(&key, Precondition::None).await?;
            }
        }
        Ok(())
    }

    /// The default node spec and its revision (built-in default at revision 0 when unset).
    ///
    /// # Errors
    /// Store errors.
    pub async fn default_spec(&self) -> Result<(MetricsCapabilitySpec, Revision), StateError> {
        Ok(self.get(NODE_DEFAULT).await?.unwrap_or_else(|| (MetricsCapabilitySpec::default(), Revision::ZERO)))
    }

    /// A node's override, if set.
    ///
    /// # Errors
    /// Store errors.
    pub async fn node_override(&self, id: &ClusterId) -> Result<Option<(MetricsCapabilitySpec, Revision)>, StateError> {
        Ok(self.get(&format!("{NODE_OVERRIDES}{id}")).await?)
    }

    /// Writes a spec at `key` if the caller's revision is current (`None`: unconditionally).
    async fn put_spec(
        &self,
        key: &str,
        spec: &MetricsCapabilitySpec,
        expected: Option<Revision>,
    ) -> Result<Revision, StateError> {
        let pre = Precondition::expecting(expected);
        self.store.put(key, encode(spec), pre).await.map_err(stale_on_conflict(key, expected))
    }

    /// Deletes a spec at `key` if the caller's revision is current (`None`: unconditionally).
    async fn delete_spec(&self, key: &str, expected: Option<Revision>) -> Result<(), StateError> {
        let pre = expected.map_or(Precondition::None, Precondition::Revision);
        self.store.delete(key, pre).await.map(|_| ()).map_err(stale_on_conflict(key, expected))
    }

    /// The upstream install state.
    ///
    /// # Errors
    /// Store errors.
    pub async fn upstream(&self) -> Result<UpstreamState, StateError> {
        Ok(self.get(UPSTREAM).await?.map_or(self.upstream_default, |(s, _)| s))
    }

    /// Sets the upstream install state.
    ///
    /// # Errors
    /// Store errors.
    pub async fn set_upstream(&self, s: UpstreamState) -> Result<(), StateError> {
        self.store.put(UPSTREAM, encode(&s), Precondition::None).await?;
        Ok(())
    }

    /// The desired config of a node, computed from the current state.
    ///
    /// # Errors
    /// Store errors.
    pub async fn desired(&self, id: &ClusterId) -> Result<NodeConfig, StateError> {
        let cluster = self.cluster(id).await?;
        let metrics = CapabilityName::metrics();
        let entry = cluster.as_ref().and_then(|(c, _)| c.capability(&metrics).cloned());
        let over = self.node_override(id).await?.map(|(s, _)| s);
        let (default, _) = self.default_spec().await?;
        let upstream = self.upstream().await?;
        Ok(desired_config(entry.as_ref(), over.as_ref(), &default, upstream))
    }

    /// The last status a node reported.
    ///
    /// # Errors
    /// Store errors.
    pub async fn status(&self, id: &ClusterId) -> Result<Option<StoredStatus>, StateError> {
        Ok(self.get(&format!("{STATUS}{id}")).await?.map(|(s, _)| s))
    }

    /// Stores many nodes' status in as few store writes as the store can make (`Store::put_all`).
    ///
    /// # Errors
    /// Store errors; a leading part of the batch may have been written.
    pub async fn put_statuses(&self, batch: &[(ClusterId, StoredStatus)]) -> Result<(), StateError> {
        let entries = batch.iter().map(|(id, s)| (format!("{STATUS}{id}"), encode(s))).collect();
        self.store.put_all(entries).await?;
        Ok(())
    }

    /// An uninstall task.
    ///
    /// # Errors
    /// Store errors.
    pub async fn task(&self, id: &ClusterId) -> Result<Option<UninstallTask>, StateError> {
        Ok(self.get(&format!("{TASKS}{id}")).await?.map(|(t, _)| t))
    }

    /// Every uninstall task.
    ///
    /// # Errors
    /// Store errors.
    pub async fn tasks(&self) -> Result<Vec<UninstallTask>, StateError> {
        Ok(self.list::<UninstallTask>(TASKS).await?.into_iter().map(|(_, t)| t).collect())
    }

    /// An uninstall task and the revision of its record.
    ///
    /// # Errors
    /// Store errors.
    pub(crate) async fn task_at(&self, id: &ClusterId) -> Result<Option<(UninstallTask, Revision)>, StateError> {
        Ok(self.get(&format!("{TASKS}{id}")).await?)
    }

    /// Persists an uninstall task if its record is still at `at` (`Revision::ZERO`: absent);
    /// returns the new revision, or `None` when someone else wrote it meanwhile.
    ///
    /// # Errors
    /// Store errors.
    pub(crate) async fn put_task_at(&self, t: &UninstallTask, at: Revision) -> Result<Option<Revision>, StateError> {
        let pre = if at == Revision::ZERO { Precondition::Absent } else { Precondition::Revision(at) };
        match self.store.put(&format!("{TASKS}{}", t.cluster), encode(t), pre).await {
            Ok(r) => Ok(Some(r)),
            Err(StoreError::Conflict { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The last rule sync of a cluster.
    ///
    /// # Errors
    /// Store errors.
    pub async fn rule_status(&self, id: &ClusterId) -> Result<Option<crate::rule_sync::RuleSyncStatus>, StateError> {
        Ok(self.get(&format!("{RULES}{id}")).await?.map(|(s, _)| s))
    }

    /// Stores the last rule sync of a cluster.
    ///
    /// # Errors
    /// Store errors.
    pub async fn put_rule_status(
        &self,
        id: &ClusterId,
        s: &crate::rule_sync::RuleSyncStatus,
    ) -> Result<(), StateError> {
        self.store.put(&format!("{RULES}{id}"), encode(s), Precondition::None).await?;
        Ok(())
    }

    /// A bootstrap token and its revision.
    pub(crate) async fn token(&self, id: &str) -> Result<Option<(StoredToken, Revision)>, StateError> {
        Ok(self.get(&format!("{TOKENS}{id}")).await?)
    }

    /// Every bootstrap token.
    pub(crate) async fn tokens(&self) -> Result<Vec<StoredToken>, StateError> {
        Ok(self.list::<StoredToken>(TOKENS).await?.into_iter().map(|(_, t)| t).collect())
    }

    /// Stores a new token (its id must be unused).
    pub(crate) async fn create_token(&self, t: &StoredToken) -> Result<(), StateError> {
        self.store.put(&format!("{TOKENS}{}", t.id), encode(t), Precondition::Absent).await?;
        Ok(())
    }

    /// Replaces a token if it is still at `rev`; `Ok(false)` when it changed meanwhile.
    pub(crate) async fn replace_token(&self, t: &StoredToken, rev: Revision) -> Result<bool, StateError> {
        match self.store.put(&format!("{TOKENS}{}", t.id), encode(t), Precondition::Revision(rev)).await {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The last join of cluster `id`, if it joined with a token.
    pub(crate) async fn join(&self, id: &ClusterId) -> Result<Option<crate::bootstrap::JoinRecord>, StateError> {
        Ok(self.get(&format!("{JOINS}{id}")).await?.map(|(j, _)| j))
    }

    /// The last join of every cluster that joined with a token.
    pub(crate) async fn joins(&self) -> Result<Vec<crate::bootstrap::JoinRecord>, StateError> {
        Ok(self.list::<crate::bootstrap::JoinRecord>(JOINS).await?.into_iter().map(|(_, j)| j).collect())
    }

    /// Records a cluster's join.
    pub(crate) async fn put_join(&self, j: &crate::bootstrap::JoinRecord) -> Result<(), StateError> {
        self.store.put(&format!("{JOINS}{}", j.cluster), encode(j), Precondition::None).await?;
        Ok(())
    }

    /// Deletes a token; `false` when there was none.
    pub(crate) async fn delete_token(&self, id: &str) -> Result<bool, StateError> {
        Ok(self.store.delete(&format!("{TOKENS}{id}"), Precondition::None).await?.is_some())
    }

    /// Sets the default node spec (`None` revision: unconditionally).
    ///
    /// # Errors
    /// [`StateError::Stale`], store errors.
    pub async fn put_default_spec(
        &self,
        spec: &MetricsCapabilitySpec,
        expected: Option<Revision>,
    ) -> Result<Revision, StateError> {
        self.put_spec(NODE_DEFAULT, spec, expected).await
    }

    /// Sets a node's override (`None` revision: unconditionally).
    ///
    /// # Errors
    /// [`StateError::Stale`], store errors.
    pub async fn put_node_override(
        &self,
        id: &ClusterId,
        spec: &MetricsCapabilitySpec,
        expected: Option<Revision>,
    ) -> Result<Revision, StateError> {
        self.put_spec(&format!("{NODE_OVERRIDES}{id}"), spec, expected).await
    }

    /// Removes the default node spec (back to the built-in one).
    ///
    /// # Errors
    /// [`StateError::Stale`], store errors.
    pub async fn reset_default_spec(&self, expected: Option<Revision>) -> Result<(), StateError> {
        self.delete_spec(NODE_DEFAULT, expected).await
    }

    /// Removes a node's override (back to the default).
    ///
    /// # Errors
    /// [`StateError::Stale`], store errors.
    pub async fn reset_node_override(&self, id: &ClusterId, expected: Option<Revision>) -> Result<(), StateError> {
        self.delete_spec(&format!("{NODE_OVERRIDES}{id}"), expected).await
    }

    /// A cluster that must exist.
    ///
    /// # Errors
    /// [`StateError::UnknownCluster`], store errors.
    pub async fn known_cluster(&self, id: &ClusterId) -> Result<(Cluster, Revision), StateError> {
        self.cluster(id).await?.ok_or_else(|| StateError::UnknownCluster(id.clone()))
    }
}

/// A failed write's error: a precondition conflict is [`StateError::Stale`] naming `what` and
/// both revisions, anything else the store's error.
fn stale_on_conflict(what: &str, given: Option<Revision>) -> impl FnOnce(StoreError) -> StateError + '_ {
    move |e| match e {
        StoreError::Conflict { actual, .. } => {
            StateError::Stale { what: what.to_owned(), given: given.unwrap_or_default(), current: actual }
        }
        e => e.into(),
    }
}

/// Which clusters a change to `key` may affect: `Some(None)` for all of them, `Some(Some(id))`
/// for one, `None` for none.
pub(crate) fn affected(key: &str) -> Option<Option<ClusterId>> {
    if key == NODE_DEFAULT || key == UPSTREAM {
        return Some(None);
    }
    for prefix in [CLUSTERS, NODE_OVERRIDES] {
        if let Some(id) = key.strip_prefix(prefix) {
            return ClusterId::new(id).ok().map(Some);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affected_keys() {
        assert_eq!(affected(NODE_DEFAULT), Some(None));
        assert_eq!(affected(UPSTREAM), Some(None));
        assert_eq!(affected("clusters/c1"), Some(Some(ClusterId::new("c1").unwrap())));
        assert_eq!(affected("nodeconfig/node/c2"), Some(Some(ClusterId::new("c2").unwrap())));
        assert_eq!(affected("status/c1"), None);
        assert_eq!(affected("tasks/uninstall/c1"), None);
        assert_eq!(affected("tokens/x"), None);
    }

    #[test]
    fn the_view_watches_every_key_it_reads_and_not_status() {
        let watched = |k: &str| crate::sync::VIEW_KEYS.iter().any(|p| k.starts_with(p));
        for key in [NODE_DEFAULT, UPSTREAM, "clusters/c1", "nodeconfig/node/c2", "revoked/0a1b"] {
            assert!(watched(key), "{key} is not watched");
        }
        for key in ["status/c1", "rules/status/c1", "tasks/uninstall/c1", "tokens/x", "certs/c1/0a", "joins/c1"] {
            assert!(!watched(key), "{key} is watched");
        }
    }
}
