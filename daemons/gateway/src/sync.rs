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

/// Desired state in memory: what `Sync` answers without reading the store. Fed by
/// [`watch_store`], which applies each change here *before* it notifies the agents the change
/// affects, so an agent told `SyncNow` always syncs against a view that has the change.
#[derive(Debug, Default)]
pub struct DesiredView {
    inner: std::sync::RwLock<Option<ViewData>>,
}

#[derive(Debug)]
struct ViewData {
    capabilities: HashMap<ClusterId, Option<opni_metrics_core::registry::CapabilityEntry>>,
    overrides: HashMap<ClusterId, opni_metrics_core::spec::MetricsCapabilitySpec>,
    default: opni_metrics_core::spec::MetricsCapabilitySpec,
    upstream: opni_metrics_core::node::UpstreamState,
}

impl DesiredView {
    /// The desired config of `id`, or `None` while the view is not loaded (read the store).
    pub fn desired(&self, id: &ClusterId) -> Option<opni_metrics_core::node::NodeConfig> {
        let g = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let v = g.as_ref()?;
        let entry = v.capabilities.get(id).and_then(Option::as_ref);
        Some(opni_metrics_core::node::desired_config(entry, v.overrides.get(id), &v.default, v.upstream))
    }

    /// Forgets everything (the watch failed: the store is read until the view is loaded again).
    fn clear(&self) {
        *self.inner.write().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Loads the view from the store; returns the revision to watch from.
    async fn load(&self, state: &State) -> Result<opni_metrics_core::Revision, super::state::StateError> {
        use super::state::{CLUSTERS, NODE_DEFAULT, NODE_OVERRIDES, UPSTREAM};
        let store = state.store();
        let clusters = store.list(CLUSTERS).await?;
        let overrides = store.list(NODE_OVERRIDES).await?;
        let mut v = ViewData {
            capabilities: HashMap::new(),
            overrides: HashMap::new(),
            default: opni_metrics_core::spec::MetricsCapabilitySpec::default(),
            upstream: state.upstream_default(),
        };
        for kv in &clusters.items {
            v.apply_put(&kv.key, &kv.value);
        }
        for kv in &overrides.items {
            v.apply_put(&kv.key, &kv.value);
        }
        let mut from = clusters.revision.min(overrides.revision);
        for key in [NODE_DEFAULT, UPSTREAM] {
            // a single key: its listing is exact (prefix of itself and nothing else here)
            let l = store.list(key).await?;
            for kv in l.items.iter().filter(|kv| kv.key == key) {
                v.apply_put(&kv.key, &kv.value);
            }
            from = from.min(l.revision);
        }
        *self.inner.write().unwrap_or_else(PoisonError::into_inner) = Some(v);
        Ok(from)
    }

    fn apply(
        &self,
        ev: &opni_metrics_core::store::WatchEvent,
        upstream_default: opni_metrics_core::node::UpstreamState,
    ) {
        let mut g = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let Some(v) = g.as_mut() else { return };
        match ev {
            opni_metrics_core::store::WatchEvent::Put(kv) => v.apply_put(&kv.key, &kv.value),
            opni_metrics_core::store::WatchEvent::Delete { key, .. } => v.apply_delete(key, upstream_default),
        }
    }
}

impl ViewData {
    fn apply_put(&mut self, key: &str, value: &[u8]) {
        use super::state::{CLUSTERS, NODE_DEFAULT, NODE_OVERRIDES, UPSTREAM};
        let warn = |e: serde_json::Error| tracing::warn!(key, error = %e, "unreadable record; the view keeps the last good one");
        if let Some(id) = key.strip_prefix(CLUSTERS) {
            match serde_json::from_slice::<opni_metrics_core::registry::Cluster>(value) {
                Ok(c) => {
                    let entry = c.capability(&CapabilityName::metrics()).cloned();
                    if let Ok(id) = ClusterId::new(id) {
                        self.capabilities.insert(id, entry);
                    }
                }
                Err(e) => warn(e),
            }
        } else if let Some(id) = key.strip_prefix(NODE_OVERRIDES) {
            match serde_json::from_slice(value) {
                Ok(spec) => {
                    if let Ok(id) = ClusterId::new(id) {
                        self.overrides.insert(id, spec);
                    }
                }
                Err(e) => warn(e),
            }
        } else if key == NODE_DEFAULT {
            match serde_json::from_slice(value) {
                Ok(spec) => self.default = spec,
                Err(e) => warn(e),
            }
        } else if key == UPSTREAM {
            match serde_json::from_slice(value) {
                Ok(u) => self.upstream = u,
                Err(e) => warn(e),
            }
        }
    }

