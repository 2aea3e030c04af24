//! The one place where errors become [`tonic::Status`].
//!
//! Wire conversion errors are `INVALID_ARGUMENT` ([`From<ConvertError>`](ConvertError)). Core
//! errors implement [`IntoStatus`] (a local trait: neither the core errors nor `Status` belong to
//! this crate, so `From` cannot be implemented for them here). A status message is the error and
//! its chain of causes joined by `: `, so the client sees the field and the rule it broke.

use opni_metrics_core::digest::DigestError;
use opni_metrics_core::driver::DriverError;
use opni_metrics_core::duration::DurationError;
use opni_metrics_core::id::IdError;
use opni_metrics_core::registry::RegistryError;
use opni_metrics_core::spec::SpecError;
use opni_metrics_core::store::StoreError;
use opni_metrics_core::uninstall::TaskError;
use tonic::{Code, Status};

use crate::convert::ConvertError;

/// Converts an error into the [`Status`] a gRPC handler answers with.
pub trait IntoStatus {
    /// The status for this error.
    fn into_status(self) -> Status;
}

use opni_metrics_core::error_chain as chain;

impl From<ConvertError> for Status {
    /// `INVALID_ARGUMENT`, naming the field.
    fn from(e: ConvertError) -> Self {
        Status::invalid_argument(chain(&e))
    }
}

impl IntoStatus for ConvertError {
    fn into_status(self) -> Status {
        self.into()
    }
}

impl IntoStatus for RegistryError {
    /// `ALREADY_EXISTS` for an install of an installed capability, `NOT_FOUND` for a capability
    /// that is not installed, `FAILED_PRECONDITION` for transitions the capability's state does
    /// not allow now, `INVALID_ARGUMENT` for bad labels.
    fn into_status(self) -> Status {
        let code = match &self {
            RegistryError::AlreadyInstalled { .. } => Code::AlreadyExists,
            RegistryError::NotInstalled { .. } => Code::NotFound,
            RegistryError::UninstallInProgress { .. }
            | RegistryError::NotUninstalling { .. }
            | RegistryError::CapabilitiesInstalled { .. } => Code::FailedPrecondition,
            RegistryError::InvalidLabel { .. } | RegistryError::TooManyLabels { .. } => Code::InvalidArgument,
        };
        Status::new(code, chain(&self))
    }
}

impl IntoStatus for IdError {
    /// `INVALID_ARGUMENT`.
    fn into_status(self) -> Status {
        Status::invalid_argument(chain(&self))
    }
}

impl IntoStatus for SpecError {
    /// `INVALID_ARGUMENT`, naming the field.
    fn into_status(self) -> Status {
        Status::invalid_argument(chain(&self))
    }
}

impl IntoStatus for DigestError {
    /// `INVALID_ARGUMENT`.
    fn into_status(self) -> Status {
        Status::invalid_argument(chain(&self))
    }
}

impl IntoStatus for DurationError {
    /// `INVALID_ARGUMENT`.
    fn into_status(self) -> Status {
        Status::invalid_argument(chain(&self))
    }
}

impl IntoStatus for StoreError {
    /// `ABORTED` for a stale revision (the caller re-reads and retries), `OUT_OF_RANGE` for a
    /// compacted revision (as etcd answers), `INVALID_ARGUMENT` for a bad key or an oversized
    /// value, `UNAVAILABLE` when the backend cannot be reached, `INTERNAL` for corrupt data
    /// (whose cause stays in the gateway's log, not in the answer).
    fn into_status(self) -> Status {
        let code = match &self {
            StoreError::Conflict { .. } => Code::Aborted,
            StoreError::Compacted { .. } => Code::OutOfRange,
            StoreError::InvalidKey { .. } | StoreError::ValueTooLarge { .. } => Code::InvalidArgument,
            StoreError::Unavailable(_) => Code::Unavailable,
            StoreError::Corrupt { .. } => return Status::internal(self.to_string()),
        };
        Status::new(code, chain(&self))
    }
}

impl IntoStatus for TaskError {
    /// `FAILED_PRECONDITION` for a cancel the task's state no longer allows,
    /// `INVALID_ARGUMENT` for bad options.
    fn into_status(self) -> Status {
        let code = match &self {
            TaskError::AlreadyEnded { .. } | TaskError::TooLateToCancel => Code::FailedPrecondition,
            TaskError::InitialDelayTooLong { .. } => Code::InvalidArgument,
        };
        Status::new(code, chain(&self))
    }
}

impl IntoStatus for DriverError {
    /// `FAILED_PRECONDITION` for a missing prerequisite (an operator must act),
    /// `INVALID_ARGUMENT` for a config the driver cannot apply, `UNIMPLEMENTED` for an operation
    /// the driver lacks, `UNAVAILABLE` for a transient failure (retry).
    fn into_status(self) -> Status {
        let code = match &self {
            DriverError::MissingPrerequisite { .. } => Code::FailedPrecondition,
            DriverError::Invalid { .. } => Code::InvalidArgument,
            DriverError::Unsupported { .. } => Code::Unimplemented,
            DriverError::Transient { .. } => Code::Unavailable,
        };
        Status::new(code, chain(&self))
    }
}

#[cfg(test)]
mod tests {
    use opni_metrics_core::id::{CapabilityName, ClusterId};

