//! `CortexOps` over real gRPC on the management listener: every RPC, revision conflicts, the
//! redaction round trip, history, dry runs with each class of validation error, presets,
//! install / uninstall through the cluster driver, and the upstream state it drives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use opni_metrics_core::cluster::{ClusterConfig, REDACTED};
use opni_metrics_core::driver::{AppState, ClusterDriver, ClusterStatus, DriverError};
use opni_metrics_core::node::{DisabledReason, UpstreamState};
use opni_metrics_core::registry::Cluster;
use opni_metrics_core::store::MemoryStore;
use opni_metrics_core::uninstall::PurgeProgress;
use opni_metrics_core::{CapabilityName, ClusterId};
use opni_metrics_gateway::state::{Target, now};
use opni_metrics_gateway::{Gateway, GatewaySettings};
use opni_metrics_proto::cortexops::v1 as pb;
use opni_metrics_proto::cortexops::v1::cortex_ops_client::CortexOpsClient;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A cluster driver that does what it is told: apply installs, uninstall removes; the
/// application state is scriptable.
#[derive(Default)]
struct FakeCortex {
    applied: Mutex<Vec<ClusterConfig>>,
    installed: Mutex<bool>,
    app: Mutex<Option<AppState>>,
}

impl ClusterDriver for FakeCortex {
    fn apply<'a>(&'a self, config: &'a ClusterConfig) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async move {
            self.applied.lock().unwrap().push(config.clone());
            *self.installed.lock().unwrap() = config.enabled;
            Ok(())
        })
    }
    fn status(&self) -> BoxFuture<'_, Result<ClusterStatus, DriverError>> {
        Box::pin(async move {
            let installed = *self.installed.lock().unwrap();
            let app =
                self.app.lock().unwrap().unwrap_or(if installed { AppState::Running } else { AppState::NotRunning });
            Ok(ClusterStatus {
                install_state: if installed { UpstreamState::Installed } else { UpstreamState::NotInstalled },
                app_state: app,
                workloads: vec![opni_metrics_core::driver::WorkloadStatus {
                    name: "all".into(),
                    ready: u32::from(installed),
                    desired: 1,
                    message: String::new(),
                }],
                warnings: vec![],
                version: Some("v1.18.1".into()),
            })
        })
    }
    fn uninstall(&self) -> BoxFuture<'_, Result<(), DriverError>> {
        Box::pin(async move {
            *self.installed.lock().unwrap() = false;
            Ok(())
        })
    }
    fn delete_tenant_data<'a>(&'a self, _: &'a ClusterId) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async { Ok(()) })
    }
    fn tenant_deletion_status<'a>(&'a self, _: &'a ClusterId) -> BoxFuture<'a, Result<PurgeProgress, DriverError>> {
        Box::pin(async { Ok(PurgeProgress::Done) })
    }
}

type Client = CortexOpsClient<InterceptedService<Channel, Bearer>>;

#[derive(Clone)]
struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);
impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Ok(r)
    }
}

struct Env {
    _dir: tempfile::TempDir,
    gateway: Gateway,
    driver: Arc<FakeCortex>,
    client: Client,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut s = GatewaySettings::default();
    s.data_dir = dir.path().to_owned();
    s.listen = opni_metrics_gateway::Listen::ephemeral_loopback();
    s.upstream.status_interval = Duration::from_millis(50);
    s.upstream.failing_grace = Duration::ZERO;
    let driver = Arc::new(FakeCortex::default());
    let mut gateway = Gateway::builder(s)
        .store(Arc::new(MemoryStore::default()))
        .cluster_driver(Arc::clone(&driver) as Arc<dyn ClusterDriver>)
        .build()
        .await
        .unwrap();
    let addrs = gateway.bind_and_serve().await.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", addrs.management))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let bearer = Bearer(format!("Bearer {}", gateway.admin_token().unwrap()).parse().unwrap());
    let client = CortexOpsClient::with_interceptor(channel, bearer);
    Env { _dir: dir, gateway, driver, client }
}

