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
use opni_metrics_core::digest::Digest;
use opni_metrics_core::node::{NodeConfig, NodeStatus, SyncReply};
use opni_metrics_core::store::StoreError;
use opni_metrics_core::{CapabilityName, ClusterId, Timestamp};
use opni_metrics_proto::node::v1::node_sync_server::NodeSync;
use opni_metrics_proto::node::v1::{
    Heartbeat, Notification, NotificationsRequest, SyncNow, SyncRequest, SyncResponse, notification,
};
use opni_metrics_transport::Tasks;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

use super::state::{State, StoredStatus, affected, now};

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
pub use hub::{AgentStream, Hub, Offers, Presence, os_seed};

/// The registry and desired state in memory, kept by [`watch_store`]: what `Sync` answers and
/// what admission checks, without reading the store. The watcher applies each change here
/// *before* it notifies the agents the change affects, so an agent told `SyncNow` always syncs
/// against a view that has the change. Once loaded, the view is kept through store outages
/// (the last known state answers); it is replaced by each fresh listing.
#[derive(Debug, Default)]
pub struct StateView {
    inner: std::sync::RwLock<Option<ViewData>>,
    /// Whether the first load is done, for [`StateView::loaded`].
    loaded: tokio::sync::watch::Sender<bool>,
    /// The configs whose digests were computed last, most recent first, with their digests:
    /// most agents share one desired config (or one of a few: the default, the default
    /// disabled, a handful of overrides), so a fan-out computes each digest once instead of
    /// once per `Sync`, even when agents with different configs sync in turn.
    digest_memo: Mutex<std::collections::VecDeque<(NodeConfig, Digest)>>,
}

/// How many configs [`StateView`] remembers the digests of.
const DIGEST_MEMO: usize = 8;

/// What [`StateView`] holds.
#[derive(Debug)]
pub(crate) struct ViewData {
    /// Every registered cluster, with its `metrics` capability entry if any.
    pub(crate) capabilities: HashMap<ClusterId, Option<opni_metrics_core::registry::CapabilityEntry>>,
    overrides: HashMap<ClusterId, opni_metrics_core::spec::MetricsCapabilitySpec>,
    default: opni_metrics_core::spec::MetricsCapabilitySpec,
    upstream: opni_metrics_core::node::UpstreamState,
    upstream_default: opni_metrics_core::node::UpstreamState,
    /// Revoked certificate serials (hex).
    pub(crate) revoked: std::collections::HashSet<String>,
}

impl StateView {
    /// The desired config of `id`, or `None` while the view is not loaded (read the store).
    pub fn desired(&self, id: &ClusterId) -> Option<opni_metrics_core::node::NodeConfig> {
        self.read(|v| {
            let entry = v.capabilities.get(id).and_then(Option::as_ref);
            opni_metrics_core::node::desired_config(entry, v.overrides.get(id), &v.default, v.upstream)
        })
    }

    /// The desired config of `id` with its digest, or `None` while the view is not loaded.
    pub fn desired_with_digest(&self, id: &ClusterId) -> Option<(NodeConfig, Digest)> {
        let config = self.desired(id)?;
        let digest = self.digest_of(&config);
        Some((config, digest))
    }

    /// `config.digest()`, from the memo when `config` is one of the last [`DIGEST_MEMO`]
    /// computed. The digest of a config not remembered is computed outside the lock.
    fn digest_of(&self, config: &NodeConfig) -> Digest {
        let memo = || self.digest_memo.lock().unwrap_or_else(PoisonError::into_inner);
        {
            let mut m = memo();
            if let Some(i) = m.iter().position(|(c, _)| c == config)
                && let Some(hit) = m.remove(i)
            {
                let d = hit.1;
                m.push_front(hit);
                return d;
            }
        }
        let d = config.digest();
        let mut m = memo();
        // another Sync may have computed the same one meanwhile
        if !m.iter().any(|(c, _)| c == config) {
            m.push_front((config.clone(), d));
            m.truncate(DIGEST_MEMO);
        }
        d
    }

