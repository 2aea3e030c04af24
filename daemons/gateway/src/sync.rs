//! Sync over the wire: the hub that knows every connected agent and sends `SyncNow`, the store
//! watcher that decides whom a change affects, and the `NodeSync` service.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use futures::{Stream, StreamExt};
use opni_metrics_core::backoff::Rng;
use opni_metrics_core::node::{NodeStatus, sync_decision};
use opni_metrics_core::{CapabilityName, ClusterId, Timestamp};
use opni_metrics_proto::node::v1::node_sync_server::NodeSync;
use opni_metrics_proto::node::v1::{
    Heartbeat, Notification, NotificationsRequest, SyncNow, SyncRequest, SyncResponse, notification,
};
use opni_metrics_transport::Tasks;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

use super::errors::status;
use super::state::{State, StoredStatus, affected, now};
use crate::auth::cluster_of;

/// Timing of periodic notifications.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SyncTiming {
    /// Every agent gets `SyncNow` this often (± `jitter`), healing any lost notification.
    pub resync_interval: Duration,
    /// Fraction of the interval randomised.
    pub jitter: f64,
    /// Heartbeats on the notification streams.
    pub heartbeat_interval: Duration,
}

impl Default for SyncTiming {
    fn default() -> Self {
        Self { resync_interval: Duration::from_secs(300), jitter: 0.2, heartbeat_interval: Duration::from_secs(30) }
    }
}

mod hub;
pub use hub::{AgentStream, Hub, Presence, os_seed};

/// Watches the store and notifies exactly the agents a change may affect. Restarts from a fresh
/// listing (notifying everyone, which is always safe) if the watch fails. Runs in `tasks`.
pub fn watch_store(state: State, hub: Hub, tasks: &Tasks) {
    tasks.spawn("store-watch", async move {
        loop {
            let from = match state.revision().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "store unavailable; retrying the watch");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut events = match state.store().watch("", from).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the store; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            hub.notify(None).await;
            while let Some(ev) = events.next().await {
                match ev {
                    Ok(ev) => {
                        if let Some(who) = affected(ev.key()) {
                            hub.notify(who).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "store watch failed; resubscribing");
                        break;
                    }
                }
            }
        }
    });
}

/// The last status each node reported, and when; persisted when it changes, by one writer task
/// that coalesces (the latest status of a node wins), so a burst of reports never queues
/// replies behind durable commits.
#[derive(Debug, Default)]
pub struct StatusCache {
    inner: Mutex<HashMap<ClusterId, (NodeStatus, Timestamp)>>,
    pending: Mutex<HashMap<ClusterId, StoredStatus>>,
    wake: tokio::sync::Notify,
}

impl StatusCache {
    /// Starts the writer task persisting reported statuses into `state`, in `tasks`.
    pub fn start_writer(self: &Arc<Self>, state: State, tasks: &Tasks) {
        let this = Arc::clone(self);
        tasks.spawn("status-writer", async move {
            loop {
                this.wake.notified().await;
                let batch: Vec<(ClusterId, StoredStatus)> =
                    this.pending.lock().unwrap_or_else(PoisonError::into_inner).drain().collect();
                for (id, s) in batch {
                    if let Err(e) = state.put_status(&id, &s).await {
                        tracing::warn!(cluster = %id, error = %e, "cannot persist node status");
                    }
                }
            }
        });
    }

    fn persist(&self, id: ClusterId, s: StoredStatus) {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).insert(id, s);
        self.wake.notify_one();
    }

    /// The last status of `id` and its time, if reported since this gateway started.
    pub fn get(&self, id: &ClusterId) -> Option<(NodeStatus, Timestamp)> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).get(id).cloned()
    }

    /// Records a status; returns whether it differs from the last one.
    fn record(&self, id: &ClusterId, s: NodeStatus, at: Timestamp) -> bool {
        let mut m = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = m.get(id).is_none_or(|(old, _)| *old != s);
        m.insert(id.clone(), (s, at));
        changed
    }
}

