//! Conversions between wire messages and core types.
//!
//! Wire → core is `TryFrom` (or a function, where the core type is a plain string or a
//! well-known type on the wire) and validates everything the core type guarantees: identifiers,
//! digests, enum values, time ranges, the node spec ([`MetricsCapabilitySpec::validate`]) and
//! the CortexOps configuration ([`ClusterConfig::validate`]). Core → wire is `From` and cannot
//! fail. Round trips core → wire → core are exact.
//!
//! | core | wire |
//! |---|---|
//! | `ClusterId`, `CapabilityName` | `string`: [`cluster_id`], [`capability_name`] |
//! | `Digest`, `Option<Digest>` | `string`, empty for none: [`digest`], [`optional_digest`], [`digest_string`] |
//! | `Timestamp` (Unix ms) | `google.protobuf.Timestamp`: [`timestamp`], [`wire_timestamp`] |
//! | `PromDuration`, `std::time::Duration` | `google.protobuf.Duration`: [`prom_duration`], [`std_duration`] and back |
//! | `MetricsCapabilitySpec` and its parts, `NodeConfig`, `NodeStatus`, `Condition` | `common.v1` |
//! | `SyncReply`; `(Option<Digest>, NodeStatus)` | `node.v1.SyncResponse`; `node.v1.SyncRequest` |
//! | `registry::Cluster`, `CapabilityEntry` | `clusters.v1` |
//! | `cluster::ClusterConfig` | `cortexops.v1.CapabilityBackendConfigSpec` |
//! | `uninstall::UninstallTask` (output only) | `capability.v1.TaskStatus` |
//! | `store::Precondition` (input only) | `optional uint64 revision`: [`precondition`] |
//!
//! Every [`ConvertError`] names the offending field by its path from the converted message,
//! such as `spec.prometheus.queue.minShards` or `status.conditions[1].kind`, using the proto3
//! JSON (lowerCamelCase) field names, which are also the names of the node spec in YAML and the
//! paths [`SpecError`] reports. Absent messages and empty strings where a value is required
//! are [`ConvertError::Missing`]; `UNSPECIFIED` enum values are refused.
//!
//! [`MetricsCapabilitySpec::validate`]: opni_metrics_core::spec::MetricsCapabilitySpec::validate
//! [`ClusterConfig::validate`]: opni_metrics_core::cluster::ClusterConfig::validate

mod access;
mod cortexops;
pub use cortexops::{cluster_config_unvalidated, wire_path as cortex_wire_path};
pub use node::disabled_reason;
mod node;
mod registry;
mod spec;
mod time;
mod uninstall;

#[cfg(test)]
mod tests;

use opni_metrics_core::digest::{Digest, DigestError};
use opni_metrics_core::id::{CapabilityName, ClusterId, IdError, Revision};
use opni_metrics_core::registry::RegistryError;
use opni_metrics_core::spec::SpecError;
use opni_metrics_core::store::Precondition;

pub use time::{prom_duration, std_duration, timestamp, wire_duration, wire_std_duration, wire_timestamp};