    /// Whether the view has been loaded.
    pub fn is_loaded(&self) -> bool {
        *self.loaded.borrow()
    }

    /// Resolves once the view has been loaded.
    pub async fn loaded(&self) {
        let _ = self.loaded.subscribe().wait_for(|l| *l).await;
    }

    /// `f` over the loaded view; `None` before the first load.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&ViewData) -> R) -> Option<R> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner).as_ref().map(f)
    }

    /// Loads the view from the store; returns the revision to watch from and the clusters the
    /// previous view had that are gone.
    async fn load(
        &self,
        state: &State,
    ) -> Result<(opni_metrics_core::Revision, Vec<ClusterId>), super::state::StateError> {
        use super::state::{CLUSTERS, NODE_DEFAULT, NODE_OVERRIDES, REVOKED, UPSTREAM};
        let store = state.store();
        let mut v = ViewData {
            capabilities: HashMap::new(),
            overrides: HashMap::new(),
            default: opni_metrics_core::spec::MetricsCapabilitySpec::default(),
            upstream: state.upstream_default(),
            upstream_default: state.upstream_default(),
            revoked: std::collections::HashSet::new(),
        };
        let mut from = None::<opni_metrics_core::Revision>;
        for prefix in [CLUSTERS, NODE_OVERRIDES, REVOKED, NODE_DEFAULT, UPSTREAM] {
            let l = store.list(prefix).await?;
            // the single keys (default spec, upstream) list as prefixes of themselves: only the
            // exact key counts
            let exact = !prefix.ends_with('/');
            for kv in l.items.iter().filter(|kv| !exact || kv.key == prefix) {
                v.apply_put(&kv.key, &kv.value);
            }
            // events between the listings are replayed; each carries its whole value
            from = Some(from.map_or(l.revision, |f| f.min(l.revision)));
        }
        let mut g = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let gone = g
            .as_ref()
            .map(|old| old.capabilities.keys().filter(|id| !v.capabilities.contains_key(*id)).cloned().collect())
            .unwrap_or_default();
        *g = Some(v);
        drop(g);
        self.loaded.send_replace(true);
        Ok((from.unwrap_or(opni_metrics_core::Revision::ZERO), gone))
    }

    /// Applies a change; returns the cluster it removed from the registry, if any.
    fn apply(&self, ev: &opni_metrics_core::store::WatchEvent) -> Option<ClusterId> {
        let mut g = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let v = g.as_mut()?;
        match ev {
            opni_metrics_core::store::WatchEvent::Put(kv) => {
                v.apply_put(&kv.key, &kv.value);
                None
            }
            opni_metrics_core::store::WatchEvent::Delete { key, .. } => v.apply_delete(key),
        }
    }
}

