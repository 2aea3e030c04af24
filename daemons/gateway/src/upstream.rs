//! The upstream state that node enablement follows: the cluster driver's status, polled and
//! written to the store (every replica sees it; the store watch tells every agent to sync).
//!
//! Rules: the driver's install state is taken as it is, except that an installed upstream
//! whose workloads fail (`AppState::Failed`) becomes `Failing` — which disables agents — only
//! after it has failed continuously for the grace period; a status read that fails changes
//! nothing, so one bad read never disables the fleet.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opni_metrics_core::driver::{AppState, ClusterDriver, ClusterStatus};
use opni_metrics_core::node::UpstreamState;
use opni_metrics_transport::Tasks;
use tokio::time::Instant;

use crate::state::State;

/// What the upstream state is, given the driver's status, the time, and since when the
/// upstream has been failing (updated).
///
/// `stored` is the state in the store: a `Failing` written by this or another replica stays
/// until a healthy read, so replicas (or a restarted one) whose own failure clock started later
/// never flip it back while the upstream still fails.
pub(crate) fn decide(
    s: &ClusterStatus,
    stored: UpstreamState,
    now: Instant,
    failing_since: &mut Option<Instant>,
    grace: Duration,
) -> UpstreamState {
    match s.install_state {
        UpstreamState::Installed | UpstreamState::Failing if s.app_state == AppState::Failed => {
            let since = *failing_since.get_or_insert(now);
            if stored == UpstreamState::Failing || now.duration_since(since) >= grace {
                UpstreamState::Failing
            } else {
                UpstreamState::Installed
            }
        }
        other => {
            *failing_since = None;
            if other == UpstreamState::Failing { UpstreamState::Installed } else { other }
        }
    }
}

/// Polls the driver and keeps the stored upstream state current.
#[derive(Clone)]
pub(crate) struct UpstreamWatch {
    inner: Arc<Inner>,
}

struct Inner {
    state: State,
    driver: Arc<dyn ClusterDriver>,
    grace: Duration,
    failing_since: Mutex<Option<Instant>>,
}

impl UpstreamWatch {
    /// Starts polling every `interval` in `tasks`.
    pub(crate) fn start(
        state: State,
        driver: Arc<dyn ClusterDriver>,
        interval: Duration,
        grace: Duration,
        tasks: &Tasks,
    ) -> Self {
        let this = Self { inner: Arc::new(Inner { state, driver, grace, failing_since: Mutex::new(None) }) };
        let poller = this.clone();
        tasks.spawn("upstream-status", async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                poller.refresh().await;
            }
        });
        this
    }

    /// Polls now and writes the state when it changed.
    pub(crate) async fn refresh(&self) {
        let i = &self.inner;
        let status = match i.driver.status().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %opni_metrics_core::error_chain(&e), "cannot read the upstream status; keeping the last state");
                return;
            }
        };
        let stored = match i.state.upstream().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the stored upstream state");
                return;
            }
        };
        let next = {
            let mut since = i.failing_since.lock().unwrap_or_else(PoisonError::into_inner);
            decide(&status, stored, Instant::now(), &mut since, i.grace)
        };
        if stored != next {
            tracing::info!(from = ?stored, to = ?next, "upstream state changed");
            if let Err(e) = i.state.set_upstream(next).await {
                tracing::warn!(error = %e, "cannot store the upstream state");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(install: UpstreamState, app: AppState) -> ClusterStatus {
        ClusterStatus { install_state: install, app_state: app, workloads: vec![], warnings: vec![], version: None }
    }

    #[test]
    fn failing_needs_the_whole_grace_period() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(60);
        let mut since = None;
        let failed = status(UpstreamState::Installed, AppState::Failed);
        let installed = UpstreamState::Installed;
        assert_eq!(decide(&failed, installed, t0, &mut since, grace), UpstreamState::Installed);
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(decide(&failed, installed, at(59), &mut since, grace), UpstreamState::Installed);
        assert_eq!(decide(&failed, installed, at(60), &mut since, grace), UpstreamState::Failing);
        // recovery re-enables at once and restarts the clock
        let ok = status(UpstreamState::Installed, AppState::Running);
        assert_eq!(decide(&ok, UpstreamState::Failing, at(61), &mut since, grace), UpstreamState::Installed);
        assert_eq!(since, None);
        assert_eq!(decide(&failed, installed, at(62), &mut since, grace), UpstreamState::Installed);
        // other states pass through
        let gone = status(UpstreamState::NotInstalled, AppState::NotRunning);
        assert_eq!(decide(&gone, installed, t0, &mut since, grace), UpstreamState::NotInstalled);
    }

    #[test]
    fn a_replica_whose_clock_started_later_keeps_a_stored_failing() {
        // another replica (or this one before a restart) stored Failing; this one only now
        // sees the failure: it must not flip the fleet back on
        let mut since = None;
        let failed = status(UpstreamState::Installed, AppState::Failed);
        let grace = Duration::from_secs(120);
        let d = decide(&failed, UpstreamState::Failing, Instant::now(), &mut since, grace);
        assert_eq!(d, UpstreamState::Failing);
    }
}