    use super::*;

    fn ids() -> (ClusterId, CapabilityName) {
        (ClusterId::new("c1").unwrap(), CapabilityName::metrics())
    }

    #[test]
    fn registry_errors_map_to_codes() {
        let (cluster, capability) = ids();
        let cases = [
            (
                RegistryError::AlreadyInstalled { cluster: cluster.clone(), capability: capability.clone() },
                Code::AlreadyExists,
            ),
            (RegistryError::NotInstalled { cluster: cluster.clone(), capability: capability.clone() }, Code::NotFound),
            (
                RegistryError::UninstallInProgress { cluster: cluster.clone(), capability: capability.clone() },
                Code::FailedPrecondition,
            ),
            (
                RegistryError::NotUninstalling { cluster: cluster.clone(), capability: capability.clone() },
                Code::FailedPrecondition,
            ),
            (
                RegistryError::CapabilitiesInstalled { cluster: cluster.clone(), capabilities: vec![capability] },
                Code::FailedPrecondition,
            ),
            (RegistryError::InvalidLabel { key: "-x".into(), reason: "bad" }, Code::InvalidArgument),
            (RegistryError::TooManyLabels { count: 65 }, Code::InvalidArgument),
        ];
        for (err, code) in cases {
            let message = err.to_string();
            let status = err.into_status();
            assert_eq!(status.code(), code, "{message}");
            assert_eq!(status.message(), message);
        }
    }

    #[test]
    fn convert_errors_are_invalid_argument_with_the_cause_chain() {
        let source = ClusterId::new("a|b").unwrap_err();
        let err = ConvertError::InvalidId { field: "cluster".into(), source: source.clone() };
        let status = Status::from(err);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), format!("cluster: invalid identifier: {source}"));
    }

    #[test]
    fn store_task_and_driver_errors_map_to_codes() {
        use opni_metrics_core::id::Revision;
        use opni_metrics_core::store::Precondition;
        let io = || Box::new(std::io::Error::other("etcd down")) as Box<dyn std::error::Error + Send + Sync>;
        let conflict = StoreError::Conflict {
            key: "k".into(),
            expected: Precondition::Revision(Revision(3)),
            actual: Revision(4),
        };
        assert_eq!(conflict.into_status().code(), Code::Aborted);
        let compacted = StoreError::Compacted { requested: Revision(1), compacted: Revision(5) };
        assert_eq!(compacted.into_status().code(), Code::OutOfRange);
        assert_eq!(
            StoreError::InvalidKey { key: String::new(), reason: "empty" }.into_status().code(),
            Code::InvalidArgument
        );
        assert_eq!(
            StoreError::ValueTooLarge { key: "k".into(), len: 1 << 30 }.into_status().code(),
            Code::InvalidArgument
        );
        let unavailable = StoreError::Unavailable(io()).into_status();
        assert_eq!(unavailable.code(), Code::Unavailable);
        assert_eq!(unavailable.message(), "store unavailable: etcd down");
        let corrupt = StoreError::Corrupt { key: "k".into(), source: io() }.into_status();
        assert_eq!(corrupt.code(), Code::Internal);
        assert!(!corrupt.message().contains("etcd down"), "internal causes stay in the gateway");

        use opni_metrics_core::uninstall::TaskState;
        assert_eq!(
            TaskError::AlreadyEnded { state: TaskState::Completed }.into_status().code(),
            Code::FailedPrecondition
        );
        assert_eq!(TaskError::TooLateToCancel.into_status().code(), Code::FailedPrecondition);
        let too_long = TaskError::InitialDelayTooLong { given: std::time::Duration::from_secs(1 << 30) };
        assert_eq!(too_long.into_status().code(), Code::InvalidArgument);

        assert_eq!(
            DriverError::MissingPrerequisite { what: "CRD".into() }.into_status().code(),
            Code::FailedPrecondition
        );
        assert_eq!(
            DriverError::Invalid { field: "f".into(), reason: "r".into() }.into_status().code(),
            Code::InvalidArgument
        );
        let unsupported = DriverError::Unsupported { driver: "process", operation: "purge" };
        assert_eq!(unsupported.into_status().code(), Code::Unimplemented);
        let transient = DriverError::Transient { context: "apply".into(), source: io() };
        assert_eq!(transient.into_status().code(), Code::Unavailable);
    }

    #[test]
    fn core_validation_errors_are_invalid_argument() {
        assert_eq!(ClusterId::new("").unwrap_err().into_status().code(), Code::InvalidArgument);
        let spec_err = opni_metrics_core::spec::MetricsCapabilitySpec {
            prometheus: opni_metrics_core::spec::PrometheusSpec {
                scrape_interval: opni_metrics_core::duration::PromDuration::from_millis(0),
                ..Default::default()
            },
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        let status = spec_err.into_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("prometheus.scrapeInterval: "), "{}", status.message());
        let digest = opni_metrics_core::digest::Digest::parse("x").unwrap_err();
        assert_eq!(digest.into_status().code(), Code::InvalidArgument);
        let duration = opni_metrics_core::duration::PromDuration::parse("").unwrap_err();
        assert_eq!(duration.into_status().code(), Code::InvalidArgument);
    }
}
