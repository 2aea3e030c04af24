//! The hub: one task owning the connected agents' notification slots; `SyncNow` on store
//! changes and on each agent's own periodic schedule, heartbeats, and the streams agents read.

use super::*;

enum Cmd {
    Register { id: ClusterId, slot: Arc<Slot> },
    Notify(Option<ClusterId>),
    Close(ClusterId),
    Gone { id: ClusterId, slot: Arc<Slot> },
    Connected { id: ClusterId, reply: oneshot::Sender<bool> },
    Count { reply: oneshot::Sender<usize> },
}

/// One connected stream's pending notifications. Flags, not a queue: a pending `SyncNow` stays
/// pending until the agent's stream takes it, whatever else is sent meanwhile (a heartbeat can
/// never displace it), and repeated notifications coalesce into one.
#[derive(Debug, Default)]
struct Slot {
    sync_now: AtomicBool,
    /// Set with `sync_now` by a change of desired state (not by the periodic resync): the
    /// `SyncNow` then carries the agent's config.
    offer: AtomicBool,
    heartbeat: AtomicBool,
    closed: AtomicBool,
    /// Set when the stream is dropped (the agent went away).
    gone: AtomicBool,
    waker: AtomicWaker,
}

impl Slot {
    fn raise(&self, flag: &AtomicBool) {
        flag.store(true, Ordering::Release);
        self.waker.wake();
    }
    /// A change of desired state: `SyncNow` with the config offered, one wake-up.
    fn raise_change(&self) {
        // the offer first: a stream that takes the SyncNow sees it
        self.offer.store(true, Ordering::Release);
        self.raise(&self.sync_now);
    }
    fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }
}

/// A handle to the hub task; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    tx: mpsc::Sender<Cmd>,
    presence: Option<Arc<dyn Presence>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("shared_presence", &self.presence.is_some()).finish_non_exhaustive()
    }
}

/// Which replica holds each agent's notification stream, shared between replicas, so that
/// "is this agent connected" has the same answer through every replica.
pub trait Presence: Send + Sync + 'static {
    /// This replica now holds (`true`) or no longer holds (`false`) `cluster`'s stream. Applied
    /// in order, in the background.
    fn set(&self, cluster: &ClusterId, held: bool);
    /// Whether any replica holds `cluster`'s stream.
    fn held_anywhere<'a>(&'a self, cluster: &'a ClusterId) -> futures::future::BoxFuture<'a, bool>;
}

fn sync_now(offer: Option<(NodeConfig, Digest)>) -> Notification {
    Notification { kind: Some(notification::Kind::SyncNow(SyncNow::metrics(offer))) }
}

/// What an agent's stream offers with a change: the agent's desired config now and its
/// digest, if known.
pub type Offers = Arc<dyn Fn() -> Option<(NodeConfig, Digest)> + Send + Sync>;

/// A seed from the operating system's randomness (so replicas and restarts do not share a
/// jitter sequence), or the clock if none is available.
pub fn os_seed() -> u64 {
    let mut b = [0u8; 8];
    match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed),
    }
}

/// The hub's state, owned by its task.
struct HubState {
    timing: SyncTiming,
    rng: Rng,
    /// Connected agents: the generation of their current stream and its slot.
    agents: HashMap<ClusterId, (u64, Arc<Slot>)>,
    /// Each stream's next periodic resync; entries of streams that are gone or replaced are
    /// skipped when they come due.
    due: BinaryHeap<Reverse<(tokio::time::Instant, u64, ClusterId)>>,
    generation: u64,
    /// Shared presence, told of every stream held here and of every one let go.
    presence: Option<Arc<dyn Presence>>,
}

impl HubState {
    fn new(timing: SyncTiming, seed: u64, presence: Option<Arc<dyn Presence>>) -> Self {
        Self { timing, rng: Rng::new(seed), agents: HashMap::new(), due: BinaryHeap::new(), generation: 0, presence }
    }