/// The `NodeSync` gRPC service.
#[derive(Debug, Clone)]
pub struct NodeSyncService {
    state: State,
    hub: Hub,
    statuses: Arc<StatusCache>,
    stream_age: Option<Duration>,
    admission: Option<Arc<crate::admission::Admission>>,
}

impl NodeSyncService {
    /// The service.
    pub fn new(state: State, hub: Hub, statuses: Arc<StatusCache>) -> Self {
        Self { state, hub, statuses, stream_age: None, admission: None }
    }

    /// Checks callers against the registry view: a revoked certificate is refused, and the
    /// status of a cluster that is not registered is not kept.
    pub(crate) fn with_admission(mut self, admission: Arc<crate::admission::Admission>) -> Self {
        self.admission = Some(admission);
        self
    }

    /// Ends each notification stream after `age` (the listener's maximum connection age): a
    /// connection told to go away closes only when its last stream ends, and the agent opens
    /// the stream again, on a new connection with its current certificate.
    pub fn with_stream_age(mut self, age: Duration) -> Self {
        self.stream_age = Some(age);
        self
    }
}

#[tonic::async_trait]
impl NodeSync for NodeSyncService {
    async fn sync(&self, request: Request<SyncRequest>) -> Result<Response<SyncResponse>, Status> {
        let (id, registered) = match &self.admission {
            Some(a) => {
                let (id, m) = a.caller(&request)?;
                (id, m.is_some())
            }
            None => (cluster_of(&request)?, true),
        };
        let (current, reported) = request.into_inner().into_core().map_err(Status::from)?;
        let at = now();
        // a cluster that is not registered is told its node is disabled (what the desired
        // state of an unknown cluster is), and its reports are not kept
        if registered && self.statuses.record(&id, reported.clone(), at) {
            // persisted in the background: a reply never waits for a durable commit
            self.statuses.persist(id.clone(), StoredStatus { status: reported, reported_at: at });
        }
        let desired = self.state.desired(&id).await.map_err(status)?;
        Ok(Response::new(sync_decision(current.as_ref(), &desired).into()))
    }

    type NotificationsStream = AgentStream;

    async fn notifications(&self, request: Request<NotificationsRequest>) -> Result<Response<AgentStream>, Status> {
        let id = match &self.admission {
            Some(a) => a.caller(&request)?.0,
            None => cluster_of(&request)?,
        };
        let mut stream = self.hub.subscribe(id.clone()).await?;
        if let Some(age) = self.stream_age {
            stream = stream.with_max_age(age);
        }
        tracing::debug!(cluster = %id, "agent connected");
        Ok(Response::new(stream))
    }
}

/// [`Presence`] in etcd: `presence/<cluster>/<replica>` keys bound to this replica's lease (an
/// `opni_metrics_store::etcd::Session`), so a replica that dies takes its records with it.
#[cfg(feature = "etcd")]
pub struct SessionPresence {
    session: Arc<opni_metrics_store::etcd::Session>,
    store: Arc<dyn opni_metrics_core::store::Store>,
    replica: String,
}

#[cfg(feature = "etcd")]
impl SessionPresence {
    /// Presence records of replica `replica` (unique among the replicas: a pod name) in
    /// `session`, read back through `store` (the same etcd).
    pub fn new(
        session: Arc<opni_metrics_store::etcd::Session>,
        store: Arc<dyn opni_metrics_core::store::Store>,
        replica: impl Into<String>,
    ) -> Self {
        Self { session, store, replica: replica.into().replace('/', "_") }
    }
}

#[cfg(feature = "etcd")]
impl Presence for SessionPresence {
    fn set(&self, cluster: &ClusterId, held: bool) {
        let key = format!("presence/{cluster}/{}", self.replica);
        if held {
            self.session.put(&key, bytes::Bytes::from(self.replica.clone().into_bytes()));
        } else {
            self.session.delete(&key);
        }
    }

    fn held_anywhere<'a>(&'a self, cluster: &'a ClusterId) -> futures::future::BoxFuture<'a, bool> {
        Box::pin(async move {
            match self.store.list(&format!("presence/{cluster}/")).await {
                Ok(l) => !l.items.is_empty(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read agent presence");
                    false
                }
            }
        })
    }
}
