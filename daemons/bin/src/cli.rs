//! The `opni-metrics` command line: bootstrap tokens, clusters, the capability lifecycle,
//! node configuration, the upstream Cortex, access control and queries, against the gateway's
//! management listener.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use opni_metrics_core::registry::Cluster;
use opni_metrics_core::spec::MetricsCapabilitySpec;
use opni_metrics_proto::bootstrap::v1::bootstrap_client::BootstrapClient;
use opni_metrics_proto::bootstrap::v1::{CreateTokenRequest, RevokeTokenRequest};
use opni_metrics_proto::capability::v1::capability_client::CapabilityClient;
use opni_metrics_proto::capability::v1::{
    CancelUninstallRequest, InstallRequest, InstallStatus, StatusRequest, TaskState, UninstallRequest,
    UninstallStatusRequest,
};
use opni_metrics_proto::clusters::v1::clusters_client::ClustersClient;
use opni_metrics_proto::clusters::v1::{
    CreateClusterRequest, DeleteClusterRequest, EditLabelsRequest, GetClusterRequest, ListClustersRequest,
};
use opni_metrics_proto::convert::wire_std_duration;
use opni_metrics_proto::cortexops::v1::cortex_ops_client::CortexOpsClient;
use opni_metrics_proto::nodeconfig::v1::node_configuration_client::NodeConfigurationClient;
use opni_metrics_proto::nodeconfig::v1::{
    GetConfigurationRequest, GetDefaultConfigurationRequest, ResetConfigurationRequest,
    ResetDefaultConfigurationRequest, SetConfigurationRequest, SetDefaultConfigurationRequest,
};

mod admin;
mod args;
mod connect;
mod cortex;
mod keys;
mod query;
mod rbac;
mod series;
mod when;
pub use args::{
    AdminCmd, Bindings, CapabilityCmd, Cli, Clusters, Command, ConfigMode, CortexCmd, CortexConfigCmd, KeysCmd,
    NodeConfig, Output, QueryArgs, RbacCmd, Roles, RuleType, RulesCmd, Tokens,
};
pub(crate) use connect::Authed;
pub use connect::Bearer;

fn labels(kv: &[String]) -> Result<BTreeMap<String, String>> {
    kv.iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| anyhow!("label {s:?}: expected key=value"))
        })
        .collect()
}

pub(crate) fn duration(field: &str, s: &str) -> Result<Duration> {
    Ok(opni_metrics_core::duration::PromDuration::parse(s).with_context(|| format!("--{field}"))?.as_duration())
}

/// Prints `v` as JSON or YAML (`-o json|yaml`).
pub(crate) fn print_as<T: serde::Serialize>(out: Output, v: &T) -> Result<()> {
    match out {
        Output::Yaml => {
            // long one-line strings (API keys, help texts) stay plain scalars, easy to copy
            let mut options = serde_saphyr::SerializerOptions::default();
            options.folded_wrap_chars = usize::MAX;
            print!("{}", serde_saphyr::to_string_with_options(v, options)?);
        }
        _ => println!("{}", serde_json::to_string_pretty(v)?),
    }
    Ok(())
}

/// Prints aligned columns; widths count characters, not bytes.
pub(crate) fn table(rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|i| rows.iter().map(|r| r.get(i).map_or(0, |c| c.chars().count())).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
}

pub(crate) fn status_err(s: tonic::Status) -> anyhow::Error {
    anyhow!("{}: {}", format!("{:?}", s.code()).to_lowercase(), s.message())
}

/// Runs the CLI.
///
/// # Errors
/// Anything that failed, as one sentence.
pub async fn run(cli: Cli) -> Result<()> {
    let conn = connect::Connector::new(&cli)?;
    let out = cli.output;
    match cli.command {
        Command::Query(q) => query::run(&conn, q, out).await,
        Command::Admin(a) => admin::run(&conn, a, out).await,
        Command::Rules(r) => admin::run(&conn, AdminCmd::Rules(r), out).await,
        Command::Rbac(r) => rbac::run(&conn, r, out).await,
        Command::Keys(k) => keys::run(&conn, k, out).await,
        Command::Tokens(t) => tokens(conn.client(BootstrapClient::with_interceptor).await?, t, out).await,
        Command::Clusters(c) => clusters(conn.client(ClustersClient::with_interceptor).await?, c, out).await,
        Command::Capability(c) => capability(conn.client(CapabilityClient::with_interceptor).await?, c, out).await,
        Command::NodeConfig(n) => {
            node_config(conn.client(NodeConfigurationClient::with_interceptor).await?, n, out).await
        }
        Command::Cortex(c) => cortex::run(conn.client(CortexOpsClient::with_interceptor).await?, c, out).await,
    }
}