    fn register(&mut self, id: ClusterId, slot: Arc<Slot>) {
        if let Some(p) = &self.presence {
            p.set(&id, true);
        }
        self.generation += 1;
        let generation = self.generation;
        // the first resync lands anywhere in one period, so a fleet that connected together
        // (after a gateway restart) is spread over the period rather than synced in one burst
        let first = self.timing.resync_interval.mul_f64(unit(&mut self.rng));
        self.due.push(Reverse((tokio::time::Instant::now() + first, generation, id.clone())));
        if let Some((_, old)) = self.agents.insert(id, (generation, slot)) {
            old.raise(&old.closed);
        }
    }

    /// Lets `id`'s stream go (the way every agent leaves the map while the hub runs), and
    /// withdraws its presence.
    fn forget(&mut self, id: &ClusterId) -> Option<Arc<Slot>> {
        let (_, slot) = self.agents.remove(id)?;
        if let Some(p) = &self.presence {
            p.set(id, false);
        }
        Some(slot)
    }

    /// Forgets every agent whose stream is gone.
    fn sweep(&mut self) {
        let gone: Vec<ClusterId> =
            self.agents.iter().filter(|(_, (_, s))| s.is_gone()).map(|(id, _)| id.clone()).collect();
        for id in gone {
            self.forget(&id);
        }
    }

    fn slot(&mut self, id: &ClusterId) -> Option<&Arc<Slot>> {
        if self.agents.get(id).is_some_and(|(_, s)| s.is_gone()) {
            self.forget(id);
        }
        self.agents.get(id).map(|(_, s)| s)
    }

    fn next_due(&self) -> Option<tokio::time::Instant> {
        self.due.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Raises `SyncNow` for every agent whose periodic resync is due, and schedules its next.
    fn resync_due(&mut self) {
        let now = tokio::time::Instant::now();
        while let Some(Reverse((at, _, _))) = self.due.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, generation, id))) = self.due.pop() else { break };
            let current = self.agents.get(&id).is_some_and(|(g, s)| *g == generation && !s.is_gone());
            if !current {
                if self.agents.get(&id).is_some_and(|(g, _)| *g == generation) {
                    self.forget(&id);
                }
                continue;
            }
            if let Some((_, slot)) = self.agents.get(&id) {
                slot.raise(&slot.sync_now);
            }
            let next = jittered(self.timing, &mut self.rng);
            self.due.push(Reverse((now + next, generation, id)));
        }
    }

    fn broadcast(&mut self, raise: fn(&Slot)) {
        self.sweep();
        for (_, slot) in self.agents.values() {
            raise(slot);
        }
    }

    fn close_all(&mut self) {
        for (_, slot) in self.agents.values() {
            slot.raise(&slot.closed);
        }
        self.agents.clear();
    }
}

