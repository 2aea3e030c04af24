//! The agent's sync state machine, sans-IO.
//!
//! The daemon feeds [`Input`]s (with the current monotonic time) into [`AgentSync::handle`] and
//! performs the returned [`Effect`]s: send a `Sync` to the gateway, apply a config through the
//! node driver, publish status, wake the machine at a time. The machine never reads a clock,
//! never spawns and never sleeps.
//!
//! # Guarantees
//! - A config is applied only after a `NeedsUpdate` reply or an offer of the gateway's
//!   ([`Input::Offered`], a `SyncNow` carrying the config), never twice for one reply or offer,
//!   and never when its digest is the one already applied.
//! - An offer taken while nothing is in flight saves the `Sync` that would have asked for the
//!   config: the round is offer → apply → report `Sync` → `UpToDate`. An offer that arrives while
//!   a `Sync` or an apply is in flight, or whose digest is the one applied, is a plain
//!   `SyncNow`.
//! - At most one `Sync` and at most one apply are in flight; a `SyncNow` that arrives meanwhile
//!   is remembered (coalesced) and answered by exactly one more `Sync`.
//! - Without `SyncNow`s, reconnects or failures the machine is quiet: a completed round
//!   (`Sync` → `UpToDate`, or `Sync` → apply → report `Sync` → `UpToDate`) sends nothing more.
//! - Failures (transport errors, gateway errors, apply errors) retry after exponential back-off
//!   with jitter; a reconnect syncs at once.
//! - Replies to a `Sync` sent before a disconnect are ignored (matched by sequence number).

use crate::backoff::{Backoff, Rng};
use crate::digest::Digest;
use crate::id::Timestamp;
use crate::node::{Condition, ConditionKind, ConditionStatus, NodeConfig, NodeStatus, SyncReply};

/// Something that happened, fed to [`AgentSync::handle`].
#[allow(clippy::large_enum_variant)] // a short-lived message; boxing buys nothing
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The connection to the gateway is up (first connect or reconnect).
    Connected,
    /// The connection to the gateway is lost.
    Disconnected,
    /// The gateway asked this agent to sync.
    SyncNow,
    /// The gateway asked this agent to sync and offered the config it wants held (its digest
    /// checked by the caller).
    Offered {
        /// The config.
        config: NodeConfig,
        /// Its digest.
        digest: Digest,
    },
    /// The gateway answered the `Sync` numbered `seq`, or it failed.
    SyncReplied {
        /// The sequence number of the `Sync` this answers.
        seq: u64,
        /// The reply, or why there is none.
        result: Result<SyncReply, String>,
    },
    /// The node driver finished the apply requested last.
    Applied {
        /// The driver's status (its conditions), or why the apply failed.
        result: Result<NodeStatus, String>,
    },
    /// Time passed; delivered at or after a requested [`Effect::WakeAt`].
    Tick,
}

/// Something the daemon must do.
#[allow(clippy::large_enum_variant)] // a short-lived message; boxing buys nothing
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send `Sync` to the gateway and feed the answer back as [`Input::SyncReplied`] with `seq`.
    SendSync {
        /// Sequence number to echo in the reply.
        seq: u64,
        /// The digest of the config applied last, if any.
        current_digest: Option<Digest>,
        /// The status to report.
        status: NodeStatus,
    },
    /// Apply `config` through the node driver and feed the outcome back as [`Input::Applied`].
    Apply {
        /// The config.
        config: NodeConfig,
        /// Its digest.
        digest: Digest,
    },
    /// The agent's status changed (for `/readyz`, metrics and logs).
    StatusChanged(NodeStatus),
    /// Deliver [`Input::Tick`] at (or after) this time.
    WakeAt(Timestamp),
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Idle,
    Syncing { seq: u64 },
    Applying { digest: Digest },
    Backoff { until: Timestamp },
}

/// The agent's sync state machine. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct AgentSync {
    connected: bool,
    op: Op,
    pending: bool,
    applied: Option<Digest>,
    status: NodeStatus,
    failures: u32,
    seq: u64,
    backoff: Backoff,
    rng: Rng,
}

impl AgentSync {
    /// A disconnected machine. `applied` is the digest the node driver reports as currently
    /// applied (after an agent restart), if it knows; `seed` seeds the back-off jitter.
    pub fn new(applied: Option<Digest>, backoff: Backoff, seed: u64) -> Self {
        let status = NodeStatus { applied_digest: applied, conditions: Vec::new() };
        Self {
            connected: false,
            op: Op::Idle,
            pending: false,
            applied,
            status,
            failures: 0,
            seq: 0,
            backoff,
            rng: Rng::new(seed),
        }
    }

    /// The digest of the config applied last.
    pub fn applied(&self) -> Option<&Digest> {
        self.applied.as_ref()
    }

    /// The current status.
    pub fn status(&self) -> &NodeStatus {
        &self.status
    }

    /// Whether nothing is in flight, nothing is pending and no retry is scheduled.
    pub fn is_idle(&self) -> bool {
        self.op == Op::Idle && !self.pending
    }

