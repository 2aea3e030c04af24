//! In-flight budgets of the forwarding path: bytes held by the whole gateway, and by each tenant
//! a share of them plus a number of requests, so one agent catching up after an outage can
//! neither exhaust memory nor starve the others. Over a budget, a request is refused at once
//! ([`ForwardError::Overloaded`], which the agent answers 503 with `Retry-After`); nothing
//! queues. What a request holds is released when it ends, or when it is cancelled: a guard
//! gives it back on drop, so no cancellation leaves the budget or its gauges drifting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use opni_metrics_core::ClusterId;
use opni_metrics_core::remote_write::{ForwardError, ForwardRequest, ForwardResponse};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tower::{Layer, Service};

/// The budgets.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct BudgetSettings {
    /// Body bytes all requests in flight upstream may hold together. Default 256 MiB.
    pub max_in_flight_bytes: usize,
    /// The share of `max_in_flight_bytes` one tenant may hold (0 < share ≤ 1). Default 0.25:
    /// the others keep service as long as fewer than four tenants flood at once.
    pub tenant_share: f64,
    /// Requests one tenant may have in flight upstream. Default 256.
    pub max_requests_per_tenant: usize,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        Self { max_in_flight_bytes: 256 << 20, tenant_share: 0.25, max_requests_per_tenant: 256 }
    }
}

#[derive(Default, Clone, Copy)]
struct Use {
    bytes: usize,
    requests: usize,
}

/// The shared accounting; cheap to clone.
#[derive(Clone)]
pub struct Budget {
    inner: Arc<Inner>,
}

struct Inner {
    settings: BudgetSettings,
    tenant_bytes: usize,
    state: Mutex<(Use, HashMap<ClusterId, Use>)>,
    in_flight_bytes: Gauge,
    refused: Family<Vec<(String, String)>, Counter>,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget").field("settings", &self.inner.settings).finish_non_exhaustive()
    }
}

/// What one admitted request holds.
struct Held {
    budget: Arc<Inner>,
    tenant: ClusterId,
    bytes: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut s = self.budget.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.0.bytes -= self.bytes;
        s.0.requests -= 1;
        if let Some(t) = s.1.get_mut(&self.tenant) {
            t.bytes -= self.bytes;
            t.requests -= 1;
            if t.requests == 0 {
                s.1.remove(&self.tenant);
            }
        }
        self.budget.in_flight_bytes.dec_by(i64::try_from(self.bytes).unwrap_or(i64::MAX));
    }
}

impl Budget {
    /// Budgets over `settings`, reporting into `in_flight_bytes` and `refused` (by reason).
    pub fn new(
        settings: BudgetSettings,
        in_flight_bytes: Gauge,
        refused: Family<Vec<(String, String)>, Counter>,
    ) -> Self {
        let share = settings.tenant_share.clamp(f64::MIN_POSITIVE, 1.0);
        let tenant_bytes = ((settings.max_in_flight_bytes as f64) * share) as usize;
        Self {
            inner: Arc::new(Inner {
                settings,
                tenant_bytes: tenant_bytes.max(1),
                state: Mutex::new((Use::default(), HashMap::new())),
                in_flight_bytes,
                refused,
            }),
        }
    }

    /// Admits a request of `bytes` for `tenant`, or says which budget it would exceed.
    fn admit(&self, tenant: &ClusterId, bytes: usize) -> Result<Held, &'static str> {
        let i = &self.inner;
        let mut s = i.state.lock().unwrap_or_else(PoisonError::into_inner);
        let t = s.1.get(tenant).copied().unwrap_or_default();
        if t.requests >= i.settings.max_requests_per_tenant {
            return Err("tenant_requests");
        }
        // a single request larger than the share still passes when the tenant holds nothing
        if t.bytes > 0 && t.bytes + bytes > i.tenant_bytes {
            return Err("tenant_bytes");
        }
        if s.0.bytes > 0 && s.0.bytes + bytes > i.settings.max_in_flight_bytes {
            return Err("global_bytes");
        }
        s.0.bytes += bytes;
        s.0.requests += 1;
        let e = s.1.entry(tenant.clone()).or_default();
        e.bytes += bytes;
        e.requests += 1;
        i.in_flight_bytes.inc_by(i64::try_from(bytes).unwrap_or(i64::MAX));
        Ok(Held { budget: Arc::clone(&self.inner), tenant: tenant.clone(), bytes })
    }

    /// Bytes and requests in flight now (for tests and diagnostics).
    pub fn in_flight(&self) -> (usize, usize) {
        let s = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        (s.0.bytes, s.0.requests)
    }
}

