//! A session: keys that live as long as this process keeps its etcd lease (presence records).
//! Writes are applied in order by the session's own task; if the lease is lost (etcd was out of
//! reach longer than its time to live) a new one is granted and every key written again.

use std::collections::BTreeMap;

use opni_metrics_core::backoff::{Backoff, Rng};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::*;

enum Op {
    Put(String, Bytes),
    Delete(String),
}

/// Keys bound to this process's lease. Cheap to share; run [`Session::run`] once.
#[derive(Debug)]
pub struct Session {
    store: Arc<EtcdStore>,
    ttl: Duration,
    tx: mpsc::UnboundedSender<Op>,
    rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Op>>>,
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Put(k, _) => write!(f, "Put({k})"),
            Op::Delete(k) => write!(f, "Delete({k})"),
        }
    }
}

impl Session {
    /// A session on `store` whose lease lives `ttl` (at least [`MIN_LEASE_TTL`](super::election::MIN_LEASE_TTL))
    /// without renewal.
    pub fn new(store: Arc<EtcdStore>, ttl: Duration) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let ttl = ttl.max(super::election::MIN_LEASE_TTL);
        Arc::new(Self { store, ttl, tx, rx: std::sync::Mutex::new(Some(rx)) })
    }

    /// Writes `key` (bound to the session's lease).
    pub fn put(&self, key: &str, value: Bytes) {
        let _ = self.tx.send(Op::Put(key.to_owned(), value));
    }

    /// Deletes `key`.
    pub fn delete(&self, key: &str) {
        let _ = self.tx.send(Op::Delete(key.to_owned()));
    }

    /// Keeps the lease and applies writes until `stop` resolves, then revokes the lease (its
    /// keys go with it). Returns at once if already running.
    pub async fn run(self: Arc<Self>, stop: impl Future<Output = ()>) {
        let Some(mut rx) = self.rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() else {
            return;
        };
        let mut stop = std::pin::pin!(stop);
        let mut keys: BTreeMap<String, Bytes> = BTreeMap::new();
        // after a failed grant or keep-alive: core's back-off, from 0.5 s up to the lease's time
        // to live, jittered so that replicas do not retry in step
        let backoff = Backoff { base: Duration::from_millis(500), max: self.ttl, jitter: 0.2 };
        let mut rng = Rng::new(u64::from(std::process::id()));
        let mut failures = 0u32;
        loop {
            let lease = tokio::select! {
                () = &mut stop => return,
                l = self.grant() => l,
            };
            let keep_alive = match lease {
                None => None,
                Some(lease) => {
                    for (k, v) in &keys {
                        let _ = self.put_leased(k, v.clone(), lease).await;
                    }
                    match self.store.keep_alive(lease, self.ttl / 3).await {
                        Ok(ka) => Some((lease, ka)),
                        Err(e) => {
                            // the lease would outlive this attempt by its time to live, with the
                            // keys just written under it: give it back now
                            tracing::warn!(error = %e, "cannot keep the session lease alive; retrying");
                            self.store.revoke_lease(lease).await;
                            None
                        }
                    }
                }
            };
            let Some((lease, (ka_tx, mut responses))) = keep_alive else {
                failures = failures.saturating_add(1);
                tokio::select! {
                    () = &mut stop => return,
                    () = tokio::time::sleep(backoff.delay(failures, rng.next_u64())) => {}
                }
                continue;
            };
            failures = 0;
            let mut tick = tokio::time::interval_at(Instant::now() + self.ttl / 3, self.ttl / 3);
            loop {
                tokio::select! {
                    () = &mut stop => {
                        self.store.revoke_lease(lease).await;
                        return;
                    }
                    op = rx.recv() => match op {
                        None => return,
                        Some(Op::Put(k, v)) => {
                            if let Err(e) = self.put_leased(&k, v.clone(), lease).await {
                                tracing::warn!(key = %k, error = %e, "cannot write a session key");
                            }
                            keys.insert(k, v);
                        }
                        Some(Op::Delete(k)) => {
                            keys.remove(&k);
                            if let Err(e) = self.store.delete(&k, Precondition::None).await {
                                tracing::warn!(key = %k, error = %e, "cannot delete a session key");
                            }
                        }
                    },
                    _ = tick.tick() => { let _ = ka_tx.try_send(pb::LeaseKeepAliveRequest { id: lease }); }
                    msg = responses.message() => match msg {
                        Ok(Some(r)) if r.ttl > 0 => {}
                        _ => {
                            tracing::warn!("the session lease was lost; writing its keys again under a new one");
                            break;
                        }
                    },
                }
            }
        }
    }

    async fn grant(&self) -> Option<i64> {
        match self.store.grant_lease(self.ttl).await {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::warn!(error = %e, "cannot grant the session lease; retrying");
                None
            }
        }
    }

    async fn put_leased(&self, key: &str, value: Bytes, lease: i64) -> Result<(), StoreError> {
        validate_write(key, value.len())?;
        let put = pb::PutRequest { key: self.store.keys.full(key), value, lease, ..Default::default() };
        self.store
            .call("put", false, |ch| {
                let put = put.clone();
                async move { kv_client(ch).put(put).await }
            })
            .await?;
        Ok(())
    }
}
