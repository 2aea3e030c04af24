//! Leader election with a `coordination.k8s.io/v1` `Lease`, the way client-go does it: the
//! holder renews every `retry_period`; a candidate takes the lease over only after it has seen
//! the same holder record unchanged for `lease_duration` (its own clock, never the holder's);
//! every write is a compare-and-swap on `resourceVersion`. A leader that cannot renew within
//! `renew_deadline` (shorter than the lease duration, so it stops before anyone can take over)
//! steps down and publishes `false`. Every API call of an attempt runs under that deadline, so
//! a hung API server cannot keep a leader leading: it stops at most `renew_deadline` after the
//! start of its last successful renewal, while a candidate takes over no earlier than
//! `lease_duration` after it first saw that renewal's record, so two leaders never overlap as long
//! as both clocks run at the same rate.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::{Error, is_conflict, is_not_found};
use crate::{FIELD_MANAGER, MANAGED_BY_LABEL};

/// Timing and identity of one candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This candidate (unique per process, e.g. the pod name).
    pub identity: String,
    /// How long a lease is valid after its last renewal.
    pub lease_duration: Duration,
    /// How long a leader keeps trying to renew before it steps down (< `lease_duration`).
    pub renew_deadline: Duration,
    /// Time between attempts.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// Settings with client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Checks the timing rules.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the field when `renew_deadline >= lease_duration`,
    /// `retry_period >= renew_deadline`, or the identity is empty.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |field: &str, reason: &str| Err(Error::Invalid { field: field.into(), reason: reason.into() });
        if self.identity.is_empty() {
            return invalid("identity", "must not be empty");
        }
        if self.renew_deadline >= self.lease_duration {
            return invalid("renewDeadline", "must be shorter than the lease duration");
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return invalid("retryPeriod", "must be positive and shorter than the renew deadline");
        }
        if self.lease_duration.as_secs() == 0 {
            return invalid("leaseDuration", "must be at least one second");
        }
        Ok(())
    }
}

/// A candidate for the lease.
#[derive(Debug)]
pub struct LeaseElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// The holder record last seen and when this candidate first saw it.
    observed: Option<(String, Option<Timestamp>, Instant)>,
    leading: watch::Sender<bool>,
}

impl LeaseElector {
    /// A candidate; call [`LeaseElector::run`].
    ///
    /// # Errors
    /// [`Error::Invalid`] from [`LeaseSettings::validate`].
    pub fn new(client: Client, settings: LeaseSettings) -> Result<Self, Error> {
        settings.validate()?;
        let api = Api::namespaced(client, &settings.namespace);
        Ok(Self { api, settings, observed: None, leading: watch::Sender::new(false) })
    }

    /// Whether this candidate leads, now and as it changes.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// Campaigns and renews until dropped. Prefer [`LeaseElector::run_until`], which also gives
    /// the lease up at shutdown.
    pub async fn run(mut self) {
        self.campaign().await;
    }

