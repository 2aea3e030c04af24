//! Object storage: the bucket blocks of Cortex's config (`blocks_storage`, `ruler_storage`,
//! `alertmanager_storage`), the storage credential's way into the pods, and the checks.
//!
//! Credentials never appear in the config. S3, Azure and Swift read theirs from
//! `${CORTEX_STORAGE_SECRET}`, which Cortex (`-config.expand-env=true`) replaces with the pod's
//! environment variable of that name, filled from the referenced Secret key. The reference is
//! single-quoted in the YAML, so the value may hold any character but a single quote or a line
//! break. GCS is the exception: a service-account key is multi-line JSON, which cannot be pasted
//! into YAML text, so the key file is mounted and found through `GOOGLE_APPLICATION_CREDENTIALS`
//! (Cortex's GCS client falls back to Google's default credentials when `service_account` is
//! empty).

use serde_json::{Value, json};

use crate::crd::SecretKeyRef;
use crate::crd::monitoring_cluster::{DeploymentMode, StorageBackend, StorageSpec};

use super::RenderError;
use super::names::{DATA_DIR, STORAGE_SECRET_REF};

/// The local stand-in for a bucket when the backend is `filesystem` and no directory is given.
const DEFAULT_FILESYSTEM_DIR: &str = "bucket";

/// What a bucket holds; with the filesystem backend each gets its own directory.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Purpose {
    Blocks,
    Rules,
    Alertmanager,
}

impl Purpose {
    fn dir(self) -> &'static str {
        match self {
            Self::Blocks => "blocks",
            Self::Rules => "rules",
            Self::Alertmanager => "alertmanager",
        }
    }
}

/// How the storage credential reaches the pods.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Credential<'a> {
    /// No credential (filesystem).
    None,
    /// As the `CORTEX_STORAGE_SECRET` environment variable.
    Env(&'a SecretKeyRef),
    /// As a mounted GCS service-account key file.
    GcsKeyFile(&'a SecretKeyRef),
}

pub(crate) fn credential(storage: &StorageSpec) -> Credential<'_> {
    match storage.backend {
        StorageBackend::Filesystem => Credential::None,
        StorageBackend::S3 => storage.s3.as_ref().map_or(Credential::None, |s| Credential::Env(&s.secret_access_key)),
        StorageBackend::Gcs => {
            storage.gcs.as_ref().map_or(Credential::None, |g| Credential::GcsKeyFile(&g.service_account))
        }
        StorageBackend::Azure => storage.azure.as_ref().map_or(Credential::None, |a| Credential::Env(&a.account_key)),
        StorageBackend::Swift => storage.swift.as_ref().map_or(Credential::None, |s| Credential::Env(&s.password)),
    }
}

fn missing(block: &str) -> RenderError {
    RenderError::invalid(format!("spec.cortex.config.storage.{block}"), format!("required when backend is {block}"))
}

/// The bucket config (`backend` and its block) for `purpose`.
///
/// # Errors
/// The chosen backend's block is missing.
pub(crate) fn bucket(storage: &StorageSpec, purpose: Purpose) -> Result<Value, RenderError> {
    Ok(match storage.backend {
        StorageBackend::Filesystem => {
            let dir = storage.filesystem.as_ref().map_or(DEFAULT_FILESYSTEM_DIR, |f| f.directory.trim_matches('/'));
            json!({
                "backend": "filesystem",
                "filesystem": { "dir": format!("{DATA_DIR}/{dir}/{}", purpose.dir()) },
            })
        }
        StorageBackend::S3 => {
            let s3 = storage.s3.as_ref().ok_or_else(|| missing("s3"))?;
            let mut block = json!({
                "endpoint": s3.endpoint,
                "bucket_name": s3.bucket,
                "access_key_id": s3.access_key_id,
                "secret_access_key": STORAGE_SECRET_REF,
                "insecure": s3.insecure,
            });
            if !s3.region.is_empty() {
                block["region"] = json!(s3.region);
            }
            json!({ "backend": "s3", "s3": block })
        }
        StorageBackend::Gcs => {
            let gcs = storage.gcs.as_ref().ok_or_else(|| missing("gcs"))?;
            json!({ "backend": "gcs", "gcs": { "bucket_name": gcs.bucket } })
        }
        StorageBackend::Azure => {
            let az = storage.azure.as_ref().ok_or_else(|| missing("azure"))?;
            json!({
                "backend": "azure",
                "azure": {
                    "account_name": az.account_name,
                    "account_key": STORAGE_SECRET_REF,
                    "container_name": az.container,
                },
            })
        }
        StorageBackend::Swift => {
            let sw = storage.swift.as_ref().ok_or_else(|| missing("swift"))?;
            json!({
                "backend": "swift",
                "swift": {
                    "auth_url": sw.auth_url,
                    "username": sw.username,
                    "password": STORAGE_SECRET_REF,
                    "container_name": sw.container,
                },
            })
        }
    })
}

