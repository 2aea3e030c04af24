//! A deterministic simulation of the sync protocol: gateway desired state, one agent, a lossy
//! network and a node driver that may fail.

use std::time::Duration;

use opni_metrics_core::Timestamp;
use opni_metrics_core::backoff::Backoff;
use opni_metrics_core::digest::Digest;
use opni_metrics_core::node::{NodeConfig, NodeStatus, SyncReply, sync_decision};
use opni_metrics_core::spec::MetricsCapabilitySpec;
use opni_metrics_core::sync::{AgentSync, Effect, Input};

/// Counters of what happened, for the bounded-sync properties.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// `Sync` requests the agent sent.
    pub syncs: u64,
    /// `SyncNow`s delivered to the agent.
    pub sync_nows: u64,
    /// `Connected` inputs delivered.
    pub connects: u64,
    /// Failures fed to the agent (failed Sync RPCs and failed applies).
    pub failures: u64,
    /// Applies the agent requested.
    pub applies: u64,
    /// Applies that succeeded.
    pub applies_ok: u64,
    /// `NeedsUpdate` replies delivered.
    pub needs_update: u64,
    /// `SyncNow`s that carried the config (also counted in `sync_nows`).
    pub offers: u64,
}

/// Why [`World::settle`] gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoConvergence {
    /// Steps taken.
    pub steps: u32,
}

/// A gateway, its desired config for one agent, the agent and the network between them.
#[derive(Debug)]
pub struct World {
    /// Current simulated time.
    pub now: Timestamp,
    desired: NodeConfig,
    agent: AgentSync,
    connected: bool,
    /// A `Sync` on its way to the gateway: (seq, digest reported).
    request: Option<(u64, Option<Digest>)>,
    /// A reply on its way to the agent.
    reply: Option<(u64, SyncReply)>,
    /// An apply the driver is working on.
    applying: Option<Digest>,
    /// What the driver actually runs.
    pub driver_applied: Option<Digest>,
    wake_at: Option<Timestamp>,
    seed: u64,
    /// What happened so far.
    pub counters: Counters,
}

fn config(variant: u32, enabled: bool) -> NodeConfig {
    let mut spec = MetricsCapabilitySpec::default();
    spec.prometheus.queue.max_shards = 1 + variant % 64;
    NodeConfig { enabled, disabled_reasons: Vec::new(), spec }
}

impl World {
    /// A world with a disconnected agent that has applied nothing.
    pub fn new(seed: u64) -> Self {
        Self {
            now: Timestamp(0),
            desired: config(0, true),
            agent: AgentSync::new(None, Self::backoff(), seed),
            connected: false,
            request: None,
            reply: None,
            applying: None,
            driver_applied: None,
            wake_at: None,
            seed,
            counters: Counters::default(),
        }
    }

    fn backoff() -> Backoff {
        Backoff { base: Duration::from_millis(100), max: Duration::from_secs(10), jitter: 0.5 }
    }

    /// The gateway's desired digest.
    pub fn desired_digest(&self) -> Digest {
        self.desired.digest()
    }

    /// The agent machine.
    pub fn agent(&self) -> &AgentSync {
        &self.agent
    }

    /// Whether agent and driver have applied the desired config.
    pub fn converged(&self) -> bool {
        let d = self.desired_digest();
        self.agent.applied() == Some(&d) && self.driver_applied == Some(d)
    }

    fn feed(&mut self, input: Input) {
        match &input {
            Input::Connected => self.counters.connects += 1,
            Input::SyncNow => self.counters.sync_nows += 1,
            Input::Offered { .. } => {
                self.counters.sync_nows += 1;
                self.counters.offers += 1;
            }
            Input::SyncReplied { result: Err(_), .. } | Input::Applied { result: Err(_) } => {
                self.counters.failures += 1
            }
            Input::SyncReplied { result: Ok(SyncReply::NeedsUpdate { .. }), .. } => self.counters.needs_update += 1,
            _ => {}
        }
        for effect in self.agent.handle(self.now, input) {
            match effect {
                Effect::SendSync { seq, current_digest, .. } => {
                    self.counters.syncs += 1;
                    assert!(self.request.is_none() && self.reply.is_none(), "two Syncs in flight");
                    self.request = Some((seq, current_digest));
                }
                Effect::Apply { digest, .. } => {
                    self.counters.applies += 1;
                    assert!(self.applying.is_none(), "two applies in flight");
                    self.applying = Some(digest);
                }
                Effect::StatusChanged(_) => {}
                Effect::WakeAt(t) => self.wake_at = Some(self.wake_at.map_or(t, |w| w.min(t))),
                // (several timers collapse into the earliest; an early tick re-requests the rest)
            }
        }
    }

