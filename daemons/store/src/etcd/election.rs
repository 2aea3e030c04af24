//! Leader election on etcd: the recipe etcd's own election API implements, on the KV and Lease
//! services. A candidate grants itself a lease, creates the election key bound to that lease if
//! nobody holds it (a transaction comparing its create revision with 0), else waits for the key
//! to be deleted and tries again. The holder keeps its lease alive; the key goes when the lease
//! ends (revoked at shutdown, or expired when the holder dies or is cut off).
//!
//! The timing guarantee: a leader counts its lease as ending `ttl - margin` after it *sent* the
//! last keep-alive that etcd confirmed. etcd renewed the lease no earlier than that send, so the
//! lease cannot expire (and no other replica can be elected) before then: a leader that cannot
//! renew (etcd down, partitioned, a hung call) stops leading at least `margin` before anyone
//! else can start. Nothing it does depends on a call returning.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::*;

/// How an [`Election`] campaigns.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ElectionSettings {
    /// The election's name (its key is `<prefix>elections/<name>`).
    pub name: String,
    /// What the leader writes as the key's value (shown to operators), e.g. the pod name.
    pub identity: String,
    /// The lease's time to live. Default [`DEFAULT_LEASE_TTL`]; at least [`MIN_LEASE_TTL`].
    pub ttl: Duration,
    /// How long before the lease could end the leader stops. Default 2 s; below `ttl / 2`.
    pub margin: Duration,
}

/// The shortest lease an [`Election`] or a [`Session`](super::Session) takes: etcd's own
/// minimum TTL is about 1.5 election timeouts, and a renewal needs a round trip to spare.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(3);

/// The lease TTL of an [`ElectionSettings::new`].
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);

impl ElectionSettings {
    /// Settings for election `name`, campaigning as `identity`, with the default timing.
    pub fn new(name: impl Into<String>, identity: impl Into<String>) -> Self {
        Self { name: name.into(), identity: identity.into(), ttl: DEFAULT_LEASE_TTL, margin: Duration::from_secs(2) }
    }

    /// These settings with lease TTL `ttl` and a margin that fits it: a fifth of it, at least
    /// 1 s.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self.margin = (ttl / 5).max(Duration::from_secs(1));
        self
    }

    /// Checks the settings as [`Election::new`] does.
    ///
    /// # Errors
    /// [`EtcdError::Election`] naming what is unusable.
    pub fn validate(&self) -> Result<(), EtcdError> {
        if self.ttl < MIN_LEASE_TTL || self.margin.is_zero() || self.margin * 2 >= self.ttl {
            return Err(EtcdError::Election("ttl must be at least 3s and margin above 0 and below ttl/2"));
        }
        if self.name.is_empty() || self.name.contains('/') {
            return Err(EtcdError::Election("the election name must be non-empty, without '/'"));
        }
        Ok(())
    }
}

/// A campaign for leadership. Run [`Election::run`] (a future; spawn it) and watch
/// [`Election::leading`].
#[derive(Debug)]
pub struct Election {
    store: Arc<EtcdStore>,
    settings: ElectionSettings,
    tx: watch::Sender<bool>,
}

/// Why a term ended.
#[derive(Debug, thiserror::Error)]
enum TermEnd {
    #[error("{0}")]
    Etcd(#[from] StoreError),
    #[error("the lease could not be renewed in time")]
    Late,
    #[error("etcd ended the lease")]
    LeaseGone,
}

impl Election {
    /// A campaign on `store`.
    ///
    /// # Errors
    /// [`EtcdError::Election`] for unusable settings.
    pub fn new(store: Arc<EtcdStore>, settings: ElectionSettings) -> Result<Self, EtcdError> {
        settings.validate()?;
        let (tx, _) = watch::channel(false);
        Ok(Self { store, settings, tx })
    }

    /// Whether this replica leads, now and as it changes.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    fn key(&self) -> String {
        format!("elections/{}", self.settings.name)
    }

