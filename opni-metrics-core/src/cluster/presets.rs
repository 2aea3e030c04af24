//! Named starting points for a CortexOps configuration.

use std::collections::BTreeMap;

use super::{ClusterConfig, DeploymentMode, Storage, Workload};
use crate::duration::PromDuration;

/// A named configuration with what to know before using it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    /// Its id: `all-in-one` or `highly-available`.
    pub id: &'static str,
    /// A short name for display.
    pub display_name: &'static str,
    /// What it is for.
    pub description: &'static str,
    /// Things to know before using it.
    pub notes: Vec<&'static str>,
    /// The configuration (not enabled: installing is a separate step).
    pub config: ClusterConfig,
}

/// The presets, in display order.
pub fn presets() -> Vec<Preset> {
    let all_in_one = ClusterConfig {
        enabled: false,
        mode: DeploymentMode::AllInOne,
        storage: Storage::Filesystem { directory: "/data".into() },
        retention: PromDuration::from_secs(30 * 24 * 3600),
        ..ClusterConfig::default()
    };
    let replicated = |n| Workload { replicas: Some(n), extra_args: Vec::new() };
    let ha = ClusterConfig {
        enabled: false,
        mode: DeploymentMode::HighlyAvailable,
        storage: Storage::S3 {
            endpoint: String::new(),
            bucket: String::new(),
            region: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
        },
        retention: PromDuration::from_secs(90 * 24 * 3600),
        workloads: BTreeMap::from([
            ("distributor".to_owned(), replicated(3)),
            ("ingester".to_owned(), replicated(3)),
            ("querier".to_owned(), replicated(2)),
            ("query-frontend".to_owned(), replicated(2)),
            ("store-gateway".to_owned(), replicated(3)),
        ]),
        ..ClusterConfig::default()
    };
    vec![
        Preset {
            id: "all-in-one",
            display_name: "All in one",
            description: "One Cortex process running every component, blocks on a persistent volume: for \
                          trying things out and small installations.",
            notes: vec![
                "filesystem storage keeps every block on one volume: no redundancy",
                "an outage of the one pod stops ingestion; agents' Prometheus buffers in its WAL meanwhile",
            ],
            config: all_in_one,
        },
        Preset {
            id: "highly-available",
            display_name: "Highly available",
            description: "Every Cortex component in its own replicated workload, blocks in S3: for \
                          production.",
            notes: vec![
                "filesystem storage cannot be used in HA mode: fill in the object store's endpoint, bucket \
                 and credentials before setting it",
                "three ingesters keep the default replication factor of 3",
            ],
            config: ha,
        },
    ]
}

/// The preset named `id`.
pub fn preset(id: &str) -> Option<Preset> {
    presets().into_iter().find(|p| p.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Severity;

    #[test]
    fn presets_are_what_their_notes_say() {
        let aio = preset("all-in-one").unwrap();
        aio.config.validate().unwrap();
        let ha = preset("highly-available").unwrap();
        assert_eq!(ha.config.mode, DeploymentMode::HighlyAvailable);
        // a starting point: the storage must be filled in before it validates
        let errors: Vec<_> =
            ha.config.findings().into_iter().filter(|f| f.severity == Severity::Error).map(|f| f.field).collect();
        assert!(errors.contains(&"storage.bucket".to_owned()), "{errors:?}");
        assert!(preset("tiny").is_none());
    }
}
