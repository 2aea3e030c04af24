//! Gateway errors as gRPC statuses.

use opni_metrics_proto::IntoStatus;
use tonic::Status;

use super::state::StateError;

impl IntoStatus for StateError {
    fn into_status(self) -> Status {
        match self {
            StateError::Store(e) => e.into_status(),
            StateError::Registry(e) => e.into_status(),
            e @ StateError::UnknownCluster(_) => Status::not_found(e.to_string()),
            e @ StateError::ClusterExists(_) => Status::already_exists(e.to_string()),
            e @ StateError::Stale { .. } => Status::aborted(e.to_string()),
        }
    }
}

/// Converts any [`IntoStatus`] error; for `map_err`.
pub(crate) fn status<E: IntoStatus>(e: E) -> Status {
    e.into_status()
}

impl IntoStatus for crate::state::AccessStateError {
    fn into_status(self) -> Status {
        use crate::state::AccessStateError as E;
        match self {
            E::State(e) => e.into_status(),
            e @ E::Exists { .. } => Status::already_exists(e.to_string()),
            e @ E::NotFound { .. } => Status::not_found(e.to_string()),
            e @ (E::MissingRole(_) | E::RoleInUse { .. }) => Status::failed_precondition(e.to_string()),
        }
    }
}