impl Hub {
    /// Starts the hub task in `tasks`. It owns the map of connected agents; everyone else
    /// talks to it through this handle. `seed` seeds the resync jitter ([`os_seed`]).
    /// `presence`, if any, shares which agents this replica holds.
    pub fn start(timing: SyncTiming, seed: u64, tasks: &Tasks, presence: Option<Arc<dyn Presence>>) -> Self {
        let (tx, mut rx) = mpsc::channel::<Cmd>(4096);
        let shared = presence.clone();
        let stop = tasks.token();
        tasks.spawn_graceful("sync-hub", async move {
            let mut hub = HubState::new(timing, seed, shared);
            let mut heartbeat = tokio::time::interval(timing.heartbeat_interval);
            heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let due = hub.next_due();
                let resync = async {
                    match due {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => futures::future::pending().await,
                    }
                };
                tokio::select! {
                    // shutdown first: end every stream so connections can drain; then timers,
                    // so a due resync is raised before later commands are answered
                    biased;
                    () = stop.cancelled() => {
                        hub.close_all();
                        // streams registered but not yet handled end too
                        rx.close();
                        while let Ok(cmd) = rx.try_recv() {
                            if let Cmd::Register { slot, .. } = cmd {
                                slot.raise(&slot.closed);
                            }
                        }
                        return;
                    }
                    () = resync => hub.resync_due(),
                    _ = heartbeat.tick() => hub.broadcast(|s| s.raise(&s.heartbeat)),
                    cmd = rx.recv() => match cmd {
                        None => {
                            hub.close_all();
                            return;
                        }
                        Some(Cmd::Register { id, slot }) => hub.register(id, slot),
                        Some(Cmd::Gone { id, slot }) => {
                            // only if it is still this agent's current stream (not replaced)
                            if hub.agents.get(&id).is_some_and(|(_, s)| Arc::ptr_eq(s, &slot)) {
                                hub.forget(&id);
                            }
                        }
                        Some(Cmd::Notify(None)) => hub.broadcast(Slot::raise_change),
                        Some(Cmd::Notify(Some(id))) => {
                            if let Some(slot) = hub.slot(&id) {
                                slot.raise_change();
                            }
                        }
                        Some(Cmd::Close(id)) => {
                            if let Some(slot) = hub.forget(&id) {
                                slot.raise(&slot.closed);
                            }
                        }
                        Some(Cmd::Connected { id, reply }) => { let _ = reply.send(hub.slot(&id).is_some()); }
                        Some(Cmd::Count { reply }) => {
                            hub.sweep();
                            let _ = reply.send(hub.agents.len());
                        }
                    },
                }
            }
        });
        Self { tx, presence }
    }

    /// Sends `SyncNow` to `id` (or to every connected agent for `None`).
    pub async fn notify(&self, id: Option<ClusterId>) {
        let _ = self.tx.send(Cmd::Notify(id)).await;
    }

    /// Ends the notification stream of `id`, if one is open.
    pub async fn close(&self, id: ClusterId) {
        let _ = self.tx.send(Cmd::Close(id)).await;
    }

    /// Whether `id` has a notification stream open here or, with shared presence, on any
    /// replica.
    pub async fn is_connected(&self, id: &ClusterId) -> bool {
        let (reply, rx) = oneshot::channel();
        let here = self.tx.send(Cmd::Connected { id: id.clone(), reply }).await.is_ok() && rx.await.unwrap_or(false);
        match &self.presence {
            Some(p) if !here => p.held_anywhere(id).await,
            _ => here,
        }
    }

    /// How many agents are connected.
    pub async fn connected_count(&self) -> usize {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Count { reply }).await.is_err() {
            return 0;
        }
        rx.await.unwrap_or(0)
    }

    /// Opens the notification stream of `id`; a newer stream of the same agent ends the
    /// older one.
    ///
    /// # Errors
    /// `UNAVAILABLE` while the gateway shuts down.
    pub async fn subscribe(&self, id: ClusterId) -> Result<AgentStream, Status> {
        let slot = Arc::new(Slot::default());
        let id_for_gone = id.clone();
        self.tx
            .send(Cmd::Register { id, slot: Arc::clone(&slot) })
            .await
            .map_err(|_| Status::unavailable("gateway is shutting down"))?;
        Ok(AgentStream { slot, ends: None, gone: Some((id_for_gone, self.tx.clone())), offers: None })
    }
}

/// A uniform number in [0, 1).
fn unit(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn jittered(t: SyncTiming, rng: &mut Rng) -> Duration {
    let factor = 1.0 + t.jitter.clamp(0.0, 1.0) * (2.0 * unit(rng) - 1.0);
    t.resync_interval.mul_f64(factor.max(0.01))
}

/// An agent's notification stream: yields a pending `SyncNow` first, then a heartbeat; ends
/// when the gateway closes it or a newer stream of the same agent replaces it.
pub struct AgentStream {
    slot: Arc<Slot>,
    /// When the stream ends by itself (its connection's maximum age), so that the agent opens
    /// it again on a new connection and an old connection, drained of calls, can close.
    ends: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Tells the hub when the stream goes (so that its presence is withdrawn at once).
    gone: Option<(ClusterId, mpsc::Sender<Cmd>)>,
    /// The agent's desired config, offered with a `SyncNow` a change sent.
    offers: Option<Offers>,
}

impl std::fmt::Debug for AgentStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentStream").field("offers", &self.offers.is_some()).finish_non_exhaustive()
    }
}