    /// Campaigns until `stop` resolves, leading whenever it wins, then gives the lead up
    /// (revoking the lease, so that another replica takes over at once).
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let mut backoff = Duration::from_millis(500);
        loop {
            let ended = tokio::select! {
                () = &mut stop => None,
                r = self.term() => Some(r),
            };
            self.tx.send_replace(false);
            match ended {
                None => return,
                Some(Ok(())) => return,
                Some(Err(e)) => {
                    tracing::warn!(election = %self.settings.name, error = %opni_metrics_core::error_chain(&e), "leadership term ended; campaigning again");
                }
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.settings.ttl);
        }
    }

    /// One lease: campaign with it, lead while it is renewed in time. Ends with an error when
    /// the lease is lost; when dropped (stop), revokes it.
    async fn term(&self) -> Result<(), TermEnd> {
        let ttl = self.settings.ttl;
        let sent = Instant::now();
        let lease = self.store.grant_lease(ttl).await?;
        let _revoke = Revoke { store: Arc::clone(&self.store), id: lease };
        // send times of keep-alives not answered yet, oldest first (the first is sent now)
        let mut pending: VecDeque<Instant> = VecDeque::from([Instant::now()]);
        let (ka_tx, mut responses) = self.store.keep_alive(lease, ttl / 3).await?;
        let mut last_ok = sent;
        let mut tick = tokio::time::interval_at(Instant::now() + ttl / 3, ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut campaign = std::pin::pin!(self.campaign(lease));
        let mut leading = false;
        loop {
            let deadline = last_ok + ttl - self.settings.margin;
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {
                    if leading {
                        tracing::error!(election = %self.settings.name, "the lease was not renewed in time; no longer leading");
                    }
                    return Err(TermEnd::Late);
                }
                _ = tick.tick() => {
                    if ka_tx.try_send(pb::LeaseKeepAliveRequest { id: lease }).is_ok() {
                        pending.push_back(Instant::now());
                    }
                }
                msg = responses.message() => match msg {
                    Ok(Some(r)) if r.ttl > 0 => {
                        if let Some(t) = pending.pop_front() {
                            last_ok = t;
                        }
                    }
                    Ok(_) => return Err(TermEnd::LeaseGone),
                    Err(status) => {
                        return Err(TermEnd::Etcd(
                            Failure { op: "lease keepalive", endpoint: self.store.endpoint(), status }.into(),
                        ));
                    }
                },
                won = &mut campaign, if !leading => {
                    won?;
                    leading = true;
                    self.tx.send_replace(true);
                    tracing::info!(election = %self.settings.name, identity = %self.settings.identity, "leading");
                }
            }
        }
    }

    /// Creates the election key with `lease` once nobody holds it.
    async fn campaign(&self, lease: i64) -> Result<(), TermEnd> {
        let key = self.key();
        let full = self.store.keys.full(&key);
        loop {
            let put = pb::PutRequest {
                key: full.clone(),
                value: Bytes::from(self.settings.identity.clone().into_bytes()),
                lease,
                ..Default::default()
            };
            let Some(cmp) = compare(&full, Precondition::Absent) else {
                return Err(TermEnd::LeaseGone);
            };
            let resp = self
                .store
                .txn(guarded(&full, cmp, pb::request_op::Request::RequestPut(put)))
                .await
                .map_err(StoreError::from)?;
            if resp.succeeded {
                return Ok(());
            }
            // held: wait until the holder's key is gone (its lease revoked or expired)
            let at = header_revision(resp.header.as_ref())?;
            let mut events = self.store.watch(&key, at).await?;
            loop {
                match events.next().await {
                    Some(Ok(WatchEvent::Delete { key: k, .. })) if k == key => break,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(TermEnd::LeaseGone),
                }
            }
        }
    }
}

/// Revokes a lease when dropped (best effort, in the background, within a deadline), so that a
/// leader that stops hands over at once instead of after the lease's time to live.
struct Revoke {
    store: Arc<EtcdStore>,
    id: i64,
}

impl Drop for Revoke {
    fn drop(&mut self) {
        let store = Arc::clone(&self.store);
        let id = self.id;
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { store.revoke_lease(id).await });
        }
    }
}
