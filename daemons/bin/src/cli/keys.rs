//! `opni-metrics keys …`: API keys for readers.

use anyhow::Result;
use opni_metrics_proto::rbac::v1 as pb;
use serde_json::json;

use super::connect::Connector;
use super::{KeysCmd, Output, print_as, status_err, table, when};

fn created(k: &pb::ApiKeyInfo) -> String {
    k.created.as_ref().map(when::show).unwrap_or_default()
}

fn record(k: &pb::ApiKeyInfo) -> serde_json::Value {
    json!({"id": k.id, "name": k.name, "subject": k.subject, "groups": k.groups, "created": created(k)})
}

/// Runs a `keys` command.
pub(super) async fn run(conn: &Connector, cmd: KeysCmd, out: Output) -> Result<()> {
    let mut c = conn.rbac().await?;
    match cmd {
        KeysCmd::Create { name, subject, groups } => {
            let req = pb::CreateApiKeyRequest { name, subject: subject.unwrap_or_default(), groups };
            let r = c.create_api_key(req).await.map_err(status_err)?.into_inner();
            let info = r.info.unwrap_or_default();
            match out {
                Output::Table => {
                    println!("{}", r.key);
                    eprintln!(
                        "API key {} (id {}) acts as {}; it is shown only now, store it safely.\n\
                         Grant it clusters with: opni-metrics rbac bindings create NAME --role ROLE --subject user:{}",
                        info.name, info.id, info.subject, info.subject
                    );
                    Ok(())
                }
                _ => {
                    let mut doc = record(&info);
                    doc["key"] = json!(r.key);
                    print_as(out, &doc)
                }
            }
        }
        KeysCmd::List => {
            let items = c.list_api_keys(()).await.map_err(status_err)?.into_inner().items;
            match out {
                Output::Table => {
                    let mut rows = vec![["ID", "NAME", "SUBJECT", "GROUPS", "CREATED"].map(String::from).to_vec()];
                    for k in items {
                        let at = created(&k);
                        rows.push(vec![k.id, k.name, k.subject, k.groups.join(","), at]);
                    }
                    table(&rows);
                    Ok(())
                }
                _ => print_as(out, &items.iter().map(record).collect::<Vec<_>>()),
            }
        }
        KeysCmd::Revoke { id_or_name } => {
            c.revoke_api_key(pb::Reference { name: id_or_name.clone() }).await.map_err(status_err)?;
            eprintln!("API key {id_or_name} revoked; requests with it now fail");
            Ok(())
        }
    }
}
