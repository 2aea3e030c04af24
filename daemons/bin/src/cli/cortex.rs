//! `opni-metrics cortex …`: the CortexOps API from the command line.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use opni_metrics_core::cluster::{ClusterConfig, preset};
use opni_metrics_proto::convert::cluster_config_unvalidated;
use opni_metrics_proto::cortexops::v1 as pb;
use opni_metrics_proto::cortexops::v1::cortex_ops_client::CortexOpsClient;

use super::{Authed, CortexCmd, CortexConfigCmd, Output, print_as, status_err, table};

type Client = CortexOpsClient<Authed>;

fn target(default: bool) -> pb::Target {
    if default { pb::Target::Default } else { pb::Target::Active }
}

/// A configuration from a YAML/JSON file (the document `get -o yaml` prints) or a preset.
fn load(file: Option<&Path>, preset_id: Option<&str>) -> Result<ClusterConfig> {
    match (file, preset_id) {
        (Some(f), _) => {
            let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            // `get -o yaml|json` wraps the configuration with its revision; a bare one is fine too
            #[derive(serde::Deserialize)]
            #[serde(untagged)]
            enum Doc {
                Wrapped {
                    #[allow(dead_code)]
                    revision: u64,
                    config: ClusterConfig,
                },
                Bare(ClusterConfig),
            }
            let doc: Doc = serde_saphyr::from_str(&text).map_err(|e| anyhow!("{}: {e}", f.display()))?;
            Ok(match doc {
                Doc::Wrapped { config, .. } | Doc::Bare(config) => config,
            })
        }
        (None, Some(id)) => preset(id).map(|p| p.config).ok_or_else(|| {
            let known: Vec<_> = opni_metrics_core::cluster::presets().into_iter().map(|p| p.id).collect();
            anyhow!("unknown preset {id:?}; the presets are {}", known.join(", "))
        }),
        (None, None) => bail!("give a configuration file (-f) or a preset (--preset)"),
    }
}

fn wire(config: ClusterConfig, revision: Option<u64>) -> pb::CapabilityBackendConfigSpec {
    let mut w = pb::CapabilityBackendConfigSpec::from(config);
    w.revision = revision;
    w
}

fn core(w: pb::CapabilityBackendConfigSpec) -> Result<(ClusterConfig, u64)> {
    let revision = w.revision.unwrap_or(0);
    let c = cluster_config_unvalidated(w).map_err(|e| anyhow!("the gateway sent an invalid configuration: {e}"))?;
    Ok((c, revision))
}

fn show_config(config: &ClusterConfig, revision: u64, out: Output) -> Result<()> {
    let doc = serde_json::json!({ "revision": revision, "config": config });
    match out {
        Output::Table => {
            println!("# revision {revision}");
            print!("{}", serde_saphyr::to_string(config)?);
            Ok(())
        }
        _ => print_as(out, &doc),
    }
}

fn state_name<T: std::fmt::Debug>(v: Result<T, prost::UnknownEnumValue>) -> String {
    v.map_or_else(|_| "unknown".to_owned(), |s| format!("{s:?}").to_lowercase())
}

fn show_status(s: &pb::InstallStatus, out: Output) -> Result<()> {
    let config = state_name(pb::ConfigurationState::try_from(s.config_state));
    let install = state_name(pb::InstallState::try_from(s.install_state));
    let app = state_name(pb::ApplicationState::try_from(s.app_state));
    match out {
        Output::Table => {
            table(&[
                vec!["configuration".into(), config],
                vec!["install".into(), install],
                vec!["application".into(), app],
                vec!["version".into(), if s.version.is_empty() { "-".into() } else { s.version.clone() }],
            ]);
            if !s.workloads.is_empty() {
                println!();
                let mut rows = vec![vec!["WORKLOAD".into(), "READY".into(), "MESSAGE".into()]];
                for w in &s.workloads {
                    rows.push(vec![
                        w.name.clone(),
                        format!("{}/{}", w.ready_replicas, w.desired_replicas),
                        w.message.clone(),
                    ]);
                }
                table(&rows);
            }
            for w in &s.warnings {
                println!("warning: {w}");
            }
            Ok(())
        }
        _ => print_as(
            out,
            &serde_json::json!({
                "configuration": config, "install": install, "application": app, "version": s.version,
                "workloads": s.workloads.iter().map(|w| serde_json::json!({
                    "name": w.name, "ready": w.ready, "readyReplicas": w.ready_replicas,
                    "desiredReplicas": w.desired_replicas, "message": w.message,
                })).collect::<Vec<_>>(),
                "warnings": s.warnings, "metadata": s.metadata,
            }),
        ),
    }
}

