//! Who may push: an in-memory view of the registry (which clusters exist, and the state of their
//! `metrics` capability) and of revoked certificate serials, fed by the store watch, so that
//! every agent call is checked without a store read.
//!
//! When a cluster disappears from the registry, its open connections on this replica are closed
//! and its notification stream ends: whatever it had in flight fails, and what it sends next is
//! refused.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures::StreamExt;
use opni_metrics_core::registry::Cluster;
use opni_metrics_core::store::WatchEvent;
use opni_metrics_core::{CapabilityName, ClusterId, Revision};
use opni_metrics_transport::Tasks;
use opni_metrics_transport::grpc::{Connections, PeerIdentity};
use tonic::{Request, Status};

use crate::auth::cluster_of;
use crate::state::{CLUSTERS, REVOKED, State};
use crate::sync::Hub;

/// The `metrics` capability of a registered cluster, as the registry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Metrics {
    /// Installed: pushes are admitted.
    Installed,
    /// Being uninstalled: pushes are refused (the data may be being deleted).
    Uninstalling,
    /// Not installed.
    Absent,
}

impl Metrics {
    fn of(c: &Cluster) -> Self {
        match c.capability(&CapabilityName::metrics()) {
            Some(e) if e.is_uninstalling() => Self::Uninstalling,
            Some(_) => Self::Installed,
            None => Self::Absent,
        }
    }
}

#[derive(Debug, Default)]
struct View {
    clusters: HashMap<ClusterId, Metrics>,
    revoked: HashSet<String>,
}

/// The admission view. Cheap to share.
#[derive(Debug)]
pub(crate) struct Admission {
    view: RwLock<View>,
    loaded: AtomicBool,
    connections: Connections,
    hub: Hub,
}