/// The layer putting a [`Budget`] in front of a forwarding service.
#[derive(Clone, Debug)]
pub struct BudgetLayer {
    budget: Budget,
}

impl BudgetLayer {
    /// A layer over `budget`.
    pub fn new(budget: Budget) -> Self {
        Self { budget }
    }
}

impl<S> Layer<S> for BudgetLayer {
    type Service = Budgeted<S>;
    fn layer(&self, inner: S) -> Budgeted<S> {
        Budgeted { inner, budget: self.budget.clone() }
    }
}

/// A forwarding service behind a [`Budget`].
#[derive(Clone, Debug)]
pub struct Budgeted<S> {
    inner: S,
    budget: Budget,
}

impl<S> Service<ForwardRequest> for Budgeted<S>
where
    S: Service<ForwardRequest, Response = ForwardResponse, Error = ForwardError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = ForwardResponse;
    type Error = ForwardError;
    type Future = BoxFuture<'static, Result<ForwardResponse, ForwardError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ForwardError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: ForwardRequest) -> Self::Future {
        match self.budget.admit(&req.tenant, req.body.len()) {
            Err(reason) => {
                self.budget.inner.refused.get_or_create(&vec![("reason".to_owned(), reason.to_owned())]).inc();
                Box::pin(async { Err(ForwardError::Overloaded) })
            }
            Ok(held) => {
                let fut = self.inner.call(req);
                Box::pin(async move {
                    let r = fut.await;
                    drop(held);
                    r
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn budget(global: usize, share: f64, requests: usize) -> Budget {
        let s = BudgetSettings { max_in_flight_bytes: global, tenant_share: share, max_requests_per_tenant: requests };
        Budget::new(s, Gauge::default(), Family::default())
    }

    #[test]
    fn a_flooding_tenant_keeps_to_its_share() {
        let b = budget(1000, 0.5, 10);
        let (a, c) = (ClusterId::new("a").unwrap(), ClusterId::new("c").unwrap());
        let held: Vec<Held> = (0..5).map(|_| b.admit(&a, 100).unwrap()).collect();
        assert_eq!(b.admit(&a, 100).err(), Some("tenant_bytes"));
        // the other tenant still has room
        let other = b.admit(&c, 400).unwrap();
        assert_eq!(b.admit(&c, 200).err(), Some("tenant_bytes"));
        assert_eq!(b.in_flight(), (900, 6));
        drop(held);
        drop(other);
        assert_eq!(b.in_flight(), (0, 0), "everything is given back");
        assert_eq!(b.inner.in_flight_bytes.get(), 0);
    }

    #[test]
    fn requests_and_the_global_budget_are_capped() {
        let b = budget(1000, 1.0, 2);
        let a = ClusterId::new("a").unwrap();
        let _x = b.admit(&a, 1).unwrap();
        let _y = b.admit(&a, 1).unwrap();
        assert_eq!(b.admit(&a, 1).err(), Some("tenant_requests"));
        let c = ClusterId::new("c").unwrap();
        let _big = b.admit(&c, 990).unwrap();
        assert_eq!(b.admit(&ClusterId::new("d").unwrap(), 100).err(), Some("global_bytes"));
        // a single request larger than everything passes only alone
        let solo = budget(10, 0.5, 2);
        assert!(solo.admit(&a, 50).is_ok());
    }

    #[tokio::test]
    async fn a_cancelled_request_gives_its_budget_back() {
        let b = budget(1000, 1.0, 10);
        let pending = tower::service_fn(|_: ForwardRequest| async {
            std::future::pending::<()>().await;
            Ok::<ForwardResponse, ForwardError>(ForwardResponse {
                status: 204,
                body: Default::default(),
                headers: vec![],
            })
        });
        let mut svc = BudgetLayer::new(b.clone()).layer(pending);
        let req = ForwardRequest {
            tenant: ClusterId::new("a").unwrap(),
            body: vec![0; 100].into(),
            content_type: String::new(),
            version: None,
        };
        let fut = svc.call(req);
        assert_eq!(b.in_flight(), (100, 1));
        drop(fut);
        assert_eq!(b.in_flight(), (0, 0));
    }
}