    fn apply_delete(&mut self, key: &str, upstream_default: opni_metrics_core::node::UpstreamState) {
        use super::state::{CLUSTERS, NODE_DEFAULT, NODE_OVERRIDES, UPSTREAM};
        if let Some(id) = key.strip_prefix(CLUSTERS) {
            if let Ok(id) = ClusterId::new(id) {
                self.capabilities.remove(&id);
            }
        } else if let Some(id) = key.strip_prefix(NODE_OVERRIDES) {
            if let Ok(id) = ClusterId::new(id) {
                self.overrides.remove(&id);
            }
        } else if key == NODE_DEFAULT {
            self.default = opni_metrics_core::spec::MetricsCapabilitySpec::default();
        } else if key == UPSTREAM {
            self.upstream = upstream_default;
        }
    }
}

/// Watches the store, keeps `view` and notifies exactly the agents a change may affect (after
/// the view has it). Restarts from a fresh listing (notifying everyone, which is always safe)
/// if the watch fails. Also reloads the view every `refresh` without notifying anyone, so that
/// a change the watch never delivered still reaches agents at their periodic resync (as a lost
/// `SyncNow` does). Runs in `tasks`.
pub fn watch_store(state: State, hub: Hub, view: Arc<DesiredView>, refresh: Duration, tasks: &Tasks) {
    tasks.spawn("store-watch", async move {
        loop {
            let from = match view.load(&state).await {
                Ok(r) => r,
                Err(e) => {
                    view.clear();
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
            let mut reload = tokio::time::interval_at(tokio::time::Instant::now() + refresh, refresh);
            reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let ev = tokio::select! {
                    ev = events.next() => ev,
                    _ = reload.tick() => {
                        // events the watch delivers afterwards that the listing already has are
                        // applied again in order, which ends at the same state
                        if let Err(e) = view.load(&state).await {
                            tracing::warn!(error = %e, "cannot reload the desired state; keeping the view");
                        }
                        continue;
                    }
                };
                let Some(ev) = ev else { break };
                match ev {
                    Ok(ev) => {
                        if let Some(who) = affected(ev.key()) {
                            view.apply(&ev, state.upstream_default());
                            hub.notify(who).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "store watch failed; resubscribing");
                        view.clear();
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
    view: Option<Arc<DesiredView>>,
}

impl NodeSyncService {
    /// The service.
    pub fn new(state: State, hub: Hub, statuses: Arc<StatusCache>) -> Self {
        Self { state, hub, statuses, stream_age: None, admission: None, view: None }
    }

    /// Checks callers against the registry view: a revoked certificate is refused, and the
    /// status of a cluster that is not registered is not kept.
    pub(crate) fn with_admission(mut self, admission: Arc<crate::admission::Admission>) -> Self {
        self.admission = Some(admission);
        self
    }

    /// Answers `Sync` from `view` (while it is loaded) instead of reading the store.
    pub fn with_view(mut self, view: Arc<DesiredView>) -> Self {
        self.view = Some(view);
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
        let desired = match self.view.as_ref().and_then(|v| v.desired(&id)) {
            Some(d) => d,
            None => self.state.desired(&id).await.map_err(status)?,
        };
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use opni_metrics_core::node::UpstreamState;
    use opni_metrics_core::registry::Cluster;
    use opni_metrics_core::store::MemoryStore;

    async fn next_sync_now(stream: &mut AgentStream) {
        let wait = async {
            while let Some(n) = stream.next().await {
                if matches!(n.unwrap().kind, Some(notification::Kind::SyncNow(_))) {
                    return;
                }
            }
            panic!("the stream ended");
        };
        tokio::time::timeout(Duration::from_secs(10), wait).await.unwrap();
    }

    /// After every kind of change, an agent told `SyncNow` finds the view answering what the
    /// store answers: the watch applies a change to the view before it notifies.
    #[tokio::test]
    async fn the_view_has_each_change_before_agents_are_told() {
        let tasks = Tasks::new();
        let state = State::new(Arc::new(MemoryStore::default()), UpstreamState::Installed);
        let quiet = SyncTiming {
            resync_interval: Duration::from_secs(1 << 30),
            jitter: 0.0,
            heartbeat_interval: Duration::from_secs(1 << 30),
        };
        let hub = Hub::start(quiet, 1, &tasks, None);
        let (a, b) = (ClusterId::new("a").unwrap(), ClusterId::new("b").unwrap());
        let mut sa = hub.subscribe(a.clone()).await.unwrap();
        let mut sb = hub.subscribe(b.clone()).await.unwrap();
        let view = Arc::new(DesiredView::default());
        watch_store(state.clone(), hub, Arc::clone(&view), Duration::from_secs(1 << 30), &tasks);
        // the first listing notifies everyone
        next_sync_now(&mut sa).await;
        next_sync_now(&mut sb).await;
        let check = |id: &ClusterId| {
            let (state, view, id) = (state.clone(), Arc::clone(&view), id.clone());
            async move { assert_eq!(view.desired(&id), Some(state.desired(&id).await.unwrap()), "{id}") }
        };
        check(&a).await;

        state.create_cluster(&Cluster::new(a.clone())).await.unwrap();
        next_sync_now(&mut sa).await;
        check(&a).await;
        state.update_cluster(&a, |c| c.install(CapabilityName::metrics(), Timestamp(1))).await.unwrap();
        next_sync_now(&mut sa).await;
        check(&a).await;
        assert!(view.desired(&a).unwrap().enabled);

        let mut spec = opni_metrics_core::spec::MetricsCapabilitySpec::default();
        spec.prometheus.scrape_interval = opni_metrics_core::duration::PromDuration::from_secs(7);
        state.put_default_spec(&spec, None).await.unwrap();
        next_sync_now(&mut sa).await;
        next_sync_now(&mut sb).await;
        check(&a).await;
        check(&b).await;
        spec.prometheus.scrape_interval = opni_metrics_core::duration::PromDuration::from_secs(9);
        state.put_node_override(&a, &spec, None).await.unwrap();
        next_sync_now(&mut sa).await;
        check(&a).await;
        state.set_upstream(UpstreamState::Failing).await.unwrap();
        next_sync_now(&mut sa).await;
        check(&a).await;
        assert!(!view.desired(&a).unwrap().enabled);
        state.reset_node_override(&a, None).await.unwrap();
        next_sync_now(&mut sa).await;
        check(&a).await;
        state.reset_default_spec(None).await.unwrap();
        next_sync_now(&mut sa).await;
        check(&a).await;
        state.set_upstream(UpstreamState::Installed).await.unwrap();
        next_sync_now(&mut sa).await;
        check(&a).await;

        state.update_cluster(&a, |c| c.mark_for_uninstall(&CapabilityName::metrics(), Timestamp(2))).await.unwrap();
        next_sync_now(&mut sa).await;
        check(&a).await;
        assert!(!view.desired(&a).unwrap().enabled);
        state.update_cluster(&a, |c| c.remove(&CapabilityName::metrics()).map(|_| ())).await.unwrap();
        next_sync_now(&mut sa).await;
        state.delete_cluster(&a).await.unwrap();
        next_sync_now(&mut sa).await;
        check(&a).await;
        tasks.shutdown(Duration::from_secs(1)).await;
    }
}
