//! Golden files of the MonitoringCluster controller's desired objects.
//!
//! Each preset renders to `tests/golden/<preset>.yaml`: one YAML document per object, in render
//! order. A change to the rendering shows up as a diff of these files, to be reviewed like code.
//! `UPDATE_GOLDEN=1` rewrites them instead of comparing.
#![allow(clippy::expect_used)] // test code: a panic is the failure report

use std::path::PathBuf;

use opni_metrics_kube::crd::monitoring_cluster::{
    AzureStorage, DeploymentMode, GcsStorage, IssuerRef, LimitsSpec, LogLevel, S3Storage, StorageBackend, StorageSpec,
    SwiftStorage, WorkloadSpec,
};
use opni_metrics_kube::crd::{MonitoringCluster, MonitoringClusterSpec, SecretKeyRef};
use opni_metrics_kube::render::{RenderOptions, desired_objects};

const REGENERATE: &str = "UPDATE_GOLDEN=1 cargo test -p opni-metrics-kube --test render_golden";

fn secret(name: &str, key: &str) -> SecretKeyRef {
    SecretKeyRef { name: name.to_owned(), key: key.to_owned() }
}

fn s3() -> StorageSpec {
    StorageSpec {
        backend: StorageBackend::S3,
        s3: Some(S3Storage {
            endpoint: "s3.eu-west-1.amazonaws.com".to_owned(),
            bucket: "opni-metrics".to_owned(),
            region: "eu-west-1".to_owned(),
            access_key_id: "AKIAIOSFODNN7EXAMPLE".to_owned(),
            secret_access_key: secret("cortex-s3", "secret-access-key"),
            insecure: false,
        }),
        ..StorageSpec::default()
    }
}

fn enabled(mode: DeploymentMode, storage: StorageSpec) -> MonitoringClusterSpec {
    let mut spec = MonitoringClusterSpec::default();
    spec.cortex.enabled = true;
    spec.cortex.deployment_mode = mode;
    spec.cortex.config.storage = storage;
    spec.cortex.config.retention = "30d".to_owned();
    spec
}

fn workload(replicas: Option<u32>, extra_args: &[&str], storage_size: Option<&str>) -> WorkloadSpec {
    WorkloadSpec {
        replicas,
        extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
        storage_size: storage_size.map(str::to_owned),
    }
}

fn presets() -> Vec<(&'static str, MonitoringClusterSpec)> {
    use DeploymentMode::{AllInOne, HighlyAvailable};

    let all_in_one_filesystem = enabled(AllInOne, StorageSpec::default());

    let mut all_in_one_s3_grafana = enabled(AllInOne, s3());
    all_in_one_s3_grafana.grafana.enabled = true;
    all_in_one_s3_grafana.grafana.version = Some("11.6.0".to_owned());
    all_in_one_s3_grafana.grafana.hostname = Some("grafana.example.com".to_owned());

    let gcs = StorageSpec {
        backend: StorageBackend::Gcs,
        gcs: Some(GcsStorage { bucket: "opni-metrics".to_owned(), service_account: secret("cortex-gcs", "key.json") }),
        ..StorageSpec::default()
    };
    let azure = StorageSpec {
        backend: StorageBackend::Azure,
        azure: Some(AzureStorage {
            account_name: "opnimetrics".to_owned(),
            container: "cortex".to_owned(),
            account_key: secret("cortex-azure", "account-key"),
        }),
        ..StorageSpec::default()
    };
    let swift = StorageSpec {
        backend: StorageBackend::Swift,
        swift: Some(SwiftStorage {
            auth_url: "https://keystone.example.com:5000/v3".to_owned(),
            username: "cortex".to_owned(),
            container: "cortex".to_owned(),
            password: secret("cortex-swift", "password"),
        }),
        ..StorageSpec::default()
    };

    let mut custom = enabled(HighlyAvailable, s3());
    custom.cortex.image = Some("registry.example.com/cortexproject/cortex:v1.19.1".to_owned());
    custom.cortex.config.log_level = LogLevel::Debug;
    custom.cortex.config.retention = "13w".to_owned();
    custom.cortex.config.limits = LimitsSpec {
        ingestion_rate: Some(250_000),
        ingestion_burst_size: Some(500_000),
        max_global_series_per_user: Some(5_000_000),
        max_label_names_per_series: Some(40),
    };
    custom.tls.issuer_ref = Some(IssuerRef { name: "corp-ca".to_owned(), kind: "ClusterIssuer".to_owned() });
    custom.gateway.service_name = "metrics-gateway".to_owned();
    for (target, w) in [
        ("distributor", workload(Some(4), &["-distributor.ingestion-tenant-shard-size=3"], None)),
        ("ingester", workload(Some(6), &["-ingester.max-series-per-user=0"], Some("50Gi"))),
        ("querier", workload(Some(3), &["-querier.max-concurrent=16"], None)),
        ("store-gateway", workload(None, &[], Some("20Gi"))),
        ("ruler", workload(Some(0), &[], None)),
        ("alertmanager", workload(Some(0), &[], None)),
    ] {
        custom.cortex.workloads.insert(target.to_owned(), w);
    }

    vec![
        ("all-in-one-filesystem", all_in_one_filesystem),
        ("all-in-one-s3-grafana", all_in_one_s3_grafana),
        ("highly-available-s3", enabled(HighlyAvailable, s3())),
        ("highly-available-gcs", enabled(HighlyAvailable, gcs)),
        ("highly-available-azure", enabled(HighlyAvailable, azure)),
        ("highly-available-swift", enabled(HighlyAvailable, swift)),
        ("highly-available-custom", custom),
    ]
}