fn required(block: &str, field: &str, value: &str) -> Result<(), RenderError> {
    if value.trim().is_empty() {
        return Err(RenderError::invalid(format!("spec.cortex.config.storage.{block}.{field}"), "must not be empty"));
    }
    Ok(())
}

fn secret_ref(block: &str, field: &str, r: &SecretKeyRef) -> Result<(), RenderError> {
    required(block, &format!("{field}.name"), &r.name)?;
    required(block, &format!("{field}.key"), &r.key)
}

/// # Errors
/// Filesystem storage in highly-available mode or with more than one all-in-one replica, a
/// missing block for the chosen backend, or an empty required field.
pub(crate) fn validate(storage: &StorageSpec, mode: DeploymentMode, replicas: u32) -> Result<(), RenderError> {
    match storage.backend {
        StorageBackend::Filesystem => {
            if mode == DeploymentMode::HighlyAvailable {
                return Err(RenderError::invalid(
                    "spec.cortex.config.storage.backend",
                    "filesystem storage is local to one pod; highly-available mode needs object storage",
                ));
            }
            if replicas > 1 {
                return Err(RenderError::invalid(
                    "spec.cortex.config.storage.backend",
                    "filesystem storage is local to one pod; more than one all-in-one replica needs object storage",
                ));
            }
            if let Some(fs) = &storage.filesystem {
                let dir = fs.directory.trim_matches('/');
                if dir.is_empty() || fs.directory.starts_with('/') || dir.split('/').any(|p| p == ".." || p == ".") {
                    return Err(RenderError::invalid(
                        "spec.cortex.config.storage.filesystem.directory",
                        "a relative path inside the data volume, without `.` or `..`",
                    ));
                }
            }
        }
        StorageBackend::S3 => {
            let s3 = storage.s3.as_ref().ok_or_else(|| missing("s3"))?;
            required("s3", "endpoint", &s3.endpoint)?;
            if s3.endpoint.contains("://") {
                return Err(RenderError::invalid(
                    "spec.cortex.config.storage.s3.endpoint",
                    "host[:port] without a scheme (set insecure for plain HTTP)",
                ));
            }
            required("s3", "bucket", &s3.bucket)?;
            required("s3", "accessKeyId", &s3.access_key_id)?;
            secret_ref("s3", "secretAccessKey", &s3.secret_access_key)?;
        }
        StorageBackend::Gcs => {
            let gcs = storage.gcs.as_ref().ok_or_else(|| missing("gcs"))?;
            required("gcs", "bucket", &gcs.bucket)?;
            secret_ref("gcs", "serviceAccount", &gcs.service_account)?;
        }
        StorageBackend::Azure => {
            let az = storage.azure.as_ref().ok_or_else(|| missing("azure"))?;
            required("azure", "accountName", &az.account_name)?;
            required("azure", "container", &az.container)?;
            secret_ref("azure", "accountKey", &az.account_key)?;
        }
        StorageBackend::Swift => {
            let sw = storage.swift.as_ref().ok_or_else(|| missing("swift"))?;
            required("swift", "authUrl", &sw.auth_url)?;
            required("swift", "username", &sw.username)?;
            required("swift", "container", &sw.container)?;
            secret_ref("swift", "password", &sw.password)?;
        }
    }
    Ok(())
}