impl AgentStream {
    /// Ends the stream after `age`.
    pub fn with_max_age(mut self, age: Duration) -> Self {
        self.ends = Some(Box::pin(tokio::time::sleep(age)));
        self
    }

    /// Offers the agent its config, as `offers` gives it when the `SyncNow` is sent, with
    /// every `SyncNow` a change of desired state sends (not the periodic ones, which only ask
    /// for a `Sync`). The agent applies it without a `Sync` asking for it.
    pub fn with_offers(mut self, offers: Offers) -> Self {
        self.offers = Some(offers);
        self
    }
}

impl Stream for AgentStream {
    type Item = Result<Notification, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(ends) = self.ends.as_mut()
            && ends.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(None);
        }
        let slot = &self.slot;
        for attempt in 0..2 {
            if slot.sync_now.swap(false, Ordering::AcqRel) {
                let offered = slot.offer.swap(false, Ordering::AcqRel);
                let config = if offered { self.offers.as_ref().and_then(|f| f()) } else { None };
                return Poll::Ready(Some(Ok(sync_now(config))));
            }
            if slot.closed.load(Ordering::Acquire) {
                return Poll::Ready(None);
            }
            if slot.heartbeat.swap(false, Ordering::AcqRel) {
                return Poll::Ready(Some(Ok(Notification { kind: Some(notification::Kind::Heartbeat(Heartbeat {})) })));
            }
            if attempt == 0 {
                // register, then look again: a flag raised in between is not missed
                slot.waker.register(cx.waker());
            }
        }
        Poll::Pending
    }
}

