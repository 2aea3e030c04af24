//! The CortexOps configuration.

use opni_metrics_core::cluster::{ClusterConfig, DeploymentMode, Storage};

use super::*;
use crate::cortexops::v1 as pb_ops;

fn s3() -> ClusterConfig {
    ClusterConfig {
        enabled: true,
        mode: DeploymentMode::HighlyAvailable,
        storage: Storage::S3 {
            endpoint: "s3.local".into(),
            bucket: "blocks".into(),
            region: String::new(),
            access_key_id: "id".into(),
            secret_access_key: "secret".into(),
        },
        ..ClusterConfig::default()
    }
}

#[test]
fn round_trips_and_keeps_redacted_secrets_on_write() {
    let stored = s3();
    let wire = pb_ops::CapabilityBackendConfigSpec::from(stored.clone());
    assert_eq!(wire.storage.as_ref().map(|s| s.backend()), Some(pb_ops::StorageBackend::S3));
    assert_eq!(ClusterConfig::try_from(wire).unwrap(), stored);

    // read (redacted) → modify → write: the stored secret survives.
    let read = pb_ops::CapabilityBackendConfigSpec::from(stored.redacted());
    assert_eq!(
        read.storage.as_ref().and_then(|s| s.s3.as_ref()).map(|s| s.secret_access_key.as_str()),
        Some(pb_ops::REDACTED)
    );
    let mut write = ClusterConfig::try_from(read).unwrap();
    write.unredact_from(&stored);
    assert_eq!(write, stored);
}

#[test]
fn bad_input_names_the_wire_field() {
    let wire = || pb_ops::CapabilityBackendConfigSpec::from(s3());

    let mut w = wire();
    w.mode = 0;
    assert_eq!(ClusterConfig::try_from(w).unwrap_err(), ConvertError::UnspecifiedEnum { field: "mode".into() });

    let mut w = wire();
    w.retention = None;
    assert_eq!(ClusterConfig::try_from(w).unwrap_err(), ConvertError::missing("retention"));

    let mut w = wire();
    if let Some(s) = w.storage.as_mut() {
        s.gcs = Some(pb_ops::GcsStorage::default());
    }
    assert_eq!(
        ClusterConfig::try_from(w).unwrap_err(),
        ConvertError::Unexpected { field: "storage.gcs".into(), context: "unless backend selects it" }
    );

    let mut w = wire();
    if let Some(s) = w.storage.as_mut() {
        s.s3 = None;
    }
    assert_eq!(ClusterConfig::try_from(w).unwrap_err(), ConvertError::missing("storage.s3"));

    let mut w = wire();
    if let Some(s3) = w.storage.as_mut().and_then(|s| s.s3.as_mut()) {
        s3.bucket.clear();
    }
    let (field, e) = field_of(ClusterConfig::try_from(w));
    assert_eq!(field, "storage.s3.bucket", "{e}");

    let mut w = wire();
    w.storage = Some(Storage::default().into());
    let (field, e) = field_of(ClusterConfig::try_from(w));
    assert_eq!(field, "storage.backend", "{e}");

    let mut w = wire();
    if let Some(s) = w.storage.as_mut() {
        s.backend = 42;
    }
    assert_eq!(
        ClusterConfig::try_from(w).unwrap_err(),
        ConvertError::UnknownEnum { field: "storage.backend".into(), value: 42 }
    );
}

#[test]
fn unspecified_storage_backend_is_refused() {
    let mut w = pb_ops::CapabilityBackendConfigSpec::from(s3());
    if let Some(s) = w.storage.as_mut() {
        s.backend = 0;
        s.s3 = None;
    }
    assert_eq!(
        ClusterConfig::try_from(w).unwrap_err(),
        ConvertError::UnspecifiedEnum { field: "storage.backend".into() }
    );
}
