//! Unit tests of the rendering: validation, digests, labels and owner references, secrets,
//! certificates against the config's server names. The objects themselves are pinned by the
//! golden files (`tests/render_golden.rs`).

use std::collections::BTreeMap;

use serde_json::Value;

use super::*;
use crate::crd::monitoring_cluster::{
    CortexSpec, DeploymentMode, GcsStorage, LogLevel, S3Storage, StorageBackend, StorageSpec, WorkloadSpec,
};
use crate::crd::{MonitoringClusterSpec, SecretKeyRef};

fn cluster(spec: MonitoringClusterSpec) -> MonitoringCluster {
    let mut mc = MonitoringCluster::new("opni", spec);
    mc.metadata.namespace = Some("opni-system".to_owned());
    mc.metadata.uid = Some("00000000-0000-0000-0000-000000000001".to_owned());
    mc
}

fn s3() -> StorageSpec {
    StorageSpec {
        backend: StorageBackend::S3,
        s3: Some(S3Storage {
            endpoint: "s3.eu-west-1.amazonaws.com".to_owned(),
            bucket: "opni-metrics".to_owned(),
            region: "eu-west-1".to_owned(),
            access_key_id: "AKIAEXAMPLE".to_owned(),
            secret_access_key: SecretKeyRef { name: "cortex-s3-credentials".to_owned(), key: "secret-key".to_owned() },
            insecure: false,
        }),
        ..StorageSpec::default()
    }
}

fn all_in_one() -> MonitoringClusterSpec {
    let mut spec = MonitoringClusterSpec::default();
    spec.cortex.enabled = true;
    spec
}

fn highly_available() -> MonitoringClusterSpec {
    let mut spec = all_in_one();
    spec.cortex.deployment_mode = DeploymentMode::HighlyAvailable;
    spec.cortex.config.storage = s3();
    spec
}

fn with_workload(mut spec: MonitoringClusterSpec, target: &str, w: WorkloadSpec) -> MonitoringClusterSpec {
    spec.cortex.workloads.insert(target.to_owned(), w);
    spec
}

fn replicas(n: u32) -> WorkloadSpec {
    WorkloadSpec { replicas: Some(n), ..WorkloadSpec::default() }
}

fn invalid_field(spec: &MonitoringClusterSpec) -> String {
    match validate(spec) {
        Err(RenderError::Invalid { field, .. }) => field,
        other => panic!("expected an invalid field, got {other:?}"),
    }
}

fn render(spec: MonitoringClusterSpec) -> Vec<DesiredObject> {
    desired_objects(&cluster(spec), &RenderOptions::default()).expect("renders")
}

fn config_yaml(objects: &[DesiredObject]) -> String {
    let secret = objects.iter().find(|o| o.name() == "opni-cortex-config").expect("config secret");
    secret.object["stringData"]["cortex.yaml"].as_str().expect("cortex.yaml").to_owned()
}

fn config(objects: &[DesiredObject]) -> Value {
    serde_saphyr::from_str(&config_yaml(objects)).expect("cortex.yaml parses")
}

fn pod_templates(objects: &[DesiredObject]) -> impl Iterator<Item = &Value> {
    objects
        .iter()
        .filter(|o| matches!(o.kind, ObjectKind::Deployment | ObjectKind::StatefulSet))
        .map(|o| &o.object["spec"]["template"])
}