fn s3(secret: &str, revision: Option<u64>) -> pb::CapabilityBackendConfigSpec {
    let mut c = ClusterConfig {
        mode: opni_metrics_core::cluster::DeploymentMode::HighlyAvailable,
        storage: opni_metrics_core::cluster::Storage::S3 {
            endpoint: "s3.example:9000".into(),
            bucket: "blocks".into(),
            region: String::new(),
            access_key_id: "AKIA".into(),
            secret_access_key: secret.into(),
        },
        ..ClusterConfig::default()
    };
    c.workloads
        .insert("ingester".into(), opni_metrics_core::cluster::Workload { replicas: Some(3), extra_args: vec![] });
    let mut w = pb::CapabilityBackendConfigSpec::from(c);
    w.revision = revision;
    w
}

fn secret_of(w: &pb::CapabilityBackendConfigSpec) -> String {
    w.storage.as_ref().unwrap().s3.as_ref().unwrap().secret_access_key.clone()
}

/// Waits until the stored upstream state is `want` (written by the status poller): checked
/// after every store change.
async fn upstream_becomes(gw: &Gateway, want: UpstreamState) {
    let st = gw.state();
    opni_metrics_tests::wait::store_until(
        st.store().as_ref(),
        Duration::from_secs(20),
        &format!("upstream {want:?}"),
        || async { st.upstream().await.unwrap() == want },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_rpcs_revisions_redaction_and_history() {
    let Env { gateway, mut client, _dir, .. } = env().await;
    // built-in default at revision 0; the active one falls back to it
    let d = client.get_default_configuration(pb::GetRequest { revision: None }).await.unwrap().into_inner();
    assert_eq!(d.revision, Some(0));
    let a = client.get_configuration(pb::GetRequest { revision: None }).await.unwrap().into_inner();
    assert_eq!((a.revision, a.mode), (Some(0), d.mode));
    let st = client.status(()).await.unwrap().into_inner();
    assert_eq!(st.config_state, i32::from(pb::ConfigurationState::NotConfigured));

    // set (first write at revision 0), read back redacted
    let r1 =
        client.set_configuration(pb::SetRequest { spec: Some(s3("topsecret", Some(0))) }).await.unwrap().into_inner();
    assert!(r1.changed);
    let got = client.get_configuration(pb::GetRequest { revision: None }).await.unwrap().into_inner();
    assert_eq!(got.revision, Some(r1.revision));
    assert_eq!(secret_of(&got), REDACTED, "a read never shows a secret");
    // writing back what was read (placeholder included) changes nothing
    let same = client.set_configuration(pb::SetRequest { spec: Some(got.clone()) }).await.unwrap().into_inner();
    assert_eq!((same.revision, same.changed), (r1.revision, false));
    // a change with the placeholder keeps the stored secret
    let mut edit = got.clone();
    edit.retention = Some(prost_types::Duration { seconds: 3 * 86_400, nanos: 0 });
    let r2 = client.set_configuration(pb::SetRequest { spec: Some(edit) }).await.unwrap().into_inner();
    assert!(r2.changed && r2.revision > r1.revision);
    let (stored, _) = gateway.state().cortex_config(Target::Active).await.unwrap().unwrap();
    assert!(
        matches!(stored.storage, opni_metrics_core::cluster::Storage::S3 { ref secret_access_key, .. } if secret_access_key == "topsecret")
    );

    // a placeholder with no secret of its backend behind it is refused, never stored
    let mut gcs = got.clone();
    gcs.storage = Some(pb::Storage {
        backend: pb::StorageBackend::Gcs.into(),
        gcs: Some(pb::GcsStorage { bucket: "b".into(), service_account: REDACTED.into() }),
        ..Default::default()
    });
    let e = client.set_configuration(pb::SetRequest { spec: Some(gcs) }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("storage.gcs.serviceAccount"), "{}", e.message());

    // a stale revision is ABORTED naming both revisions, and stores nothing
    let e = client.set_configuration(pb::SetRequest { spec: Some(s3("x", Some(r1.revision))) }).await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    assert!(e.message().contains(&r1.revision.to_string()) && e.message().contains(&r2.revision.to_string()), "{e:?}");
    let e = client.reset_configuration(pb::ResetRequest { revision: Some(r1.revision) }).await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted);

    // an earlier revision is readable, redacted
    let old = client.get_configuration(pb::GetRequest { revision: Some(r1.revision) }).await.unwrap().into_inner();
    assert_eq!((old.revision, secret_of(&old)), (Some(r1.revision), REDACTED.to_owned()));
    let e = client.get_configuration(pb::GetRequest { revision: Some(999_999) }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // history: every revision, oldest first, values only on request, redacted
    let h = client
        .configuration_history(pb::ConfigurationHistoryRequest {
            target: pb::Target::Active.into(),
            include_values: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.entries.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![r1.revision, r2.revision]);
    assert!(h.entries.iter().all(|e| e.spec.is_none()));
    let h = client
        .configuration_history(pb::ConfigurationHistoryRequest {
            target: pb::Target::Active.into(),
            include_values: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(h.entries.iter().all(|e| secret_of(e.spec.as_ref().unwrap()) == REDACTED));

    // the default: set, reset back to built-in, recorded
    let rd =
        client.set_default_configuration(pb::SetRequest { spec: Some(s3("dflt", None)) }).await.unwrap().into_inner();
    client.reset_default_configuration(pb::ResetRequest { revision: Some(rd.revision) }).await.unwrap();
    let d = client.get_default_configuration(pb::GetRequest { revision: None }).await.unwrap().into_inner();
    assert_eq!(d.revision, Some(0));
    let h = client
        .configuration_history(pb::ConfigurationHistoryRequest {
            target: pb::Target::Default.into(),
            include_values: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.entries.iter().map(|e| e.reset).collect::<Vec<_>>(), vec![false, true]);
    // reset of the active one copies the (built-in) default
    client.reset_configuration(pb::ResetRequest { revision: None }).await.unwrap();
    let a = client.get_configuration(pb::GetRequest { revision: None }).await.unwrap().into_inner();
    assert_eq!(a.mode, i32::from(pb::DeploymentMode::AllInOne));
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_naming_the_field_and_dry_run_lists_every_finding() {
    let Env { gateway, mut client, _dir, .. } = env().await;
    let base = client.get_configuration(pb::GetRequest { revision: None }).await.unwrap().into_inner();
    let mut missing_creds = s3("", None);
    missing_creds.storage.as_mut().unwrap().s3.as_mut().unwrap().bucket = String::new();
    let mut fs_in_ha = s3("s", None);
    fs_in_ha.storage = Some(pb::Storage {
        backend: pb::StorageBackend::Filesystem.into(),
        filesystem: Some(pb::FilesystemStorage { directory: "/data".into() }),
        ..Default::default()
    });
    let mut short_retention = s3("s", None);
    short_retention.retention = Some(prost_types::Duration { seconds: 600, nanos: 0 });
    let mut unknown_target = s3("s", None);
    unknown_target.workloads.insert("ingestor".into(), pb::Workload::default());
    let mut not_a_flag = s3("s", None);
    not_a_flag.workloads.insert("querier".into(), pb::Workload { replicas: None, extra_args: vec!["verbose".into()] });
    let cases = [
        (missing_creds, "storage.s3.bucket"),
        (fs_in_ha, "storage.backend"),
        (short_retention, "retention"),
        (unknown_target, "workloads.ingestor"),
        (not_a_flag, "workloads.querier.extraArgs"),
    ];
    for (spec, field) in cases {
        let e = client.set_configuration(pb::SetRequest { spec: Some(spec.clone()) }).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().contains(field), "{field}: {}", e.message());
        let dry = client
            .dry_run(pb::DryRunRequest {
                target: pb::Target::Active.into(),
                action: pb::Action::Set.into(),
                spec: Some(spec),
                revision: None,
            })
            .await
            .unwrap()
            .into_inner();
        let errors: Vec<_> = dry
            .validation_errors
            .iter()
            .filter(|v| v.severity == i32::from(pb::Severity::Error))
            .map(|v| v.field.as_str())
            .collect();
        assert!(errors.contains(&field), "{field}: {errors:?}");
    }
    // every error at once, with warnings
    let mut many = s3("", None);
    many.retention = Some(prost_types::Duration { seconds: 0, nanos: 0 });
    many.workloads.insert("querier".into(), pb::Workload { replicas: None, extra_args: vec!["x".into()] });
    let dry = client
        .dry_run(pb::DryRunRequest {
            target: pb::Target::Active.into(),
            action: pb::Action::Set.into(),
            spec: Some(many),
            revision: Some(7),
        })
        .await
        .unwrap()
        .into_inner();
    let fields: Vec<_> = dry.validation_errors.iter().map(|v| (v.severity, v.field.as_str())).collect();
    let e = i32::from(pb::Severity::Error);
    let w = i32::from(pb::Severity::Warning);
    assert!(fields.contains(&(e, "storage.s3.secretAccessKey")), "{fields:?}");
    assert!(fields.contains(&(e, "workloads.querier.extraArgs")), "{fields:?}");
    assert!(fields.contains(&(w, "retention")), "{fields:?}");
    assert_eq!(dry.current.unwrap().revision, Some(0));
    // nothing was stored by any of it
    let after = client.get_configuration(pb::GetRequest { revision: None }).await.unwrap().into_inner();
    assert_eq!(after, base);
    assert!(gateway.state().cortex_config(Target::Active).await.unwrap().is_none());
    // a dry run of a reset shows the default
    let dry = client
        .dry_run(pb::DryRunRequest {
            target: pb::Target::Active.into(),
            action: pb::Action::Reset.into(),
            spec: None,
            revision: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dry.modified.unwrap().mode, i32::from(pb::DeploymentMode::AllInOne));
    let e = client
        .dry_run(pb::DryRunRequest { target: 0, action: pb::Action::Reset.into(), spec: None, revision: None })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // presets: both, with the HA note
    let p = client.list_presets(()).await.unwrap().into_inner().items;
    assert_eq!(p.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["all-in-one", "highly-available"]);
    assert!(p[1].notes.iter().any(|n| n.contains("filesystem storage cannot be used in HA mode")));
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_uninstall_and_the_upstream_state_drive_node_enablement() {
    let Env { gateway, driver, mut client, _dir } = env().await;
    let id = ClusterId::new("c1").unwrap();
    let st = gateway.state();
    st.create_cluster(&Cluster::new(id.clone())).await.unwrap();
    st.update_cluster(&id, |c| c.install(CapabilityName::metrics(), now())).await.unwrap();
    // not installed: the node is disabled, saying why
    upstream_becomes(&gateway, UpstreamState::NotInstalled).await;
    let d = st.desired(&id).await.unwrap();
    assert_eq!((d.enabled, d.disabled_reasons.clone()), (false, vec![DisabledReason::UpstreamNotInstalled]));

    client.install(()).await.unwrap();
    let applied = driver.applied.lock().unwrap().last().cloned().unwrap();
    assert!(applied.enabled, "install applies the active configuration, enabled");
    upstream_becomes(&gateway, UpstreamState::Installed).await;
    assert!(st.desired(&id).await.unwrap().enabled);
    let s = client.status(()).await.unwrap().into_inner();
    assert_eq!(s.install_state, i32::from(pb::InstallState::Installed));
    assert_eq!(s.app_state, i32::from(pb::ApplicationState::Running));
    assert_eq!(s.config_state, i32::from(pb::ConfigurationState::Configured));
    assert_eq!((s.workloads[0].ready, s.version.as_str()), (true, "v1.18.1"));

    // failing workloads (grace 0 here) disable the node with its own reason; recovery re-enables
    *driver.app.lock().unwrap() = Some(AppState::Failed);
    upstream_becomes(&gateway, UpstreamState::Failing).await;
    assert_eq!(st.desired(&id).await.unwrap().disabled_reasons, vec![DisabledReason::UpstreamUnavailable]);
    *driver.app.lock().unwrap() = None;
    upstream_becomes(&gateway, UpstreamState::Installed).await;

    // uninstall is refused while a cluster has the capability, naming how many
    let e = client.uninstall(()).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("1 cluster(s)") && e.message().contains("c1"), "{}", e.message());
    assert!(*driver.installed.lock().unwrap());
    st.update_cluster(&id, |c| {
        c.mark_for_uninstall(&CapabilityName::metrics(), now())?;
        c.remove(&CapabilityName::metrics()).map(|_| ())
    })
    .await
    .unwrap();
    client.uninstall(()).await.unwrap();
    assert!(!*driver.installed.lock().unwrap());
    upstream_becomes(&gateway, UpstreamState::NotInstalled).await;
    let (active, _) = st.cortex_active().await.unwrap();
    assert!(!active.enabled);
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_cortexops_on_the_management_port() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let Env { gateway, _dir, .. } = env().await;
    let addr = gateway.addresses().unwrap().management;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut c = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = c.server_reflection_info(futures::stream::iter([req])).await.unwrap().into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list")
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"opni.metrics.cortexops.v1.CortexOps".to_owned()), "{names:?}");
    gateway.shutdown().await;
}