    /// The connection comes up.
    pub fn connect(&mut self) {
        if !self.connected {
            self.connected = true;
            self.feed(Input::Connected);
        }
    }

    /// The connection drops, losing whatever was on the wire.
    pub fn disconnect(&mut self) {
        if self.connected {
            self.connected = false;
            self.request = None;
            self.reply = None;
            self.feed(Input::Disconnected);
        }
    }

    /// The agent process restarts; the driver keeps running what it ran. With `remembers`, the
    /// new agent learns the applied digest from its driver.
    pub fn restart_agent(&mut self, remembers: bool) {
        self.connected = false;
        self.request = None;
        self.reply = None;
        self.applying = None;
        self.wake_at = None;
        self.seed = self.seed.wrapping_add(1);
        let applied = if remembers { self.driver_applied } else { None };
        self.agent = AgentSync::new(applied, Self::backoff(), self.seed);
    }

    /// The gateway's desired config changes; its `SyncNow` is delivered `copies` times (0: lost).
    pub fn change_desired(&mut self, variant: u32, enabled: bool) {
        self.desired = config(variant, enabled);
    }

    /// The gateway sends `SyncNow` (after a change, or periodically); it reaches the agent only
    /// while connected.
    pub fn sync_now(&mut self) {
        if self.connected {
            self.feed(Input::SyncNow);
        }
    }

    /// The gateway sends `SyncNow` carrying the desired config as of now (as a change does);
    /// it reaches the agent only while connected.
    pub fn offer_now(&mut self) {
        if self.connected {
            let config = self.desired.clone();
            let digest = config.digest();
            self.feed(Input::Offered { config, digest });
        }
    }

    /// The gateway answers the `Sync` on the wire, with the desired state as of now.
    pub fn gateway_answers(&mut self) {
        if let Some((seq, current)) = self.request.take() {
            self.reply = Some((seq, sync_decision(current.as_ref(), &self.desired)));
        }
    }

    /// The `Sync` on the wire fails (deadline, transport error).
    pub fn sync_fails(&mut self) {
        if let Some((seq, _)) = self.request.take().or_else(|| self.reply.take().map(|(s, _)| (s, None))) {
            self.feed(Input::SyncReplied { seq, result: Err("transport error".into()) });
        }
    }

    /// The reply on the wire reaches the agent.
    pub fn deliver_reply(&mut self) {
        if let Some((seq, reply)) = self.reply.take() {
            self.feed(Input::SyncReplied { seq, result: Ok(reply) });
        }
    }

    /// The driver finishes its apply.
    pub fn driver_finishes(&mut self, ok: bool) {
        if let Some(d) = self.applying.take() {
            if ok {
                self.driver_applied = Some(d);
                self.counters.applies_ok += 1;
                self.feed(Input::Applied { result: Ok(NodeStatus::default()) });
            } else {
                self.feed(Input::Applied { result: Err("driver failed".into()) });
            }
        }
    }

    /// Time passes by `ms`; a due wake-up delivers a tick.
    pub fn advance(&mut self, ms: u64) {
        self.now = self.now.after(Duration::from_millis(ms));
        if self.wake_at.is_some_and(|w| w <= self.now) {
            self.wake_at = None;
            self.feed(Input::Tick);
        }
    }

    /// Whether anything is on the wire, being applied or scheduled.
    pub fn busy(&self) -> bool {
        self.request.is_some() || self.reply.is_some() || self.applying.is_some() || self.wake_at.is_some()
    }

    /// Heals everything (connection up, no more failures), sends one periodic `SyncNow`, and
    /// runs until nothing is left to do. Returns the counters of this phase.
    ///
    /// # Errors
    /// [`NoConvergence`] if it does not go quiet within 10 000 steps (a loop).
    pub fn settle(&mut self) -> Result<Counters, NoConvergence> {
        let before = self.counters;
        self.connect();
        self.sync_now();
        for steps in 0..10_000 {
            if self.request.is_some() {
                self.gateway_answers();
            } else if self.reply.is_some() {
                self.deliver_reply();
            } else if self.applying.is_some() {
                self.driver_finishes(true);
            } else if let Some(w) = self.wake_at {
                self.advance(w.since(self.now).as_millis().try_into().unwrap_or(u64::MAX));
            } else {
                let _ = steps;
                return Ok(diff(self.counters, before));
            }
        }
        Err(NoConvergence { steps: 10_000 })
    }
}

fn diff(a: Counters, b: Counters) -> Counters {
    Counters {
        syncs: a.syncs - b.syncs,
        sync_nows: a.sync_nows - b.sync_nows,
        connects: a.connects - b.connects,
        failures: a.failures - b.failures,
        applies: a.applies - b.applies,
        applies_ok: a.applies_ok - b.applies_ok,
        needs_update: a.needs_update - b.needs_update,
        offers: a.offers - b.offers,
    }
}
