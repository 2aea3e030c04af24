//! The crate's error type.

use opni_metrics_core::driver::DriverError;

/// Failures of the Kubernetes drivers, controller and elector.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("{context}")]
    Api {
        /// What was being done, e.g. `apply PrometheusAgent opni/agent`.
        context: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// A resource type we need is not served (its CRD is not installed).
    #[error("missing CRD: {what}")]
    MissingCrd {
        /// Which resource and which operator provides it.
        what: String,
    },
    /// An object or spec is not acceptable.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field path.
        field: String,
        /// Why.
        reason: String,
    },
    /// An object could not be (de)serialized.
    #[error("{context}")]
    Serde {
        /// What was being converted.
        context: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    pub(crate) fn api(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let context = context.into();
        move |source| Self::Api { context, source }
    }

    /// Whether retrying may succeed without an operator acting.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Api { .. })
    }
}

impl From<Error> for DriverError {
    fn from(e: Error) -> Self {
        match e {
            Error::MissingCrd { what } => DriverError::MissingPrerequisite { what },
            Error::Invalid { field, reason } => DriverError::Invalid { field, reason },
            e @ (Error::Api { .. } | Error::Serde { .. }) => {
                DriverError::Transient { context: e.to_string(), source: Box::new(e) }
            }
        }
    }
}

/// Whether `e` is the API server answering 404.
pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether `e` is the API server answering 409 (stale resourceVersion or field conflict).
pub(crate) fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}
