//! Sync over the wire: the hub that knows every connected agent and sends `SyncNow`, the store
//! watcher that decides whom a change affects, and the `NodeSync` service.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use opni_metrics_core::backoff::Rng;
use opni_metrics_core::node::{NodeStatus, sync_decision};
use opni_metrics_core::{CapabilityName, ClusterId, Timestamp};
use opni_metrics_proto::node::v1::node_sync_server::NodeSync;
use opni_metrics_proto::node::v1::{
    Heartbeat, Notification, NotificationsRequest, SyncNow, SyncRequest, SyncResponse, notification,
};
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

use super::errors::status;
use super::state::{State, StoredStatus, affected, now};
use crate::grpc::PeerIdentity;

/// Timing of periodic notifications.
#[derive(Debug, Clone, Copy)]
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

enum Cmd {
    Register { id: ClusterId, conn: u64, tx: mpsc::Sender<Notification> },
    Unregister { id: ClusterId, conn: u64 },
    Notify(Option<ClusterId>),
    Connected { id: ClusterId, reply: oneshot::Sender<bool> },
    Count { reply: oneshot::Sender<usize> },
    CloseAll,
}

/// A handle to the hub task; cheap to clone.
#[derive(Clone, Debug)]
pub struct Hub {
    tx: mpsc::Sender<Cmd>,
}

fn sync_now() -> Notification {
    Notification {
        kind: Some(notification::Kind::SyncNow(SyncNow { capabilities: vec![CapabilityName::METRICS.to_owned()] })),
    }
}

impl Hub {
    /// Starts the hub task. It owns the map of connected agents; everyone else talks to it
    /// through this handle.
    pub fn start(timing: SyncTiming, seed: u64) -> Self {
        let (tx, mut rx) = mpsc::channel::<Cmd>(4096);
        tokio::spawn(async move {
            let mut agents: HashMap<ClusterId, (u64, mpsc::Sender<Notification>)> = HashMap::new();
            let mut rng = Rng::new(seed);
            let mut next_resync = tokio::time::Instant::now() + jittered(timing, &mut rng);
            let mut heartbeat = tokio::time::interval(timing.heartbeat_interval);
            heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    cmd = rx.recv() => match cmd {
                        None => return,
                        Some(Cmd::Register { id, conn, tx }) => { agents.insert(id, (conn, tx)); }
                        Some(Cmd::Unregister { id, conn }) => {
                            if agents.get(&id).is_some_and(|(c, _)| *c == conn) {
                                agents.remove(&id);
                            }
                        }
                        Some(Cmd::Notify(None)) => broadcast(&mut agents, sync_now),
                        Some(Cmd::Notify(Some(id))) => {
                            if let Some((_, tx)) = agents.get(&id) {
                                // full: a SyncNow is already pending, which is as good
                                if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(sync_now()) {
                                    agents.remove(&id);
                                }
                            }
                        }
                        Some(Cmd::Connected { id, reply }) => { let _ = reply.send(agents.get(&id).is_some_and(|(_, tx)| !tx.is_closed())); }
                        Some(Cmd::Count { reply }) => { let _ = reply.send(agents.len()); }
                        // dropping the senders ends every notification stream
                        Some(Cmd::CloseAll) => agents.clear(),
                    },
                    () = tokio::time::sleep_until(next_resync) => {
                        broadcast(&mut agents, sync_now);
                        next_resync = tokio::time::Instant::now() + jittered(timing, &mut rng);
                    }
                    _ = heartbeat.tick() => broadcast(&mut agents, || Notification { kind: Some(notification::Kind::Heartbeat(Heartbeat {})) }),
                }
            }
        });
        Self { tx }
    }

    /// Sends `SyncNow` to `id` (or to every connected agent for `None`).
    pub async fn notify(&self, id: Option<ClusterId>) {
        let _ = self.tx.send(Cmd::Notify(id)).await;
    }

    /// Whether `id` has a notification stream open.
    pub async fn is_connected(&self, id: &ClusterId) -> bool {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Connected { id: id.clone(), reply }).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Ends every notification stream (at shutdown, so connections can drain).
    pub async fn close_all(&self) {
        let _ = self.tx.send(Cmd::CloseAll).await;
    }

    /// How many agents are connected.
    pub async fn connected_count(&self) -> usize {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Count { reply }).await.is_err() {
            return 0;
        }
        rx.await.unwrap_or(0)
    }
}

fn jittered(t: SyncTiming, rng: &mut Rng) -> Duration {
    let unit = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
    let factor = 1.0 + t.jitter.clamp(0.0, 1.0) * (2.0 * unit - 1.0);
    t.resync_interval.mul_f64(factor.max(0.01))
}

fn broadcast(agents: &mut HashMap<ClusterId, (u64, mpsc::Sender<Notification>)>, msg: impl Fn() -> Notification) {
    agents.retain(|_, (_, tx)| !matches!(tx.try_send(msg()), Err(mpsc::error::TrySendError::Closed(_))));
}

/// Watches the store and notifies exactly the agents a change may affect. Restarts from a fresh
/// listing (notifying everyone, which is always safe) if the watch fails.
pub fn watch_store(state: State, hub: Hub) {
    tokio::spawn(async move {
        loop {
            // any listing carries the store's current revision; this prefix is tiny
            let from = match state.store().list("upstream/").await {
                Ok(l) => l.revision,
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
    /// Starts the writer task persisting reported statuses into `state`.
    pub fn start_writer(self: &Arc<Self>, state: State) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
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
    conns: Arc<AtomicU64>,
}

impl NodeSyncService {
    /// The service.
    pub fn new(state: State, hub: Hub, statuses: Arc<StatusCache>) -> Self {
        Self { state, hub, statuses, conns: Arc::new(AtomicU64::new(0)) }
    }
}

/// An agent's notification stream; leaving unregisters it.
pub struct AgentStream {
    rx: mpsc::Receiver<Notification>,
    hub: Hub,
    id: ClusterId,
    conn: u64,
}

impl Stream for AgentStream {
    type Item = Result<Notification, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|m| m.map(Ok))
    }
}

impl Drop for AgentStream {
    fn drop(&mut self) {
        let _ = self.hub.tx.try_send(Cmd::Unregister { id: self.id.clone(), conn: self.conn });
    }
}

#[tonic::async_trait]
impl NodeSync for NodeSyncService {
    async fn sync(&self, request: Request<SyncRequest>) -> Result<Response<SyncResponse>, Status> {
        let id = PeerIdentity::cluster_of(&request)?;
        let (current, reported) = request.into_inner().into_core().map_err(Status::from)?;
        let at = now();
        if self.statuses.record(&id, reported.clone(), at) {
            // persisted in the background: a reply never waits for a durable commit
            self.statuses.persist(id.clone(), StoredStatus { status: reported, reported_at: at });
        }
        let desired = self.state.desired(&id).await.map_err(status)?;
        Ok(Response::new(sync_decision(current.as_ref(), &desired).into()))
    }

    type NotificationsStream = AgentStream;

    async fn notifications(&self, request: Request<NotificationsRequest>) -> Result<Response<AgentStream>, Status> {
        let id = PeerIdentity::cluster_of(&request)?;
        let (tx, rx) = mpsc::channel(2);
        let conn = self.conns.fetch_add(1, Ordering::Relaxed);
        self.hub
            .tx
            .send(Cmd::Register { id: id.clone(), conn, tx })
            .await
            .map_err(|_| Status::unavailable("gateway is shutting down"))?;
        tracing::debug!(cluster = %id, "agent connected");
        Ok(Response::new(AgentStream { rx, hub: self.hub.clone(), id, conn }))
    }
}
