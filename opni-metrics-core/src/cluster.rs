//! The upstream (Cortex) cluster configuration managed through CortexOps.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::duration::PromDuration;
use crate::spec::SpecError;

mod presets;
pub use presets::{Preset, preset, presets};

/// Placeholder that stands for a stored secret on read, and keeps it on write.
pub const REDACTED: &str = "***REDACTED***";

/// How Cortex is deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeploymentMode {
    /// One all-in-one workload.
    #[default]
    AllInOne,
    /// One workload per component, replicated.
    HighlyAvailable,
}

/// Where blocks are stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "backend", deny_unknown_fields)]
pub enum Storage {
    /// A local directory (all-in-one only).
    Filesystem {
        /// Directory.
        directory: String,
    },
    /// S3 or S3-compatible.
    S3 {
        /// Endpoint host.
        endpoint: String,
        /// Bucket.
        bucket: String,
        /// Region, may be empty.
        #[serde(default)]
        region: String,
        /// Access key id.
        access_key_id: String,
        /// Secret access key (redacted on read).
        secret_access_key: String,
    },
    /// Google Cloud Storage.
    Gcs {
        /// Bucket.
        bucket: String,
        /// Service account JSON (redacted on read).
        service_account: String,
    },
    /// Azure Blob Storage.
    Azure {
        /// Account name.
        account_name: String,
        /// Account key (redacted on read).
        account_key: String,
        /// Container.
        container: String,
    },
    /// OpenStack Swift.
    Swift {
        /// Auth URL.
        auth_url: String,
        /// User name.
        username: String,
        /// Password (redacted on read).
        password: String,
        /// Container.
        container: String,
    },
}

impl Default for Storage {
    fn default() -> Self {
        Self::Filesystem { directory: "/data".to_owned() }
    }
}

impl Storage {
    fn secret_mut(&mut self) -> Option<&mut String> {
        match self {
            Self::Filesystem { .. } => None,
            Self::S3 { secret_access_key, .. } => Some(secret_access_key),
            Self::Gcs { service_account, .. } => Some(service_account),
            Self::Azure { account_key, .. } => Some(account_key),
            Self::Swift { password, .. } => Some(password),
        }
    }
}

/// Settings of one Cortex workload (target).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Workload {
    /// Replicas; `None` lets the mode pick.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Extra command-line arguments.
    pub extra_args: Vec<String>,
}

/// Grafana deployment settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Grafana {
    /// Deploy Grafana.
    pub enabled: bool,
    /// Grafana version; `None` lets the driver pick.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Public hostname.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// The CortexOps configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Whether Cortex is installed.
    pub enabled: bool,
    /// Deployment mode.
    pub mode: DeploymentMode,
    /// Block storage.
    pub storage: Storage,
    /// How long samples are kept; zero keeps them forever.
    pub retention: PromDuration,
    /// Per-target settings, by target name (`all`, `ingester`, `distributor`, …).
    pub workloads: BTreeMap<String, Workload>,
    /// Grafana.
    pub grafana: Grafana,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            mode: DeploymentMode::AllInOne,
            storage: Storage::default(),
            retention: PromDuration::from_secs(30 * 24 * 3600),
            workloads: BTreeMap::new(),
            grafana: Grafana::default(),
        }
    }
}

/// Cortex targets accepted as workload names.
pub const TARGETS: [&str; 10] = [
    "all",
    "distributor",
    "ingester",
    "querier",
    "query-frontend",
    "store-gateway",
    "compactor",
    "ruler",
    "alertmanager",
    "purger",
];

/// How serious a [`Finding`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Severity {
    /// Stored, but may not behave as intended.
    Warning,
    /// Refused.
    Error,
}

/// One validation finding: what is wrong with which field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// How serious it is.
    pub severity: Severity,
    /// The field's path in the configuration document (`storage.bucket`); empty for the whole.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl Finding {
    fn error(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { severity: Severity::Error, field: field.into(), message: message.into() }
    }
    fn warning(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { severity: Severity::Warning, field: field.into(), message: message.into() }
    }
}

