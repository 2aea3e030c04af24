//! The CortexOps configuration: [`ClusterConfig`] ↔ `CapabilityBackendConfigSpec`.
//!
//! The wire form names the storage backend with an enum and carries that backend's settings in
//! a message of its own; the core form is one enum. Secrets travel as they are: redact with
//! [`ClusterConfig::redacted`] before converting a configuration for a read.

use opni_metrics_core::cluster::{ClusterConfig, DeploymentMode, Grafana, Storage, Workload};

use super::{ConvertError, convert_required, decode_enum, prom_duration, required, wire_duration};
use crate::cortexops::v1 as pb;

impl TryFrom<pb::CapabilityBackendConfigSpec> for ClusterConfig {
    type Error = ConvertError;

    /// Converts and validates a configuration ([`ClusterConfig::validate`]). The `revision`
    /// field is not part of the configuration: read it from the message.
    fn try_from(w: pb::CapabilityBackendConfigSpec) -> Result<Self, ConvertError> {
        let config = cluster_config_unvalidated(w)?;
        config.validate().map_err(|e| {
            let field = wire_path(&e.field, &config.storage);
            ConvertError::InvalidSpec { field, reason: e.reason }
        })?;
        Ok(config)
    }
}

/// The structural part of the conversion: required fields and enums are checked, the
/// configuration's own rules ([`ClusterConfig::findings`]) are not. For a dry run, which
/// reports every finding rather than the first.
///
/// # Errors
/// [`ConvertError`] naming the missing or invalid field.
pub fn cluster_config_unvalidated(w: pb::CapabilityBackendConfigSpec) -> Result<ClusterConfig, ConvertError> {
    {
        Ok(ClusterConfig {
            enabled: w.enabled,
            mode: decode_enum("mode", w.mode, deployment_mode)?,
            storage: convert_required("storage", w.storage)?,
            retention: prom_duration("retention", &required("retention", w.retention)?)?,
            workloads: w
                .workloads
                .into_iter()
                .map(|(name, w)| (name, Workload { replicas: w.replicas, extra_args: w.extra_args }))
                .collect(),
            grafana: w
                .grafana
                .map(|g| Grafana { enabled: g.enabled, version: g.version, hostname: g.hostname })
                .unwrap_or_default(),
        })
    }
}

impl From<ClusterConfig> for pb::CapabilityBackendConfigSpec {
    /// The wire form, without a revision.
    fn from(c: ClusterConfig) -> Self {
        Self {
            revision: None,
            enabled: c.enabled,
            mode: pb::DeploymentMode::from(c.mode).into(),
            storage: Some(c.storage.into()),
            retention: Some(wire_duration(c.retention)),
            workloads: c
                .workloads
                .into_iter()
                .map(|(name, w)| (name, pb::Workload { replicas: w.replicas, extra_args: w.extra_args }))
                .collect(),
            grafana: Some(pb::Grafana {
                enabled: c.grafana.enabled,
                version: c.grafana.version,
                hostname: c.grafana.hostname,
            }),
        }
    }
}

/// Core validation names storage fields as in the configuration document, where the backend's
/// settings sit directly under `storage`; on the wire they sit under the backend's message.
pub fn wire_path(field: &str, storage: &Storage) -> String {
    match field.strip_prefix("storage.") {
        Some(rest) if rest != "backend" => format!("storage.{}.{rest}", section(storage)),
        _ => field.to_owned(),
    }
}

fn section(storage: &Storage) -> &'static str {
    match storage {
        Storage::Filesystem { .. } => "filesystem",
        Storage::S3 { .. } => "s3",
        Storage::Gcs { .. } => "gcs",
        Storage::Azure { .. } => "azure",
        Storage::Swift { .. } => "swift",
    }
}

fn deployment_mode(w: pb::DeploymentMode) -> Option<DeploymentMode> {
    match w {
        pb::DeploymentMode::Unspecified => None,
        pb::DeploymentMode::AllInOne => Some(DeploymentMode::AllInOne),
        pb::DeploymentMode::HighlyAvailable => Some(DeploymentMode::HighlyAvailable),
    }
}

impl From<DeploymentMode> for pb::DeploymentMode {
    fn from(m: DeploymentMode) -> Self {
        match m {
            DeploymentMode::AllInOne => Self::AllInOne,
            DeploymentMode::HighlyAvailable => Self::HighlyAvailable,
        }
    }
}

impl TryFrom<pb::Storage> for Storage {
    type Error = ConvertError;

    /// Converts storage settings: the backend's message is required, any other is refused.
    fn try_from(w: pb::Storage) -> Result<Self, ConvertError> {
        use pb::StorageBackend as B;
        let backend = decode_enum("backend", w.backend, |b: B| (b != B::Unspecified).then_some(b))?;
        let set = [
            (B::Filesystem, "filesystem", w.filesystem.is_some()),
            (B::S3, "s3", w.s3.is_some()),
            (B::Gcs, "gcs", w.gcs.is_some()),
            (B::Azure, "azure", w.azure.is_some()),
            (B::Swift, "swift", w.swift.is_some()),
        ];
        if let Some((_, field, _)) = set.iter().find(|(b, _, is_set)| *is_set && *b != backend) {
            return Err(ConvertError::Unexpected { field: (*field).to_owned(), context: "unless backend selects it" });
        }
        Ok(match backend {
            B::Unspecified => return Err(ConvertError::UnspecifiedEnum { field: "backend".to_owned() }),
            B::Filesystem => {
                let f = required("filesystem", w.filesystem)?;
                Self::Filesystem { directory: f.directory }
            }
            B::S3 => {
                let s = required("s3", w.s3)?;
                Self::S3 {
                    endpoint: s.endpoint,
                    bucket: s.bucket,
                    region: s.region,
                    access_key_id: s.access_key_id,
                    secret_access_key: s.secret_access_key,
                }
            }
            B::Gcs => {
                let g = required("gcs", w.gcs)?;
                Self::Gcs { bucket: g.bucket, service_account: g.service_account }
            }
            B::Azure => {
                let a = required("azure", w.azure)?;
                Self::Azure { account_name: a.account_name, account_key: a.account_key, container: a.container }
            }
            B::Swift => {
                let s = required("swift", w.swift)?;
                Self::Swift { auth_url: s.auth_url, username: s.username, password: s.password, container: s.container }
            }
        })
    }
}

impl From<Storage> for pb::Storage {
    fn from(s: Storage) -> Self {
        use pb::StorageBackend as B;
        let mut w = Self::default();
        let backend = match s {
            Storage::Filesystem { directory } => {
                w.filesystem = Some(pb::FilesystemStorage { directory });
                B::Filesystem
            }
            Storage::S3 { endpoint, bucket, region, access_key_id, secret_access_key } => {
                w.s3 = Some(pb::S3Storage { endpoint, bucket, region, access_key_id, secret_access_key });
                B::S3
            }
            Storage::Gcs { bucket, service_account } => {
                w.gcs = Some(pb::GcsStorage { bucket, service_account });
                B::Gcs
            }
            Storage::Azure { account_name, account_key, container } => {
                w.azure = Some(pb::AzureStorage { account_name, account_key, container });
                B::Azure
            }
            Storage::Swift { auth_url, username, password, container } => {
                w.swift = Some(pb::SwiftStorage { auth_url, username, password, container });
                B::Swift
            }
        };
        w.backend = backend.into();
        w
    }
}