impl Admission {
    /// Starts keeping the view of `state`'s registry, in `tasks`; closes the connections (in
    /// `connections`) and notification streams (in `hub`) of clusters that are deleted.
    pub(crate) fn start(state: State, connections: Connections, hub: Hub, tasks: &Tasks) -> Arc<Self> {
        let this = Arc::new(Self { view: RwLock::default(), loaded: AtomicBool::new(false), connections, hub });
        let me = Arc::clone(&this);
        tasks.spawn("admission-watch", async move {
            loop {
                match me.load(&state).await {
                    Ok(from) => me.follow(&state, from).await,
                    Err(e) => tracing::warn!(error = %e, "cannot load the registry for admission; retrying"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        this
    }

    /// Lists the registry and the revoked serials into a fresh view; returns the revision to
    /// watch from.
    async fn load(&self, state: &State) -> Result<Revision, crate::state::StateError> {
        let store = state.store();
        let clusters = store.list(CLUSTERS).await?;
        let revoked = store.list(REVOKED).await?;
        let mut view = View::default();
        for kv in &clusters.items {
            match serde_json::from_slice::<Cluster>(&kv.value) {
                Ok(c) => {
                    view.clusters.insert(c.id.clone(), Metrics::of(&c));
                }
                Err(e) => tracing::warn!(key = %kv.key, error = %e, "unreadable cluster record; not admitted"),
            }
        }
        for kv in &revoked.items {
            if let Some(serial) = kv.key.strip_prefix(REVOKED) {
                view.revoked.insert(serial.to_owned());
            }
        }
        let gone: Vec<ClusterId> = {
            let mut v = self.view.write().unwrap_or_else(PoisonError::into_inner);
            let gone = v.clusters.keys().filter(|id| !view.clusters.contains_key(*id)).cloned().collect();
            *v = view;
            gone
        };
        for id in gone {
            self.revoked(&id).await;
        }
        self.loaded.store(true, Ordering::Release);
        // events between the two listings are replayed; each carries its whole value, so
        // replaying is harmless
        Ok(clusters.revision.min(revoked.revision))
    }

    /// Applies store events from `from` until the watch fails.
    async fn follow(&self, state: &State, from: Revision) {
        let mut events = match state.store().watch("", from).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the registry for admission; reloading");
                return;
            }
        };
        while let Some(ev) = events.next().await {
            match ev {
                Ok(ev) => self.apply(ev).await,
                Err(e) => {
                    tracing::warn!(error = %e, "registry watch failed; reloading");
                    return;
                }
            }
        }
    }

    async fn apply(&self, ev: WatchEvent) {
        match ev {
            WatchEvent::Put(kv) => {
                if let Some(serial) = kv.key.strip_prefix(REVOKED) {
                    self.write().revoked.insert(serial.to_owned());
                } else if kv.key.starts_with(CLUSTERS) {
                    match serde_json::from_slice::<Cluster>(&kv.value) {
                        Ok(c) => {
                            self.write().clusters.insert(c.id.clone(), Metrics::of(&c));
                        }
                        Err(e) => tracing::warn!(key = %kv.key, error = %e, "unreadable cluster record"),
                    }
                }
            }
            WatchEvent::Delete { key, .. } => {
                if let Some(serial) = key.strip_prefix(REVOKED) {
                    self.write().revoked.remove(serial);
                } else if let Some(id) = key.strip_prefix(CLUSTERS) {
                    let Ok(id) = ClusterId::new(id) else { return };
                    if self.write().clusters.remove(&id).is_some() {
                        self.revoked(&id).await;
                    }
                }
            }
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// A cluster left the registry: end its stream and close its connections here.
    async fn revoked(&self, id: &ClusterId) {
        let n = self.connections.close(id);
        self.hub.close(id.clone()).await;
        tracing::info!(cluster = %id, connections = n, "cluster deleted: its connections are closed");
    }

    /// The caller's cluster and what the registry says of it (`None`: not registered).
    ///
    /// # Errors
    /// `UNAUTHENTICATED` without an identity; `PERMISSION_DENIED` for a revoked certificate;
    /// `UNAVAILABLE` until the registry is loaded.
    #[allow(clippy::result_large_err)]
    pub(crate) fn caller<T>(&self, req: &Request<T>) -> Result<(ClusterId, Option<Metrics>), Status> {
        let id = cluster_of(req)?;
        if !self.loaded.load(Ordering::Acquire) {
            return Err(Status::unavailable("the gateway is still loading the registry; retry"));
        }
        let serial = req.extensions().get::<PeerIdentity>().and_then(|p| p.serial.as_deref());
        let view = self.view.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = serial
            && view.revoked.contains(s)
        {
            return Err(Status::permission_denied(format!(
                "the certificate (serial {s}) of cluster {id} was revoked when the cluster was deleted"
            )));
        }
        let m = view.clusters.get(&id).copied();
        Ok((id, m))
    }

    /// The caller's cluster, if it is registered.
    ///
    /// # Errors
    /// As [`Admission::caller`], and `PERMISSION_DENIED` for a cluster that is not registered.
    #[allow(clippy::result_large_err)]
    pub(crate) fn registered<T>(&self, req: &Request<T>) -> Result<(ClusterId, Metrics), Status> {
        match self.caller(req)? {
            (id, Some(m)) => Ok((id, m)),
            (id, None) => Err(Status::permission_denied(format!(
                "cluster {id} is not registered (deleted, or never joined); join it, or register it with `opni-metrics clusters create`"
            ))),
        }
    }

    /// The caller's cluster, if it may write metrics: registered, with the `metrics`
    /// capability installed and not being uninstalled.
    ///
    /// # Errors
    /// As [`Admission::registered`], and `FAILED_PRECONDITION` without the capability.
    #[allow(clippy::result_large_err)]
    pub(crate) fn writer<T>(&self, req: &Request<T>) -> Result<ClusterId, Status> {
        match self.registered(req)? {
            (id, Metrics::Installed) => Ok(id),
            (id, Metrics::Uninstalling) => Err(Status::failed_precondition(format!(
                "the metrics capability of cluster {id} is being uninstalled; nothing more is written"
            ))),
            (id, Metrics::Absent) => Err(Status::failed_precondition(format!(
                "the metrics capability is not installed on cluster {id}; install it first"
            ))),
        }
    }

    /// Whether the view is loaded (for readiness).
    pub(crate) fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }
}