impl ViewData {
    fn apply_put(&mut self, key: &str, value: &[u8]) {
        use super::state::{CLUSTERS, NODE_DEFAULT, NODE_OVERRIDES, REVOKED, UPSTREAM};
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
        } else if let Some(serial) = key.strip_prefix(REVOKED) {
            self.revoked.insert(serial.to_owned());
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

    fn apply_delete(&mut self, key: &str) -> Option<ClusterId> {
        use super::state::{CLUSTERS, NODE_DEFAULT, NODE_OVERRIDES, REVOKED, UPSTREAM};
        if let Some(id) = key.strip_prefix(CLUSTERS) {
            let id = ClusterId::new(id).ok()?;
            return self.capabilities.remove(&id).map(|_| id);
        }
        if let Some(id) = key.strip_prefix(NODE_OVERRIDES) {
            if let Ok(id) = ClusterId::new(id) {
                self.overrides.remove(&id);
            }
        } else if let Some(serial) = key.strip_prefix(REVOKED) {
            self.revoked.remove(serial);
        } else if key == NODE_DEFAULT {
            self.default = opni_metrics_core::spec::MetricsCapabilitySpec::default();
        } else if key == UPSTREAM {
            self.upstream = self.upstream_default;
        }
        None
    }
}

/// A cluster left the registry: end its notification stream and close its connections here.
async fn cut_off(id: ClusterId, hub: &Hub, connections: &opni_metrics_transport::grpc::Connections) {
    let n = connections.close(&id);
    tracing::info!(cluster = %id, connections = n, "cluster deleted: its connections are closed");
    hub.close(id).await;
}

/// Watches the store, keeps `view` and notifies exactly the agents a change may affect (after
/// the view has it); a cluster that leaves the registry is cut off (its connections, tracked
/// in `connections`, closed). Restarts from a fresh listing (notifying everyone, which is
/// always safe) if the watch fails. Also reloads the view every `refresh` without notifying
/// anyone, so that a change the watch never delivered still reaches agents at their periodic
/// resync (as a lost `SyncNow` does). Runs in `tasks`.
pub fn watch_store(
    state: State,
    hub: Hub,
    view: Arc<StateView>,
    connections: opni_metrics_transport::grpc::Connections,
    refresh: Duration,
    tasks: &Tasks,
) {
    tasks.spawn("store-watch", async move {
        let load = async || match view.load(&state).await {
            Ok((from, gone)) => {
                for id in gone {
                    cut_off(id, &hub, &connections).await;
                }
                Ok(from)
            }
            Err(e) => Err(e),
        };
        loop {
            let from = match load().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "store unavailable; retrying the watch");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut events = match watch_view_keys(&state, from).await {
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
                        if let Err(e) = load().await {
                            tracing::warn!(error = %e, "cannot reload the registry view; keeping it");
                        }
                        continue;
                    }
                };
                // one of the watches ended: resubscribe them all
                let Some(Some(ev)) = ev else { break };
                match ev {
                    Ok(ev) => {
                        if let Some(id) = view.apply(&ev) {
                            cut_off(id, &hub, &connections).await;
                        }
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

/// The keys the view follows: every key [`ViewData::apply_put`] and [`affected`] read, and no
/// other. Node status, written once per agent per change, would otherwise come back through
/// every replica's watch only to be ignored.
pub(crate) const VIEW_KEYS: [&str; 4] =
    [super::state::CLUSTERS, "nodeconfig/", super::state::REVOKED, super::state::UPSTREAM];

/// The view's watches merged: an item `None` says one of them ended.
type ViewEvents = futures::stream::BoxStream<'static, Option<Result<opni_metrics_core::store::WatchEvent, StoreError>>>;

/// The store's changes under [`VIEW_KEYS`] after `from`, merged.
async fn watch_view_keys(state: &State, from: opni_metrics_core::Revision) -> Result<ViewEvents, StoreError> {
    let mut watches = Vec::with_capacity(VIEW_KEYS.len());
    for prefix in VIEW_KEYS {
        let events = state.store().watch(prefix, from).await?;
        watches.push(events.map(Some).chain(futures::stream::once(async { None })).boxed());
    }
    Ok(futures::stream::select_all(watches).boxed())
}

/// How long the status writer lets reports gather before it writes them together.
const STATUS_GATHER: Duration = Duration::from_millis(50);

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
                // let a fan-out's reports gather: statuses are for display, a moment late is fine
                tokio::time::sleep(STATUS_GATHER).await;
                let batch: Vec<(ClusterId, StoredStatus)> =
                    this.pending.lock().unwrap_or_else(PoisonError::into_inner).drain().collect();
                // one store write per batch, not per node: during a fan-out every agent
                // reports at once, and on etcd a write per report cost more than the Syncs
                if let Err(e) = state.put_statuses(&batch).await {
                    tracing::warn!(nodes = batch.len(), error = %e, "cannot persist node status");
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

/// The `NodeSync` gRPC service. It answers from the in-memory [`StateView`] and checks callers
/// against it: until the view is loaded every call is `UNAVAILABLE`, a revoked certificate is
/// refused, and the status of a cluster that is not registered is not kept.
#[derive(Debug, Clone)]
pub struct NodeSyncService {
    hub: Hub,
    statuses: Arc<StatusCache>,
    stream_age: Option<Duration>,
    admission: crate::admission::Admission,
    view: Arc<StateView>,
}

impl NodeSyncService {
    /// The service over `view` (kept by [`watch_store`]).
    pub fn new(hub: Hub, statuses: Arc<StatusCache>, view: Arc<StateView>) -> Self {
        Self { hub, statuses, stream_age: None, admission: crate::admission::Admission::new(Arc::clone(&view)), view }
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
        let (id, registered) = self.admission.caller(&request).map(|(id, m)| (id, m.is_some()))?;
        let (current, reported) = request.into_inner().into_core().map_err(Status::from)?;
        let at = now();
        // a cluster that is not registered is told its node is disabled (what the desired
        // state of an unknown cluster is), and its reports are not kept
        if registered && self.statuses.record(&id, reported.clone(), at) {
            // persisted in the background: a reply never waits for a durable commit
            self.statuses.persist(id.clone(), StoredStatus { status: reported, reported_at: at });
        }
        // admitted, so the view is loaded (and stays so)
        let (config, digest) = self
            .view
            .desired_with_digest(&id)
            .ok_or_else(|| Status::unavailable("the gateway is still loading the registry; retry"))?;
        Ok(Response::new(SyncReply::decide(current.as_ref(), config, digest).into()))
    }

    type NotificationsStream = AgentStream;

    async fn notifications(&self, request: Request<NotificationsRequest>) -> Result<Response<AgentStream>, Status> {
        let id = self.admission.caller(&request)?.0;
        let mut stream = self.hub.subscribe(id.clone()).await?;
        if let Some(age) = self.stream_age {
            stream = stream.with_max_age(age);
        }
        // a change reaches the agent with its config: one Sync per change, the report
        let (view, offered) = (Arc::clone(&self.view), id.clone());
        stream = stream.with_offers(Arc::new(move || view.desired_with_digest(&offered)));
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

    #[test]
    fn the_digest_memo_keeps_the_last_few_configs_most_recent_first() {
        let view = StateView::default();
        let config = |shards: u32| {
            let mut spec = opni_metrics_core::spec::MetricsCapabilitySpec::default();
            spec.prometheus.queue.max_shards = shards;
            NodeConfig { enabled: true, disabled_reasons: Vec::new(), spec }
        };
        let remembered = |view: &StateView| {
            view.digest_memo.lock().unwrap().iter().map(|(c, _)| c.spec.prometheus.queue.max_shards).collect::<Vec<_>>()
        };
        // agents with two configs syncing in turn: each digest is computed once, and right
        for _ in 0..3 {
            for shards in [1, 2] {
                assert_eq!(view.digest_of(&config(shards)), config(shards).digest());
            }
        }
        assert_eq!(remembered(&view), [2, 1]);
        // a hit moves to the front; the oldest is forgotten past DIGEST_MEMO
        view.digest_of(&config(1));
        assert_eq!(remembered(&view), [1, 2]);
        for shards in 3..=10 {
            view.digest_of(&config(shards));
        }
        assert_eq!(remembered(&view), (3..=10).rev().collect::<Vec<_>>());
    }

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
        let view = Arc::new(StateView::default());
        let connections = opni_metrics_transport::grpc::Connections::default();
        watch_store(state.clone(), hub, Arc::clone(&view), connections, Duration::from_secs(1 << 30), &tasks);
        // the first listing notifies everyone
        next_sync_now(&mut sa).await;
        next_sync_now(&mut sb).await;
        let check = |id: &ClusterId| {
            let (state, view, id) = (state.clone(), Arc::clone(&view), id.clone());
            async move {
                let desired = state.desired(&id).await.unwrap();
                assert_eq!(view.desired(&id).as_ref(), Some(&desired), "{id}");
                // the memoised digest follows every change
                assert_eq!(view.desired_with_digest(&id), Some((desired.clone(), desired.digest())), "{id}");
            }
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
        // a deleted cluster is cut off: its stream ends once the view no longer has it
        state.delete_cluster(&a).await.unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(n) = sa.next().await {
                n.unwrap();
            }
        });
        ended.await.unwrap();
        check(&a).await;
        tasks.shutdown(Duration::from_secs(1)).await;
    }
}