    /// Campaigns and renews until `shutdown` completes, then steps down and releases the lease
    /// (waiting at most `renew_deadline` for the API server) so another candidate takes over at
    /// once instead of after the lease expires.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) {
        tokio::select! {
            () = self.campaign() => {}
            () = shutdown => {}
        }
        let was_leading = self.leading.send_replace(false);
        if was_leading {
            match tokio::time::timeout(self.settings.renew_deadline, self.release()).await {
                Ok(Ok(())) => tracing::info!(lease = %self.settings.name, "released the lease"),
                Ok(Err(e)) => tracing::warn!(error = %e, lease = %self.settings.name, "could not release the lease"),
                Err(_) => tracing::warn!(lease = %self.settings.name, "releasing the lease timed out"),
            }
        }
    }

    /// The election loop. Every attempt runs under a deadline: a leader's is `renew_deadline`
    /// after the start of its last successful renewal, so a hung API call (or a slow one) can
    /// never keep it leading past that instant; a candidate's is `renew_deadline` from the
    /// attempt's start. A renewal counts from when it was sent, not when it was answered.
    async fn campaign(&mut self) {
        let renew_deadline = self.settings.renew_deadline;
        // start of the last successful renewal, while leading
        let mut renewed: Option<Instant> = None;
        loop {
            let started = Instant::now();
            if let Some(t) = renewed.filter(|t| started >= *t + renew_deadline) {
                self.step_down(t);
                renewed = None;
            }
            let deadline = renewed.map_or(started + renew_deadline, |t| t + renew_deadline);
            let ok = match tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(ok)) => ok,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, lease = %self.settings.name, "lease attempt failed");
                    false
                }
                Err(_) => {
                    tracing::warn!(lease = %self.settings.name, "the API server did not answer the lease attempt in time");
                    false
                }
            };
            let mut wake = Instant::now() + self.settings.retry_period;
            if ok {
                renewed = Some(started);
                if !*self.leading.borrow() {
                    tracing::info!(identity = %self.settings.identity, lease = %self.settings.name, "became leader");
                    self.leading.send_replace(true);
                }
            } else if let Some(t) = renewed {
                // wake no later than the deadline, to step down on time
                wake = wake.min(t + renew_deadline);
            }
            tokio::time::sleep_until(wake).await;
        }
    }

    fn step_down(&self, last_renewal: Instant) {
        tracing::warn!(
            identity = %self.settings.identity,
            lease = %self.settings.name,
            since_last_renewal_ms = u64::try_from(last_renewal.elapsed().as_millis()).unwrap_or(u64::MAX),
            "could not renew the lease in time; stepping down"
        );
        self.leading.send_replace(false);
    }

    /// Gives the lease up (on shutdown) so another candidate need not wait for it to expire.
    ///
    /// # Errors
    /// [`Error::Api`] when the Lease cannot be read or written.
    pub async fn release(&self) -> Result<(), Error> {
        self.leading.send_replace(false);
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await.map_err(Error::api("get Lease"))? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(&self.settings.identity) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match self.api.replace(&self.settings.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) || is_not_found(&e) => Ok(()),
            Err(e) => Err(Error::api("release Lease")(e)),
        }
    }

    fn duration_secs(&self) -> i32 {
        i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    async fn try_acquire_or_renew(&mut self) -> Result<bool, Error> {
        let now = Timestamp::now();
        let me = self.settings.identity.clone();
        let existing = self.api.get_opt(&self.settings.name).await.map_err(Error::api("get Lease"))?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    labels: Some([(MANAGED_BY_LABEL.to_owned(), FIELD_MANAGER.to_owned())].into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(self.duration_secs()),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(Error::api("create Lease")(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let renew = spec.renew_time.as_ref().map(|t| t.0);
        let ours = holder == me;
        if !ours && !holder.is_empty() {
            // expiry by our own clock: the record must stay unchanged for a whole lease duration
            let seen = Instant::now();
            let first_seen = match &self.observed {
                Some((h, r, at)) if *h == holder && *r == renew => *at,
                _ => {
                    self.observed = Some((holder.clone(), renew, seen));
                    seen
                }
            };
            let duration = spec
                .lease_duration_seconds
                .map_or(self.settings.lease_duration, |s| Duration::from_secs(u64::try_from(s.max(1)).unwrap_or(1)));
            if seen.duration_since(first_seen) < duration {
                return Ok(false);
            }
        }
        let new_spec = LeaseSpec {
            holder_identity: Some(me),
            lease_duration_seconds: Some(self.duration_secs()),
            acquire_time: if ours { spec.acquire_time.clone() } else { Some(MicroTime(now)) },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + i32::from(!ours)),
            ..spec
        };
        lease.spec = Some(new_spec);
        match self.api.replace(&self.settings.name, &PostParams::default(), &lease).await {
            Ok(_) => {
                if !ours {
                    tracing::info!(previous = %holder, "took over the lease");
                }
                Ok(true)
            }
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(Error::api("renew Lease")(e)),
        }
    }
}

/// Runs `work` while `leading` is true: started when leadership is gained, dropped (stopped at
/// its next await point) as soon as it is lost. Returns when `leading`'s sender is gone.
pub async fn while_leading<F, Fut>(mut leading: watch::Receiver<bool>, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        if leading.wait_for(|l| *l).await.is_err() {
            return;
        }
        let lost = {
            let run = work();
            tokio::select! {
                () = run => false,
                _ = leading.wait_for(|l| !*l) => true,
            }
        };
        if lost {
            tracing::warn!("lost leadership; stopped");
        }
        // the work ended on its own or leadership was lost: wait for the end of the term
        if leading.wait_for(|l| !*l).await.is_err() {
            return;
        }
    }
}
