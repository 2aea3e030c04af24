//! Who may push: the in-memory registry view ([`StateView`], kept by the store watcher)
//! says which clusters exist, the state of their `metrics` capability and which certificate
//! serials are revoked, so every agent call is checked without a store read.

use std::sync::Arc;

use opni_metrics_core::ClusterId;
use opni_metrics_core::registry::CapabilityEntry;
use opni_metrics_transport::grpc::PeerIdentity;
use tonic::{Request, Status};

use crate::auth::cluster_of;
use crate::sync::StateView;

/// The `metrics` capability of a registered cluster, as the registry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Metrics {
    /// Installed: pushes are admitted.
    Installed,
    /// Being uninstalled: pushes are refused (the data may be being deleted).
    Uninstalling,
    /// Not installed.
    Absent,
}

impl Metrics {
    fn of(entry: Option<&CapabilityEntry>) -> Self {
        match entry {
            Some(e) if e.is_uninstalling() => Self::Uninstalling,
            Some(_) => Self::Installed,
            None => Self::Absent,
        }
    }
}

/// The admission checks over the registry view.
#[derive(Debug, Clone)]
pub(crate) struct Admission {
    view: Arc<StateView>,
}

impl Admission {
    /// Checks against `view`.
    pub(crate) fn new(view: Arc<StateView>) -> Self {
        Self { view }
    }

    /// The caller's cluster and what the registry says of it (`None`: not registered).
    ///
    /// # Errors
    /// `UNAUTHENTICATED` without an identity; `PERMISSION_DENIED` for a revoked certificate;
    /// `UNAVAILABLE` until the registry is loaded.
    #[allow(clippy::result_large_err)]
    pub(crate) fn caller<T>(&self, req: &Request<T>) -> Result<(ClusterId, Option<Metrics>), Status> {
        let id = cluster_of(req)?;
        let serial = req.extensions().get::<PeerIdentity>().and_then(|p| p.serial.as_deref());
        let (revoked, m) = self
            .view
            .read(|v| {
                let revoked = serial.is_some_and(|s| v.revoked.contains(s));
                (revoked, v.capabilities.get(&id).map(|e| Metrics::of(e.as_ref())))
            })
            .ok_or_else(|| Status::unavailable("the gateway is still loading the registry; retry"))?;
        if revoked {
            return Err(Status::permission_denied(format!(
                "the certificate (serial {}) of cluster {id} was revoked when the cluster was deleted",
                serial.unwrap_or_default()
            )));
        }
        Ok((id, m))
    }

    /// The caller's cluster, if it is registered.
    ///
    /// # Errors
    /// As [`Admission::caller`], and `PERMISSION_DENIED` for a cluster that is not registered.
    #[allow(clippy::result_large_err)]
    pub(crate) fn registered<T>(&self, req: &Request<T>) -> Result<(ClusterId, Metrics), Status> {
        match self.caller(req)? {
            (id, Some(m)) => Ok((id, m)),
            (id, None) => Err(Status::permission_denied(format!(
                "cluster {id} is not registered (deleted, or never joined); join it, or register it with `opni-metrics clusters create`"
            ))),
        }
    }

    /// The caller's cluster, if it may write metrics: registered, with the `metrics`
    /// capability installed and not being uninstalled.
    ///
    /// # Errors
    /// As [`Admission::registered`], and `FAILED_PRECONDITION` without the capability.
    #[allow(clippy::result_large_err)]
    pub(crate) fn writer<T>(&self, req: &Request<T>) -> Result<ClusterId, Status> {
        match self.registered(req)? {
            (id, Metrics::Installed) => Ok(id),
            (id, Metrics::Uninstalling) => Err(Status::failed_precondition(format!(
                "the metrics capability of cluster {id} is being uninstalled; nothing more is written"
            ))),
            (id, Metrics::Absent) => Err(Status::failed_precondition(format!(
                "the metrics capability is not installed on cluster {id}; install it first"
            ))),
        }
    }
}