#[test]
fn validation_errors_name_the_field() {
    let cases = [
        (with_workload(highly_available(), "ingestr", replicas(3)), "spec.cortex.workloads.ingestr"),
        (
            MonitoringClusterSpec {
                cortex: CortexSpec { config: Default::default(), ..highly_available().cortex },
                ..Default::default()
            },
            "spec.cortex.config.storage.backend",
        ),
        (with_workload(highly_available(), "ingester", replicas(0)), "spec.cortex.workloads.ingester.replicas"),
        (with_workload(highly_available(), "all", replicas(1)), "spec.cortex.workloads.all"),
        (with_workload(all_in_one(), "ingester", replicas(1)), "spec.cortex.workloads.ingester"),
        (with_workload(all_in_one(), "all", replicas(0)), "spec.cortex.workloads.all.replicas"),
        (with_workload(all_in_one(), "all", replicas(2)), "spec.cortex.config.storage.backend"),
        (
            with_workload(
                highly_available(),
                "querier",
                WorkloadSpec { storage_size: Some("1Gi".into()), ..replicas(2) },
            ),
            "spec.cortex.workloads.querier.storageSize",
        ),
        (
            with_workload(
                highly_available(),
                "ingester",
                WorkloadSpec { storage_size: Some("lots".into()), ..replicas(3) },
            ),
            "spec.cortex.workloads.ingester.storageSize",
        ),
        (
            with_workload(
                highly_available(),
                "querier",
                WorkloadSpec { extra_args: vec!["-log.format=json".into(), "--target=ingester".into()], ..replicas(2) },
            ),
            "spec.cortex.workloads.querier.extraArgs[1]",
        ),
    ];
    for (spec, field) in cases {
        assert_eq!(invalid_field(&spec), field);
    }

    let mut spec = all_in_one();
    spec.cortex.config.retention = "30 days".to_owned();
    assert_eq!(invalid_field(&spec), "spec.cortex.config.retention");

    let mut spec = highly_available();
    spec.cortex.config.storage.s3 = None;
    assert_eq!(invalid_field(&spec), "spec.cortex.config.storage.s3");

    let mut spec = highly_available();
    if let Some(s3) = &mut spec.cortex.config.storage.s3 {
        s3.endpoint = "https://s3.amazonaws.com".to_owned();
    }
    assert_eq!(invalid_field(&spec), "spec.cortex.config.storage.s3.endpoint");

    let mut spec = all_in_one();
    spec.tls.issuer_ref = Some(crate::crd::monitoring_cluster::IssuerRef { name: "x".into(), kind: "Vault".into() });
    assert_eq!(invalid_field(&spec), "spec.tls.issuerRef.kind");

    let mut spec = MonitoringClusterSpec::default();
    spec.grafana.enabled = true;
    spec.grafana.hostname = Some("https://grafana.example.com".to_owned());
    assert_eq!(invalid_field(&spec), "spec.grafana.hostname");
}

#[test]
fn error_message_leads_with_the_field() {
    let err = validate(&with_workload(highly_available(), "ingestr", replicas(3))).unwrap_err();
    assert_eq!(err.to_string(), "spec.cortex.workloads.ingestr: unknown Cortex target");
}

#[test]
fn a_disabled_cortex_is_not_validated() {
    let mut spec = with_workload(MonitoringClusterSpec::default(), "ingestr", replicas(3));
    spec.cortex.config.retention = "forever".to_owned();
    assert!(validate(&spec).is_ok());
    assert!(render(spec).is_empty());
}

#[test]
fn missing_metadata_is_reported() {
    let mut mc = cluster(all_in_one());
    mc.metadata.uid = None;
    let err = desired_objects(&mc, &RenderOptions::default()).unwrap_err();
    assert!(matches!(err, RenderError::MissingMetadata("uid")), "{err:?}");
    mc.metadata.name = Some("a-name-much-too-long-for-derived-names".to_owned());
    mc.metadata.uid = Some("u".to_owned());
    assert!(matches!(desired_objects(&mc, &RenderOptions::default()), Err(RenderError::Invalid { .. })));
}