impl Drop for AgentStream {
    fn drop(&mut self) {
        self.slot.gone.store(true, Ordering::Release);
        if let Some((id, tx)) = self.gone.take() {
            // best effort: a full queue leaves the slot to the periodic sweeps
            let _ = tx.try_send(Cmd::Gone { id, slot: Arc::clone(&self.slot) });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use futures::FutureExt;

    fn kind(n: Option<Option<Result<Notification, Status>>>) -> &'static str {
        match n {
            None => "pending",
            Some(None) => "end",
            Some(Some(Ok(Notification { kind: Some(notification::Kind::SyncNow(_)) }))) => "sync",
            Some(Some(Ok(Notification { kind: Some(notification::Kind::Heartbeat(_)) }))) => "heartbeat",
            Some(Some(_)) => "other",
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_never_displaces_a_pending_sync_now() {
        let tasks = Tasks::new();
        let timing = SyncTiming {
            resync_interval: Duration::from_secs(3600),
            jitter: 0.2,
            heartbeat_interval: Duration::from_secs(1),
        };
        let hub = Hub::start(timing, 1, &tasks, None);
        let id = ClusterId::new("c1").unwrap();
        let mut stream = hub.subscribe(id.clone()).await.unwrap();
        hub.notify(Some(id.clone())).await;
        // many heartbeats while the agent reads nothing, and a second notification
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(1)).await;
            hub.connected_count().await;
        }
        hub.notify(Some(id.clone())).await;
        hub.connected_count().await;
        assert_eq!(kind(stream.next().now_or_never()), "sync");
        // coalesced: one SyncNow, then the (one) pending heartbeat, then nothing
        assert_eq!(kind(stream.next().now_or_never()), "heartbeat");
        assert_eq!(kind(stream.next().now_or_never()), "pending");
        // a newer stream of the same agent ends this one
        let _newer = hub.subscribe(id).await.unwrap();
        hub.connected_count().await;
        assert_eq!(kind(stream.next().now_or_never()), "end");
        tasks.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_offers_the_config_and_a_periodic_resync_does_not() {
        let tasks = Tasks::new();
        let timing = SyncTiming {
            resync_interval: Duration::from_secs(100),
            jitter: 0.0,
            heartbeat_interval: Duration::from_secs(100_000),
        };
        let hub = Hub::start(timing, 1, &tasks, None);
        let id = ClusterId::new("c1").unwrap();
        let desired = NodeConfig::enabled(opni_metrics_core::spec::MetricsCapabilitySpec::default());
        let offered = desired.clone();
        let mut stream = hub
            .subscribe(id.clone())
            .await
            .unwrap()
            .with_offers(Arc::new(move || Some((offered.clone(), offered.digest()))));
        let mut next = || match stream.next().now_or_never() {
            Some(Some(Ok(Notification { kind: Some(notification::Kind::SyncNow(n)) }))) => Some(n.offer().unwrap()),
            other => panic!("expected a SyncNow, got {other:?}"),
        };
        // a change (one agent's, or everyone's): SyncNow with the config and its digest
        hub.notify(Some(id.clone())).await;
        hub.connected_count().await;
        assert_eq!(next(), Some(Some((desired.clone(), desired.digest()))));
        hub.notify(None).await;
        hub.connected_count().await;
        assert_eq!(next(), Some(Some((desired.clone(), desired.digest()))));
        // the periodic resync only asks for a Sync
        tokio::time::advance(Duration::from_secs(101)).await;
        hub.connected_count().await;
        assert_eq!(next(), Some(None));
        tasks.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn periodic_resyncs_are_spread_over_the_period_per_agent() {
        let tasks = Tasks::new();
        let period = Duration::from_secs(100);
        let timing =
            SyncTiming { resync_interval: period, jitter: 0.2, heartbeat_interval: Duration::from_secs(100_000) };
        let hub = Hub::start(timing, os_seed(), &tasks, None);
        let mut streams = Vec::new();
        for i in 0..50 {
            streams.push(hub.subscribe(ClusterId::new(format!("c{i}")).unwrap()).await.unwrap());
        }
        assert_eq!(hub.connected_count().await, 50);
        let mut first_sync: Vec<Option<u64>> = vec![None; streams.len()];
        let mut syncs = vec![0u32; streams.len()];
        for second in 1..=200u64 {
            tokio::time::advance(Duration::from_secs(1)).await;
            hub.connected_count().await;
            for (i, s) in streams.iter_mut().enumerate() {
                loop {
                    match kind(s.next().now_or_never()) {
                        "sync" => {
                            syncs[i] += 1;
                            first_sync[i].get_or_insert(second);
                        }
                        "pending" => break,
                        _ => {}
                    }
                }
            }
        }
        // every agent got its first resync within one period, at times spread over it
        let firsts: std::collections::BTreeSet<u64> = first_sync.iter().map(|f| f.unwrap()).collect();
        assert!(firsts.iter().all(|&t| t <= 101), "{firsts:?}");
        assert!(firsts.len() >= 20, "resyncs bunched at {firsts:?}");
        // and then about one per period each (2 periods observed: 1..=3 resyncs)
        assert!(syncs.iter().all(|&n| (1..=3).contains(&n)), "{syncs:?}");
        tasks.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_with_a_maximum_age_ends_then() {
        let tasks = Tasks::new();
        let hub = Hub::start(SyncTiming::default(), 1, &tasks, None);
        let mut stream =
            hub.subscribe(ClusterId::new("c1").unwrap()).await.unwrap().with_max_age(Duration::from_secs(10));
        assert_eq!(kind(stream.next().now_or_never()), "pending");
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(kind(stream.next().now_or_never()), "pending");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(kind(stream.next().now_or_never()), "end");
        tasks.shutdown(Duration::from_secs(1)).await;
    }

    #[test]
    fn os_seeds_differ() {
        assert_ne!(os_seed(), os_seed());
    }
}
