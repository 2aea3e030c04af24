//! `opni-metrics rbac …`: roles, role bindings and what a subject may read.
//!
//! Input is checked here with the same rules the gateway applies (core's `Role`,
//! `RoleBinding`, `Subject`), so a typo fails before any call and the message names the bad
//! part.

use anyhow::{Result, anyhow};
use opni_metrics_core::ClusterId;
use opni_metrics_core::access::{Role, RoleBinding, Subject};
use opni_metrics_core::spec::{LabelSelector, LabelSelectorRequirement, SelectorOperator};
use opni_metrics_proto::rbac::v1 as pb;
use serde_json::json;

use super::connect::Connector;
use super::{Bindings, Output, RbacCmd, Roles, labels, print_as, status_err, table};

const EXPR_FORMS: &str = "'KEY In V1,V2', 'KEY NotIn V1,V2', 'KEY Exists' or 'KEY DoesNotExist'";

/// Parses a `--selector-expr`: `KEY In V1,V2` (values may be parenthesised), `KEY NotIn …`,
/// `KEY Exists`, `KEY DoesNotExist`; operators in any case.
fn requirement(s: &str) -> Result<LabelSelectorRequirement> {
    let bad = || anyhow!("--selector-expr {s:?}: expected {EXPR_FORMS}");
    let mut words = s.trim().splitn(3, char::is_whitespace).filter(|w| !w.is_empty());
    let (key, op) = (words.next().ok_or_else(bad)?, words.next().ok_or_else(bad)?);
    let rest = words.next().unwrap_or_default().trim();
    let operator = match op.to_ascii_lowercase().as_str() {
        "in" => SelectorOperator::In,
        "notin" => SelectorOperator::NotIn,
        "exists" => SelectorOperator::Exists,
        "doesnotexist" => SelectorOperator::DoesNotExist,
        _ => return Err(bad()),
    };
    let list = rest.strip_prefix('(').and_then(|r| r.strip_suffix(')')).unwrap_or(rest);
    let values: Vec<String> = list.split(',').map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned).collect();
    let takes_values = matches!(operator, SelectorOperator::In | SelectorOperator::NotIn);
    if takes_values == values.is_empty() {
        return Err(bad());
    }
    Ok(LabelSelectorRequirement { key: key.to_owned(), operator, values })
}

