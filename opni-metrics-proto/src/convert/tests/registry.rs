//! Clusters and capability entries.

use super::*;

#[test]
fn bad_cluster_ids_and_capability_names_are_refused() {
    let wire = |id: &str| pb_clusters::Cluster { id: id.into(), ..Default::default() };
    assert!(matches!(
        Cluster::try_from(wire("a|b")),
        Err(ConvertError::InvalidId { ref field, source: opni_metrics_core::id::IdError::BadChar { found: '|', .. } })
            if field == "id"
    ));
    assert_eq!(Cluster::try_from(wire("")).unwrap_err(), ConvertError::Missing { field: "id".into() });
    let e = cluster_id("cluster", "..").unwrap_err();
    assert_eq!(e.to_string(), "cluster: invalid identifier");
    assert!(cluster_id("cluster", "c-1").is_ok());

    let mut c = wire("c1");
    c.capabilities.push(pb_clusters::CapabilityEntry {
        name: "Metrics".into(),
        installed_at: Some(wire_timestamp(Timestamp(1))),
        deletion_requested_at: None,
    });
    let (field, e) = field_of(Cluster::try_from(c));
    assert_eq!(field, "capabilities[0].name");
    assert!(matches!(e, ConvertError::InvalidId { .. }));
    assert!(matches!(capability_name("name", ""), Err(ConvertError::Missing { .. })));
}

#[test]
fn cluster_labels_timestamps_and_duplicates_are_checked() {
    let entry = |name: &str| pb_clusters::CapabilityEntry {
        name: name.into(),
        installed_at: Some(wire_timestamp(Timestamp(5))),
        deletion_requested_at: None,
    };
    let mut c = pb_clusters::Cluster { id: "c1".into(), ..Default::default() };
    c.labels.insert("-bad".into(), "x".into());
    let (field, e) = field_of(Cluster::try_from(c.clone()));
    assert_eq!(field, "labels");
    assert!(matches!(e, ConvertError::InvalidLabels { .. }));

    c.labels.clear();
    c.capabilities = vec![entry("metrics"), entry("logs"), entry("metrics")];
    assert_eq!(
        Cluster::try_from(c.clone()).unwrap_err(),
        ConvertError::Duplicate { field: "capabilities[2].name".into(), value: "metrics".into() }
    );

    c.capabilities = vec![pb_clusters::CapabilityEntry { installed_at: None, ..entry("metrics") }];
    assert_eq!(Cluster::try_from(c.clone()).unwrap_err(), ConvertError::missing("capabilities[0].installedAt"));

    c.capabilities = vec![pb_clusters::CapabilityEntry {
        deletion_requested_at: Some(prost_types::Timestamp { seconds: -1, nanos: 0 }),
        ..entry("metrics")
    }];
    let (field, e) = field_of(Cluster::try_from(c));
    assert_eq!(field, "capabilities[0].deletionRequestedAt");
    assert!(matches!(e, ConvertError::OutOfRange { reason: "before the Unix epoch", .. }));
}

#[test]
fn capability_entries_round_trip() {
    let entry = CapabilityEntry {
        name: opni_metrics_core::CapabilityName::metrics(),
        installed_at: Timestamp(1_700_000_000_123),
        deletion_requested_at: Some(Timestamp(1_700_000_100_000)),
    };
    let wire = pb_clusters::CapabilityEntry::from(entry.clone());
    assert_eq!(wire.installed_at, Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 123_000_000 }));
    assert_eq!(CapabilityEntry::try_from(wire).unwrap(), entry);
}
