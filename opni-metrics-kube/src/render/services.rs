//! Services and PodDisruptionBudgets of the Cortex workloads.
//!
//! - One ClusterIP Service per workload (`<mc>-cortex` in all-in-one mode,
//!   `<mc>-cortex-<target>` otherwise) with the `http` and `grpc` ports.
//! - A headless `<name>-headless` Service per StatefulSet (its `serviceName`), and for the
//!   query-frontend: queriers must connect to every frontend pod, which only a headless Service's
//!   DNS lists.
//! - The headless `<mc>-cortex-gossip` Service selecting every ring member, ready or not, for
//!   memberlist to join through.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{App, Ctx, GOSSIP_LABEL, INSTANCE_LABEL, NAME_LABEL, desired};
use super::names::Names;
use super::targets::{GOSSIP_PORT, GRPC_PORT, HTTP_PORT, Plan, Target};
use super::{DesiredObject, ObjectKind, RenderError};

/// What a Service is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SvcKind {
    /// The ClusterIP Service of a workload.
    ClusterIp(Target),
    /// The headless Service of a workload.
    Headless(Target),
    /// The memberlist gossip Service.
    Gossip,
}

/// One Service to render.
#[derive(Debug, Clone)]
pub(crate) struct SvcSpec {
    pub(crate) name: String,
    pub(crate) kind: SvcKind,
}

impl SvcSpec {
    pub(crate) fn is_headless(&self) -> bool {
        !matches!(self.kind, SvcKind::ClusterIp(_))
    }
}

/// The Services of `plan`; the serving certificate names every one of them.
pub(crate) fn specs(names: &Names<'_>, plan: &Plan<'_>) -> Vec<SvcSpec> {
    let mut out = Vec::new();
    for w in &plan.workloads {
        out.push(SvcSpec { name: names.service(w.target), kind: SvcKind::ClusterIp(w.target) });
        if w.target.is_stateful() || w.target == Target::QueryFrontend {
            out.push(SvcSpec { name: names.headless(w.target), kind: SvcKind::Headless(w.target) });
        }
    }
    out.push(SvcSpec { name: names.gossip(), kind: SvcKind::Gossip });
    out
}

fn port(name: &str, port: u16) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port: i32::from(port),
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

/// The Services of [`specs`].
pub(crate) fn render(ctx: &Ctx<'_>, specs: &[SvcSpec]) -> Result<Vec<DesiredObject>, RenderError> {
    specs
        .iter()
        .map(|s| {
            let workload_ports = || Some(vec![port("http", HTTP_PORT), port("grpc", GRPC_PORT)]);
            let (labels, spec) = match s.kind {
                SvcKind::ClusterIp(t) => (
                    ctx.labels(App::Cortex, Some(t.as_str())),
                    ServiceSpec {
                        type_: Some("ClusterIP".to_owned()),
                        selector: Some(ctx.selector(t)),
                        ports: workload_ports(),
                        ..ServiceSpec::default()
                    },
                ),
                SvcKind::Headless(t) => (
                    ctx.labels(App::Cortex, Some(t.as_str())),
                    ServiceSpec {
                        cluster_ip: Some("None".to_owned()),
                        selector: Some(ctx.selector(t)),
                        ports: workload_ports(),
                        ..ServiceSpec::default()
                    },
                ),
                SvcKind::Gossip => (
                    ctx.labels(App::Cortex, None),
                    ServiceSpec {
                        cluster_ip: Some("None".to_owned()),
                        // Members must find each other before they are ready: readiness
                        // depends on the ring they are joining.
                        publish_not_ready_addresses: Some(true),
                        selector: Some(
                            [
                                (NAME_LABEL.to_owned(), "cortex".to_owned()),
                                (INSTANCE_LABEL.to_owned(), ctx.names.mc.to_owned()),
                                (GOSSIP_LABEL.to_owned(), "true".to_owned()),
                            ]
                            .into(),
                        ),
                        ports: Some(vec![port("gossip", GOSSIP_PORT)]),
                        ..ServiceSpec::default()
                    },
                ),
            };
            let svc = Service { metadata: ctx.meta(s.name.clone(), labels), spec: Some(spec), status: None };
            desired(ObjectKind::Service, &svc)
        })
        .collect()
}

/// In highly-available mode, a budget of one unavailable pod for every workload with more than
/// one replica (a single replica would block node drains forever).
pub(crate) fn disruption_budgets(ctx: &Ctx<'_>, plan: &Plan<'_>) -> Result<Vec<DesiredObject>, RenderError> {
    if !plan.is_ha() {
        return Ok(Vec::new());
    }
    plan.workloads
        .iter()
        .filter(|w| w.replicas > 1)
        .map(|w| {
            let pdb = PodDisruptionBudget {
                metadata: ctx.meta(ctx.names.workload(w.target), ctx.labels(App::Cortex, Some(w.target.as_str()))),
                spec: Some(PodDisruptionBudgetSpec {
                    max_unavailable: Some(IntOrString::Int(1)),
                    selector: Some(LabelSelector {
                        match_labels: Some(ctx.selector(w.target)),
                        match_expressions: None,
                    }),
                    ..PodDisruptionBudgetSpec::default()
                }),
                status: None,
            };
            desired(ObjectKind::PodDisruptionBudget, &pdb)
        })
        .collect()
}