/// Why a wire message could not become a core value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// A required field is absent: an unset message, or an empty string where a value is needed.
    #[error("{field}: missing")]
    Missing {
        /// The field's path.
        field: String,
    },
    /// An enum field holds its `UNSPECIFIED` (zero) value.
    #[error("{field}: unspecified")]
    UnspecifiedEnum {
        /// The field's path.
        field: String,
    },
    /// An enum field holds a number this version does not know.
    #[error("{field}: unknown enum value {value}")]
    UnknownEnum {
        /// The field's path.
        field: String,
        /// The number received.
        value: i32,
    },
    /// A cluster id or capability name breaks its rules.
    #[error("{field}: invalid identifier")]
    InvalidId {
        /// The field's path.
        field: String,
        /// The rule it breaks.
        #[source]
        source: IdError,
    },
    /// A digest is not 64 lowercase hex digits.
    #[error("{field}: invalid digest")]
    InvalidDigest {
        /// The field's path.
        field: String,
        /// What is wrong with it.
        #[source]
        source: DigestError,
    },
    /// A timestamp or duration cannot be represented by the core type.
    #[error("{field}: {reason}")]
    OutOfRange {
        /// The field's path.
        field: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The node spec failed validation.
    #[error("{field}: {reason}")]
    InvalidSpec {
        /// The path of the field validation refused, e.g. `spec.prometheus.queue.maxShards`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Cluster labels break the label rules.
    #[error("{field}: invalid labels")]
    InvalidLabels {
        /// The field's path.
        field: String,
        /// The rule they break.
        #[source]
        source: RegistryError,
    },
    /// A list holds two entries where each must be unique.
    #[error("{field}: duplicate {value:?}")]
    Duplicate {
        /// The path of the second entry.
        field: String,
        /// The duplicated key.
        value: String,
    },
    /// A field is set where it must not be.
    #[error("{field}: must be unset {context}")]
    Unexpected {
        /// The field's path.
        field: String,
        /// When it must be unset, e.g. `when result is UP_TO_DATE`.
        context: &'static str,
    },
    /// A config's digest, recomputed by the receiver, differs from the digest sent with it.
    #[error("{field}: {sent} is not the config's digest {computed}")]
    DigestMismatch {
        /// The field's path.
        field: String,
        /// The digest received.
        sent: Digest,
        /// The digest of the config received.
        computed: Digest,
    },
}

impl ConvertError {
    /// The path of the offending field, e.g. `spec.prometheus.queue.minShards`.
    pub fn field(&self) -> &str {
        match self {
            Self::Missing { field }
            | Self::UnspecifiedEnum { field }
            | Self::UnknownEnum { field, .. }
            | Self::InvalidId { field, .. }
            | Self::InvalidDigest { field, .. }
            | Self::OutOfRange { field, .. }
            | Self::InvalidSpec { field, .. }
            | Self::InvalidLabels { field, .. }
            | Self::Duplicate { field, .. }
            | Self::Unexpected { field, .. }
            | Self::DigestMismatch { field, .. } => field,
        }
    }

    /// The same error with `prefix` prepended to the field path, for a message converted as a
    /// field of an enclosing one: `minShards` under `queue` becomes `queue.minShards`.
    #[must_use]
    pub fn under(mut self, prefix: &str) -> Self {
        let field = match &mut self {
            Self::Missing { field }
            | Self::UnspecifiedEnum { field }
            | Self::UnknownEnum { field, .. }
            | Self::InvalidId { field, .. }
            | Self::InvalidDigest { field, .. }
            | Self::OutOfRange { field, .. }
            | Self::InvalidSpec { field, .. }
            | Self::InvalidLabels { field, .. }
            | Self::Duplicate { field, .. }
            | Self::Unexpected { field, .. }
            | Self::DigestMismatch { field, .. } => field,
        };
        *field = join(prefix, field);
        self
    }

    pub(crate) fn missing(field: impl Into<String>) -> Self {
        Self::Missing { field: field.into() }
    }

    pub(crate) fn spec(prefix: &str, e: SpecError) -> Self {
        Self::InvalidSpec { field: join(prefix, &e.field), reason: e.reason }
    }
}

/// `prefix` + `.` + `path`, without a dot before an index or around an empty part.
pub(crate) fn join(prefix: &str, path: &str) -> String {
    if prefix.is_empty() {
        path.to_owned()
    } else if path.is_empty() {
        prefix.to_owned()
    } else if path.starts_with('[') {
        format!("{prefix}{path}")
    } else {
        format!("{prefix}.{path}")
    }
}

/// Unwraps a required message field.
///
/// # Errors
/// [`ConvertError::Missing`] naming `field` when `value` is `None`.
pub fn required<T>(field: &str, value: Option<T>) -> Result<T, ConvertError> {
    value.ok_or_else(|| ConvertError::missing(field))
}

/// Converts a required message field, prefixing any error with `field`.
///
/// # Errors
/// [`ConvertError::Missing`] when `value` is `None`, else the conversion's error under `field`.
pub fn convert_required<W, C>(field: &str, value: Option<W>) -> Result<C, ConvertError>
where
    C: TryFrom<W, Error = ConvertError>,
{
    C::try_from(required(field, value)?).map_err(|e| e.under(field))
}

/// Parses a cluster id sent as a string field.
///
/// # Errors
/// [`ConvertError::Missing`] for an empty string, [`ConvertError::InvalidId`] otherwise.
pub fn cluster_id(field: &str, value: impl Into<String>) -> Result<ClusterId, ConvertError> {
    let value = value.into();
    if value.is_empty() {
        return Err(ConvertError::missing(field));
    }
    ClusterId::new(value).map_err(|source| ConvertError::InvalidId { field: field.to_owned(), source })
}

/// Parses a capability name sent as a string field.
///
/// # Errors
/// [`ConvertError::Missing`] for an empty string, [`ConvertError::InvalidId`] otherwise.
pub fn capability_name(field: &str, value: impl Into<String>) -> Result<CapabilityName, ConvertError> {
    let value = value.into();
    if value.is_empty() {
        return Err(ConvertError::missing(field));
    }
    CapabilityName::new(value).map_err(|source| ConvertError::InvalidId { field: field.to_owned(), source })
}

/// Parses a required digest sent as a string field.
///
/// # Errors
/// [`ConvertError::Missing`] for an empty string, [`ConvertError::InvalidDigest`] otherwise.
pub fn digest(field: &str, value: &str) -> Result<Digest, ConvertError> {
    optional_digest(field, value)?.ok_or_else(|| ConvertError::missing(field))
}

/// Parses an optional digest sent as a string field: the empty string is `None`.
///
/// # Errors
/// [`ConvertError::InvalidDigest`] for anything but the empty string or 64 lowercase hex digits.
pub fn optional_digest(field: &str, value: &str) -> Result<Option<Digest>, ConvertError> {
    if value.is_empty() {
        return Ok(None);
    }
    Digest::parse(value).map(Some).map_err(|source| ConvertError::InvalidDigest { field: field.to_owned(), source })
}

/// The wire form of an optional digest: its hex digits, or the empty string for `None`.
pub fn digest_string(value: Option<&Digest>) -> String {
    value.map(Digest::to_string).unwrap_or_default()
}

/// The store precondition of a write that carries `optional uint64 revision`: unset writes
/// unconditionally, `0` requires the key to be absent, any other value requires exactly that
/// revision (a stale one is a conflict, `ABORTED`).
pub fn precondition(revision: Option<u64>) -> Precondition {
    Precondition::expecting(revision.map(Revision))
}

/// Decodes an enum field: `map` turns the wire enum into the core one and returns `None` only
/// for the `UNSPECIFIED` value.
pub(crate) fn decode_enum<W, C>(field: &str, raw: i32, map: impl FnOnce(W) -> Option<C>) -> Result<C, ConvertError>
where
    W: TryFrom<i32>,
{
    let wire = W::try_from(raw).map_err(|_| ConvertError::UnknownEnum { field: field.to_owned(), value: raw })?;
    map(wire).ok_or_else(|| ConvertError::UnspecifiedEnum { field: field.to_owned() })
}
