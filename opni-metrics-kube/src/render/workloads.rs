//! The Cortex Deployments and StatefulSets and their pods.
//!
//! Probes are `tcpSocket` on the HTTP port. Cortex's `/ready` would be the better signal
//! (ingesters report ring membership there), but the HTTP server requires a client certificate
//! (`RequireAndVerifyClientCert`) and kubelet's HTTP probes cannot present one; an `exec` probe
//! would need a TLS client in the image, which the Cortex image does not ship.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, KeyToPath,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext, TCPSocketAction,
    Volume, VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{Ctx, desired};
use super::names::{
    CONFIG_FILE, CONFIG_KEY, DATA_DIR, GCS_CREDENTIALS_DIR, GCS_CREDENTIALS_NAME, STORAGE_SECRET_ENV, TLS_DIR,
};
use super::storage::{self, Credential};
use super::targets::{GOSSIP_PORT, GRPC_PORT, HTTP_PORT, Plan, Planned};
use super::{CONFIG_DIGEST_ANNOTATION, DesiredObject, ObjectKind, RenderError, RenderOptions, WorkloadKind};

/// The uid and gid Cortex runs as (the Cortex image sets no non-root user of its own).
const CORTEX_UID: i64 = 10001;

/// The Deployments and StatefulSets of `plan`, their pods stamped with `digest`.
pub(crate) fn render(
    ctx: &Ctx<'_>,
    plan: &Plan<'_>,
    opts: &RenderOptions,
    digest: &str,
) -> Result<Vec<DesiredObject>, RenderError> {
    let image = ctx.spec.cortex.image.as_deref().unwrap_or(&opts.default_image);
    plan.workloads
        .iter()
        .map(|w| {
            let replicas = i32::try_from(w.replicas).map_err(|_| {
                RenderError::invalid(format!("spec.cortex.workloads.{}.replicas", w.target.as_str()), "too large")
            })?;
            let name = ctx.names.workload(w.target);
            let metadata = ctx.meta(name, ctx.target_labels(w.target));
            let selector = LabelSelector { match_labels: Some(ctx.selector(w.target)), match_expressions: None };
            let template = pod_template(ctx, plan, w, image, digest);
            match w.target.workload_kind() {
                WorkloadKind::Deployment => {
                    let spec = DeploymentSpec { replicas: Some(replicas), selector, template, ..Default::default() };
                    desired(ObjectKind::Deployment, &Deployment { metadata, spec: Some(spec), status: None })
                }
                WorkloadKind::StatefulSet => {
                    let spec = StatefulSetSpec {
                        replicas: Some(replicas),
                        selector,
                        service_name: Some(ctx.names.headless(w.target)),
                        pod_management_policy: w.target.parallel_pods().then(|| "Parallel".to_owned()),
                        template,
                        volume_claim_templates: Some(vec![data_claim(w)]),
                        ..Default::default()
                    };
                    desired(ObjectKind::StatefulSet, &StatefulSet { metadata, spec: Some(spec), status: None })
                }
            }
        })
        .collect()
}

/// The `data` volume claim of a StatefulSet. Kubernetes does not let a StatefulSet's claim
/// templates change: a new `storageSize` applies to new claims only once the StatefulSet is
/// recreated (existing claims must be resized directly).
fn data_claim(w: &Planned<'_>) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta { name: Some("data".to_owned()), ..ObjectMeta::default() },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), Quantity(w.storage_size().to_owned()))])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

fn tcp_probe(initial_delay: i32, period: i32, failures: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction { port: IntOrString::Int(i32::from(HTTP_PORT)), host: None }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn container_port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(port),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn secret_volume(name: &str, secret: String, items: Option<Vec<KeyToPath>>) -> Volume {
    Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource { secret_name: Some(secret), items, ..SecretVolumeSource::default() }),
        ..Volume::default()
    }
}

fn pod_template(ctx: &Ctx<'_>, plan: &Plan<'_>, w: &Planned<'_>, image: &str, digest: &str) -> PodTemplateSpec {
    let target = w.target;
    let mut args = vec![
        format!("-config.file={CONFIG_FILE}"),
        "-config.expand-env=true".to_owned(),
        format!("-target={}", target.as_str()),
    ];
    args.extend(w.extra_args().iter().cloned());

    let mut ports = vec![container_port("http", HTTP_PORT), container_port("grpc", GRPC_PORT)];
    if target.gossips() {
        ports.push(container_port("gossip", GOSSIP_PORT));
    }

    let mut mounts = vec![
        VolumeMount { sub_path: Some(CONFIG_KEY.to_owned()), ..mount("config", CONFIG_FILE, true) },
        mount("tls", TLS_DIR, true),
        mount("data", DATA_DIR, false),
    ];
    let mut volumes = vec![
        secret_volume("config", ctx.names.config_secret(), None),
        secret_volume("tls", ctx.names.serving_cert(), None),
    ];
    if !target.is_stateful() {
        volumes.push(Volume {
            name: "data".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
    }
    let mut env = Vec::new();
    match storage::credential(&ctx.spec.cortex.config.storage) {
        Credential::None => {}
        Credential::Env(r) => env.push(EnvVar {
            name: STORAGE_SECRET_ENV.to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector { name: r.name.clone(), key: r.key.clone(), optional: None }),
                ..EnvVarSource::default()
            }),
        }),
        Credential::GcsKeyFile(r) => {
            env.push(EnvVar {
                name: "GOOGLE_APPLICATION_CREDENTIALS".to_owned(),
                value: Some(format!("{GCS_CREDENTIALS_DIR}/{GCS_CREDENTIALS_NAME}")),
                value_from: None,
            });
            let items = vec![KeyToPath { key: r.key.clone(), path: GCS_CREDENTIALS_NAME.to_owned(), mode: None }];
            volumes.push(secret_volume("gcs-credentials", r.name.clone(), Some(items)));
            mounts.push(mount("gcs-credentials", GCS_CREDENTIALS_DIR, true));
        }
    }

    let container = Container {
        name: "cortex".to_owned(),
        image: Some(image.to_owned()),
        args: Some(args),
        ports: Some(ports),
        env: (!env.is_empty()).then_some(env),
        volume_mounts: Some(mounts),
        readiness_probe: Some(tcp_probe(5, 10, 3)),
        liveness_probe: Some(tcp_probe(30, 20, 6)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_owned()]), add: None }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };

    // Spread replicas over nodes where the scheduler can; never block scheduling on it.
    let affinity = plan.is_ha().then(|| Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                weight: 100,
                pod_affinity_term: PodAffinityTerm {
                    label_selector: Some(LabelSelector {
                        match_labels: Some(ctx.selector(target)),
                        match_expressions: None,
                    }),
                    topology_key: "kubernetes.io/hostname".to_owned(),
                    ..PodAffinityTerm::default()
                },
            }]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    });

    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(ctx.target_labels(target)),
            annotations: Some(BTreeMap::from([(CONFIG_DIGEST_ANNOTATION.to_owned(), digest.to_owned())])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            volumes: Some(volumes),
            affinity,
            // Cortex never calls the Kubernetes API.
            automount_service_account_token: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(CORTEX_UID),
                run_as_group: Some(CORTEX_UID),
                fs_group: Some(CORTEX_UID),
                seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".to_owned(), localhost_profile: None }),
                ..PodSecurityContext::default()
            }),
            ..PodSpec::default()
        }),
    }
}