async fn tokens(mut c: BootstrapClient<Authed>, cmd: Tokens, out: Output) -> Result<()> {
    let ts = |t: Option<prost_types::Timestamp>| t.map(|t| t.seconds.to_string()).unwrap_or_default();
    match cmd {
        Tokens::Create { ttl, max_uses, labels: l } => {
            let req = CreateTokenRequest {
                ttl: Some(wire_std_duration(duration("ttl", &ttl)?)),
                max_uses,
                labels: labels(&l)?.into_iter().collect(),
            };
            let t = c.create_token(req).await.map_err(status_err)?.into_inner();
            match out {
                Output::Json | Output::Yaml => print_as(
                    out,
                    &serde_json::json!({"id": t.id, "token": t.token, "expiresAt": ts(t.expires_at), "maxUses": t.max_uses, "caPin": t.ca_pin}),
                ),
                Output::Table => {
                    println!("{}", t.token);
                    eprintln!(
                        "token {} expires in {ttl}, {} use(s); it is shown only now",
                        t.id,
                        if t.max_uses == 0 { "unlimited".into() } else { t.max_uses.to_string() }
                    );
                    if !t.ca_pin.is_empty() {
                        eprintln!("agents can verify the gateway with bootstrap.caPin: {}", t.ca_pin);
                    }
                    Ok(())
                }
            }
        }
        Tokens::List => {
            let items = c.list_tokens(()).await.map_err(status_err)?.into_inner().items;
            match out {
                Output::Json | Output::Yaml => print_as(out, &items.iter().map(|t| serde_json::json!({"id": t.id, "expiresAt": ts(t.expires_at), "maxUses": t.max_uses, "uses": t.uses, "labels": t.labels})).collect::<Vec<_>>()),
                Output::Table => {
                    let mut rows = vec![vec!["ID".into(), "EXPIRES (unix s)".into(), "USES".into(), "LABELS".into()]];
                    for t in items {
                        rows.push(vec![t.id, ts(t.expires_at), format!("{}/{}", t.uses, if t.max_uses == 0 { "∞".into() } else { t.max_uses.to_string() }), fmt_labels(&t.labels.into_iter().collect())]);
                    }
                    table(&rows);
                    Ok(())
                }
            }
        }
        Tokens::Revoke { id } => {
            c.revoke_token(RevokeTokenRequest { id: id.clone() }).await.map_err(status_err)?;
            eprintln!("token {id} revoked");
            Ok(())
        }
    }
}