    /// Consecutive failures since the last successful round.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Handles one input at monotonic time `now` and returns what to do, in order.
    pub fn handle(&mut self, now: Timestamp, input: Input) -> Vec<Effect> {
        let mut fx = Vec::new();
        let before = self.status.clone();
        match input {
            Input::Connected => {
                self.connected = true;
                self.request_sync(&mut fx);
            }
            Input::Disconnected => {
                self.connected = false;
                self.pending = false;
                if matches!(self.op, Op::Syncing { .. } | Op::Backoff { .. }) {
                    self.op = Op::Idle;
                }
                self.set(
                    ConditionKind::Synced,
                    ConditionStatus::Unknown,
                    "Disconnected",
                    "the gateway is not connected",
                );
            }
            Input::SyncNow => self.request_sync(&mut fx),
            Input::Offered { config, digest } => {
                if self.connected && self.op == Op::Idle && Some(digest) != self.applied && config.digest() == digest {
                    // what a NeedsUpdate reply would have brought: apply it, then report
                    self.pending = false;
                    self.op = Op::Applying { digest };
                    fx.push(Effect::Apply { config, digest });
                } else {
                    self.request_sync(&mut fx);
                }
            }
            Input::SyncReplied { seq, result } => {
                if self.op == (Op::Syncing { seq }) {
                    self.on_reply(now, result, &mut fx);
                }
            }
            Input::Applied { result } => {
                if let Op::Applying { digest } = self.op.clone() {
                    self.on_applied(now, digest, result, &mut fx);
                }
            }
            Input::Tick => {
                if let Op::Backoff { until } = self.op {
                    if now >= until {
                        self.op = Op::Idle;
                        if self.connected {
                            self.send_sync(&mut fx);
                        }
                    } else {
                        // An early tick (a timer from an older back-off): keep the wake-up.
                        fx.push(Effect::WakeAt(until));
                    }
                }
            }
        }
        if self.status != before {
            fx.push(Effect::StatusChanged(self.status.clone()));
        }
        fx
    }

    fn request_sync(&mut self, fx: &mut Vec<Effect>) {
        if self.connected && self.op == Op::Idle {
            self.send_sync(fx);
        } else {
            self.pending = true;
        }
    }

    fn send_sync(&mut self, fx: &mut Vec<Effect>) {
        self.pending = false;
        self.seq += 1;
        self.op = Op::Syncing { seq: self.seq };
        fx.push(Effect::SendSync { seq: self.seq, current_digest: self.applied, status: self.status.clone() });
    }

    fn on_reply(&mut self, now: Timestamp, result: Result<SyncReply, String>, fx: &mut Vec<Effect>) {
        match result {
            Ok(SyncReply::UpToDate) => self.round_done(fx),
            Ok(SyncReply::NeedsUpdate { digest, .. }) if Some(digest) == self.applied => {
                // Already applied: nothing to do, and re-applying could loop.
                self.round_done(fx);
            }
            Ok(SyncReply::NeedsUpdate { config, digest }) => {
                if config.digest() != digest {
                    self.fail(now, "SyncFailed", "the gateway sent a config whose digest does not match it", fx);
                    return;
                }
                self.op = Op::Applying { digest };
                fx.push(Effect::Apply { config, digest });
            }
            Err(e) => self.fail(now, "SyncFailed", &e, fx),
        }
    }

    fn round_done(&mut self, fx: &mut Vec<Effect>) {
        self.failures = 0;
        self.op = Op::Idle;
        self.set(ConditionKind::Synced, ConditionStatus::True, "", "");
        if self.pending && self.connected {
            self.send_sync(fx);
        }
    }

    fn on_applied(&mut self, now: Timestamp, digest: Digest, result: Result<NodeStatus, String>, fx: &mut Vec<Effect>) {
        match result {
            Ok(driver) => {
                self.applied = Some(digest);
                for c in driver.conditions {
                    if c.kind != ConditionKind::Applied && c.kind != ConditionKind::Synced {
                        self.status.set(c);
                    }
                }
                self.status.applied_digest = Some(digest);
                self.set(ConditionKind::Applied, ConditionStatus::True, "", "");
                self.op = Op::Idle;
                // Report the new status; the reply also catches changes made meanwhile.
                if self.connected {
                    self.send_sync(fx);
                } else {
                    self.pending = false;
                }
            }
            Err(e) => {
                self.set(ConditionKind::Applied, ConditionStatus::False, "ApplyFailed", &e);
                self.fail(now, "ApplyFailed", &e, fx);
            }
        }
    }

    fn fail(&mut self, now: Timestamp, reason: &str, message: &str, fx: &mut Vec<Effect>) {
        self.failures = self.failures.saturating_add(1);
        self.set(ConditionKind::Synced, ConditionStatus::False, reason, message);
        let until = now.after(self.backoff.delay(self.failures, self.rng.next_u64()));
        self.op = Op::Backoff { until };
        fx.push(Effect::WakeAt(until));
    }

    fn set(&mut self, kind: ConditionKind, status: ConditionStatus, reason: &str, message: &str) {
        self.status.set(Condition { kind, status, reason: reason.to_owned(), message: message.to_owned() });
    }
}

#[cfg(test)]
mod tests;
