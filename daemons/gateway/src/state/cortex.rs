//! The CortexOps configurations in the store: the active and the default one, each revisioned
//! (the store revision of its key), with a bounded history of every write.

use opni_metrics_core::cluster::ClusterConfig;
use opni_metrics_core::store::Precondition;
use opni_metrics_core::{Revision, Timestamp};
use serde::{Deserialize, Serialize};

use super::{State, StateError, encode, now, stale_on_conflict};

const ACTIVE: &str = "cortex/config/active";
const DEFAULT: &str = "cortex/config/default";

/// Revisions kept in each configuration's history.
pub const HISTORY_LEN: usize = 100;

/// Which CortexOps configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The active configuration (what is installed).
    Active,
    /// The default configuration (what a reset of the active one restores).
    Default,
}

impl Target {
    fn key(self) -> &'static str {
        match self {
            Self::Active => ACTIVE,
            Self::Default => DEFAULT,
        }
    }
    /// How errors name it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Active => "the active Cortex configuration",
            Self::Default => "the default Cortex configuration",
        }
    }

    fn history(self) -> &'static str {
        match self {
            Self::Active => "cortex/history/active/",
            Self::Default => "cortex/history/default/",
        }
    }
}

/// A stored configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    config: ClusterConfig,
    written_at: Timestamp,
}

/// One revision of a configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryRecord {
    /// The revision.
    pub revision: Revision,
    /// When it was written.
    pub at: Timestamp,
    /// The configuration; `None` for a reset of the default (back to the built-in one).
    pub config: Option<ClusterConfig>,
    /// Whether the write was a reset.
    pub reset: bool,
}

impl State {
    /// A stored configuration and its revision; `None` when none is stored.
    ///
    /// # Errors
    /// Store errors.
    pub async fn cortex_config(&self, target: Target) -> Result<Option<(ClusterConfig, Revision)>, StateError> {
        Ok(self.get::<Stored>(target.key()).await?.map(|(s, r)| (s.config, r)))
    }

    /// The default configuration: stored, or the built-in one at revision 0.
    ///
    /// # Errors
    /// Store errors.
    pub async fn cortex_default(&self) -> Result<(ClusterConfig, Revision), StateError> {
        Ok(self.cortex_config(Target::Default).await?.unwrap_or_else(|| (ClusterConfig::default(), Revision::ZERO)))
    }

    /// The active configuration: stored, or the default one at revision 0.
    ///
    /// # Errors
    /// Store errors.
    pub async fn cortex_active(&self) -> Result<(ClusterConfig, Revision), StateError> {
        match self.cortex_config(Target::Active).await? {
            Some(c) => Ok(c),
            None => Ok((self.cortex_default().await?.0, Revision::ZERO)),
        }
    }

    /// Stores `config` if the caller's revision is current (`None`: unconditionally), and
    /// records it in the history.
    ///
    /// # Errors
    /// [`StateError::Stale`] naming both revisions, store errors.
    pub async fn put_cortex_config(
        &self,
        target: Target,
        config: &ClusterConfig,
        expected: Option<Revision>,
    ) -> Result<Revision, StateError> {
        let at = now();
        let stored = Stored { config: config.clone(), written_at: at };
        let rev = self
            .store
            .put(target.key(), encode(&stored), Precondition::expecting(expected))
            .await
            .map_err(stale_on_conflict(target.describe(), expected))?;
        self.record(target, HistoryRecord { revision: rev, at, config: Some(config.clone()), reset: false }).await;
        Ok(rev)
    }

    /// Deletes the stored default configuration (back to the built-in one) if the caller's
    /// revision is current, and records the reset.
    ///
    /// # Errors
    /// [`StateError::Stale`], store errors.
    pub async fn reset_cortex_default(&self, expected: Option<Revision>) -> Result<(), StateError> {
        let pre = expected.map_or(Precondition::None, Precondition::Revision);
        let deleted =
            self.store.delete(DEFAULT, pre).await.map_err(stale_on_conflict(Target::Default.describe(), expected))?;
        if let Some(rev) = deleted {
            self.record(Target::Default, HistoryRecord { revision: rev, at: now(), config: None, reset: true }).await;
        }
        Ok(())
    }

    /// Marks the newest history record of `target` as a reset (the active configuration
    /// replaced by the default).
    pub(crate) async fn mark_reset(&self, target: Target, revision: Revision) {
        let key = format!("{}{:020}", target.history(), revision.0);
        if let Ok(Some((mut r, rev))) = self.get::<HistoryRecord>(&key).await {
            r.reset = true;
            let _ = self.store.put(&key, encode(&r), Precondition::Revision(rev)).await;
        }
    }

    /// Every recorded revision of `target`, oldest first (at most [`HISTORY_LEN`]).
    ///
    /// # Errors
    /// Store errors.
    pub async fn cortex_history(&self, target: Target) -> Result<Vec<HistoryRecord>, StateError> {
        // keys are zero-padded revisions: the listing's key order is revision order
        Ok(self.list::<HistoryRecord>(target.history()).await?.into_iter().map(|(_, r)| r).collect())
    }

    /// Appends to the history and drops the oldest records beyond [`HISTORY_LEN`]. The history
    /// is a record for operators, written after the configuration itself: a failure here is
    /// logged, never undoes the write.
    async fn record(&self, target: Target, r: HistoryRecord) {
        let key = format!("{}{:020}", target.history(), r.revision.0);
        if let Err(e) = self.store.put(&key, encode(&r), Precondition::None).await {
            tracing::warn!(error = %e, "cannot record the configuration history");
            return;
        }
        if let Ok(l) = self.store.list(target.history()).await
            && l.items.len() > HISTORY_LEN
        {
            for old in &l.items[..l.items.len() - HISTORY_LEN] {
                let _ = self.store.delete(&old.key, Precondition::None).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use opni_metrics_core::node::UpstreamState;
    use opni_metrics_core::store::MemoryStore;

    use super::*;

    #[tokio::test]
    async fn revisions_conflicts_and_history() {
        let st = State::new(Arc::new(MemoryStore::default()), UpstreamState::Installed);
        assert_eq!(st.cortex_active().await.unwrap().1, Revision::ZERO);
        let mut c = ClusterConfig::default();
        let r1 = st.put_cortex_config(Target::Active, &c, Some(Revision::ZERO)).await.unwrap();
        c.retention = opni_metrics_core::duration::PromDuration::from_secs(3 * 3600);
        let e = st.put_cortex_config(Target::Active, &c, Some(Revision::ZERO)).await.unwrap_err();
        assert!(e.to_string().contains(&format!("now at revision {r1}")), "{e}");
        let r2 = st.put_cortex_config(Target::Active, &c, Some(r1)).await.unwrap();
        let h = st.cortex_history(Target::Active).await.unwrap();
        assert_eq!(h.iter().map(|r| r.revision).collect::<Vec<_>>(), vec![r1, r2]);
        assert!(st.cortex_history(Target::Default).await.unwrap().is_empty());
        st.put_cortex_config(Target::Default, &c, None).await.unwrap();
        st.reset_cortex_default(None).await.unwrap();
        let h = st.cortex_history(Target::Default).await.unwrap();
        assert_eq!(h.iter().map(|r| r.reset).collect::<Vec<_>>(), vec![false, true]);
        assert_eq!(st.cortex_default().await.unwrap(), (ClusterConfig::default(), Revision::ZERO));
    }
}
