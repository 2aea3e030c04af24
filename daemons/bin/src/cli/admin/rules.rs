//! `opni-metrics admin rules …`: rule groups in the ruler.

use anyhow::{Context, Result};
use opni_metrics_proto::cortexadmin::v1 as pb;
use serde_json::Value;

use super::super::series::{answer, data};
use super::super::{Output, RuleType, RulesCmd, print_as, status_err, table};
use super::{Client, print_yaml, yaml_value};

fn text<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// One row per group: cluster, kind (synced from the agent, or loaded by users), namespace,
/// group, rule count; synced groups first.
fn show_groups(data: &Value) {
    let groups = data.get("groups").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    if groups.is_empty() {
        eprintln!("no rule groups");
        return;
    }
    let synced = opni_metrics_core::rules::SYNCED_NAMESPACE;
    let mut sorted: Vec<&Value> = groups.iter().collect();
    sorted.sort_by_key(|g| (text(g, "tenant"), text(g, "file") != synced, text(g, "file"), text(g, "name")));
    let mut rows = vec![["CLUSTER", "KIND", "NAMESPACE", "GROUP", "RULES"].map(String::from).to_vec()];
    for g in sorted {
        let n = g.get("rules").and_then(Value::as_array).map_or(0, Vec::len);
        let kind = if text(g, "file") == synced { "synced" } else { "user" };
        rows.push(vec![
            text(g, "tenant").into(),
            kind.into(),
            text(g, "file").into(),
            text(g, "name").into(),
            n.to_string(),
        ]);
    }
    table(&rows);
}

/// Runs a `rules` command.
pub(super) async fn run(c: &mut Client, cmd: RulesCmd, out: Output) -> Result<()> {
    match cmd {
        RulesCmd::List { clusters, rule_type, group_regexp, namespace_regexp, rule_regexp } => {
            let req = pb::ListRulesRequest {
                tenants: clusters,
                rule_type: match rule_type {
                    None => String::new(),
                    Some(RuleType::Alert) => "alert".into(),
                    Some(RuleType::Record) => "record".into(),
                },
                health: Vec::new(),
                state: Vec::new(),
                rule_name_regexp: rule_regexp.unwrap_or_default(),
                group_name_regexp: group_regexp.unwrap_or_default(),
                namespace_regexp: namespace_regexp.unwrap_or_default(),
            };
            let r = c.list_rules(req).await.map_err(status_err)?.into_inner();
            let groups = data(answer(&r.data)?);
            match out {
                Output::Table => {
                    show_groups(&groups);
                    Ok(())
                }
                _ => print_as(out, &groups),
            }
        }
        RulesCmd::Get { cluster, namespace, group } => {
            let req = pb::GetRuleRequest { tenant: cluster, namespace, group_name: group };
            let r = c.get_rule(req).await.map_err(status_err)?.into_inner();
            print_yaml(&String::from_utf8_lossy(&r.data), "rule group", out)
        }
        RulesCmd::Load { cluster, namespace, file } => {
            let yaml = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let doc = yaml_value(&String::from_utf8_lossy(&yaml), "rule group file")
                .with_context(|| file.display().to_string())?;
            let group = text(&doc, "name").to_owned();
            let req = pb::LoadRulesRequest {
                tenant: cluster.clone(),
                namespace: namespace.clone(),
                yaml_content: yaml.into(),
            };
            c.load_rules(req).await.map_err(status_err)?;
            eprintln!("rule group {group:?} loaded into namespace {namespace:?} of cluster {cluster}");
            Ok(())
        }
        RulesCmd::Delete { cluster, namespace, group } => {
            let req = pb::DeleteRuleRequest {
                tenant: cluster.clone(),
                namespace: namespace.clone(),
                group_name: group.clone(),
            };
            c.delete_rule(req).await.map_err(status_err)?;
            eprintln!("rule group {group:?} deleted from namespace {namespace:?} of cluster {cluster}");
            Ok(())
        }
    }
}