impl ClusterConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// The first error of [`ClusterConfig::findings`], as a [`SpecError`] naming the field.
    pub fn validate(&self) -> Result<(), SpecError> {
        match self.findings().into_iter().find(|f| f.severity == Severity::Error) {
            Some(f) => Err(SpecError::new(f.field, f.message)),
            None => Ok(()),
        }
    }

    /// Every error (the configuration would be refused) and warning (it would be stored but
    /// may not behave as intended), errors first.
    pub fn findings(&self) -> Vec<Finding> {
        let mut out = Vec::new();
        let ha = self.mode == DeploymentMode::HighlyAvailable;
        if ha && matches!(self.storage, Storage::Filesystem { .. }) {
            out.push(Finding::error(
                "storage.backend",
                "filesystem storage needs the all-in-one mode; use an object store for highly-available mode",
            ));
        }
        let mut nonempty = |field: &str, v: &str| {
            if v.trim().is_empty() {
                out.push(Finding::error(format!("storage.{field}"), "must not be empty"));
            }
        };
        match &self.storage {
            Storage::Filesystem { directory } => {
                if !directory.starts_with('/') {
                    out.push(Finding::error("storage.directory", "must be an absolute path"));
                }
            }
            Storage::S3 { endpoint, bucket, access_key_id, secret_access_key, .. } => {
                nonempty("endpoint", endpoint);
                nonempty("bucket", bucket);
                nonempty("accessKeyId", access_key_id);
                nonempty("secretAccessKey", secret_access_key);
            }
            Storage::Gcs { bucket, service_account } => {
                nonempty("bucket", bucket);
                nonempty("serviceAccount", service_account);
            }
            Storage::Azure { account_name, account_key, container } => {
                nonempty("accountName", account_name);
                nonempty("accountKey", account_key);
                nonempty("container", container);
            }
            Storage::Swift { auth_url, username, password, container } => {
                nonempty("authUrl", auth_url);
                nonempty("username", username);
                nonempty("password", password);
                nonempty("container", container);
            }
        }
        let r = self.retention.as_millis();
        if r != 0 && r < 2 * 3_600_000 {
            out.push(Finding::error(
                "retention",
                format!("{} is below the 2h block range; use 0s to keep forever", self.retention),
            ));
        }
        for (name, w) in &self.workloads {
            if !TARGETS.contains(&name.as_str()) {
                out.push(Finding::error(
                    format!("workloads.{name}"),
                    format!("unknown target, expected one of {}", TARGETS.join(", ")),
                ));
                continue;
            }
            if w.replicas.is_some_and(|r| r > 100) {
                out.push(Finding::error(format!("workloads.{name}.replicas"), "must be at most 100"));
            }
            if let Some(a) = w.extra_args.iter().find(|a| !a.starts_with('-')) {
                out.push(Finding::error(format!("workloads.{name}.extraArgs"), format!("{a:?} is not a flag")));
            }
            // warnings: settings that will be ignored or are risky
            if ha == (name == "all") {
                let why = if ha { "highly-available mode has no all target" } else { "all-in-one mode runs only all" };
                out.push(Finding::warning(format!("workloads.{name}"), format!("ignored: {why}")));
            }
            if ha && name == "ingester" && w.replicas.is_some_and(|r| r < 3) {
                out.push(Finding::warning(
                    "workloads.ingester.replicas",
                    "fewer than 3 ingesters cannot keep the default replication factor of 3",
                ));
            }
        }
        if let Some(h) = &self.grafana.hostname
            && (h.is_empty() || !h.split('.').all(crate::spec::is_dns_label))
        {
            out.push(Finding::error("grafana.hostname", format!("{h:?} is not a DNS name")));
        }
        if r == 0 {
            out.push(Finding::warning("retention", "0s keeps samples forever; storage grows without bound"));
        }
        if !ha && self.enabled && matches!(self.storage, Storage::Filesystem { .. }) {
            out.push(Finding::warning(
                "storage.backend",
                "filesystem storage keeps every block on one volume: no redundancy, not for production",
            ));
        }
        out.sort_by_key(|f| f.severity != Severity::Error);
        out
    }

    /// The config with secrets replaced by [`REDACTED`], for reads.
    #[must_use]
    pub fn redacted(&self) -> Self {
        let mut c = self.clone();
        // an empty secret stays empty: the placeholder always stands for a stored secret
        if let Some(s) = c.storage.secret_mut().filter(|s| !s.is_empty()) {
            *s = REDACTED.to_owned();
        }
        c
    }

    /// The field still holding [`REDACTED`] after [`ClusterConfig::unredact_from`]: a
    /// placeholder with no stored secret behind it (another backend, or none stored), which must
    /// never be stored as the secret itself.
    pub fn unresolved_placeholder(&self) -> Option<&'static str> {
        let field = match &self.storage {
            Storage::Filesystem { .. } => return None,
            Storage::S3 { .. } => "storage.secretAccessKey",
            Storage::Gcs { .. } => "storage.serviceAccount",
            Storage::Azure { .. } => "storage.accountKey",
            Storage::Swift { .. } => "storage.password",
        };
        let mut c = self.clone();
        c.storage.secret_mut().filter(|s| *s == REDACTED).map(|_| field)
    }

    /// Replaces [`REDACTED`] placeholders in `self` (an incoming write) with the secrets of
    /// `stored`, so a read-modify-write never erases a secret.
    pub fn unredact_from(&mut self, stored: &ClusterConfig) {
        let old = stored.clone().storage.secret_mut().map(|s| s.clone());
        let same_backend = std::mem::discriminant(&self.storage) == std::mem::discriminant(&stored.storage);
        if let (Some(new), Some(old), true) = (self.storage.secret_mut(), old, same_backend)
            && new == REDACTED
        {
            *new = old;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3() -> ClusterConfig {
        ClusterConfig {
            enabled: true,
            mode: DeploymentMode::HighlyAvailable,
            storage: Storage::S3 {
                endpoint: "s3.local".into(),
                bucket: "b".into(),
                region: String::new(),
                access_key_id: "id".into(),
                secret_access_key: "secret".into(),
            },
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn validation_names_fields() {
        ClusterConfig::default().validate().unwrap();
        s3().validate().unwrap();
        let mut c = s3();
        c.storage = Storage::default();
        assert_eq!(c.validate().unwrap_err().field, "storage.backend");
        let mut c = s3();
        c.retention = PromDuration::from_secs(60);
        assert_eq!(c.validate().unwrap_err().field, "retention");
        let mut c = s3();
        c.workloads.insert("ingestor".into(), Workload::default());
        assert_eq!(c.validate().unwrap_err().field, "workloads.ingestor");
    }

    #[test]
    fn findings_list_every_error_and_the_warnings() {
        let mut c = s3();
        c.storage = Storage::S3 {
            endpoint: String::new(),
            bucket: String::new(),
            region: String::new(),
            access_key_id: "id".into(),
            secret_access_key: "s".into(),
        };
        c.retention = PromDuration::from_secs(0);
        c.workloads.insert("all".into(), Workload::default());
        c.workloads.insert("ingester".into(), Workload { replicas: Some(1), extra_args: vec!["x".into()] });
        let f = c.findings();
        let errors: Vec<_> = f.iter().filter(|f| f.severity == Severity::Error).map(|f| f.field.as_str()).collect();
        assert_eq!(errors, ["storage.endpoint", "storage.bucket", "workloads.ingester.extraArgs"]);
        let warnings: Vec<_> = f.iter().filter(|f| f.severity == Severity::Warning).map(|f| f.field.as_str()).collect();
        assert_eq!(warnings, ["workloads.all", "workloads.ingester.replicas", "retention"]);
        assert_eq!(c.validate().unwrap_err().field, "storage.endpoint");
    }

    #[test]
    fn an_empty_secret_is_not_redacted_and_a_lone_placeholder_is_found() {
        let mut c = s3();
        c.storage = Storage::Gcs { bucket: "g".into(), service_account: String::new() };
        assert_eq!(c.redacted(), c);
        c.storage = Storage::Gcs { bucket: "g".into(), service_account: REDACTED.into() };
        c.unredact_from(&s3());
        assert_eq!(c.unresolved_placeholder(), Some("storage.serviceAccount"));
        assert_eq!(s3().unresolved_placeholder(), None);
    }

    #[test]
    fn secrets_are_redacted_and_kept() {
        let stored = s3();
        let read = stored.redacted();
        assert!(serde_json::to_string(&read).unwrap().contains(REDACTED));
        assert!(!serde_json::to_string(&read).unwrap().contains("secret\""));
        let mut write = read.clone();
        write.retention = PromDuration::from_secs(3 * 3600);
        write.unredact_from(&stored);
        assert_eq!(write.storage, stored.storage);
        let mut other = read;
        other.storage = Storage::Gcs { bucket: "g".into(), service_account: REDACTED.into() };
        other.unredact_from(&stored);
        assert!(
            matches!(other.storage, Storage::Gcs { ref service_account, .. } if service_account == REDACTED),
            "never moves a secret across backends"
        );
    }
}