/// A role from the command line, checked.
fn role(name: &str, clusters: &[String], selectors: &[String], exprs: &[String]) -> Result<Role> {
    let ids = clusters
        .iter()
        .map(|c| ClusterId::new(c.clone()).map_err(|e| anyhow!("--cluster {c:?}: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let selector = LabelSelector {
        match_labels: labels(selectors).map_err(|e| anyhow!("--selector: {e}"))?,
        match_expressions: exprs.iter().map(|e| requirement(e)).collect::<Result<_>>()?,
    };
    let selector = (!selector.match_labels.is_empty() || !selector.match_expressions.is_empty()).then_some(selector);
    Role::new(name, ids, selector).map_err(|e| anyhow!("{}", opni_metrics_core::error_chain(&e)))
}

fn show_selector(s: Option<&LabelSelector>) -> String {
    let Some(s) = s else { return String::new() };
    let labels = s.match_labels.iter().map(|(k, v)| format!("{k}={v}"));
    let exprs = s.match_expressions.iter().map(|r| match r.operator {
        SelectorOperator::In => format!("{} In ({})", r.key, r.values.join(",")),
        SelectorOperator::NotIn => format!("{} NotIn ({})", r.key, r.values.join(",")),
        SelectorOperator::Exists => format!("{} Exists", r.key),
        SelectorOperator::DoesNotExist => format!("{} DoesNotExist", r.key),
    });
    labels.chain(exprs).collect::<Vec<_>>().join(", ")
}

fn print_roles(items: Vec<pb::Role>, out: Output) -> Result<()> {
    let roles = items
        .into_iter()
        .map(|r| Role::try_from(r).map_err(|e| anyhow!("the gateway sent an invalid role: {e}")))
        .collect::<Result<Vec<_>>>()?;
    match out {
        Output::Table => {
            let mut rows = vec![["ROLE", "CLUSTERS", "SELECTOR"].map(String::from).to_vec()];
            for r in &roles {
                let ids: Vec<&str> = r.clusters.iter().map(ClusterId::as_str).collect();
                rows.push(vec![r.name.clone(), ids.join(","), show_selector(r.selector.as_ref())]);
            }
            table(&rows);
            Ok(())
        }
        _ => print_as(out, &roles),
    }
}

fn print_bindings(items: Vec<pb::RoleBinding>, out: Output) -> Result<()> {
    match out {
        Output::Table => {
            let mut rows = vec![["BINDING", "ROLE", "SUBJECTS"].map(String::from).to_vec()];
            rows.extend(items.into_iter().map(|b| vec![b.name, b.role, b.subjects.join(",")]));
            table(&rows);
            Ok(())
        }
        _ => print_as(
            out,
            &items.iter().map(|b| json!({"name": b.name, "role": b.role, "subjects": b.subjects})).collect::<Vec<_>>(),
        ),
    }
}

/// Runs an `rbac` command.
pub(super) async fn run(conn: &Connector, cmd: RbacCmd, out: Output) -> Result<()> {
    match cmd {
        RbacCmd::Roles(r) => roles(conn, r, out).await,
        RbacCmd::Bindings(b) => bindings(conn, b, out).await,
        RbacCmd::Readable { subject, groups } => {
            let req = pb::SubjectRequest { subject: subject.clone(), groups: groups.clone() };
            let tenants = conn.rbac().await?.readable_tenants(req).await.map_err(status_err)?.into_inner().tenants;
            match out {
                Output::Table if tenants.is_empty() => {
                    eprintln!("{subject} may read no registered cluster");
                    Ok(())
                }
                Output::Table => {
                    let mut rows = vec![vec!["CLUSTER".to_owned()]];
                    rows.extend(tenants.into_iter().map(|t| vec![t]));
                    table(&rows);
                    Ok(())
                }
                _ => print_as(out, &json!({"subject": subject, "groups": groups, "clusters": tenants})),
            }
        }
    }
}

async fn roles(conn: &Connector, cmd: Roles, out: Output) -> Result<()> {
    match cmd {
        Roles::Create { name, clusters, selectors, selector_exprs } => {
            let r = role(&name, &clusters, &selectors, &selector_exprs)?;
            conn.rbac().await?.create_role(pb::Role::from(r)).await.map_err(status_err)?;
            eprintln!("role {name} created");
            Ok(())
        }
        Roles::List => {
            print_roles(conn.rbac().await?.list_roles(()).await.map_err(status_err)?.into_inner().items, out)
        }
        Roles::Get { name } => {
            let r = conn.rbac().await?.get_role(pb::Reference { name }).await.map_err(status_err)?.into_inner();
            print_roles(vec![r], out)
        }
        Roles::Delete { name } => {
            conn.rbac().await?.delete_role(pb::Reference { name: name.clone() }).await.map_err(status_err)?;
            eprintln!("role {name} deleted");
            Ok(())
        }
    }
}

async fn bindings(conn: &Connector, cmd: Bindings, out: Output) -> Result<()> {
    match cmd {
        Bindings::Create { name, role, subjects } => {
            let subjects = subjects
                .iter()
                .map(|s| s.parse::<Subject>().map_err(|e| anyhow!("--subject: {e}")))
                .collect::<Result<Vec<_>>>()?;
            let b = RoleBinding::new(&name, &role, subjects).map_err(|e| anyhow!("{e}"))?;
            conn.rbac().await?.create_role_binding(pb::RoleBinding::from(b)).await.map_err(status_err)?;
            eprintln!("role binding {name} created: {role} is granted");
            Ok(())
        }
        Bindings::List => {
            let items = conn.rbac().await?.list_role_bindings(()).await.map_err(status_err)?.into_inner().items;
            print_bindings(items, out)
        }
        Bindings::Get { name } => {
            let b = conn.rbac().await?.get_role_binding(pb::Reference { name }).await.map_err(status_err)?.into_inner();
            print_bindings(vec![b], out)
        }
        Bindings::Delete { name } => {
            conn.rbac().await?.delete_role_binding(pb::Reference { name: name.clone() }).await.map_err(status_err)?;
            eprintln!("role binding {name} deleted");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn selector_expressions() {
        let r = requirement("region In eu-west, eu-central").unwrap();
        assert_eq!((r.key.as_str(), r.operator, r.values.len()), ("region", SelectorOperator::In, 2));
        assert_eq!(requirement("tier notin (gold)").unwrap().values, vec!["gold".to_owned()]);
        assert_eq!(requirement("gpu Exists").unwrap().operator, SelectorOperator::Exists);
        assert!(requirement("gpu DoesNotExist").unwrap().values.is_empty());
        for bad in ["region", "region In", "gpu Exists yes", "region = eu", ""] {
            assert!(requirement(bad).unwrap_err().to_string().contains("--selector-expr"), "{bad:?}");
        }
    }

    #[test]
    fn roles_are_checked_before_any_call() {
        let r = role("prod", &["c1".into()], &["env=prod".into()], &["region In eu".into()]).unwrap();
        assert_eq!(r.clusters.len(), 1);
        assert_eq!(show_selector(r.selector.as_ref()), "env=prod, region In (eu)");
        assert!(role("prod", &[], &[], &[]).unwrap_err().to_string().contains("names no cluster"));
        assert!(role("Prod", &["c1".into()], &[], &[]).unwrap_err().to_string().contains("\"Prod\""));
        assert!(role("prod", &["a|b".into()], &[], &[]).unwrap_err().to_string().contains("--cluster \"a|b\""));
    }
}