fn fmt_labels(l: &BTreeMap<String, String>) -> String {
    l.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

fn print_clusters(list: Vec<Cluster>, out: Output) -> Result<()> {
    match out {
        Output::Json | Output::Yaml => print_as(out, &list),
        Output::Table => {
            let mut rows = vec![vec!["CLUSTER".into(), "LABELS".into(), "CAPABILITIES".into()]];
            for c in list {
                let caps = c
                    .capabilities
                    .iter()
                    .map(
                        |e| if e.is_uninstalling() { format!("{} (uninstalling)", e.name) } else { e.name.to_string() },
                    )
                    .collect::<Vec<_>>()
                    .join(",");
                rows.push(vec![c.id.to_string(), fmt_labels(&c.labels), caps]);
            }
            table(&rows);
            Ok(())
        }
    }
}

async fn clusters(mut c: ClustersClient<Authed>, cmd: Clusters, out: Output) -> Result<()> {
    let conv = |w| {
        Cluster::try_from(w)
            .map_err(|e: opni_metrics_proto::ConvertError| anyhow!("gateway sent an invalid cluster: {e}"))
    };
    match cmd {
        Clusters::List { labels: l } => {
            let selector =
                opni_metrics_core::spec::LabelSelector { match_labels: labels(&l)?, match_expressions: Vec::new() };
            let items = c
                .list(ListClustersRequest { selector: Some(selector.into()) })
                .await
                .map_err(status_err)?
                .into_inner()
                .items;
            print_clusters(items.into_iter().map(conv).collect::<Result<_>>()?, out)
        }
        Clusters::Get { id } => {
            print_clusters(vec![conv(c.get(GetClusterRequest { id }).await.map_err(status_err)?.into_inner())?], out)
        }
        Clusters::Create { id, labels: l } => {
            let r = c
                .create(CreateClusterRequest { id, labels: labels(&l)?.into_iter().collect() })
                .await
                .map_err(status_err)?
                .into_inner();
            print_clusters(vec![conv(r)?], out)
        }
        Clusters::Label { id, labels: l } => {
            let r = c
                .edit_labels(EditLabelsRequest { id, labels: labels(&l)?.into_iter().collect() })
                .await
                .map_err(status_err)?
                .into_inner();
            print_clusters(vec![conv(r)?], out)
        }
        Clusters::Delete { id } => {
            c.delete(DeleteClusterRequest { id: id.clone() }).await.map_err(status_err)?;
            eprintln!("cluster {id} deleted");
            Ok(())
        }
    }
}

async fn capability(mut c: CapabilityClient<Authed>, cmd: CapabilityCmd, out: Output) -> Result<()> {
    match cmd {
        CapabilityCmd::Install { cluster, ignore_warnings } => {
            let r = c.install(InstallRequest { cluster, ignore_warnings }).await.map_err(status_err)?.into_inner();
            match InstallStatus::try_from(r.status).unwrap_or(InstallStatus::Unspecified) {
                InstallStatus::Success | InstallStatus::Warning => {
                    println!("{}", r.message);
                    Ok(())
                }
                _ => bail!("{}", r.message),
            }
        }
        CapabilityCmd::Status { cluster } => {
            let s = c.status(StatusRequest { cluster }).await.map_err(status_err)?.into_inner();
            let conds: Vec<String> = s
                .conditions
                .iter()
                .map(|c| {
                    format!(
                        "{}={}{}",
                        kind_name(c.kind),
                        status_name(c.status),
                        if c.message.is_empty() { String::new() } else { format!(" ({})", c.message) }
                    )
                })
                .collect();
            let in_sync = !s.applied_digest.is_empty() && s.applied_digest == s.desired_digest;
            let disabled: Vec<&str> = s
                .disabled_reasons
                .iter()
                .filter_map(|r| opni_metrics_proto::common::v1::DisabledReason::try_from(*r).ok())
                .filter_map(opni_metrics_proto::convert::disabled_reason)
                .map(|r| r.message())
                .collect();
            match out {
                Output::Json | Output::Yaml => print_as(
                    out,
                    &serde_json::json!({
                        "enabled": s.enabled, "connected": s.connected, "inSync": in_sync,
                        "appliedDigest": s.applied_digest, "desiredDigest": s.desired_digest,
                        "lastSync": s.last_sync.map(|t| t.seconds), "conditions": conds, "disabledReasons": disabled,
                        "rules": s.rules.as_ref().map(|r| serde_json::json!({
                            "synced": r.synced, "refused": r.refused, "invalid": r.invalid,
                            "lastSync": r.last_sync.map(|t| t.seconds), "digest": r.digest,
                            "problems": r.problems.iter().map(|p| serde_json::json!({
                                "kind": p.kind, "group": p.name, "source": p.source, "message": p.message,
                            })).collect::<Vec<_>>(),
                        })),
                    }),
                ),
                Output::Table => {
                    table(&[
                        vec![
                            "enabled".into(),
                            if disabled.is_empty() {
                                s.enabled.to_string()
                            } else {
                                format!("{} ({})", s.enabled, disabled.join("; "))
                            },
                        ],
                        vec!["connected".into(), s.connected.to_string()],
                        vec!["in sync".into(), in_sync.to_string()],
                        vec!["desired".into(), s.desired_digest.chars().take(12).collect()],
                        vec!["applied".into(), s.applied_digest.chars().take(12).collect()],
                        vec!["conditions".into(), conds.join("; ")],
                    ]);
                    if let Some(r) = &s.rules {
                        println!("rules: {} synced, {} refused, {} invalid", r.synced, r.refused, r.invalid);
                        for p in &r.problems {
                            let group = if p.name.is_empty() { String::new() } else { format!("{} ", p.name) };
                            println!("  {} {group}({}): {}", p.kind, p.source, p.message);
                        }
                    }
                    Ok(())
                }
            }
        }
        CapabilityCmd::Uninstall { cluster, delete_data, initial_delay, no_wait } => {
            let req = UninstallRequest {
                cluster: cluster.clone(),
                delete_stored_data: delete_data,
                initial_delay: Some(wire_std_duration(duration("initial-delay", &initial_delay)?)),
            };
            c.uninstall(req).await.map_err(status_err)?;
            if no_wait {
                eprintln!("uninstall of {cluster} started");
                return Ok(());
            }
            let mut seen = 0usize;
            loop {
                let t = c
                    .uninstall_status(UninstallStatusRequest { cluster: cluster.clone() })
                    .await
                    .map_err(status_err)?
                    .into_inner();
                for l in t.logs.iter().skip(seen) {
                    let p = t.progress.unwrap_or_default();
                    eprintln!("[{}/{}] {}", p.current, p.total, l.msg);
                }
                seen = t.logs.len();
                match TaskState::try_from(t.state).unwrap_or(TaskState::Unspecified) {
                    TaskState::Completed => {
                        println!("uninstall of {cluster} completed");
                        return Ok(());
                    }
                    TaskState::Failed => bail!("uninstall of {cluster} failed; the capability was restored"),
                    TaskState::Canceled => bail!("uninstall of {cluster} was canceled; the capability was restored"),
                    _ => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        }
        CapabilityCmd::CancelUninstall { cluster } => {
            c.cancel_uninstall(CancelUninstallRequest { cluster: cluster.clone() }).await.map_err(status_err)?;
            println!("uninstall of {cluster} canceled");
            Ok(())
        }
    }
}

fn kind_name(k: i32) -> String {
    opni_metrics_proto::common::v1::ConditionKind::try_from(k)
        .map(|k| k.as_str_name().trim_start_matches("CONDITION_KIND_").to_lowercase())
        .unwrap_or_else(|_| k.to_string())
}

fn status_name(k: i32) -> String {
    opni_metrics_proto::common::v1::ConditionStatus::try_from(k)
        .map(|k| k.as_str_name().trim_start_matches("CONDITION_STATUS_").to_lowercase())
        .unwrap_or_else(|_| k.to_string())
}

fn read_spec(path: &PathBuf) -> Result<MetricsCapabilitySpec> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let spec: MetricsCapabilitySpec = serde_saphyr::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    spec.validate().map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(spec)
}

async fn node_config(mut c: NodeConfigurationClient<Authed>, cmd: NodeConfig, out: Output) -> Result<()> {
    let show = |spec: Option<opni_metrics_proto::common::v1::MetricsCapabilitySpec>, revision: u64| -> Result<()> {
        let spec = MetricsCapabilitySpec::try_from(spec.ok_or_else(|| anyhow!("gateway sent no spec"))?)
            .map_err(|e| anyhow!("{e}"))?;
        match out {
            Output::Json | Output::Yaml => print_as(out, &serde_json::json!({"revision": revision, "spec": spec})),
            Output::Table => {
                println!("# revision {revision}");
                println!("{}", serde_json::to_string_pretty(&spec)?);
                Ok(())
            }
        }
    };
    match cmd {
        NodeConfig::Get { cluster: None } => {
            let r =
                c.get_default_configuration(GetDefaultConfigurationRequest {}).await.map_err(status_err)?.into_inner();
            show(r.spec, r.revision)
        }
        NodeConfig::Get { cluster: Some(cluster) } => {
            let r = c.get_configuration(GetConfigurationRequest { cluster }).await.map_err(status_err)?.into_inner();
            show(r.spec, r.revision)
        }
        NodeConfig::Set { cluster, file, revision, dry_run } => {
            let spec = Some(read_spec(&file)?.into());
            let r = match cluster {
                None => c.set_default_configuration(SetDefaultConfigurationRequest { spec, revision, dry_run }).await,
                Some(cluster) => {
                    c.set_configuration(SetConfigurationRequest { cluster, spec, revision, dry_run }).await
                }
            }
            .map_err(status_err)?
            .into_inner();
            eprintln!("{}{}", if dry_run { "dry run: " } else { "" }, if r.changed { "changed" } else { "unchanged" });
            show(r.spec, r.revision)
        }
        NodeConfig::Reset { cluster } => {
            match cluster {
                None => c
                    .reset_default_configuration(ResetDefaultConfigurationRequest { revision: None })
                    .await
                    .map_err(status_err)?,
                Some(cluster) => c
                    .reset_configuration(ResetConfigurationRequest { cluster, revision: None })
                    .await
                    .map_err(status_err)?,
            };
            eprintln!("reset");
            Ok(())
        }
    }
}