fn render(spec: MonitoringClusterSpec) -> String {
    let mut mc = MonitoringCluster::new("opni", spec);
    mc.metadata.namespace = Some("opni-system".to_owned());
    mc.metadata.uid = Some("00000000-0000-0000-0000-000000000001".to_owned());
    let objects = desired_objects(&mc, &RenderOptions::default()).expect("preset renders");
    // Sorted keys whatever serde_json's `preserve_order` feature says.
    let docs: Vec<_> = objects
        .into_iter()
        .map(|o| {
            let mut v = o.object;
            v.sort_all_objects();
            v
        })
        .collect();
    serde_saphyr::to_string_multiple(&docs).expect("yaml")
}

/// Where the first difference is, with a little context.
fn diff_hint(expected: &str, actual: &str) -> String {
    let (exp, act): (Vec<_>, Vec<_>) = (expected.lines().collect(), actual.lines().collect());
    let first = exp.iter().zip(&act).position(|(e, a)| e != a).unwrap_or(exp.len().min(act.len()));
    let from = first.saturating_sub(3);
    let mut out =
        format!("first difference at line {} ({} lines expected, {} rendered)\n", first + 1, exp.len(), act.len());
    for (i, line) in exp.iter().enumerate().skip(from).take(first - from + 4) {
        out.push_str(&format!("  expected {:>5}: {line}\n", i + 1));
    }
    for (i, line) in act.iter().enumerate().skip(from).take(first - from + 4) {
        out.push_str(&format!("  rendered {:>5}: {line}\n", i + 1));
    }
    out
}

#[test]
fn rendered_objects_match_the_golden_files() {
    let dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()))
            .join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    for (preset, spec) in presets() {
        let path = dir.join(format!("{preset}.yaml"));
        let actual = render(spec);
        if update {
            std::fs::create_dir_all(&dir).expect("create tests/golden");
            std::fs::write(&path, &actual).expect("write golden file");
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!("{preset}: {}", diff_hint(&expected, &actual))),
            Err(e) => failures.push(format!("{preset}: cannot read {}: {e}", path.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "rendered objects differ from the golden files:\n{}\nIf the change is intended, regenerate with\n  {REGENERATE}\nand review the diff.",
        failures.join("\n")
    );
}

#[test]
fn golden_files_have_no_strays() {
    let dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()))
            .join("tests/golden");
    let known: Vec<_> = presets().into_iter().map(|(p, _)| format!("{p}.yaml")).collect();
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(known.contains(&name), "tests/golden/{name} belongs to no preset; delete it");
    }
}

/// Every rendered object of a third-party kind (cert-manager, grafana-operator) fits the real
/// operator's CRD schema: no field a real API server would prune, no value it would refuse.
#[test]
fn rendered_third_party_objects_fit_the_real_crd_schemas() {
    let Some(schemas) = opni_metrics_tests::crd_schema::Schemas::upstream() else { return };
    let mut checked = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for (preset, spec) in presets() {
        let mut mc = MonitoringCluster::new("opni", spec);
        mc.metadata.namespace = Some("opni-system".to_owned());
        mc.metadata.uid = Some("00000000-0000-0000-0000-000000000001".to_owned());
        for o in desired_objects(&mc, &RenderOptions::default()).expect("preset renders") {
            let (api_version, kind) =
                (o.object["apiVersion"].as_str().unwrap_or_default(), o.object["kind"].as_str().unwrap_or_default());
            if !schemas.knows(api_version, kind) {
                continue;
            }
            checked.insert(kind.to_owned());
            if let Err(findings) = schemas.check(&o.object) {
                failures.push(format!("{preset}: {kind} {}: {findings:?}", o.object["metadata"]["name"]));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let expected = ["Certificate", "Grafana", "GrafanaDatasource", "Issuer"];
    assert_eq!(checked.into_iter().collect::<Vec<_>>(), expected, "the kinds checked");
}