/// Polls `Status` until `done` holds, printing each change of state (the progress), for at
/// most `timeout`.
async fn wait(c: &mut Client, what: &str, timeout: Duration, done: fn(&pb::InstallStatus) -> bool) -> Result<()> {
    let start = Instant::now();
    let mut last = String::new();
    loop {
        let s = c.status(()).await.map_err(status_err)?.into_inner();
        let ready = s.workloads.iter().filter(|w| w.ready).count();
        let line = format!(
            "{} / {} ({ready}/{} workloads ready)",
            state_name(pb::InstallState::try_from(s.install_state)),
            state_name(pb::ApplicationState::try_from(s.app_state)),
            s.workloads.len()
        );
        if line != last {
            eprintln!("[{:>4}s] {line}", start.elapsed().as_secs());
            last = line;
        }
        if done(&s) {
            eprintln!("{what} done");
            return Ok(());
        }
        if start.elapsed() >= timeout {
            bail!("{what} did not finish within {timeout:?} (last state: {last}); it goes on in the background");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Runs a `cortex` command.
pub(super) async fn run(mut c: Client, cmd: CortexCmd, out: Output) -> Result<()> {
    match cmd {
        CortexCmd::Config(cfg) => config(c, cfg, out).await,
        CortexCmd::Status => show_status(&c.status(()).await.map_err(status_err)?.into_inner(), out),
        CortexCmd::Install { no_wait, timeout } => {
            let timeout = super::duration("timeout", &timeout)?;
            c.install(()).await.map_err(status_err)?;
            eprintln!("install requested");
            if no_wait {
                return Ok(());
            }
            wait(&mut c, "install", timeout, |s| {
                s.install_state == i32::from(pb::InstallState::Installed)
                    && s.app_state == i32::from(pb::ApplicationState::Running)
            })
            .await
        }
        CortexCmd::Uninstall { no_wait, timeout } => {
            let timeout = super::duration("timeout", &timeout)?;
            c.uninstall(()).await.map_err(status_err)?;
            eprintln!("uninstall requested");
            if no_wait {
                return Ok(());
            }
            wait(&mut c, "uninstall", timeout, |s| s.install_state == i32::from(pb::InstallState::NotInstalled)).await
        }
    }
}

async fn config(mut c: Client, cmd: CortexConfigCmd, out: Output) -> Result<()> {
    match cmd {
        CortexConfigCmd::Get { default, revision } => {
            let req = pb::GetRequest { revision };
            let w = if default { c.get_default_configuration(req).await } else { c.get_configuration(req).await }
                .map_err(status_err)?
                .into_inner();
            let (config, rev) = core(w)?;
            show_config(&config, rev, out)
        }
        CortexConfigCmd::Set { default, file, preset, revision } => {
            let spec = wire(load(file.as_deref(), preset.as_deref())?, revision);
            let req = pb::SetRequest { spec: Some(spec) };
            let r = if default { c.set_default_configuration(req).await } else { c.set_configuration(req).await }
                .map_err(status_err)?
                .into_inner();
            match out {
                Output::Table if r.changed => println!("stored at revision {}", r.revision),
                Output::Table => println!("unchanged (revision {})", r.revision),
                _ => print_as(out, &serde_json::json!({"revision": r.revision, "changed": r.changed}))?,
            }
            Ok(())
        }
        CortexConfigCmd::Reset { default, revision } => {
            let req = pb::ResetRequest { revision };
            if default { c.reset_default_configuration(req).await } else { c.reset_configuration(req).await }
                .map_err(status_err)?;
            eprintln!("reset");
            Ok(())
        }
        CortexConfigCmd::History { default, values } => {
            let req = pb::ConfigurationHistoryRequest { target: target(default).into(), include_values: values };
            let entries = c.configuration_history(req).await.map_err(status_err)?.into_inner().entries;
            let mut docs = Vec::new();
            for e in entries {
                let at = e.timestamp.map(|t| t.seconds).unwrap_or_default();
                let config = match e.spec {
                    Some(s) => Some(core(s)?.0),
                    None => None,
                };
                docs.push((e.revision, at, e.reset, config));
            }
            match out {
                Output::Table => {
                    let mut rows = vec![vec!["REVISION".into(), "WRITTEN (unix s)".into(), "KIND".into()]];
                    for (rev, at, reset, _) in &docs {
                        rows.push(vec![rev.to_string(), at.to_string(), if *reset { "reset" } else { "set" }.into()]);
                    }
                    table(&rows);
                    for (rev, _, _, config) in &docs {
                        if let Some(cfg) = config {
                            println!("\n# revision {rev}\n{}", serde_saphyr::to_string(cfg)?);
                        }
                    }
                    Ok(())
                }
                _ => print_as(
                    out,
                    &docs
                        .iter()
                        .map(|(rev, at, reset, config)| {
                            serde_json::json!({"revision": rev, "writtenAt": at, "reset": reset, "config": config})
                        })
                        .collect::<Vec<_>>(),
                ),
            }
        }
        CortexConfigCmd::DryRun { default, file, preset, reset, revision } => {
            let req = if reset {
                pb::DryRunRequest {
                    target: target(default).into(),
                    action: pb::Action::Reset.into(),
                    spec: None,
                    revision,
                }
            } else {
                pb::DryRunRequest {
                    target: target(default).into(),
                    action: pb::Action::Set.into(),
                    spec: Some(wire(load(file.as_deref(), preset.as_deref())?, revision)),
                    revision: None,
                }
            };
            let r = c.dry_run(req).await.map_err(status_err)?.into_inner();
            let findings: Vec<_> = r
                .validation_errors
                .iter()
                .map(|v| {
                    let sev = state_name(pb::Severity::try_from(v.severity));
                    (sev, v.field.clone(), v.message.clone())
                })
                .collect();
            let modified = r.modified.map(core).transpose()?.map(|(c, _)| c);
            match out {
                Output::Table => {
                    if let Some(m) = &modified {
                        println!("# would store\n{}", serde_saphyr::to_string(m)?);
                    }
                    if findings.is_empty() {
                        println!("no errors, no warnings");
                    }
                    for (sev, field, msg) in &findings {
                        println!("{sev}: {}{msg}", if field.is_empty() { String::new() } else { format!("{field}: ") });
                    }
                }
                _ => print_as(
                    out,
                    &serde_json::json!({
                        "modified": modified,
                        "findings": findings.iter().map(|(s, f, m)| serde_json::json!({"severity": s, "field": f, "message": m})).collect::<Vec<_>>(),
                    }),
                )?,
            }
            if findings.iter().any(|(s, _, _)| s == "error") {
                bail!("the change would be refused");
            }
            Ok(())
        }
        CortexConfigCmd::Presets => {
            let items = c.list_presets(()).await.map_err(status_err)?.into_inner().items;
            match out {
                Output::Table => {
                    for p in items {
                        println!("{} — {}\n  {}", p.id, p.display_name, p.description);
                        for n in p.notes {
                            println!("  note: {n}");
                        }
                    }
                    Ok(())
                }
                _ => {
                    let mut docs = Vec::new();
                    for p in items {
                        let config = p.spec.map(core).transpose()?.map(|(c, _)| c);
                        docs.push(serde_json::json!({
                            "id": p.id, "displayName": p.display_name, "description": p.description,
                            "notes": p.notes, "config": config,
                        }));
                    }
                    print_as(out, &docs)
                }
            }
        }
    }
}
