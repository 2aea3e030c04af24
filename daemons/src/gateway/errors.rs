//! Gateway errors as gRPC statuses.

use opni_metrics_proto::IntoStatus;
use tonic::Status;

use super::state::StateError;

impl IntoStatus for StateError {
    fn into_status(self) -> Status {
        match self {
            StateError::Store(e) => e.into_status(),
            StateError::Registry(e) => e.into_status(),
            StateError::UnknownCluster(id) => Status::not_found(format!("cluster {id} is not registered")),
            StateError::ClusterExists(id) => Status::already_exists(format!("cluster {id} is already registered")),
            e @ StateError::Stale { .. } => Status::aborted(e.to_string()),
        }
    }
}

/// Converts any [`IntoStatus`] error; for `map_err`.
pub fn status<E: IntoStatus>(e: E) -> Status {
    e.into_status()
}