#[test]
fn digest_follows_the_config_only() {
    let base = config_digest(&cluster(highly_available())).unwrap();
    assert_eq!(base.len(), 64);
    assert_eq!(base, config_digest(&cluster(highly_available())).unwrap(), "deterministic");

    let mut unrelated = highly_available();
    unrelated.cortex.image = Some("example.com/cortex:v1.19.1".to_owned());
    unrelated.grafana.enabled = true;
    let unrelated = with_workload(unrelated, "querier", replicas(5));
    assert_eq!(config_digest(&cluster(unrelated)).unwrap(), base);

    let mut debug = highly_available();
    debug.cortex.config.log_level = LogLevel::Debug;
    assert_ne!(config_digest(&cluster(debug)).unwrap(), base);
    let mut retention = highly_available();
    retention.cortex.config.retention = "90d".to_owned();
    assert_ne!(config_digest(&cluster(retention)).unwrap(), base);
    let no_ruler = with_workload(highly_available(), "ruler", replicas(0));
    assert_ne!(config_digest(&cluster(no_ruler)).unwrap(), base);
}

#[test]
fn pods_carry_the_config_digest() {
    for spec in [all_in_one(), highly_available()] {
        let digest = config_digest(&cluster(spec.clone())).unwrap();
        let objects = render(spec);
        let mut pods = 0;
        for template in pod_templates(&objects) {
            assert_eq!(template["metadata"]["annotations"][CONFIG_DIGEST_ANNOTATION], Value::from(digest.as_str()));
            pods += 1;
        }
        assert!(pods > 0);
    }
}

#[test]
fn a_disabled_cortex_renders_no_cortex_objects() {
    let mut spec = highly_available();
    spec.cortex.enabled = false;
    assert!(render(spec.clone()).is_empty());
    spec.grafana.enabled = true;
    let kinds: Vec<_> = render(spec).iter().map(|o| o.kind).collect();
    assert_eq!(kinds, [ObjectKind::Grafana, ObjectKind::GrafanaDatasource]);
}

#[test]
fn every_object_is_labelled_and_owned() {
    let mut spec = highly_available();
    spec.grafana.enabled = true;
    for spec in [spec, all_in_one()] {
        let objects = render(spec);
        let mut sorted = objects.clone();
        sorted.sort_by(|a, b| (a.kind, a.name()).cmp(&(b.kind, b.name())));
        assert_eq!(objects, sorted, "ordered by kind then name");
        for o in &objects {
            let meta = &o.object["metadata"];
            let what = format!("{:?} {}", o.kind, o.name());
            assert_eq!(o.object["kind"], Value::from(format!("{:?}", o.kind)), "{what}");
            assert_eq!(o.object["apiVersion"], Value::from(o.kind.api_resource().api_version), "{what}");
            assert_eq!(meta["namespace"], "opni-system", "{what}");
            assert_eq!(meta["labels"][crate::MANAGED_BY_LABEL], crate::FIELD_MANAGER, "{what}");
            assert_eq!(meta["labels"][SELECTOR_LABEL], "opni", "{what}");
            assert_eq!(meta["labels"]["app.kubernetes.io/instance"], "opni", "{what}");
            assert!(meta["labels"]["app.kubernetes.io/name"].is_string(), "{what}");
            let owners = meta["ownerReferences"].as_array().expect("ownerReferences");
            assert_eq!(owners.len(), 1, "{what}");
            let owner = &owners[0];
            assert_eq!(owner["apiVersion"], "metrics.opni.io/v1beta1", "{what}");
            assert_eq!(owner["kind"], "MonitoringCluster", "{what}");
            assert_eq!(owner["name"], "opni", "{what}");
            assert_eq!(owner["uid"], "00000000-0000-0000-0000-000000000001", "{what}");
            assert_eq!(owner["controller"], true, "{what}");
            assert_eq!(owner["blockOwnerDeletion"], true, "{what}");
        }
    }
}

