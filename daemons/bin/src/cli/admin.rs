//! `opni-metrics admin …`: the CortexAdmin API (statistics, status, metadata, rules,
//! configuration) from the command line.

use anyhow::{Result, anyhow};
use opni_metrics_proto::cortexadmin::v1 as pb;
use serde_json::{Value, json};

use super::connect::{Authed, Connector};
use super::series::{answer, data, name};
use super::{AdminCmd, ConfigMode, Output, print_as, status_err, table, when};

mod rules;

type Client = opni_metrics_proto::cortexadmin::v1::cortex_admin_client::CortexAdminClient<Authed>;

/// Parses YAML text into a JSON value, for `-o json`.
fn yaml_value(text: &str, what: &str) -> Result<Value> {
    serde_saphyr::from_str(text).map_err(|e| anyhow!("the {what} is not YAML: {e}"))
}

/// Prints a YAML document: as is for `-o table|yaml`, converted for `-o json`.
fn print_yaml(text: &str, what: &str, out: Output) -> Result<()> {
    match out {
        Output::Json => print_as(out, &yaml_value(text, what)?),
        _ => {
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
            Ok(())
        }
    }
}

/// Runs an `admin` command.
pub(super) async fn run(conn: &Connector, cmd: AdminCmd, out: Output) -> Result<()> {
    let mut c = conn.cortex_admin().await?;
    match cmd {
        AdminCmd::Rules(r) => rules::run(&mut c, r, out).await,
        AdminCmd::Stats => {
            let items = c.all_user_stats(()).await.map_err(status_err)?.into_inner().items;
            match out {
                Output::Table => {
                    let mut rows = vec![
                        ["CLUSTER", "INGESTION RATE (/s)", "SERIES", "API RATE (/s)", "RULE RATE (/s)"]
                            .map(String::from)
                            .to_vec(),
                    ];
                    for u in items {
                        rows.push(vec![
                            u.user_id,
                            format!("{:.2}", u.ingestion_rate),
                            u.num_series.to_string(),
                            format!("{:.2}", u.api_ingestion_rate),
                            format!("{:.2}", u.rule_ingestion_rate),
                        ]);
                    }
                    table(&rows);
                    Ok(())
                }
                _ => print_as(
                    out,
                    &items
                        .iter()
                        .map(|u| {
                            json!({"cluster": u.user_id, "ingestionRate": u.ingestion_rate, "series": u.num_series,
                                "apiIngestionRate": u.api_ingestion_rate, "ruleIngestionRate": u.rule_ingestion_rate})
                        })
                        .collect::<Vec<_>>(),
                ),
            }
        }
        AdminCmd::Status => {
            let s = c.get_cortex_status(()).await.map_err(status_err)?.into_inner();
            match out {
                Output::Table => {
                    let mut rows = vec![["COMPONENT", "READY", "MESSAGE"].map(String::from).to_vec()];
                    for p in s.components {
                        rows.push(vec![p.name, p.ready.to_string(), p.message]);
                    }
                    table(&rows);
                    Ok(())
                }
                _ => print_as(
                    out,
                    &json!({
                        "timestamp": s.timestamp.as_ref().map(when::show),
                        "components": s.components.iter().map(|p| json!({
                            "name": p.name, "ready": p.ready, "message": p.message,
                            "ring": serde_json::from_slice::<Value>(&p.ring).ok(),
                        })).collect::<Vec<_>>(),
                    }),
                ),
            }
        }
        AdminCmd::Flush => {
            c.flush_blocks(()).await.map_err(status_err)?;
            eprintln!("the ingesters flushed their blocks");
            Ok(())
        }
        AdminCmd::Series { cluster, job } => {
            let items = c
                .get_series_metrics(pb::SeriesRequest { tenant: cluster, job })
                .await
                .map_err(status_err)?
                .into_inner()
                .items;
            let metas: Vec<(String, pb::MetricMetadata)> =
                items.into_iter().map(|i| (i.series_name, i.metadata.unwrap_or_default())).collect();
            match out {
                Output::Table => {
                    let mut rows = vec![["METRIC", "TYPE", "HELP"].map(String::from).to_vec()];
                    rows.extend(metas.into_iter().map(|(n, m)| vec![n, m.r#type, m.help]));
                    table(&rows);
                    Ok(())
                }
                _ => print_as(
                    out,
                    &metas
                        .iter()
                        .map(|(n, m)| json!({"metric": n, "type": m.r#type, "help": m.help, "unit": m.unit}))
                        .collect::<Vec<_>>(),
                ),
            }
        }
        AdminCmd::Labels { cluster, metric, job } => {
            let req = pb::LabelRequest { tenant: cluster, job: job.unwrap_or_default(), metric_name: metric };
            let items = c.get_metric_label_sets(req).await.map_err(status_err)?.into_inner().items;
            match out {
                Output::Table => {
                    let mut rows = vec![["LABEL", "VALUES"].map(String::from).to_vec()];
                    rows.extend(items.into_iter().map(|l| vec![l.name, l.values.join(",")]));
                    table(&rows);
                    Ok(())
                }
                _ => print_as(
                    out,
                    &items
                        .iter()
                        .map(|l| (l.name.clone(), l.values.clone()))
                        .collect::<std::collections::BTreeMap<_, _>>(),
                ),
            }
        }
        AdminCmd::Metadata { metric, clusters } => {
            let req = pb::MetricMetadataRequest { tenants: clusters, metric_name: metric };
            let m = c.get_metric_metadata(req).await.map_err(status_err)?.into_inner();
            match out {
                Output::Table => {
                    table(&[
                        ["METRIC", "TYPE", "UNIT", "HELP"].map(String::from).to_vec(),
                        vec![m.metric_family_name, m.r#type, m.unit, m.help],
                    ]);
                    Ok(())
                }
                _ => print_as(
                    out,
                    &json!({"metric": m.metric_family_name, "type": m.r#type, "unit": m.unit, "help": m.help}),
                ),
            }
        }
        AdminCmd::Config { mode } => {
            let mode = match mode {
                ConfigMode::Values => "values",
                ConfigMode::Diff => "diff",
                ConfigMode::Defaults => "defaults",
            };
            let r = c
                .get_cortex_config(pb::ConfigRequest { config_modes: vec![mode.to_owned()] })
                .await
                .map_err(status_err)?
                .into_inner();
            let text = r.config_yaml.into_iter().next().ok_or_else(|| anyhow!("the gateway sent no configuration"))?;
            print_yaml(&text, "Cortex configuration", out)
        }
        AdminCmd::RawSeries { cluster, selector } => {
            let r = c
                .extract_raw_series(pb::MatcherRequest { tenant: cluster, match_expr: selector })
                .await
                .map_err(status_err)?
                .into_inner();
            let series = data(answer(&r.data)?);
            match out {
                Output::Table => {
                    let list = series.as_array().map_or(&[][..], Vec::as_slice);
                    if list.is_empty() {
                        eprintln!("no series");
                        return Ok(());
                    }
                    let mut rows = vec![vec!["SERIES".to_owned()]];
                    rows.extend(list.iter().map(|s| vec![name(s)]));
                    table(&rows);
                    Ok(())
                }
                _ => print_as(out, &series),
            }
        }
    }
}