#[test]
fn secrets_are_referenced_never_rendered() {
    let objects = render(highly_available());
    let yaml = config_yaml(&objects);
    assert!(yaml.contains("secret_access_key: '${CORTEX_STORAGE_SECRET}'"), "{yaml}");
    assert!(!yaml.contains("cortex-s3-credentials"), "the Secret's name stays out of the config");
    assert_eq!(config(&objects)["blocks_storage"]["s3"]["secret_access_key"], "${CORTEX_STORAGE_SECRET}");
    for template in pod_templates(&objects) {
        let container = &template["spec"]["containers"][0];
        let args: Vec<_> = container["args"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert!(args.contains(&"-config.expand-env=true"));
        let env = container["env"].as_array().unwrap();
        assert_eq!(env.len(), 1);
        assert_eq!(env[0]["name"], "CORTEX_STORAGE_SECRET");
        assert!(env[0].get("value").is_none());
        assert_eq!(env[0]["valueFrom"]["secretKeyRef"]["name"], "cortex-s3-credentials");
        assert_eq!(env[0]["valueFrom"]["secretKeyRef"]["key"], "secret-key");
    }
}

#[test]
fn gcs_credentials_are_a_mounted_key_file() {
    let mut spec = highly_available();
    spec.cortex.config.storage = StorageSpec {
        backend: StorageBackend::Gcs,
        gcs: Some(GcsStorage {
            bucket: "opni-metrics".to_owned(),
            service_account: SecretKeyRef { name: "gcs".to_owned(), key: "key.json".to_owned() },
        }),
        ..StorageSpec::default()
    };
    let objects = render(spec);
    assert!(!config_yaml(&objects).contains("service_account"));
    for template in pod_templates(&objects) {
        let env = &template["spec"]["containers"][0]["env"][0];
        assert_eq!(env["name"], "GOOGLE_APPLICATION_CREDENTIALS");
        assert_eq!(env["value"], "/etc/cortex/gcs/credentials.json");
        let volumes = template["spec"]["volumes"].as_array().unwrap();
        let gcs = volumes.iter().find(|v| v["name"] == "gcs-credentials").expect("gcs volume");
        assert_eq!(gcs["secret"]["secretName"], "gcs");
        assert_eq!(gcs["secret"]["items"][0]["key"], "key.json");
    }
}

#[test]
fn every_server_name_is_in_the_serving_certificate() {
    for spec in [all_in_one(), highly_available()] {
        let objects = render(spec);
        let cert = objects.iter().find(|o| o.name() == "opni-cortex-serving").expect("serving certificate");
        let dns: Vec<_> =
            cert.object["spec"]["dnsNames"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        let mut server_names = Vec::new();
        collect(&config(&objects), "tls_server_name", &mut server_names);
        assert!(server_names.len() >= 4, "{server_names:?}");
        for name in server_names {
            assert!(dns.contains(&name.as_str()), "{name} not in {dns:?}");
        }
        for svc in objects.iter().filter(|o| o.kind == ObjectKind::Service) {
            let host = format!("{}.opni-system.svc", svc.name());
            assert!(dns.contains(&host.as_str()), "{host}");
            if svc.object["spec"]["clusterIP"] == "None" {
                assert!(dns.contains(&format!("*.{host}").as_str()), "*.{host}");
            }
        }
    }
}

fn collect(v: &Value, key: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match v.as_str() {
                    Some(s) if k == key => out.push(s.to_owned()),
                    _ => collect(v, key, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect(v, key, out)),
        _ => {}
    }
}

#[test]
fn replication_follows_the_replicas() {
    let rf =
        |objects: &[DesiredObject]| config(objects)["ingester"]["lifecycler"]["ring"]["replication_factor"].clone();
    assert_eq!(rf(&render(all_in_one())), 1);
    assert_eq!(rf(&render(highly_available())), 3);
    assert_eq!(rf(&render(with_workload(highly_available(), "ingester", replicas(5)))), 3);
    assert_eq!(rf(&render(with_workload(highly_available(), "ingester", replicas(2)))), 2);
}

#[test]
fn workloads_and_endpoints() {
    let w = workloads(&cluster(all_in_one())).unwrap();
    assert_eq!(
        w,
        [WorkloadRef {
            target: "all".into(),
            kind: WorkloadKind::StatefulSet,
            name: "opni-cortex-all".into(),
            replicas: 1
        }]
    );
    let e = endpoints(&cluster(all_in_one()));
    assert_eq!(e.push, "https://opni-cortex.opni-system.svc:8080/api/v1/push");
    assert_eq!(e.query, "https://opni-cortex.opni-system.svc:8080/prometheus");
    assert_eq!(e.purger.as_deref(), Some("https://opni-cortex.opni-system.svc:8080"));
    assert_eq!(e.ready, "https://opni-cortex.opni-system.svc:8080/ready");

    let spec = with_workload(with_workload(highly_available(), "purger", replicas(0)), "ruler", replicas(0));
    let w: BTreeMap<_, _> =
        workloads(&cluster(spec.clone())).unwrap().into_iter().map(|w| (w.target.clone(), w)).collect();
    assert_eq!(w.len(), 7);
    assert!(!w.contains_key("ruler") && !w.contains_key("purger"));
    assert_eq!(w["ingester"].kind, WorkloadKind::StatefulSet);
    assert_eq!(w["ingester"].replicas, 3);
    assert_eq!(w["distributor"].kind, WorkloadKind::Deployment);
    assert_eq!(w["distributor"].name, "opni-cortex-distributor");
    let e = endpoints(&cluster(spec.clone()));
    assert_eq!(e.push, "https://opni-cortex-distributor.opni-system.svc:8080/api/v1/push");
    assert_eq!(e.query, "https://opni-cortex-query-frontend.opni-system.svc:8080/prometheus");
    assert_eq!(e.purger, None);
    let objects = render(spec);
    assert!(config(&objects).get("ruler").is_none());
    assert!(config(&objects).get("alertmanager").is_some());

    let mut disabled = highly_available();
    disabled.cortex.enabled = false;
    assert!(workloads(&cluster(disabled)).unwrap().is_empty());
}

#[test]
fn budgets_only_for_replicated_highly_available_workloads() {
    assert!(!render(all_in_one()).iter().any(|o| o.kind == ObjectKind::PodDisruptionBudget));
    let objects = render(highly_available());
    let pdbs: Vec<_> = objects.iter().filter(|o| o.kind == ObjectKind::PodDisruptionBudget).map(|o| o.name()).collect();
    assert!(pdbs.contains(&"opni-cortex-ingester"));
    assert!(!pdbs.contains(&"opni-cortex-compactor") && !pdbs.contains(&"opni-cortex-purger"));
}

#[test]
fn object_kinds() {
    let secret = ObjectKind::Secret.api_resource();
    assert_eq!((secret.group.as_str(), secret.api_version.as_str(), secret.plural.as_str()), ("", "v1", "secrets"));
    let pdb = ObjectKind::PodDisruptionBudget.api_resource();
    assert_eq!((pdb.api_version.as_str(), pdb.plural.as_str()), ("policy/v1", "poddisruptionbudgets"));
    let cert = ObjectKind::Certificate.api_resource();
    assert_eq!((cert.api_version.as_str(), cert.kind.as_str()), ("cert-manager.io/v1", "Certificate"));
    let ds = ObjectKind::GrafanaDatasource.api_resource();
    assert_eq!((ds.group.as_str(), ds.plural.as_str()), ("grafana.integreatly.org", "grafanadatasources"));
    assert_eq!(ObjectKind::Issuer.needs_crd(), Some("cert-manager (cert-manager.io/v1)"));
    assert_eq!(ObjectKind::Grafana.needs_crd(), Some("grafana-operator (grafana.integreatly.org/v1beta1)"));
    assert_eq!(ObjectKind::StatefulSet.needs_crd(), None);
    let mut sorted = ObjectKind::ALL;
    sorted.sort();
    assert_eq!(sorted, ObjectKind::ALL);
}
